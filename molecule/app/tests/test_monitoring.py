"""Monitoring of the app scenario's stack: Prometheus on app-mon scrapes every expected target, promtool passes
the config and the rule unit tests, every shipped rule and dashboard query runs, the app panels have data after
traffic, Grafana's provisioning is written, exporters answer only the monitoring host, and stopping PostgreSQL
makes PostgresDown pending then firing. (Runs after test_app.py: the PostgreSQL stop comes last.)"""

import glob
import json
import os
import subprocess
import time

import labcheck

testinfra_hosts = labcheck.hosts("monitoring")
MON = "app-mon"
ROOT = os.path.join(labcheck.SCENARIO_DIR, "..", "..")
ALL_HOSTS = ["app-cache", "app-db", "app-lb", "app-mon", "app-worker", "app1", "app2"]


def api(path, **params):
    args = " ".join(f"--data-urlencode {json.dumps(k + '=' + v)}" for k, v in params.items())
    out = labcheck.host(MON).check_output(f"curl -sG http://127.0.0.1:9090/api/v1/{path} {args}")
    return json.loads(out)


def query(expr):
    return api("query", query=expr)


wait_for = labcheck.wait_for


def targets():
    return {(t["labels"]["job"], t["labels"]["instance"]): t for t in api("targets")["data"]["activeTargets"]}


def test_every_expected_target_is_scraped_and_up():
    expected = {("node", h) for h in ALL_HOSTS} | {
        ("app", "app1:8000"),
        ("app", "app1:8001"),
        ("app", "app2:8000"),
        ("postgres", "app-db"),
        ("redis", "app-cache"),
        ("nginx", "app-lb"),
        ("blackbox", "https://app-lb/ready"),
        ("prometheus", "app-mon"),
    }
    assert wait_for(lambda: all(t["health"] == "up" for t in targets().values()), 90), targets()
    found = targets()
    assert set(found) == expected, sorted(set(found) ^ expected)
    assert {k: v["health"] for k, v in found.items()} == dict.fromkeys(expected, "up")
    for exporter in ("pg_up", "redis_up", "nginx_up", "probe_success"):
        values = [r["value"][1] for r in query(exporter)["data"]["result"]]
        assert values == ["1"], (exporter, values)  # the exporter reaches its service, the probe the public URL
    assert api("alertmanagers")["data"]["activeAlertmanagers"], "Prometheus sends alerts to Alertmanager"


def test_promtool_checks_the_config_and_the_rule_unit_tests(host):
    subprocess.run(["docker", "cp", os.path.join(ROOT, "tests/promtool/selfhosted.rules.test.yml"), f"{MON}:/root/"],
                   check=True)  # fmt: skip
    assert host.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0
    result = host.run("promtool test rules /root/selfhosted.rules.test.yml")
    assert result.rc == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    assert host.run("amtool check-config /etc/prometheus/alertmanager.yml").rc == 0


def test_every_shipped_rule_evaluates_without_error():
    rules = [r for g in api("rules")["data"]["groups"] for r in g["rules"]]
    names = {r["name"] for r in rules}
    assert names >= {
        "InstanceDown", "HighErrorRate", "HighLatencyP95", "PostgresDown", "PostgresTooManyConnections", "RedisDown",
        "RedisMemoryNearMax", "DiskAlmostFull", "BackupTooOld", "BackupUploadFailed", "BackupRotationFailed",
        "BackupSizeDropped", "RestoreDrillFailed", "DeployRolledBack",
    }  # fmt: skip
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def dashboard_queries():
    for path in sorted(glob.glob(os.path.join(ROOT, "roles/grafana/files/dashboards/*.json"))):
        with open(path) as fh:
            dash = json.load(fh)
        for panel in dash["panels"]:
            for target in panel["targets"]:
                yield os.path.basename(path), panel["title"], target["expr"].replace("$__rate_interval", "1m")


def test_every_dashboard_query_runs_and_the_app_panels_have_data():
    lb = labcheck.host("app-lb")
    for _i in range(40):  # traffic through nginx for the app panels
        lb.run("curl -sk -o /dev/null --resolve app.lab.test:443:127.0.0.1 https://app.lab.test/version")
    time.sleep(12)  # two scrapes at 5 s
    app_panels = []
    for name, title, expr in dashboard_queries():
        answer = query(expr)
        assert answer["status"] == "success", (name, title, expr, answer)
        if "http_request" in expr:
            app_panels.append((name, title, expr, answer["data"]["result"]))
    assert len(app_panels) >= 4
    empty = [(n, t, e) for n, t, e, result in app_panels if not result and "5.." not in e]
    assert not empty, empty  # every app panel but the 5xx ratio (no errors: no data) shows the traffic


def test_grafana_provisioning_is_written(host):
    datasource = host.file("/etc/grafana/provisioning/datasources/selfhosted.yaml").content_string
    assert "uid: selfhosted-prometheus" in datasource and "url: http://127.0.0.1:9090" in datasource
    provider = host.file("/etc/grafana/provisioning/dashboards/selfhosted.yaml").content_string
    assert "path: /var/lib/grafana/dashboards/selfhosted" in provider
    shipped = sorted(
        os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "roles/grafana/files/dashboards/*.json"))
    )
    assert sorted(host.file("/var/lib/grafana/dashboards/selfhosted").listdir()) == shipped
    for name in shipped:  # the files are valid dashboards that use the provisioned datasource
        dash = json.loads(host.file(f"/var/lib/grafana/dashboards/selfhosted/{name}").content_string)
        assert dash["uid"] and all(p["datasource"]["uid"] == "selfhosted-prometheus" for p in dash["panels"])
    assert not host.package("grafana").is_installed  # grafana_install: false in the lab
    assert "lab-grafana-admin-Pz8wK2" not in host.check_output("grep -rs . /etc/grafana || true")


def test_exporters_answer_only_the_monitoring_host():
    db = labcheck.address("app-db")
    assert labcheck.can_connect(MON, db, 9187) and labcheck.can_connect(MON, db, 9100)
    assert not labcheck.can_connect("app1", db, 9187) and not labcheck.can_connect("app-lb", db, 9100)
    cache = labcheck.address("app-cache")
    assert labcheck.can_connect(MON, cache, 9121) and not labcheck.can_connect("app1", cache, 9121)


def test_stopping_postgresql_makes_postgres_down_pending_then_firing():
    db = labcheck.host("app-db")

    def state():
        result = query('ALERTS{alertname="PostgresDown"}')["data"]["result"]
        return {r["metric"]["alertstate"] for r in result}

    assert state() == set()
    db.check_output("systemctl stop postgresql")
    try:
        assert wait_for(lambda: "pending" in state(), 45), state()
        assert "firing" not in state()  # for: 1m
        assert wait_for(lambda: state() == {"firing"}, 120), state()
    finally:
        db.check_output("systemctl start postgresql")
    assert wait_for(lambda: state() == set(), 60), state()  # resolved once PostgreSQL is back
