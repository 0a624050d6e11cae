"""Rolling replacement planning for compose mode: max surge / max unavailable bounds hold at every step, every old
container is replaced, bad settings are refused naming the option."""

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils._compose_rollout import (
    PlanError,
    plan_steps,
    simulate,
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
