"""The whole data tier: --check --diff on converged hosts changes nothing and shows none of the vault values (the
same --check --diff run as the base's and the edge's check, labcheck.assert_check_mode_clean)."""

import labcheck
import test_postgresql
import test_redis


def test_check_diff_on_converged_hosts_changes_nothing_and_shows_no_secret():
    labcheck.assert_check_mode_clean(test_postgresql.SECRETS + test_redis.SECRETS)
