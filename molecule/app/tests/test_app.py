"""The app tier: the demo app through nginx, a task through the worker, one scheduler, releases, rollback,
a worker stop that lets a running task finish, and an offline host installing from the wheelhouse."""

import json
import os
import subprocess
import time

import labcheck

testinfra_hosts = labcheck.hosts("app")
LB = "app-lb"
CURL = "curl -sk --resolve app.lab.test:443:127.0.0.1"
SECRETS = ["lab-app-db-Zx7c9Vb2", "lab-app-redis-Lp4k2Mn8", "lab-redis-exporter-Hy5t3Q", "lab-grafana-admin-Pz8wK2"]


def through_nginx(path, method="GET", data=None):
    body = f"-H 'Content-Type: application/json' -d '{json.dumps(data)}'" if data is not None else ""
    out = labcheck.host(LB).check_output(f"{CURL} -X {method} {body} -w '\\n%{{http_code}}' https://app.lab.test{path}")
    text, _sep, code = out.rpartition("\n")
    return int(code), text


def sql(query):
    return labcheck.host("app-db").check_output(f'sudo -u postgres psql -d app -XAtc "{query}"')


wait_for = labcheck.wait_for


def test_release_layout_and_hardened_unit(host):
    assert host.file("/opt/app/current").linked_to == "/opt/app/releases/1.0.0"
    env = host.file("/opt/app/shared/env")
    assert env.mode == 0o600 and env.user == "app"
    props = host.check_output("systemctl show app-web@8000 -p NoNewPrivileges -p ProtectSystem -p User -p PrivateTmp")
    assert "NoNewPrivileges=yes" in props and "ProtectSystem=strict" in props and "User=app" in props
    assert host.service("app-web@8000").is_running


def test_second_instance_runs_and_is_an_upstream():
    app1 = labcheck.host("app1")
    assert app1.service("app-web@8001").is_running
    assert app1.check_output("curl -s http://127.0.0.1:8001/health").startswith("{")
    conf = labcheck.host(LB).file("/etc/nginx/nginx.conf").content_string
    app1_address = labcheck.address("app1")
    assert f"server {app1_address}:8000 " in conf and f"server {app1_address}:8001 " in conf
    assert labcheck.can_connect(LB, app1_address, 8001)


def test_ready_through_nginx():
    code, text = through_nginx("/ready")
    assert code == 200, text
    assert json.loads(text)["checks"] == {"postgresql": "ok", "redis": "ok"}


def test_both_app_hosts_serve():
    assert {json.loads(through_nginx("/version")[1])["version"] for _i in range(6)} == {"1.0.0"}
    for name in ("app1", "app2"):
        h = labcheck.host(name)
        assert h.check_output("curl -s http://127.0.0.1:8000/health").startswith("{")
        metrics = h.check_output("curl -s http://127.0.0.1:8000/metrics")
        assert 'http_requests_total{method="GET",status="200"}' in metrics
        assert "http_request_duration_seconds_bucket" in metrics and "http_requests_inprogress" in metrics


def test_a_request_enqueues_a_task_the_worker_completes():
    code, text = through_nginx("/api/items", "POST", {"payload": "hello"})
    assert code == 201, text
    item = json.loads(text)["id"]
    assert wait_for(lambda: sql(f"SELECT processed_by FROM items WHERE id = {item}") == "app-worker", 60)


def test_migrations_ran_once():
    assert sql("SELECT count(*) FROM migrations WHERE release = '1.0.0'") == "1"


def test_heartbeat_advances_from_exactly_one_scheduler():
    before = int(sql("SELECT count(*) FROM heartbeats"))
    assert wait_for(lambda: int(sql("SELECT count(*) FROM heartbeats")) >= before + 2, 30)
    assert sql("SELECT string_agg(DISTINCT scheduler_host, ',') FROM heartbeats") == "app-worker"
    for name in ("app1", "app2"):
        assert not labcheck.host(name).service("app-beat").is_running


def test_offline_host_installed_from_the_wheelhouse():
    app2 = labcheck.host("app2")
    assert app2.run("curl -s -m 5 -o /dev/null https://pypi.org/simple/").rc != 0  # really offline
    assert app2.file("/opt/app/releases/1.0.0/wheelhouse").is_directory
    assert app2.file("/opt/app/releases/1.0.0/.installed").exists


def test_check_mode_changes_nothing_and_shows_no_secret():
    labcheck.assert_check_mode_clean(SECRETS)


def test_stopping_a_worker_lets_the_running_task_finish():
    code, text = through_nginx("/api/slow", "POST", {"seconds": 12})
    assert code == 201, text
    row = json.loads(text)["id"]
    time.sleep(4)  # the worker has picked it up
    worker = labcheck.host("app-worker")
    started = time.monotonic()
    assert worker.run("systemctl restart app-worker").rc == 0  # returns once the old worker has stopped
    assert time.monotonic() - started >= 5  # it waited for the task
    # The task finished before the old worker stopped: it was not killed mid-way and redelivered.
    assert sql(f"SELECT finished_at IS NOT NULL FROM slow_tasks WHERE id = {row}") == "t"


# --- rollouts under load (playbooks/deploy.yml, rollback.yml) ------------------------------------------------
# tests/loadgen.py runs on the lb host, sending GET /version through nginx (TLS, keep-alive) from 4 threads for the
# whole rollout; its counts are the proof of "zero failed requests".
APP_HOSTS = ("app1", "app2", "app-worker")


def current(name):
    return labcheck.host(name).file("/opt/app/current").linked_to.rsplit("/", 1)[-1]


def history(name):
    return json.loads(labcheck.host(name).file("/opt/app/releases.json").content_string)


def metric_gate(bound):
    """Extra vars for a bake with a metric gate, evaluated on the monitoring host (Prometheus is closed to others)."""
    # "or vector(0)": without any 5xx the numerator has no series, and the ratio would be "no data".
    ratio = (
        '(sum(rate(http_requests_total{job="app",status=~"5.."}[1m])) or vector(0))'
        ' / sum(rate(http_requests_total{job="app"}[1m]))'
    )
    return json.dumps({
        "rollout_bake_seconds": 6, "rollout_metrics_interval": 3, "rollout_metrics_host": "app-mon",
        "rollout_prometheus_url": "http://127.0.0.1:9090",
        "rollout_metrics": [{"name": "5xx ratio", "query": ratio, "bound": bound, "on_empty": "fail"}],
    })  # fmt: skip


def test_good_deploy_under_load_fails_no_request():
    with labcheck.Load(LB, "good") as load:
        rc, out = labcheck.playbook("deploy.yml", "-e", "app_release=1.1.0", "-e", metric_gate("< 0.01"))
    assert rc == 0, out
    assert out.count("ok: [app1 -> app-mon]") + out.count("ok: [app2 -> app-mon]") == 2, out  # a gate per batch
    labcheck.assert_no_request_failed(load)
    assert {name: current(name) for name in APP_HOSTS} == dict.fromkeys(APP_HOSTS, "1.1.0")
    assert set(load.result["versions"]) == {"1.0.0", "1.1.0"}, load.result  # traffic moved over during the run
    assert {json.loads(through_nginx("/version")[1])["version"] for _i in range(6)} == {"1.1.0"}
    assert sql("SELECT count(*) FROM migrations WHERE release = '1.1.0'") == "1"  # once, whatever the host count
    for name in APP_HOSTS:
        h = labcheck.host(name)
        assert h.file("/opt/app/releases/1.0.0").is_directory  # kept for rollback
        assert ("1.1.0", "good") in [(e["release"], e["result"]) for e in history(name)]
        record = json.loads(h.file("/opt/app/last-rollout.json").content_string)
        assert record["result"] == "success" and record["host"]["now"] == "1.1.0"
        prom = h.file("/var/lib/prometheus/node-exporter/selfhosted_rollout_app.prom").content_string
        assert 'selfhosted_release_info{app="app",release="1.1.0"} 1' in prom
        assert 'selfhosted_rollout_last_success{app="app",kind="deploy"} 1' in prom
    assert labcheck.host("app-worker").service("app-worker").is_running
    assert labcheck.host(LB).file("/etc/nginx/selfhosted-drained.json").content_string.strip() == "[]"


def test_bad_release_is_stopped_at_the_canary_and_rolled_back_under_load():
    worker_pid = labcheck.host("app-worker").check_output("systemctl show -p MainPID --value app-worker")
    with labcheck.Load(LB, "bad") as load:
        rc, out = labcheck.playbook("deploy.yml", "-e", "app_release=1.1.1")
    assert rc != 0, out
    assert "Deploy FAILED: app1 (switching to 1.1.1): health gate failed for http://127.0.0.1:8000/ready" in out, out
    assert "status 503" in out and "Every switched host is back on its previous release" in out, out
    labcheck.assert_no_request_failed(load)
    assert "1.1.1" not in load.result["versions"], load.result  # no request ever reached the bad release
    assert {name: current(name) for name in APP_HOSTS} == dict.fromkeys(APP_HOSTS, "1.1.0")
    for name in APP_HOSTS:
        latest = {e["release"]: e["result"] for e in history(name) if e["result"]}
        assert latest["1.1.1"] == "failed" and latest["1.1.0"] == "good", latest  # never picked as good
        record = json.loads(labcheck.host(name).file("/opt/app/last-rollout.json").content_string)
        assert record["result"] == "rolled_back" and record["back_seconds"] > 0
    # The canary failed: app2 and the worker were never switched.
    for name in ("app2", "app-worker"):
        assert "1.1.1" not in [e["release"] for e in history(name) if e["event"] == "activated"]
    assert labcheck.host("app-worker").check_output("systemctl show -p MainPID --value app-worker") == worker_pid
    assert labcheck.host(LB).file("/etc/nginx/selfhosted-drained.json").content_string.strip() == "[]"
    prom = labcheck.host("app1").file("/var/lib/prometheus/node-exporter/selfhosted_rollout_app.prom").content_string
    assert 'selfhosted_rollout_rolled_back{app="app"} 1' in prom
    # ... which the node exporter publishes and Prometheus turns into the DeployRolledBack alert.
    assert wait_for(lambda: "app1" in firing("DeployRolledBack"), 60), firing("DeployRolledBack")


def firing(alertname):
    """Instances for which Prometheus (on app-mon) has the alert firing."""
    out = labcheck.host("app-mon").check_output(
        "curl -s http://127.0.0.1:9090/api/v1/query --data-urlencode "
        f'\'query=ALERTS{{alertname="{alertname}",alertstate="firing"}}\''
    )
    return {r["metric"].get("instance") for r in json.loads(out)["data"]["result"]}


def test_rollback_returns_every_host_to_the_previous_good_release_under_load():
    with labcheck.Load(LB, "rollback") as load:
        rc, out = labcheck.playbook("rollback.yml")  # no version named
    assert rc == 0, out
    labcheck.assert_no_request_failed(load)
    assert {name: current(name) for name in APP_HOSTS} == dict.fromkeys(APP_HOSTS, "1.0.0")
    assert {json.loads(through_nginx("/version")[1])["version"] for _i in range(6)} == {"1.0.0"}
    for name in APP_HOSTS:
        assert ("1.1.0", "rolled_back") in [(e["release"], e["result"]) for e in history(name)]


def test_an_interrupted_deploy_is_completed_by_a_second_run():
    # Kill the deploy once the canary switched: mixed releases, the canary possibly out of rotation.
    proc = subprocess.Popen(
        [
            "ansible-playbook",
            "-i",
            labcheck.INVENTORY,
            os.path.join(labcheck.SCENARIO_DIR, "deploy.yml"),
            "-e",
            "app_release=1.1.0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: current("app1") == "1.1.0", 300, step=0.5)
    finally:
        labcheck.kill_tree(proc)
    assert current("app2") == "1.0.0"
    rc, out = labcheck.playbook("deploy.yml", "-e", "app_release=1.1.0")
    assert rc == 0, out
    assert "MIXED RELEASES" in out, out
    assert {name: current(name) for name in APP_HOSTS} == dict.fromkeys(APP_HOSTS, "1.1.0")
    assert labcheck.host(LB).file("/etc/nginx/selfhosted-drained.json").content_string.strip() == "[]"
    assert {json.loads(through_nginx("/version")[1])["version"] for _i in range(6)} == {"1.1.0"}


def test_a_failed_metric_gate_during_the_bake_rolls_the_live_batch_back():
    # The canary passes its health gate and serves; the metric gate (an impossible bound) fails during its bake.
    with labcheck.Load(LB, "metric") as load:
        rc, out = labcheck.playbook("deploy.yml", "-e", "app_release=1.0.0", "-e", metric_gate("< -1"))
    assert rc != 0, out
    assert "app1 (baking app1)" in out and "metric gate failed" in out and "5xx ratio = 0, bound < -1" in out, out
    labcheck.assert_no_request_failed(load)
    assert {name: current(name) for name in APP_HOSTS} == dict.fromkeys(APP_HOSTS, "1.1.0")
    assert labcheck.host(LB).file("/etc/nginx/selfhosted-drained.json").content_string.strip() == "[]"


def test_bad_rollout_input_is_refused_before_anything_changes():
    rc, out = labcheck.playbook("deploy.yml", "-e", "app_release=1.0.0", "-e", '{"rollout_batches": [0]}')
    assert rc != 0, out
    assert "rollout_batches entries must be a number of hosts" in out, out
    assert all(c["changed"] == 0 for c in labcheck.recap(out).values()), out
    rc, out = labcheck.playbook("deploy.yml", "-e", '{"rollout_batches": ["100%"]}', "-e", "app_release=1.0.0")
    assert rc != 0 and "would take every web host out of rotation" in out, out
    assert all(c["changed"] == 0 for c in labcheck.recap(out).values()), out
    assert current("app1") == "1.1.0"


def test_two_schedulers_are_refused_before_anything_changes():
    extra = os.path.join(labcheck.SCENARIO_DIR, "overlays", "two-schedulers.yml")  # adds app1 to the beat group
    rc, out = labcheck.playbook("converge.yml", "-i", extra, "--tags", "beat_preflight")
    assert rc != 0, out
    assert "Exactly one host may run the scheduler" in out and "app1" in out, out
    assert all(c["changed"] == 0 for c in labcheck.recap(out).values()), out


def test_bad_input_for_one_role_stops_every_host_before_any_change():
    # A whole run (preflight.yml first): the cache host's bad input stops all hosts, the valid change to every
    # host's timezone is not made anywhere.
    rc, out = labcheck.playbook("converge.yml", "-e", "redis_maxmemory=lots", "-e", "common_timezone=Europe/Paris")
    assert rc != 0, out
    assert "redis_maxmemory must be a size" in out, out
    counts = labcheck.recap(out)
    assert set(counts) >= set(labcheck.hosts("all")), out
    assert all(c["changed"] == 0 for c in counts.values()), out
    assert labcheck.host("app1").file("/etc/localtime").linked_to != "/usr/share/zoneinfo/Europe/Paris"
