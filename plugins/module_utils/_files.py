# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of the files module, as pure functions: which inputs are refused, and what a path needs to match.

A host's observed state of one path is a dict (or None when nothing is there):
    {"type": "file"|"directory"|"link"|"other", "sha1": str (files), "target": str (links),
     "uid": int, "gid": int, "mode": int (permission bits)}
"""

from __future__ import annotations

import hashlib
import posixpath
import re

STATES = ("file", "directory", "link", "absent")
_MODE = re.compile(r"^0?[0-7]{3,4}$")
# Validation commands get the candidate's path for %s, like the validate option of ansible.builtin.copy.
_PLACEHOLDER = "%s"


def sha1(data):
    """SHA-1 of bytes, or of a str as UTF-8 (how the module writes it)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def parse_mode(mode):
    """'0644' or '644' -> 0o644; None stays None."""
    if mode is None:
        return None
    return int(str(mode), 8)


def problems(files):
    """Every refused input of the files option, as messages naming the entry and the allowed values; [] if none."""
    if not isinstance(files, list):
        return [
            "files: a list of entries (path, state, content, src, owner, group, mode, validate); [] changes nothing"
        ]
    found, seen = [], set()
    for index, entry in enumerate(files):
        where = f"files[{index}]"
        if not isinstance(entry, dict):
            found.append(f"{where}: an entry is a dict with at least a path")
            continue
        path = entry.get("path")
        if not isinstance(path, str) or not path.startswith("/") or path.rstrip("/") == "":
            found.append(f"{where}.path: an absolute path other than / (got {path!r})")
            continue
        where = f"files[{index}] ({path})"
        if any(c in path for c in "\n\r\0"):
            found.append(f"{where}: path must not hold a newline, carriage return or NUL")
        if posixpath.normpath(path) != path:
            found.append(f"{where}: path must be normalised (no '.', '..', '//' or trailing '/')")
        if path in seen:
            found.append(f"{where}: path given twice")
        seen.add(path)
        state = entry.get("state", "file")
        if state not in STATES:
            found.append(f"{where}.state: one of {', '.join(STATES)} (got {state!r})")
            continue
        if state == "file" and not isinstance(entry.get("content"), str):
            found.append(f"{where}.content: a string is required with state file")
        if state != "file" and entry.get("content") is not None:
            found.append(f"{where}.content: only with state file")
        if state == "link" and not (isinstance(entry.get("src"), str) and entry["src"]):
            found.append(f"{where}.src: the link's target is required with state link")
        if state != "link" and entry.get("src") is not None:
            found.append(f"{where}.src: only with state link")
        validate = entry.get("validate")
        if validate is not None:
            if state != "file":
                found.append(f"{where}.validate: only with state file")
            elif not isinstance(validate, str) or _PLACEHOLDER not in validate:
                found.append(f"{where}.validate: a command with %s for the candidate file (got {validate!r})")
        mode = entry.get("mode")
        if mode is not None:
            if state in ("link", "absent"):
                found.append(f"{where}.mode: only with state file or directory")
            elif not isinstance(mode, str) or not _MODE.match(mode):
                found.append(f"{where}.mode: an octal string such as '0644' (got {mode!r}; quote it in YAML)")
        for key in ("owner", "group"):
            value = entry.get(key)
            if value is not None and (state in ("link", "absent") or not isinstance(value, (str, int)) or value == ""):
                found.append(f"{where}.{key}: a user or group name or id, only with state file or directory")
        unknown = set(entry) - {"path", "state", "content", "src", "owner", "group", "mode", "validate", "secret"}
        if unknown:
            found.append(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    return found


def plan(entry, observed, uid=None, gid=None):
    """What the path needs to match the entry: (actions, refusal). actions is a list of
    'write', 'mkdir', 'link', 'remove', 'chown', 'chmod' ('write' and 'mkdir' set owner, group and mode as they
    create); refusal is a message when the path holds something this
    module must not replace (a directory where a file or a link goes, anything but a file or a link where nothing
    should be, a device or socket), else None. uid and gid are the owner and group resolved to ids (None: keep)."""
    state = entry.get("state", "file")
    mode = parse_mode(entry.get("mode"))
    kind = observed["type"] if observed else None
    if state == "absent":
        if kind is None:
            return [], None
        if kind in ("file", "link"):
            return ["remove"], None
        return [], f"{entry['path']} is a {kind}, not a file or a link: not removed"
    if kind in ("directory", "other") and state != "directory":
        return [], f"{entry['path']} is a {kind}: not replaced by a {state}"
    if state == "link":
        if kind == "link" and observed.get("target") == entry["src"]:
            return [], None
        return ["link"], None
    if state == "directory":
        if kind == "directory":
            actions = []
        elif kind is None:
            actions = ["mkdir"]
        else:
            return [], f"{entry['path']} is a {kind}: not replaced by a directory"
    else:
        # A link where a file goes is replaced by the file (renamed over it): never written through.
        if kind == "file" and observed.get("sha1") == sha1(entry["content"]):
            actions = []
        else:
            return ["write"], None
    if (uid is not None and observed and observed.get("uid") != uid) or (
        gid is not None and observed and observed.get("gid") != gid
    ):
        actions.append("chown")
    if mode is not None and observed and observed.get("mode") != mode:
        actions.append("chmod")
    return actions, None
