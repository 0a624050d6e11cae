#!/usr/bin/python
# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: health_gate
version_added: 0.1.0
short_description: Wait until an HTTP endpoint is healthy (and Prometheus metrics stay within bounds), or fail
description:
  - Checks an HTTP(S) endpoint the way a load balancer checks a target's health, from the host the task runs on.
    A check passes when the status is one of O(status_code) and the body matches O(body_regex) and O(json_match).
  - The gate passes after O(healthy_threshold) consecutive passing checks and fails after O(unhealthy_threshold)
    consecutive failures, or when O(deadline) passes first.
  - During O(start_period), a check that gets no answer at all (connection refused, nothing listening yet) does
    not count as a failure; an answer that fails the check does.
  - With O(metrics), after the HTTP gate passed, PromQL expressions are evaluated against O(prometheus_url)
    every O(metrics_interval) seconds for O(bake) seconds; the first value outside its bound fails the gate
    (canary analysis, for example the 5xx ratio of the new release below 1%).
  - Returns the attempts, the time taken, the last status and a short history whether it passes or fails; the
    failure message says which check failed, how often, and what the last answer was.
author:
  - selfhosted.stack maintainers (@selfhosted-stack)
options:
  url:
    description: URL to check, V(http://) or V(https://).
    type: str
    required: true
  method:
    description: HTTP method of the checks.
    type: str
    default: GET
    choices: [GET, HEAD, POST]
  headers:
    description: Extra request headers, for example a V(Host) header when checking through a proxy.
    type: dict
    default: {}
  status_code:
    description: Expected status codes; each a code (V(200)) or a range (V(200-299)).
    type: list
    elements: str
    default: ["200"]
  body_regex:
    description: A regular expression the body must match (searched, not anchored).
    type: str
  json_match:
    description:
      - Values the JSON body must have, by dotted path (V(checks.postgresql), V(items.0.id)).
      - Strings compare to booleans and numbers as written, so V("true") matches V(true).
    type: dict
  timeout:
    description: Seconds each request may take.
    type: float
    default: 5
  interval:
    description: Seconds between the starts of two checks.
    type: float
    default: 2
  healthy_threshold:
    description: Consecutive passing checks that make the target healthy.
    type: int
    default: 3
  unhealthy_threshold:
    description: Consecutive failed checks that make the target unhealthy (the gate fails).
    type: int
    default: 3
  start_period:
    description:
      - Seconds from the first check during which connection failures do not count (the process is starting).
        Ends early at the first passing check.
    type: float
    default: 60
  deadline:
    description: Seconds the whole HTTP gate may take.
    type: float
    default: 120
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: CA bundle to verify the server's certificate with.
    type: path
  client_cert:
    description: Client certificate (PEM) for mutual TLS.
    type: path
  client_key:
    description: Key of O(client_cert).
    type: path
  prometheus_url:
    description: Base URL of Prometheus for O(metrics), for example V(http://mon1:9090).
    type: str
  metrics:
    description:
      - Metric gates, each a dict with C(query) (PromQL, an instant vector or scalar), C(bound) (an operator and a
        number, for example V(< 0.01)), optional C(name) and C(on_empty) (V(pass), the default, or V(fail), which
        says what an empty result or NaN means, for example a ratio without traffic).
      - Every sample of the result must satisfy the bound.
    type: list
    elements: dict
    default: []
  bake:
    description: Seconds over which O(metrics) are evaluated (at least once).
    type: float
    default: 0
  metrics_interval:
    description: Seconds between two evaluations of O(metrics).
    type: float
    default: 15
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details: It only reads, so it checks in check mode too; it never reports a change.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: none
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
notes:
  - Run it on the host whose service it checks (V(http://127.0.0.1:8000/ready)) or delegate it to the load
    balancer to check what the load balancer sees.
seealso:
  - module: selfhosted.stack.release
"""

EXAMPLES = r"""
- name: Wait until the new web process is ready
  selfhosted.stack.health_gate:
    url: http://127.0.0.1:8000/ready
    json_match:
      ready: true
    healthy_threshold: 3
    unhealthy_threshold: 3
    interval: 2
    deadline: 120

- name: Canary analysis, 5xx ratio of the canary below 1% for 5 minutes
  selfhosted.stack.health_gate:
    url: http://127.0.0.1:8000/health
    prometheus_url: http://mon1.example.com:9090
    bake: 300
    metrics:
      - name: 5xx ratio of {{ inventory_hostname }}
        # "or vector(0)": with no 5xx at all the numerator is empty and the ratio would be "no data".
        query: >-
          (sum(rate(http_requests_total{instance=~"{{ inventory_hostname }}:.*",status=~"5.."}[1m])) or vector(0))
          / sum(rate(http_requests_total{instance=~"{{ inventory_hostname }}:.*"}[1m]))
        on_empty: fail
        bound: "< 0.01"

- name: Through a proxy, by name, with an internal CA
  selfhosted.stack.health_gate:
    url: https://127.0.0.1/ready
    headers:
      Host: app.example.com
    ca_path: /etc/ssl/certs/internal-ca.pem
    status_code: ["200-299"]
"""

RETURN = r"""
passed:
  description: Whether the gate passed.
  returned: always
  type: bool
reason:
  description: Why the gate passed or failed.
  returned: always
  type: str
  sample: "unhealthy: 3 consecutive failed checks, last: status 503 not in the expected codes"
attempts:
  description: HTTP checks made.
  returned: always
  type: int
  sample: 4
elapsed:
  description: Seconds the HTTP gate took.
  returned: always
  type: float
  sample: 6.02
status:
  description: Status of the last HTTP answer (null when none came).
  returned: always
  type: int
  sample: 503
body:
  description: Start of the last answer's body (up to 512 characters).
  returned: always
  type: str
history:
  description: The last checks, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    attempt:
      description: Number of the check.
      type: int
    at:
      description: Seconds from the start of the gate.
      type: float
    ok:
      description: Whether the check passed.
      type: bool
    detail:
      description: What the check saw.
      type: str
metrics:
  description: Outcome of the metric gate (only with O(metrics)).
  returned: when metrics were given and the HTTP gate passed
  type: dict
  contains:
    passed:
      description: Whether every metric stayed within its bound.
      type: bool
    reason:
      description: The first violation, or a summary.
      type: str
    attempts:
      description: Evaluations made.
      type: int
    elapsed:
      description: Seconds the bake took.
      type: float
    history:
      description: The last evaluations.
      type: list
      elements: dict
"""

import json
import socket
import time
import urllib.error
import urllib.parse

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.selfhosted.stack.plugins.module_utils._health_gate import (
    Check,
    GateError,
    compile_regex,
    evaluate_response,
    parse_prometheus,
    parse_status_codes,
    run_gate,
    run_metric_gate,
    validate_metric,
    validate_thresholds,
)

BODY_LIMIT = 65536


def http_probe(module, allowed, body_regex, json_match):
    p = module.params
    seen = {}

    def probe():
        started = time.monotonic()
        status, body, connected, ok, detail = None, "", True, False, ""
        try:
            resp = open_url(
                p["url"],
                method=p["method"],
                headers=p["headers"],
                timeout=p["timeout"],
                validate_certs=p["validate_certs"],
                ca_path=p["ca_path"],
                client_cert=p["client_cert"],
                client_key=p["client_key"],
                follow_redirects="none",
                use_proxy=False,
            )
            status = resp.getcode()
            body = resp.read(BODY_LIMIT).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                body = exc.read(BODY_LIMIT).decode("utf-8", "replace")
            except Exception:  # the body of an error answer is a bonus
                body = ""
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            connected = False
            reason = getattr(exc, "reason", exc)
            detail = f"no answer: {reason}"
        took = time.monotonic() - started
        seen["status"], seen["body"] = status, body
        if connected:
            ok, detail = evaluate_response(status, body, allowed, body_regex, json_match)
            if not ok and body:
                detail = f"{detail}; body: {body[:200].strip()}"
        return Check(ok=ok, connected=connected, status=status, detail=detail, elapsed=took)

    return probe, seen


def prometheus_query(module):
    base = module.params["prometheus_url"].rstrip("/")

    def query(expr):
        url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            resp = open_url(
                url,
                timeout=module.params["timeout"],
                validate_certs=module.params["validate_certs"],
                ca_path=module.params["ca_path"],
                use_proxy=False,
            )
            text = resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:  # Prometheus answers 400/422 with a JSON error
            text = exc.read().decode("utf-8", "replace")
        except (urllib.error.URLError, socket.timeout, OSError) as exc:
            raise GateError(f"cannot reach {base}: {getattr(exc, 'reason', exc)}") from exc
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise GateError(f"{base} did not answer JSON: {text[:200]}") from exc
        return parse_prometheus(doc)

    return query


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            method=dict(type="str", default="GET", choices=["GET", "HEAD", "POST"]),
            headers=dict(type="dict", default={}),
            status_code=dict(type="list", elements="str", default=["200"]),
            body_regex=dict(type="str"),
            json_match=dict(type="dict"),
            timeout=dict(type="float", default=5),
            interval=dict(type="float", default=2),
            healthy_threshold=dict(type="int", default=3),
            unhealthy_threshold=dict(type="int", default=3),
            start_period=dict(type="float", default=60),
            deadline=dict(type="float", default=120),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            client_cert=dict(type="path"),
            client_key=dict(type="path"),
            prometheus_url=dict(type="str"),
            metrics=dict(type="list", elements="dict", default=[]),
            bake=dict(type="float", default=0),
            metrics_interval=dict(type="float", default=15),
        ),
        required_by={"client_key": ("client_cert",)},
        supports_check_mode=True,
    )
    p = module.params
    try:
        scheme = urllib.parse.urlsplit(p["url"]).scheme
        if scheme not in ("http", "https"):
            raise GateError(f"url must start with http:// or https://, got {p['url']!r}")
        allowed = parse_status_codes(p["status_code"])
        body_regex = compile_regex(p["body_regex"])
        validate_thresholds(
            p["interval"],
            p["timeout"],
            p["healthy_threshold"],
            p["unhealthy_threshold"],
            p["deadline"],
            p["start_period"],
        )
        metrics = [validate_metric(m, i) for i, m in enumerate(p["metrics"])]
        if metrics and not p["prometheus_url"]:
            raise GateError("metrics need prometheus_url (the base URL of Prometheus, e.g. http://mon1:9090)")
        if p["bake"] < 0 or p["metrics_interval"] <= 0:
            raise GateError(
                f"bake must be 0 or more and metrics_interval more than 0; got {p['bake']} and {p['metrics_interval']}"
            )
    except GateError as exc:
        module.fail_json(msg=f"health_gate: {exc}")

    probe, seen = http_probe(module, allowed, body_regex, p["json_match"])
    verdict = run_gate(
        probe,
        time.monotonic,
        time.sleep,
        p["interval"],
        p["deadline"],
        p["healthy_threshold"],
        p["unhealthy_threshold"],
        p["start_period"],
    )
    result = dict(
        changed=False,
        passed=verdict.passed,
        reason=verdict.reason,
        attempts=verdict.attempts,
        elapsed=verdict.elapsed,
        status=seen.get("status"),
        body=(seen.get("body") or "")[:512],
        history=verdict.history,
    )
    if not verdict.passed:
        module.fail_json(
            msg=f"health gate failed for {p['url']}: {verdict.reason} (after {verdict.attempts} checks "
            f"in {verdict.elapsed:.1f} s)",
            **result,
        )
    if metrics:
        mv = run_metric_gate(
            metrics, prometheus_query(module), time.monotonic, time.sleep, p["bake"], p["metrics_interval"]
        )
        result["metrics"] = dict(
            passed=mv.passed, reason=mv.reason, attempts=mv.attempts, elapsed=mv.elapsed, history=mv.history
        )
        if not mv.passed:
            result["passed"] = False
            result["reason"] = mv.reason
            module.fail_json(msg=f"health gate failed for {p['url']}: {mv.reason}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
