"""The services module against a stand-in systemctl: one show for all units, one call per kind of action, nothing
changed when any unit is refused, check mode runs nothing."""

import pytest
from ansible_collections.selfhosted.stack.plugins.modules import services as mod


class Done(Exception):
    pass


class Failed(Exception):
    pass


class FakeModule:
    def __init__(self, units, state, check_mode=False, fail_action=None):
        keys = {"enabled": None, "state": None, "restart": False, "reload": False}
        self.params = {"units": [{**keys, **u} for u in units], "daemon_reload": False}
        self.check_mode, self._diff = check_mode, True
        self.state, self.fail_action, self.calls = state, fail_action, []

    def get_bin_path(self, name, required=False):
        return f"/bin/{name}"

    def run_command(self, argv):
        self.calls.append(argv[1:])
        action, names = argv[1], argv[argv.index("--") + 1 :] if "--" in argv else []
        if action == "show":
            out = "\n".join(
                "LoadState={}\nActiveState={}\nUnitFileState={}\n".format(
                    *self.state.get(n, ("not-found", "inactive", ""))
                )
                for n in names
            )
            return 0, out, ""
        if action == self.fail_action:
            return 1, "", f"Job for {names[0]} failed"
        return 0, "", ""

    def exit_json(self, **kw):
        raise Done(kw)

    def fail_json(self, **kw):
        raise Failed(kw)


def run(module):
    with pytest.raises((Done, Failed)) as info:
        mod.run(module)
    return info.value.args[0], isinstance(info.value, Done)


STATE = {
    "a": ("loaded", "active", "enabled"),
    "b": ("loaded", "inactive", "disabled"),
    "c": ("loaded", "failed", "enabled"),
    "d": ("loaded", "active", "enabled"),
}


def test_one_show_and_one_call_per_action():
    m = FakeModule([{"name": n, "enabled": True, "state": "started", "restart": n == "d"} for n in "abcd"], STATE)
    result, ok = run(m)
    assert ok and result["changed"]
    assert m.calls == [
        ["show", "--property=LoadState,ActiveState,UnitFileState", "--", "a", "b", "c", "d"],
        ["reset-failed", "--", "c"],
        ["enable", "--", "b"],
        ["start", "--", "b", "c"],
        ["restart", "--", "d"],
    ]
    assert result["started"] == ["b", "c"] and result["restarted"] == ["d"]
    assert [d["before_header"] for d in result["diff"]] == ["b", "c", "d"]


def test_nothing_to_do_is_one_show_and_no_change():
    m = FakeModule([{"name": "a", "enabled": True, "state": "started"}], STATE)
    result, ok = run(m)
    assert ok and result["changed"] is False and len(m.calls) == 1


def test_check_mode_reports_and_runs_nothing():
    m = FakeModule([{"name": "b", "enabled": True, "state": "started"}], STATE, check_mode=True)
    result, ok = run(m)
    assert ok and result["changed"] and result["started"] == ["b"]
    assert [c[0] for c in m.calls] == ["show"]


def test_an_unknown_unit_changes_nothing_for_the_others():
    m = FakeModule([{"name": "b", "state": "started"}, {"name": "nope", "state": "started"}], STATE)
    result, ok = run(m)
    assert not ok and "nope: systemd has no such unit" in result["msg"] and "nothing was changed" in result["msg"]
    assert [c[0] for c in m.calls] == ["show"]


def test_a_failed_start_names_the_units_and_what_was_done_before():
    m = FakeModule([{"name": "b", "enabled": True, "state": "started"}], STATE, fail_action="start")
    result, ok = run(m)
    assert not ok
    assert "systemctl start b failed" in result["msg"] and "done: enable b" in result["msg"]
    assert result["started"] == []


def test_a_failed_start_does_not_cancel_another_units_restart():
    units = [{"name": "b", "enabled": True, "state": "started"}, {"name": "d", "state": "started", "restart": True}]
    m = FakeModule(units, STATE, fail_action="start")
    result, ok = run(m)
    assert not ok
    assert ["restart", "--", "d"] in m.calls
    assert result["restarted"] == ["d"] and result["started"] == []
    assert result["units"] == [{"name": "b", "actions": ["enable"]}, {"name": "d", "actions": ["restart"]}]


def test_bad_entries_fail_before_systemctl_runs():
    m = FakeModule([{"name": "-H evil", "state": "started"}], STATE)
    result, ok = run(m)
    assert not ok and "units[0].name" in result["msg"] and m.calls == []


def test_an_empty_list_changes_nothing():
    m = FakeModule([], STATE)
    result, ok = run(m)
    assert ok and result["changed"] is False and m.calls == []
