"""The services module's decisions: entries refused, systemctl show parsed, and the actions for each state."""

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils import _services


def seen(active="active", file_state="enabled", load="loaded"):
    return {"LoadState": load, "ActiveState": active, "UnitFileState": file_state}


def unit(**kw):
    base = {"name": "nginx", "enabled": True, "state": "started", "restart": False, "reload": False}
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("units", "needle"),
    [
        ([unit(name="")], "must be a systemd unit name"),
        ([unit(name="-H")], "must be a systemd unit name"),
        ([unit(name="a b")], "must be a systemd unit name"),
        ([unit(name="nginx\nreboot")], "must be a systemd unit name"),
        ([unit(name="ng*")], "must be a systemd unit name"),
        ([unit(name=None)], "must be a systemd unit name"),
        ([unit(), unit()], "listed twice"),
        ([unit(state="restarted")], "state must be one of started, stopped"),
        ([unit(state="stopped", restart=True)], "restart and reload need state started"),
    ],
)
def test_bad_entries_are_refused(units, needle):
    found = _services.problems(units)
    assert found
    assert needle in " ".join(found)


def test_good_entries_pass():
    assert _services.problems([unit(), unit(name="postgresql@15-main", state=None, enabled=None)]) == []


@pytest.mark.parametrize(
    ("want", "observed", "actions"),
    [
        (unit(), seen(), []),
        (unit(), seen(active="inactive"), ["start"]),
        (unit(), seen(active="failed"), ["reset-failed", "start"]),
        (unit(), seen(active="inactive", file_state="disabled"), ["enable", "start"]),
        # static, generated (postgresql@ through its generator) and indirect units count as enabled
        (unit(), seen(file_state="static"), []),
        (unit(), seen(file_state="generated"), []),
        (unit(), seen(file_state="indirect"), []),
        (unit(), seen(file_state="transient"), []),
        # a unit file linked in from elsewhere does not start at boot until enabled
        (unit(), seen(file_state="linked"), ["enable"]),
        (unit(), seen(file_state="linked-runtime"), ["enable"]),
        (unit(state="stopped"), seen(active="deactivating"), ["stop"]),
        (unit(enabled=False), seen(), ["disable"]),
        (unit(enabled=None), seen(file_state="disabled"), []),
        (unit(state=None), seen(active="inactive"), []),
        (unit(state="stopped"), seen(), ["stop"]),
        (unit(state="stopped"), seen(active="inactive"), []),
        # restart only what was running; a unit started now read its settings already
        (unit(restart=True), seen(), ["restart"]),
        (unit(restart=True), seen(active="inactive"), ["start"]),
        (unit(restart=True), seen(active="failed"), ["reset-failed", "start"]),
        (unit(reload=True), seen(), ["reload"]),
        (unit(reload=True), seen(active="inactive"), ["start"]),
        (unit(reload=True, restart=True), seen(), ["restart"]),
        (unit(state=None, restart=True), seen(active="inactive"), []),
        (unit(restart=True), seen(active="activating"), ["restart"]),
    ],
)
def test_plan(want, observed, actions):
    assert _services.plan(want, observed) == (actions, None)


@pytest.mark.parametrize(
    ("want", "observed", "needle"),
    [
        (unit(), seen(load="not-found", active="inactive", file_state=""), "no such unit"),
        (unit(), seen(load="masked", file_state="masked"), "is masked"),
        (unit(state=None), seen(load="masked", file_state="masked"), "is masked"),
        (unit(), seen(load="error"), "could not load"),
    ],
)
def test_refusals(want, observed, needle):
    actions, refusal = _services.plan(want, observed)
    assert actions == []
    assert needle in refusal


def test_a_masked_unit_left_alone_is_not_refused():
    assert _services.plan(unit(enabled=None, state=None), seen(load="masked")) == ([], None)


def test_parse_show_keeps_the_order_asked():
    text = (
        "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n"
        "LoadState=not-found\nActiveState=inactive\nUnitFileState=\n"
    )
    blocks = _services.parse_show(text, 2)
    assert blocks[0]["ActiveState"] == "active"
    assert blocks[1] == {"LoadState": "not-found", "ActiveState": "inactive", "UnitFileState": ""}
    with pytest.raises(ValueError, match="answered for 2 units, 3 were asked"):
        _services.parse_show(text, 3)


def test_batches_run_in_order_one_call_per_action():
    plans = {"a": ["start"], "b": ["reset-failed", "start"], "c": [], "d": ["restart"], "e": ["enable", "start"]}
    assert list(_services.batches(plans).items()) == [
        ("reset-failed", ["b"]),
        ("enable", ["e"]),
        ("start", ["a", "b", "e"]),
        ("restart", ["d"]),
    ]
