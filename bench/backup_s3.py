"""Run inside the bench's db host by bench/backup (the backup agent and its boto3 are installed there).

    python3 backup_s3.py N    seed N backups in one S3 prefix, then time: a bare paginated listing (the floor),
                              a rotation in check mode, the planning alone, and the real rotation; print JSON.

Rotation here is the agent's own code path (roles/backup/files/selfhosted_backup.py and the planner it shares with
the backup_rotate module): list, plan from the listing, read the manifests of the kept backups, delete in batches.
"""

import collections
import concurrent.futures
import dataclasses
import datetime
import json
import sys
import time

sys.path.insert(0, "/usr/local/lib/selfhosted-backup")

import selfhosted_backup as agent  # pylint: disable=wrong-import-position
from _backup_rotate import (  # pylint: disable=wrong-import-position
    delete_s3_keys,
    list_s3,
    plan_verified,
    read_s3_backup,
    read_s3_set,
)

POLICY = {"keep_last": 24, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "keep_yearly": 5}
PREFIX = "bench/db/postgresql/"


def count_objects(client, bucket, attempts=1):
    """Objects under the prefix. After a mass delete SeaweedFS removes the emptied folders in the background and a
    listing can time out meanwhile: the final count waits for it (attempts)."""
    for attempt in range(attempts):
        try:
            return len(list(list_s3(client, bucket, PREFIX)))
        except Exception:  # botocore's timeouts; the last attempt re-raises
            if attempt == attempts - 1:
                raise
            time.sleep(30)
    return None


def main():
    count = int(sys.argv[1])
    cfg = agent.load_json(agent.CONFIG)
    client = agent.s3_client(cfg)
    bucket = cfg["s3"]["bucket"]
    calls = collections.Counter()
    client.meta.events.register("before-call.s3.*", lambda event_name, **_: calls.update([event_name.split(".")[-1]]))

    end = datetime.datetime(2026, 11, 20, 21, 0, tzinfo=datetime.timezone.utc)
    seed_start = time.monotonic()

    def put(i):
        moment = end - datetime.timedelta(hours=i)
        bid = agent.backup_id(moment)
        data = b"x" * 64
        files = [{"name": "app.dump", "size": len(data), "sha256": "0" * 64}]
        manifest = agent.build_manifest(bid, "postgresql", "postgresql", "db", moment, files, {})
        client.put_object(Bucket=bucket, Key=f"{PREFIX}{bid}/app.dump", Body=data)
        client.put_object(Bucket=bucket, Key=f"{PREFIX}{bid}/manifest.json", Body=json.dumps(manifest).encode())

    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        list(pool.map(put, range(count)))
    seed = time.monotonic() - seed_start

    def timed(fn):
        calls.clear()
        start = time.monotonic()
        value = fn()
        return time.monotonic() - start, dict(calls), value

    floor, floor_calls, objects = timed(lambda: count_objects(client, bucket))
    now = end + datetime.timedelta(minutes=30)

    def rotation(check):
        backups, groups, _ignored = read_s3_set(client, bucket, PREFIX, lazy=True)
        decided = plan_verified(
            backups,
            lambda bid: read_s3_backup(client, bucket, PREFIX, bid, groups[bid]),
            POLICY,
            now,
            datetime.timezone.utc,
        )
        if not check:
            delete_s3_keys(client, bucket, [o["Key"] for bid in decided.delete for o in groups[bid].values()])
        return decided, backups

    check_t, check_calls, (decided, backups) = timed(lambda: rotation(True))
    listed = {b.id: b for b in backups}

    def plan_only():  # the same decisions with the manifests' answers already known: CPU only
        return plan_verified(
            list(listed.values()),
            lambda bid: dataclasses.replace(listed[bid], verified=True),
            POLICY,
            now,
            datetime.timezone.utc,
        )

    plan_t = timed(plan_only)[0]
    real_t, real_calls, (done, _backups) = timed(lambda: rotation(False))
    result = {
        "backups": count,
        "objects": objects,
        "seed_seconds": round(seed, 1),
        "listing_seconds": round(floor, 2),
        "listing_requests": floor_calls,
        "check_rotation_seconds": round(check_t, 2),
        "check_requests": check_calls,
        "planning_seconds": round(plan_t, 3),
        "rotation_seconds": round(real_t, 2),
        "rotation_requests": real_calls,
        "kept": len(done.keep),
        "deleted": len(done.delete),
        "same_plan_in_check_mode": decided.keep == done.keep and decided.delete == done.delete,
    }
    print(json.dumps(result), flush=True)  # the figures first: the count below can take minutes
    result["objects_left"] = count_objects(client, bucket, attempts=20)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
