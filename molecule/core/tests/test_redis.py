"""Redis: authentication, ACL users, persistence settings, firewall, secrets kept out of files and diffs."""

import os
import shlex

import labcheck
import pytest
import secret_change
import yaml

testinfra_hosts = labcheck.hosts("cache")
SECRETS = ["lab-default-Xq7v9pW2", "lab-app-Hn3kT8sQ4z", "lab-exporter-Pm5rW1cY8"]


def cli(host, *args, user=None, password=None):
    auth = f"--user {user} --pass {password} --no-auth-warning " if user else ""
    result = host.run(f"redis-cli {auth}{' '.join(args)}")
    return (result.stdout + result.stderr).strip()


def test_runs_on_both_releases():
    releases = {labcheck.host(h).system_info.release.split(".")[0] for h in labcheck.hosts("cache")}
    assert releases == {"12", "13"}


def test_unauthenticated_commands_are_refused(host):
    assert cli(host, "PING").startswith("NOAUTH")
    assert cli(host, "SET", "k", "v").startswith("NOAUTH")


def test_default_user_is_admin(host):
    out = cli(host, "CONFIG", "GET", "maxmemory", user="default", password=SECRETS[0])
    assert out.split() == ["maxmemory", str(64 * 1024 * 1024)]
    assert "noeviction" in cli(host, "CONFIG", "GET", "maxmemory-policy", user="default", password=SECRETS[0])
    assert "yes" in cli(host, "CONFIG", "GET", "appendonly", user="default", password=SECRETS[0])


def _validate_command(candidate):
    """The validate command of the role's "Write redis.conf" task, for a candidate file."""
    with open(os.path.join(labcheck.SCENARIO_DIR, "../../roles/redis/tasks/configure.yml")) as fh:
        tasks = yaml.safe_load(fh)
    task = next(t for t in tasks if "redis.conf" in t["name"])
    entries = task["selfhosted.stack.files"]["files"]
    command = next(f for f in entries if f["path"] == "/etc/redis/redis.conf")["validate"]
    return shlex.join(shlex.split(command.replace("%s", candidate)))


@pytest.mark.parametrize("broken", ["maxmemory lots", "user bob on >x ~* +nosuchcommand"])
def test_a_broken_config_is_refused_and_the_check_leaves_nothing(host, broken):
    # The live file passes; a line Redis cannot parse and an ACL user it cannot load are refused. Each check runs
    # its Redis in a private directory it removes afterwards and stops it; the running Redis is untouched.
    pid = host.run("pgrep -x redis-server").stdout.split()
    host.run_expect([0], "install -m 0600 /etc/redis/redis.conf /root/candidate.conf")
    assert host.run(_validate_command("/root/candidate.conf")).rc == 0
    host.run_expect([0], f"printf '%s\\n' '{broken}' >> /root/candidate.conf")
    assert host.run(_validate_command("/root/candidate.conf")).rc != 0
    host.run_expect([0], "rm -f /root/candidate.conf")
    assert host.run("pgrep -x redis-server").stdout.split() == pid
    assert host.run("find /tmp -maxdepth 1 -name 'tmp.*'").stdout.strip() == ""


def test_app_user_can_use_data_but_not_dangerous_commands(host):
    assert cli(host, "SET", "job:1", "queued", user="app", password=SECRETS[1]) == "OK"
    assert cli(host, "GET", "job:1", user="app", password=SECRETS[1]) == "queued"
    for cmd in ("FLUSHALL", "CONFIG GET maxmemory", "KEYS 'job:*'", "SHUTDOWN", "ACL LIST"):
        assert "NOPERM" in cli(host, cmd, user="app", password=SECRETS[1]), cmd


def test_exporter_user_reads_info_only(host):
    assert "redis_version" in cli(host, "INFO", "server", user="exporter", password=SECRETS[2])
    assert "NOPERM" in cli(host, "GET", "job:1", user="exporter", password=SECRETS[2])
    assert "NOPERM" in cli(host, "SET", "x", "1", user="exporter", password=SECRETS[2])


def test_wrong_password_and_removed_user_are_refused(host):
    for user, password in (("app", "not-the-password"), ("retired", "whatever-it-was1")):
        out = cli(host, "PING", user=user, password=password)
        assert "WRONGPASS" in out and "PONG" not in out


def test_tls_port_where_enabled():
    data13 = labcheck.host("core-data13")
    tls = data13.run(f"redis-cli --tls --insecure -p 6380 --user app --pass {SECRETS[1]} --no-auth-warning PING")
    assert tls.stdout.strip() == "PONG", tls.stderr
    assert "PONG" not in data13.run(f"redis-cli -p 6380 --user app --pass {SECRETS[1]} PING").stdout
    assert "PONG" in data13.run(f"redis-cli -p 6379 --user app --pass {SECRETS[1]} --no-auth-warning PING").stdout
    assert labcheck.host("core-data12").run("redis-cli --tls --insecure -p 6380 PING").rc != 0  # TLS off there


def test_config_file_holds_no_plaintext_password(host):
    conf = host.file("/etc/redis/redis.conf")
    assert conf.user == "redis" and conf.mode == 0o640
    assert not any(s in conf.content_string for s in SECRETS)


def test_app_host_reaches_redis_over_the_network_and_lb_does_not():
    for cache in labcheck.hosts("cache"):
        address = labcheck.address(cache)
        app = labcheck.host("core-app13")
        out = app.run(f"redis-cli -h {address} --user app --pass {SECRETS[1]} --no-auth-warning PING").stdout
        assert out.strip() == "PONG"
        assert labcheck.can_connect("core-app13", address, 6379)
        assert not labcheck.can_connect("core-lb12", address, 6379)


def test_diff_of_a_password_change_shows_no_secret():
    rc, out = secret_change.check_diff()
    assert rc == 0, out
    assert secret_change.REDIS_PASSWORD not in out and not any(s in out for s in SECRETS)
    counts = labcheck.recap(out)
    assert all(counts[cache]["changed"] > 0 for cache in labcheck.hosts("cache")), out  # the change is seen, not shown


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ("redis_maxmemory_policy=evict-whatever", "redis_maxmemory_policy"),
        ('{"redis_bind": ["999.1.1.1"]}', "redis_bind"),
        ("redis_maxmemory=lots", "redis_maxmemory"),
        ("redis_default_password=", "redis_default_password"),
        ('{"redis_users": [{"name": "default", "password": "long-enough-pass"}]}', "redis_users"),
    ],
)
def test_bad_input_fails_before_any_change(extra, variable):
    labcheck.assert_refused_in_preflight("redis_preflight", extra, variable)
