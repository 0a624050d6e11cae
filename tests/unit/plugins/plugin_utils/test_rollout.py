"""Rollout batches (serial-like sizes), rollback order and the zero-downtime check."""

import math
from fractions import Fraction

import pytest
from ansible_collections.selfhosted.stack.plugins.plugin_utils._rollout import (
    RolloutError,
    back_batches,
    batch_sizes,
    batches,
    canary_weights,
    fleet_state,
    traffic_steps_problems,
    zero_downtime_problems,
)
from hypothesis import given
from hypothesis import strategies as st

HOSTS = [f"app{i}" for i in range(1, 11)]


def test_canary_then_percentages():
    assert batch_sizes([1, "25%", "100%"], 10) == [1, 2, 7]
    assert batches(HOSTS[:4], [1, "50%", "100%"]) == [["app1"], ["app2", "app3"], ["app4"]]


def test_the_last_entry_repeats():
    assert batch_sizes([1, 2], 7) == [1, 2, 2, 2]
    assert batch_sizes(["30%"], 10) == [3, 3, 3, 1]
    assert batch_sizes(1, 3) == [1, 1, 1]


def test_small_percentages_are_at_least_one_host():
    assert batch_sizes(["10%"], 3) == [1, 1, 1]


def test_no_hosts_no_batches():
    assert batches([], [1, "100%"]) == []


@pytest.mark.parametrize("bad", [[], [0], ["0%"], ["150%"], ["a"], [True], [-1], [1.5], "lots", None])
def test_bad_batches_name_the_variable(bad):
    with pytest.raises(RolloutError, match="rollout_batches"):
        batch_sizes(bad, 5)


@given(
    st.integers(0, 40),
    st.lists(st.one_of(st.integers(1, 12), st.integers(1, 100).map(lambda n: f"{n}%")), min_size=1, max_size=5),
)
def test_every_host_once_in_order(n, spec):
    hosts = [f"h{i}" for i in range(n)]
    out = batches(hosts, spec)
    assert [h for b in out for h in b] == hosts
    assert all(b for b in out)


def test_back_batches_newest_first_only_switched():
    forward = [["app1"], ["app2", "app3"], ["app4", "app5"]]
    assert back_batches(forward, ["app1", "app2", "app3", "app4"]) == [["app4"], ["app2", "app3"], ["app1"]]
    assert back_batches(forward, []) == []


def test_a_batch_of_every_web_host_is_a_problem():
    assert zero_downtime_problems([["a"], ["b"]], ["a", "b"]) == []
    assert zero_downtime_problems([["a", "b"]], ["a", "b"]) == [
        "batch 1 (a, b) would take every web host out of rotation"
    ]
    assert zero_downtime_problems([["a"]], ["a", "b"], already_out=["b"]) != []


def test_fleet_state():
    assert fleet_state({"b": "1.0", "a": "1.1", "c": None}) == (
        ["1.0", "1.1", "none"],
        {"1.0": ["b"], "1.1": ["a"], "none": ["c"]},
    )


def test_canary_weights_examples():
    assert canary_weights(["app1"], ["app2", "app3"], 10) == {"app1": 2, "app2": 9, "app3": 9}
    assert canary_weights(["app1"], ["app2"], 50) == {"app1": 1, "app2": 1}
    assert canary_weights(["app1", "app2"], ["app3", "app4"], "50%") == {h: 1 for h in ["app1", "app2", "app3", "app4"]}
    # at 100 the others are left out (the rollout takes them out of rotation)
    assert canary_weights(["app1"], ["app2", "app3"], 100) == {"app1": 1}
    # a host in both lists is a canary
    assert canary_weights(["app1"], ["app1", "app2"], 10) == {"app1": 1, "app2": 9}
    # app2 runs two instances (two upstream servers with its weight): 10% = 1 / (1 + 2*3 + 3)
    assert canary_weights(["app1"], ["app2", "app3"], 10, {"app2": 2}) == {"app1": 1, "app2": 3, "app3": 3}
    # a canary host with 4 instances among 2 others with 1: 50% = 4*1 / (4*1 + 2*2)
    assert canary_weights(["app1"], ["app2", "app3"], 50, {"app1": 4}) == {"app1": 1, "app2": 2, "app3": 2}
    # counts from extra vars arrive as strings
    assert canary_weights(["app1"], ["app2", "app3"], 10, {"app2": "2"}) == {"app1": 1, "app2": 3, "app3": 3}


@pytest.mark.parametrize("instances", [{"app2": 0}, {"app2": "two"}, {"app2": True}, {"app1": -1}, {"app2": 1.5}])
def test_canary_weights_refuse_bad_instance_counts(instances):
    with pytest.raises(RolloutError, match="instances per host"):
        canary_weights(["app1"], ["app2"], 10, instances)


@pytest.mark.parametrize("percent", [0, 101, "x", -5])
def test_canary_weights_refuse_bad_shares(percent):
    with pytest.raises((RolloutError, ValueError)):
        canary_weights(["a"], ["b"], percent)


def test_canary_weights_need_a_canary():
    with pytest.raises(RolloutError, match="at least one host"):
        canary_weights([], ["b"], 10)


@given(
    canary=st.integers(min_value=1, max_value=6),
    others=st.integers(min_value=0, max_value=6),
    percent=st.integers(min_value=1, max_value=100),
    counts=st.lists(st.integers(min_value=1, max_value=4), min_size=12, max_size=12),
)
def test_canary_weights_give_exactly_the_share(canary, others, percent, counts):
    new = [f"n{i}" for i in range(canary)]
    old = [f"o{i}" for i in range(others)]
    instances = dict(zip(new + old, counts))
    w = canary_weights(new, old, percent, instances)
    assert all(isinstance(v, int) and v >= 1 for v in w.values())
    # every instance (upstream server) of a host carries the host's weight
    total = sum(w[h] * instances[h] for h in w)
    share = Fraction(sum(w[h] * instances[h] for h in new), total)
    expected = Fraction(100 if (percent == 100 or not old) else percent, 100)
    assert share == expected
    # the canary hosts share their part equally, and so do the others
    assert len({w[h] for h in new}) == 1
    assert len({w[h] for h in old if h in w}) <= 1
    # the smallest such numbers
    assert math.gcd(*w.values()) == 1


def test_traffic_steps_problems():
    assert traffic_steps_problems([10, 50, 100]) == []
    assert traffic_steps_problems(["10%", "50%"]) == []
    assert traffic_steps_problems([]) == []
    assert traffic_steps_problems([50, 10]) == [
        "rollout_traffic_steps must rise step by step without repeats (got [50, 10])"
    ]
    assert traffic_steps_problems([10, 10]) != []
    assert "0 is not a whole percentage" in traffic_steps_problems([0])[0]
    assert "'abc' is not a whole percentage" in traffic_steps_problems(["abc"])[0]
    assert traffic_steps_problems([10, 150]) != []
    assert traffic_steps_problems("10,50") == [
        "rollout_traffic_steps must be a list of percentages, e.g. [10, 50, 100]"
    ]
