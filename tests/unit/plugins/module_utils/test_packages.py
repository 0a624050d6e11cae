"""The packages module's decisions: entries refused, what is missing, when lists are fetched, and the policy-rc.d
script (run by a real sh) that defers only the listed services, only for the run holding the token."""

import os
import subprocess

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils import _packages

STATUS = (
    "nginx\tamd64\t1.22.1-9\tii \n"
    "redis-server\tamd64\t5:7.0.15-1\trc \n"
    "libc6\tamd64\t2.36-9\tii \n"
    "libc6\ti386\t2.36-9\tun \n"
    "half\tamd64\t1.0\tiF \n"
)


@pytest.mark.parametrize(
    "spec",
    ["", "/", "Nginx", "nginx*", "nginx/bookworm-backports", "-o", "nginx\nrm", "nginx=", "a b", "nginx>=1", None, 5],
)
def test_bad_entries_are_refused_naming_the_entry_and_the_forms(spec):
    found = _packages.problems([spec], [], 3600)
    assert len(found) == 1
    assert repr(spec) in found[0]
    assert "name:arch or name=version" in found[0]


@pytest.mark.parametrize("unit", ["", "-x", "a b", "x;reboot", "x)", "$(id)", "a*b", "*"])
def test_bad_deferred_services_are_refused(unit):
    found = _packages.problems(["nginx"], [unit], 3600)
    assert len(found) == 1
    assert "defer_start entry" in found[0]


@pytest.mark.parametrize("age", [-1, "3600", None, 1.5])
def test_bad_cache_valid_time_is_refused(age):
    assert "cache_valid_time" in _packages.problems(["nginx"], [], age)[0]


def test_good_entries_pass():
    assert _packages.problems(["nginx", "libc6:amd64", "redis-server=5:7.0.15-1", "g++"], ["postgresql@*"], 0) == []


def test_missing_counts_only_installed_packages_at_the_version_named():
    status = _packages.parse_status(STATUS)
    assert _packages.missing(["nginx"], status) == []
    assert _packages.missing(["nginx=1.22.1-9"], status) == []
    assert _packages.missing(["nginx=1.24.0-1"], status) == ["nginx=1.24.0-1"]
    # removed with its configuration kept (rc), never installed, half-configured: all missing
    assert _packages.missing(["redis-server", "postgresql-15", "half"], status) == [
        "redis-server",
        "postgresql-15",
        "half",
    ]
    assert _packages.missing(["libc6:amd64"], status) == []
    assert _packages.missing(["libc6:i386"], status) == ["libc6:i386"]
    # listed twice: asked once
    assert _packages.missing(["curl", "curl"], status) == ["curl"]


def test_lines_dpkg_query_did_not_format_are_ignored():
    assert _packages.parse_status("dpkg-query: no packages found matching x\n\n") == {}


@pytest.mark.parametrize(
    ("mtime", "now", "valid", "stale"),
    [
        (None, 1000, 3600, True),  # never fetched
        (1000, 1000 + 3599, 3600, False),
        (1000, 1000 + 3601, 3600, True),
        (1000, 1000, 0, True),  # 0: always fetch before an install
        (5000, 1000, 3600, True),  # dated in the future: fetched again
    ],
)
def test_cache_stale(mtime, now, valid, stale):
    assert _packages.cache_stale(mtime, now, valid) is stale


def run_policy(tmp_path, script, args, token=None):
    path = tmp_path / "policy-rc.d"
    path.write_text(script)
    path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != _packages.ENV}
    if token is not None:
        env[_packages.ENV] = token
    return subprocess.run(["sh", str(path), *args], env=env, check=False).returncode


@pytest.mark.parametrize(
    ("args", "token", "rc"),
    [
        (["postgresql", "start", "5"], "t0k3n", 101),  # invoke-rc.d's form
        (["postgresql.service", "start"], "t0k3n", 101),  # deb-systemd-invoke's form
        (["postgresql@15-main.service", "restart"], "t0k3n", 101),
        (["redis-server", "start"], "t0k3n", 101),
        (["nginx", "start"], "t0k3n", 0),  # not listed: allowed
        (["postgresql-common", "start"], "t0k3n", 0),  # a prefix is not a match
        (["postgresql", "start"], None, 0),  # another caller (unattended-upgrades, a left-over copy): allowed
        (["postgresql", "start"], "other", 0),
        (["postgresql", "start"], "", 0),
    ],
)
def test_policy_script_defers_only_the_listed_services_for_the_token_holder(tmp_path, args, token, rc):
    log = tmp_path / "denied log"
    script = _packages.policy_script(["postgresql", "postgresql@*", "redis-server"], "t0k3n", str(log))
    assert run_policy(tmp_path, script, args, token) == rc
    # each denial is noted, nothing else
    assert (log.read_text() if log.exists() else "") == (f"{args[0]} {args[1]}\n" if rc == 101 else "")


def test_denied_services_are_named_once_without_their_suffix():
    text = "postgresql start\npostgresql.service start\nredis-server stop\n\n;rm x\n"
    assert _packages.denied_services(text) == ["postgresql", "redis-server"]
    assert _packages.denied_services(None) == []


def test_policy_script_is_recognised_as_ours_and_a_foreign_one_is_not():
    assert _packages.is_ours(_packages.policy_script(["nginx"], "abc", "/run/x"))
    assert not _packages.is_ours("#!/bin/sh\nexit 101\n")
    assert not _packages.is_ours("#!/bin/sh\n# " + _packages.MARKER)  # the marker must be the second line as written
    assert not _packages.is_ours(None)


def test_held_packages_count_as_installed_and_broken_ones_do_not():
    status = _packages.parse_status(
        "redis-server\tamd64\t5:7.0.15-1\thi \nnginx\tamd64\t1.22\tiiR\ntzdata\tall\t2024a\tii \n"
    )
    # held (apt-mark hold): installed, as ansible.builtin.apt sees it
    assert _packages.missing(["redis-server"], status) == []
    # reinstall required (R): not installed properly
    assert _packages.missing(["nginx"], status) == ["nginx"]
    # an Architecture: all package satisfies name:arch
    assert _packages.missing(["tzdata:amd64"], status) == []


@pytest.mark.parametrize(
    ("args", "rc", "logged"),
    [
        (["--quiet", "postgresql", "start"], 101, "postgresql start"),  # invoke-rc.d --quiet passes it first
        (["--quiet", "--force", "redis-server", "restart"], 101, "redis-server restart"),
        (["redis-server", "try-restart restart"], 101, "redis-server try-restart restart"),  # a list of actions
        (["redis-server", "status"], 0, ""),  # a status changes nothing: no restart owed afterwards
        (["--list", "redis-server"], 0, ""),
    ],
)
def test_policy_script_reads_invoke_rc_d_options_and_denies_only_actions(tmp_path, args, rc, logged):
    log = tmp_path / "denied"
    script = _packages.policy_script(["postgresql", "redis-server.service"], "t0k3n", str(log))
    assert run_policy(tmp_path, script, args, "t0k3n") == rc
    assert (log.read_text().strip() if log.exists() else "") == logged
