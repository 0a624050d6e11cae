# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of the services module: what each systemd unit needs (pure functions, unit-tested)."""

from __future__ import annotations

import re

# A unit name as systemctl takes it: letters, digits, ':', '_', '.', '@', '-', '\' (systemd-escape), optionally with
# its type suffix. Never an option (no leading '-'), never a glob.
UNIT_NAME = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9:_.@\\-]{0,254}\Z")
STATES = ("started", "stopped")
# `enabled: true` leaves these as they are: the unit starts at boot through its own link or a generator, or cannot be
# enabled at all (static, transient: systemctl is-enabled exits 0 for them, as ansible.builtin.systemd_service reads
# it). indirect and alias units are left too: `systemctl enable` cannot change them, so enabling them would report a
# change on every run. linked units (a unit file linked in from elsewhere) are enabled.
ENABLED_STATES = ("enabled", "enabled-runtime", "static", "generated", "transient", "indirect", "alias")
RUNNING_STATES = ("active", "reloading", "activating", "refreshing")
# A unit still stopping is stopped again when it should be stopped (the stop job completes it).
STOPPING_STATES = ("deactivating",)
# The order the batches run in: every unit of one kind in one systemctl call.
ACTION_ORDER = ("reset-failed", "enable", "disable", "start", "restart", "reload", "stop")


def problems(units):
    """Every bad entry of `units`, as messages naming the entry, the option and the allowed values."""
    found = []
    seen = set()
    for index, unit in enumerate(units):
        name = unit.get("name")
        label = f"units[{index}]"
        if not isinstance(name, str) or not UNIT_NAME.match(name):
            found.append(
                f"{label}.name must be a systemd unit name (letters, digits, ':', '_', '.', '@', '-'; "
                f"not starting with '-'), got {name!r}"
            )
            continue
        label = f"units[{index}] ({name})"
        if name in seen:
            found.append(f"{label}: listed twice; list each unit once")
        seen.add(name)
        state = unit.get("state")
        if state is not None and state not in STATES:
            found.append(f"{label}.state must be one of {', '.join(STATES)} (or unset to leave it), got {state!r}")
        if state == "stopped" and (unit.get("restart") or unit.get("reload")):
            found.append(f"{label}: restart and reload need state started (or unset), not stopped")
    return found


def parse_show(text, count):
    """The blocks of `systemctl show -p ... UNIT...` (one per unit, in the order asked, blank line between)."""
    blocks = [{}]
    for line in text.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, sep, value = line.partition("=")
        if sep:
            blocks[-1][key] = value
    blocks = [b for b in blocks if b]
    if len(blocks) != count:
        raise ValueError(f"systemctl show answered for {len(blocks)} units, {count} were asked")
    return blocks


def plan(unit, observed):
    """The actions one unit needs (in ACTION_ORDER), or a refusal.

    observed: LoadState, ActiveState, UnitFileState from systemctl show. A unit started by this run is not
    restarted or reloaded after it (it read its settings when it started); restart or reload of a unit that is not
    running starts it when state is started.
    """
    name = unit["name"]
    load = observed.get("LoadState", "")
    active = observed.get("ActiveState", "")
    file_state = observed.get("UnitFileState", "")
    if load == "not-found":
        return [], f"{name}: systemd has no such unit (is its package installed, its unit file written?)"
    if load == "masked" and (unit.get("state") == "started" or unit.get("enabled")):
        return [], f"{name} is masked: unmask it (systemctl unmask {name}) to run or enable it"
    if load not in ("loaded", "masked"):
        return [], f"{name}: systemd could not load the unit (LoadState {load or 'unknown'})"
    actions = []
    enabled = unit.get("enabled")
    if enabled is True and file_state not in ENABLED_STATES:
        actions.append("enable")
    elif enabled is False and file_state in ("enabled", "enabled-runtime", "linked", "linked-runtime", "alias"):
        actions.append("disable")
    running = active in RUNNING_STATES
    state = unit.get("state")
    if state == "started" and not running:
        if active == "failed":
            actions.append("reset-failed")
        actions.append("start")
    elif state == "stopped" and (running or active in STOPPING_STATES):
        actions.append("stop")
    elif running and unit.get("restart"):
        actions.append("restart")
    elif running and unit.get("reload"):
        actions.append("reload")
    return sorted(actions, key=ACTION_ORDER.index), None


def batches(plans):
    """{action: [unit names]} in ACTION_ORDER, from {name: actions}: one systemctl call per action."""
    out = {}
    for action in ACTION_ORDER:
        names = [name for name, actions in plans.items() if action in actions]
        if names:
            out[action] = names
    return out


def describe(observed):
    """One line for --diff: the unit's state as systemctl shows it."""
    return f"{observed.get('ActiveState') or 'unknown'}, {observed.get('UnitFileState') or 'no unit file state'}\n"
