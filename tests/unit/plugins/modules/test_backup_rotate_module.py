"""backup_rotate on a real directory tree and on a stub S3 client (listing pages, batched deletes, manifests
first), with check mode."""

import datetime
import io
import json
import os

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils._backup_rotate import RotateError
from ansible_collections.selfhosted.stack.plugins.modules import backup_rotate as mod

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.timezone.utc)


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self.warnings = []
        self.params = dict(
            keep_last=None, keep_hourly=None, keep_daily=None, keep_weekly=None, keep_monthly=None,
            keep_yearly=None, keep_within=None, timezone="UTC", grace="24h", max_age="3d", force=False,
            clock_tolerance="5m", purge_noncurrent_after=None,
        )  # fmt: skip
        self.params.update(params)

    def warn(self, text):
        self.warnings.append(text)


def bid(when):
    return when.strftime("%Y%m%dT%H%M%SZ")


def set_dir(root):
    """A set directory as the backup agent makes it (with its marker)."""
    (root / ".selfhosted-backup-set").write_text("")
    return root


def make_backup(root, when, complete=True, size=5, backup_id=None):
    backup_id = backup_id or bid(when)
    d = root / backup_id
    d.mkdir()
    (d / "app.dump").write_bytes(b"x" * size)
    if complete:
        manifest = {"id": backup_id, "time": when.isoformat(), "files": [{"name": "app.dump", "size": 5}]}
        (d / "manifest.json").write_text(json.dumps(manifest))
    stamp = when.timestamp()
    os.utime(d, (stamp, stamp))
    return backup_id


def days_ago(n, hour=2):
    return (NOW - datetime.timedelta(days=n)).replace(hour=hour, minute=0)


def listing(root):
    return sorted(n for n in os.listdir(root) if not n.startswith("."))


def test_local_rotation_with_check_mode(tmp_path):
    set_dir(tmp_path)
    ids = [make_backup(tmp_path, days_ago(n)) for n in range(1, 8)]
    partial = make_backup(tmp_path, days_ago(5, hour=3), complete=False)
    wrong_size = make_backup(tmp_path, days_ago(1, hour=5), size=3)
    args = {"keep_daily": 3}
    checked = mod.run(FakeModule(check_mode=True, path=str(tmp_path), **args), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert checked["changed"] and listing(tmp_path) == sorted([*ids, partial, wrong_size])  # check mode: nothing
    assert checked["kept"] == ids[:3]
    assert checked["reasons"][wrong_size].startswith("delete: incomplete (app.dump has 3 bytes")
    result = mod.run(FakeModule(path=str(tmp_path), **args), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert result["deleted"] == checked["deleted"]
    assert listing(tmp_path) == sorted(ids[:3])
    again = mod.run(FakeModule(path=str(tmp_path), **args), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert not again["changed"] and again["deleted"] == []  # idempotent


def test_local_broken_set_is_left_alone(tmp_path):
    set_dir(tmp_path)
    for n in range(10, 15):
        make_backup(tmp_path, days_ago(n))
    module = FakeModule(path=str(tmp_path), keep_last=1)
    result = mod.run(module, mod.LocalBackupSet(str(tmp_path)), NOW)
    assert not result["changed"] and len(listing(tmp_path)) == 5
    assert "more than max_age" in result["refused"] and module.warnings


def test_bad_timezone_and_missing_directory(tmp_path):
    set_dir(tmp_path)
    with pytest.raises(RotateError, match="timezone must be an IANA name"):
        mod.run(FakeModule(keep_last=1, timezone="Mars/Olympus"), mod.LocalBackupSet(str(tmp_path)), NOW)
    with pytest.raises(RotateError, match="is not a directory"):
        mod.run(FakeModule(keep_last=1), mod.LocalBackupSet(str(tmp_path / "nope")), NOW)


# --- issue 23, findings 1 to 3: each of these deleted data or failed obscurely before ------------------------------
def test_only_backup_ids_are_backups_the_rest_is_left_alone_and_reported(tmp_path):
    # One valid backup beside lost+found/, a restore-tmp/ folder and a "....bak" copy: all three were deleted.
    set_dir(tmp_path)
    good = make_backup(tmp_path, days_ago(1))
    for name in ("lost+found", "restore-tmp", "20260101T000000Z.bak"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data").write_text("not a backup\n")
        os.utime(tmp_path / name, (days_ago(30).timestamp(),) * 2)  # older than the grace period
    module = FakeModule(path=str(tmp_path), keep_last=1)
    result = mod.run(module, mod.LocalBackupSet(str(tmp_path)), NOW)
    assert result["deleted"] == [] and result["kept"] == [good]
    assert listing(tmp_path) == sorted([good, "lost+found", "restore-tmp", "20260101T000000Z.bak"])
    assert set(result["ignored"]) == {"lost+found", "restore-tmp", "20260101T000000Z.bak"}
    assert any("lost+found" in w for w in module.warnings)


def test_a_tree_shaped_like_root_loses_nothing(tmp_path):
    # bin, etc, home, usr and var beside one valid backup were all deleted.
    set_dir(tmp_path)
    good = make_backup(tmp_path, days_ago(1))
    for name in ("bin", "etc", "home", "usr", "var"):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (days_ago(400).timestamp(),) * 2)  # older than the grace period
    result = mod.run(FakeModule(path=str(tmp_path), keep_last=1), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert result["deleted"] == [] and listing(tmp_path) == sorted([good, "bin", "etc", "home", "usr", "var"])


@pytest.mark.parametrize("path", ["/", "/etc", "/var", "/home", "/var/lib", "/usr/", "/tmp"])
def test_system_directories_are_refused(path):
    with pytest.raises(RotateError, match="system directory"):
        mod.run(FakeModule(keep_last=1), mod.LocalBackupSet(path), NOW)


def test_a_symlink_to_a_system_directory_is_refused(tmp_path):
    os.symlink("/etc", tmp_path / "backups")
    with pytest.raises(RotateError, match="system directory"):
        mod.run(FakeModule(keep_last=1), mod.LocalBackupSet(str(tmp_path / "backups")), NOW)


def test_a_directory_without_the_agents_marker_is_refused(tmp_path):
    make_backup(tmp_path, days_ago(1))
    make_backup(tmp_path, days_ago(9))
    with pytest.raises(RotateError, match=r"no \.selfhosted-backup-set file"):
        mod.run(FakeModule(keep_last=1), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert len(listing(tmp_path)) == 2


def test_backups_dated_in_the_future_refuse_the_run_and_delete_nothing(tmp_path):
    # 5 real daily backups and 3 dated 2099: keep_daily=3 kept the 2099 ones and deleted all 5 real ones.
    set_dir(tmp_path)
    real = [make_backup(tmp_path, days_ago(n)) for n in range(1, 6)]
    future = [make_backup(tmp_path, datetime.datetime(2099, 1, d, 2, tzinfo=datetime.timezone.utc)) for d in (1, 2, 3)]
    with pytest.raises(RotateError, match="3 backups are dated after now") as err:
        mod.run(FakeModule(path=str(tmp_path), keep_daily=3), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert all(f in str(err.value) for f in future)
    with pytest.raises(RotateError, match="dated after now"):  # force does not override it
        mod.run(FakeModule(path=str(tmp_path), keep_daily=3, force=True), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert listing(tmp_path) == sorted(real + future)


def test_a_backup_a_little_ahead_of_this_clock_is_within_the_tolerance(tmp_path):
    set_dir(tmp_path)
    ahead = make_backup(tmp_path, NOW + datetime.timedelta(minutes=2))
    make_backup(tmp_path, days_ago(1))
    result = mod.run(FakeModule(path=str(tmp_path), keep_last=1), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert result["kept"] == [ahead]


def test_a_symlink_named_like_a_backup_is_never_followed_or_deleted(tmp_path):
    # It made every later run fail with "backup_rotate: None on None".
    set_dir(tmp_path)
    victim = tmp_path.parent / f"{tmp_path.name}-victim"
    victim.mkdir()
    make_backup(victim, days_ago(20))
    os.symlink(victim / bid(days_ago(20)), tmp_path / bid(days_ago(20)))
    good = make_backup(tmp_path, days_ago(1))
    old = make_backup(tmp_path, days_ago(30))
    result = mod.run(FakeModule(path=str(tmp_path), keep_last=1), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert result["kept"] == [good] and result["deleted"] == [old]
    assert "symbolic link" in result["ignored"][bid(days_ago(20))]
    assert os.path.isdir(victim / bid(days_ago(20))) and os.path.islink(tmp_path / bid(days_ago(20)))


class StubS3:
    """list_objects_v2 in pages of 2, get_object, delete_objects recording each request."""

    def __init__(self, objects):
        self.objects = dict(objects)  # key -> (size, body, last_modified)
        self.delete_calls = []

    def list_objects_v2(self, Bucket, Prefix, ContinuationToken=None):
        keys = sorted(k for k in self.objects if k.startswith(Prefix))
        start = int(ContinuationToken or 0)
        page = keys[start : start + 2]
        out = {"Contents": [{"Key": k, "Size": self.objects[k][0], "LastModified": self.objects[k][2]} for k in page]}
        if start + 2 < len(keys):
            out.update(IsTruncated=True, NextContinuationToken=str(start + 2))
        return out

    def get_object(self, Bucket, Key):
        return {"Body": io.BytesIO(self.objects[Key][1])}

    def delete_objects(self, Bucket, Delete):
        keys = [o["Key"] for o in Delete["Objects"]]
        self.delete_calls.append(keys)
        for k in keys:
            del self.objects[k]
        return {}


def s3_backup(objects, backup_id, when, files=1):
    manifest = {"id": backup_id, "time": when.isoformat(), "files": []}
    for i in range(files):
        key = f"db1/postgresql/{backup_id}/part{i}"
        objects[key] = (4, b"data", when)
        manifest["files"].append({"name": f"part{i}", "size": 4})
    body = json.dumps(manifest).encode()
    objects[f"db1/postgresql/{backup_id}/manifest.json"] = (len(body), body, when)


def test_s3_rotation_batches_deletes_and_removes_manifests_first():
    objects = {}
    new, old = bid(days_ago(1)), bid(days_ago(2))
    s3_backup(objects, new, days_ago(1), files=2)
    s3_backup(objects, old, days_ago(2), files=1500)  # 1501 keys: two delete requests
    objects["db1/postgresql/stray-file"] = (1, b"x", days_ago(1))  # not a backup: never touched
    objects["db1/postgresql/restore-tmp/data"] = (1, b"x", days_ago(9))  # not a backup id: never touched
    objects["db1/other/keep/manifest.json"] = (1, b"{}", days_ago(9))  # outside the set
    client = StubS3(objects)
    result = mod.run(FakeModule(keep_last=1), mod.S3BackupSet(client, "backups", "db1/postgresql"), NOW)
    assert result["kept"] == [new] and result["deleted"] == [old]
    assert [len(c) for c in client.delete_calls] == [1000, 501]
    assert client.delete_calls[0][0] == f"db1/postgresql/{old}/manifest.json"
    assert "db1/postgresql/stray-file" in client.objects and "db1/other/keep/manifest.json" in client.objects
    assert "db1/postgresql/restore-tmp/data" in client.objects and "restore-tmp" in result["ignored"]
    assert not any(k.startswith(f"db1/postgresql/{old}/") for k in client.objects)


def test_s3_check_mode_deletes_nothing():
    objects = {}
    s3_backup(objects, bid(days_ago(1)), days_ago(1))
    s3_backup(objects, bid(days_ago(2)), days_ago(2))
    client = StubS3(objects)
    result = mod.run(
        FakeModule(check_mode=True, keep_last=1), mod.S3BackupSet(client, "backups", "db1/postgresql"), NOW
    )
    assert result["deleted"] == [bid(days_ago(2))] and client.delete_calls == []


def test_names_that_only_look_like_ids_are_ignored(tmp_path):
    # Found by review: an impossible date crashed the S3 rotation with a traceback; a trailing newline or other
    # digits than 0-9 passed for an id.
    set_dir(tmp_path)
    good = make_backup(tmp_path, days_ago(1))
    for name in ("20261399T000000Z", "20261125T021500Z\n", "\uff12\uff10\uff12\uff161125T021500Z"):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (days_ago(30).timestamp(),) * 2)
    result = mod.run(FakeModule(path=str(tmp_path), keep_last=1), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert result["kept"] == [good] and result["deleted"] == [] and len(result["ignored"]) == 3
    objects = {}
    s3_backup(objects, bid(days_ago(1)), days_ago(1))
    objects["db1/postgresql/20261399T000000Z/manifest.json"] = (2, b"{}", days_ago(1))
    result = mod.run(FakeModule(keep_last=1), mod.S3BackupSet(StubS3(objects), "backups", "db1/postgresql"), NOW)
    assert result["kept"] == [bid(days_ago(1))] and "20261399T000000Z" in result["ignored"]


class VersionedS3(StubS3):
    """A versioned bucket: a delete without a version id adds a delete marker (the versions stay), list_object_versions
    in pages of 3, a delete with a version id removes that one for good."""

    def __init__(self, objects, clock):
        super().__init__(objects)
        self.clock = clock  # [now]: the time new markers get
        self.history = {k: [{"VersionId": f"v-{k}", "LastModified": v[2], "Marker": False}] for k, v in objects.items()}

    def delete_objects(self, Bucket, Delete):
        for o in Delete["Objects"]:
            if "VersionId" in o:
                self.history[o["Key"]] = [v for v in self.history[o["Key"]] if v["VersionId"] != o["VersionId"]]
                if not self.history[o["Key"]]:
                    del self.history[o["Key"]]
            else:
                self.objects.pop(o["Key"], None)
                marker = {"VersionId": f"m{len(self.history[o['Key']])}", "LastModified": self.clock[0], "Marker": True}
                self.history[o["Key"]].append(marker)
        self.delete_calls.append(Delete["Objects"])
        return {}

    def list_object_versions(self, Bucket, Prefix, KeyMarker=None, VersionIdMarker=None):
        rows = [(k, i, v) for k in sorted(self.history) if k.startswith(Prefix) for i, v in enumerate(self.history[k])]
        start = int(KeyMarker or 0)
        page, out = rows[start : start + 3], {"Versions": [], "DeleteMarkers": []}
        for k, i, v in page:
            entry = {"Key": k, "VersionId": v["VersionId"], "LastModified": v["LastModified"]}
            entry["IsLatest"] = i == len(self.history[k]) - 1
            out["DeleteMarkers" if v["Marker"] else "Versions"].append(entry)
        if start + 3 < len(rows):
            out.update(IsTruncated=True, NextKeyMarker=str(start + 3), NextVersionIdMarker="x")
        return out


def test_a_rotated_backup_stays_as_older_versions_until_its_way_back_window_ends():
    objects = {}
    new, old = bid(days_ago(1)), bid(days_ago(20))
    s3_backup(objects, new, days_ago(1))
    s3_backup(objects, old, days_ago(20))
    objects["db1/postgresql/not-ours/data"] = (1, b"x", days_ago(30))  # never purged, never deleted
    clock = [NOW]
    client = VersionedS3(objects, clock)
    store = mod.S3BackupSet(client, "backups", "db1/postgresql")
    first = mod.run(FakeModule(keep_last=1, purge_noncurrent_after="7d"), store, NOW)
    assert first["deleted"] == [old] and first["purged"] == 0  # markers made now: the way back is open
    assert all(len(client.history[f"db1/postgresql/{old}/{n}"]) == 2 for n in ("part0", "manifest.json"))
    # Six days later still there; a check-mode run eight days later says what it would purge and purges nothing.
    later = NOW + datetime.timedelta(days=6)
    assert mod.run(FakeModule(keep_last=1, purge_noncurrent_after="7d"), store, later)["purged"] == 0
    later = NOW + datetime.timedelta(days=8)
    checked = mod.run(FakeModule(check_mode=True, keep_last=1, purge_noncurrent_after="7d"), store, later)
    assert checked["purged"] == 4 and checked["changed"] and len(client.history) == 5
    done = mod.run(FakeModule(keep_last=1, purge_noncurrent_after="7d"), store, later)
    assert done["purged"] == 4 and done["changed"]
    assert sorted(client.history) == sorted(
        [f"db1/postgresql/{new}/part0", f"db1/postgresql/{new}/manifest.json", "db1/postgresql/not-ours/data"]
    )
    again = mod.run(FakeModule(keep_last=1, purge_noncurrent_after="7d"), store, later)
    assert again["purged"] == 0 and not again["changed"]


def test_purge_applies_to_s3_only(tmp_path):
    set_dir(tmp_path)
    make_backup(tmp_path, days_ago(1))
    with pytest.raises(RotateError, match="purge_noncurrent_after applies to S3 only"):
        mod.run(
            FakeModule(path=str(tmp_path), keep_last=1, purge_noncurrent_after="7d"),
            mod.LocalBackupSet(str(tmp_path)),
            NOW,
        )
    with pytest.raises(RotateError, match="purge_noncurrent_after must be a duration"):
        mod.run(FakeModule(keep_last=1, purge_noncurrent_after="soon"), mod.S3BackupSet(StubS3({}), "b", "p"), NOW)
