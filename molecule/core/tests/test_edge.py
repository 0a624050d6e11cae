"""nginx edge: TLS, redirect, proxying to every app host, 429 past the rate limit, the single-page app's cache
headers, stub_status, draining an upstream, and the private key kept out of --diff."""

import collections
import json
import os

import labcheck
import pytest
import secret_change

testinfra_hosts = labcheck.hosts("lb")
with open(os.path.join(labcheck.SCENARIO_DIR, "inventory", "group_vars", "lb.yml")) as _fh:
    KEY_LINE = _fh.read().split("BEGIN PRIVATE KEY-----")[1].split()[0]  # a line of the scenario's test key
CURL = "curl -sk --resolve edge.lab.test:443:127.0.0.1 --resolve edge.lab.test:80:127.0.0.1"


Response = collections.namedtuple("Response", "status headers body")


def get(host, path, scheme="https", extra=""):
    """Response(status, headers lower-cased, body) of a request to the lb itself."""
    out = host.check_output(f"{CURL} {extra} -D - '{scheme}://edge.lab.test{path}'")
    head, _sep, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    headers = {}
    for line in lines[1:]:
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return Response(int(lines[0].split()[1]), headers, body)


def answers(host, count, path="/health"):
    """The set of backend names that answered `count` requests."""
    return {get(host, path).body.strip() for _attempt in range(count)}


def test_config_is_valid(host):
    assert host.run("nginx -t").rc == 0


def test_http_redirects_to_https(host):
    resp = get(host, "/some/page?x=1", scheme="http")
    assert resp.status == 301
    assert resp.headers["location"] == "https://edge.lab.test/some/page?x=1"


def test_tls_with_the_given_certificate_and_modern_protocols(host):
    subject = host.check_output(
        "echo | openssl s_client -connect 127.0.0.1:443 -servername edge.lab.test 2>/dev/null"
        " | openssl x509 -noout -subject"
    )
    assert "edge.lab.test" in subject
    assert host.run(f"{CURL} --tls-max 1.1 https://edge.lab.test/").rc != 0  # TLS 1.0/1.1 refused
    assert host.run(f"{CURL} --tlsv1.3 -o /dev/null https://edge.lab.test/").rc == 0


def test_security_headers(host):
    headers = get(host, "/").headers
    assert headers["strict-transport-security"].startswith("max-age=31536000")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"


def test_proxies_to_both_app_hosts(host):
    assert answers(host, 12) == {"core-app13", "core-app12"}


def test_spa_cache_headers_and_fallback(host):
    status, headers, body = get(host, "/assets/app.3f2a1b.js")
    assert status == 200 and "immutable" in headers["cache-control"] and "max-age=31536000" in headers["cache-control"]
    status, headers, body = get(host, "/deep/client/route")
    assert status == 200 and "spa-index" in body and headers["cache-control"] == "no-cache"
    assert get(host, "/assets/missing.js").status == 404


def test_api_is_not_cached(host):
    resp = get(host, "/api/whoami")
    assert resp.status in (200, 429)
    assert resp.headers["cache-control"] == "no-store"


def test_rate_limit_answers_429(host):
    codes = [get(host, "/api/whoami").status for _attempt in range(15)]
    assert 429 in codes
    assert codes.count(200) <= 6  # 10r/m with a burst of 5
    assert set(codes) <= {200, 429}


def test_stub_status_on_localhost_only(host):
    assert "Active connections" in host.check_output("curl -s http://127.0.0.1:8081/stub_status")
    assert not labcheck.can_connect("core-app13", labcheck.address(host.backend.get_hostname()), 8081)


def drain(hosts):
    rc, out = labcheck.playbook("drain.yml", "-e", json.dumps({"nginx_drain_hosts": hosts}))
    assert rc == 0, out
    return out


def test_drained_upstream_receives_no_requests():
    lbs = [labcheck.host(name) for name in labcheck.hosts("lb")]
    log = "/var/log/nginx/access.log"
    try:
        drain(["core-app13"])
        for lb in lbs:
            assert answers(lb, 12) == {"core-app12"}
        # A site.yml run while drained keeps the drain.
        rc, out = labcheck.playbook("converge.yml")
        assert rc == 0, out
        for lb in lbs:
            assert answers(lb, 8) == {"core-app12"}
        # The probe's own log on app1 saw none of those requests.
        before = labcheck.host("core-app13").check_output(
            "journalctl -u probe --no-pager | grep -c 'GET /health' || true"
        )
        for lb in lbs:
            get(lb, "/health")
        after = labcheck.host("core-app13").check_output(
            "journalctl -u probe --no-pager | grep -c 'GET /health' || true"
        )
        assert before == after
    finally:
        drain([])
    for lb in lbs:
        assert answers(lb, 12) == {"core-app13", "core-app12"}
        assert lb.file(log).exists


def test_draining_every_upstream_is_refused():
    rc, out = labcheck.playbook("drain.yml", "-e", json.dumps({"nginx_drain_hosts": ["core-app13", "core-app12"]}))
    assert rc != 0 and "leave at least one in rotation" in out, out


# On the lb: a client that sent half a request body holds an old worker after a reload (nginx would wait for the
# rest up to client_body_timeout, 60 s); worker_shutdown_timeout closes it. Prints when the old worker was seen
# shutting down and when nginx closed the connection, in seconds after the reload. (The marker is split so this
# script's own command line does not contain it.)
HELD_CONNECTION = r"""
import glob, json, socket, ssl, subprocess, time
MARK = b"is shutting" + b" down"
def shutting_down():
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            if MARK in open(path, "rb").read():
                return True
        except OSError:
            pass
    return False
tls = ssl.create_default_context()
tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
s = tls.wrap_socket(socket.create_connection(("127.0.0.1", 443)), server_hostname="edge.lab.test")
s.sendall(b"POST /health HTTP/1.1\r\nHost: edge.lab.test\r\nContent-Length: 100\r\n\r\nabc")
time.sleep(0.5)
subprocess.run(["systemctl", "reload", "nginx"], check=True)
t0 = time.monotonic()
seen, closed = None, None
s.settimeout(0.5)
while time.monotonic() - t0 < 40 and closed is None:
    if seen is None and shutting_down():
        seen = time.monotonic() - t0
    try:
        if s.recv(4096) == b"":
            closed = time.monotonic() - t0
    except (socket.timeout, ssl.SSLWantReadError):
        pass
    except OSError:
        closed = time.monotonic() - t0
print(json.dumps({"seen": seen, "closed": closed, "left": shutting_down()}))
"""


def test_reload_leaves_no_old_worker_past_the_shutdown_timeout():
    lb = labcheck.host(labcheck.hosts("lb")[0])
    result = json.loads(lb.check_output(f"python3 - <<'EOF'\n{HELD_CONNECTION}\nEOF"))
    assert result["seen"] is not None, result  # the held connection kept an old worker alive after the reload
    assert result["closed"] is not None and 8 <= result["closed"] <= 20, result  # nginx_worker_shutdown_timeout: 10s
    processes = "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; true"
    assert labcheck.wait_for(lambda: "shutting down" not in lb.check_output(processes), 10)
    assert get(lb, "/health").status == 200


def test_check_diff_changes_nothing_and_shows_no_key():
    labcheck.assert_check_mode_clean([KEY_LINE])


def test_diff_of_a_key_change_shows_no_key():
    rc, out = secret_change.check_diff()
    assert rc == 0, out
    assert secret_change.TLS_KEY not in out and KEY_LINE not in out
    assert all(labcheck.recap(out)[lb]["changed"] > 0 for lb in labcheck.hosts("lb")), out  # seen, not shown


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ('{"nginx_rate_limits": [{"name": "api", "rate": "fast", "paths": ["/api/"]}]}', "nginx_rate_limits"),
        ('{"nginx_rate_limits": [{"name": "api", "rate": "5r/s", "paths": ["/admin/"]}]}', "nginx_proxy_paths"),
        ("nginx_client_max_body_size=huge", "nginx_client_max_body_size"),
        ("nginx_tls_private_key=", "nginx_tls_certificate and nginx_tls_private_key"),
        (
            '{"nginx_worker_shutdown_timeout": "30s", "nginx_proxy_read_timeout": "1m"}',
            "nginx_worker_shutdown_timeout (30s) must be longer than nginx_proxy_read_timeout (1m)",
        ),
    ],
)
def test_bad_input_fails_before_any_change(extra, variable):
    labcheck.assert_refused_in_preflight("nginx_preflight", extra, variable)
