#!/usr/bin/python
# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: packages
version_added: 0.1.0
short_description: Debian packages installed in one apt-get run, their services started later by their roles
description:
  - Installs the entries of O(names) that dpkg does not have (or not at the version named) in one C(apt-get install)
    run. When every entry is installed it only asks dpkg (no package lists read, no network), so a converged host
    answers in a fraction of the time C(ansible.builtin.apt) takes.
  - The package lists are fetched (C(apt-get update)) only when something is to be installed and they are older
    than O(cache_valid_time), missing, or dated in the future. An install that fails on lists this run did not
    fetch is tried once more after fetching them (a mirror that replaced a version).
  - While it installs, the services in O(defer_start) are not started by the packages' scripts (a C(policy-rc.d)
    that applies to this run only, removed afterwards). Their roles write the settings, then start them once,
    instead of a start with the package's defaults and a restart. A deferred service that was already running (an
    upgrade pulled in as a dependency wanted to restart it) is restarted after the install, as its package would
    have. An existing C(policy-rc.d) that is not this module's is left alone and nothing is deferred (a warning
    says so).
  - Configuration files already on the host are kept (C(--force-confold)); recommended packages are not installed
    unless O(install_recommends). The dpkg lock is waited for up to O(lock_timeout) seconds, and so is another run
    of this module that defers starts (one C(policy-rc.d) at a time).
  - Every entry is checked before anything changes; a bad one fails naming it and the allowed forms.
author:
  - selfhosted.stack maintainers (@selfhosted-stack)
options:
  names:
    description:
      - Packages as V(name), V(name:arch) or V(name=version). An empty list changes nothing.
      - A version is dpkg's whole version, epoch included (V(redis-server=5:7.0.15-1~deb12u1)). A version older than
        the installed one fails (no downgrades). A package held with C(apt-mark hold) counts as installed.
    type: list
    elements: str
    required: true
  defer_start:
    description:
      - Services (names as C(invoke-rc.d) and C(deb-systemd-invoke) pass them, without C(.service); a trailing
        V(*) matches instances) that the packages' scripts must not start or restart during this install.
    type: list
    elements: str
    default: []
  cache_valid_time:
    description: Seconds the package lists stay fresh enough to install from; V(0) fetches them before every install.
    type: int
    default: 3600
  install_recommends:
    description: Install recommended packages too.
    type: bool
    default: false
  lock_timeout:
    description: Seconds to wait for another apt or dpkg run to release its lock.
    type: int
    default: 120
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details: Reports the entries that would be installed; nothing is fetched.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
notes:
  - A virtual package (one only provided by others) is refused after the install, naming it. List the package that
    provides it, so the next run can tell it is installed.
"""

EXAMPLES = r"""
- name: Install PostgreSQL without starting it before its settings are written
  selfhosted.stack.packages:
    names: [postgresql-15, postgresql-client-15, python3-psycopg2]
    defer_start: [postgresql, "postgresql@*"]
"""

RETURN = r"""
installed:
  description: The entries that were missing and are installed now (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [redis-server, redis-tools]
deferred:
  description: The services whose start was deferred during the install (empty when nothing was installed).
  returned: always
  type: list
  elements: str
restarted:
  description:
    - Deferred services that were running and that the install wanted to restart (a dependency upgraded them),
      restarted after it as their packages would have.
  returned: always
  type: list
  elements: str
cache_updated:
  description: Whether the package lists were fetched.
  returned: always
  type: bool
"""

import contextlib
import fcntl
import os
import secrets
import stat
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.stack.plugins.module_utils import _packages, _services

LISTS = "/var/lib/apt/lists"
STAMP = "/var/lib/apt/periodic/update-success-stamp"
LOCK = "/run/selfhosted-packages.lock"


def query(module, names):
    dpkg_query = module.get_bin_path("dpkg-query", required=True)
    pkgs = sorted({_packages.parse(spec)[0] for spec in names})
    rc, out, err = module.run_command([dpkg_query, "-W", "-f", _packages.QUERY_FORMAT, "--", *pkgs])
    # 1: some name is not known to dpkg (not installed, never was); the others are still listed.
    if rc not in (0, 1):
        module.fail_json(msg=f"packages: dpkg-query failed (rc {rc}): {err.strip()}; nothing was changed")
    return _packages.parse_status(out)


def lists_mtime():
    for path in (STAMP, LISTS):
        with contextlib.suppress(OSError):
            return os.stat(path).st_mtime
    return None


def read_policy():
    """(kind, text): ('absent', None), ('ours', text) or ('foreign', text or None)."""
    try:
        fd = os.open(_packages.POLICY_PATH, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return "absent", None
    except OSError:
        return "foreign", None  # a link, or unreadable: not ours to touch
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return "foreign", None  # a directory, a fifo: not ours either
    with os.fdopen(fd, "rb") as fh:
        text = fh.read(65536).decode("utf-8", "replace")
    return ("ours" if _packages.is_ours(text) else "foreign"), text


def write_policy(units, token, log, replace):
    """Our policy-rc.d, written next to the path and then linked into place when the path is absent (fails if one
    appeared meanwhile) or renamed over our own left-over copy; and the empty file it notes denied actions in
    (created here, root's, 0600: never one found in place)."""
    directory, name = os.path.split(_packages.POLICY_PATH)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(_packages.policy_script(units, token, log))
            fh.flush()
            os.fchmod(fh.fileno(), 0o755)
            os.fsync(fh.fileno())
        os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        if replace:
            os.rename(tmp, _packages.POLICY_PATH)
        else:
            os.link(tmp, _packages.POLICY_PATH)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def remove_policy(token, log):
    """Our policy-rc.d removed (only if it is still this run's); the services it denied an action to."""
    kind, text = read_policy()
    if kind == "ours" and f"(token {token})" in text:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_packages.POLICY_PATH)
    denied = ""
    with contextlib.suppress(OSError):
        fd = os.open(log, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as fh:
            denied = fh.read(65536)
        os.unlink(log)
    return _packages.denied_services(denied)


def restart_running(module, names):
    """Restart the denied services that are running: an install that upgraded one (a dependency) wanted to stop
    and start it, and that was denied. Those not running (new) stay for their roles to start. Returns (restarted,
    error)."""
    systemctl = module.get_bin_path("systemctl") if names else None
    if not systemctl:
        return [], None
    _rc, out, _err = module.run_command([systemctl, "is-active", "--", *names])
    running = [n for n, state in zip(names, out.split()) if state in _services.RUNNING_STATES]
    if not running:
        return [], None
    rc, out, err = module.run_command([systemctl, "restart", "--", *running])
    if rc != 0:
        return [], (
            f"restarting {' '.join(running)} (upgraded while running, their packages' restart was deferred) failed: "
            f"{(err or out).strip()[-1500:]}"
        )
    return running, None


def lock(module):
    """One install with deferred starts at a time on the host: a second run waits here instead of taking over the
    first one's policy-rc.d (apt's own lock would serialise the installs, not the policy)."""
    fd = os.open(LOCK, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    deadline = time.monotonic() + module.params["lock_timeout"]
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                module.fail_json(msg=f"packages: another run holds {LOCK} (lock_timeout passed); nothing was installed")
            time.sleep(0.5)


def apt_get(module, args, env):
    apt = module.get_bin_path("apt-get", required=True)
    rc, out, err = module.run_command(
        [apt, "-q", "-o", f"DPkg::Lock::Timeout={module.params['lock_timeout']}", *args],
        environ_update=env,
    )
    return rc, out, err


def update(module, env):
    rc, out, err = apt_get(module, ["update", "--error-on=any"], env)
    if rc != 0:
        return f"apt-get update failed (rc {rc}): {(err or out).strip()[-2000:]}"
    return None


def run(module):
    p = module.params
    names = p["names"]
    found = _packages.problems(names, p["defer_start"], p["cache_valid_time"])
    if found:
        module.fail_json(msg="packages: " + "; ".join(found) + "; nothing was changed")
    result = {"changed": False, "installed": [], "deferred": [], "restarted": [], "cache_updated": False}
    if not names:
        module.exit_json(**result)
    todo = _packages.missing(names, query(module, names))
    if not todo:
        module.exit_json(**result)
    result.update(changed=True, installed=todo)
    if module._diff:
        result["diff"] = {"before": "", "after": "".join(f"{spec}\n" for spec in todo), "after_header": "installed"}
    if module.check_mode:
        module.exit_json(**result)

    env = {"DEBIAN_FRONTEND": "noninteractive", "APT_LISTCHANGES_FRONTEND": "none", "NEEDRESTART_MODE": "l"}
    token = secrets.token_hex(8)
    log = _packages.DENIED_LOG.format(token=token)
    held = lock(module) if p["defer_start"] else None
    denied = []
    try:
        if p["defer_start"]:
            kind = read_policy()[0]
            if kind == "foreign":
                module.warn(
                    f"packages: {_packages.POLICY_PATH} exists and is not this module's: it decides which services "
                    f"the packages start; nothing was deferred ({', '.join(p['defer_start'])} may start with the "
                    "package's defaults until their roles restart them)"
                )
            else:
                try:
                    write_policy(p["defer_start"], token, log, replace=kind == "ours")
                except OSError as exc:
                    module.fail_json(
                        msg=f"packages: could not put {_packages.POLICY_PATH} in place: {exc}; nothing was installed"
                    )
                env[_packages.ENV] = token
                result["deferred"] = list(p["defer_start"])
        error = install(module, todo, env, result)
    finally:
        if result["deferred"]:
            denied = remove_policy(token, log)
        if held is not None:
            os.close(held)
    # Also after a failed install: a running service that it upgraded is restarted, as its package would have.
    result["restarted"], restart_error = restart_running(module, denied)
    errors = [e for e in (error, restart_error) if e]
    if errors:
        module.fail_json(msg="packages: " + "; ".join(errors), **result)
    left = _packages.missing(todo, query(module, todo))
    if left:
        module.fail_json(
            msg=f"packages: apt-get installed, but dpkg has no package {', '.join(left)} installed as named: a virtual "
            "package (list the package that provides it) or a version apt-get did not pick",
            **result,
        )
    module.exit_json(**result)


def install(module, todo, env, result):
    """apt-get install (the lists fetched first when stale, and once more after a failure on lists not fetched in
    this run). The error, or None."""
    p = module.params
    args = [
        "install",
        "-y",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        "--install-recommends" if p["install_recommends"] else "--no-install-recommends",
        "--",
        *todo,
    ]
    if _packages.cache_stale(lists_mtime(), time.time(), p["cache_valid_time"]):
        error = update(module, env)
        if error:
            return error
        result["cache_updated"] = True
    rc, out, err = apt_get(module, args, env)
    if rc != 0 and not result["cache_updated"]:
        error = update(module, env)
        if error:
            return error
        result["cache_updated"] = True
        rc, out, err = apt_get(module, args, env)
    if rc != 0:
        return f"apt-get install {' '.join(todo)} failed (rc {rc}): {(err or out).strip()[-3000:]}"
    return None


def main():
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "defer_start": {"type": "list", "elements": "str", "default": []},
            "cache_valid_time": {"type": "int", "default": 3600},
            "install_recommends": {"type": "bool", "default": False},
            "lock_timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    run(module)


if __name__ == "__main__":
    main()
