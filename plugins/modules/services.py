#!/usr/bin/python
# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: services
version_added: 0.1.0
short_description: Several systemd units enabled, started, restarted or stopped in one task
description:
  - Brings each unit of O(units) to its state in one module run, with one C(systemctl) call per kind of action
    (the units of one call start in parallel). One run instead of one C(ansible.builtin.systemd_service) task per
    unit, each a round trip to the host even when nothing changes.
  - Every unit is looked at before anything changes; an unknown unit, a masked unit that should run or be enabled,
    or a bad entry, fails the task naming the unit and the option, and no unit is touched.
  - A unit that O(units[].restart) or O(units[].reload) asks for is restarted or reloaded only if it was running
    before this task; one this task starts is not restarted after it (it read its settings when it started). A
    failed unit that should run is cleared (C(systemctl reset-failed)) before it starts, so a start limit hit
    while its package started it without settings does not keep it down.
  - Batches run in this order; reset-failed, enable, disable, start, restart, reload, stop. Every batch runs, also
    after one failed (a failed start does not cancel another unit's restart); the task then fails naming each failed
    batch and the state of every unit, and the result lists only the actions that succeeded.
author:
  - selfhosted.stack maintainers (@selfhosted-stack)
options:
  units:
    description: The units, each once.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Unit name as C(systemctl) takes it (V(nginx), V(postgresql@15-main), V(backup.timer)).
        type: str
        required: true
      enabled:
        description: Start at boot (V(true)), not (V(false)); unset leaves it.
        type: bool
      state:
        description: V(started) or V(stopped); unset leaves it.
        type: str
        choices: [started, stopped]
      restart:
        description: Restart the unit if it was running (its settings changed). With O(units[].state=started), one that
          was not running is started instead.
        type: bool
        default: false
      reload:
        description: Reload the unit if it was running and is not restarted.
        type: bool
        default: false
  daemon_reload:
    description: Run C(systemctl daemon-reload) first (unit files changed).
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details: Reports the actions each unit would get; nothing runs (daemon-reload neither).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
    details: A unit asked to restart is restarted on every run that asks; the roles ask only when its settings changed.
"""

EXAMPLES = r"""
- name: Run the exporters, restarting those whose settings changed
  selfhosted.stack.services:
    units:
      - {name: prometheus-node-exporter, enabled: true, state: started}
      - {name: prometheus-postgres-exporter, enabled: true, state: started, restart: true}

- name: Enable the clock service without starting it (a container), run the firewall
  selfhosted.stack.services:
    units:
      - {name: systemd-timesyncd, enabled: true}
      - {name: nftables, enabled: true, state: started}
"""

RETURN = r"""
units:
  description: Per unit, its name and the actions it got (or would get, in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{name: nginx, actions: [start]}, {name: nftables, actions: []}]
started:
  description: Units started by this task.
  returned: always
  type: list
  elements: str
restarted:
  description: Units restarted by this task.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.stack.plugins.module_utils import _services

PROPERTIES = "LoadState,ActiveState,UnitFileState"


def show(module, systemctl, names):
    rc, out, err = module.run_command([systemctl, "show", f"--property={PROPERTIES}", "--", *names])
    if rc != 0:
        module.fail_json(msg=f"services: systemctl show failed (rc {rc}): {err.strip()}; nothing was changed")
    try:
        return _services.parse_show(out, len(names))
    except ValueError as exc:
        module.fail_json(msg=f"services: {exc}; nothing was changed")


def run(module):
    units = module.params["units"]
    found = _services.problems(units)
    if found:
        module.fail_json(msg="services: " + "; ".join(found) + "; nothing was changed")
    if not units:
        module.exit_json(changed=False, units=[], started=[], restarted=[])
    systemctl = module.get_bin_path("systemctl", required=True)
    names = [u["name"] for u in units]
    if module.params["daemon_reload"] and not module.check_mode:
        rc, out, err = module.run_command([systemctl, "daemon-reload"])
        if rc != 0:
            module.fail_json(
                msg=f"services: systemctl daemon-reload failed: {(err or out).strip()}; nothing else was changed"
            )
    observed = show(module, systemctl, names)
    plans, refusals = {}, []
    for unit, seen in zip(units, observed):
        actions, refusal = _services.plan(unit, seen)
        if refusal:
            refusals.append(refusal)
        plans[unit["name"]] = actions
    if refusals:
        module.fail_json(msg="services: " + "; ".join(refusals) + "; nothing was changed")

    changed = any(plans.values())
    result = {
        "changed": changed,
        "units": [{"name": n, "actions": plans[n]} for n in names],
        "started": [n for n in names if "start" in plans[n]],
        "restarted": [n for n in names if "restart" in plans[n]],
    }
    if module._diff and changed:
        result["diff"] = [
            {
                "before_header": n,
                "after_header": n,
                "before": _services.describe(seen),
                "after": f"{', '.join(plans[n])}\n",
            }
            for n, seen in zip(names, observed)
            if plans[n]
        ]
    if module.check_mode or not changed:
        module.exit_json(**result)

    # Every batch runs, also after one failed (a failed start does not cancel another unit's restart for changed
    # settings); the result lists only what succeeded.
    done, failed = [], []
    for action, batch in _services.batches(plans).items():
        rc, out, err = module.run_command([systemctl, action, "--", *batch])
        if rc == 0:
            done.append((action, batch))
        else:
            failed.append((action, batch, (err or out).strip()[-1500:]))
    succeeded = {(a, n) for a, batch in done for n in batch}
    result["started"] = [n for n in names if ("start", n) in succeeded]
    result["restarted"] = [n for n in names if ("restart", n) in succeeded]
    result["units"] = [{"name": n, "actions": [a for a in plans[n] if (a, n) in succeeded]} for n in names]
    if failed:
        rc, out, _err = module.run_command([systemctl, "show", "--property=ActiveState", "--", *names])
        try:
            states = ", ".join(
                f"{n} {b.get('ActiveState', '?')}" for n, b in zip(names, _services.parse_show(out, len(names)))
            )
        except ValueError:
            states = "unknown"
        module.fail_json(
            msg="services: "
            + "; ".join(f"systemctl {a} {' '.join(batch)} failed: {e}" for a, batch, e in failed)
            + f" (now: {states}; see journalctl -u UNIT); done: "
            + (", ".join(f"{a} {' '.join(batch)}" for a, batch in done) or "nothing"),
            **result,
        )
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec={
            "units": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "enabled": {"type": "bool"},
                    "state": {"type": "str", "choices": list(_services.STATES)},
                    "restart": {"type": "bool", "default": False},
                    "reload": {"type": "bool", "default": False},
                },
            },
            "daemon_reload": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    run(module)


if __name__ == "__main__":
    main()
