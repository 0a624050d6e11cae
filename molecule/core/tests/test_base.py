"""The base of a host: packages, time, users, firewall; on Debian 12 and 13. The firewall is checked against the
services the core fleet really runs: PostgreSQL on the data hosts, nginx on the lb hosts."""

import os

import labcheck
import pytest

testinfra_hosts = labcheck.hosts("all")


def test_both_debian_releases_are_covered():
    releases = {labcheck.host(h).system_info.release.split(".")[0] for h in labcheck.hosts("all")}
    forced = os.environ.get("LAB_DISTRO")  # LAB_DISTRO=trixie runs every platform on one release
    assert releases == ({{"bookworm": "12", "trixie": "13"}[forced]} if forced else {"12", "13"})


@pytest.mark.parametrize("pkg", ["nftables", "tzdata", "curl", "sudo", "acl", "systemd-timesyncd"])
def test_base_packages(host, pkg):
    assert host.package(pkg).is_installed


def test_timezone(host):
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/Berlin"
    assert host.check_output("date +%Z") in ("CET", "CEST")


def test_timesync_enabled(host):
    assert host.service("systemd-timesyncd").is_enabled


def test_admin_user_with_key_and_sudo(host):
    alice = host.user("alice")
    assert alice.exists and "adm" in alice.groups
    keys = host.file("/home/alice/.ssh/authorized_keys")
    assert keys.user == "alice" and keys.mode == 0o600
    assert "alice@laptop" in keys.content_string
    assert host.run("sudo -u alice sudo -n true").rc == 0
    assert not host.user("bob").exists


def test_firewall_is_loaded_with_drop_policy(host):
    ruleset = host.check_output("nft list table inet selfhosted")
    assert "policy drop" in ruleset
    assert host.service("nftables").is_enabled


def test_postgresql_port_open_to_app_only():
    db = labcheck.address("core-data13")
    assert labcheck.can_connect("core-app13", db, 5432)
    assert not labcheck.can_connect("core-lb12", db, 5432)
    assert not labcheck.can_connect("core-data12", db, 5432)


def test_http_open_to_everyone_on_lb():
    lb = labcheck.address("core-lb12")
    for src in ("core-app13", "core-data13", "core-data12"):
        assert labcheck.can_connect(src, lb, 80), src


def test_unlisted_port_closed():
    # A listener on a port no service of the host's groups has: dropped for everyone, not refused.
    app = labcheck.address("core-app13")
    labcheck.host("core-app13").run("systemd-run --unit=probe-8125 python3 -m http.server 8125")
    assert not labcheck.can_connect("core-data13", app, 8125)


@pytest.mark.parametrize("name", ["core-app13", "core-app12"])
def test_service_helpers(name):
    # The test backend of the app hosts runs through _common's service_user and systemd_unit (converge.yml).
    probe_host = labcheck.host(name)
    assert probe_host.user("probe").shell == "/usr/sbin/nologin"
    assert probe_host.file("/srv/probe").mode == 0o750
    svc = probe_host.service("probe")
    assert svc.is_running and svc.is_enabled


def test_the_deferred_starts_left_nothing_behind(host):
    # The roles' packages were installed with their services' starts deferred (selfhosted.stack.packages): the
    # temporary policy-rc.d, its lock and its notes of denied starts are gone, so no later package run on the host
    # is kept from starting anything.
    assert not host.file("/usr/sbin/policy-rc.d").exists
    assert host.run("ls -A /run | grep '^selfhosted-packages' | grep -v '^selfhosted-packages.lock$'").stdout == ""
    assert host.run("ls -A /usr/sbin | grep '^\\.policy-rc.d'").stdout == ""


def test_check_mode_on_converged_hosts_changes_nothing():
    labcheck.assert_check_mode_clean()  # one --check --diff run serves this file's, the data tier's and the edge's


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ("common_timezone=Mars/Olympus_Mons!", "common_timezone"),
        (
            '{"common_firewall_extra_services": [{"name": "x", "ports": ["fast"], "on_groups": ["db"], '
            '"from": "any"}]}',
            "common_firewall_services (x).ports",
        ),
        ('{"common_firewall_ssh_sources": ["not-a-cidr"]}', "common_firewall_ssh_sources"),
        ('{"common_users": [{"name": "Bad User"}]}', "common_users"),
    ],
)
def test_bad_input_fails_in_preflight_before_any_change(extra, variable):
    labcheck.assert_refused_in_preflight("common_preflight", extra, variable)
