# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of the packages module (pure functions, unit-tested): which packages are missing, whether the package
lists are too old, and the policy-rc.d script that keeps the roles' services from starting during the install."""

from __future__ import annotations

import re
import shlex

# name[:arch][=version], as apt-get install takes it. No globs, no regular expressions, no release pins (/suite):
# each of those installs something this module could not check afterwards.
SPEC = re.compile(r"\A([a-z0-9][a-z0-9+.-]*)(?::([a-z0-9-]+))?(?:=([A-Za-z0-9.+~:-]+))?\Z")
# A systemd service name as policy-rc.d receives it, optionally ending in '*' (postgresql@*).
DEFER = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9:_.@-]{0,200}\*?\Z")
POLICY_PATH = "/usr/sbin/policy-rc.d"
# Where the script notes each action it denied ("<service> <action>" per line), one file per run (its token).
DENIED_LOG = "/run/selfhosted-packages.{token}.denied"
MARKER = "# selfhosted.stack packages: deferred service starts"
ENV = "SELFHOSTED_DEFER_START"
# dpkg-query's fields, tab-separated, one line per known package (and architecture).
QUERY_FORMAT = "${Package}\\t${Architecture}\\t${Version}\\t${db:Status-Abbrev}\\n"


def parse(spec):
    """(name, arch or None, version or None) of one entry, or ValueError."""
    match = SPEC.match(spec) if isinstance(spec, str) else None
    if not match:
        raise ValueError(
            f"names entry {spec!r} is not a package: use name, name:arch or name=version "
            "(lowercase letters, digits, '+', '-', '.'; no globs, no /release)"
        )
    return match.group(1), match.group(2), match.group(3)


def problems(names, defer_start, cache_valid_time):
    found = []
    for spec in names:
        try:
            parse(spec)
        except ValueError as exc:
            found.append(str(exc))
    for unit in defer_start:
        if not isinstance(unit, str) or not DEFER.match(unit):
            found.append(
                f"defer_start entry {unit!r} is not a service name (letters, digits, ':', '_', '.', '@', '-', "
                "optionally ending in '*')"
            )
    if not isinstance(cache_valid_time, int) or cache_valid_time < 0:
        found.append(f"cache_valid_time must be a number of seconds (0 or more), got {cache_valid_time!r}")
    return found


def parse_status(text):
    """{(name, arch): (version, status)} from dpkg-query -W -f QUERY_FORMAT."""
    status = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 4:
            continue
        name, arch, version, abbrev = parts
        status[(name, arch)] = (version, abbrev)
    return status


def installed(abbrev):
    """dpkg's status abbreviation says installed and configured, without an error: ii, or hi (held with apt-mark
    hold, which an operator sets on postgresql or redis)."""
    return len(abbrev) >= 2 and abbrev[0] in "ih" and abbrev[1] == "i" and abbrev[2:].strip() == ""


def satisfied(spec, status):
    """Whether the entry is installed, at its version when it names one (an Architecture: all package satisfies
    name:arch)."""
    name, arch, version = parse(spec)
    for (pkg, pkg_arch), (pkg_version, abbrev) in status.items():
        if pkg != name or (arch and pkg_arch not in (arch, "all")):
            continue
        if installed(abbrev) and (version is None or pkg_version == version):
            return True
    return False


def missing(names, status):
    return [spec for spec in dict.fromkeys(names) if not satisfied(spec, status)]


def cache_stale(mtime, now, valid_time):
    """Package lists older than valid_time, missing (mtime None), or dated in the future (a clock that was wrong
    when they were fetched) are fetched again before an install."""
    if mtime is None or valid_time == 0:
        return True
    age = now - mtime
    return age < 0 or age > valid_time


def policy_script(units, token, log):
    """/usr/sbin/policy-rc.d for one apt-get run: the listed services do not start while a caller holding the
    token installs; every other caller, service and action is allowed (exit 0), so a copy left behind by a killed
    run blocks nothing. Each denied action is noted in the file `log`, so a service that was running (an upgrade
    pulled in as a dependency wanted to restart it) is restarted after the install."""
    patterns = "|".join(dict.fromkeys(strip_service(u) for u in units))
    return (
        "#!/bin/sh\n"
        f"{MARKER} (token {token}).\n"
        "# Written for one apt-get run of selfhosted.stack and removed after it: while that run installs\n"
        "# packages, the services below are not started by the packages' scripts (their roles start them once\n"
        "# their settings are in place). Any other caller, service or action is allowed.\n"
        f'[ "${{{ENV}:-}}" = "{token}" ] || exit 0\n'
        "# invoke-rc.d passes its options first (--quiet); --list asks for the policy, nothing to deny.\n"
        'while [ $# -gt 0 ]; do case "$1" in --list) exit 0 ;; --*) shift ;; *) break ;; esac; done\n'
        "# A status changes nothing: allowed. Any other action (start, stop, restart, a list of them) is not.\n"
        'case "$2" in status|"(status)") exit 0 ;; esac\n'
        'case "${1%.service}" in\n'
        f'  {patterns}) printf \'%s %s\\n\' "$1" "$2" >> {shlex.quote(log)}; exit 101 ;;\n'
        "esac\n"
        "exit 0\n"
    )


def strip_service(name):
    return name[: -len(".service")] if name.endswith(".service") else name


def denied_services(text):
    """The services the script denied an action to (names without .service, in order, once each)."""
    names = []
    for line in (text or "").splitlines():
        name = strip_service(line.split(" ", 1)[0])
        if name and DEFER.match(name) and name not in names:
            names.append(name)
    return names


def is_ours(text):
    return isinstance(text, str) and text.startswith("#!/bin/sh\n" + MARKER)
