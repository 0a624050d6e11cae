"""Grandfather-father-son retention planning: rules, periods in a timezone, Monday weeks, incomplete backups,
the broken-backups guard, and properties (hypothesis) that hold for any set."""

import datetime
from zoneinfo import ZoneInfo

import pytest
from ansible_collections.selfhosted.stack.plugins.module_utils._backup_rotate import (
    MANIFEST,
    Backup,
    RotateError,
    base_dir_problem,
    batched,
    check_manifest,
    id_time,
    parse_duration,
    parse_time,
    plan,
    plan_verified,
    validate_policy,
)
from hypothesis import given, settings
from hypothesis import strategies as st

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def daily(n, hour=2, start=NOW):
    """One backup a day at `hour` UTC for the n days before start, newest first."""
    day = start.replace(hour=hour, minute=0) - datetime.timedelta(days=1)
    return [Backup(f"b{i:03d}", day - datetime.timedelta(days=i)) for i in range(n)]


def test_empty_policy_is_refused():
    with pytest.raises(RotateError, match="keeps nothing"):
        plan(daily(3), {}, NOW, UTC)
    with pytest.raises(RotateError, match="keeps nothing"):
        validate_policy({"keep_last": 0, "keep_within": None})


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"keep_last": -1}, "keep_last must be a whole number"),
        ({"keep_daily": "7"}, "keep_daily must be a whole number"),
        ({"keep_daily": True}, "keep_daily must be a whole number"),
        ({"keep_within": "7 days"}, "keep_within must be a duration"),
        ({"keep_forever": 1}, r"unknown retention options \['keep_forever'\]"),
    ],
)
def test_bad_policies_name_the_option(policy, message):
    with pytest.raises(RotateError, match=message):
        validate_policy(policy)


def test_durations():
    assert parse_duration("36h", "x") == 129600 and parse_duration("2w", "x") == 1209600
    assert parse_duration(90, "x") == 90 and parse_duration(None, "x") is None


def test_keep_last_and_daily():
    backups = daily(10)
    p = plan(backups, {"keep_last": 2, "keep_daily": 5}, NOW, UTC)
    assert p.keep == [b.id for b in backups[:5]] and p.delete == [b.id for b in backups[5:]]
    assert p.reasons["b000"] == "keep: newest complete backup, last 1 of 2, daily 2026-11-21"
    assert p.reasons["b009"] == "delete: no retention rule keeps it"


def test_the_newest_of_each_day_counts_and_empty_days_do_not():
    t = NOW.replace(hour=0)
    backups = [
        Backup("d1-late", t - datetime.timedelta(hours=2)),  # 2026-11-21 22:00
        Backup("d1-early", t - datetime.timedelta(hours=20)),  # 2026-11-21 04:00
        Backup("gap", t - datetime.timedelta(days=5)),  # 2026-11-17: days 18-20 have none
    ]
    p = plan(backups, {"keep_daily": 2}, NOW, UTC)
    assert p.keep == ["d1-late", "gap"] and p.delete == ["d1-early"]


def test_days_are_counted_in_the_given_timezone():
    # 23:30 UTC on the 20th is already the 21st in Berlin, as is 08:00 UTC on the 21st.
    a = Backup("a", datetime.datetime(2026, 11, 20, 23, 30, tzinfo=UTC))
    b = Backup("b", datetime.datetime(2026, 11, 21, 8, 0, tzinfo=UTC))
    assert plan([a, b], {"keep_daily": 2}, NOW, UTC).keep == ["b", "a"]
    assert plan([a, b], {"keep_daily": 2}, NOW, ZoneInfo("Europe/Berlin")).keep == ["b"]


def test_weeks_start_on_monday():
    sunday = Backup("sun", datetime.datetime(2026, 11, 15, 12, tzinfo=UTC))
    monday = Backup("mon", datetime.datetime(2026, 11, 16, 12, tzinfo=UTC))
    saturday = Backup("sat", datetime.datetime(2026, 11, 14, 12, tzinfo=UTC))
    p = plan([sunday, monday, saturday], {"keep_weekly": 3}, NOW, UTC)
    assert p.keep == ["mon", "sun"] and p.delete == ["sat"]  # sat and sun share ISO week 46
    assert p.reasons["mon"].endswith("weekly 2026-W47") and p.reasons["sun"].endswith("weekly 2026-W46")


def test_monthly_and_yearly():
    # One on the 1st of each month, m0 = 2025-12-01 back to m29 = 2023-07-01.
    backups = [Backup(f"m{i}", datetime.datetime(2025 - i // 12, 12 - i % 12, 1, tzinfo=UTC)) for i in range(30)]
    p = plan(backups, {"keep_monthly": 6, "keep_yearly": 3}, NOW, UTC)
    # The newest of each year: 2025-12 (m0, also monthly), 2024-12 (m12), 2023-12 (m24).
    assert p.keep == [f"m{i}" for i in range(6)] + ["m12", "m24"]
    assert p.reasons["m12"] == "keep: yearly 2024"


def test_keep_within():
    backups = daily(10)
    p = plan(backups, {"keep_within": "4d"}, NOW, UTC)  # back to 2026-11-18 12:00
    assert p.keep == ["b000", "b001", "b002"]


def test_incomplete_backups_never_count_and_go_after_the_grace_period():
    backups = daily(4)
    broken_new = Backup("broken-new", NOW - datetime.timedelta(hours=1), complete=False, problem="no manifest")
    broken_old = Backup("broken-old", NOW - datetime.timedelta(days=3), complete=False, problem="bad checksum")
    p = plan([*backups, broken_new, broken_old], {"keep_last": 2}, NOW, UTC, grace_seconds=86400)
    assert "broken-new" in p.keep and p.reasons["broken-new"].startswith("keep: incomplete (no manifest)")
    assert "broken-old" in p.delete and "bad checksum" in p.reasons["broken-old"]
    assert p.reasons["b000"].startswith("keep: newest complete backup")  # the incomplete newer one did not count


def test_broken_backups_refuse_deletion_unless_forced():
    old = daily(5, start=NOW - datetime.timedelta(days=10))
    p = plan(old, {"keep_last": 1}, NOW, UTC, max_age_seconds=2 * 86400)
    assert not p.delete and p.keep == [b.id for b in old]
    assert "more than max_age" in p.refused and p.reasons["b004"].startswith("keep (refused to delete)")
    forced = plan(old, {"keep_last": 1}, NOW, UTC, max_age_seconds=2 * 86400, force=True)
    assert forced.delete == [b.id for b in old[1:]]
    only_broken = [Backup("x", NOW - datetime.timedelta(days=9), complete=False)]
    assert plan(only_broken, {"keep_last": 1}, NOW, UTC).refused.startswith("no complete backup")


times = st.datetimes(
    min_value=datetime.datetime(2020, 1, 1), max_value=datetime.datetime(2026, 11, 22), timezones=st.just(UTC)
)
backup_sets = st.lists(st.tuples(times, st.booleans()), max_size=60, unique_by=lambda t: t[0]).map(
    lambda items: [Backup(f"id{i}", t, complete) for i, (t, complete) in enumerate(items)]
)
policies = st.fixed_dictionaries(
    {k: st.integers(0, 6) for k in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly")}
).filter(lambda p: any(p.values()))


@settings(max_examples=300, deadline=None)  # no per-example deadline: CI runs it beside the scenarios
@given(backup_sets, policies, st.sampled_from([UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")]))
def test_properties(backups, policy, tz):
    p = plan(backups, policy, NOW, tz, grace_seconds=3600)
    ids = {b.id for b in backups}
    assert set(p.keep) | set(p.delete) == ids and not set(p.keep) & set(p.delete)  # every backup, once
    assert set(p.reasons) == ids
    complete = sorted((b for b in backups if b.complete), key=lambda b: b.time, reverse=True)
    if complete:
        assert complete[0].id in p.keep  # the newest complete backup is always kept
    # Stable: planning again over what is left deletes nothing more.
    left = [b for b in backups if b.id in p.keep]
    assert plan(left, policy, NOW, tz, grace_seconds=3600).delete == []


def test_manifest_checks():
    good = {"id": "b1", "time": "2026-11-21T02:00:00+00:00", "files": [{"name": "app.dump", "size": 10}]}
    assert check_manifest("b1", good, {"app.dump": 10, MANIFEST: 99}) == (True, "")
    assert check_manifest("b1", None, {}) == (False, "no manifest")
    assert check_manifest("b1", good, {}) == (False, "app.dump is missing")
    assert check_manifest("b1", good, {"app.dump": 9}) == (False, "app.dump has 9 bytes, the manifest says 10")
    assert check_manifest("b2", good, {"app.dump": 10}) == (False, "manifest names backup 'b1'")
    assert check_manifest("b1", {"files": "x"}, {}) == (False, "manifest unreadable")


def test_times_need_an_offset():
    assert parse_time("2026-11-21T02:00:00Z", "b1") == datetime.datetime(2026, 11, 21, 2, tzinfo=UTC)
    with pytest.raises(RotateError, match="has no timezone offset"):
        parse_time("2026-11-21T02:00:00", "b1")


def test_batches_of_1000():
    assert [len(b) for b in batched(range(2500))] == [1000, 1000, 500]
    assert batched([]) == []


# --- planning from the listing (S3, lazy manifests) -----------------------------------------------------------------
def test_id_time():
    assert id_time("20261125T021500Z") == datetime.datetime(2026, 11, 25, 2, 15, tzinfo=UTC)
    assert id_time("b1") is None and id_time("20261125T021500") is None


@settings(max_examples=300, deadline=None)  # no per-example deadline: CI runs it beside the scenarios
@given(backup_sets, policies, st.sets(st.integers(0, 59), max_size=10))
def test_plan_verified_equals_plan_on_verified_backups(backups, policy, broken):
    """Planning from the listing, reading only the kept manifests, decides as reading every manifest would; a
    backup whose manifest turns out bad (ids in `broken`) is never kept as complete."""
    truth = {b.id: b for b in backups}
    for i in broken:
        if f"id{i}" in truth:
            truth[f"id{i}"] = Backup(f"id{i}", truth[f"id{i}"].time, False, "sizes differ")
    listed = [Backup(b.id, b.time, True, "", verified=False) if b.complete else b for b in backups]
    read = []

    def verify(backup_id):
        read.append(backup_id)
        return truth[backup_id]

    lazy = plan_verified(listed, verify, policy, NOW, UTC, grace_seconds=3600)
    full = plan(list(truth.values()), policy, NOW, UTC, grace_seconds=3600)
    complete_truth = [b for b in truth.values() if b.complete]
    if not lazy.refused and not full.refused:
        # Kept sets agree on complete backups; only never-read broken ones may be deleted sooner (they have a
        # manifest, so they are not an upload in progress).
        assert {i for i in lazy.keep if truth[i].complete} == {i for i in full.keep if truth[i].complete}
    listed_ids = {b.id: b for b in listed}
    assert {i for i in lazy.keep if not listed_ids[i].verified} <= set(read)  # nothing kept unread
    assert all(truth[i].complete or "incomplete" in lazy.reasons[i] for i in lazy.keep if not lazy.refused)
    assert set(read) <= {b.id for b in listed if not b.verified}
    if complete_truth:
        newest = max(complete_truth, key=lambda b: (b.time, b.id))
        assert newest.id in lazy.keep


def test_plan_verified_reads_only_what_it_keeps():
    hourly = [
        Backup(
            f"{(NOW - datetime.timedelta(hours=h)):%Y%m%dT%H%M%SZ}",
            NOW - datetime.timedelta(hours=h),
            True,
            "",
            verified=False,
        )
        for h in range(1, 2001)
    ]
    read = []

    def verify(backup_id):
        read.append(backup_id)
        return Backup(backup_id, id_time(backup_id), True, "")

    decided = plan_verified(hourly, verify, {"keep_last": 3, "keep_daily": 7}, NOW, UTC)
    assert sorted(read) == sorted(decided.keep) and len(read) == 9
    assert len(decided.delete) == 2000 - 9


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/", "system directory"),
        ("/var", "system directory"),
        ("/var/backups", "system directory"),
        ("/home", "system directory"),
        ("var/backups", "absolute"),
        ("/srv/b/", "normalised"),
        ("/srv/../etc", "normalised"),
        ("/srv/b\nx", "one line"),
        (None, "absolute"),
    ],
)
def test_base_dir_problem(path, needle):
    assert needle in base_dir_problem(path)


def test_a_dedicated_directory_is_fine():
    assert base_dir_problem("/var/backups/selfhosted") == ""


def test_expired_versions_take_only_what_a_delete_hid_never_an_overwritten_or_current_version():
    from ansible_collections.selfhosted.stack.plugins.module_utils._backup_rotate import expired_versions

    t = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def v(key, version, when, latest=False, marker=False):
        return {"Key": key, "VersionId": version, "LastModified": when, "IsLatest": latest, "Marker": marker}

    p = "db1/postgresql/"
    entries = [
        # overwritten twice (a stolen writer key would): every version stays, however old
        v(p + "20261001T000000Z/a", "v1", t), v(p + "20261001T000000Z/a", "v2", t + day),
        v(p + "20261001T000000Z/a", "v3", t + 2 * day, latest=True),
        # rotated on day 2: the version and then the marker go
        v(p + "20261002T000000Z/m", "x1", t), v(p + "20261002T000000Z/m", "dm", t + 2 * day, latest=True, marker=True),
        # overwritten on day 1, rotated on day 2: what the delete hid goes; the overwritten one and the marker stay
        v(p + "20261004T000000Z/o", "o1", t), v(p + "20261004T000000Z/o", "o2", t + day),
        v(p + "20261004T000000Z/o", "om", t + 2 * day, latest=True, marker=True),
        # not ours: outside a backup id, or outside the prefix
        v(p + "restore-tmp/a", "r1", t), v(p + "restore-tmp/a", "rm", t + day, latest=True, marker=True),
        v("db1/other/20261001T000000Z/a", "q1", t),
        v("db1/other/20261001T000000Z/a", "qm", t + day, latest=True, marker=True),
        # a marker dated in the future (a clock ahead) expires nothing
        v(p + "20261003T000000Z/f", "f1", t),
        v(p + "20261003T000000Z/f", "fm", t + 400 * day, latest=True, marker=True),
    ]  # fmt: skip
    now = t + 10 * day
    assert expired_versions(entries, p, now, 7 * 86400) == [
        {"Key": p + "20261002T000000Z/m", "VersionId": "x1"},
        {"Key": p + "20261002T000000Z/m", "VersionId": "dm"},
        {"Key": p + "20261004T000000Z/o", "VersionId": "o2"},
    ]
    assert expired_versions(entries, p, t + 8 * day, 7 * 86400) == []  # deleted 6 days ago: the way back is open
    assert expired_versions(entries, p, now, 10**12) == []
    assert expired_versions([], p, now, 0) == []
