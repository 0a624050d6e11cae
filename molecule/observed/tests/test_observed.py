"""python-observed as a whole (the vm hosts and the compose host from one inventory and one site.yml): a second run
changes nothing anywhere and recreates no container; check mode is clean and shows no secret; bad input is refused
before anything changes. (Files run in name order: these come first, before any deploy.)"""

import labcheck
from test_observed_compose import SECRETS, containers

HOSTS = ["po-lb1", "po-app1", "po-worker1", "po-data1", "po-mon1", "po-dock1"]
testinfra_hosts = ["po-lb1"]


def test_second_site_run_changes_nothing_and_recreates_no_container():
    # The scenario's idempotence check (molecule.yml leaves Molecule's own step out): changed=0 on every host, and
    # the compose half keeps every container (same IDs).
    ids = {c["Name"]: c["ID"] for c in containers()}
    rc, out = labcheck.playbook("converge.yml")
    assert rc == 0, out
    recap = labcheck.recap(out)
    assert sorted(recap) == sorted(HOSTS), out
    assert {h: r["changed"] for h, r in recap.items()} == dict.fromkeys(HOSTS, 0), out
    assert {c["Name"]: c["ID"] for c in containers()} == ids


def test_check_mode_is_clean_and_shows_no_secret():
    labcheck.assert_check_mode_clean(SECRETS)


def test_bad_input_is_refused_before_anything_changes():
    labcheck.assert_refused_in_preflight(
        "compose_preflight",
        '{"compose_rollout_max_surge": 0, "compose_rollout_max_unavailable": 0}',
        "compose_rollout_max_surge",
    )
    labcheck.assert_refused_in_preflight("postgresql_preflight", "postgresql_compose_superuser_password=short",
                                         "postgresql_compose_superuser_password")  # fmt: skip
    # No S3 in this stack: a retention for "the host's copies next to S3" would be ignored, so it is refused.
    labcheck.assert_refused_in_preflight("backup_preflight", '{"backup_local_retention": {"keep_daily": 7}}',
                                         "backup_local_retention")  # fmt: skip
