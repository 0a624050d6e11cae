"""The node-websocket reference stack end to end.

Order matters: the idle WebSocket client starts first and is checked after the stack's tests (it must outlive
nginx's default 60 s proxy timeout); the recovery tests come after it, as a recovery restarts the web processes.
Deploys of a Node.js API under load (canary steps, then the other hosts one at a time, rollbacks) run in the
`canary` scenario: the same roles and rollout code.
"""

import json
import os
import subprocess
import time

import labcheck
import pytest

LB, DATA, OPS = "nws-lb1", "nws-data1", "nws-ops1"
APIS = ["nws-api1", "nws-api2", "nws-api3"]
HERE = os.path.dirname(os.path.abspath(__file__))
SECRETS = [
    "lab-nws-pg-api-K3v9Qm",
    "lab-nws-redis-api-P8w2Ld",
    "lab-nws-redis-admin-T4x7Hc",
    "lab-nws-backup-secret-R6p1Zs",
    "lab-nws-rotator-secret-L3v8Dc",
]
IDLE_SECONDS = 70  # longer than nginx's default proxy_read_timeout (60 s)


def lb(cmd):
    return labcheck.host(LB).check_output(cmd)


def writers_started():
    """{host/unit: when it last became active ('' when it is not active)}, for the web processes and the worker."""
    units = [(h, "api-web@3000.service") for h in APIS] + [(DATA, "api-worker.service")]
    started = {}
    for name, unit in units:
        out = labcheck.host(name).check_output(f"systemctl show -p ActiveState -p ActiveEnterTimestampMonotonic {unit}")
        props = dict(line.split("=", 1) for line in out.splitlines())
        started[f"{name}/{unit}"] = props["ActiveEnterTimestampMonotonic"] if props["ActiveState"] == "active" else ""
    return started


def get(path, method="GET", data=None):
    """A request through nginx on the lb host; returns (status, parsed JSON body or text)."""
    return labcheck.request_json(LB, path, method, data)


def redis(*args):
    cmd = " ".join(["redis-cli", "--no-auth-warning", "-a", "lab-nws-redis-admin-T4x7Hc", *args])
    return labcheck.host(DATA).check_output(cmd)


def psql(sql):
    return labcheck.host(DATA).check_output(f'runuser -u postgres -- psql -XAtq -d api -c "{sql}"')


def release_of(host):
    return labcheck.host(host).check_output("readlink /opt/api/current").rstrip("/").split("/")[-1]


@pytest.fixture(scope="module", autouse=True)
def idle_websocket():
    """An idle WebSocket client on the lb for the whole module; test_zz_* reads its result."""
    subprocess.run(["docker", "cp", os.path.join(HERE, "wsclient.py"), f"{LB}:/root/wsclient.py"], check=True)
    labcheck.host(LB).run("rm -f /tmp/ws-idle.json")
    subprocess.run(
        ["docker", "exec", "-d", LB, "python3", "/root/wsclient.py", "--idle", str(IDLE_SECONDS), "--out",
         "/tmp/ws-idle.json"],
        check=True,
    )  # fmt: skip
    yield


# ------------------------------------------------------------------------------------------------ the stack
def test_requests_through_nginx_reach_every_api_instance():
    instances = {get("/version")[1]["instance"] for _i in range(30)}
    assert instances == {f"{h}:3000" for h in APIS}, instances


def test_node_from_debian_and_npm_ci_per_release():
    for h in APIS:
        host = labcheck.host(h)
        assert host.package("nodejs").is_installed and host.package("npm").is_installed
        unit = host.check_output("systemctl cat api-web@3000.service")
        assert "ExecStart=/usr/bin/env node src/api.js" in unit and "WorkingDirectory=/opt/api/current/app" in unit
        assert host.file("/opt/api/releases/1.0.0/.installed").exists  # npm ci --omit=dev ran once
        assert host.file("/opt/api/releases/1.0.0/app/package-lock.json").exists
        assert host.service("api-web@3000.service").is_running
        # The process runs as the app's user from the release's code directory.
        assert host.check_output("ps -o user= -C node").split()[0] == "api"


def test_jobs_reach_the_worker_with_per_queue_concurrency():
    started = time.time()
    ids = [get("/api/queues/notifications/jobs", "POST", {"ms": 1500})[1]["id"] for _i in range(8)]
    exports = [get("/api/queues/exports/jobs", "POST", {"ms": 300})[1]["id"] for _i in range(3)]

    def done():
        return all(get(f"/api/queues/notifications/jobs/{i}")[1].get("done") for i in ids) and all(
            get(f"/api/queues/exports/jobs/{i}")[1].get("done") for i in exports
        )

    assert labcheck.wait_for(done, 60, 0.5)
    results = [get(f"/api/queues/notifications/jobs/{i}")[1]["result"] for i in ids]
    assert {r["by"] for r in results} == {DATA}
    assert {r["slot"] for r in results} == {0, 1, 2, 3}  # notifications: 4 at a time
    assert {get(f"/api/queues/exports/jobs/{i}")[1]["result"]["slot"] for i in exports} == {0}  # exports: 1
    # 8 jobs of 1.5 s with 4 at a time take about 3 s, not 12 s.
    finished = max(r["finished_at"] for r in results)
    assert finished - started < 9, finished - started


def test_websocket_upgrade_through_nginx():
    out = lb("python3 /root/wsclient.py")
    r = json.loads(out)
    assert "error" not in r, r
    assert r["status"] == 101 and r["headers"]["upgrade"].lower() == "websocket", r
    assert r["greeting"]["hello"] in {f"{h}:3000" for h in APIS}
    assert r["echo"] == {"echo": "ping after idle", "instance": r["greeting"]["hello"]}
    conf = lb("cat /etc/nginx/nginx.conf")
    ws = conf[conf.index("location /ws {") :].split("}", 1)[0]
    assert "proxy_read_timeout 3600s;" in ws and "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_buffering off;" in ws
    # Plain requests keep upstream keep-alive: the map gives an empty Connection header without Upgrade.
    assert "map $http_upgrade $connection_upgrade" in conf


def test_redis_keeps_writes_with_aof_through_a_crash():
    assert redis("CONFIG GET appendonly").split() == ["appendonly", "yes"]
    redis("SET aof:probe survived")
    time.sleep(1.5)  # appendfsync everysec
    host = labcheck.host(DATA)
    host.check_output("systemctl kill -s KILL redis-server.service")
    assert labcheck.wait_for(
        lambda: host.run("redis-cli -a lab-nws-redis-admin-T4x7Hc --no-auth-warning ping").stdout.strip() == "PONG", 30
    )
    assert redis("GET aof:probe").strip() == "survived"


def test_prometheus_scrapes_the_api_instances():
    def targets():
        out = labcheck.host(OPS).check_output("curl -s http://127.0.0.1:9090/api/v1/targets?state=active")
        return [t for t in json.loads(out)["data"]["activeTargets"] if t["labels"]["job"] == "app"]

    assert labcheck.wait_for(lambda: len([t for t in targets() if t["health"] == "up"]) == 3, 60, 2), targets()
    rules = json.loads(labcheck.host(OPS).check_output("curl -s http://127.0.0.1:9090/api/v1/rules"))
    names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    assert {"InstanceDown", "HighErrorRate", "HighLatencyP95", "RedisDown", "BackupTooOld"} <= names


def test_check_mode_is_clean_and_secret_free():
    labcheck.assert_check_mode_clean(SECRETS)


def test_bad_input_is_refused_before_anything_changes():
    labcheck.assert_refused_in_preflight(
        "always", json.dumps({"nginx_websocket_paths": ["/api/"]}), "nginx_websocket_paths"
    )
    rc, out = labcheck.playbook(
        "deploy.yml",
        "-e",
        "app_release=1.1.0",
        "-e",
        json.dumps({"rollout_traffic_steps": [50, 10], "rollout_bake_seconds": 5}),
    )
    assert rc != 0 and "rollout_traffic_steps must rise" in out, out
    assert all(c["changed"] == 0 for c in labcheck.recap(out).values()), out
    assert {release_of(h) for h in APIS} == {"1.0.0"}


# ------------------------------------------------------------------------------------- the idle WebSocket
def test_zz_idle_websocket_outlived_the_default_proxy_timeout():
    host = labcheck.host(LB)
    assert labcheck.wait_for(lambda: host.file("/tmp/ws-idle.json").exists, IDLE_SECONDS + 30)
    r = json.loads(host.file("/tmp/ws-idle.json").content_string)
    assert "error" not in r, r
    assert r["held_seconds"] >= IDLE_SECONDS and r["echo"]["echo"] == "ping after idle", r


# ------------------------------------------- after the idle WebSocket: recovery restarts the web processes
def test_backups_land_in_s3_and_recover_restores_both():
    host = labcheck.host(DATA)
    psql("CREATE TABLE IF NOT EXISTS recovery_probe (id int); TRUNCATE recovery_probe; "
         "INSERT INTO recovery_probe SELECT generate_series(1, 500)")  # fmt: skip
    redis("DEL before:list after:key")
    redis("RPUSH before:list a b c")
    host.check_output("/usr/local/sbin/selfhosted-backup run")
    listed = {s: json.loads(host.check_output(f"/usr/local/sbin/selfhosted-backup list {s} --source s3"))
              for s in ("postgresql", "redis")}  # fmt: skip
    assert listed["postgresql"] and listed["postgresql"][0]["complete"], listed
    assert listed["redis"] and listed["redis"][0]["complete"], listed
    # After the backup: more rows, another key; the recovery must take both back to the backup.
    psql("INSERT INTO recovery_probe SELECT generate_series(501, 700)")
    redis("SET after:key lost")
    redis("RPUSH before:list d")

    rc, out = labcheck.playbook("recover.yml")
    assert rc != 0 and "recover_confirm=true" in out, out  # refused without the confirmation
    assert all(c["changed"] == 0 for c in labcheck.recap(out).values()), out
    # Refused without saying which backup is acceptable (a named one, or the oldest age accepted).
    rc, out = labcheck.playbook("recover.yml", "-e", "recover_confirm=true")
    assert rc != 0 and "recover_max_age" in out, out
    assert all(c["changed"] == 0 for c in labcheck.recap(out).values()), out

    before = writers_started()
    rc, out = labcheck.playbook("recover.yml", "-e", "recover_confirm=true", "-e", "recover_max_age=1h")
    assert rc == 0, out
    # The run showed the backup and its age before it replaced anything, and kept a safety copy of the live data.
    assert f"postgresql: backup {listed['postgresql'][0]['id']}, taken" in out and "hours ago" in out, out
    safety = host.check_output("ls /var/backups/selfhosted/safety/postgresql").split()
    assert len(safety) == 1 and safety[0] > listed["postgresql"][0]["id"], safety  # the safety copy, its own dir
    assert host.file(f"/var/backups/selfhosted/safety/postgresql/{safety[0]}/manifest.json").is_file
    assert "safety_copy" in out and safety[0] in out, out
    # The web processes and the worker were stopped for the recovery and are running again.
    after = writers_started()
    assert all(after[unit] and after[unit] != before[unit] for unit in before), (before, after)
    assert psql("SELECT count(*) FROM recovery_probe").strip() == "500"
    assert redis("EXISTS after:key").strip() == "0"
    assert redis("LRANGE before:list 0 -1").split() == ["a", "b", "c"]
    # AOF is on again and holds the recovered data: a crash now keeps it.
    assert redis("CONFIG GET appendonly").split() == ["appendonly", "yes"]
    host.check_output("systemctl kill -s KILL redis-server.service")
    assert labcheck.wait_for(
        lambda: host.run("redis-cli -a lab-nws-redis-admin-T4x7Hc --no-auth-warning ping").stdout.strip() == "PONG", 30
    )
    assert redis("LRANGE before:list 0 -1").split() == ["a", "b", "c"]
    # The files Redis had before the recovery are kept, not deleted; no restore drop-in is left behind.
    assert host.check_output("ls -d /var/lib/redis/pre-restore-*").strip()
    assert not host.file("/run/systemd/system/redis-server.service.d/selfhosted-restore.conf").exists
    # The API is ready again against the recovered data.
    assert labcheck.wait_for(lambda: all(
        labcheck.host(h).run("curl -sf http://127.0.0.1:3000/ready").rc == 0 for h in APIS), 30)  # fmt: skip


def test_a_failed_recovery_starts_the_writers_again():
    host = labcheck.host(DATA)
    psql("INSERT INTO recovery_probe SELECT generate_series(501, 520)")
    # An unknown backup is refused before any writer is stopped.
    before = writers_started()
    rc, out = labcheck.playbook(
        "recover.yml",
        "-e",
        json.dumps(
            {"recover_confirm": True, "recover_backup_postgresql": "20000101T000000Z", "recover_sets": ["postgresql"]}
        ),
    )
    assert rc != 0 and "no backup 20000101T000000Z" in out, out
    assert writers_started() == before
    # A restore that fails after the writers were stopped: a local backup whose dump no longer matches its SHA-256
    # (same size, other bytes; the listing finds it complete, the restore checks every byte).
    local = json.loads(host.check_output("/usr/local/sbin/selfhosted-backup list postgresql --source local"))
    broken = local[0]["id"]
    host.run_expect([0], f"cd /var/backups/selfhosted/postgresql/{broken} && for f in *.dump; do "
                         "python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,\"rb\").read()); "
                         "b[-1] ^= 0xFF; open(p,\"wb\").write(b)' $f; done")  # fmt: skip
    rc, out = labcheck.playbook(
        "recover.yml",
        "-e",
        json.dumps({"recover_confirm": True, "recover_backup_postgresql": broken, "recover_source": "local",
                    "recover_sets": ["postgresql"]}),
    )  # fmt: skip
    assert rc != 0 and f"The recovery failed on {DATA}" in out and "SHA-256" in out, out
    after = writers_started()
    assert all(after[unit] and after[unit] != before[unit] for unit in before), (before, after)
    assert psql("SELECT count(*) FROM recovery_probe").strip() == "520"  # left as it was
    assert labcheck.wait_for(lambda: all(
        labcheck.host(h).run("curl -sf http://127.0.0.1:3000/ready").rc == 0 for h in APIS), 30)  # fmt: skip


def test_a_failed_rotation_of_one_set_never_stops_the_next():
    # Issue 23, finding 4: an error while rotating one set (here: a local backup dated 2099, which the planner
    # refuses) aborted the run, so the next set (Redis) was never backed up. The PostgreSQL backup is kept too.
    # (The agent rotates only its local copies: its S3 key cannot delete; rotate-backups.yml rotates S3.)
    host = labcheck.host(DATA)
    planted = "/var/backups/selfhosted/postgresql/20991231T000000Z"
    listed = {s: json.loads(host.check_output(f"/usr/local/sbin/selfhosted-backup list {s} --source s3"))
              for s in ("postgresql", "redis")}  # fmt: skip
    manifest = json.dumps({"id": "20991231T000000Z", "time": "2099-12-31T00:00:00+00:00", "files": []})
    host.run_expect([0], f"mkdir -p {planted} && echo '{manifest}' > {planted}/manifest.json")
    try:
        result = host.run("/usr/local/sbin/selfhosted-backup run")
    finally:
        host.run_expect([0], f"rm -rf {planted}")
    assert result.rc != 0 and "postgresql (rotation)" in result.stderr, result.stdout + result.stderr
    assert "dated after now" in result.stdout + result.stderr
    after = {s: json.loads(host.check_output(f"/usr/local/sbin/selfhosted-backup list {s} --source s3"))
             for s in ("postgresql", "redis")}  # fmt: skip
    # Both sets got a new complete backup on S3: Redis after PostgreSQL's rotation failed.
    for s in ("postgresql", "redis"):
        newest = next(b for b in after[s] if b["complete"])
        assert newest["id"] > listed[s][0]["id"], (s, listed[s][:2], after[s][:3])
    metrics = host.check_output("cat /var/lib/prometheus/node-exporter/selfhosted_backup.prom")
    assert 'selfhosted_backup_last_rotation_success{set="postgresql"} 0' in metrics
    assert 'selfhosted_backup_last_rotation_success{set="redis"} 1' in metrics
    host.run_expect([0], "/usr/local/sbin/selfhosted-backup run postgresql")  # rotation works again
    assert 'selfhosted_backup_last_rotation_success{set="postgresql"} 1' in host.check_output(
        "cat /var/lib/prometheus/node-exporter/selfhosted_backup.prom"
    )
