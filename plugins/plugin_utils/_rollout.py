# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decisions of the rollout playbooks: batches of hosts, the order of a rollback, the fleet's state."""

from __future__ import annotations

import math
import re


class RolloutError(ValueError):
    """Bad input; the message names the variable and what is allowed."""


def batch_sizes(spec, total, variable="rollout_batches"):
    """Sizes of the batches for `total` hosts, like Ansible's serial: each entry a number of hosts or a
    percentage of all of them (rounded down, at least 1); the last entry repeats until every host is covered."""
    if isinstance(spec, (int, str)) and not isinstance(spec, bool):
        spec = [spec]
    if not isinstance(spec, (list, tuple)) or not spec:
        raise RolloutError(f"{variable} must be a list of batch sizes, e.g. [1, '25%', '100%']; got {spec!r}")
    sizes = []
    for entry in spec:
        text = str(entry).strip()
        m = re.fullmatch(r"(\d+)(%?)", text)
        if isinstance(entry, bool) or not m or int(m.group(1)) == 0 or (m.group(2) and int(m.group(1)) > 100):
            raise RolloutError(
                f"{variable} entries must be a number of hosts (1 or more) or a percentage ('1%' to '100%'); "
                f"got {entry!r}"
            )
        n = int(m.group(1))
        sizes.append(max(1, total * n // 100) if m.group(2) else n)
    out = []
    left = total
    i = 0
    while left > 0:
        size = min(sizes[min(i, len(sizes) - 1)], left)
        out.append(size)
        left -= size
        i += 1
    return out


def batches(hosts, spec, variable="rollout_batches"):
    """Split hosts (in order) into batches; see batch_sizes."""
    hosts = list(hosts)
    out, start = [], 0
    for size in batch_sizes(spec, len(hosts), variable):
        out.append(hosts[start : start + size])
        start += size
    return out


def back_batches(forward, switched):
    """The order to put switched hosts back: the newest batch first (it is out of rotation already when its gate
    failed), then the earlier ones; hosts that were never switched are left alone."""
    out = []
    for batch in reversed(forward):
        kept = [h for h in batch if h in switched]
        if kept:
            out.append(kept)
    return out


def zero_downtime_problems(forward, upstreams, already_out=()):
    """Batches that would leave no upstream in rotation while they are drained (a batch of every web host)."""
    problems = []
    upstreams = set(upstreams)
    for i, batch in enumerate(forward):
        if upstreams and not upstreams - set(batch) - set(already_out):
            problems.append(f"batch {i + 1} ({', '.join(batch)}) would take every web host out of rotation")
    return problems


def traffic_steps_problems(steps, variable="rollout_traffic_steps"):
    """Why a list of canary traffic shares (percent) is unusable; [] when it is fine."""
    if not isinstance(steps, (list, tuple)):
        return [f"{variable} must be a list of percentages, e.g. [10, 50, 100]"]
    problems = []
    values = []
    for step in steps:
        text = str(step).strip().rstrip("%")
        if not re.match(r"^[0-9]+$", text) or not 1 <= int(text) <= 100:
            problems.append(f"{variable}: {step!r} is not a whole percentage from 1 to 100")
        else:
            values.append(int(text))
    if not problems and values != sorted(set(values)):
        problems.append(f"{variable} must rise step by step without repeats (got {list(steps)})")
    return problems


def canary_weights(canary, others, percent, instances=None):
    """nginx upstream weights that send `percent` of the requests to the hosts of `canary` and the rest to
    `others`: {host: weight}, the smallest whole numbers. Every upstream server (instance) of a host gets the host's
    weight, so `instances` ({host: number of instances}, 1 when not named) counts: each instance on the same side
    gets the same share. At 100 the others are not in the map (they are taken out of rotation instead); a host in
    both lists counts as canary."""
    percent = int(str(percent).rstrip("%"))
    if not 1 <= percent <= 100:
        raise RolloutError(f"a canary share must be a percentage from 1 to 100 (got {percent})")
    canary = list(dict.fromkeys(canary))
    others = [h for h in dict.fromkeys(others) if h not in canary]
    if not canary:
        raise RolloutError("a canary needs at least one host")
    given = {h: (instances or {}).get(h, 1) for h in canary + others}
    bad = {h: n for h, n in given.items() if isinstance(n, bool) or not str(n).isdigit() or int(n) < 1}
    if bad:
        raise RolloutError(f"instances per host must be whole numbers of 1 or more (got {bad})")
    counts = {h: int(n) for h, n in given.items()}
    if percent == 100 or not others:
        return {h: 1 for h in canary}
    # With k canary and m other instances: share = k*w_new / (k*w_new + m*w_old) = percent/100
    # for w_new = percent*m, w_old = (100-percent)*k.
    k, m = sum(counts[h] for h in canary), sum(counts[h] for h in others)
    w_new, w_old = percent * m, (100 - percent) * k
    g = math.gcd(w_new, w_old)
    weights = {h: w_new // g for h in canary}
    weights.update({h: w_old // g for h in others})
    return weights


def fleet_state(hosts):
    """{host: release} -> (sorted distinct releases, {release: [hosts]})."""
    by_release = {}
    for host, release in sorted(hosts.items()):
        by_release.setdefault(release or "none", []).append(host)
    return sorted(by_release), by_release
