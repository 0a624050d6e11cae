"""PostgreSQL: scram-only logins from allowed hosts, memory-aware settings, pg_stat_statements, reload vs
restart, the major-version guard, and secrets kept out of --diff."""

import json

import labcheck
import pytest

testinfra_hosts = labcheck.hosts("db")
APP_PASSWORD = "lab-pg-app-Vb6nE2rK9"
SECRETS = [APP_PASSWORD, "lab-pg-exporter-Tq4wZ7m"]
VERSIONS = {"12": "15", "13": "17"}
APP = "core-app13"  # a permitted client


def sql(host, query, db="postgres"):
    return host.check_output(f'sudo -u postgres psql -d {db} -XAtc "{query}"')


def psql_from(src, address, user, password, query="SELECT current_user", db="app"):
    cmd = f"PGCONNECT_TIMEOUT=3 PGPASSWORD={password} psql -h {address} -U {user} -d {db} -XAtc '{query}'"
    return labcheck.host(src).run(cmd)


def test_release_version(host):
    release = host.system_info.release.split(".")[0]
    assert sql(host, "SHOW server_version_num")[:2] == VERSIONS[release]


def test_app_host_logs_in_with_scram():
    for db in labcheck.hosts("db"):
        result = psql_from("core-app13", labcheck.address(db), "app", APP_PASSWORD)
        assert result.rc == 0, result.stderr
        assert result.stdout.strip() == "app"


def test_wrong_password_is_refused():
    result = psql_from("core-app13", labcheck.address("core-data12"), "app", "wrong-password-123")
    assert result.rc != 0 and "password authentication failed" in result.stderr


def test_lb_host_is_refused():
    for db in labcheck.hosts("db"):
        assert not labcheck.can_connect("core-lb12", labcheck.address(db), 5432)


def test_pg_hba_refuses_addresses_not_in_allowed_groups(host):
    # Past the firewall (from the db host itself, to its own network address), pg_hba has no entry for it.
    name = host.backend.get_hostname()
    result = psql_from(name, labcheck.address(name), "app", APP_PASSWORD)
    assert result.rc != 0 and "no pg_hba.conf entry" in result.stderr


def test_only_scram_and_peer(host):
    methods = set(sql(host, "SELECT DISTINCT auth_method FROM pg_hba_file_rules").split())
    assert methods <= {"scram-sha-256", "peer"}
    assert sql(host, "SHOW password_encryption") == "scram-sha-256"
    stored = sql(host, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
    assert stored.startswith("SCRAM-SHA-256$")


def test_memory_aware_settings(host):
    # postgresql_memory_mb: 1024 in this scenario
    assert sql(host, "SHOW shared_buffers") == "256MB"
    assert sql(host, "SHOW effective_cache_size") == "768MB"
    assert sql(host, "SHOW maintenance_work_mem") == "64MB"
    assert sql(host, "SHOW work_mem") == "4MB"


def test_pg_stat_statements_collects(host):
    assert "pg_stat_statements" in sql(host, "SHOW shared_preload_libraries")
    assert int(sql(host, "SELECT count(*) FROM pg_stat_statements", db="app")) > 0


def test_exporter_can_monitor_but_not_read_data(host):
    name = host.backend.get_hostname()
    sql(host, "CREATE TABLE IF NOT EXISTS secret_stuff (x int)", db="app")
    sql(host, "ALTER TABLE secret_stuff OWNER TO app", db="app")
    address = labcheck.address(name)
    ok = psql_from(APP, address, "exporter", SECRETS[1], "SELECT count(*) FROM pg_stat_activity")
    assert ok.rc == 0, ok.stderr
    denied = psql_from(APP, address, "exporter", SECRETS[1], "SELECT * FROM secret_stuff")
    assert denied.rc != 0 and "permission denied" in denied.stderr


def test_databases_closed_to_other_users(host):
    assert "gone" not in sql(host, "SELECT rolname FROM pg_roles").split()
    acl = sql(host, "SELECT datacl FROM pg_database WHERE datname = 'app'").strip("{}").split(",")
    grants = {entry.split("=")[0]: entry.split("=")[1].split("/")[0] for entry in acl}
    assert "c" not in grants.get("", "")  # PUBLIC (the empty grantee) may not CONNECT
    assert "c" in grants["exporter"]


def test_reload_for_reload_settings_and_restart_for_restart_settings():
    # The role's configure and run steps decide reload or restart: only those run (the rest of the core converge is
    # the same each time).
    steps = ("--tags", "postgresql_configure,postgresql_run")
    db = labcheck.host("core-data12")
    started = sql(db, "SELECT pg_postmaster_start_time()")
    rc, out = labcheck.playbook("converge.yml", *steps, "-e", '{"postgresql_settings": {"work_mem": "8MB"}}')
    assert rc == 0, out
    assert sql(db, "SHOW work_mem") == "8MB"
    assert sql(db, "SELECT pg_postmaster_start_time()") == started  # reloaded, not restarted
    rc, out = labcheck.playbook("converge.yml", *steps, "-e", '{"postgresql_max_connections": 120}')
    assert rc == 0, out
    assert sql(db, "SHOW max_connections") == "120"
    assert sql(db, "SELECT pg_postmaster_start_time()") != started  # restarted
    rc, out = labcheck.playbook("converge.yml", *steps)  # back to the scenario's settings
    assert rc == 0, out
    assert sql(db, "SHOW max_connections") == "100"


def test_the_cluster_fact_lists_the_clusters_and_who_looked(host):
    # The preflight reads the clusters from this custom fact (gathered as root) instead of searching; the fact
    # names the user it ran as, because only root sees into the data directories (the preflight then searches).
    release = host.system_info.release.split(".")[0]
    fact = json.loads(host.check_output("/etc/ansible/facts.d/selfhosted_postgresql.fact"))
    assert fact == {"uid": 0, "clusters": [f"/var/lib/postgresql/{VERSIONS[release]}/main/PG_VERSION"]}
    unprivileged = host.check_output(
        "setpriv --reuid=nobody --regid=nogroup --clear-groups /etc/ansible/facts.d/selfhosted_postgresql.fact"
    )
    assert json.loads(unprivileged)["uid"] != 0
    assert host.file("/etc/ansible/facts.d/selfhosted_postgresql.fact").user == "root"
    assert host.file("/etc/ansible/facts.d/selfhosted_postgresql.fact").mode == 0o755


def test_major_version_change_is_refused_before_anything_changes():
    # One db host finds its cluster through the custom fact, the other (fact not executable: read as a broken
    # static fact) through the search: both refuse.
    fact = "/etc/ansible/facts.d/selfhosted_postgresql.fact"
    labcheck.host("core-data12").run_expect([0], f"chmod 0644 {fact}")
    try:
        rc, out = labcheck.playbook("converge.yml", "-e", "postgresql_version=16")
    finally:
        labcheck.host("core-data12").run_expect([0], f"chmod 0755 {fact}")
    assert rc != 0, out
    assert out.count("does not upgrade major versions") >= 2 and "pg_upgradecluster" in out, out
    assert all(c["changed"] == 0 for c in labcheck.recap(out).values()), out
    for name in labcheck.hosts("db"):
        assert not labcheck.host(name).file("/var/lib/postgresql/16").exists


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ('{"postgresql_listen_addresses": ["999.1.1.1"]}', "postgresql_listen_addresses"),
        ('{"postgresql_users": [{"name": "app", "password": "short"}]}', "postgresql_users"),
        ('{"postgresql_databases": [{"name": "app", "state": "absent"}]}', "postgresql_allow_drop"),
        ("postgresql_max_connections=lots", "postgresql_max_connections"),
    ],
)
def test_bad_input_fails_before_any_change(extra, variable):
    labcheck.assert_refused_in_preflight("postgresql_preflight", extra, variable)
