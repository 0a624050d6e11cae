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
    return labcheck.request_json(LB, path, method, data)


def redis(*args):
    """redis-cli on the data host as the admin user; its output (values one per line, nil as an empty line)."""
    cmd = " ".join(["redis-cli", "--no-auth-warning", "-a", "lab-nb-redis-admin-M8v2Qd", *args])
    return labcheck.host(DATA).check_output(cmd)


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


def test_nginx_closes_idle_upstream_connections_first():
    """nginx must close an idle keep-alive connection to an app before the app does, or a request sent just as the
    app closes it fails (a 502 when no other server is in rotation). nginx_upstream_keepalive_timeout is 1 s; the
    demo API keeps idle connections 75 s, so what is gone after 3 s was closed by nginx."""
    peers = f"dst {labcheck.address(API)} '( dport = :3000 or dport = :3001 )'"
    out = labcheck.host(LB).check_output(
        "for i in 1 2 3 4 5 6; do curl -sk -o /dev/null https://127.0.0.1/version; done; "
        f"ss -Htn state established {peers} | wc -l; sleep 3; ss -Htn state established {peers} | wc -l"
    )
    kept, after = (int(n) for n in out.split())
    assert kept >= 1, out  # nginx does keep connections to the app
    assert after == 0, out


def test_each_queue_runs_at_its_own_concurrency_on_the_worker_host():
    # Each job lasts 5 s, far longer than posting all 16 takes (nginx lets /api/ through at 10 a second): "all eight
    # emails at once" needs the eighth posted before the first is done. With 1.2 s jobs, posting took longer than
    # that once while other scenarios ran side by side, and one slot took two emails.
    started = time.time()
    jobs = {
        queue: [get(f"/api/queues/{queue}/jobs", "POST", {"ms": 5000})[1]["id"] for _i in range(count)]
        for queue, count in (("emails", 8), ("reports", 4), ("webhooks", 4))
    }

    def results():
        # Read from Redis where the worker records each finished job (one call per queue): polling 16 jobs through
        # nginx every half second would run into nginx's default /api/ limit (10 r/s per address, burst 20).
        out = {q: redis("HMGET", f"q:{q}:done", *map(str, ids)).split("\n") for q, ids in jobs.items()}
        if any(len(lines) != len(jobs[q]) or not all(lines) for q, lines in out.items()):
            return None
        return {q: [json.loads(line) for line in lines] for q, lines in out.items()}

    assert labcheck.wait_for(results, 90, 0.5)
    done = results()
    assert {r["by"] for rs in done.values() for r in rs} == {WORKER}
    slots = {q: {r["slot"] for r in rs} for q, rs in done.items()}
    # emails x8: all eight at once; reports x2: two slots; webhooks x4: four.
    assert slots == {"emails": set(range(8)), "reports": {0, 1}, "webhooks": {0, 1, 2, 3}}, slots
    # The API answers for a finished job with the same record.
    sample = jobs["reports"][0]
    assert get(f"/api/queues/reports/jobs/{sample}")[1] == {"id": sample, "done": True, "result": done["reports"][0]}
    # 4 reports of 5 s with two slots take two rounds: the last finishes about a job's length after the first.
    reports = sorted(r["finished_at"] for r in done["reports"])
    assert reports[-1] - reports[0] >= 4.0, reports
    # All 16 in about two job lengths (one job at a time they would take 80 s).
    assert max(r["finished_at"] for rs in done.values() for r in rs) - started < 30
    log = labcheck.host(WORKER).check_output("journalctl -u api-worker --no-pager -o cat")
    assert "emails x8, reports x2, webhooks x4" in log


def test_no_scheduler_runs_anywhere():
    for name in (API, WORKER):
        assert not labcheck.host(name).file("/etc/systemd/system/api-beat.service").exists


def test_check_mode_is_clean_and_secret_free():
    labcheck.assert_check_mode_clean(SECRETS)
