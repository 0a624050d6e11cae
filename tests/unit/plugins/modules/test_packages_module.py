"""The packages module against stand-in dpkg-query and apt-get: a converged host costs one dpkg-query, the
policy-rc.d is written for the install only and removed after it (also when apt-get fails), a policy-rc.d of the
host's own is never touched, lists are fetched only when needed, a virtual package is named."""

import os

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils import _packages
from ansible_collections.selfhosted.stack.plugins.modules import packages as mod


class Done(Exception):
    pass


class Failed(Exception):
    pass


class FakeModule:
    def __init__(
        self,
        names,
        installed,
        defer=(),
        check_mode=False,
        install_rc=0,
        provides=None,
        running=(),
        update_rc=0,
        restart_rc=0,
    ):
        self.params = {
            "names": names,
            "defer_start": list(defer),
            "cache_valid_time": 3600,
            "install_recommends": False,
            "lock_timeout": 120,
        }
        self.check_mode, self._diff = check_mode, False
        self.installed, self.install_rc, self.provides = set(installed), install_rc, provides or {}
        self.calls, self.policy_during, self.env_during, self.warnings = [], [], [], []
        self.running, self.update_rc, self.restart_rc = set(running), update_rc, restart_rc

    def get_bin_path(self, name, required=False):
        return name

    def warn(self, msg):
        self.warnings.append(msg)

    def run_command(self, argv, environ_update=None):
        self.calls.append(argv)
        if argv[0] == "dpkg-query":
            names = argv[argv.index("--") + 1 :]
            out = "".join(f"{n}\tamd64\t1.0\tii \n" for n in names if n in self.installed)
            return (0 if all(n in self.installed for n in names) else 1), out, ""
        if "install" in argv:
            self.env_during.append(dict(environ_update or {}))
            path = _packages.POLICY_PATH
            with open(path) if os.path.isfile(path) else open(os.devnull) as fh:
                self.policy_during.append(fh.read() or None)
            # the packages' scripts ask policy-rc.d to (re)start each deferred service; it notes the denials
            if _packages.is_ours(self.policy_during[-1]):
                log = self.policy_during[-1].split(">> ", 1)[1].split(";", 1)[0].strip("'")
                with open(log, "a") as fh:
                    fh.writelines(f"{unit} restart\n" for unit in self.params["defer_start"])
            if self.install_rc:
                return self.install_rc, "", "E: Unable to locate package"
            for name in argv[argv.index("--") + 1 :]:
                self.installed.add(self.provides.get(name, name))
        if "update" in argv:
            return self.update_rc, "", "E: Failed to fetch" if self.update_rc else ""
        if argv[:2] == ["systemctl", "restart"]:
            return self.restart_rc, "", "Job for redis-server.service failed" if self.restart_rc else ""
        if argv[:2] == ["systemctl", "is-active"]:
            names = argv[3:]
            return 0, "".join(("active" if n in self.running else "inactive") + "\n" for n in names), ""
        return 0, "", ""

    def exit_json(self, **kw):
        raise Done(kw)

    def fail_json(self, **kw):
        raise Failed(kw)


@pytest.fixture(autouse=True)
def policy_path(tmp_path, monkeypatch):
    path = tmp_path / "policy-rc.d"
    monkeypatch.setattr(_packages, "POLICY_PATH", str(path))
    monkeypatch.setattr(_packages, "DENIED_LOG", str(tmp_path / "denied.{token}"))
    monkeypatch.setattr(mod, "LISTS", str(tmp_path / "lists"))
    monkeypatch.setattr(mod, "STAMP", str(tmp_path / "stamp"))
    monkeypatch.setattr(mod, "LOCK", str(tmp_path / "lock"))
    (tmp_path / "lists").mkdir()
    return path


def run(module):
    with pytest.raises((Done, Failed)) as info:
        mod.run(module)
    return info.value.args[0], isinstance(info.value, Done)


def test_a_converged_host_costs_one_dpkg_query():
    m = FakeModule(["nginx", "curl"], ["nginx", "curl"], defer=["nginx"])
    result, ok = run(m)
    assert ok and result["changed"] is False
    assert [c[0] for c in m.calls] == ["dpkg-query"]


def test_install_defers_the_listed_services_and_removes_the_policy(policy_path):
    m = FakeModule(["nginx", "curl"], ["curl"], defer=["nginx"])
    result, ok = run(m)
    assert ok and result["changed"] and result["installed"] == ["nginx"] and result["deferred"] == ["nginx"]
    (during,) = m.policy_during
    assert _packages.is_ours(during) and "  nginx) printf" in during
    token = m.env_during[0][_packages.ENV]
    assert f'= "{token}" ]' in during
    assert not policy_path.exists()
    # nginx was new (not running): left for its role to start, and the denial log is gone
    assert result["restarted"] == [] and not any(c[:2] == ["systemctl", "restart"] for c in m.calls)
    assert [f for f in os.listdir(policy_path.parent) if f.startswith("denied")] == []
    # fresh lists (the lists directory was just made): no apt-get update
    assert not any("update" in c for c in m.calls)


def test_the_policy_is_removed_when_apt_get_fails(policy_path):
    m = FakeModule(["nginx"], [], defer=["nginx"], install_rc=100)
    result, ok = run(m)
    assert not ok and "apt-get install nginx failed" in result["msg"]
    assert not policy_path.exists()
    # the failed install was tried again after fetching the lists
    assert sum("install" in c for c in m.calls) == 2 and any("update" in c for c in m.calls)


def test_a_policy_of_the_hosts_own_is_left_alone_and_nothing_is_deferred(policy_path):
    policy_path.write_text("#!/bin/sh\nexit 101\n")
    m = FakeModule(["nginx"], [], defer=["nginx"])
    result, ok = run(m)
    assert ok and result["deferred"] == [] and m.warnings
    assert policy_path.read_text() == "#!/bin/sh\nexit 101\n"
    assert _packages.ENV not in m.env_during[0]


def test_a_symbolic_link_at_the_policy_path_is_not_followed_or_replaced(policy_path, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    policy_path.symlink_to(target)
    m = FakeModule(["nginx"], [], defer=["nginx"])
    result, ok = run(m)
    assert ok and result["deferred"] == []
    assert policy_path.is_symlink() and target.read_text() == "keep\n"


def test_a_left_over_policy_of_ours_is_replaced_and_removed(policy_path):
    policy_path.write_text(_packages.policy_script(["redis-server"], "old", "/run/x"))
    m = FakeModule(["nginx"], [], defer=["nginx"])
    result, ok = run(m)
    assert ok and result["deferred"] == ["nginx"] and "  nginx) printf" in m.policy_during[0]
    assert not policy_path.exists()


def test_check_mode_reports_and_installs_nothing(policy_path):
    m = FakeModule(["nginx"], [], defer=["nginx"], check_mode=True)
    result, ok = run(m)
    assert ok and result["changed"] and result["installed"] == ["nginx"]
    assert [c[0] for c in m.calls] == ["dpkg-query"] and not policy_path.exists()


def test_stale_lists_are_fetched_before_the_install(tmp_path):
    os.utime(tmp_path / "lists", (0, 0))
    m = FakeModule(["nginx"], [])
    result, ok = run(m)
    assert ok and result["cache_updated"]
    steps = [c for c in m.calls if c[0] == "apt-get"]
    assert "update" in steps[0] and "install" in steps[1]


def test_a_virtual_package_is_named_after_the_install():
    m = FakeModule(["mail-transport-agent"], [], provides={"mail-transport-agent": "exim4"})
    result, ok = run(m)
    assert not ok and "mail-transport-agent" in result["msg"] and "virtual" in result["msg"]


def test_bad_entries_fail_before_anything_runs():
    m = FakeModule(["nginx; reboot"], [])
    result, ok = run(m)
    assert not ok and "nginx; reboot" in result["msg"] and m.calls == []


def test_a_deferred_service_that_was_running_is_restarted_after_the_install():
    # redis-tools missing, redis-server running: the install upgrades redis-server too, and its restart was denied
    m = FakeModule(["redis-tools"], [], defer=["redis-server", "nginx"], running=["redis-server"])
    result, ok = run(m)
    assert ok and result["restarted"] == ["redis-server"]
    assert ["systemctl", "restart", "--", "redis-server"] in m.calls


def test_a_failed_install_still_restarts_what_it_upgraded_and_names_both_errors():
    m = FakeModule(["redis-tools"], [], defer=["redis-server"], running=["redis-server"], install_rc=100, restart_rc=1)
    result, ok = run(m)
    assert not ok
    assert "apt-get install redis-tools failed" in result["msg"] and "restarting redis-server" in result["msg"]
    assert ["systemctl", "restart", "--", "redis-server"] in m.calls


def test_a_failed_update_on_the_retry_still_restarts_what_the_first_try_upgraded(policy_path):
    m = FakeModule(["redis-tools"], [], defer=["redis-server"], running=["redis-server"], install_rc=100, update_rc=100)
    result, ok = run(m)
    assert not ok and "apt-get update failed" in result["msg"]
    assert result["restarted"] == ["redis-server"] and not policy_path.exists()


def test_a_directory_at_the_policy_path_is_foreign(policy_path):
    policy_path.mkdir()
    m = FakeModule(["nginx"], [], defer=["nginx"])
    result, ok = run(m)
    assert ok and result["deferred"] == [] and m.warnings and policy_path.is_dir()


def test_a_policy_that_appears_while_ours_is_written_is_not_replaced(policy_path, monkeypatch):
    real_link = os.link

    def racing_link(src, dst):
        with open(dst, "w") as fh:  # the host's own policy-rc.d, written in between
            fh.write("#!/bin/sh\nexit 101\n")
        return real_link(src, dst)

    monkeypatch.setattr(mod.os, "link", racing_link)
    m = FakeModule(["nginx"], [], defer=["nginx"])
    result, ok = run(m)
    assert not ok and "could not put" in result["msg"] and "nothing was installed" in result["msg"]
    assert policy_path.read_text() == "#!/bin/sh\nexit 101\n"
    assert [f for f in os.listdir(policy_path.parent) if f.startswith((".policy", "denied"))] == []
