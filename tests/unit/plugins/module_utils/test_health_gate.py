"""health_gate's decisions: response matching, thresholds, start period, deadlines and metric gates, on a fake
clock (no real sleeping)."""

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils._health_gate import (
    Check,
    GateError,
    compile_regex,
    evaluate_metric,
    evaluate_response,
    json_lookup,
    parse_bound,
    parse_prometheus,
    parse_status_codes,
    run_gate,
    run_metric_gate,
    validate_metric,
    validate_thresholds,
)
from hypothesis import given
from hypothesis import strategies as st

OK200 = parse_status_codes(["200"])


class FakeClock:
    """clock() and sleep() for run_gate: sleeping advances time; each probe costs `probe_cost` seconds."""

    def __init__(self, probe_cost=0.0):
        self.now = 1000.0
        self.slept = []
        self.probe_cost = probe_cost

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def scripted(clock, outcomes):
    """A probe answering from a list: 'ok', 'bad' (an answer that fails) or 'down' (no answer)."""
    seq = iter(outcomes)

    def probe():
        clock.now += clock.probe_cost
        kind = next(seq)
        if kind == "ok":
            return Check(ok=True, connected=True, status=200, detail="status 200")
        if kind == "bad":
            return Check(ok=False, connected=True, status=503, detail="status 503 not in the expected codes")
        return Check(ok=False, connected=False, status=None, detail="no answer: connection refused")

    return probe


def gate(outcomes, interval=2, deadline=60, healthy=3, unhealthy=3, start_period=0, probe_cost=0.0):
    clock = FakeClock(probe_cost)
    verdict = run_gate(
        scripted(clock, outcomes), clock.clock, clock.sleep, interval, deadline, healthy, unhealthy, start_period
    )
    return verdict, clock


# --- one response ----------------------------------------------------------------------------------------------


def test_status_codes_and_ranges():
    assert parse_status_codes(["200", "204", "300-302"]) == {200, 204, 300, 301, 302}
    assert parse_status_codes([200]) == {200}


@pytest.mark.parametrize("bad", [[], ["2xx"], ["99"], ["500-400"], ["200-700"], ["abc"]])
def test_bad_status_codes_name_the_option(bad):
    with pytest.raises(GateError, match="status_code"):
        parse_status_codes(bad)


def test_status_outside_the_set_fails():
    assert evaluate_response(503, "{}", OK200) == (False, "status 503 not in the expected codes")
    assert evaluate_response(200, "{}", OK200)[0]


def test_body_regex_is_searched():
    rx = compile_regex(r'"ready":\s*true')
    assert evaluate_response(200, '{"ready": true}', OK200, body_regex=rx)[0]
    ok, reason = evaluate_response(200, '{"ready": false}', OK200, body_regex=rx)
    assert not ok and "does not match" in reason


def test_bad_regex_names_the_option():
    with pytest.raises(GateError, match="body_regex"):
        compile_regex("([")


def test_json_match_by_dotted_path():
    body = '{"ready": true, "checks": {"postgresql": "ok", "redis": "down"}, "items": [{"id": 7}], "n": 3}'
    assert evaluate_response(200, body, OK200, json_match={"ready": True, "checks.postgresql": "ok"})[0]
    assert evaluate_response(200, body, OK200, json_match={"ready": "true", "items.0.id": 7, "n": "3"})[0]
    ok, reason = evaluate_response(200, body, OK200, json_match={"checks.redis": "ok"})
    assert not ok and reason == 'JSON checks.redis is "down", expected "ok"'
    ok, reason = evaluate_response(200, body, OK200, json_match={"checks.mysql": "ok"})
    assert not ok and reason == "JSON has no checks.mysql"
    ok, reason = evaluate_response(200, "<html>", OK200, json_match={"ready": True})
    assert not ok and "not JSON" in reason


def test_json_lookup_edges():
    doc = {"a": [1, 2], "b": {"c": None}}
    assert json_lookup(doc, "a.-1") == 2
    assert json_lookup(doc, "b.c") is None
    assert json_lookup(doc, "a.5") is not None and json_lookup(doc, "a.5") is json_lookup(doc, "zz")
    assert json_lookup(doc, "b.c.d") is json_lookup(doc, "zz")


def test_booleans_match_only_their_words():
    assert not evaluate_response(200, '{"ready": "no"}', OK200, json_match={"ready": True})[0]
    assert not evaluate_response(200, '{"ready": false}', OK200, json_match={"ready": "true"})[0]
    assert evaluate_response(200, '{"ready": "True"}', OK200, json_match={"ready": True})[0]


# --- thresholds ------------------------------------------------------------------------------------------------


def test_healthy_after_consecutive_passes():
    verdict, clock = gate(["ok", "ok", "ok"])
    assert verdict.passed and verdict.attempts == 3
    assert clock.slept == [2, 2]  # no sleep after the verdict
    assert verdict.elapsed == 4


def test_a_failure_resets_the_pass_count():
    verdict, _clock = gate(["ok", "ok", "bad", "ok", "ok", "ok"])
    assert verdict.passed and verdict.attempts == 6


def test_unhealthy_after_consecutive_failures_says_what_failed():
    verdict, _clock = gate(["ok", "bad", "bad", "bad"])
    assert not verdict.passed and verdict.attempts == 4
    assert verdict.reason.startswith("unhealthy: 3 consecutive failed checks")
    assert "status 503" in verdict.reason
    assert [h["ok"] for h in verdict.history] == [True, False, False, False]


def test_failures_not_in_a_row_do_not_fail_the_gate():
    verdict, _clock = gate(["bad", "bad", "ok", "bad", "bad", "ok", "ok", "ok"])
    assert verdict.passed


def test_thresholds_of_one():
    assert gate(["ok"], healthy=1)[0].passed
    assert not gate(["bad"], unhealthy=1)[0].passed


# --- start period ----------------------------------------------------------------------------------------------


def test_no_answer_during_the_start_period_does_not_count():
    verdict, _clock = gate(["down"] * 10 + ["ok"] * 3, start_period=30)
    assert verdict.passed and verdict.attempts == 13


def test_an_answer_that_fails_counts_even_in_the_start_period():
    verdict, _clock = gate(["bad", "bad", "bad"], start_period=30)
    assert not verdict.passed and verdict.attempts == 3


def test_no_answer_after_the_start_period_counts():
    # checks at t=0,2,...; the start period of 5 s covers t=0,2,4; t=6,8,10 count.
    verdict, _clock = gate(["down"] * 20, start_period=5)
    assert not verdict.passed and verdict.attempts == 6


def test_the_start_period_ends_at_the_first_pass():
    verdict, _clock = gate(["ok", "down", "down", "down"], start_period=60)
    assert not verdict.passed and verdict.attempts == 4


# --- deadline --------------------------------------------------------------------------------------------------


def test_deadline_without_verdict():
    # Flapping never reaches either threshold; checks at 0,2,...,10; the next (12) would pass the deadline of 11.
    verdict, _clock = gate(["ok", "bad"] * 20, deadline=11)
    assert not verdict.passed and verdict.attempts == 6
    assert verdict.reason.startswith("deadline of 11 s passed") and "6 checks, 3 failed" in verdict.reason


def test_deadline_counts_slow_probes():
    # Each probe takes 4 s (a timeout): interval 2 s means no extra sleep, and the deadline comes after 3 checks.
    verdict, clock = gate(["down"] * 20, start_period=100, deadline=10, probe_cost=4)
    assert not verdict.passed and verdict.attempts == 3
    assert all(s == 0 for s in clock.slept)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        ((2, 5, 0, 3, 60, 0), "healthy_threshold"),
        ((2, 5, 3, 0, 60, 0), "unhealthy_threshold"),
        ((0, 5, 3, 3, 60, 0), "interval"),
        ((2, 0, 3, 3, 60, 0), "timeout"),
        ((2, 5, 3, 3, 60, -1), "start_period"),
        ((10, 5, 5, 3, 30, 0), "deadline"),
    ],
)
def test_bad_thresholds_name_the_option(args, option):
    with pytest.raises(GateError, match=option):
        validate_thresholds(*args)


@given(
    st.lists(st.sampled_from(["ok", "bad", "down"]), min_size=200, max_size=200), st.integers(1, 5), st.integers(1, 5)
)
def test_verdict_agrees_with_the_last_checks(outcomes, healthy, unhealthy):
    verdict, _clock = gate(outcomes, deadline=1000, healthy=healthy, unhealthy=unhealthy, start_period=0)
    seen = outcomes[: verdict.attempts]
    if verdict.passed:
        assert seen[-healthy:] == ["ok"] * healthy
    elif verdict.reason.startswith("unhealthy"):
        assert "ok" not in seen[-unhealthy:]
    # no verdict is reached before the thresholds say so
    for i in range(1, verdict.attempts):
        prefix = outcomes[:i]
        assert prefix[-healthy:] != ["ok"] * healthy or len(prefix) < healthy
        assert "ok" in prefix[-unhealthy:] or len(prefix) < unhealthy


# --- metric gates ----------------------------------------------------------------------------------------------


def test_bounds():
    assert parse_bound("< 0.01") == ("<", 0.01)
    assert parse_bound(">=5") == (">=", 5.0)
    assert parse_bound(" == 1e-3 ") == ("==", 0.001)
    for bad in ("0.01", "<", "=~ 1", "< abc"):
        with pytest.raises(GateError, match="bound"):
            parse_bound(bad)


def test_metric_spec_checks():
    spec = validate_metric({"query": "up", "bound": "> 0"}, 0)
    assert spec == {"name": "up", "query": "up", "op": ">", "bound": 0.0, "on_empty": "pass"}
    with pytest.raises(GateError, match=r"metrics\[1\]\.query"):
        validate_metric({"bound": "< 1"}, 1)
    with pytest.raises(GateError, match=r"metrics\[0\] has unknown keys \['threshold'\]"):
        validate_metric({"query": "up", "threshold": 1}, 0)
    with pytest.raises(GateError, match="on_empty"):
        validate_metric({"query": "up", "bound": "< 1", "on_empty": "maybe"}, 0)


def vector(*values, label="app1:8000"):
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"instance": label}, "value": [1, str(v)]} for v in values],
        },
    }


def test_parse_prometheus_answers():
    assert parse_prometheus(vector(0.5)) == [({"instance": "app1:8000"}, 0.5)]
    assert parse_prometheus(vector("NaN")) == []  # 0/0: no traffic
    assert parse_prometheus({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}) == [({}, 3.0)]
    with pytest.raises(GateError, match="bad_data: parse error"):
        parse_prometheus({"status": "error", "errorType": "bad_data", "error": "parse error"})
    with pytest.raises(GateError, match="matrix"):
        parse_prometheus({"status": "success", "data": {"resultType": "matrix", "result": []}})
    with pytest.raises(GateError, match="not a Prometheus"):
        parse_prometheus(["nope"])


def test_evaluate_metric_every_sample_must_hold():
    spec = validate_metric({"name": "5xx ratio", "query": "x", "bound": "< 0.01"}, 0)
    assert evaluate_metric(spec, [({}, 0.0), ({}, 0.005)])[0]
    ok, reason = evaluate_metric(spec, [({"instance": "a"}, 0.0), ({"instance": "b"}, 0.2)])
    assert not ok and reason == "5xx ratio = 0.2 {instance=b}, bound < 0.01"
    assert evaluate_metric(spec, [])[0]
    strict = validate_metric({"query": "x", "bound": "< 0.01", "on_empty": "fail"}, 0)
    assert not evaluate_metric(strict, [])[0]


def test_metric_gate_bakes_then_passes():
    clock = FakeClock()
    spec = [validate_metric({"query": "x", "bound": "< 1"}, 0)]
    verdict = run_metric_gate(spec, lambda q: [({}, 0.1)], clock.clock, clock.sleep, bake=60, interval=15)
    assert verdict.passed and verdict.attempts == 5 and clock.now == 1060  # at 0, 15, 30, 45, 60


def test_metric_gate_fails_at_the_first_violation():
    clock = FakeClock()
    values = iter([0.0, 0.0, 0.3])
    spec = [validate_metric({"name": "errors", "query": "x", "bound": "< 0.01"}, 0)]
    verdict = run_metric_gate(spec, lambda q: [({}, next(values))], clock.clock, clock.sleep, bake=300, interval=10)
    assert not verdict.passed and verdict.attempts == 3
    assert verdict.reason == "metric gate failed after 20 s: errors = 0.3, bound < 0.01"


def test_metric_gate_query_error_fails():
    clock = FakeClock()

    def broken(_q):
        raise GateError("cannot reach http://mon1:9090: refused")

    spec = [validate_metric({"query": "x", "bound": "< 1"}, 0)]
    verdict = run_metric_gate(spec, broken, clock.clock, clock.sleep, bake=0, interval=10)
    assert not verdict.passed and "query failed: cannot reach" in verdict.reason


def test_metric_gate_without_bake_evaluates_once():
    clock = FakeClock()
    spec = [validate_metric({"query": "x", "bound": "< 1"}, 0)]
    verdict = run_metric_gate(spec, lambda q: [({}, 0.1)], clock.clock, clock.sleep, bake=0, interval=10)
    assert verdict.passed and verdict.attempts == 1 and clock.slept == []
