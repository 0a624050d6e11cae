"""The compose_rollout module end to end against a stand-in Docker engine (containers in memory, `docker compose up
--scale` creating containers of the new revision) and a small HTTP server answering the readiness checks."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.selfhosted.stack.plugins.module_utils._compose_rollout import REVISION_LABEL
from ansible_collections.selfhosted.stack.plugins.modules import compose_rollout

PROJECT = "shop"


class Ready(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def ready():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    Ready.status = 200
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


class FakeContainer:
    def __init__(self, engine, service, number, revision):
        self.engine, self.name = engine, f"{PROJECT}-{service}-{number}"
        self.id = f"id-{service}-{number}"
        self.labels = {
            "com.docker.compose.project": PROJECT,
            "com.docker.compose.service": service,
            "com.docker.compose.container-number": str(number),
            REVISION_LABEL: revision,
        }
        self.status = "running"
        self.execs = []

    @property
    def attrs(self):
        return {
            "State": {"Status": self.status, "Health": {"Status": "healthy"}},
            "NetworkSettings": {"Networks": {f"{PROJECT}_backend": {"IPAddress": "127.0.0.1"}}},
        }

    def reload(self):
        pass

    def stop(self, timeout=10):
        self.status = "exited"
        self.engine.log.append(("stop", self.name))

    def start(self):
        self.status = "running"
        self.engine.log.append(("start", self.name))

    def remove(self, force=False):
        self.engine.containers_.remove(self)
        self.engine.log.append(("remove", self.name))

    def exec_run(self, cmd):
        self.execs.append(cmd)
        return 0, b""


class FakeEngine:
    def __init__(self):
        self.containers_, self.log = [], []
        self.containers = self

    def ping(self):
        return True

    def list(self, **kwargs):  # the Docker SDK's list(all=..., filters=...)
        want = dict(label.split("=", 1) for label in kwargs["filters"]["label"])
        return [c for c in self.containers_ if all(c.labels.get(k) == v for k, v in want.items())]

    def add(self, service, revision):
        number = 1 + max([int(c.labels["com.docker.compose.container-number"]) for c in self.containers_] or [0])
        c = FakeContainer(self, service, number, revision)
        self.containers_.append(c)
        self.log.append(("create", c.name))
        return c


@pytest.fixture
def engine(monkeypatch, tmp_path):
    eng = FakeEngine()
    for _i in range(2):
        eng.add("app", "r1")
    eng.add("nginx", "-")
    new_revision = {"value": "r2"}

    def fake_compose(self, *args):
        service_count = next(a for a in args if a.startswith(f"{self.p['service']}=")).split("=")[1]
        while len(eng.list(filters={"label": [f"com.docker.compose.service={self.p['service']}"]})) < int(
            service_count
        ):
            eng.add(self.p["service"], new_revision["value"])
        return ""

    monkeypatch.setattr(compose_rollout.docker, "from_env", lambda: eng)
    monkeypatch.setattr(compose_rollout.Rollout, "compose", fake_compose)
    monkeypatch.setattr(compose_rollout.time, "sleep", lambda s: None)
    (tmp_path / "compose.next.yaml").write_text("services: {app: {image: shop:2}}\n")
    (tmp_path / "compose.yaml").write_text("services: {app: {image: shop:1}}\n")
    return eng, tmp_path


def run_module(capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        compose_rollout.main()
    return exc.value.code, json.loads(capsys.readouterr().out)


def args(tmp_path, port, **extra):
    base = {
        "project_dir": str(tmp_path),
        "project_name": PROJECT,
        "definition": str(tmp_path / "compose.next.yaml"),
        "promote_to": str(tmp_path / "compose.yaml"),
        "revision": "r2",
        "replicas": 2,
        "port": port,
        "interval": 0.05,
        "timeout": 2,
        "healthy_threshold": 1,
        "unhealthy_threshold": 2,
        "start_timeout": 2,
        "drain_seconds": 0,
        "upstream_file": str(tmp_path / "nginx" / "upstreams" / "app.conf"),
    }
    base.update(extra)
    return base


def app_names(eng):
    return sorted(c.name for c in eng.list(filters={"label": ["com.docker.compose.service=app"]}))


def test_good_rollout_replaces_one_at_a_time_and_switches_nginx(engine, ready, capsys):
    eng, tmp = engine
    rc, result = run_module(capsys, **args(tmp, ready))
    assert rc == 0, result
    assert result["changed"] and result["steps"] == [["start", 1], ["stop", 1], ["start", 1], ["stop", 1]]
    assert result["started"] == ["shop-app-4", "shop-app-5"] and result["stopped"] == ["shop-app-1", "shop-app-2"]
    assert app_names(eng) == ["shop-app-4", "shop-app-5"]
    # Never more than replicas + 1 running, and never fewer than replicas serving: the order of the log says so.
    assert [e for e in eng.log if e[0] != "remove"][3:] == [
        ("create", "shop-app-4"), ("stop", "shop-app-1"), ("create", "shop-app-5"), ("stop", "shop-app-2"),
    ]  # fmt: skip
    upstream = (tmp / "nginx" / "upstreams" / "app.conf").read_text()
    assert "server shop-app-4:" in upstream and "server shop-app-5:" in upstream and "shop-app-1" not in upstream
    assert (tmp / "compose.yaml").read_text() == (tmp / "compose.next.yaml").read_text()
    nginx = eng.list(filters={"label": ["com.docker.compose.service=nginx"]})[0]
    assert ["nginx", "-t", "-q"] in nginx.execs and ["nginx", "-s", "reload"] in nginx.execs


def test_second_run_changes_nothing(engine, ready, capsys):
    tmp = engine[1]
    run_module(capsys, **args(tmp, ready))
    rc, result = run_module(capsys, **args(tmp, ready))
    assert rc == 0 and not result["changed"] and result["steps"] == [], result


def test_failed_gate_removes_the_new_container_and_keeps_the_old_ones(engine, ready, capsys):
    eng, tmp = engine
    Ready.status = 503
    before = (tmp / "compose.yaml").read_text()
    rc, result = run_module(capsys, **args(tmp, ready))
    assert rc == 1 and result["failed"], result
    assert "Rollout of app to r2 FAILED: new container shop-app-4 failed its gate" in result["msg"]
    assert "answered 503" in result["msg"] and "serving now: shop-app-1, shop-app-2" in result["msg"]
    assert app_names(eng) == ["shop-app-1", "shop-app-2"]
    assert all(c.status == "running" for c in eng.containers_)
    assert (tmp / "compose.yaml").read_text() == before  # not promoted


def test_check_mode_reports_the_plan_and_changes_nothing(engine, ready, capsys):
    eng, tmp = engine
    rc, result = run_module(capsys, _ansible_check_mode=True, _ansible_diff=True, **args(tmp, ready))
    assert rc == 0 and result["changed"] and result["steps"][0] == ["start", 1], result
    assert result["diff"]["before"]["containers"] == ["shop-app-1", "shop-app-2"]
    assert app_names(eng) == ["shop-app-1", "shop-app-2"] and ("create", "shop-app-4") not in eng.log
    assert not (tmp / "nginx").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"max_surge": 0, "max_unavailable": 0}, "max_surge and max_unavailable are both 0"),
        ({"max_unavailable": 2}, "max_unavailable (2) must be less than replicas (2)"),
        ({"ready_path": "ready"}, "ready_path must start with /"),
        ({"revision": " "}, "revision must not be empty"),
        ({"definition": "/nonexistent/compose.yaml"}, "definition /nonexistent/compose.yaml does not exist"),
    ],
)
def test_bad_input_is_refused_naming_the_option(engine, ready, capsys, extra, message):
    eng, tmp = engine
    rc, result = run_module(capsys, **args(tmp, ready, **extra))
    assert rc == 1 and message in result["msg"], result
    assert app_names(eng) == ["shop-app-1", "shop-app-2"]
