"""The backup agent's decisions (roles/backup/files/selfhosted_backup.py): ids, manifests, dump checks, Redis
snapshot completion, metrics text, throttling, checksum-verified fetches, and that a failed backup is counted
and never followed by a rotation."""

import datetime
import hashlib
import importlib.util
import json
import os
import sys
import time
import types

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))  # where _backup_rotate lives in the repository
spec = importlib.util.spec_from_file_location(
    "selfhosted_backup", os.path.join(ROOT, "roles/backup/files/selfhosted_backup.py")
)
agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agent)

UTC = datetime.timezone.utc


def test_ids_are_utc_times():
    moment = datetime.datetime(2026, 11, 25, 3, 15, 9, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert agent.backup_id(moment) == "20261125T021509Z"


def test_manifest():
    files = [{"name": "b.dump", "size": 5, "sha256": "x"}, {"name": "a.sql", "size": 7, "sha256": "y"}]
    m = agent.build_manifest(
        "20261125T021509Z",
        "postgresql",
        "postgresql",
        "db1",
        datetime.datetime(2026, 11, 25, 2, 15, 9, tzinfo=UTC),
        files,
        {"pg_dump": "15"},
        {"databases": ["app"]},
    )
    assert [f["name"] for f in m["files"]] == ["a.sql", "b.dump"]
    assert m["total_size"] == 12 and m["time"] == "2026-11-25T02:15:09+00:00" and m["databases"] == ["app"]


def test_dump_checks():
    toc = [";", "; Archive created at 2026-11-25", "215; 1259 16390 TABLE public items app"]
    assert agent.dump_problems(4096, toc, 512) == []
    assert "fewer than the minimum" in agent.dump_problems(100, toc, 512)[0]
    assert "no table of contents" in agent.dump_problems(4096, [";", "; header only"], 512)[0]
    assert "no table of contents" in agent.dump_problems(4096, [], 512)[0]


def test_redis_snapshot_completion():
    started = 1_000
    assert agent.redis_save_done({"rdb_bgsave_in_progress": "1", "rdb_last_save_time": "2000"}, started) == (False, "")
    assert agent.redis_save_done({"rdb_bgsave_in_progress": "0", "rdb_last_save_time": "999"}, started) == (False, "")
    ok = {"rdb_bgsave_in_progress": "0", "rdb_last_save_time": "1000", "rdb_last_bgsave_status": "ok"}
    assert agent.redis_save_done(ok, started) == (True, "")
    done, error = agent.redis_save_done({**ok, "rdb_last_bgsave_status": "err"}, started)
    assert done and "err" in error
    assert agent.parse_info("# Persistence\r\nrdb_bgsave_in_progress:0\r\n") == {"rdb_bgsave_in_progress": "0"}


def test_metrics_keep_full_precision_and_labels():
    state = {
        "backup": {"postgresql": {"last_success_timestamp_seconds": 1795641692.0811827, "failures_total": 2}},
        "drill": {"postgresql": {"last_success": 1}},
    }
    text = agent.render_metrics(state)
    assert 'selfhosted_backup_last_success_timestamp_seconds{set="postgresql"} 1795641692.0811827' in text
    assert 'selfhosted_backup_failures_total{set="postgresql"} 2' in text
    assert "# TYPE selfhosted_backup_failures_total counter" in text
    assert 'selfhosted_restore_drill_last_success{set="postgresql"} 1' in text
    assert "size_bytes" not in text  # no sample, no metric


def test_throttled_reads_keep_the_rate():
    import io

    fh = agent.Throttled(io.BytesIO(b"x" * 300_000), 1_000_000)
    start = time.monotonic()
    while fh.read(50_000):
        pass
    assert time.monotonic() - start >= 0.25


def test_smoke_values():
    assert agent.smoke_value("42\n", {"sql": "q"}) == 42.0
    assert agent.smoke_value("", {"sql": "q"}) is None
    with pytest.raises(agent.BackupError, match="must return one number"):
        agent.smoke_value("abc", {"sql": "q"})


def make_local_backup(root, bid, data=b"dump-bytes", corrupt=False):
    os.makedirs(os.path.join(root, bid))
    with open(os.path.join(root, bid, "app.dump"), "wb") as fh:
        fh.write(data if not corrupt else data[::-1])
    files = [{"name": "app.dump", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]
    manifest = agent.build_manifest(
        bid, "postgresql", "postgresql", "db1", agent.id_time(bid), files, {}, {"databases": ["app"]}
    )
    with open(os.path.join(root, bid, "manifest.json"), "w") as fh:
        json.dump(manifest, fh)
    return manifest


def test_fetch_checks_the_sha256(tmp_path):
    store = agent.LocalSet(str(tmp_path / "set"))
    good = make_local_backup(store.path, "20261124T020000Z")
    bad = make_local_backup(store.path, "20261125T020000Z", corrupt=True)  # same size, other bytes
    out = tmp_path / "out"
    out.mkdir()
    paths = agent.fetch_verified(store, "20261124T020000Z", good, ["app.dump"], str(out))
    with open(paths["app.dump"], "rb") as fh:
        assert fh.read() == b"dump-bytes"
    with pytest.raises(agent.BackupError, match="SHA-256"):
        agent.fetch_verified(store, "20261125T020000Z", bad, ["app.dump"], str(out))
    with pytest.raises(agent.BackupError, match="has no file"):
        agent.fetch_verified(store, "20261124T020000Z", good, ["other.dump"], str(out))


def test_choose_backup(tmp_path):
    store = agent.LocalSet(str(tmp_path / "set"))
    with pytest.raises(agent.BackupError, match="no complete backup"):
        agent.choose_backup(store)
    make_local_backup(store.path, "20261124T020000Z")
    make_local_backup(store.path, "20261125T020000Z")
    os.makedirs(os.path.join(store.path, "20261126T020000Z"))  # upload in progress: no manifest
    assert agent.choose_backup(store).id == "20261125T020000Z"
    assert agent.choose_backup(store, "20261124T020000Z").id == "20261124T020000Z"
    with pytest.raises(agent.BackupError, match="incomplete"):
        agent.choose_backup(store, "20261126T020000Z")
    with pytest.raises(agent.BackupError, match="no backup 20200101T000000Z"):
        agent.choose_backup(store, "20200101T000000Z")


def test_choose_backup_never_takes_one_dated_in_the_future(tmp_path):
    # Issue 23, finding 2: with real backups and one dated 2099, a restore took the 2099 one by default.
    store = agent.LocalSet(str(tmp_path / "set"))
    make_local_backup(store.path, "20261124T020000Z")
    make_local_backup(store.path, "20991231T020000Z")
    assert agent.choose_backup(store).id == "20261124T020000Z"
    assert agent.choose_backup(store, "20991231T020000Z").id == "20991231T020000Z"  # named: the operator's choice


def test_the_agent_marks_its_set_directories(tmp_path):
    store = agent.LocalSet(str(tmp_path / "set"))
    store.read()
    assert os.path.isfile(os.path.join(store.path, ".selfhosted-backup-set"))


def agent_cfg(tmp_path, monkeypatch, sets, s3=None, **extra):
    """The agent's configuration for a test host db1 under tmp_path (backups in b/, metrics beside the state file,
    which goes to tmp_path too), keep_last 1 locally and on S3, no S3 unless given."""
    monkeypatch.setattr(agent, "STATE", str(tmp_path / "state.json"))
    return {
        "host": "db1",
        "local_dir": str(tmp_path / "b"),
        "textfile_dir": str(tmp_path),
        "sets": sets,
        "retention": {"keep_last": 1},
        "local_retention": {"keep_last": 1},
        "s3": s3 or {},
        **extra,
    }


def test_failed_backup_is_counted_and_nothing_is_rotated(tmp_path, monkeypatch):
    cfg = agent_cfg(tmp_path, monkeypatch, sets={"postgresql": {"kind": "postgresql", "databases": ["app"]}})
    rotations = []

    def failing(*_args, **_kwargs):
        raise agent.BackupError("pg_dump failed (exit 1): database does not exist")

    monkeypatch.setattr(agent, "backup_set", failing)
    monkeypatch.setattr(agent, "rotate", lambda *a, **k: rotations.append(a))
    args = types.SimpleNamespace(sets=[], databases=None, no_rotate=False, local_only=False)
    for expected in (1, 2):
        with pytest.raises(agent.BackupError, match="backup failed for postgresql"):
            agent.cmd_run(cfg, args)
        with open(agent.STATE) as fh:
            state = json.load(fh)["backup"]["postgresql"]
        assert state["failures_total"] == expected and state["last_run_success"] == 0
    assert rotations == []
    prom = (tmp_path / "selfhosted_backup.prom").read_text()
    assert 'selfhosted_backup_failures_total{set="postgresql"} 2' in prom


def test_a_failed_rotation_keeps_the_backup_and_the_next_set_still_runs(tmp_path, monkeypatch):
    # Issue 23, finding 4 (part): an S3 error while rotating one set aborted the run, so the next set (Redis) was
    # never backed up and the traceback escaped.
    cfg = agent_cfg(tmp_path, monkeypatch, sets={"postgresql": {"kind": "postgresql"}, "redis": {"kind": "redis"}})
    backed_up = []

    def backup(_cfg, set_name, _databases=None, safety=False):
        backed_up.append(set_name)
        return {"id": "20261124T020000Z", "total_size": 1000}, 0.1

    def rotate(_cfg, set_name, *_args):
        if set_name == "postgresql":
            raise RuntimeError("S3 DeleteObjects: InternalError")

    monkeypatch.setattr(agent, "backup_set", backup)
    monkeypatch.setattr(agent, "rotate", rotate)
    with pytest.raises(agent.BackupError, match=r"backup failed for postgresql \(rotation\)"):
        agent.cmd_run(cfg, types.SimpleNamespace(sets=[], databases=None, no_rotate=False, local_only=False))
    assert backed_up == ["postgresql", "redis"]
    with open(agent.STATE) as fh:
        state = json.load(fh)["backup"]
    assert state["postgresql"]["last_run_success"] == 1 and state["postgresql"]["rotation_failures_total"] == 1
    assert state["postgresql"]["last_rotation_success"] == 0 and state["redis"]["last_rotation_success"] == 1
    prom = (tmp_path / "selfhosted_backup.prom").read_text()
    assert 'selfhosted_backup_rotation_failures_total{set="postgresql"} 1' in prom


@pytest.mark.parametrize(
    ("size", "reference", "ratio", "flagged"),
    [(400, 1000, 0.5, True), (500, 1000, 0.5, False), (10, None, 0.5, False), (10, 0, 0.5, False), (1, 1000, 0, False)],
)
def test_size_problem(size, reference, ratio, flagged):
    assert bool(agent.size_problem(size, reference, ratio)) is flagged


def test_a_much_smaller_backup_is_kept_and_holds_rotation_until_confirmed(tmp_path, monkeypatch):
    # Issue 23, finding 6: a dump of an emptied database passed the 512-byte minimum, then rotated good backups away.
    cfg = agent_cfg(tmp_path, monkeypatch, sets={"postgresql": {"kind": "postgresql"}}, min_size_ratio=0.5)
    sizes, rotations = iter([100_000, 2_000, 100_000, 2_000]), []
    ids = iter(["20261124T020000Z", "20261125T020000Z", "20261126T020000Z", "20261127T020000Z"])

    def backup(_cfg, _set_name, _databases=None, safety=False):
        return {"id": next(ids), "total_size": next(sizes)}, 0.1

    monkeypatch.setattr(agent, "backup_set", backup)
    monkeypatch.setattr(agent, "rotate", lambda _cfg, set_name, *_a: rotations.append(set_name))
    args = types.SimpleNamespace(sets=[], databases=None, no_rotate=False, local_only=False)

    def state():
        with open(agent.STATE) as fh:
            return json.load(fh)["backup"]["postgresql"]

    agent.cmd_run(cfg, args)  # 100 kB: the reference
    assert rotations == ["postgresql"] and state()["size_hold"] == 0
    agent.cmd_run(cfg, args)  # 2 kB: kept, rotation waits
    assert rotations == ["postgresql"] and state()["size_hold"] == 1
    assert state()["size_hold_id"] == "20261125T020000Z"
    assert 'selfhosted_backup_size_hold{set="postgresql"} 1' in (tmp_path / "selfhosted_backup.prom").read_text()
    agent.cmd_run(cfg, args)  # back to 100 kB: still waits for a person
    assert rotations == ["postgresql"] and state()["size_hold"] == 1
    agent.cmd_confirm_size(cfg, types.SimpleNamespace(set="postgresql"))
    assert state()["size_hold"] == 0 and state()["reference_size_bytes"] == 2_000
    agent.cmd_run(cfg, args)  # 2 kB is the confirmed normal now
    assert rotations == ["postgresql", "postgresql"] and state()["size_hold"] == 0


def test_a_failed_upload_keeps_the_local_backup_and_the_next_run_uploads_it(tmp_path, monkeypatch):
    # Issue 23, finding 4: when the S3 upload failed, the verified local dump was deleted (no new backup anywhere).
    cfg = agent_cfg(
        tmp_path, monkeypatch, sets={"postgresql": {"kind": "postgresql"}}, s3={"bucket": "backups", "prefix": "lab"}
    )
    clock = iter(datetime.datetime(2026, 11, 24, 2, m, tzinfo=datetime.timezone.utc) for m in range(10))

    class Clock(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return next(clock)

    def dump(_cfg, work_dir, _databases=None, content_checks=True):
        data = b"dump-bytes" * 100
        with open(os.path.join(work_dir, "app.dump"), "wb") as fh:
            fh.write(data)
        return [{"name": "app.dump", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}], {}, {}

    s3_up, uploaded, rotations = [False], [], []

    def upload(_cfg, _client, _set_name, bid, directory, manifest):
        if not s3_up[0]:
            raise ConnectionError("Could not connect to the endpoint URL")
        assert os.path.isfile(os.path.join(directory, "app.dump")) and manifest["id"] == bid
        uploaded.append(bid)

    monkeypatch.setattr(agent.datetime, "datetime", Clock)
    monkeypatch.setattr(agent, "backup_postgresql", dump)
    monkeypatch.setattr(agent, "upload_backup", upload)
    monkeypatch.setattr(agent, "s3_client", lambda _cfg: object())
    monkeypatch.setattr(agent, "rotate", lambda _cfg, set_name, _store, _policy, where: rotations.append(where))
    args = types.SimpleNamespace(sets=[], databases=None, no_rotate=False, local_only=False)

    def state():
        with open(agent.STATE) as fh:
            return json.load(fh)["backup"]["postgresql"]

    with pytest.raises(agent.BackupError, match=r"postgresql \(upload\)"):
        agent.cmd_run(cfg, args)
    first = state()["last_id"]
    assert os.path.isfile(os.path.join(cfg["local_dir"], "postgresql", first, "manifest.json"))  # kept
    assert state()["last_upload_success"] == 0 and state()["pending_upload"] == [first]
    assert state()["last_run_success"] == 1 and rotations == []  # no rotation while it waits
    prom = (tmp_path / "selfhosted_backup.prom").read_text()
    assert 'selfhosted_backup_last_upload_success{set="postgresql"} 0' in prom
    assert 'selfhosted_backup_pending_uploads{set="postgresql"} 1' in prom
    s3_up[0] = True
    agent.cmd_run(cfg, args)
    second = state()["last_id"]
    assert uploaded == [first, second] and state()["pending_upload"] == [] and state()["last_upload_success"] == 1
    # Only the local copies: the agent's S3 key cannot delete (issue 23, finding 5; it rotated S3 with it before).
    assert rotations == ["local"]


def test_a_manifest_that_does_not_match_the_host_is_refused():
    cfg = {
        "host": "db1",
        "sets": {"postgresql": {"kind": "postgresql", "databases": ["app"]}, "redis": {"kind": "redis"}},
    }
    good = {"id": "20261124T020000Z", "set": "postgresql", "kind": "postgresql", "host": "db1", "databases": ["app"]}
    assert agent.manifest_problems(good, cfg, "postgresql", "20261124T020000Z") == []
    for change, needle in (
        ({"databases": ["app", "postgres"]}, "does not back up: postgres"),
        ({"host": "cache1"}, "host 'cache1'"),
        ({"set": "redis"}, "set 'redis'"),
        ({"id": "20991231T000000Z"}, "id '20991231T000000Z'"),
        ({"kind": "redis"}, "kind 'redis'"),
    ):
        problems = agent.manifest_problems({**good, **change}, cfg, "postgresql", "20261124T020000Z")
        assert any(needle in p for p in problems), problems
    assert agent.manifest_problems([], cfg, "postgresql", "x") == ["the manifest is not a JSON object"]
    assert (
        agent.manifest_problems(
            {"id": "b", "set": "redis", "kind": "redis", "host": "db1", "databases": ["x"]}, cfg, "redis", "b"
        )
        == []
    )  # Redis sets have no databases to check


def test_choose_shows_the_backup_and_refuses_one_too_old(tmp_path, capsys):
    cfg = {
        "host": "db1",
        "local_dir": str(tmp_path),
        "sets": {"postgresql": {"kind": "postgresql", "databases": ["app"]}},
    }
    store = agent.LocalSet(str(tmp_path / "postgresql"))
    now = datetime.datetime.now(datetime.timezone.utc)
    recent, old = agent.backup_id(now - datetime.timedelta(hours=2)), agent.backup_id(now - datetime.timedelta(days=3))
    for bid in (recent, old):
        make_local_backup(store.path, bid)
    ask = {"set": "postgresql", "source": "local", "backup": None, "max_age": "26h"}
    agent.cmd_choose(cfg, types.SimpleNamespace(**ask))
    shown = json.loads(capsys.readouterr().out)
    assert shown["backup"] == recent and 7000 < shown["age_seconds"] < 7300
    with pytest.raises(agent.BackupError, match=f"backup {old} is .* s old, more than the 26h allowed"):
        agent.cmd_choose(cfg, types.SimpleNamespace(**{**ask, "backup": old}))
    agent.cmd_choose(cfg, types.SimpleNamespace(**{**ask, "backup": old, "max_age": None}))  # named, no limit
    assert json.loads(capsys.readouterr().out)["backup"] == old
    with pytest.raises(agent.BackupError, match="no backup 20200101T000000Z"):
        agent.cmd_choose(cfg, types.SimpleNamespace(**{**ask, "backup": "20200101T000000Z"}))


def test_a_safety_copy_has_its_own_directory_and_is_never_chosen_or_rotated(tmp_path, monkeypatch):
    # Found by review: the safety copy went into the set, so the timer's next runs rotated it away and a restore
    # without an id picked it (the data being replaced) by default; an emptied database failed its size check.
    cfg = agent_cfg(
        tmp_path, monkeypatch, sets={"postgresql": {"kind": "postgresql", "databases": ["app"], "min_size": 1024}}
    )
    checks = []

    def dump(_cfg, work_dir, _databases=None, content_checks=True):
        checks.append(content_checks)
        with open(os.path.join(work_dir, "app.dump"), "wb") as fh:
            fh.write(b"tiny")
        return [{"name": "app.dump", "size": 4, "sha256": hashlib.sha256(b"tiny").hexdigest()}], {}, {}

    monkeypatch.setattr(agent, "backup_postgresql", dump)
    agent.cmd_run(cfg, types.SimpleNamespace(sets=["postgresql"], databases=None, no_rotate=False, local_only=True))
    safety = os.listdir(os.path.join(cfg["local_dir"], "safety", "postgresql"))
    assert len(safety) == 1 and checks == [False]
    assert not os.path.exists(os.path.join(cfg["local_dir"], "postgresql", safety[0]))
    assert not os.path.exists(os.path.join(cfg["local_dir"], "safety", "postgresql", ".selfhosted-backup-set"))
    assert "last_id" not in agent.load_json(agent.STATE, {}).get("backup", {}).get("postgresql", {})


def test_an_unreadable_state_or_a_full_disk_never_stops_the_backups(tmp_path, monkeypatch):
    # Found by review: an empty (truncated) state file made every later run die with JSONDecodeError; a state that
    # could not be written (ENOSPC) inside the failure handler aborted the loop before the next set.
    cfg = agent_cfg(tmp_path, monkeypatch, sets={"postgresql": {"kind": "postgresql"}, "redis": {"kind": "redis"}})
    (tmp_path / "state.json").write_text("")
    tried = []

    def failing(_cfg, set_name, _databases=None, safety=False):
        tried.append(set_name)
        raise agent.BackupError("pg_dump failed")

    def full_disk(_cfg, _state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(agent, "backup_set", failing)
    monkeypatch.setattr(agent, "save_state", full_disk)
    with pytest.raises(agent.BackupError, match="backup failed for postgresql, redis"):
        agent.cmd_run(cfg, types.SimpleNamespace(sets=[], databases=None, no_rotate=False, local_only=False))
    assert tried == ["postgresql", "redis"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("state.json.unreadable-")]  # kept aside


def test_unknown_set_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(agent, "STATE", str(tmp_path / "state.json"))
    cfg = {"sets": {"postgresql": {}}, "local_dir": str(tmp_path)}
    with pytest.raises(agent.BackupError, match=r"unknown backup sets \['mysql'\]"):
        agent.cmd_run(cfg, types.SimpleNamespace(sets=["mysql"], databases=None, no_rotate=False, local_only=False))


def test_aof_off_execstart_from_systemctl_show():
    shown = (
        "{ path=/usr/bin/redis-server ; argv[]=/usr/bin/redis-server /etc/redis/redis.conf --supervised systemd "
        "--daemonize no ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"
    )
    assert agent.aof_off_execstart(shown) == (
        "/usr/bin/redis-server /etc/redis/redis.conf --supervised systemd --daemonize no --appendonly no"
    )


def test_aof_off_execstart_plain_command():
    assert agent.aof_off_execstart("/usr/bin/redis-server /etc/redis/redis.conf\n") == (
        "/usr/bin/redis-server /etc/redis/redis.conf --appendonly no"
    )


@pytest.mark.parametrize("execstart", ["", "{ path=/bin/sh ; argv[]=/bin/sh -c true ; ignore_errors=no }"])
def test_aof_off_execstart_refuses_what_is_not_redis(execstart):
    with pytest.raises(agent.BackupError, match="cannot read the redis-server command"):
        agent.aof_off_execstart(execstart)


def test_rotation_holds_are_one_decision_for_the_agent_and_the_rotate_playbook(tmp_path, monkeypatch, capsys):
    cfg = agent_cfg(tmp_path, monkeypatch, {"postgresql": {"kind": "postgresql"}, "redis": {"kind": "redis"}})
    assert agent.rotation_hold({}) == ""
    assert "20261124T020000Z wait for their upload" in agent.rotation_hold({"pending_upload": ["20261124T020000Z"]})
    assert "confirm-size" in agent.rotation_hold({"size_hold_id": "20261124T020000Z"})
    agent.save_state(cfg, {"backup": {"postgresql": {"pending_upload": ["20261124T020000Z"], "failures_total": 0}}})
    agent.cmd_holds(cfg, types.SimpleNamespace())
    holds = json.loads(capsys.readouterr().out)
    assert holds["redis"] == "" and "wait for their upload" in holds["postgresql"]


class FakeS3:
    """head_object of a client: objects {key: (size, sha256)}; other keys answer 404, or `error` for every key."""

    def __init__(self, objects, error=None):
        self.objects, self.error = objects, error

    def head_object(self, Bucket, Key):
        from botocore.exceptions import ClientError

        if self.error or Key not in self.objects:
            code = self.error or "404"
            raise ClientError({"Error": {"Code": code, "Message": code}}, "HeadObject")
        size, digest = self.objects[Key]
        return {"ContentLength": size, "Metadata": {"sha256": digest}}


def test_a_retried_upload_skips_only_files_that_arrived_whole():
    entry = {"name": "app.dump", "size": 10, "sha256": "a" * 64}
    assert agent.uploaded_already(FakeS3({"k": (10, "a" * 64)}), "b", "k", entry)
    assert not agent.uploaded_already(FakeS3({"k": (9, "a" * 64)}), "b", "k", entry)  # cut short
    assert not agent.uploaded_already(FakeS3({"k": (10, "b" * 64)}), "b", "k", entry)  # other content
    assert not agent.uploaded_already(FakeS3({}), "b", "k", entry)
    # AWS answers 403 for a missing key the identity may not list: not uploaded yet (the upload says if it is denied)
    assert not agent.uploaded_already(FakeS3({}, error="AccessDenied"), "b", "k", entry)
    with pytest.raises(Exception, match="InternalError"):
        agent.uploaded_already(FakeS3({}, error="InternalError"), "b", "k", entry)


def test_a_restore_runs_as_the_configured_owner_never_a_superuser_nor_the_manifest_s_word():
    # Issue 23, finding 5: drills restored as the PostgreSQL superuser, so SQL planted in a backup ran as superuser.
    assert agent.restore_role("app", {"postgres"}) == "app"
    assert agent.restore_role("postgres", {"postgres"}) == agent.RESTORE_ROLE
    assert agent.restore_role(None, {"postgres"}) == agent.RESTORE_ROLE
    assert agent.restore_role("", set()) == agent.RESTORE_ROLE


def test_extensions_are_split_from_the_table_of_contents():
    toc = "\n".join(
        [
            ";",
            "; Archive created at 2026-12-07 18:00:00 UTC",
            "; Selected TOC Entries:",
            "3; 3079 16385 EXTENSION - pg_stat_statements ",
            "4390; 0 0 COMMENT - EXTENSION pg_stat_statements ",
            "216; 1259 16400 TABLE public pgbench_accounts postgres",
            "4380; 0 16400 TABLE DATA public pgbench_accounts postgres",
            "5; 3079 16390 EXTENSION - hstore ",
        ]
    )
    extensions, listing = agent.split_extensions(toc)
    assert extensions == ["hstore", "pg_stat_statements"]
    assert "EXTENSION" not in listing and "TABLE public pgbench_accounts" in listing
    assert listing.count("\n") == 5  # the three comment lines and the two table entries
    assert agent.split_extensions("") == ([], "\n")


def test_a_restore_of_a_database_this_host_does_not_back_up_is_refused(tmp_path, monkeypatch):
    cfg = agent_cfg(tmp_path, monkeypatch, {"postgresql": {"kind": "postgresql", "databases": ["app"]}})
    manifest = {"databases": ["app", "postgres"]}
    with pytest.raises(agent.BackupError, match=r"backs up no database postgres; its databases are \['app'\]"):
        agent.restore_database(cfg, None, "20261124T020000Z", manifest, "postgres", "postgres")


def test_side_names_fit_postgresql_and_say_what_they_are():
    moment = datetime.datetime(2026, 12, 7, 18, 30, tzinfo=datetime.timezone.utc)
    assert agent.side_names("app", moment) == ("app_new_20261207t183000z", "app_pre_20261207t183000z")
    scratch, previous = agent.side_names("x" * 63, moment)
    assert len(scratch.encode()) <= 63 and len(previous.encode()) <= 63 and scratch != previous
    scratch, previous = agent.side_names("ä" * 40, moment)  # never cut inside a character
    assert len(previous.encode()) <= 63 and previous.endswith("_pre_20261207t183000z")


def test_scram_verifier_matches_rfc_7677():
    # RFC 7677's example exchange (user "user", password "pencil"): the server signature computed from our
    # verifier's ServerKey is the one the RFC's server sends, and its StoredKey checks the RFC client's proof.
    import base64
    import hmac

    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = agent.scram_verifier("pencil", salt)
    head, keys = verifier.split("$", 1)[1].split("$")
    assert verifier.startswith("SCRAM-SHA-256$4096:") and head == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}".encode()
    signature = hmac.new(server_key, auth, "sha256").digest()
    assert base64.b64encode(signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.new(stored_key, auth, "sha256").digest()
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
    assert hashlib.sha256(client_key).digest() == stored_key


def test_a_forced_restore_without_a_configured_owner_is_refused(tmp_path, monkeypatch):
    cfg = agent_cfg(tmp_path, monkeypatch, {"postgresql": {"kind": "postgresql", "databases": ["app"]}})
    calls = []

    def psql(_cfg, sql, db="postgres", session=None, **variables):
        calls.append(sql)
        return "postgres" if "rolsuper" in sql else ""

    monkeypatch.setattr(agent, "psql", psql)
    monkeypatch.setattr(agent, "database_exists", lambda _cfg, _db: True)
    monkeypatch.setattr(agent, "user_relations", lambda _cfg, _db: 12)
    with pytest.raises(agent.BackupError, match=r"names no owner .* for app"):
        agent.restore_database(cfg, None, "20261124T020000Z", {"databases": ["app"]}, "app", "app", force=True)
    assert not [c for c in calls if "DATABASE" in c]  # nothing created, renamed or dropped
