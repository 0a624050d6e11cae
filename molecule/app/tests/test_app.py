"""The app tier: the demo app through nginx, a task through the worker, one scheduler, releases, rollback,
a worker stop that lets a running task finish, and an offline host installing from the wheelhouse."""

import json
import os
import time

import labcheck

testinfra_hosts = labcheck.hosts("app")
LB = "app-lb"
CURL = "curl -sk --resolve app.lab.test:443:127.0.0.1"
SECRETS = ["lab-app-db-Zx7c9Vb2", "lab-app-redis-Lp4k2Mn8"]


def through_nginx(path, method="GET", data=None):
    body = f"-H 'Content-Type: application/json' -d '{json.dumps(data)}'" if data is not None else ""
    out = labcheck.host(LB).check_output(f"{CURL} -X {method} {body} -w '\\n%{{http_code}}' https://app.lab.test{path}")
    text, _sep, code = out.rpartition("\n")
    return int(code), text


def sql(query):
    return labcheck.host("app-db").check_output(f'sudo -u postgres psql -d app -XAtc "{query}"')


def wait_for(predicate, timeout=60, step=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


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


def test_new_release_keeps_the_previous_and_rollback_returns_to_it():
    rc, out = labcheck.playbook("deploy.yml", "-e", "app_release=1.1.0")
    assert rc == 0, out
    for name in ("app1", "app2", "app-worker"):
        h = labcheck.host(name)
        assert h.file("/opt/app/current").linked_to == "/opt/app/releases/1.1.0"
        assert h.file("/opt/app/releases/1.0.0").is_directory  # kept for rollback
    assert {json.loads(through_nginx("/version")[1])["version"] for _i in range(6)} == {"1.1.0"}
    assert sql("SELECT count(*) FROM migrations") == "2"

    rc, out = labcheck.playbook("rollback.yml")  # no version named
    assert rc == 0, out
    for name in ("app1", "app2", "app-worker"):
        assert labcheck.host(name).file("/opt/app/current").linked_to == "/opt/app/releases/1.0.0"
    assert wait_for(lambda: through_nginx("/version")[0] == 200, 30)
    assert {json.loads(through_nginx("/version")[1])["version"] for _i in range(6)} == {"1.0.0"}
    history = json.loads(labcheck.host("app1").file("/opt/app/releases.json").content_string)
    assert ("1.1.0", "rolled_back") in [(e["release"], e["result"]) for e in history]


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
