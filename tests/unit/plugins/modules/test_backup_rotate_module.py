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
        )  # fmt: skip
        self.params.update(params)

    def warn(self, text):
        self.warnings.append(text)


def make_backup(root, backup_id, when, complete=True, size=5):
    d = root / backup_id
    d.mkdir()
    (d / "app.dump").write_bytes(b"x" * size)
    if complete:
        manifest = {"id": backup_id, "time": when.isoformat(), "files": [{"name": "app.dump", "size": 5}]}
        (d / "manifest.json").write_text(json.dumps(manifest))
    stamp = when.timestamp()
    os.utime(d, (stamp, stamp))


def days_ago(n, hour=2):
    return (NOW - datetime.timedelta(days=n)).replace(hour=hour, minute=0)


def test_local_rotation_with_check_mode(tmp_path):
    for n in range(1, 8):
        make_backup(tmp_path, f"b{n}", days_ago(n))
    make_backup(tmp_path, "partial", days_ago(5), complete=False)
    make_backup(tmp_path, "wrong-size", days_ago(1, hour=5), size=3)
    args = {"keep_daily": 3}
    checked = mod.run(FakeModule(check_mode=True, path=str(tmp_path), **args), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert checked["changed"] and sorted(os.listdir(tmp_path)) == sorted(
        ["b1", "b2", "b3", "b4", "b5", "b6", "b7", "partial", "wrong-size"]
    )  # check mode deletes nothing
    assert checked["kept"] == ["b1", "b2", "b3"]
    assert checked["reasons"]["wrong-size"].startswith("delete: incomplete (app.dump has 3 bytes")
    result = mod.run(FakeModule(path=str(tmp_path), **args), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert result["deleted"] == checked["deleted"]
    assert sorted(os.listdir(tmp_path)) == ["b1", "b2", "b3"]
    again = mod.run(FakeModule(path=str(tmp_path), **args), mod.LocalBackupSet(str(tmp_path)), NOW)
    assert not again["changed"] and again["deleted"] == []  # idempotent


def test_local_broken_set_is_left_alone(tmp_path):
    for n in range(10, 15):
        make_backup(tmp_path, f"old{n}", days_ago(n))
    module = FakeModule(path=str(tmp_path), keep_last=1)
    result = mod.run(module, mod.LocalBackupSet(str(tmp_path)), NOW)
    assert not result["changed"] and len(os.listdir(tmp_path)) == 5
    assert "more than max_age" in result["refused"] and module.warnings


def test_bad_timezone_and_missing_directory(tmp_path):
    with pytest.raises(RotateError, match="timezone must be an IANA name"):
        mod.run(FakeModule(keep_last=1, timezone="Mars/Olympus"), mod.LocalBackupSet(str(tmp_path)), NOW)
    with pytest.raises(RotateError, match="is not a directory"):
        mod.run(FakeModule(keep_last=1), mod.LocalBackupSet(str(tmp_path / "nope")), NOW)


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
    s3_backup(objects, "new", days_ago(1), files=2)
    s3_backup(objects, "old", days_ago(2), files=1500)  # 1501 keys: two delete requests
    objects["db1/postgresql/stray-file"] = (1, b"x", days_ago(1))  # not a backup: never touched
    objects["db1/other/keep/manifest.json"] = (1, b"{}", days_ago(9))  # outside the set
    client = StubS3(objects)
    result = mod.run(FakeModule(keep_last=1), mod.S3BackupSet(client, "backups", "db1/postgresql"), NOW)
    assert result["kept"] == ["new"] and result["deleted"] == ["old"]
    assert [len(c) for c in client.delete_calls] == [1000, 501]
    assert client.delete_calls[0][0] == "db1/postgresql/old/manifest.json"
    assert "db1/postgresql/stray-file" in client.objects and "db1/other/keep/manifest.json" in client.objects
    assert not any(k.startswith("db1/postgresql/old/") for k in client.objects)


def test_s3_check_mode_deletes_nothing():
    objects = {}
    s3_backup(objects, "a", days_ago(1))
    s3_backup(objects, "b", days_ago(2))
    client = StubS3(objects)
    result = mod.run(
        FakeModule(check_mode=True, keep_last=1), mod.S3BackupSet(client, "backups", "db1/postgresql"), NOW
    )
    assert result["deleted"] == ["b"] and client.delete_calls == []
