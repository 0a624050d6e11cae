#!/usr/bin/python
# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release
version_added: 0.1.0
short_description: Manage the releases directory of an application on a host
description:
  - Keeps each release of an application in its own directory C(<path>/releases/<release>), points
    C(<path>/current) at the active one (switched atomically by rename, never unlink and create), and keeps a
    history C(<path>/releases.json) of what was created, activated, rolled back, marked good or failed.
  - Keeps the O(keep) newest releases and never deletes the current release or the previous good one (the
    rollback target).
  - O(state=rolled_back) returns to the previous good release without naming it.
  - A corrupted history file is an error; nothing is changed then.
author:
  - selfhosted.stack maintainers (@selfhosted-stack)
options:
  path:
    description: Base directory of the application, for example C(/opt/app).
    type: path
    required: true
  release:
    description:
      - Release id (it names a directory); required for O(state=present), O(state=active) and O(state=absent).
      - With O(state=good) or O(state=failed), defaults to the current release.
    type: str
  state:
    description:
      - V(present) creates the release directory (to be filled) without activating it.
      - V(active) creates it if needed and switches C(current) to it.
      - V(rolled_back) switches C(current) to the previous good release and marks the one left V(rolled_back).
      - V(good) and V(failed) record the result of a release (after a health gate, for example).
      - V(absent) deletes a release directory; the current and the previous good release are refused.
      - V(query) changes nothing and returns the current release, the rollback target and the history.
    type: str
    choices: [present, active, rolled_back, good, failed, absent, query]
    default: active
  keep:
    description: How many of the newest releases to keep (the current and the previous good one are kept too).
    type: int
    default: 5
  checksum:
    description:
      - Checksum of the release's artifact (for example C(sha256:...)), recorded in the history. Reusing a
        release id for a different checksum is refused.
    type: str
  owner:
    description: Owner of created release directories.
    type: str
  group:
    description: Group of created release directories.
    type: str
  history_limit:
    description: How many of the newest history entries to return.
    type: int
    default: 20
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details: Plans and returns what it would do, including the directories it would delete.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
    details: Shows the current release and the list of releases before and after.
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
    details: Activating the current release again, or marking a release with the result it has, changes nothing.
"""

EXAMPLES = r"""
- name: Prepare release 1.4.0 (filled by later tasks)
  selfhosted.stack.release:
    path: /opt/app
    release: "1.4.0"
    state: present
    checksum: "sha256:{{ artifact_sha256 }}"
    owner: app
    group: app

- name: Activate it, keeping the 5 newest releases
  selfhosted.stack.release:
    path: /opt/app
    release: "1.4.0"
    state: active
    keep: 5

- name: Record that the health gate passed
  selfhosted.stack.release:
    path: /opt/app
    state: good

- name: Go back to the previous good release, whichever it is
  selfhosted.stack.release:
    path: /opt/app
    state: rolled_back
"""

RETURN = r"""
current:
  description: The release C(current) points to after the task.
  returned: always
  type: str
  sample: "1.4.0"
previous:
  description: The release C(current) pointed to before the task.
  returned: always
  type: str
  sample: "1.3.2"
current_result:
  description: What the history says of the current release after the task (pending, good, failed, rolled_back).
  returned: always
  type: str
  sample: good
previous_good:
  description: The rollback target after the task (newest good release that is not current).
  returned: always
  type: str
  sample: "1.3.2"
releases:
  description: Release directories after the task, oldest first.
  returned: always
  type: list
  elements: str
created:
  description: Release directories created (or that would be).
  returned: always
  type: list
  elements: str
deleted:
  description: Release directories deleted (or that would be).
  returned: always
  type: list
  elements: str
reasons:
  description: For each release, why retention kept or deleted it.
  returned: always
  type: dict
  sample: {"1.3.2": "kept: previous good release", "1.1.0": "deleted: older than the 5 newest"}
history:
  description: The newest history entries (see O(history_limit)).
  returned: always
  type: list
  elements: dict
  contains:
    release:
      description: Release id.
      type: str
    event:
      description: "One of: created, activated, rolled_back, marked, deleted."
      type: str
    result:
      description: "One of: pending, good, failed, rolled_back; null for created and deleted."
      type: str
    time:
      description: When it happened, UTC, ISO 8601.
      type: str
    checksum:
      description: Artifact checksum, when one was given.
      type: str
"""

import datetime
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.stack.plugins.module_utils._release import (
    ReleaseError,
    activation_order,
    creation_order,
    dump_history,
    load_history,
    plan,
    previous_good,
    results,
)


def read_state(path):
    releases_dir = os.path.join(path, "releases")
    on_disk = (
        sorted(d for d in os.listdir(releases_dir) if os.path.isdir(os.path.join(releases_dir, d)))
        if (os.path.isdir(releases_dir))
        else []
    )
    link = os.path.join(path, "current")
    current = os.path.basename(os.readlink(link).rstrip("/")) if os.path.islink(link) else None
    history_file = os.path.join(path, "releases.json")
    text = None
    if os.path.exists(history_file):
        with open(history_file) as fh:
            text = fh.read()
    return on_disk, current, load_history(text, history_file)


def switch_current(module, path, release):
    """Point <path>/current at releases/<release> by renaming a new link over it (atomic)."""
    tmp = os.path.join(path, f".current.{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("releases", release), tmp)
    os.replace(tmp, os.path.join(path, "current"))


def write_history(module, path, history):
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".releases.json.")
    with os.fdopen(fd, "w") as fh:
        fh.write(dump_history(history))
    os.chmod(tmp, 0o644)
    module.atomic_move(tmp, os.path.join(path, "releases.json"))


def run(module):
    p = module.params
    path = p["path"]
    on_disk, current, history = read_state(path)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    decided = plan(p["state"], p["release"], on_disk, current, history, p["keep"], now, p["checksum"])

    after_current = decided.activate or current
    after_on_disk = sorted((set(on_disk) | set(decided.create)) - set(decided.delete))
    new_history = history + decided.events
    order = [r for r in creation_order(new_history) if r in after_on_disk]
    order += [r for r in after_on_disk if r not in order]
    result = dict(
        changed=decided.changed,
        current=after_current,
        previous=current,
        previous_good=previous_good(new_history, after_current, set(after_on_disk)),
        current_result=results(new_history).get(after_current) if after_current else None,
        releases=order,
        created=decided.create,
        deleted=decided.delete,
        reasons=decided.reasons,
        history=new_history[-p["history_limit"] :],
        activation_order=activation_order(new_history),
        diff=dict(
            before=dict(current=current, releases=sorted(on_disk)),
            after=dict(current=after_current, releases=after_on_disk),
        ),
    )
    if module.check_mode or not decided.changed:
        return result

    releases_dir = os.path.join(path, "releases")
    for release in decided.create:
        target = os.path.join(releases_dir, release)
        os.makedirs(target, exist_ok=True)
        module.set_owner_if_different(target, p["owner"], False)
        module.set_group_if_different(target, p["group"], False)
    if decided.activate:
        switch_current(module, path, decided.activate)
    # The history is written before anything is deleted: an interrupted run never loses track of a release.
    write_history(module, path, new_history)
    for release in decided.delete:
        shutil.rmtree(os.path.join(releases_dir, release))
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            release=dict(type="str"),
            state=dict(
                type="str",
                default="active",
                choices=["present", "active", "rolled_back", "good", "failed", "absent", "query"],
            ),
            keep=dict(type="int", default=5),
            checksum=dict(type="str"),
            owner=dict(type="str"),
            group=dict(type="str"),
            history_limit=dict(type="int", default=20),
        ),
        required_if=[
            ("state", "present", ("release",)),
            ("state", "active", ("release",)),
            ("state", "absent", ("release",)),
        ],
        supports_check_mode=True,
    )
    try:
        if not module.check_mode and module.params["state"] != "query":
            os.makedirs(os.path.join(module.params["path"], "releases"), exist_ok=True)
        module.exit_json(**run(module))
    except ReleaseError as exc:
        module.fail_json(msg=str(exc), path=module.params["path"])
    except OSError as exc:
        module.fail_json(
            msg=f"release: {exc.strerror} on {exc.filename}; releases under {module.params['path']} "
            f"are as they were before this step",
            path=module.params["path"],
        )


if __name__ == "__main__":
    main()
