#!/usr/bin/python
# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: files
version_added: 0.1.0
short_description: Several files, directories and links on a host in one task
description:
  - Makes each entry of O(files) match (a file with the given content, a directory, a symbolic link, or nothing),
    with owner, group and mode, in one module run. One run instead of one C(template), C(copy) or C(file) task
    per path (each of those is two round trips to the host when nothing changes); the roles render the content
    with C(lookup('template', ...)).
  - Every entry is checked before anything changes; a bad entry fails the task naming the entry, the option and
    the allowed values, and no path is touched.
  - A file is written to a temporary file in its directory, checked with the entry's C(validate) command, then
    renamed over the path (atomic). A symbolic link found where a file goes is replaced by the file, never written
    through. A directory, device or socket where a file, link or nothing should be is refused, never removed.
  - Entries are applied in order (a directory before the files in it); the first failure stops the run, and the
    result says what had changed by then. An empty list changes nothing.
  - Every step works through descriptors opened from C(/) down without following symbolic links that root does not
    own. A link in a parent directory that a less privileged user could plant (in a C(conf.d) owned by a service
    user, say) is refused, and a path swapped for a link while the task runs is not followed.
  - A rewritten file keeps its owner, group and mode unless the entry sets them; a new one is root's, mode 0600.
    A link whose target does not exist is refused.
author:
  - selfhosted.stack maintainers (@selfhosted-stack)
options:
  files:
    description: The paths to manage, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute, normalised path (not V(/)).
        type: path
        required: true
      state:
        description: V(file), V(directory), V(link) (to O(files[].src)) or V(absent) (a file or a link removed).
        type: str
        choices: [file, directory, link, absent]
        default: file
      content:
        description: The file's whole content (state V(file)).
        type: str
      src:
        description: Target of the symbolic link (state V(link)).
        type: str
      owner:
        description: Owner (name or id) of a file or directory; unset keeps it (root for new paths).
        type: str
      group:
        description: Group (name or id) of a file or directory; unset keeps it.
        type: str
      mode:
        description:
          - Permission bits as an octal string, for example V('0640'); unset keeps them (new files 0600,
            new directories 0755). An unquoted number is refused (YAML reads 0644 as 420).
        type: raw
      validate:
        description:
          - Command that checks the candidate file before it replaces the path; V(%s) is the candidate's path.
            A non-zero exit refuses the file and the task fails with the command's output.
        type: str
      secret:
        description:
          - The content is never shown in C(--diff) (only that it changed).
          - It does not hide the content from the task's arguments (shown with C(-vvv), in the host's log and in
            AWX job events). A task that writes secrets needs C(no_log) too.
        type: bool
        default: false
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details: Reports what would change; validate commands do not run.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
    details: One diff per changed path; the content of secret entries is withheld.
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
"""

EXAMPLES = r"""
- name: Write the PostgreSQL settings and client authentication rules
  selfhosted.stack.files:
    files:
      - path: /etc/postgresql/15/main/conf.d/50-selfhosted.conf
        content: "{{ lookup('template', 'postgresql.conf.j2') }}"
        owner: postgres
        group: postgres
        mode: "0644"
      - path: /etc/postgresql/15/main/pg_hba.conf
        content: "{{ lookup('template', 'pg_hba.conf.j2') }}"
        owner: postgres
        group: postgres
        mode: "0640"
  register: settings
  notify: Reload postgresql

- name: A directory, a file in it with a check, a link, and a file removed
  no_log: true  # main.conf holds a secret: secret only keeps it out of --diff
  selfhosted.stack.files:
    files:
      - {path: /etc/example.d, state: directory, mode: "0755"}
      - path: /etc/example.d/main.conf
        content: "listen 127.0.0.1\n"
        validate: example-daemon --check-config %s
        secret: true
      - {path: /etc/localtime, state: link, src: /usr/share/zoneinfo/Europe/Berlin}
      - {path: /etc/example.d/old.conf, state: absent}
"""

RETURN = r"""
changed_paths:
  description: The paths that changed (or would, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [/etc/postgresql/15/main/pg_hba.conf]
results:
  description: Per entry, its path, state and what was done (write, mkdir, link, remove, chown, chmod).
  returned: always
  type: list
  elements: dict
  sample: [{path: /etc/example.d, state: directory, changed: false, actions: []}]
"""

import contextlib
import errno
import grp
import os
import pwd
import shlex
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.stack.plugins.module_utils import _files


def observe(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    found = {"uid": st.st_uid, "gid": st.st_gid, "mode": stat.S_IMODE(st.st_mode)}
    if stat.S_ISLNK(st.st_mode):
        found.update(type="link", target=os.readlink(path))
    elif stat.S_ISDIR(st.st_mode):
        found["type"] = "directory"
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as fh:
            data = fh.read()
        found.update(type="file", sha1=_files.sha1(data), text=data)
    else:
        found["type"] = "other"
    return found


def resolve(module, name, kind):
    if name is None:
        return None
    name = str(name)
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid if kind == "owner" else grp.getgrnam(name).gr_gid
    except KeyError:
        module.fail_json(msg=f"files: {kind} {name!r} does not exist on the host; nothing was changed")


def open_parent(path):
    """A descriptor of the path's directory, opened one component at a time without following a symbolic link
    that is not root's (O_NOFOLLOW): a link planted in a parent by a less privileged user (conf.d ->
    /etc/modprobe.d) is refused, while the system's own (/lib -> usr/lib, /var/run -> /run) are followed. Every
    later step works relative to this descriptor, so swapping a parent afterwards changes nothing."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in [p for p in os.path.dirname(path).split("/") if p]:
            try:
                flags = os.O_RDONLY | os.O_DIRECTORY
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    if not (stat.S_ISLNK(st.st_mode) and st.st_uid == 0):
                        flags |= os.O_NOFOLLOW
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"{os.path.dirname(path)} is not a directory reached without symbolic links "
                    f"({part}: {exc.strerror}); create it with an earlier entry",
                ) from None
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def keep_or(value, observed, key):
    """The option's value, or (unset) what the path has now, so a rewrite keeps its owner, group and mode."""
    if value is not None:
        return value
    return observed.get(key) if observed and observed.get("type") in ("file", "directory") else None


def write(module, entry, parent, uid, gid, mode):
    path = entry["path"]
    name = os.path.basename(path)
    tmp_name = f".{name}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(entry["content"].encode("utf-8", "surrogateescape"))
            fh.flush()
            os.fchmod(fh.fileno(), 0o600 if mode is None else mode)
            os.fchown(fh.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            os.fsync(fh.fileno())
        if entry.get("validate"):
            candidate = os.path.join(os.path.dirname(path), tmp_name)
            rc, out, err = module.run_command(entry["validate"].replace("%s", shlex.quote(candidate)))
            if rc != 0:
                raise OSError(f"validate refused the new content (rc {rc}): {(out + err).strip()[-2000:]}")
        os.rename(tmp_name, name, src_dir_fd=parent, dst_dir_fd=parent)
        os.fsync(parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name, dir_fd=parent)
        raise


def fix_attributes(entry, parent, kind, uid, gid, mode):
    """chown/chmod through a descriptor opened without following a link, after checking it is still the kind
    planned: a file swapped for a symbolic link since it was looked at is not followed."""
    name = os.path.basename(entry["path"])
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_DIRECTORY if kind == "directory" else 0)
    try:
        fd = os.open(name, flags, dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(
                f"{entry['path']} changed while this task ran: it is a symbolic link now; not followed"
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if (kind == "directory") != stat.S_ISDIR(st.st_mode) or not (
            stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
        ):
            raise OSError(f"{entry['path']} changed while this task ran: not a {kind} any more; nothing more done")
        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        if mode is not None:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def apply(module, entry, observed, actions, uid, gid, mode):
    path = entry["path"]
    name = os.path.basename(path)
    parent = open_parent(path)
    try:
        if "write" in actions:
            write(
                module,
                entry,
                parent,
                keep_or(uid, observed, "uid"),
                keep_or(gid, observed, "gid"),
                keep_or(mode, observed, "mode"),
            )
        if "mkdir" in actions:
            os.mkdir(name, 0o700, dir_fd=parent)
            fix_attributes(entry, parent, "directory", uid, gid, 0o755 if mode is None else mode)
        if "link" in actions:
            tmp_name = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.link"
            os.symlink(entry["src"], tmp_name, dir_fd=parent)
            os.rename(tmp_name, name, src_dir_fd=parent, dst_dir_fd=parent)
        if "remove" in actions:
            os.unlink(name, dir_fd=parent)
        if "chown" in actions or "chmod" in actions:
            fix_attributes(entry, parent, observed["type"], uid, gid, mode if "chmod" in actions else None)
    finally:
        os.close(parent)


def diff_of(entry, observed, actions):
    header = entry["path"]
    before, after = "", ""
    if entry.get("state", "file") == "file" and "write" in actions:
        if entry.get("secret"):
            before, after = "(content withheld: secret)\n", "(new content withheld: secret)\n"
        else:
            old = observed.get("text", b"") if observed else b""
            before, after = old.decode("utf-8", "replace"), entry["content"]
    else:
        before = f"{observed['type'] if observed else 'absent'}\n"
        after = f"{entry.get('state', 'file')} ({', '.join(actions)})\n"
    return {"before_header": header, "after_header": header, "before": before, "after": after}


def run(module):
    """Check every entry, plan each path, then apply the plans in order (none in check mode)."""
    entries = module.params["files"]
    problems = _files.problems(entries)
    if problems:
        module.fail_json(msg="files: " + "; ".join(problems) + "; nothing was changed")
    # Every decision first: nothing changes when any entry is refused.
    planned = []
    for entry in entries:
        uid = resolve(module, entry.get("owner"), "owner")
        gid = resolve(module, entry.get("group"), "group")
        observed = observe(entry["path"])
        actions, refusal = _files.plan(entry, observed, uid, gid)
        if "link" in actions and not os.path.exists(os.path.join(os.path.dirname(entry["path"]), entry["src"])):
            refusal = f"{entry['path']}: the link's target {entry['src']} does not exist"
        if refusal:
            module.fail_json(msg=f"files: {refusal}; nothing was changed")
        planned.append((entry, observed, actions, uid, gid))
    results, changed_paths, diffs = [], [], []
    for entry, observed, actions, uid, gid in planned:
        results.append(
            {"path": entry["path"], "state": entry.get("state", "file"), "changed": bool(actions), "actions": actions}
        )
        if not actions:
            continue
        changed_paths.append(entry["path"])
        if module._diff:
            diffs.append(diff_of(entry, observed, actions))
        if module.check_mode:
            continue
        try:
            apply(module, entry, observed, actions, uid, gid, _files.parse_mode(entry.get("mode")))
        except Exception as exc:
            module.fail_json(
                msg=f"files: {entry['path']}: {exc}",
                changed=len(changed_paths) > 1,
                changed_paths=changed_paths[:-1],
                results=results[:-1],
            )
    result = {"changed": bool(changed_paths), "changed_paths": changed_paths, "results": results}
    if module._diff:
        result["diff"] = diffs
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "path": {"type": "path", "required": True},
                    "state": {"type": "str", "choices": list(_files.STATES), "default": "file"},
                    "content": {"type": "str"},
                    "src": {"type": "str"},
                    "owner": {"type": "str"},
                    "group": {"type": "str"},
                    # raw, not str: an unquoted 0644 in YAML is the integer 420: refused, not read as 0o420.
                    "mode": {"type": "raw"},
                    "validate": {"type": "str"},
                    "secret": {"type": "bool", "default": False, "no_log": False},
                },
            }
        },
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
