# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decisions of the release module: which release to activate, which to delete, what the history says.

Layout managed on a host (BASE is e.g. /opt/app):
    BASE/releases/<id>/        one directory per release (its virtualenv, code, ...)
    BASE/current -> releases/<id>   switched atomically by rename
    BASE/releases.json         history: a list of entries, oldest first
A history entry: {"release", "event" (created|activated|rolled_back|marked|deleted), "result"
(pending|good|failed|rolled_back|null), "time" (ISO 8601 UTC), "checksum", "from"}.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

STATES = ("present", "active", "rolled_back", "absent", "good", "failed", "query")
RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class ReleaseError(Exception):
    """A request the module must refuse; the message says why and what to do."""


@dataclass
class Plan:
    activate: str | None = None  # release the current link will point to
    create: list = field(default_factory=list)  # release directories to create
    delete: list = field(default_factory=list)  # release directories to delete
    events: list = field(default_factory=list)  # history entries to append
    reasons: dict = field(default_factory=dict)  # release -> why it is kept or deleted

    @property
    def changed(self):
        return bool(self.activate or self.create or self.delete or self.events)


def validate_release_id(release):
    if release is None or not RELEASE_ID.match(str(release)) or str(release) in (".", ".."):
        raise ReleaseError(
            f"release must be 1-128 characters of letters, digits, '.', '_', '+', '-' starting with a letter or "
            f"digit (it names a directory), got {release!r}"
        )
    return str(release)


def load_history(text, path="releases.json"):
    """Parse the history file; a corrupted file is an error (never silently reset: it protects releases)."""
    if text is None or not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ReleaseError(
            f"the release history {path} is corrupted ({exc}); nothing was changed. Repair or move the file "
            f"aside after checking which release is current (readlink of the current link)."
        ) from exc
    if not isinstance(data, list) or not all(isinstance(e, dict) and "release" in e and "event" in e for e in data):
        raise ReleaseError(
            f"the release history {path} is not a list of entries with 'release' and 'event'; nothing was changed."
        )
    return data


def dump_history(history):
    return json.dumps(history, indent=1, sort_keys=True) + "\n"


def results(history):
    """release -> its latest result (good, failed, rolled_back, pending)."""
    out = {}
    for entry in history:
        if entry.get("result"):
            out[entry["release"]] = entry["result"]
    return out


def activation_order(history):
    """Releases in the order they were last activated (oldest first)."""
    order = []
    for entry in history:
        if entry["event"] in ("activated", "rolled_back"):
            target = entry["release"]
            if target in order:
                order.remove(target)
            order.append(target)
    return order


def previous_good(history, current, on_disk):
    """The newest release marked good that is not current and still on disk, or None."""
    result = results(history)
    for release in reversed(activation_order(history)):
        if release != current and result.get(release) == "good" and release in on_disk:
            return release
    return None


def _entry(release, event, now, result=None, checksum=None, source=None):
    entry = {"release": release, "event": event, "time": now, "result": result}
    if checksum:
        entry["checksum"] = checksum
    if source:
        entry["from"] = source
    return entry


def retention(on_disk, history, current, keep, created_order):
    """(kept, deleted, reasons): keep the `keep` newest releases, never the current or the previous good one.

    on_disk: release ids present. created_order: ids oldest first (history creation order, then the rest).
    """
    if keep < 1:
        raise ReleaseError(f"keep must be at least 1, got {keep}")
    protected = {current: "current", previous_good(history, current, on_disk): "previous good release"}
    protected.pop(None, None)
    ordered = [r for r in created_order if r in on_disk]
    newest = ordered[-keep:]
    kept, deleted, reasons = [], [], {}
    # Directories the history never recorded were not made by this module: never deleted, only reported.
    for release in sorted(set(on_disk) - set(ordered)):
        kept.append(release)
        reasons[release] = "kept: not in the history (not managed by this module)"
    for release in ordered:
        if release in protected:
            kept.append(release)
            reasons[release] = f"kept: {protected[release]}"
        elif release in newest:
            kept.append(release)
            reasons[release] = f"kept: among the {keep} newest"
        else:
            deleted.append(release)
            reasons[release] = f"deleted: older than the {keep} newest"
    return kept, deleted, reasons


def creation_order(history):
    order = []
    for entry in history:
        if entry["event"] == "created" and entry["release"] not in order:
            order.append(entry["release"])
    return order


def plan(state, release, on_disk, current, history, keep, now, checksum=None):
    """Decide what the module does. Raises ReleaseError for requests it must refuse."""
    if state not in STATES:
        raise ReleaseError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    on_disk = set(on_disk)
    p = Plan()
    if state == "query":
        return p  # reports only: no change, no retention
    target = None
    if state in ("present", "active", "absent"):
        target = validate_release_id(release)
    elif state in ("good", "failed"):
        target = validate_release_id(release) if release else current
        if target is None:
            raise ReleaseError(f"state={state} without a release marks the current one, but no release is current")

    known = {e["release"] for e in history}
    if state in ("present", "active") and target not in on_disk:
        p.create.append(target)
    if state in ("present", "active") and target not in known:
        p.events.append(_entry(target, "created", now, checksum=checksum))
    elif state in ("present", "active") and checksum:
        recorded = [e.get("checksum") for e in history if e["release"] == target and e.get("checksum")]
        if recorded and recorded[-1] != checksum:
            raise ReleaseError(
                f"release {target} exists with artifact checksum {recorded[-1]} but {checksum} was given: a release id "
                f"must not be reused for a different artifact. Use a new release id."
            )

    if state == "active" and current != target:
        p.activate = target
        p.events.append(_entry(target, "activated", now, result="pending", source=current))
    elif state == "rolled_back":
        back_to = previous_good(history, current, on_disk)
        if back_to is None:
            raise ReleaseError(
                f"no previous good release to roll back to (current: {current or 'none'}); releases on disk: "
                f"{', '.join(sorted(on_disk)) or 'none'}. Nothing was changed."
            )
        p.activate = back_to
        p.events.append(_entry(back_to, "rolled_back", now, result="good", source=current))
        if current and results(history).get(current) != "failed":
            p.events.append(_entry(current, "marked", now, result="rolled_back"))
    elif state in ("good", "failed"):
        if target not in on_disk and target not in known:
            raise ReleaseError(f"cannot mark release {target} {state}: it is not on disk and not in the history")
        if results(history).get(target) != state:
            p.events.append(_entry(target, "marked", now, result=state))
    elif state == "absent":
        if target == current:
            raise ReleaseError(f"release {target} is the current release; activate or roll back to another first")
        if target == previous_good(history, current, on_disk):
            raise ReleaseError(f"release {target} is the previous good release (the rollback target); it is kept")
        if target in on_disk:
            p.delete.append(target)
            p.events.append(_entry(target, "deleted", now))
        return p

    # Retention after the change, seen as if the plan had run.
    new_current = p.activate or current
    new_history = history + p.events
    new_on_disk = on_disk | set(p.create)
    _kept, deleted, reasons = retention(new_on_disk, new_history, new_current, keep, creation_order(new_history))
    p.reasons = reasons
    for old in deleted:
        p.delete.append(old)
        p.events.append(_entry(old, "deleted", now))
    return p
