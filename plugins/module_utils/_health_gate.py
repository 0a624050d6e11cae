# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decisions of the health_gate module: is one response healthy, when is a target healthy or unhealthy,
does a Prometheus result satisfy a bound.

Semantics follow a load balancer's target health:
- a check is one request; it passes when the status is expected and the body matches (regex, JSON values);
- the target is healthy after ``healthy_threshold`` consecutive passes, unhealthy after ``unhealthy_threshold``
  consecutive failures;
- during ``start_period`` (seconds from the first check) a connection that fails (nothing listening yet) does
  not count as a failure; an answer that fails the check does: the process is up and says it is not healthy;
- the gate fails when the overall ``deadline`` passes before a verdict.

Time, sleeping and the requests are passed in (``probe``, ``clock``, ``sleep``), so tests need no real waiting.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from dataclasses import dataclass, field

OPERATORS = {
    "<": lambda v, b: v < b,
    "<=": lambda v, b: v <= b,
    ">": lambda v, b: v > b,
    ">=": lambda v, b: v >= b,
    "==": lambda v, b: v == b,
    "!=": lambda v, b: v != b,
}
_MISSING = object()


class GateError(ValueError):
    """Bad input; the message names the option and what is allowed."""


@dataclass
class Check:
    """The outcome of one request. ``connected`` is False when no answer came (refused, reset, timeout)."""

    ok: bool
    connected: bool
    status: int | None
    detail: str
    elapsed: float = 0.0


@dataclass
class Verdict:
    passed: bool
    reason: str
    attempts: int
    elapsed: float
    last: Check | None
    history: list = field(default_factory=list)
    passes: int = 0
    failures: int = 0


def parse_status_codes(codes):
    """[200, "204", "300-399"] -> a frozenset of ints. Raises GateError naming status_code."""
    if not codes:
        raise GateError("status_code must list at least one HTTP status (e.g. [200] or ['200-299'])")
    allowed = set()
    for code in codes:
        text = str(code).strip()
        m = re.fullmatch(r"(\d{3})(?:\s*-\s*(\d{3}))?", text)
        if not m:
            raise GateError(f"status_code entries must be a status (200) or a range ('200-299'); got {code!r}")
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        if not (100 <= low <= high <= 599):
            raise GateError(f"status_code range {code!r} must lie within 100-599, low to high")
        allowed.update(range(low, high + 1))
    return frozenset(allowed)


def compile_regex(pattern, option="body_regex"):
    if pattern is None or pattern == "":
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise GateError(f"{option} is not a valid regular expression ({exc}): {pattern!r}") from exc


def json_lookup(doc, path):
    """Follow a dotted path ('checks.postgresql', 'items.0.id') into parsed JSON; _MISSING if absent."""
    node = doc
    for part in str(path).split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and re.fullmatch(r"-?\d+", part) and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _same(actual, expected):
    """JSON values compared as a user means them: 'true' matches true, '1' matches 1."""
    if actual == expected:
        return True
    if isinstance(actual, bool) or isinstance(expected, bool):
        return str(actual).lower() == str(expected).lower()
    if isinstance(actual, (int, float)) and isinstance(expected, str):
        try:
            return float(expected) == float(actual)
        except ValueError:
            return False
    return False


def evaluate_response(status, body, allowed_status, body_regex=None, json_match=None):
    """(ok, reason) for one answer. body is text (possibly truncated)."""
    if status not in allowed_status:
        return False, f"status {status} not in the expected codes"
    if body_regex is not None and not body_regex.search(body or ""):
        return False, f"body does not match /{body_regex.pattern}/"
    if json_match:
        try:
            doc = json.loads(body or "")
        except ValueError:
            return False, "body is not JSON but json_match is set"
        for path, expected in json_match.items():
            actual = json_lookup(doc, path)
            if actual is _MISSING:
                return False, f"JSON has no {path}"
            if not _same(actual, expected):
                return False, f"JSON {path} is {json.dumps(actual)}, expected {json.dumps(expected)}"
    return True, f"status {status}"


def validate_thresholds(interval, timeout, healthy_threshold, unhealthy_threshold, deadline, start_period):
    if healthy_threshold < 1:
        raise GateError(f"healthy_threshold must be 1 or more, got {healthy_threshold}")
    if unhealthy_threshold < 1:
        raise GateError(f"unhealthy_threshold must be 1 or more, got {unhealthy_threshold}")
    if interval <= 0:
        raise GateError(f"interval must be more than 0 seconds, got {interval}")
    if timeout <= 0:
        raise GateError(f"timeout must be more than 0 seconds, got {timeout}")
    if start_period < 0:
        raise GateError(f"start_period must be 0 or more seconds, got {start_period}")
    least = (healthy_threshold - 1) * interval
    if deadline < least:
        raise GateError(
            f"deadline ({deadline} s) is too short for healthy_threshold={healthy_threshold} checks every "
            f"{interval} s: it must be at least {least} s"
        )


class Tracker:
    """Consecutive passes and failures of one target, as a load balancer counts them."""

    def __init__(self, healthy_threshold, unhealthy_threshold, start_period=0.0, keep=10):
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.start_period = start_period
        self.passes = 0
        self.failures = 0
        self.attempts = 0
        self.total_failures = 0
        self.started = False  # the start period ends with the first answer that passes
        self.history = deque(maxlen=keep)

    def record(self, check, since_start):
        """Count one check; return 'healthy', 'unhealthy' or None (no verdict yet)."""
        self.attempts += 1
        self.history.append(
            {"attempt": self.attempts, "at": round(since_start, 3), "ok": check.ok, "detail": check.detail}
        )
        if check.ok:
            self.started = True
            self.passes += 1
            self.failures = 0
            return "healthy" if self.passes >= self.healthy_threshold else None
        self.passes = 0
        self.total_failures += 1
        in_start_period = not self.started and since_start < self.start_period
        if in_start_period and not check.connected:
            return None  # still starting: nothing listening yet
        self.failures += 1
        return "unhealthy" if self.failures >= self.unhealthy_threshold else None


def run_gate(probe, clock, sleep, interval, deadline, healthy_threshold, unhealthy_threshold, start_period=0.0):
    """Check until a verdict or the deadline. probe() -> Check. Returns a Verdict."""
    tracker = Tracker(healthy_threshold, unhealthy_threshold, start_period)
    start = clock()
    last = None
    while True:
        check_start = clock()
        last = probe()
        since = clock() - start
        state = tracker.record(last, since)
        if state == "healthy":
            return _verdict(True, f"healthy after {tracker.passes} consecutive passing checks", tracker, since, last)
        if state == "unhealthy":
            return _verdict(
                False,
                f"unhealthy: {tracker.failures} consecutive failed checks, last: {last.detail}",
                tracker,
                since,
                last,
            )
        # The next check starts one interval after this one started (at once when this one took longer).
        next_start = max(check_start + interval, clock())
        if next_start - start > deadline:
            return _verdict(
                False,
                f"deadline of {deadline:g} s passed without {healthy_threshold} consecutive passing checks "
                f"({tracker.attempts} checks, {tracker.total_failures} failed), last: {last.detail}",
                tracker,
                since,
                last,
            )
        sleep(max(0.0, next_start - clock()))


def _verdict(passed, reason, tracker, elapsed, last):
    return Verdict(
        passed=passed,
        reason=reason,
        attempts=tracker.attempts,
        elapsed=round(elapsed, 3),
        last=last,
        history=list(tracker.history),
        passes=tracker.passes,
        failures=tracker.failures,
    )


# --- metric gates (Prometheus) -------------------------------------------------------------------------------


def parse_bound(bound, option="metrics[].bound"):
    """'< 0.01' -> ('<', 0.01)."""
    m = re.fullmatch(r"\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*", str(bound))
    if not m:
        raise GateError(
            f"{option} must be an operator (<, <=, >, >=, ==, !=) and a number, e.g. '< 0.01'; got {bound!r}"
        )
    return m.group(1), float(m.group(2))


def validate_metric(spec, index):
    where = f"metrics[{index}]"
    if not isinstance(spec, dict):
        raise GateError(f"{where} must be a dict with query and bound")
    unknown = set(spec) - {"name", "query", "bound", "on_empty"}
    if unknown:
        raise GateError(f"{where} has unknown keys {sorted(unknown)}; allowed: name, query, bound, on_empty")
    if not str(spec.get("query") or "").strip():
        raise GateError(f"{where}.query must be a PromQL expression")
    op, value = parse_bound(spec.get("bound", ""), f"{where}.bound")
    on_empty = spec.get("on_empty", "pass")
    if on_empty not in ("pass", "fail"):
        raise GateError(f"{where}.on_empty must be pass or fail, got {on_empty!r}")
    return {
        "name": spec.get("name") or spec["query"],
        "query": spec["query"],
        "op": op,
        "bound": value,
        "on_empty": on_empty,
    }


def parse_prometheus(doc):
    """Samples of a /api/v1/query answer as [(labels, value)]; NaN samples are dropped (no data, e.g. 0/0).
    Raises GateError when Prometheus reports an error or the answer is not one."""
    if not isinstance(doc, dict) or "status" not in doc:
        raise GateError("the answer is not a Prometheus API response")
    if doc["status"] != "success":
        raise GateError(f"Prometheus: {doc.get('errorType', 'error')}: {doc.get('error', 'no message')}")
    data = doc.get("data") or {}
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "vector":
        samples = [(s.get("metric", {}), s["value"][1]) for s in result or []]
    elif kind == "scalar":
        samples = [({}, result[1])]
    else:
        raise GateError(f"Prometheus returned a {kind}; the gate needs an instant vector or a scalar")
    out = []
    for labels, raw in samples:
        value = float(raw)
        if not math.isnan(value):
            out.append((labels, value))
    return out


def evaluate_metric(metric, samples):
    """(ok, reason) for one evaluation of a validated metric spec."""
    if not samples:
        ok = metric["on_empty"] == "pass"
        return ok, f"{metric['name']}: no data ({'counts as passing' if ok else 'on_empty=fail'})"
    bad = [(labels, v) for labels, v in samples if not OPERATORS[metric["op"]](v, metric["bound"])]
    if bad:
        labels, value = bad[0]
        shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
        shown = f" {{{shown}}}" if shown else ""
        return False, f"{metric['name']} = {value:g}{shown}, bound {metric['op']} {metric['bound']:g}"
    worst = max(v for _l, v in samples) if metric["op"] in ("<", "<=") else min(v for _l, v in samples)
    return True, f"{metric['name']} = {worst:g} within {metric['op']} {metric['bound']:g}"


def run_metric_gate(metrics, query, clock, sleep, bake, interval):
    """Evaluate every metric every interval for bake seconds (at least once); fail at the first violation.
    query(expr) -> samples or raises GateError. Returns a Verdict."""
    start = clock()
    attempts = 0
    history = deque(maxlen=10)
    last = None
    while True:
        attempts += 1
        since = clock() - start
        for metric in metrics:
            try:
                ok, detail = evaluate_metric(metric, query(metric["query"]))
            except GateError as exc:
                ok, detail = False, f"{metric['name']}: query failed: {exc}"
            last = Check(ok=ok, connected=True, status=None, detail=detail)
            history.append({"attempt": attempts, "at": round(since, 3), "ok": ok, "detail": detail})
            if not ok:
                return Verdict(
                    False,
                    f"metric gate failed after {since:.0f} s: {detail}",
                    attempts,
                    round(since, 3),
                    last,
                    list(history),
                )
        if since + interval > bake:
            return Verdict(
                True,
                f"metrics within bounds for {since:.0f} s ({attempts} evaluations)",
                attempts,
                round(since, 3),
                last,
                list(history),
            )
        sleep(interval)
