"""Backups end to end against SeaweedFS's real S3 API: a timer-driven backup lands with its manifest, restores
match the source, a restore drill passes, failures are reported and never cause deletions, and rotation of a
two-year hourly history keeps exactly what the policy says (local and S3, check mode giving the same answer)."""

import datetime
import json
import subprocess
import time

import labcheck
import pytest

DB, CACHE, STORAGE = "bk-db", "bk-cache", "bk-storage"
PREFIX = "lab"
TABLE_SUM = (
    "SELECT count(*) || ':' || md5(string_agg(aid::text || ',' || bid::text || ',' || abalance::text, ';' "
    "ORDER BY aid)) FROM pgbench_accounts"
)
SECRETS = [
    "lab-bk-db-secret-4Hn7Qx2",
    "lab-bk-cache-secret-8Pz3Lm",
    "lab-rotator-secret-5Xc2Vb9",
    "lab-auditor-secret-3Wv8Jk",
    "lab-harness-secret-7Rm4Tq",
    "lab-redis-admin-5Rt7Yw",
]


def sh(name, cmd):
    return labcheck.host(name).run(cmd)


def sql(query, db="app"):
    result = sh(DB, f'runuser -u postgres -- psql -d {db} -XAtc "{query}"')
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module", autouse=True)
def s3tool():
    """Copy the S3 helper into the db host (boto3 from Debian is there for the agent)."""
    for name in (DB, CACHE):
        subprocess.run(
            ["docker", "cp", f"{labcheck.SCENARIO_DIR}/tests/s3tool.py", f"{name}:/root/s3tool.py"], check=True
        )


def s3_call(args, identity, on):
    return sh(on, "python3 /root/s3tool.py " + " ".join([identity, *args]))


def s3(*args, identity="rw", on=DB):
    result = s3_call(args, identity, on)
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


def s3_answers(*args, identity="rw", on=DB):
    """s3() for waiting: the answer, or None while the call fails (storage still starting)."""
    result = s3_call(args, identity, on)
    return result.stdout.strip() if result.rc == 0 else None


def s3_backups(host, set_name):
    """{backup id: set of file names} under the set's prefix."""
    out = {}
    for obj in json.loads(s3("list", f"{PREFIX}/{host}/{set_name}/")):
        bid, name = obj["key"].split("/")[3:5]
        out.setdefault(bid, set()).add(name)
    return out


def complete_ids(host, set_name):
    return sorted(bid for bid, names in s3_backups(host, set_name).items() if "manifest.json" in names)


def metrics(name):
    text = labcheck.host(name).file("/var/lib/prometheus/node-exporter/selfhosted_backup.prom").content_string
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if not line.startswith("#")}


@pytest.fixture(scope="module")
def filled():
    """pgbench data in the app database, and its row count + checksum."""
    result = sh(DB, "runuser -u postgres -- pgbench -i -s 10 -q app")
    assert result.rc == 0, result.stderr
    sql("UPDATE pgbench_accounts SET abalance = aid % 997 WHERE aid % 13 = 0")
    return sql(TABLE_SUM)


def s3_fails(*args, identity, on=DB):
    """The error of a call that must fail (botocore's message), asserting that it did."""
    result = s3_call(args, identity, on)
    assert result.rc != 0, result.stdout
    return result.stderr


def test_each_host_key_writes_only_its_own_prefix_and_can_destroy_nothing():
    """Issue 23, finding 5: every backup host shared one key with read, write and delete on the whole bucket, so a
    key read on the cache host could plant a backup under the db host's prefix (which the drill restored as
    superuser) and delete every host's backups. Now each host has a writer limited to its own prefix that cannot
    delete, and the bucket is versioned, so an overwrite keeps the old version."""
    key = f"{PREFIX}/{DB}/probe/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}/manifest.json"  # new each run
    assert s3("put", key, "first", identity="db") == "ok"
    # bk-cache's key on bk-db's prefix: no write, no read, no listing; and not at the top of the bucket either.
    assert s3("put", key, "planted", identity="cache", on=CACHE) == "AccessDenied"
    assert s3("put", f"{PREFIX}/{DB}x/probe", "x", identity="db") == "AccessDenied"  # a prefix is not a name start
    assert "AccessDenied" in s3_fails("get", key, identity="cache", on=CACHE)
    assert "AccessDenied" in s3_fails("list", f"{PREFIX}/{DB}/", identity="cache", on=CACHE)
    assert "AccessDenied" in s3_fails("list", f"{PREFIX}/", identity="db")
    # The host's own key deletes nothing, alone or in a batch.
    assert s3("delete", key, identity="db") == "AccessDenied"
    assert s3("delete-many", key, identity="db") == "AccessDenied"
    assert json.loads(s3("get", key, identity="db"))["text"] == "first"
    # An overwrite with the host's key keeps the first version, which only the rotator could remove.
    assert s3("put", key, "second", identity="db") == "ok"
    versions = json.loads(s3("versions", key, identity="ro"))
    assert len(versions) == 2 and not any(v["marker"] for v in versions), versions
    (older,) = [v["version"] for v in versions if not v["latest"]]
    assert s3("get-version", key, older, identity="ro") == "first"
    assert "AccessDenied" in s3_fails("versions", key, identity="db")
    # The auditor reads and cannot write; a wrong secret is refused.
    assert s3("put", key, "x", identity="ro") == "AccessDenied"
    assert s3("put", key, "x", identity="bad") == "SignatureDoesNotMatch"
    # The rotator's delete leaves a delete marker: every version stays until rotation purges it.
    assert s3("delete", key, identity="rotator") == "ok"
    assert key not in [o["key"] for o in json.loads(s3("list", f"{PREFIX}/{DB}/probe/", identity="ro"))]
    assert len(json.loads(s3("versions", key, identity="ro"))) == 3
    # The hosts' config holds their own key only; the rotation key is never on a backed-up host.
    for name in (DB, CACHE):
        config = labcheck.host(name).file("/etc/selfhosted/backup.json")
        assert config.mode == 0o600 and "lab-rotator-secret-5Xc2Vb9" not in config.content_string


def test_shared_or_rotation_keys_on_a_backup_host_are_refused():
    shared = {"bucket": "backups", "access_key": "k" * 12, "secret_key": "s" * 20}  # one key on every host
    labcheck.assert_refused_in_preflight("backup_preflight", json.dumps({"backup_s3": shared}), "its own S3 identity")
    labcheck.assert_refused_in_preflight(
        "backup_preflight",
        json.dumps({"backup_s3_rotation": {"access_key": "lab-bk-db-writer", "secret_key": "s" * 20}}),
        "backup_s3_rotation",
    )


def test_storage_internals_stay_on_loopback():
    listening = labcheck.host(STORAGE).check_output("ss -Hltnp")
    weed = [line.split()[3] for line in listening.splitlines() if '"weed-' in line]
    assert weed and all(addr.startswith("127.0.0.1:") for addr in weed), weed
    s3_socket = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(":8333")]
    assert s3_socket == ["*:8333"], s3_socket
    assert not labcheck.can_connect(DB, labcheck.address(STORAGE), 9333)


def test_timer_driven_backup_lands_with_manifest(filled):
    before = set(complete_ids(DB, "postgresql"))
    host = labcheck.host(DB)
    # A runtime drop-in moves the real timer to 5 s from now; nothing else starts the service.
    when = host.check_output("date -u -d '+5 sec' '+%Y-%m-%d %H:%M:%S UTC'")
    host.run_expect(
        [0],
        "mkdir -p /run/systemd/system/selfhosted-backup.timer.d && printf '[Timer]\\nOnCalendar=\\nOnCalendar=%s\\n"
        "RandomizedDelaySec=0\\n' '" + when + "' > /run/systemd/system/selfhosted-backup.timer.d/test.conf && "
        "systemctl daemon-reload && systemctl restart selfhosted-backup.timer",
    )
    try:
        assert labcheck.wait_for(lambda: set(complete_ids(DB, "postgresql")) - before, timeout=90)
        assert labcheck.wait_for(
            lambda: host.run("systemctl is-active selfhosted-backup.service").stdout.strip() == "inactive", timeout=60
        )
        journal = host.check_output("journalctl -u selfhosted-backup.service --no-pager -n 50")
        assert "Started selfhosted-backup.service" in journal or "Finished selfhosted-backup.service" in journal
    finally:
        host.run("rm -rf /run/systemd/system/selfhosted-backup.timer.d && systemctl daemon-reload")
        host.run("systemctl restart selfhosted-backup.timer")
    new = sorted(set(complete_ids(DB, "postgresql")) - before)[-1]
    files = s3_backups(DB, "postgresql")[new]
    assert files == {"app.dump", "globals.sql", "manifest.json"}
    manifest = json.loads(json.loads(s3("get", f"{PREFIX}/{DB}/postgresql/{new}/manifest.json"))["text"])
    assert manifest["id"] == new and manifest["databases"] == ["app"] and manifest["owners"] == {"app": "app"}
    assert manifest["tools"]["pg_dump"].startswith("pg_dump (PostgreSQL) 15")
    for entry in manifest["files"]:
        obj = json.loads(s3("get", f"{PREFIX}/{DB}/postgresql/{new}/{entry['name']}"))
        assert obj["sha256"] == entry["sha256"] == obj["metadata"]["sha256"]
        assert obj["size"] == entry["size"]
    m = metrics(DB)
    assert m['selfhosted_backup_last_run_success{set="postgresql"}'] == 1
    assert m['selfhosted_backup_size_bytes{set="postgresql"}'] == manifest["total_size"] > 100_000


def test_restore_into_fresh_database_matches_source(filled):
    rc, out = labcheck.playbook(
        "../../playbooks/restore.yml", "-l", DB, "-e", "restore_database=app", "-e", "restore_target=app_restored"
    )
    assert rc == 0, out
    assert sql(TABLE_SUM, db="app_restored") == filled
    assert sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app_restored'") == "app"
    # Restored with --no-owner as the configured owner: pgbench made the tables as postgres, app owns the copies.
    assert (
        sql("SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'", db="app_restored")
        == "app"
    )


def test_restore_refuses_a_non_empty_database(filled):
    rc, out = labcheck.playbook(
        "../../playbooks/restore.yml", "-l", DB, "-e", "restore_database=app", "-e", "restore_target=app_restored"
    )
    assert rc != 0 and "is not empty" in out and "restore_force=true" in out, out
    assert sql(TABLE_SUM, db="app_restored") == filled
    sql("DROP DATABASE app_restored", db="postgres")


def test_restore_refuses_bad_input_before_any_change():
    rc, out = labcheck.playbook("../../playbooks/restore.yml", "-l", DB, "-e", "restore_database='app; drop'")
    assert rc != 0 and "restore_database" in out, out
    assert labcheck.recap(out)[DB]["changed"] == 0


def test_restore_drill(filled):
    rc, out = labcheck.playbook("../../playbooks/restore-drill.yml")
    assert rc == 0, out
    assert "rto_seconds" in out and "value: 1000000.0" in out, out
    assert sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'restore_drill_%'", db="postgres") == "0"
    m = metrics(DB)
    assert m['selfhosted_restore_drill_last_success{set="postgresql"}'] == 1
    assert m['selfhosted_restore_drill_duration_seconds{set="postgresql"}'] > 0
    assert 0 <= m['selfhosted_restore_drill_backup_age_seconds{set="postgresql"}'] < 3600


CRAFT = """
import json, os, shutil, sys, time
base = "/var/backups/selfhosted/postgresql"
newest = max(n for n in os.listdir(base) if n[:1].isdigit())
bid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
shutil.copytree(os.path.join(base, newest), os.path.join(base, bid))
path = os.path.join(base, bid, "manifest.json")
m = json.load(open(path))
m.update(id=bid, **json.loads(sys.argv[1]))
json.dump(m, open(path, "w"))
print(bid)
"""


def test_the_drill_refuses_a_manifest_that_does_not_match_the_host(tmp_path):
    # Issue 23, finding 5 (part): the drill restored the databases named in the manifest, as the superuser; anyone
    # who can write a manifest chose what ran. It now takes them from the host's configuration and refuses a
    # manifest naming another database or another host.
    host = labcheck.host(DB)
    (tmp_path / "craft.py").write_text(CRAFT)
    subprocess.run(["docker", "cp", str(tmp_path / "craft.py"), f"{DB}:/root/craft.py"], check=True)
    for change, refusal in (
        ({"databases": ["app", "postgres"]}, "databases this host does not back up: postgres"),
        ({"host": "bk-cache"}, "it names host 'bk-cache'"),
    ):
        crafted = host.check_output(f"python3 /root/craft.py '{json.dumps(change)}'")
        try:
            result = host.run("selfhosted-backup drill --source local")
            assert result.rc != 0 and refusal in result.stderr, result.stdout + result.stderr
            assert metrics(DB)['selfhosted_restore_drill_last_success{set="postgresql"}'] == 0
            assert sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'restore_drill_%'", db="postgres") == "0"
        finally:
            host.run_expect([0], f"rm -rf /var/backups/selfhosted/postgresql/{crafted}")
        time.sleep(1)  # the next crafted id is a later second
    host.run_expect([0], "selfhosted-backup drill --source local")  # the real newest backup passes again
    assert metrics(DB)['selfhosted_restore_drill_last_success{set="postgresql"}'] == 1


PLANTED = """
CREATE FUNCTION planted(int) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE TABLE accounts (id int CHECK (planted(id)));
INSERT INTO accounts SELECT generate_series(1, 3);
CREATE OR REPLACE FUNCTION planted(int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  RESET ROLE;  -- back to the session user: a superuser when pg_restore --role ran after connecting as postgres
  EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'touch /var/lib/postgresql/planted-ran');
  RETURN true;
END $$;
"""

SWAP_DUMP = """
import hashlib, json, os, shutil, time
base = "/var/backups/selfhosted/postgresql"
newest = max(n for n in os.listdir(base) if n[:1].isdigit())
bid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
shutil.copytree(os.path.join(base, newest), os.path.join(base, bid))
shutil.copyfile("/root/planted.dump", os.path.join(base, bid, "app.dump"))
data = open("/root/planted.dump", "rb").read()
path = os.path.join(base, bid, "manifest.json")
m = json.load(open(path))
m["id"] = bid
for f in m["files"]:
    if f["name"] == "app.dump":
        f.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
json.dump(m, open(path, "w"))
print(bid)
"""


def test_sql_planted_in_a_backup_never_runs_as_superuser(tmp_path):
    """Issue 23, finding 5: the drill restored as the PostgreSQL superuser, so SQL in a backup (here a CHECK
    constraint whose function runs a program while the rows load) ran with every right on the db host. Restores now
    log in as an unprivileged session user and run with --no-owner --no-privileges as the database's owner from
    the host's configuration; the planted RESET ROLE (which defeats SET ROLE / pg_restore --role over a superuser
    login) gains nothing: the drill fails and the program never runs."""
    host = labcheck.host(DB)
    host.run("rm -f /var/lib/postgresql/planted-ran")
    sql("DROP DATABASE IF EXISTS planted_src", db="postgres")
    sql("CREATE DATABASE planted_src", db="postgres")
    (tmp_path / "planted.sql").write_text(PLANTED)
    (tmp_path / "swap.py").write_text(SWAP_DUMP)
    for name in ("planted.sql", "swap.py"):
        subprocess.run(["docker", "cp", str(tmp_path / name), f"{DB}:/root/{name}"], check=True)
    host.run_expect([0], "runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -d planted_src < /root/planted.sql")
    host.run_expect([0], "runuser -u postgres -- pg_dump -Fc planted_src > /root/planted.dump")
    sql("DROP DATABASE planted_src", db="postgres")
    assert not host.file("/var/lib/postgresql/planted-ran").exists  # creating the source ran nothing
    crafted = host.check_output("python3 /root/swap.py")
    try:
        result = host.run("selfhosted-backup drill --source local")
        assert not host.file("/var/lib/postgresql/planted-ran").exists, "SQL from a backup ran as superuser"
        assert result.rc != 0, result.stdout + result.stderr
        assert "permission denied" in result.stderr or "must be superuser" in result.stderr, result.stderr
        assert sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'restore_drill_%'", db="postgres") == "0"
    finally:
        host.run_expect([0], f"rm -rf /var/backups/selfhosted/postgresql/{crafted} /var/lib/postgresql/planted-ran")
    time.sleep(1)
    host.run_expect([0], "selfhosted-backup drill --source local")  # the real newest backup passes again


def test_redis_snapshot_restores_the_keys():
    cache = labcheck.host(CACHE)
    auth = "REDISCLI_AUTH=lab-redis-admin-5Rt7Yw redis-cli --no-auth-warning"
    cache.run_expect([0], f"for i in $(seq 1 3000); do echo SET backuptest:$i value-$i; done | {auth} --pipe")
    keys = cache.check_output(f"{auth} DBSIZE")
    rc, out = labcheck.playbook("../../playbooks/backup.yml", "-l", CACHE)
    assert rc == 0, out
    newest = complete_ids(CACHE, "redis")[-1]
    assert s3_backups(CACHE, "redis")[newest] == {"dump.rdb", "manifest.json"}
    # Load the uploaded snapshot into a scratch Redis and count its keys.
    s3("download", f"{PREFIX}/{CACHE}/redis/{newest}/dump.rdb", "/root/rdb/dump.rdb", identity="ro", on=CACHE)
    cache.run_expect([0], "redis-server --port 6390 --dir /root/rdb --dbfilename dump.rdb --daemonize yes --save ''")
    try:
        assert labcheck.wait_for(lambda: cache.run("redis-cli -p 6390 PING").stdout.strip() == "PONG", timeout=20)
        assert cache.check_output("redis-cli -p 6390 DBSIZE") == keys
    finally:
        cache.run("redis-cli -p 6390 SHUTDOWN NOSAVE")


def test_failed_pg_dump_is_reported_and_counted():
    before_ids = complete_ids(DB, "postgresql")
    before = metrics(DB)['selfhosted_backup_failures_total{set="postgresql"}']
    result = sh(DB, "selfhosted-backup run postgresql --databases no_such_db")
    assert result.rc == 1
    assert "BACKUP FAILED" in result.stdout and "no_such_db" in result.stdout, result.stdout
    m = metrics(DB)
    assert m['selfhosted_backup_failures_total{set="postgresql"}'] == before + 1
    assert m['selfhosted_backup_last_run_success{set="postgresql"}'] == 0
    assert complete_ids(DB, "postgresql") == before_ids
    assert sh(DB, "ls -A /var/backups/selfhosted/postgresql | grep -c partial").stdout.strip() == "0"


def journal(host):
    return host.run("journalctl -u throttled-backup -o cat").stdout


def test_upload_failing_half_way_keeps_the_local_backup_and_the_next_run_uploads_it():
    """The upload is throttled so it is still running when the storage service stops under it. The verified local
    copy stays (before issue 23 it was deleted with the failed upload: no new backup anywhere), the failure is a
    metric, nothing on S3 is deleted or counted, and the next run uploads the waiting backup."""
    host = labcheck.host(DB)
    before = s3_backups(DB, "postgresql")
    host.run_expect(
        [0],
        "python3 -c \"import json; c = json.load(open('/etc/selfhosted/backup.json')); "
        "c['s3'].update(max_bandwidth_mbps=4, max_attempts=2); json.dump(c, open('/root/throttled.json', 'w'))\"",
    )
    host.run_expect(
        [0], "systemd-run --unit=throttled-backup selfhosted-backup --config /root/throttled.json run postgresql"
    )
    try:
        # The dump and its checks take about a second; then the upload runs at 0.5 MB/s for several seconds.
        assert labcheck.wait_for(lambda: "verified" in journal(host), timeout=60)
        time.sleep(1.5)
        assert "uploaded" not in journal(host)
        labcheck.host(STORAGE).run_expect([0], "systemctl stop seaweedfs-s3.socket seaweedfs-s3.service seaweedfs")
        assert labcheck.wait_for(
            lambda: host.run("systemctl is-active throttled-backup").stdout.strip() in ("failed", "inactive"),
            timeout=120,
        )
    finally:
        labcheck.host(STORAGE).run_expect([0], "systemctl start seaweedfs seaweedfs-s3.socket")
    log = journal(host)
    assert "UPLOAD FAILED" in log and "manifest uploaded" not in log, log
    assert host.run("systemctl show -p Result --value throttled-backup").stdout.strip() in ("exit-code", "")
    host.run("systemctl reset-failed throttled-backup")
    state = json.loads(host.file("/var/lib/selfhosted/backup-state.json").content_string)["backup"]["postgresql"]
    (waiting,) = state["pending_upload"]
    assert host.file(f"/var/backups/selfhosted/postgresql/{waiting}/manifest.json").is_file  # the local copy
    m = metrics(DB)
    assert m['selfhosted_backup_last_upload_success{set="postgresql"}'] == 0
    assert m['selfhosted_backup_pending_uploads{set="postgresql"}'] == 1
    assert m['selfhosted_backup_last_run_success{set="postgresql"}'] == 1  # a verified backup exists (locally)
    # SeaweedFS takes connections (socket activation) before its S3 gateway answers: a reset connection is "not yet".
    assert labcheck.wait_for(lambda: s3_answers("put", "lab/probe", "x") == "ok", timeout=60)  # the harness key
    after = s3_backups(DB, "postgresql")
    # Nothing deleted; whatever the interrupted upload left has no manifest, so it does not count.
    assert set(before) <= set(after)
    assert complete_ids(DB, "postgresql") == sorted(b for b in before if "manifest.json" in before[b])
    # The next run uploads the waiting backup, then its own.
    host.run_expect([0], "selfhosted-backup run postgresql")
    assert waiting in complete_ids(DB, "postgresql")
    m = metrics(DB)
    assert m['selfhosted_backup_last_upload_success{set="postgresql"}'] == 1
    assert m['selfhosted_backup_pending_uploads{set="postgresql"}'] == 0


# --- rotation over a synthetic two-year hourly history ------------------------------------------------------------
END = datetime.datetime(2026, 11, 20, 21, 0, tzinfo=datetime.timezone.utc)  # 23:00 in UTC+2, a Friday
HOURS = 2 * 365 * 24
TZ = datetime.timezone(datetime.timedelta(hours=2))  # Etc/GMT-2, the module's timezone in rotate.yml


def last_hour_before(start):
    return start - datetime.timedelta(hours=1)


def expected_keep():
    """Policy keep_last 5, daily 7, weekly 4, monthly 12, yearly 3 over one backup every hour, in UTC+2: the
    newest of each period is its last hour (23:00 local), found here by calendar arithmetic alone."""
    end = END.astimezone(TZ)
    day0 = end.replace(hour=0)
    keep = {end - datetime.timedelta(hours=i) for i in range(5)}
    keep |= {end} | {last_hour_before(day0 - datetime.timedelta(days=k)) for k in range(6)}
    monday = day0 - datetime.timedelta(days=end.weekday())
    keep |= {last_hour_before(monday - datetime.timedelta(weeks=k)) for k in range(3)}
    month = day0.replace(day=1)
    for _month in range(11):
        keep.add(last_hour_before(month))
        month = (month - datetime.timedelta(days=1)).replace(day=1)
    keep |= {last_hour_before(day0.replace(month=1, day=1, year=end.year - k)) for k in range(2)}
    return sorted((t.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") for t in keep), reverse=True)


def rotate(label, *args):
    rc, out = labcheck.playbook("rotate.yml", "-e", f"rotate_label={label}", *args)
    assert rc == 0, out
    return json.loads(labcheck.host(DB).file(f"/root/rotate-{label}.json").content_string)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_rotation_of_two_years_keeps_exactly_the_policy(backend):
    host = labcheck.host(DB)
    where = ["-e", "rotate_path=/root/history"] if backend == "local" else ["-e", "rotate_prefix=synthetic/s3"]
    if backend == "local":
        host.run_expect(
            [0], "rm -rf /root/history && mkdir /root/history && touch /root/history/.selfhosted-backup-set"
        )
        host.run_expect([0], f"python3 /root/s3tool.py - local-history /root/history {END.isoformat()} {HOURS}")
    else:
        s3("clear", "synthetic/s3/")
        s3("history", "synthetic/s3", END.isoformat(), str(HOURS))
    checked = rotate(f"{backend}-check", "--check", *where)
    done = rotate(backend, *where)
    again = rotate(f"{backend}-again", *where)
    want = expected_keep()
    assert len(want) == 25
    assert checked["kept"] == done["kept"] == want
    assert len(done["deleted"]) == HOURS - len(want) and checked["deleted"] == done["deleted"]
    assert done["changed"] and not again["changed"] and again["kept"] == want
    if backend == "local":
        left = sorted(host.check_output("ls /root/history").split(), reverse=True)
    else:
        left = sorted({o["key"].split("/")[2] for o in json.loads(s3("list", "synthetic/s3/"))}, reverse=True)
    assert left == want
    assert "keep: newest complete backup" in done["reasons"][want[0]]


def test_check_mode_is_clean_and_hides_secrets():
    labcheck.assert_check_mode_clean(SECRETS)


def test_bad_retention_is_refused_before_any_change():
    labcheck.assert_refused_in_preflight(
        "backup_preflight", '{"backup_retention": {"grace": "1d"}}', "backup_retention"
    )
    labcheck.assert_refused_in_preflight("backup_preflight", '{"backup_schedule": "at two"}', "backup_schedule")
    # A system directory as the agent's base would mix backups with the system's files (issue 23, finding 1).
    labcheck.assert_refused_in_preflight("backup_preflight", '{"backup_local_dir": "/var"}', "backup_local_dir")
    labcheck.assert_refused_in_preflight("backup_preflight", '{"backup_min_size_ratio": 1.5}', "backup_min_size_ratio")
    labcheck.assert_refused_in_preflight(
        "object_storage_preflight", '{"object_storage_buckets": ["Bad_Bucket"]}', "object_storage_buckets"
    )


def test_rotate_backups_rotates_s3_with_the_rotation_key_and_a_deleted_backup_can_be_brought_back():
    """S3 is rotated by playbooks/rotate-backups.yml alone, with the rotator key on the storage host (the agents'
    keys cannot delete): ten hourly backups of January are rotated down to the one the daily rule keeps, the real
    backups stay, and each deleted backup is still there as an older version until its way-back window ends (issue
    23, finding 5)."""
    prefix = f"{PREFIX}/{DB}/postgresql"
    real = complete_ids(DB, "postgresql")
    assert real
    end = "2026-01-10T12:00:00+00:00"
    s3("history", prefix, end, "10")
    old = [b for b in complete_ids(DB, "postgresql") if b.startswith("20260110")]
    assert len(old) == 10
    try:
        rc, out = labcheck.playbook("../../playbooks/rotate-backups.yml", "-e", "rotate_backups_where=s3")
        assert rc == 0, out
        assert "lab-rotator-secret-5Xc2Vb9" not in out
        left = complete_ids(DB, "postgresql")
        # backup_retention keep_last 3: the three newest real backups stay (older ones of today may go).
        assert set(sorted(real)[-3:]) <= set(left) and set(left) <= set(real) | set(old), (real, left)
        assert [b for b in left if b.startswith("20260110")] == [max(old)]  # the newest of that day
        gone = sorted(set(old) - set(left))
        assert len(gone) == 9
        # Rotation left delete markers: the deleted backup's manifest is an older version an operator can restore.
        versions = json.loads(s3("versions", f"{prefix}/{gone[0]}/manifest.json", identity="ro"))
        kept = [v for v in versions if not v["marker"]]
        assert kept and any(v["marker"] and v["latest"] for v in versions), versions
        text = s3("get-version", f"{prefix}/{gone[0]}/manifest.json", kept[0]["version"], identity="ro")
        assert json.loads(text)["id"] == gone[0]
        # Once the way-back window is over (0s here, 7d by default) the older versions and markers go for good,
        # and nothing current does.
        rc, out = labcheck.playbook(
            "../../playbooks/rotate-backups.yml",
            "-e",
            "rotate_backups_where=s3",
            "-e",
            "backup_s3_purge_noncurrent_after=0s",
        )
        assert rc == 0, out
        assert json.loads(s3("versions", f"{prefix}/{gone[0]}/", identity="ro")) == []
        assert complete_ids(DB, "postgresql") == left
    finally:
        for bid in old:
            s3("clear", f"{prefix}/{bid}/")
