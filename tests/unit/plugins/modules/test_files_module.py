"""The files module on a real directory tree (a thin AnsibleModule stand-in; no host needed)."""

import os
import stat

import pytest
from ansible_collections.selfhosted.stack.plugins.modules import files as mod


class Failed(Exception):
    pass


class FakeModule:
    def __init__(self, files, check_mode=False, diff=False):
        keys = ("path", "state", "content", "src", "owner", "group", "mode", "validate", "secret")
        defaults = {"state": "file", "secret": False}
        self.params = {"files": [{k: f.get(k, defaults.get(k)) for k in keys} for f in files]}
        self.check_mode, self._diff = check_mode, diff
        self.commands = []

    def fail_json(self, **kw):
        raise Failed(kw)

    def run_command(self, command):
        self.commands.append(command)
        path = command.split()[-1]
        with open(path) as fh:
            ok = "broken" not in fh.read()
        return (0, "", "") if ok else (1, "", "line 1: broken")


def run(files, **kw):
    return mod.run(FakeModule(files, **kw))


def test_writes_then_reports_nothing_on_a_second_run(tmp_path):
    files = [
        {"path": str(tmp_path / "d"), "state": "directory", "mode": "0750"},
        {"path": str(tmp_path / "d/a.conf"), "content": "a\n", "mode": "0640", "owner": "0", "group": "0"},
        {"path": str(tmp_path / "tz"), "state": "link", "src": "/usr/share/zoneinfo/UTC"},
    ]
    first = run(files)
    assert first["changed"] and first["changed_paths"] == [f["path"] for f in files]
    assert (tmp_path / "d/a.conf").read_text() == "a\n"
    assert stat.S_IMODE(os.stat(tmp_path / "d/a.conf").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o750
    assert os.readlink(tmp_path / "tz") == "/usr/share/zoneinfo/UTC"
    assert run(files)["changed"] is False
    assert os.listdir(tmp_path / "d") == ["a.conf"]  # no temporary file left


def test_check_mode_and_diff_change_nothing_and_withhold_secrets(tmp_path):
    (tmp_path / "a").write_text("old\n")
    (tmp_path / "s").write_text("password=old\n")
    files = [
        {"path": str(tmp_path / "a"), "content": "new\n"},
        {"path": str(tmp_path / "s"), "content": "password=new\n", "secret": True},
    ]
    r = run(files, check_mode=True, diff=True)
    assert r["changed_paths"] == [str(tmp_path / "a"), str(tmp_path / "s")]
    assert (tmp_path / "a").read_text() == "old\n" and (tmp_path / "s").read_text() == "password=old\n"
    assert r["diff"][0]["before"] == "old\n" and r["diff"][0]["after"] == "new\n"
    assert "password" not in repr(r["diff"][1])


def test_a_planted_symlink_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    os.symlink(victim, tmp_path / "a.conf")
    run([{"path": str(tmp_path / "a.conf"), "content": "ours\n"}])
    assert victim.read_text() == "keep\n"
    assert not os.path.islink(tmp_path / "a.conf") and (tmp_path / "a.conf").read_text() == "ours\n"


def test_a_refused_validation_keeps_the_old_file_and_leaves_no_candidate(tmp_path):
    (tmp_path / "a.conf").write_text("good\n")
    with pytest.raises(Failed, match="validate refused"):
        run([{"path": str(tmp_path / "a.conf"), "content": "broken\n", "validate": "check %s"}])
    assert (tmp_path / "a.conf").read_text() == "good\n" and os.listdir(tmp_path) == ["a.conf"]


def test_nothing_changes_when_a_later_entry_is_refused(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir/data").write_text("not ours\n")
    files = [{"path": str(tmp_path / "a.conf"), "content": "a\n"}, {"path": str(tmp_path / "dir"), "state": "absent"}]
    with pytest.raises(Failed, match="not a file or a link: not removed"):
        run(files)
    assert sorted(os.listdir(tmp_path)) == ["dir"] and (tmp_path / "dir/data").exists()


@pytest.mark.parametrize(
    "bad",
    [
        {"path": "/", "content": ""},
        {"path": "/x", "content": "", "mode": 420},
        {"path": "/x", "content": "", "owner": "no-such-user-here"},
    ],
)
def test_bad_input_fails_before_anything_changes(tmp_path, bad):
    first = {"path": str(tmp_path / "a"), "content": "a\n"}
    with pytest.raises(Failed, match="nothing was changed"):
        run([first, bad])
    assert not (tmp_path / "a").exists()


def test_absent_removes_files_and_links_only(tmp_path):
    (tmp_path / "f").write_text("x")
    os.symlink("/etc/passwd", tmp_path / "l")
    r = run(
        [
            {"path": str(tmp_path / "f"), "state": "absent"},
            {"path": str(tmp_path / "l"), "state": "absent"},
            {"path": str(tmp_path / "none"), "state": "absent"},
        ]
    )
    assert r["changed_paths"] == [str(tmp_path / "f"), str(tmp_path / "l")] and os.listdir(tmp_path) == []
    assert os.path.exists("/etc/passwd")


# --- found by review: each of these failed before the fix ----------------------------------------------------------
def test_a_symlink_in_a_parent_directory_is_refused_not_followed(tmp_path):
    # A service user owning conf.d could swap it for a link to /etc/modprobe.d; root then wrote there.
    target = tmp_path / "etc"
    target.mkdir()
    writable = tmp_path / "var_lib_app"
    writable.mkdir()
    os.symlink(target, writable / "conf")
    os.lchown(writable / "conf", 1, 1)  # planted by a less privileged user
    with pytest.raises(Failed, match="reached without symbolic links"):
        run([{"path": str(writable / "conf" / "passwd"), "content": "root::0:0::/:/bin/sh\n", "mode": "0644"}])
    assert os.listdir(target) == []
    # The system's own links (root's, such as /lib -> usr/lib) are followed.
    os.lchown(writable / "conf", 0, 0)
    run([{"path": str(writable / "conf" / "ok.conf"), "content": "a\n"}])
    assert os.listdir(target) == ["ok.conf"]


def test_chmod_never_follows_a_file_swapped_for_a_link(tmp_path):
    victim = tmp_path / "shadow"
    victim.write_text("s")
    os.chmod(victim, 0o600)
    conf = tmp_path / "conf"
    conf.write_text("a\n")
    os.chmod(conf, 0o600)
    module = FakeModule([
        {"path": str(tmp_path / "first"), "content": "x\n", "validate": "swap %s"},
        {"path": str(conf), "content": "a\n", "mode": "0666"},
    ])  # fmt: skip

    def swap(_command):  # runs between the plan and the second entry's chmod
        os.unlink(conf)
        os.symlink(victim, conf)
        return 0, "", ""

    module.run_command = swap
    with pytest.raises(Failed, match="changed while this task ran"):
        mod.run(module)
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o600


def test_a_rewrite_keeps_owner_group_and_mode_when_the_entry_sets_none(tmp_path):
    conf = tmp_path / "pg_hba.conf"
    conf.write_text("old\n")
    os.chmod(conf, 0o644)
    os.chown(conf, 1, 1)
    run([{"path": str(conf), "content": "new\n"}])
    st = os.stat(conf)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 1, 1)


def test_validate_gets_a_quoted_path_and_a_percent_sign_is_no_crash(tmp_path):
    spaced = tmp_path / "a b"
    spaced.mkdir()
    module = FakeModule([{"path": str(spaced / "x.conf"), "content": "a\n", "validate": "check +%Y %s"}])
    module.run_command = lambda command: (0 if command.startswith("check +%Y '") else 1, "", "")
    assert mod.run(module)["changed"]


def test_a_link_to_a_missing_target_is_refused(tmp_path):
    # /etc/localtime linked to a zone that does not exist (Europe/Berln) was made silently.
    with pytest.raises(Failed, match="does not exist"):
        run([{"path": str(tmp_path / "localtime"), "state": "link", "src": "/usr/share/zoneinfo/Europe/Berln"}])
    assert not os.path.lexists(tmp_path / "localtime")


def test_an_empty_list_changes_nothing(tmp_path):
    assert run([])["changed"] is False
