"""python-observed, its vm half: the front end and the backend through nginx on po-lb1 (liveness /api/v1/health,
readiness /api/v1/readiness), a task done by the Celery worker on its own host, one scheduler, Prometheus with the
stack's three alerts at its thresholds and a blackbox probe of the public readiness URL, Grafana provisioning, the
nightly pg_dump kept 7 days / 4 weeks / 6 months; the compose host is left out of the vm hosts' upstreams and
scrape targets."""

import json

import labcheck

LB, APP, WORKER, DATA, MON, DOCK = "po-lb1", "po-app1", "po-worker1", "po-data1", "po-mon1", "po-dock1"
wait_for = labcheck.wait_for


def get(path, method="GET", data=None):
    """A request through nginx on the lb host; returns (status, parsed JSON body or text)."""
    return labcheck.request_json(LB, path, method, data)


def sql(query):
    return labcheck.host(DATA).check_output(f'runuser -u postgres -- psql -d app -XAtc "{query}"')


def prom_api(path):
    return json.loads(labcheck.host(MON).check_output(f"curl -s 'http://127.0.0.1:9090/api/v1/{path}'"))["data"]


def test_the_front_end_and_the_backend_answer_through_nginx():
    status, body = get("/")
    assert status == 200 and 'data-build="demo-spa"' in body, body
    status, body = get("/api/v1/health")
    assert status == 200, body
    status, body = get("/api/v1/readiness")
    assert status == 200 and body["checks"] == {"postgresql": "ok", "redis": "ok"}, body
    status, body = get("/version")
    assert status == 200 and body["version"] == "1.0.0", body
    assert labcheck.host(APP).service("app-web@8000").is_running


def test_the_compose_host_is_not_in_the_vm_upstreams_or_scrape_targets():
    conf = labcheck.host(LB).file("/etc/nginx/nginx.conf").content_string
    servers = [ln.strip() for ln in conf.splitlines() if ln.strip().startswith("server ") and ":8000" in ln]
    assert len(servers) == 1 and labcheck.address(APP) in servers[0], servers
    targets = prom_api("targets?state=active")["activeTargets"]
    assert targets and not [t for t in targets if DOCK in json.dumps(t["labels"])], targets


def test_a_task_reaches_the_worker_on_its_own_host():
    status, body = get("/api/items", "POST", {"payload": "python-observed"})
    assert status == 201, body
    item = body["id"]
    assert wait_for(lambda: sql(f"SELECT processed_by FROM items WHERE id = {item}") == WORKER, 60)
    assert not labcheck.host(APP).service("app-worker").is_running


def test_heartbeats_come_from_the_one_scheduler():
    before = int(sql("SELECT count(*) FROM heartbeats"))
    assert wait_for(lambda: int(sql("SELECT count(*) FROM heartbeats")) >= before + 2, 60, 2)
    assert sql("SELECT string_agg(DISTINCT scheduler_host, ',') FROM heartbeats") == WORKER


def test_the_three_alerts_exist_with_the_stacks_thresholds():
    rules = {r["name"]: r for g in prom_api("rules")["groups"] for r in g["rules"]}
    assert rules["InstanceDown"]["query"] == "up == 0" and rules["InstanceDown"]["duration"] == 60
    assert rules["HighErrorRate"]["query"].endswith("> 0.05"), rules["HighErrorRate"]["query"]
    assert rules["HighLatencyP95"]["query"].endswith("> 0.75"), rules["HighLatencyP95"]["query"]
    assert "http_request_duration_seconds_bucket" in rules["HighLatencyP95"]["query"]


def test_prometheus_scrapes_the_stack_and_probes_the_public_readiness_url():
    def all_up():
        targets = prom_api("targets?state=active")["activeTargets"]
        jobs = {t["labels"]["job"] for t in targets}
        return {"app", "postgres", "redis"} <= jobs and all(t["health"] == "up" for t in targets)

    assert wait_for(all_up, 90, 3), prom_api("targets?state=active")
    probes = prom_api("query?query=probe_success")["result"]
    assert [(p["metric"]["instance"], p["value"][1]) for p in probes] == [("https://po-lb1/api/v1/readiness", "1")], (
        probes
    )


def test_nightly_backups_kept_seven_days_four_weeks_six_months():
    host = labcheck.host(DATA)
    assert "OnCalendar=*-*-* 02:15:00" in host.check_output("systemctl cat selfhosted-backup.timer")
    assert host.service("selfhosted-backup.timer").is_enabled
    config = json.loads(host.file("/etc/selfhosted/backup.json").content_string)
    assert config["local_retention"] == {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6}, config
    host.check_output("/usr/local/sbin/selfhosted-backup run postgresql")
    listed = json.loads(host.check_output("/usr/local/sbin/selfhosted-backup list postgresql --source local"))
    assert listed and listed[0]["complete"], listed
