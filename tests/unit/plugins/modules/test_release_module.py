"""The release module on a real directory tree (a thin AnsibleModule stand-in; no host needed)."""

import json
import os

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils._release import ReleaseError
from ansible_collections.selfhosted.stack.plugins.modules import release as mod


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self.params = dict(
            release=None, state="active", keep=5, checksum=None, owner=None, group=None, history_limit=20
        )
        self.params.update(params)

    def atomic_move(self, src, dest):
        os.replace(src, dest)

    def set_owner_if_different(self, path, owner, changed):
        return changed

    def set_group_if_different(self, path, group, changed):
        return changed


def run(base, check_mode=False, **params):
    os.makedirs(os.path.join(base, "releases"), exist_ok=True)
    return mod.run(FakeModule(check_mode=check_mode, path=str(base), **params))


def current(base):
    return os.readlink(os.path.join(base, "current"))


def test_deploy_switch_and_rollback(tmp_path):
    r = run(tmp_path, release="1", checksum="sha256:1")
    assert r["changed"] and current(tmp_path) == "releases/1"
    assert not run(tmp_path, release="1")["changed"]  # same release again: nothing
    run(tmp_path, state="good")
    run(tmp_path, release="2")
    assert current(tmp_path) == "releases/2"
    assert os.path.isdir(tmp_path / "releases" / "1")  # kept for rollback
    r = run(tmp_path, state="rolled_back")
    assert r["current"] == "1" and r["previous"] == "2" and current(tmp_path) == "releases/1"
    history = json.loads((tmp_path / "releases.json").read_text())
    assert ("2", "rolled_back") in [(e["release"], e["result"]) for e in history]


def test_check_mode_changes_nothing_and_reports_the_same(tmp_path):
    for n in ("1", "2", "3"):
        run(tmp_path, release=n, keep=1)
        run(tmp_path, state="good")
    before = sorted(os.listdir(tmp_path / "releases"))
    history_before = (tmp_path / "releases.json").read_text()
    predicted = run(tmp_path, check_mode=True, release="4", keep=1)
    assert sorted(os.listdir(tmp_path / "releases")) == before
    assert (tmp_path / "releases.json").read_text() == history_before and current(tmp_path) == "releases/3"
    real = run(tmp_path, release="4", keep=1)
    assert predicted["deleted"] == real["deleted"] and predicted["current"] == real["current"] == "4"
    assert sorted(os.listdir(tmp_path / "releases")) == ["3", "4"]  # 3: previous good
    assert predicted["diff"]["before"]["current"] == "3" and predicted["diff"]["after"]["current"] == "4"


def test_corrupted_history_changes_nothing(tmp_path):
    for n in ("1", "2", "3"):
        run(tmp_path, release=n)
    (tmp_path / "releases.json").write_text("{ truncated")
    with pytest.raises(ReleaseError, match="corrupted"):
        run(tmp_path, release="4", keep=1)
    assert sorted(os.listdir(tmp_path / "releases")) == ["1", "2", "3"] and current(tmp_path) == "releases/3"


def test_current_link_is_replaced_not_removed(tmp_path, monkeypatch):
    run(tmp_path, release="1")
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.path.basename(src), os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(mod.os, "replace", spy)
    monkeypatch.setattr(mod.os, "unlink", lambda p: pytest.fail(f"unlinked {p}"))
    run(tmp_path, release="2")
    assert (f".current.{os.getpid()}", "current") in seen


def test_rollback_without_previous_fails_cleanly(tmp_path):
    run(tmp_path, release="1")
    with pytest.raises(ReleaseError, match="no previous good release"):
        run(tmp_path, state="rolled_back")
    assert current(tmp_path) == "releases/1"


def test_release_dirs_unknown_to_history_are_never_deleted(tmp_path):
    run(tmp_path, release="1")
    os.makedirs(tmp_path / "releases" / "0-manual")
    r = run(tmp_path, release="2", keep=1)
    assert r["deleted"] == ["1"]
    assert r["reasons"]["0-manual"].startswith("kept: not in the history")
    assert os.path.isdir(tmp_path / "releases" / "0-manual")


def test_query_reports_without_changing_anything(tmp_path):
    for r in ("1", "2", "3", "4", "5", "6"):
        run(tmp_path, release=r)
        run(tmp_path, state="good")
    before = sorted(os.listdir(tmp_path / "releases")), (tmp_path / "releases.json").read_text()
    result = run(tmp_path, state="query", keep=1)  # keep is not applied by a query
    assert not result["changed"]
    assert result["current"] == "6" and result["previous_good"] == "5"
    assert (sorted(os.listdir(tmp_path / "releases")), (tmp_path / "releases.json").read_text()) == before
