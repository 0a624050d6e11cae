# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""selfhosted-backup: the backup agent the backup role installs (run by a systemd timer and on demand).

  selfhosted-backup run [SET ...] [--databases DB ...]   back up, verify, upload, rotate the local copies
  selfhosted-backup list SET [--source s3|local]           the backups of a set, newest first (JSON)
  selfhosted-backup restore --database DB --target DB [--backup ID] [--source s3|local] [--force]
  selfhosted-backup drill [--source s3|local]              restore into a scratch database, smoke queries, drop

A backup is one directory (local) or key prefix (S3) named by its id (UTC time, 20261125T021500Z) holding its
files and manifest.json, which is written last: a backup without a manifest is incomplete and never counts.
Settings come from /etc/selfhosted/backup.json (written by the role, mode 0600). Metrics go to the node
exporter's textfile directory. Every decision that does not touch the host is a pure function below, unit-tested
in tests/unit/roles/test_backup_agent.py.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import hashlib
import hmac
import json
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The retention planner is installed beside this file.
from _backup_rotate import (  # pylint: disable=wrong-import-position
    MANIFEST,
    SET_MARKER,
    LocalBackupSet,
    RotateError,
    S3BackupSet,
    future_backups,
    parse_duration,
    parse_time,
    plan_verified,
)

CONFIG = "/etc/selfhosted/backup.json"
STATE = "/var/lib/selfhosted/backup-state.json"
LOCK = "/run/lock/selfhosted-backup.lock"
CHUNK = 1024 * 1024
ID_FORMAT = "%Y%m%dT%H%M%SZ"


class BackupError(Exception):
    """A step failed; the message says which and why."""


# --- pure helpers --------------------------------------------------------------------------------------------------
def backup_id(moment):
    """The id of a backup taken at `moment` (aware datetime): its UTC time, sortable."""
    return moment.astimezone(datetime.timezone.utc).strftime(ID_FORMAT)


def id_time(bid):
    """The time of a backup id made by backup_id(), or None for any other name."""
    try:
        return datetime.datetime.strptime(bid, ID_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def build_manifest(bid, set_name, kind, host, moment, files, tools, extra=None):
    """The manifest of a complete backup. files: [{"name", "size", "sha256", ...}]."""
    out = {
        "id": bid,
        "set": set_name,
        "kind": kind,
        "host": host,
        "time": moment.astimezone(datetime.timezone.utc).isoformat(),
        "files": sorted(files, key=lambda f: f["name"]),
        "tools": tools,
        "total_size": sum(f["size"] for f in files),
    }
    out.update(extra or {})
    return out


def manifest_problems(manifest, cfg, set_name, bid):
    """Why a manifest must not be restored on this host, or []: it must name this backup, this set and kind, this
    host, and (PostgreSQL) only databases this host's configuration backs up. Anyone who can write to the storage
    can write a manifest: what a restore or drill does comes from the host's own configuration, and a manifest that
    does not match it is refused."""
    if not isinstance(manifest, dict):
        return ["the manifest is not a JSON object"]
    found = []
    expected = {"id": bid, "set": set_name, "kind": cfg["sets"][set_name]["kind"], "host": cfg["host"]}
    for key, want in expected.items():
        if manifest.get(key) != want:
            found.append(f"it names {key} {manifest.get(key)!r}, not {want!r}")
    if expected["kind"] == "postgresql":
        configured = set(cfg["sets"][set_name].get("databases") or [])
        extra = sorted(set(manifest.get("databases") or []) - configured)
        if extra:
            found.append(f"it names databases this host does not back up: {', '.join(map(str, extra))}")
    return found


def checked_manifest(store, cfg, set_name, bid):
    manifest = store.manifest(bid)
    problems = manifest_problems(manifest, cfg, set_name, bid)
    if problems:
        raise BackupError(f"backup {bid}: refused, its manifest does not match this host: {'; '.join(problems)}")
    return manifest


def dump_problems(size, listing_lines, min_size):
    """Why a custom-format dump does not count (empty list = it counts): size sane and pg_restore --list read a TOC."""
    problems = []
    if size < min_size:
        problems.append(f"the dump has {size} bytes, fewer than the minimum of {min_size}")
    if not any(line.startswith(";") for line in listing_lines) or not any(
        line and not line.startswith(";") for line in listing_lines
    ):
        problems.append("pg_restore --list shows no table of contents")
    return problems


def size_problem(size, reference, ratio):
    """Why a new backup of `size` bytes looks wrong next to the last one accepted (`reference` bytes), or None: a
    backup much smaller than the one before (an emptied database, a dump of the wrong server) must not rotate
    good backups away. No reference (a new set) or a ratio of 0 accepts any size."""
    if not reference or not ratio or size >= reference * ratio:
        return None
    return (
        f"{size} bytes, less than {ratio:.0%} of the {reference} bytes of the last backup accepted; it is kept, "
        f"and this set's rotation waits until a person confirms (selfhosted-backup confirm-size SET)"
    )


def redis_save_done(info, started_after):
    """(done, error) from Redis INFO persistence fields after a BGSAVE requested at `started_after` (epoch s)."""
    if info.get("rdb_bgsave_in_progress") == "1":
        return False, ""
    if int(info.get("rdb_last_save_time", "0")) < started_after:
        return False, ""
    if info.get("rdb_last_bgsave_status") != "ok":
        return True, f"BGSAVE finished with status {info.get('rdb_last_bgsave_status')!r}"
    return True, ""


def parse_info(text):
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def metric_lines(name, help_text, kind, samples):
    """Prometheus text format for one metric. samples: [(labels dict, value)]."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        text = str(int(value)) if float(value).is_integer() else repr(float(value))
        lines.append(f"{name}{{{label_text}}} {text}" if label_text else f"{name} {text}")
    return lines


BACKUP_METRICS = (
    ("last_success_timestamp_seconds", "Time of the last backup of the set that completed and was verified.", "gauge"),
    ("last_run_timestamp_seconds", "Time of the last backup attempt.", "gauge"),
    ("last_run_success", "1 when the last backup attempt succeeded, else 0.", "gauge"),
    ("duration_seconds", "Duration of the last successful backup (dump, verify, upload).", "gauge"),
    ("size_bytes", "Total size of the files of the last successful backup.", "gauge"),
    ("failures_total", "Backup attempts that failed since the agent was installed.", "counter"),
    ("last_rotation_success", "1 when the last rotation of the set (local and S3) succeeded, else 0.", "gauge"),
    ("rotation_failures_total", "Rotations of the set that failed since the agent was installed.", "counter"),
    ("size_hold", "1 when the last backup was much smaller than the one before and rotation waits, else 0.", "gauge"),
    ("last_upload_success", "1 when the last upload to S3 succeeded, else 0 (the local copy is kept).", "gauge"),
    ("upload_failures_total", "Uploads to S3 that failed since the agent was installed.", "counter"),
    ("pending_uploads", "Local backups of the set that wait for their upload to S3.", "gauge"),
)
DRILL_METRICS = (
    ("last_success", "1 when the last restore drill of the set succeeded, else 0.", "gauge"),
    ("last_run_timestamp_seconds", "Time of the last restore drill.", "gauge"),
    ("last_success_timestamp_seconds", "Time of the last restore drill that succeeded.", "gauge"),
    ("duration_seconds", "Time to restore in the last drill (RTO achieved).", "gauge"),
    ("backup_age_seconds", "Age of the backup restored in the last drill when it started (RPO achieved).", "gauge"),
)


def render_metrics(state):
    """The textfile of the agent from its state: {"backup": {set: {...}}, "drill": {set: {...}}}."""
    lines = []
    for prefix, section, metrics in (
        ("selfhosted_backup_", "backup", BACKUP_METRICS),
        ("selfhosted_restore_drill_", "drill", DRILL_METRICS),
    ):
        sets = state.get(section, {})
        for key, help_text, kind in metrics:
            samples = [({"set": s}, sets[s][key]) for s in sorted(sets) if key in sets[s]]
            if samples:
                lines += metric_lines(prefix + key, help_text, kind, samples)
    return "\n".join(lines) + "\n"


def newest_complete(backups, now=None):
    """The newest complete backup (a Backup) or None; with now, none dated after now plus the clock tolerance (a backup
    from the future is a wrong clock or a crafted id, never "the newest")."""
    future = set(future_backups(backups, now)) if now is not None else set()
    complete = [b for b in backups if b.complete and b.id not in future]
    return max(complete, key=lambda b: (b.time, b.id)) if complete else None


def object_key(prefix, *parts):
    return "/".join(p.strip("/") for p in (prefix, *parts) if p.strip("/"))


# --- settings and state ---------------------------------------------------------------------------------------------
def load_json(path, default=None):
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        if default is not None:
            return default
        raise


def write_atomic(path, text, mode=0o644):
    """Write, fsync, rename: a crash or a full disk leaves the old file, never a truncated one (an empty state file
    stopped every later run)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_state():
    """The agent's state; an unreadable one is moved aside (kept, named in the log) and the run starts afresh
    rather than no backup ever running again."""
    try:
        return load_json(STATE, {})
    except ValueError as exc:
        aside = f"{STATE}.unreadable-{int(time.time())}"
        os.replace(STATE, aside)
        log(f"the state file was unreadable ({exc}); kept as {aside}, starting with an empty state")
        return {}


def save_state(cfg, state):
    write_atomic(STATE, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)
    textfile_dir = cfg.get("textfile_dir")
    if textfile_dir and os.path.isdir(textfile_dir):
        write_atomic(os.path.join(textfile_dir, "selfhosted_backup.prom"), render_metrics(state))


def peak_rss_mib(who):
    """Peak resident memory (MiB) of this process (RUSAGE_SELF) or of the largest tool it ran (RUSAGE_CHILDREN)."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def log(message):
    print(message, flush=True)


# --- running tools --------------------------------------------------------------------------------------------------
def run_cmd(argv, user=None, **kwargs):
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def tool_version(argv):
    proc = run_cmd(argv)
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else "unknown"


def stream_to_file(argv, dest, user=None):
    """Run argv with stdout to dest, hashing as it goes (memory stays at one chunk). Returns (size, sha256)."""
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    digest, size = hashlib.sha256(), 0
    with open(dest, "wb") as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
        for block in iter(lambda: proc.stdout.read(CHUNK), b""):
            out.write(block)
            digest.update(block)
            size += len(block)
        proc.stdout.close()
        rc = proc.wait()
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    if rc != 0:
        raise BackupError(f"{argv[-1] if not user else ' '.join(argv[3:])} failed (exit {rc}): {message[-2000:]}")
    return size, digest.hexdigest()


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# --- PostgreSQL -----------------------------------------------------------------------------------------------------
def pg_args(cfg):
    pg = cfg["sets"]["postgresql"]
    return ["-p", str(pg.get("port", 5432))]


def backup_postgresql(cfg, work_dir, databases=None, content_checks=True):
    pg = cfg["sets"]["postgresql"]
    databases = databases or pg["databases"]
    files, owners = [], {}
    for db in databases:
        name = f"{db}.dump"
        dest = os.path.join(work_dir, name)
        argv = ["pg_dump", *pg_args(cfg), "--format=custom", f"--compress={pg.get('compress', 6)}"]
        argv += [f"--lock-wait-timeout={pg.get('lock_wait_timeout', '5min')}", "--dbname", db]
        size, sha = stream_to_file(argv, dest, user="postgres")
        listing = run_cmd(["pg_restore", "--list", dest])
        if listing.returncode != 0:
            raise BackupError(f"pg_restore --list cannot read the dump of {db}: {listing.stderr.strip()[-1000:]}")
        # A safety copy (content_checks=False) keeps whatever the database holds now, even an emptied one: recover.yml
        # takes it because the data is about to be replaced. pg_restore --list above still proves it reads back.
        problems = (
            dump_problems(size, listing.stdout.splitlines(), int(pg.get("min_size", 1024))) if content_checks else []
        )
        if problems:
            raise BackupError(f"the dump of {db} does not count: {'; '.join(problems)}")
        owners[db] = psql(cfg, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'name'", name=db)
        files.append({"name": name, "size": size, "sha256": sha, "database": db, "format": "custom"})
        log(f"postgresql: {db} dumped and verified, {size} bytes")
    globals_file = os.path.join(work_dir, "globals.sql")
    size, sha = stream_to_file(["pg_dumpall", *pg_args(cfg), "--globals-only"], globals_file, user="postgres")
    files.append({"name": "globals.sql", "size": size, "sha256": sha, "format": "sql"})
    tools = {"pg_dump": tool_version(["pg_dump", "--version"])}
    tools["server"] = psql(cfg, "SHOW server_version")
    return files, tools, {"databases": databases, "owners": owners}


# --- Redis ----------------------------------------------------------------------------------------------------------
def redis_cli(cfg, *args):
    rd = cfg["sets"]["redis"]
    env = dict(os.environ, REDISCLI_AUTH=rd.get("password", ""))
    argv = ["redis-cli", "--no-auth-warning", "-h", rd.get("host", "127.0.0.1"), "-p", str(rd.get("port", 6379))]
    if rd.get("user"):
        argv += ["--user", rd["user"]]
    proc = run_cmd([*argv, *args], env=env)
    if proc.returncode != 0 or proc.stdout.startswith(("ERR", "NOAUTH", "WRONGPASS", "NOPERM")):
        raise BackupError(f"redis-cli {' '.join(args)} failed: {(proc.stdout + proc.stderr).strip()[-500:]}")
    return proc.stdout


def backup_redis(cfg, work_dir):
    rd = cfg["sets"]["redis"]
    info = parse_info(redis_cli(cfg, "INFO", "persistence"))
    if info.get("rdb_bgsave_in_progress") == "1":
        log("redis: a BGSAVE is already running; waiting for it, then starting ours")
    started = int(time.time())
    deadline = time.monotonic() + float(rd.get("save_timeout", 600))
    requested = False
    while True:
        if not requested:
            answer = redis_cli(cfg, "BGSAVE")
            requested = "Background saving started" in answer or "scheduled" in answer
        done, error = redis_save_done(parse_info(redis_cli(cfg, "INFO", "persistence")), started)
        if requested and done:
            if error:
                raise BackupError(f"redis: {error}")
            break
        if time.monotonic() > deadline:
            raise BackupError(f"redis: the snapshot did not finish within {rd.get('save_timeout', 600)} s")
        time.sleep(0.5)
    rdb = rd.get("rdb_path", "/var/lib/redis/dump.rdb")
    dest = os.path.join(work_dir, "dump.rdb")
    # Redis writes a new snapshot to a temporary file and renames it: the file opened here stays consistent.
    digest, size = hashlib.sha256(), 0
    with open(rdb, "rb") as src, open(dest, "wb") as out:
        for block in iter(lambda: src.read(CHUNK), b""):
            out.write(block)
            digest.update(block)
            size += len(block)
    check = run_cmd(["redis-check-rdb", dest])
    if check.returncode != 0 or "RDB looks OK" not in check.stdout + check.stderr:
        raise BackupError(f"redis-check-rdb rejects the snapshot: {(check.stdout + check.stderr).strip()[-500:]}")
    log(f"redis: snapshot taken and verified, {size} bytes")
    tools = {"redis-server": parse_info(redis_cli(cfg, "INFO", "server")).get("redis_version", "unknown")}
    return [{"name": "dump.rdb", "size": size, "sha256": digest.hexdigest(), "format": "rdb"}], tools, {}


# --- S3 -------------------------------------------------------------------------------------------------------------
def s3_client(cfg):
    import boto3  # pylint: disable=import-outside-toplevel
    from botocore.config import Config  # pylint: disable=import-outside-toplevel

    s3 = cfg["s3"]
    return boto3.client(
        "s3",
        endpoint_url=s3.get("endpoint_url") or None,
        region_name=s3.get("region", "us-east-1"),
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        verify=s3.get("validate_certs", True),
        config=Config(retries={"max_attempts": int(s3.get("max_attempts", 3)), "mode": "standard"}),
    )


class Throttled:
    """A read-only file wrapper that keeps reads under max_bytes_per_second (0 = unlimited)."""

    def __init__(self, fh, max_bytes_per_second):
        self.fh, self.rate, self.start, self.count = fh, max_bytes_per_second, time.monotonic(), 0

    def read(self, size=-1):
        data = self.fh.read(size)
        self.count += len(data)
        if self.rate:
            ahead = self.count / self.rate - (time.monotonic() - self.start)
            if ahead > 0:
                time.sleep(ahead)
        return data


def uploaded_already(client, bucket, key, entry):
    """True when the object exists with the file's size and SHA-256 (metadata the agent set when it uploaded it)."""
    from botocore.exceptions import ClientError  # pylint: disable=import-outside-toplevel

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        # Not there (404), or not visible (403: AWS answers a HEAD of a missing key so without ListBucket on it).
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied"):
            return False
        raise
    return head.get("ContentLength") == entry["size"] and head.get("Metadata", {}).get("sha256") == entry["sha256"]


def upload_backup(cfg, client, set_name, bid, work_dir, manifest):
    from boto3.s3.transfer import TransferConfig  # pylint: disable=import-outside-toplevel

    s3 = cfg["s3"]
    prefix = object_key(s3.get("prefix", ""), cfg["host"], set_name, bid)
    # Memory stays at a few parts: a file given by name is read part by part as each part is sent; a throttled
    # stream holds at most max_in_memory_upload_chunks parts.
    transfer = TransferConfig(
        multipart_threshold=int(s3.get("multipart_chunk_mb", 16)) * CHUNK,
        multipart_chunksize=int(s3.get("multipart_chunk_mb", 16)) * CHUNK,
        max_concurrency=int(s3.get("max_concurrency", 2)),
        use_threads=int(s3.get("max_concurrency", 2)) > 1,
    )
    transfer.max_in_memory_upload_chunks = 2  # s3transfer's setting; boto3's constructor does not take it
    extra = {}
    if s3.get("sse"):
        extra["ServerSideEncryption"] = s3["sse"]
        if s3.get("sse_kms_key_id"):
            extra["SSEKMSKeyId"] = s3["sse_kms_key_id"]
    rate = int(float(s3.get("max_bandwidth_mbps", 0)) * 125000)
    for entry in manifest["files"]:
        key = f"{prefix}/{entry['name']}"
        path = os.path.join(work_dir, entry["name"])
        if uploaded_already(client, s3["bucket"], key, entry):
            # A retry after an interrupted upload: a file that arrived whole is not sent (nor versioned) again.
            log(f"{set_name}: s3://{s3['bucket']}/{key} is there already with the same SHA-256; not sent again")
            continue
        args = {"ExtraArgs": {**extra, "Metadata": {"sha256": entry["sha256"]}}, "Config": transfer}
        if rate:
            with open(path, "rb") as fh:
                client.upload_fileobj(Throttled(fh, rate), s3["bucket"], key, **args)
        else:
            client.upload_file(path, s3["bucket"], key, **args)
        log(f"{set_name}: uploaded s3://{s3['bucket']}/{key}")
    # The manifest last: only now does the backup count.
    client.put_object(
        Bucket=s3["bucket"],
        Key=f"{prefix}/{MANIFEST}",
        Body=json.dumps(manifest, indent=2).encode(),
        ContentType="application/json",
        **extra,
    )
    log(f"{set_name}: manifest uploaded, backup {bid} complete on S3")


class S3Set(S3BackupSet):
    """A set on S3, plus what restores need: its manifests and files."""

    def manifest(self, bid):
        body = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}{bid}/{MANIFEST}")["Body"]
        return json.loads(body.read())

    def fetch(self, bid, name, dest):
        self.client.download_file(self.bucket, f"{self.prefix}{bid}/{name}", dest)


def ensure_set_dir(path):
    """The set directory, with the marker that tells backup_rotate it is one (made by this agent)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    marker = os.path.join(path, SET_MARKER)
    if not os.path.isfile(marker):
        write_atomic(
            marker, "A backup set of selfhosted-backup: only entries named by backup ids are backups.\n", 0o600
        )


class LocalSet(LocalBackupSet):
    """A local set, plus what restores need: its manifests and files."""

    def read(self):
        ensure_set_dir(self.path)
        return super().read()

    def manifest(self, bid):
        return load_json(os.path.join(self.path, bid, MANIFEST))

    def fetch(self, bid, name, dest):
        shutil.copyfile(os.path.join(self.path, bid, name), dest)


def store_for(cfg, set_name, source):
    if source == "s3":
        if not cfg.get("s3"):
            raise BackupError("no S3 storage is configured (backup_s3 is empty); use --source local")
        s3 = cfg["s3"]
        return S3Set(s3_client(cfg), s3["bucket"], object_key(s3.get("prefix", ""), cfg["host"], set_name))
    return LocalSet(os.path.join(cfg["local_dir"], set_name))


def rotate(cfg, set_name, store, policy, where):
    from zoneinfo import ZoneInfo  # pylint: disable=import-outside-toplevel

    now = datetime.datetime.now(datetime.timezone.utc)
    decided = plan_verified(
        store.read(),
        store.verify,
        {k: v for k, v in policy.items() if k.startswith("keep_")},
        now,
        ZoneInfo(cfg.get("timezone", "UTC")),
        grace_seconds=parse_duration(policy.get("grace", "24h"), "grace"),
        max_age_seconds=parse_duration(policy.get("max_age", "3d"), "max_age"),
    )
    if decided.refused:
        log(f"{set_name} ({where}): rotation refused: {decided.refused}")
    if decided.delete:
        store.delete(decided.delete)
    log(f"{set_name} ({where}): kept {len(decided.keep)}, deleted {len(decided.delete)}")


# --- commands -------------------------------------------------------------------------------------------------------
def backup_set(cfg, set_name, databases=None, safety=False):
    """One backup of the set into its local set directory, verified, manifest last; returns (manifest, seconds).
    safety: a safety copy (recover.yml, before it replaces live data) into <local_dir>/safety/<set>/ instead: no
    set marker there, so no rotation ever deletes it and no restore picks it by default; the size and content
    checks are skipped (it copies what is there, however little)."""
    kind = cfg["sets"][set_name]["kind"]
    if safety:
        local = os.path.join(cfg["local_dir"], "safety", set_name)
        os.makedirs(local, mode=0o700, exist_ok=True)
    else:
        local = os.path.join(cfg["local_dir"], set_name)
        ensure_set_dir(local)
    started = datetime.datetime.now(datetime.timezone.utc)
    bid = backup_id(started)
    work_dir = os.path.join(local, f".partial-{bid}")
    os.makedirs(work_dir, mode=0o700)
    clock = time.monotonic()
    try:
        if kind == "postgresql":
            files, tools, extra = backup_postgresql(cfg, work_dir, databases, content_checks=not safety)
        else:
            files, tools, extra = backup_redis(cfg, work_dir)
        manifest = build_manifest(bid, set_name, kind, cfg["host"], started, files, tools, extra)
        # The verified local copy is kept first; the upload (cmd_run, upload_pending) comes after, so an S3 outage
        # never leaves the run with no new backup anywhere.
        write_atomic(os.path.join(work_dir, MANIFEST), json.dumps(manifest, indent=2) + "\n", 0o600)
        os.replace(work_dir, os.path.join(local, bid))
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    return manifest, time.monotonic() - clock


def upload_pending(cfg, set_name, entry):
    """Upload the local backups of the set that S3 does not have yet (entry["pending_upload"], oldest first: the
    new one and any an earlier run could not upload). Returns the error of the first failed upload, or None. A
    pending backup whose local copy is gone (deleted by hand) is dropped from the list with a log line."""
    pending = entry.setdefault("pending_upload", [])
    client = None
    for bid in sorted(pending):
        local = os.path.join(cfg["local_dir"], set_name, bid)
        manifest = load_json(os.path.join(local, MANIFEST)) if os.path.isdir(local) else None
        if not manifest:
            log(f"{set_name}: backup {bid} waited for its upload but its local copy is gone; not uploaded")
            pending.remove(bid)
            continue
        try:
            client = client or s3_client(cfg)
            upload_backup(cfg, client, set_name, bid, local, manifest)
        except Exception as exc:  # every failure is reported, counted and retried by the next run
            return exc
        pending.remove(bid)
    return None


def rotation_hold(entry):
    """Why the set's rotation must wait, or "" when it may run: backups waiting for their upload (the local copies
    are the only ones), or a backup much smaller than the one before, until a person confirms its size. The agent
    and playbooks/rotate-backups.yml (through `selfhosted-backup holds`) both ask this."""
    if entry.get("pending_upload"):
        return f"backups {', '.join(sorted(entry['pending_upload']))} wait for their upload"
    if entry.get("size_hold_id"):
        return (
            f"backup {entry['size_hold_id']} was much smaller than the one before; "
            f"`selfhosted-backup confirm-size SET` after checking it"
        )
    return ""


def cmd_holds(cfg, args):  # pylint: disable=unused-argument
    """{set: why its rotation waits, or ""} as JSON, for playbooks/rotate-backups.yml."""
    state = load_state().get("backup", {})
    print(json.dumps({name: rotation_hold(state.get(name, {})) for name in sorted(cfg["sets"])}))


def cmd_run(cfg, args):
    state = load_state()
    sets = args.sets or sorted(cfg["sets"])
    unknown = set(sets) - set(cfg["sets"])
    if unknown:
        raise BackupError(f"unknown backup sets {sorted(unknown)}; this host has {sorted(cfg['sets'])}")
    failed, unrecorded = [], []

    def record(state):
        # A full disk must not stop the next set's backup: a state that cannot be written is reported at the end.
        try:
            save_state(cfg, state)
        except OSError as exc:
            log(f"could not record the state ({exc})")
            unrecorded.append(str(exc))

    for set_name in sets:
        entry = state.setdefault("backup", {}).setdefault(set_name, {"failures_total": 0})
        entry["last_run_timestamp_seconds"] = time.time()
        try:
            manifest, duration = backup_set(
                cfg, set_name, args.databases if set_name == "postgresql" else None, safety=args.local_only
            )
        except Exception as exc:  # every failure is reported and counted
            entry["failures_total"] = entry.get("failures_total", 0) + 1
            entry["last_run_success"] = 0
            record(state)
            log(f"{set_name}: BACKUP FAILED: {exc}")
            failed.append(set_name)
            continue
        if args.local_only:
            # A safety copy (recover.yml takes one before it replaces live data) in its own directory: not uploaded,
            # never rotated, not the set's last backup in the metrics.
            path = os.path.join(cfg["local_dir"], "safety", set_name, manifest["id"])
            log(f"{set_name}: safety copy {manifest['id']} kept in {path} ({manifest['total_size']} bytes)")
            print(json.dumps({"set": set_name, "backup": manifest["id"], "path": path}))
            continue
        # The size to compare with: the last backup accepted (before this agent version: the last one's size).
        reference = entry.get("reference_size_bytes", entry.get("size_bytes"))
        entry.update(
            last_run_success=1,
            last_success_timestamp_seconds=time.time(),
            duration_seconds=round(duration, 3),
            size_bytes=manifest["total_size"],
            last_id=manifest["id"],
        )
        log(
            f"{set_name}: backup {manifest['id']} complete ({manifest['total_size']} bytes in {duration:.1f} s; "
            f"peak memory {peak_rss_mib(resource.RUSAGE_SELF)} MiB, tools {peak_rss_mib(resource.RUSAGE_CHILDREN)} MiB)"
        )
        problem = size_problem(manifest["total_size"], reference, float(cfg.get("min_size_ratio", 0.5)))
        if problem and not entry.get("size_hold_id"):
            entry.update(size_hold_id=manifest["id"], size_hold_bytes=manifest["total_size"])
            log(f"{set_name}: SIZE CHECK: backup {manifest['id']} has {problem}")
        elif not problem and not entry.get("size_hold_id"):
            entry["reference_size_bytes"] = manifest["total_size"]
        entry["size_hold"] = 1 if entry.get("size_hold_id") else 0
        if cfg.get("s3"):
            entry.setdefault("pending_upload", []).append(manifest["id"])
            error = upload_pending(cfg, set_name, entry)
            entry["pending_uploads"] = len(entry["pending_upload"])
            if error is not None:
                entry["upload_failures_total"] = entry.get("upload_failures_total", 0) + 1
                entry["last_upload_success"] = 0
                log(
                    f"{set_name}: UPLOAD FAILED (the local backup {manifest['id']} is kept; the next run uploads "
                    f"{', '.join(sorted(entry['pending_upload']))}): {error}"
                )
                failed.append(f"{set_name} (upload)")
            else:
                entry["last_upload_success"] = 1
        record(state)
        hold = rotation_hold(entry)
        if hold:
            log(f"{set_name}: rotation waits: {hold}")
            continue
        if not args.no_rotate:
            # Rotation only after a success: a failed backup never causes a deletion. Only the local copies: the
            # agent's S3 key cannot delete (a separate identity rotates S3, playbooks/rotate-backups.yml). A failed
            # rotation is counted and reported, and never stops the next set's backup.
            try:
                rotate(
                    cfg, set_name, LocalSet(os.path.join(cfg["local_dir"], set_name)), cfg["local_retention"], "local"
                )
            except Exception as exc:  # every failure is reported and counted
                entry["rotation_failures_total"] = entry.get("rotation_failures_total", 0) + 1
                entry["last_rotation_success"] = 0
                record(state)
                log(f"{set_name}: ROTATION FAILED (the new backup is kept): {exc}")
                failed.append(f"{set_name} (rotation)")
                continue
            entry["last_rotation_success"] = 1
            record(state)
    if failed:
        raise BackupError(f"backup failed for {', '.join(failed)}")
    if unrecorded:
        raise BackupError(f"the backups ran but their state and metrics could not be written: {unrecorded[0]}")


def cmd_list(cfg, args):
    store = store_for(cfg, args.set, args.source)
    backups = sorted(store.read(), key=lambda b: (b.time, b.id), reverse=True)
    out = [{"id": b.id, "time": b.time.isoformat(), "complete": b.complete, "problem": b.problem} for b in backups]
    print(json.dumps(out, indent=2))


def fetch_verified(store, bid, manifest, names, dest_dir):
    """Copy the named files of a backup to dest_dir and check each against the manifest's SHA-256."""
    by_name = {f["name"]: f for f in manifest["files"]}
    paths = {}
    for name in names:
        if name not in by_name:
            raise BackupError(f"backup {bid} has no file {name}; it has {sorted(by_name)}")
        dest = os.path.join(dest_dir, name)
        store.fetch(bid, name, dest)
        actual = file_sha256(dest)
        if actual != by_name[name]["sha256"]:
            expected = by_name[name]["sha256"]
            raise BackupError(f"{name} of backup {bid} has SHA-256 {actual}, the manifest says {expected}")
        paths[name] = dest
    return paths


def choose_backup(store, wanted=None):
    """The named backup, or the newest complete one; its manifest checked against the files it lists."""
    backups = {b.id: b for b in store.read()}
    if wanted:
        if wanted not in backups:
            raise BackupError(f"no backup {wanted} in this set")
        chosen = backups[wanted] if backups[wanted].verified else store.verify(wanted)
        if not chosen.complete:
            raise BackupError(f"backup {wanted} is incomplete ({chosen.problem}); choose a complete one")
        return chosen
    now = datetime.datetime.now(datetime.timezone.utc)
    future = future_backups(backups.values(), now)
    if future:
        log(f"not chosen, dated after now (a wrong clock or a crafted id): {', '.join(future)}")
    while True:
        best = newest_complete(backups.values(), now)
        if best is None:
            raise BackupError("the set has no complete backup" + (" that is not dated in the future" if future else ""))
        if best.verified:
            return best
        backups[best.id] = store.verify(best.id)


def psql(cfg, sql, db="postgres", session=None, **variables):
    """Run one statement as postgres, or in a restore session (restore_session(): a login without rights, for
    SQL that reads what a backup brought); values go in as psql variables (:'name'), never pasted into the SQL."""
    if session:
        argv = ["psql", *session["args"], "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db]
    else:
        argv = ["psql", *pg_args(cfg), "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db]
    for key, value in variables.items():
        argv += ["-v", f"{key}={value}"]
    if session:
        proc = subprocess.run(argv, input=sql + "\n", capture_output=True, text=True, check=False, env=session["env"])
    else:
        proc = run_cmd(argv, user="postgres", input=sql + "\n")
    if proc.returncode != 0:
        raise BackupError(f"psql on {db}: {proc.stderr.strip()[-1000:]}")
    return proc.stdout.strip()


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def database_exists(cfg, db):
    return psql(cfg, "SELECT 1 FROM pg_database WHERE datname = :'name'", name=db) == "1"


def user_relations(cfg, db):
    # The catalog alone (search_path pg_catalog): an operator or function a backup brought is never picked.
    return int(
        psql(
            cfg,
            "SET search_path = pg_catalog, pg_temp;\n"
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%'",
            db,
        )
    )


RESTORE_ROLE = "selfhosted_restore"
_TOC_ENTRY = re.compile(r"^\d+; \d+ \d+ (?P<what>.*)$")
_EXTENSION_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$")


def restore_role(owner, superusers):
    """The role a restore runs as (pg_restore --role, after --no-owner --no-privileges): the database's owner from
    this host's configuration, unless there is none or it is a superuser; then RESTORE_ROLE, which has no rights.
    Never the manifest's word: SQL in a backup must not run with more than the application's own rights."""
    return owner if owner and owner not in superusers else RESTORE_ROLE


def split_extensions(toc):
    """(extensions, list): the extensions a dump's table of contents (pg_restore --list) creates, and the list
    without them and their comments (for pg_restore -L). CREATE EXTENSION needs a superuser; the agent makes the
    ones the live database has itself, the restore as an unprivileged role does the rest."""
    extensions, keep = set(), []
    for line in toc.splitlines():
        m = _TOC_ENTRY.match(line)
        what = m.group("what") if m else ""
        if what.startswith("EXTENSION - "):
            extensions.add(what[len("EXTENSION - ") :].strip().split(" ")[0])
            continue
        if what.startswith("COMMENT - EXTENSION "):
            continue
        keep.append(line)
    return sorted(extensions), "\n".join(keep) + "\n"


def database_extensions(cfg, db):
    if not database_exists(cfg, db):
        return set()
    return set(psql(cfg, "SELECT extname FROM pg_extension", db).split())


def ensure_restore_role(cfg):
    psql(
        cfg,
        "SELECT format('CREATE ROLE %I NOLOGIN', :'name') WHERE NOT EXISTS "
        "(SELECT FROM pg_roles WHERE rolname = :'name') \\gexec",
        name=RESTORE_ROLE,
    )


def scram_verifier(password, salt, iterations=4096):
    """PostgreSQL's SCRAM-SHA-256 verifier of a password: what ALTER ROLE ... PASSWORD stores. Sent instead of the
    password, so a server that logs DDL never logs the password."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(raw):
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


@contextlib.contextmanager
def restore_session(cfg, role):
    """A login for whatever runs SQL from a backup (pg_restore, smoke queries): RESTORE_ROLE, no superuser and no
    rights of its own, a member of `role` (so pg_restore --role makes `role` own what it restores), with a random
    password valid for this restore only, over 127.0.0.1 (scram-sha-256). Its session user is unprivileged, so
    neither RESET ROLE nor SET SESSION AUTHORIZATION in a function from the backup gets back to a superuser (SET
    ROLE after connecting as postgres would allow both). Afterwards the login is off and the membership revoked.
    Yields {"args", "env"} for psql and pg_restore, run as root."""
    ensure_restore_role(cfg)
    password = secrets.token_urlsafe(32)
    verifier = scram_verifier(password, os.urandom(16))
    grant = role != RESTORE_ROLE
    psql(
        cfg,
        'ALTER ROLE :"name" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
        "PASSWORD :'verifier' VALID UNTIL :'until'",
        name=RESTORE_ROLE,
        verifier=verifier,
        until=(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=12)).isoformat(),
    )
    try:
        if grant:
            psql(cfg, 'GRANT :"role" TO :"name"', role=role, name=RESTORE_ROLE)
        port = str(cfg["sets"]["postgresql"].get("port", 5432))
        with tempfile.NamedTemporaryFile("w", prefix="selfhosted-restore-", suffix=".pgpass") as fh:
            fh.write(f"127.0.0.1:{port}:*:{RESTORE_ROLE}:{password}\n")
            fh.flush()
            env = {**os.environ, "PGPASSFILE": fh.name, "PGSSLMODE": "prefer"}
            yield {"args": ["-h", "127.0.0.1", "-p", port, "-U", RESTORE_ROLE], "env": env}
    finally:
        if grant:
            psql(cfg, 'REVOKE :"role" FROM :"name"', role=role, name=RESTORE_ROLE)
        psql(cfg, 'ALTER ROLE :"name" WITH NOLOGIN PASSWORD NULL', name=RESTORE_ROLE)


def side_names(target, moment):
    """(scratch, previous): where a restore into an existing database is built, and the name the replaced
    database keeps (the way back), both within PostgreSQL's 63 bytes."""
    stamp = moment.strftime(ID_FORMAT).lower()
    head = target.encode()[: 63 - len("_pre_") - len(stamp)].decode(errors="ignore")
    return f"{head}_new_{stamp}", f"{head}_pre_{stamp}"


def restore_database(cfg, store, bid, manifest, database, target, force=False):
    """Restore `database` of backup `bid` into `target` with --no-owner --no-privileges as an unprivileged role
    (restore_role()); the extensions it needs are made first, and only those the live database has. Refuses a
    database this host does not back up, and a non-empty target unless force. Returns the name the replaced
    database now has, or None.

    A new target is restored in place. An existing one is never changed by the restore: the backup is restored
    into a scratch database beside it, then, once that succeeded, the existing one is renamed <target>_pre_<time>
    (kept; empty ones are dropped) and the scratch one takes its name. A failed restore leaves the target as it
    was."""
    configured = cfg["sets"]["postgresql"].get("databases") or []
    if database not in configured:
        raise BackupError(f"this host backs up no database {database}; its databases are {configured}")
    if database not in manifest.get("databases", []):
        raise BackupError(f"backup {bid} has no database {database}; it has {manifest.get('databases', [])}")
    superusers = set(psql(cfg, "SELECT rolname FROM pg_roles WHERE rolsuper").split())
    role = restore_role(cfg["sets"]["postgresql"].get("owners", {}).get(database), superusers)
    relations = user_relations(cfg, target) if database_exists(cfg, target) else None
    if relations and not force:
        raise BackupError(
            f"database {target} is not empty ({relations} tables, views or sequences): restore into an empty or "
            "new database, or pass --force (restore_force=true) to replace its contents"
        )
    if relations is not None and role == RESTORE_ROLE:
        raise BackupError(
            f"postgresql_databases names no owner (other than a superuser) for {database}: a restore into the existing "
            f"{target} would leave it owned by {RESTORE_ROLE}, which nobody logs in as; set the owner, or restore "
            "into a new database"
        )
    scratch, previous = side_names(target, datetime.datetime.now(datetime.timezone.utc))
    into = target if relations is None else scratch
    with tempfile.TemporaryDirectory(prefix="selfhosted-restore-", dir=cfg["local_dir"]) as tmp:
        paths = fetch_verified(store, bid, manifest, [f"{database}.dump"], tmp)
        with open(paths[f"{database}.dump"], "rb") as dump:
            toc = subprocess.run(["pg_restore", "--list"], stdin=dump, capture_output=True, text=True, check=False)
        if toc.returncode != 0:
            raise BackupError(f"pg_restore --list of {database}.dump failed: {toc.stderr.strip()[-1000:]}")
        extensions, listing = split_extensions(toc.stdout)
        unknown = [e for e in extensions if e not in database_extensions(cfg, database) or not _EXTENSION_NAME.match(e)]
        if unknown:
            raise BackupError(
                f"backup {bid} of {database} creates the extensions {unknown}, which the live database {database} "
                f"does not have; only a superuser can create them (CREATE EXTENSION in {database} first if they "
                "are wanted)"
            )
        if role == RESTORE_ROLE:
            ensure_restore_role(cfg)  # the owner of the new database, before the restore session makes it log in
        psql(cfg, f"CREATE DATABASE {quote_ident(into)} OWNER {quote_ident(role)}")
        try:
            for extension in extensions:
                psql(cfg, f"CREATE EXTENSION IF NOT EXISTS {quote_ident(extension)}", into)
            list_path = os.path.join(tmp, "restore.list")
            write_atomic(list_path, listing, 0o600)
            with restore_session(cfg, role) as session:
                argv = ["pg_restore", *session["args"], "--dbname", into, "--exit-on-error", "--single-transaction"]
                argv += ["--no-owner", "--no-privileges", "--role", role, "--use-list", list_path]
                with open(paths[f"{database}.dump"], "rb") as dump:
                    proc = subprocess.run(
                        argv, stdin=dump, capture_output=True, text=True, check=False, env=session["env"]
                    )
            if proc.returncode != 0:
                raise BackupError(f"pg_restore into {target} failed: {proc.stderr.strip()[-2000:]}")
        except BaseException:
            psql(cfg, f"DROP DATABASE IF EXISTS {quote_ident(into)} WITH (FORCE)")
            raise
    if into == target:
        return None
    # The swap: no new sessions on the old database, the open ones ended, then two renames (undone if the second
    # fails). Writers were stopped by recover.yml; what still connects (an exporter) reconnects to the new one.
    old, new = quote_ident(target), quote_ident(scratch)
    psql(cfg, f"ALTER DATABASE {old} WITH ALLOW_CONNECTIONS false")
    psql(cfg, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :'name'", name=target)
    psql(cfg, f"ALTER DATABASE {old} RENAME TO {quote_ident(previous)}")
    try:
        psql(cfg, f"ALTER DATABASE {new} RENAME TO {old}")
    except BackupError:
        psql(cfg, f"ALTER DATABASE {quote_ident(previous)} RENAME TO {old}")
        psql(cfg, f"ALTER DATABASE {old} WITH ALLOW_CONNECTIONS true")
        raise
    if not relations:
        psql(cfg, f"DROP DATABASE {quote_ident(previous)} WITH (FORCE)")  # it was empty: nothing to keep
        return None
    log(f"{target}: restored from {bid}; the database it replaced is kept as {previous} (no connections allowed)")
    return previous


def cmd_restore(cfg, args):
    store = store_for(cfg, "postgresql", args.source)
    chosen = choose_backup(store, args.backup)
    manifest = checked_manifest(store, cfg, "postgresql", chosen.id)
    clock = time.monotonic()
    previous = restore_database(
        cfg, store, chosen.id, manifest, args.database, args.target or args.database, args.force
    )
    print(
        json.dumps(
            {
                "backup": chosen.id,
                "backup_time": manifest["time"],
                "database": args.database,
                "target": args.target or args.database,
                "previous": previous,
                "seconds": round(time.monotonic() - clock, 3),
            }
        )
    )


def aof_off_execstart(execstart):
    """The redis-server command line of a systemd ExecStart= (as `systemctl show -p ExecStart --value` prints it,
    or a plain command line), with --appendonly no added: Redis with AOF on ignores an RDB file at start, so a
    restored snapshot must be loaded with AOF off first."""
    text = execstart.strip()
    match = re.search(r"argv\[\]=(.*?)\s*;\s*ignore_errors", text)
    if match:
        text = match.group(1)
    if not text or "redis-server" not in text.split()[0]:
        raise BackupError(f"cannot read the redis-server command from ExecStart {execstart.strip()[:300]!r}")
    return f"{text} --appendonly no"


def redis_config(cfg, name):
    lines = redis_cli(cfg, "CONFIG", "GET", name).splitlines()
    return lines[1] if len(lines) > 1 else ""


def wait_redis(cfg, predicate, what, timeout=300):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = parse_info(redis_cli(cfg, "INFO", "persistence"))
            if predicate(last):
                return last
        except BackupError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise BackupError(f"redis: {what} did not happen within {timeout} s (last: {last})")


def redis_keys(cfg):
    return sum(
        int(v.split("keys=")[1].split(",")[0])
        for k, v in parse_info(redis_cli(cfg, "INFO", "keyspace")).items()
        if k.startswith("db") and "keys=" in v
    )


def systemctl(*args):
    proc = run_cmd(["systemctl", *args])
    if proc.returncode != 0:
        raise BackupError(f"systemctl {' '.join(args)} failed: {(proc.stdout + proc.stderr).strip()[-500:]}")
    return proc.stdout


def restore_redis(cfg, store, bid, manifest, unit="redis-server.service"):
    """Replace Redis' data with the snapshot of backup `bid`. The current data files are moved aside (kept under
    <dir>/pre-restore-<id>-<time>/), never deleted; on a failure they are put back and Redis started again."""
    data_dir = redis_config(cfg, "dir") or "/var/lib/redis"
    rdb_name = redis_config(cfg, "dbfilename") or "dump.rdb"
    aof_dir = redis_config(cfg, "appenddirname") or "appendonlydir"
    aof_on = redis_config(cfg, "appendonly") == "yes"
    keys_before = redis_keys(cfg)
    execstart = systemctl("show", "-p", "ExecStart", "--value", unit)
    dropin_dir = f"/run/systemd/system/{unit}.d"
    dropin = os.path.join(dropin_dir, "selfhosted-restore.conf")
    aside = os.path.join(data_dir, f"pre-restore-{bid}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    moved = []
    with tempfile.TemporaryDirectory(prefix="selfhosted-restore-", dir=cfg["local_dir"]) as tmp:
        paths = fetch_verified(store, bid, manifest, ["dump.rdb"], tmp)
        check = run_cmd(["redis-check-rdb", paths["dump.rdb"]])
        if check.returncode != 0 or "RDB looks OK" not in check.stdout + check.stderr:
            raise BackupError(f"redis-check-rdb rejects the snapshot: {(check.stdout + check.stderr).strip()[-500:]}")
        command = aof_off_execstart(execstart) if aof_on else None
        log(f"redis: stopping {unit} ({keys_before} keys now); its files go to {aside}")
        systemctl("stop", unit)
        try:
            os.makedirs(aside, mode=0o750)
            shutil.chown(aside, "redis", "redis")
            for name in (rdb_name, aof_dir):
                if os.path.exists(os.path.join(data_dir, name)):
                    os.rename(os.path.join(data_dir, name), os.path.join(aside, name))
                    moved.append(name)
            target = os.path.join(data_dir, rdb_name)
            shutil.copyfile(paths["dump.rdb"], target + ".restoring")
            os.chmod(target + ".restoring", 0o660)
            shutil.chown(target + ".restoring", "redis", "redis")
            os.rename(target + ".restoring", target)
            if aof_on:
                # Start once with AOF off (an AOF would win over the snapshot), then turn AOF on: Redis writes a
                # new AOF from the loaded data; the drop-in goes before anything else can restart Redis.
                os.makedirs(dropin_dir, exist_ok=True)
                write_atomic(dropin, f"[Service]\nExecStart=\nExecStart={command}\n")
                systemctl("daemon-reload")
                systemctl("start", unit)
                os.remove(dropin)
                systemctl("daemon-reload")
                wait_redis(cfg, lambda i: i.get("loading") == "0", "loading the snapshot")
                redis_cli(cfg, "CONFIG", "SET", "appendonly", "yes")
                wait_redis(
                    cfg,
                    lambda i: (
                        i.get("aof_enabled") == "1"
                        and i.get("aof_rewrite_in_progress") == "0"
                        and i.get("aof_rewrite_scheduled") == "0"
                        and i.get("aof_last_bgrewrite_status") == "ok"
                    ),
                    "writing the new AOF",
                )
            else:
                systemctl("start", unit)
                wait_redis(cfg, lambda i: i.get("loading") == "0", "loading the snapshot")
        except Exception as exc:
            log(f"redis: restore failed ({exc}); putting the previous data back")
            with contextlib.suppress(Exception):
                os.remove(dropin)
                systemctl("daemon-reload")
            with contextlib.suppress(Exception):
                systemctl("stop", unit)
                for name in (rdb_name, aof_dir):
                    current = os.path.join(data_dir, name)
                    if name in moved:
                        if os.path.isdir(current):
                            shutil.rmtree(current)
                        elif os.path.exists(current):
                            os.remove(current)
                        os.rename(os.path.join(aside, name), current)
                systemctl("start", unit)
            raise
    keys_after = redis_keys(cfg)
    log(f"redis: restored backup {bid}: {keys_after} keys (were {keys_before}); the previous files are in {aside}")
    return {"keys_before": keys_before, "keys_after": keys_after, "aof": aof_on, "previous_files": aside}


def cmd_restore_redis(cfg, args):
    if "redis" not in cfg["sets"]:
        raise BackupError("this host backs up no Redis (backup_redis_enabled is false here)")
    store = store_for(cfg, "redis", args.source)
    chosen = choose_backup(store, args.backup)
    manifest = checked_manifest(store, cfg, "redis", chosen.id)
    clock = time.monotonic()
    result = restore_redis(cfg, store, chosen.id, manifest, args.unit)
    result.update({"backup": chosen.id, "backup_time": manifest["time"], "seconds": round(time.monotonic() - clock, 3)})
    print(json.dumps(result))


def smoke_value(output, query):
    try:
        return float(output.strip().splitlines()[0]) if output.strip() else None
    except ValueError as exc:
        raise BackupError(f"smoke query {query['sql']!r} must return one number, got {output.strip()[:200]!r}") from exc


def cmd_drill(cfg, args):
    state = load_state()
    entry = state.setdefault("drill", {}).setdefault("postgresql", {})
    started = time.time()
    entry["last_run_timestamp_seconds"] = started
    drill = cfg.get("drill", {})
    results = []
    try:
        store = store_for(cfg, "postgresql", args.source or ("s3" if cfg.get("s3") else "local"))
        chosen = choose_backup(store)
        manifest = checked_manifest(store, cfg, "postgresql", chosen.id)
        age = started - parse_time(manifest["time"], chosen.id).timestamp()
        clock = time.monotonic()
        # The databases of this host's configuration, never the manifest's list (checked_manifest refuses extras).
        for db in cfg["sets"]["postgresql"].get("databases") or []:
            scratch = f"{drill.get('scratch_prefix', 'restore_drill_')}{db}"
            try:
                if database_exists(cfg, scratch):
                    psql(cfg, f"DROP DATABASE {quote_ident(scratch)} WITH (FORCE)")
                restore_database(cfg, store, chosen.id, manifest, db, scratch)
                # The default smoke check: the restored database is not empty (a dump of an emptied database
                # restores fine and proves nothing).
                relations = user_relations(cfg, scratch)
                if relations == 0:
                    raise BackupError(f"the restored {db} has no tables, views or sequences: the backup is empty")
                results.append({"database": db, "sql": "user relations", "value": relations})
                # In a restore session too: a view or function from the backup never runs as superuser.
                role = restore_role(
                    cfg["sets"]["postgresql"].get("owners", {}).get(db),
                    set(psql(cfg, "SELECT rolname FROM pg_roles WHERE rolsuper").split()),
                )
                with restore_session(cfg, role) as session:
                    for query in [q for q in drill.get("queries", []) if q.get("database", db) == db]:
                        value = smoke_value(psql(cfg, query["sql"], scratch, session=session), query)
                        if value is None or value < float(query.get("min", 0)):
                            raise BackupError(
                                f"smoke query {query['sql']!r} on the restored {db} returned {value}, "
                                f"less than {query.get('min', 0)}"
                            )
                        results.append({"database": db, "sql": query["sql"], "value": value})
            finally:
                if database_exists(cfg, scratch):
                    psql(cfg, f"DROP DATABASE {quote_ident(scratch)} WITH (FORCE)")
        duration = time.monotonic() - clock
    except Exception as exc:  # a failed drill is a result, recorded as a metric
        entry["last_success"] = 0
        save_state(cfg, state)
        raise BackupError(f"restore drill FAILED: {exc}") from exc
    entry.update(
        last_success=1,
        last_success_timestamp_seconds=time.time(),
        duration_seconds=round(duration, 3),
        backup_age_seconds=round(age, 1),
    )
    save_state(cfg, state)
    report = {"backup": chosen.id, "rto_seconds": round(duration, 3), "rpo_seconds": round(age, 1), "queries": results}
    print(json.dumps(report))


def cmd_choose(cfg, args):
    """Which backup a restore of the set would use, and its age; refused (nothing changes) when it does not exist,
    is incomplete, does not match this host, or is older than --max-age. recover.yml shows this and passes the id
    on, so what it restores is what the operator saw."""
    if args.set not in cfg["sets"]:
        raise BackupError(f"this host backs up no {args.set} (its sets: {sorted(cfg['sets'])})")
    store = store_for(cfg, args.set, args.source)
    chosen = choose_backup(store, args.backup)
    manifest = checked_manifest(store, cfg, args.set, chosen.id)
    taken = parse_time(manifest["time"], chosen.id)
    age = (datetime.datetime.now(datetime.timezone.utc) - taken).total_seconds()
    max_age = parse_duration(args.max_age, "--max-age") if args.max_age else None
    if max_age is not None and age > max_age:
        raise BackupError(
            f"the {'named' if args.backup else 'newest complete'} {args.set} backup {chosen.id} is {int(age)} s old, "
            f"more than the {args.max_age} allowed (recover_max_age); name an older backup to restore it anyway"
        )
    print(json.dumps({"set": args.set, "backup": chosen.id, "time": taken.isoformat(), "age_seconds": int(age)}))


def cmd_confirm_size(cfg, args):
    """A person looked at the smaller backup and accepts it: its size becomes the reference, rotation resumes."""
    state = load_state()
    entry = state.get("backup", {}).get(args.set)
    if args.set not in cfg["sets"] or entry is None:
        raise BackupError(f"unknown backup set {args.set!r}; this host has {sorted(cfg['sets'])}")
    if not entry.get("size_hold_id"):
        log(f"{args.set}: no backup waits for a size confirmation")
        return
    log(f"{args.set}: size of backup {entry['size_hold_id']} ({entry['size_hold_bytes']} bytes) confirmed")
    entry["reference_size_bytes"] = entry.pop("size_hold_bytes")
    entry.pop("size_hold_id")
    entry["size_hold"] = 0
    save_state(cfg, state)


def cmd_init(cfg, args):  # pylint: disable=unused-argument
    """First metrics of a new host: counts the install time as the last success, so BackupTooOld fires when the
    timer never runs."""
    state = load_state()
    now = time.time()
    for set_name in cfg["sets"]:
        state.setdefault("backup", {}).setdefault(
            set_name, {"failures_total": 0, "last_success_timestamp_seconds": now, "size_bytes": 0}
        )
    save_state(cfg, state)


def parser():
    top = argparse.ArgumentParser(prog="selfhosted-backup", description=__doc__.split("\n\n", maxsplit=1)[0])
    top.add_argument("--config", default=CONFIG)
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="back up, verify, upload, rotate")
    run.add_argument("sets", nargs="*")
    run.add_argument("--databases", nargs="+", help="only these PostgreSQL databases")
    run.add_argument("--no-rotate", action="store_true")
    run.add_argument(
        "--local-only", action="store_true", help="a safety copy in <local_dir>/safety/SET: not uploaded, never rotated"
    )
    lst = sub.add_parser("list", help="the backups of a set")
    lst.add_argument("set")
    lst.add_argument("--source", choices=["s3", "local"], default="local")
    rst = sub.add_parser("restore", help="restore a PostgreSQL database")
    rst.add_argument("--database", required=True)
    rst.add_argument("--target")
    rst.add_argument("--backup")
    rst.add_argument("--source", choices=["s3", "local"], default="local")
    rst.add_argument("--force", action="store_true")
    rrd = sub.add_parser("restore-redis", help="replace Redis' data with a snapshot (current files kept aside)")
    rrd.add_argument("--backup")
    rrd.add_argument("--source", choices=["s3", "local"], default="local")
    rrd.add_argument("--unit", default="redis-server.service")
    drl = sub.add_parser("drill", help="restore drill into a scratch database")
    drl.add_argument("--source", choices=["s3", "local"])
    sub.add_parser("init", help="first metrics of a new host")
    cho = sub.add_parser("choose", help="the backup a restore would use, its age; refused when too old")
    cho.add_argument("set")
    cho.add_argument("--source", choices=["s3", "local"], default="local")
    cho.add_argument("--backup")
    cho.add_argument("--max-age", help="refuse a backup older than this (36h, 2d)")
    sub.add_parser("holds", help="which sets' rotation waits, and why (JSON)")
    cfs = sub.add_parser("confirm-size", help="accept a much smaller backup of a set; its rotation resumes")
    cfs.add_argument("set")
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    cfg = load_json(args.config)
    cfg.setdefault("host", socket.gethostname())
    handlers = {
        "run": cmd_run,
        "list": cmd_list,
        "restore": cmd_restore,
        "restore-redis": cmd_restore_redis,
        "drill": cmd_drill,
        "init": cmd_init,
        "confirm-size": cmd_confirm_size,
        "choose": cmd_choose,
        "holds": cmd_holds,
    }
    try:
        with contextlib.suppress(BrokenPipeError), open(LOCK, "w") as lock:
            if args.command not in ("list", "choose", "holds"):
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log("another selfhosted-backup run is in progress; waiting for it")
                    fcntl.flock(lock, fcntl.LOCK_EX)
            handlers[args.command](cfg, args)
    except (BackupError, RotateError) as exc:
        print(f"selfhosted-backup: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else: one line that says what, then the traceback for the journal
        print(f"selfhosted-backup: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
