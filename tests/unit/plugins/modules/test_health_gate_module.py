"""The health_gate module end to end against a small local HTTP server (a web app and a Prometheus API stand-in),
with short intervals."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.selfhosted.stack.plugins.modules import health_gate

FAST = {"interval": 0.02, "timeout": 2, "deadline": 5, "start_period": 0}


class Handler(BaseHTTPRequestHandler):
    routes = {}

    def do_GET(self):
        parts = urlsplit(self.path)
        answer = self.routes.get(parts.path)
        if callable(answer):
            answer = answer(parse_qs(parts.query))
        status, body = answer or (404, "not found")
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.routes = {}
    yield f"http://127.0.0.1:{httpd.server_address[1]}", Handler.routes
    httpd.shutdown()
    httpd.server_close()


def run_module(capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        health_gate.main()
    result = json.loads(capsys.readouterr().out)
    return exc.value.code, result


def test_passes_on_a_ready_endpoint(server, capsys):
    base, routes = server
    routes["/ready"] = (200, json.dumps({"ready": True, "checks": {"postgresql": "ok"}}))
    rc, result = run_module(capsys, url=f"{base}/ready", json_match={"ready": True, "checks.postgresql": "ok"}, **FAST)
    assert rc == 0 and result["passed"] and not result["changed"]
    assert result["attempts"] == 3 and result["status"] == 200


def test_fails_with_the_last_answer(server, capsys):
    base, routes = server
    routes["/ready"] = (503, json.dumps({"ready": False, "checks": {"release": "broken"}}))
    rc, result = run_module(capsys, url=f"{base}/ready", **FAST)
    assert rc == 1 and not result["passed"]
    assert result["msg"].startswith(f"health gate failed for {base}/ready: unhealthy: 3 consecutive failed checks")
    assert "status 503" in result["msg"] and "broken" in result["msg"]
    assert result["status"] == 503 and "broken" in result["body"] and len(result["history"]) == 3


def test_no_answer_fails_after_the_start_period(capsys):
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    rc, result = run_module(capsys, url=f"{closed}/health", **{**FAST, "start_period": 0.1})
    assert rc == 1 and "no answer" in result["msg"] and result["status"] is None


def test_metric_gate_uses_prometheus(server, capsys):
    base, routes = server
    routes["/health"] = (200, "ok")
    queries = []

    def prom(query):
        queries.append(query["query"][0])
        value = "0.2" if "5.." in query["query"][0] else "0"
        return 200, json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]}}
        )

    routes["/api/v1/query"] = prom
    ok_args = dict(FAST, url=f"{base}/health", prometheus_url=base, bake=0.05, metrics_interval=0.02)
    rc, result = run_module(capsys, metrics=[{"query": "sum(up)", "bound": "< 1"}], **ok_args)
    assert rc == 0 and result["metrics"]["passed"] and queries[0] == "sum(up)"
    rc, result = run_module(
        capsys, metrics=[{"name": "5xx", "query": 'x{status=~"5.."}', "bound": "< 0.01"}], **ok_args
    )
    assert rc == 1 and result["msg"].endswith("metric gate failed after 0 s: 5xx = 0.2, bound < 0.01")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"url": "ftp://x/"}, "url must start with http:// or https://"),
        ({"url": "http://x/", "status_code": ["2xx"]}, "status_code entries must be"),
        ({"url": "http://x/", "healthy_threshold": 0}, "healthy_threshold must be 1 or more"),
        ({"url": "http://x/", "metrics": [{"query": "up", "bound": "< 1"}]}, "metrics need prometheus_url"),
        ({"url": "http://x/", "prometheus_url": "http://p", "metrics": [{"query": "up"}]}, r"metrics[0].bound must be"),
    ],
)
def test_bad_input_is_refused_before_any_request(capsys, args, message):
    rc, result = run_module(capsys, **args)
    assert rc == 1 and message in result["msg"] and "attempts" not in result
