"""Rolling replacement planning for compose mode: max surge / max unavailable bounds hold at every step, every old
container is replaced, bad settings are refused naming the option."""

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils._compose_rollout import (
    REVISION_LABEL,
    PlanError,
    account_existing,
    classify,
    container_number,
    health_check,
    plan_steps,
    simulate,
    upstream_text,
)
from hypothesis import given
from hypothesis import strategies as st


def test_one_extra_container_at_a_time():
    assert plan_steps(3, 1, 0) == [("start", 1), ("stop", 1), ("start", 1), ("stop", 1), ("start", 1), ("stop", 1)]


def test_one_fewer_container_at_a_time():
    assert plan_steps(3, 0, 1) == [("stop", 1), ("start", 1), ("stop", 1), ("start", 1), ("stop", 1), ("start", 1)]


def test_surge_of_all_replicas_is_blue_green():
    assert plan_steps(2, 2, 0) == [("start", 2), ("stop", 2)]


def test_single_replica_needs_a_surge():
    assert plan_steps(1, 1, 0) == [("start", 1), ("stop", 1)]
    with pytest.raises(PlanError, match=r"max_unavailable \(1\) must be less than replicas \(1\)"):
        plan_steps(1, 0, 1)


def test_scaling_down_stops_the_extra_old_ones():
    steps = plan_steps(2, 1, 0, old=4)
    assert sum(n for a, n in steps if a == "start") == 2 and sum(n for a, n in steps if a == "stop") == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 0, 0), "both 0"),
        ((0, 1, 0), "replicas must be at least 1"),
        ((3, -1, 0), "max_surge must be a whole number"),
        ((3, 1, True), "max_unavailable must be a whole number"),
        ((3, "1", 0), "max_surge must be a whole number"),
    ],
)
def test_bad_settings_name_the_option(args, message):
    with pytest.raises(PlanError, match=message):
        plan_steps(*args)


@given(st.integers(1, 12), st.integers(0, 6), st.integers(0, 11), st.integers(0, 15))
def test_bounds_hold_and_everything_is_replaced(replicas, surge, unavailable, old):
    if (surge == 0 and unavailable == 0) or unavailable >= replicas:
        with pytest.raises(PlanError):
            plan_steps(replicas, surge, unavailable, old)
        return
    steps = plan_steps(replicas, surge, unavailable, old)
    assert sum(n for a, n in steps if a == "start") == replicas
    assert sum(n for a, n in steps if a == "stop") == old
    low, high = simulate(replicas, steps, old)
    assert high <= max(old, replicas + surge)  # never more than the surge allows (beyond what already ran)
    assert low >= min(old, replicas - unavailable)  # never fewer serving than allowed (below what already ran)
    assert all(count > 0 for _action, count in steps)


# --- the module's decisions ------------------------------------------------------------------------------------


def _c(name, number, revision, running=True):
    return {
        "name": name,
        "labels": {"com.docker.compose.container-number": str(number), REVISION_LABEL: revision},
        "running": running,
    }


def test_classify_splits_by_revision_in_container_number_order():
    found = [_c("p-app-10", 10, "r1"), _c("p-app-2", 2, "r1"), _c("p-app-3", 3, "r2"), _c("p-app-1", 1, "r2", False)]
    old, new = classify(found, "r2")
    assert [c["name"] for c in old] == ["p-app-2", "p-app-10"]  # numeric order, not string order
    assert [c["name"] for c in new] == ["p-app-1", "p-app-3"]


def test_container_without_revision_label_is_old():
    old, new = classify([{"name": "x", "labels": {}, "running": True}], "r1")
    assert [c["name"] for c in old] == ["x"] and new == []


def test_container_number_tolerates_missing_or_bad_labels():
    assert container_number({}) == 0
    assert container_number(None) == 0
    assert container_number({"com.docker.compose.container-number": "x"}) == 0
    assert container_number({"com.docker.compose.container-number": "7"}) == 7


def test_upstream_text_lists_each_container_once_sorted():
    text = upstream_text(["p-app-3", "p-app-1"], 8000, 2, "5s")
    assert text.splitlines()[1:] == [
        "server p-app-1:8000 max_fails=2 fail_timeout=5s;",
        "server p-app-3:8000 max_fails=2 fail_timeout=5s;",
    ]
    assert text.endswith("\n")


def test_upstream_needs_a_container():
    with pytest.raises(PlanError, match="at least one container"):
        upstream_text([], 8000)


@pytest.mark.parametrize(
    ("state", "http_ok", "detail", "expected"),
    [
        ({"Status": "running", "Health": {"Status": "healthy"}}, True, "", (True, True)),
        ({"Status": "running"}, True, "", (True, True)),  # an image without a health check: HTTP decides
        ({"Status": "running", "Health": {"Status": "starting"}}, True, "", (False, False)),
        ({"Status": "running", "Health": {"Status": "unhealthy"}}, True, "", (False, True)),
        ({"Status": "running", "Health": {"Status": "healthy"}}, False, "http://x/ready answered 503", (False, True)),
        ({"Status": "running", "Health": {"Status": "starting"}}, False, "no answer from x", (False, False)),
        ({"Status": "exited", "ExitCode": 3}, False, "no answer", (False, True)),
    ],
)
def test_health_check_combines_docker_and_http(state, http_ok, detail, expected):
    ok, connected, why = health_check(state, http_ok, detail)
    assert (ok, connected) == expected, why
    if state["Status"] == "exited":
        assert "exited (exit code 3)" in why


def test_account_existing_starts_only_what_is_missing():
    steps = [list(s) for s in plan_steps(3, 1, 0)]
    assert account_existing(steps, 0) == steps
    # One container of the revision already runs (an interrupted rollout): the first start is not repeated.
    assert account_existing(steps, 1) == [["stop", 1], ["start", 1], ["stop", 1], ["start", 1], ["stop", 1]]
    assert account_existing([["start", 2], ["stop", 2]], 5) == [["stop", 2]]
