"""The files module's decisions: refused inputs and the plan for each observed state."""

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils import _files


def entry(**kw):
    base = {
        "path": "/etc/x.conf",
        "state": "file",
        "content": "a\n",
        "src": None,
        "owner": None,
        "group": None,
        "mode": None,
        "validate": None,
        "secret": False,
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ("nope", "a list of entries"),
        ([entry(path="/")], "absolute path other than /"),
        ([entry(path="")], "absolute path other than /"),
        ([entry(path="etc/x")], "absolute path other than /"),
        ([entry(path="/etc/x\nrm")], "newline"),
        ([entry(path="/etc/../x")], "normalised"),
        ([entry(path="/etc//x")], "normalised"),
        ([entry(path="/etc/x/")], "normalised"),
        ([entry(path="/etc/./x")], "normalised"),
        ([entry(), entry()], "path given twice"),
        ([entry(state="fifo")], "one of file, directory, link, absent"),
        ([entry(content=None)], "content: a string is required"),
        ([entry(state="directory")], "content: only with state file"),
        ([entry(state="link", content=None)], "src: the link's target is required"),
        ([entry(src="/x")], "src: only with state link"),
        ([entry(validate="check")], "a command with %s"),
        ([entry(state="directory", content=None, validate="check %s")], "validate: only with state file"),
        ([entry(mode=420)], "octal string"),
        ([entry(mode="0999")], "octal string"),
        ([entry(mode="rw-r--r--")], "octal string"),
        ([entry(state="absent", content=None, mode="0644")], "mode: only with state file or directory"),
        ([entry(owner="")], "owner: a user or group name"),
        ([entry(state="link", content=None, src="/y", group="root")], "group: a user or group name"),
        ([{"path": "/etc/x", "content": "", "colour": "red"}], "unknown keys colour"),
    ],
)
def test_bad_input_is_named(files, needle):
    found = _files.problems(files)
    assert any(needle in p for p in found), found


def test_an_empty_list_changes_nothing():
    assert _files.problems([]) == []


def test_good_input_has_no_problems():
    assert (
        _files.problems(
            [
                entry(mode="0640", owner="root", group="0", validate="nft -c -f %s"),
                entry(path="/etc/d", state="directory", content=None, mode="755"),
                entry(path="/etc/localtime", state="link", content=None, src="/usr/share/zoneinfo/UTC"),
                entry(path="/etc/old", state="absent", content=None),
            ]
        )
        == []
    )


def observed(kind, **kw):
    return {"type": kind, "uid": 0, "gid": 0, "mode": 0o644, **kw}


def test_a_file_with_the_same_content_and_attributes_needs_nothing():
    assert _files.plan(entry(mode="0644"), observed("file", sha1=_files.sha1("a\n")), 0, 0) == ([], None)


def test_different_content_is_written_and_attributes_fixed_alone():
    assert _files.plan(entry(), observed("file", sha1=_files.sha1("b\n"))) == (["write"], None)
    assert _files.plan(entry(), None) == (["write"], None)
    same = observed("file", sha1=_files.sha1("a\n"))
    assert _files.plan(entry(mode="0600"), same, 0, 0) == (["chmod"], None)
    assert _files.plan(entry(mode="0644"), same, 0, 1) == (["chown"], None)
    assert _files.plan(entry(), same, None, None) == ([], None)  # unset owner/group/mode: kept


def test_a_link_where_a_file_goes_is_replaced_not_followed():
    assert _files.plan(entry(), observed("link", target="/root/.ssh/authorized_keys")) == (["write"], None)


@pytest.mark.parametrize("kind", ["directory", "other"])
def test_a_directory_or_device_is_never_replaced_or_removed(kind):
    for e in (entry(), entry(state="link", content=None, src="/x"), entry(state="absent", content=None)):
        actions, refusal = _files.plan(e, observed(kind))
        assert actions == [] and refusal and kind in refusal


def test_directories_links_and_absence():
    d = entry(path="/etc/d", state="directory", content=None, mode="0755")
    assert _files.plan(d, None) == (["mkdir"], None)
    assert _files.plan(d, observed("directory", mode=0o755), 0, 0) == ([], None)
    assert _files.plan(d, observed("directory", mode=0o700), 0, 0) == (["chmod"], None)
    assert _files.plan(d, observed("file"))[1]
    link = entry(state="link", content=None, src="/usr/share/zoneinfo/UTC")
    assert _files.plan(link, observed("link", target="/usr/share/zoneinfo/UTC")) == ([], None)
    assert _files.plan(link, observed("link", target="/usr/share/zoneinfo/CET")) == (["link"], None)
    assert _files.plan(link, None) == (["link"], None)
    gone = entry(state="absent", content=None)
    assert _files.plan(gone, None) == ([], None)
    assert _files.plan(gone, observed("file")) == (["remove"], None)
    assert _files.plan(gone, observed("link", target="/etc/shadow")) == (["remove"], None)
