"""The nestjs-bullmq reference stack end to end: both API instances of the one API host through nginx, jobs of
three queues through the worker on its own host with each queue's own concurrency, no scheduler anywhere."""

import json
import time

import labcheck

LB, API, WORKER, DATA = "nb-lb1", "nb-api1", "nb-worker1", "nb-data1"
SECRETS = [
    "lab-nb-pg-api-F6t3Yn",
    "lab-nb-redis-api-C9k4Pw",
    "lab-nb-redis-admin-M8v2Qd",
    "lab-nb-redis-exporter-L5h7Xs",
]


def get(path, method="GET", data=None):
    """A request through nginx on the lb host; returns (status, parsed JSON body or text)."""
    body = f"-H 'Content-Type: application/json' -d '{json.dumps(data)}'" if data is not None else ""
    out = labcheck.host(LB).check_output(
        f"curl -sk -o /tmp/body -w '%{{http_code}}' -X {method} {body} https://127.0.0.1{path}; echo; cat /tmp/body"
    )
    status, _sep, text = out.partition("\n")
    try:
        return int(status), json.loads(text)
    except ValueError:
        return int(status), text


def test_both_api_instances_run_as_their_own_units_and_are_upstreams():
    api = labcheck.host(API)
    for port in (3000, 3001):
        assert api.service(f"api-web@{port}.service").is_running
        assert api.service(f"api-web@{port}.service").is_enabled
    conf = labcheck.host(LB).file("/etc/nginx/nginx.conf").content_string
    address = labcheck.address(API)
    assert f"server {address}:3000 " in conf and f"server {address}:3001 " in conf


def test_requests_through_nginx_reach_both_instances():
    seen = {get("/version")[1]["instance"] for _i in range(20)}
    assert seen == {f"{API}:3000", f"{API}:3001"}, seen
    status, body = get("/ready")
    assert status == 200, body


def test_each_queue_runs_at_its_own_concurrency_on_the_worker_host():
    started = time.time()
    jobs = {
        queue: [get(f"/api/queues/{queue}/jobs", "POST", {"ms": 1200})[1]["id"] for _i in range(count)]
        for queue, count in (("emails", 8), ("reports", 4), ("webhooks", 4))
    }

    def results():
        out = {q: [get(f"/api/queues/{q}/jobs/{i}")[1] for i in ids] for q, ids in jobs.items()}
        return out if all(r.get("done") for rs in out.values() for r in rs) else None

    assert labcheck.wait_for(results, 90, 0.5)
    done = results()
    assert {r["result"]["by"] for rs in done.values() for r in rs} == {WORKER}
    slots = {q: {r["result"]["slot"] for r in rs} for q, rs in done.items()}
    # emails x8: all eight at once; reports x2: two slots; webhooks x4: four.
    assert slots == {"emails": set(range(8)), "reports": {0, 1}, "webhooks": {0, 1, 2, 3}}, slots
    # 4 reports of 1.2 s two at a time take about 2.4 s; 8 emails at once about 1.2 s.
    finished = {q: max(r["result"]["finished_at"] for r in rs) - started for q, rs in done.items()}
    assert finished["emails"] < finished["reports"] < 20, finished
    log = labcheck.host(WORKER).check_output("journalctl -u api-worker --no-pager -o cat")
    assert "emails x8, reports x2, webhooks x4" in log


def test_no_scheduler_runs_anywhere():
    for name in (API, WORKER):
        assert not labcheck.host(name).file("/etc/systemd/system/api-beat.service").exists


def test_check_mode_is_clean_and_secret_free():
    labcheck.assert_check_mode_clean(SECRETS)
