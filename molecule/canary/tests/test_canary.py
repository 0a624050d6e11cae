"""The node-canary reference stack end to end: requests through nginx reach every API host, the health checks and
backups are those of the inventory, and canary deploys under load step through their nginx weights (10% -> 50% ->
100%) or are rolled back automatically by a failed metric gate or a failed health gate.

The deploys shorten the inventory's 120 s bake per step to 10 s (the steps and gates are the same; 120 s x 5 would
make each deploy take 10 minutes) and check every 2 s instead of every 30 s (the thresholds stay the inventory's:
2 passes healthy, 3 failures unhealthy); with the inventory's 30 s a deploy takes about 90 s more, a failed one
more still, which make test cannot afford. `--check --diff` of these roles on a Node stack is proven in the `node`
scenario (same roles, more of them); it is not repeated here for the same reason.
"""

import json
import subprocess

import labcheck

LB, DATA, MON = "nc-lb1", "nc-data1", "nc-mon1"
APIS = ["nc-api1", "nc-api2", "nc-api3"]
SHORT_BAKE = {"rollout_bake_seconds": 10, "rollout_metrics_interval": 3}
QUICK_GATES = {"app_gate_interval": 2}  # the thresholds stay 2 healthy / 3 unhealthy


def get(path, method="GET", data=None):
    """A request through nginx on the lb host; returns (status, parsed JSON body or text)."""
    return labcheck.request_json(LB, path, method, data)


def release_of(host):
    return labcheck.host(host).check_output("readlink /opt/api/current").rstrip("/").split("/")[-1]


# ------------------------------------------------------------------------------------------------ the stack
def test_requests_through_nginx_reach_every_api_host():
    instances = {get("/version")[1]["instance"] for _i in range(30)}
    assert instances == {f"{h}:3000" for h in APIS}, instances
    assert {release_of(h) for h in APIS} == {"1.0.0"}
    for h in APIS:
        assert labcheck.host(h).service("api-web@3000.service").is_running


def test_health_checks_are_the_inventorys():
    # nginx's passive check: 3 failures within 30 s take a server out for 30 s.
    conf = labcheck.host(LB).file("/etc/nginx/nginx.conf").content_string
    for h in APIS:
        line = next(ln for ln in conf.splitlines() if f"{labcheck.address(h)}:3000" in ln)
        assert "max_fails=3" in line and "fail_timeout=30s" in line, line

    # Prometheus scrapes the three API hosts: the 5xx-ratio gates read their series.
    def app_targets_up():
        out = labcheck.host(MON).check_output("curl -s http://127.0.0.1:9090/api/v1/targets?state=active")
        targets = [t for t in json.loads(out)["data"]["activeTargets"] if t["labels"]["job"] == "app"]
        return len(targets) == 3 and all(t["health"] == "up" for t in targets)

    assert labcheck.wait_for(app_targets_up, 60, 2)


def test_daily_backups_kept_seven_days():
    host = labcheck.host(DATA)
    assert "OnCalendar=*-*-* 02:15:00" in host.check_output("systemctl cat selfhosted-backup.timer")
    assert host.service("selfhosted-backup.timer").is_enabled
    config = json.loads(host.file("/etc/selfhosted/backup.json").content_string)
    assert config["local_retention"] == {"keep_daily": 7}, config  # no S3 here: the host's copies, 7 days
    host.check_output("/usr/local/sbin/selfhosted-backup run postgresql")
    listed = json.loads(host.check_output("/usr/local/sbin/selfhosted-backup list postgresql --source local"))
    assert listed and listed[0]["complete"], listed


# ------------------------------------------------------------------------------------------------ canary deploys
def share(timeline, start, end, version):
    """The share of answers from `version` while nginx.conf held a step, from 6 s after it was written to 1 s
    before the next. Ansible validates nginx.conf and reloads nginx after writing it, and old workers finish their
    requests: under load on 2 cores that took over 3 s once (2 % of the 100 % step's answers still from the old
    release when the window started at 3 s)."""
    counts = [v["versions"] for sec, v in timeline.items() if start + 6 <= int(sec) <= end - 1]
    total = sum(sum(c.values()) for c in counts)
    return (sum(c.get(version, 0) for c in counts) / total if total else None), total


def watched_canary(release, overrides):
    """deploy.yml of `release` under load through nginx, nginx.conf watched: (rc, out, load, weight steps seen)."""
    with (
        labcheck.Load(LB, f"canary-{release}", url="https://127.0.0.1/version", host_header="localhost") as load,
        labcheck.UpstreamWatch(LB, 3000) as watch,
    ):
        rc, out = labcheck.playbook("deploy.yml", "-e", f"app_release={release}", "-e", json.dumps(overrides))
    return rc, out, load, watch.weight_steps()


def assert_rotation_restored(release):
    """Every API host on `release`, none out of rotation, no weights left."""
    assert {release_of(h) for h in APIS} == {release}
    lb = labcheck.host(LB)
    assert lb.check_output("cat /etc/nginx/selfhosted-drained.json").strip() == "[]"
    assert not lb.file("/etc/nginx/selfhosted-weights.json").exists
    assert "weight=" not in lb.check_output("cat /etc/nginx/nginx.conf")


def test_canary_deploy_passes_through_its_weights():
    rc, out, load, seen = watched_canary("1.1.0", {**SHORT_BAKE, **QUICK_GATES})
    assert rc == 0, out
    labcheck.assert_no_request_failed(load)
    # 3 API hosts, the first batch is the canary: 10% -> {canary: 2, others: 9}; 50% -> {2, 1, 1}... (smallest
    # whole numbers); 100% -> only the canary weighted, the others out of rotation.
    summary = [(s[0], s[1], round(s[3] - s[2], 1)) for s in seen]
    assert [sorted(s[0].values()) for s in seen] == [[2, 9, 9], [1, 1, 2], [1]], summary
    c = next(h for h, wt in seen[0][0].items() if wt == 2)
    assert seen[2][0] == {c: 1} and sorted(seen[2][1]) == sorted(h for h in APIS if h != c), seen
    timeline = load.result["timeline"]
    for (weights, _drained, start, end), (low, high) in zip(seen, [(0.03, 0.2), (0.35, 0.65), (0.99, 1.0)]):
        got, n = share(timeline, start, end, "1.1.0")
        assert n > 50 and low <= got <= high, (weights, got, n)
    assert_rotation_restored("1.1.0")


def test_canary_failing_its_metric_gate_rolls_back():
    """1.2.1 is healthy and ready but answers 500: at 10% the 5xx ratio passes 5%, and the canary goes back."""
    rc, out, load, seen = watched_canary("1.2.1", {**SHORT_BAKE, **QUICK_GATES})
    assert rc != 0, out
    assert "(serving 10% of the requests on" in out and "canary 5xx ratio" in out, out
    assert "Every switched host is back on its previous release" in out, out
    assert [sorted(s[0].values()) for s in seen] == [[2, 9, 9]], seen  # never got past 10%
    assert_rotation_restored("1.1.0")
    r = load.result
    # Only the canary's share failed, and only while it had it.
    assert 0 < r["failed"] < 0.2 * r["sent"], r["failures"]
    assert set(r["failures"]) == {"status 500"}, r["failures"]
    bad = [int(s) for s, v in r["timeline"].items() if v["versions"].get("1.2.1")]
    after = [v for s, v in r["timeline"].items() if int(s) > max(bad) + 1]
    assert after and all(v["failed"] == 0 for v in after)


def test_canary_failing_its_health_gate_takes_no_traffic():
    """1.1.1 never becomes ready: its health gate fails after the inventory's 3 failed checks in a row, and the
    canary is never weighted."""
    rc, out, load, seen = watched_canary("1.1.1", {**SHORT_BAKE, **QUICK_GATES})
    assert rc != 0, out
    assert "unhealthy: 3 consecutive failed checks" in out, out
    labcheck.assert_no_request_failed(load)
    assert seen == []  # the gate failed before any weight
    assert "1.1.1" not in load.result["versions"]
    assert_rotation_restored("1.1.0")


# ------------------------------------------------------------------------------------------------ over SSH
def test_the_hosts_are_reached_over_ssh_as_a_user_with_sudo():
    """This scenario's transport (molecule.yml): Ansible logs in as `ops` and becomes root with sudo."""
    rc, out = labcheck.playbook("whoami.yml")
    assert rc == 0, out
    for name in [LB, DATA, MON, *APIS]:
        assert f"{name} login=ops uid=1000 become=root" in out, out


def test_a_deploy_with_an_api_host_unreachable_stops_before_any_host_changes():
    """sshd stopped on one API host: the deploy's preflight loses it and the run stops before anything changes
    (any_errors_fatal also holds for an unreachable host), naming the host; the others keep their release and
    their rotation."""
    before = {h: release_of(h) for h in APIS}
    lost = APIS[1]
    # sshd and its sessions (Ansible's ControlPersist master would carry on through an open one): sshd-session is
    # the session process of OpenSSH 9.8+ (Debian 13), sshd's own child before.
    stop = "systemctl stop ssh; pkill -x sshd; pkill -x sshd-session; true"
    subprocess.run(["docker", "exec", lost, "sh", "-c", stop], check=True)
    try:
        rc, out = labcheck.playbook("deploy.yml", "-e", "app_release=1.0.0", "-e", json.dumps(QUICK_GATES))
    finally:
        subprocess.run(["docker", "exec", lost, "systemctl", "start", "ssh.service"], check=True)
    assert rc != 0, out
    assert f"fatal: [{lost}]: UNREACHABLE!" in out, out
    counts = labcheck.recap(out)
    assert counts[lost]["unreachable"] >= 1, out
    assert all(c["changed"] == 0 for c in counts.values()), out
    assert {h: release_of(h) for h in APIS} == before
    assert_rotation_restored(before[APIS[0]])
