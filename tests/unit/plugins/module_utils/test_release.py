"""The release module's decisions: first release, switching, retention, rollback, marking, bad input."""

import json

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils._release import (
    ReleaseError,
    dump_history,
    load_history,
    plan,
    previous_good,
    retention,
)
from hypothesis import given
from hypothesis import strategies as st

NOW = "2026-11-22T10:00:00Z"


def deployed(*releases, results=None):
    """A history where each release was created then activated in order, with given results (default good)."""
    results = results or {}
    history = []
    for i, release in enumerate(releases):
        t = f"2026-11-{i + 1:02d}T00:00:00Z"
        history.append({"release": release, "event": "created", "time": t, "result": None})
        history.append({"release": release, "event": "activated", "time": t, "result": "pending"})
        history.append({"release": release, "event": "marked", "time": t, "result": results.get(release, "good")})
    return history


def test_first_release_present_creates_but_does_not_activate():
    p = plan("present", "1.0.0", on_disk=[], current=None, history=[], keep=5, now=NOW)
    assert p.create == ["1.0.0"] and p.activate is None and p.delete == []
    assert [e["event"] for e in p.events] == ["created"]


def test_first_release_active():
    p = plan("active", "1.0.0", on_disk=[], current=None, history=[], keep=5, now=NOW, checksum="sha256:ab")
    assert p.create == ["1.0.0"] and p.activate == "1.0.0"
    assert [(e["event"], e["result"]) for e in p.events] == [("created", None), ("activated", "pending")]
    assert p.events[0]["checksum"] == "sha256:ab"


def test_active_again_is_idempotent():
    history = deployed("1.0.0")
    p = plan("active", "1.0.0", on_disk=["1.0.0"], current="1.0.0", history=history, keep=5, now=NOW)
    assert not p.changed


def test_same_id_different_artifact_is_refused():
    history = deployed("1.0.0")
    history[0]["checksum"] = "sha256:aaa"
    with pytest.raises(ReleaseError, match="must not be reused"):
        plan("active", "1.0.0", ["1.0.0"], "1.0.0", history, 5, NOW, checksum="sha256:bbb")


def test_new_release_keeps_previous_for_rollback():
    history = deployed("1", "2", "3")
    p = plan("active", "4", on_disk=["1", "2", "3"], current="3", history=history, keep=2, now=NOW)
    assert p.activate == "4"
    assert p.delete == ["1", "2"]  # 3 is the previous good one and among the 2 newest with 4
    assert p.reasons["3"].startswith("kept")


def test_retention_never_deletes_current_or_previous_good():
    # Current is old (a rollback happened); previous good is older still; keep=1.
    history = deployed("1", "2", "3", "4", results={"3": "failed", "4": "failed"})
    history.append({"release": "2", "event": "rolled_back", "time": NOW, "result": "good"})
    kept, deleted, reasons = retention({"1", "2", "3", "4"}, history, "2", 1, ["1", "2", "3", "4"])
    assert "2" in kept and reasons["2"] == "kept: current"
    assert "1" in kept and reasons["1"] == "kept: previous good release"
    assert "4" in kept  # newest
    assert deleted == ["3"]


def test_rollback_to_previous_good_without_naming_it():
    history = deployed("1", "2", "3", results={"2": "failed"})
    p = plan("rolled_back", None, on_disk=["1", "2", "3"], current="3", history=history, keep=5, now=NOW)
    assert p.activate == "1"  # 2 failed, so back to 1
    assert ("3", "rolled_back") in [(e["release"], e["result"]) for e in p.events]


def test_rollback_without_previous_release_is_a_clear_error():
    with pytest.raises(ReleaseError, match="no previous good release to roll back to"):
        plan("rolled_back", None, on_disk=["1"], current="1", history=deployed("1"), keep=5, now=NOW)


def test_rollback_ignores_good_releases_no_longer_on_disk():
    history = deployed("1", "2")
    with pytest.raises(ReleaseError, match="no previous good release"):
        plan("rolled_back", None, on_disk=["2"], current="2", history=history, keep=5, now=NOW)


def test_mark_current_good_and_failed():
    history = deployed("1")[:2]  # activated, still pending
    p = plan("good", None, ["1"], "1", history, 5, NOW)
    assert [(e["release"], e["result"]) for e in p.events] == [("1", "good")]
    p = plan("failed", "1", ["1"], "1", history, 5, NOW)
    assert p.events[0]["result"] == "failed"
    assert not plan("good", None, ["1"], "1", deployed("1"), 5, NOW).changed  # already good


def test_absent_refuses_current_and_previous_good():
    history = deployed("1", "2")
    with pytest.raises(ReleaseError, match="current release"):
        plan("absent", "2", ["1", "2"], "2", history, 5, NOW)
    with pytest.raises(ReleaseError, match="previous good release"):
        plan("absent", "1", ["1", "2"], "2", history, 5, NOW)


@pytest.mark.parametrize("bad", ["", "../etc", ".", "a/b", "x" * 129, None, "-rf"])
def test_bad_release_ids(bad):
    with pytest.raises(ReleaseError, match="release must be"):
        plan("active", bad, [], None, [], 5, NOW)


def test_unknown_state_and_bad_keep():
    with pytest.raises(ReleaseError, match="state must be one of"):
        plan("deployed", "1", [], None, [], 5, NOW)
    with pytest.raises(ReleaseError, match="keep must be at least 1"):
        plan("active", "1", [], None, [], 0, NOW)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"release": "1"}', '[{"event": "created"}]'])
def test_corrupted_history_is_a_clear_error(text):
    with pytest.raises(ReleaseError, match="nothing was changed"):
        load_history(text, "/opt/app/releases.json")


def test_history_round_trip():
    history = deployed("1", "2")
    assert load_history(dump_history(history)) == history
    assert load_history("") == [] and load_history(None) == []
    assert json.loads(dump_history([])) == []


releases = st.lists(st.from_regex(r"r[0-9]{1,3}", fullmatch=True), min_size=1, max_size=12, unique=True)


@given(order=releases, keep=st.integers(min_value=1, max_value=6), data=st.data())
def test_retention_invariants(order, keep, data):
    """Current and previous good are always kept; at most keep + 2 remain; nothing outside on_disk is touched."""
    marks = {r: data.draw(st.sampled_from(["good", "failed", "pending"])) for r in order}
    history = deployed(*order, results=marks)
    current = data.draw(st.sampled_from(order))
    on_disk = set(order)
    kept, deleted, _reasons = retention(on_disk, history, current, keep, order)
    assert current in kept
    prev = previous_good(history, current, on_disk)
    if prev:
        assert prev in kept
    assert set(kept) | set(deleted) == on_disk and not set(kept) & set(deleted)
    assert len(kept) <= keep + 2
    # Running retention again on what is kept deletes nothing more: stable.
    kept2, deleted2, _reasons2 = retention(set(kept), history, current, keep, order)
    assert deleted2 == [] and sorted(kept2) == sorted(kept)
