#!/usr/bin/python
# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_rollout
version_added: 0.1.0
short_description: Replace the app containers of a Docker Compose project one by one, gated on their health
description:
  - Rolls the containers of one service of a Compose v2 project (the app's web processes) to a new revision
    without dropping a request. The revision is a label (C(io.selfhosted.revision)) the project's compose file
    sets on the service; containers whose label differs from O(revision) are old.
  - Each step of the plan (under O(max_surge) and O(max_unavailable), the rules of a Kubernetes rolling update)
    either starts new containers, with C(docker compose up --no-recreate --scale) from O(definition), and
    gates each one (Docker's health status and an HTTP readiness check of the container, counted as
    M(selfhosted.stack.health_gate) counts them), then puts it into nginx's upstream; or takes old containers out of
    nginx's upstream, waits O(drain_seconds) for their requests to finish and stops them.
  - Stopped old containers are kept until every new container passed its gate. When a gate fails, the new
    containers are removed, the stopped old ones started again and put back in rotation, and the task fails with
    the container, the reason and what serves now. O(promote_to) is only written after a complete success.
  - Also scales the service to O(replicas) containers of the revision, and keeps O(upstream_file) listing the
    containers that serve (nginx reads it from a bind-mounted directory; the module checks the new configuration
    with C(nginx -t) in the nginx container and reloads it gracefully).
  - Runs on the Docker host. Uses the Docker SDK for Python and the C(docker compose) CLI plugin.
author:
  - selfhosted.stack maintainers (@selfhosted-stack)
requirements:
  - Docker SDK for Python (Debian package python3-docker)
  - Docker Compose v2 (the docker compose CLI plugin)
options:
  project_dir:
    description: The project directory (relative paths of the compose file resolve from here).
    type: path
    required: true
  project_name:
    description: The Compose project name.
    type: str
    required: true
  definition:
    description:
      - The compose file new containers are created from (the new revision). Default O(project_dir)/compose.yaml.
    type: path
  promote_to:
    description:
      - After a complete success, O(definition) is copied here (for example the project's compose.yaml, so that a
        later C(docker compose up) keeps the new containers). Left unchanged when the rollout fails.
    type: path
  service:
    description: The service whose containers are replaced.
    type: str
    default: app
  revision:
    description: The revision label value of the new containers (the compose file sets it on the service).
    type: str
    required: true
  replicas:
    description: Containers of the service when done.
    type: int
    required: true
  max_surge:
    description: Containers that may run above O(replicas) during the rollout.
    type: int
    default: 1
  max_unavailable:
    description: Containers that may be missing below O(replicas) during the rollout (less than O(replicas)).
    type: int
    default: 0
  port:
    description: The port the app listens on inside its containers.
    type: int
    default: 8000
  ready_path:
    description: The readiness path checked on every new container (HTTP 200 passes).
    type: str
    default: /ready
  interval:
    description: Seconds between checks of a new container.
    type: float
    default: 2
  timeout:
    description: Seconds to wait for one readiness answer.
    type: float
    default: 5
  healthy_threshold:
    description: Consecutive passing checks that make a new container healthy.
    type: int
    default: 2
  unhealthy_threshold:
    description: Consecutive failed checks that reject a new container.
    type: int
    default: 3
  start_timeout:
    description:
      - Seconds a new container has to become healthy. No answer at all (still starting) does not count as a
        failure in this time; the gate fails when it passes.
    type: float
    default: 90
  upstream_file:
    description:
      - File (on the Docker host) that lists the serving containers for nginx (C(server name:port ...;) lines),
        in a directory the nginx service mounts. Written atomically.
    type: path
    required: true
  upstream_max_fails:
    description: max_fails of each upstream server.
    type: int
    default: 3
  upstream_fail_timeout:
    description: fail_timeout of each upstream server.
    type: str
    default: 10s
  nginx_service:
    description:
      - The nginx service of the project that reads O(upstream_file); not reloaded while it has no running container.
    type: str
    default: nginx
  drain_seconds:
    description: Seconds between taking a container out of nginx and stopping it.
    type: float
    default: 5
  stop_timeout:
    description: Seconds a stopping container has before it is killed.
    type: int
    default: 30
notes:
  - Check mode reports the plan (which containers would start and stop, the upstream after the rollout) and changes
    nothing; with diff the upstream file and the container lists are shown before and after.
"""

EXAMPLES = r"""
- name: Roll the app containers to the new release (compose mode)
  selfhosted.stack.compose_rollout:
    project_dir: /opt/selfhosted
    project_name: selfhosted
    definition: /opt/selfhosted/compose.next.yaml
    promote_to: /opt/selfhosted/compose.yaml
    service: app
    revision: 1.4.0-3f2a9c1e
    replicas: 2
    max_surge: 1
    max_unavailable: 0
    ready_path: /ready
    upstream_file: /opt/selfhosted/nginx/upstreams/app.conf
"""

RETURN = r"""
started:
  description: Names of the containers started (the new revision).
  returned: always
  type: list
  elements: str
stopped:
  description: Names of the old containers stopped and removed.
  returned: always
  type: list
  elements: str
containers:
  description: Names of the service's containers in rotation when the module finished.
  returned: always
  type: list
  elements: str
steps:
  description: The plan, as [action, count] pairs.
  returned: always
  type: list
  elements: list
gates:
  description: One entry per gated container (name, passed, reason, attempts, elapsed).
  returned: always
  type: list
  elements: dict
upstream_changed:
  description: Whether the upstream file was rewritten.
  returned: always
  type: bool
"""

import contextlib
import json
import os
import tempfile
import time
import traceback
import urllib.error

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.urls import open_url
from ansible_collections.selfhosted.stack.plugins.module_utils._compose_rollout import (
    PlanError,
    account_existing,
    classify,
    health_check,
    plan_steps,
    upstream_text,
    validate,
)
from ansible_collections.selfhosted.stack.plugins.module_utils._health_gate import (
    Check,
    GateError,
    run_gate,
    validate_thresholds,
)

DOCKER_IMPORT_ERROR = None
try:
    import docker
    import docker.errors
except ImportError:
    DOCKER_IMPORT_ERROR = traceback.format_exc()
    docker = None


def write_if_changed(path, text):
    """Write text to path atomically (0644) unless it already holds it; whether it wrote."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


class RolloutFailed(Exception):
    """A step failed; the message says which container and why."""


class Rollout:
    def __init__(self, module, client):
        self.module = module
        self.p = module.params
        self.client = client
        self.started = []
        self.stopped = []  # old containers stopped (still present until the end)
        self.gates = []
        self.upstream_changed = False
        self.definition = self.p["definition"] or os.path.join(self.p["project_dir"], "compose.yaml")

    # --- Docker -------------------------------------------------------------------------------------------------
    def containers(self, service=None):
        labels = [
            f"com.docker.compose.project={self.p['project_name']}",
            f"com.docker.compose.service={service or self.p['service']}",
        ]
        return self.client.containers.list(all=True, filters={"label": labels})

    @staticmethod
    def describe(c):
        return {"name": c.name, "labels": c.labels or {}, "running": c.status == "running", "obj": c}

    def compose(self, *args):
        cmd = [
            "docker",
            "compose",
            "--project-name",
            self.p["project_name"],
            "--project-directory",
            self.p["project_dir"],
            "--file",
            self.definition,
            *args,
        ]
        rc, out, err = self.module.run_command(cmd, cwd=self.p["project_dir"])
        if rc != 0:
            raise RolloutFailed(f"`{' '.join(cmd)}` failed (rc {rc}): {(err or out).strip()[-1500:]}")
        return out

    def address(self, c):
        for net in (c.attrs.get("NetworkSettings", {}).get("Networks") or {}).values():
            if net.get("IPAddress"):
                return net["IPAddress"]
        return None

    # --- gate ---------------------------------------------------------------------------------------------------
    def gate(self, c):
        p = self.p

        def probe():
            started = time.monotonic()
            try:
                c.reload()
            except docker.errors.NotFound:
                return Check(ok=False, connected=True, status=None, detail="container disappeared")
            state = c.attrs.get("State", {})
            ip = self.address(c)
            http_ok, detail, status = False, "no answer: no address yet", None
            if ip and state.get("Status") == "running":
                url = f"http://{ip}:{p['port']}{p['ready_path']}"
                try:
                    resp = open_url(url, timeout=p["timeout"], follow_redirects="none", use_proxy=False)
                    status = resp.getcode()
                except urllib.error.HTTPError as exc:
                    status = exc.code
                except (urllib.error.URLError, OSError) as exc:
                    detail = f"no answer from {url}: {getattr(exc, 'reason', exc)}"
                if status is not None:
                    http_ok = status == 200
                    detail = f"{url} answered {status}"
            ok, connected, why = health_check(state, http_ok, detail)
            return Check(ok=ok, connected=connected, status=status, detail=why, elapsed=time.monotonic() - started)

        verdict = run_gate(
            probe,
            time.monotonic,
            time.sleep,
            p["interval"],
            p["start_timeout"],
            p["healthy_threshold"],
            p["unhealthy_threshold"],
            start_period=p["start_timeout"],
        )
        self.gates.append(
            {
                "name": c.name,
                "passed": verdict.passed,
                "reason": verdict.reason,
                "attempts": verdict.attempts,
                "elapsed": verdict.elapsed,
            }
        )
        if not verdict.passed:
            raise RolloutFailed(f"new container {c.name} failed its gate: {verdict.reason}")

    # --- nginx --------------------------------------------------------------------------------------------------
    def write_upstream(self, names):
        text = upstream_text(names, self.p["port"], self.p["upstream_max_fails"], self.p["upstream_fail_timeout"])
        if not write_if_changed(self.p["upstream_file"], text):
            return False
        self.upstream_changed = True
        self.reload_nginx()
        return True

    def reload_nginx(self):
        for c in self.containers(self.p["nginx_service"]):
            if c.status != "running":
                continue
            rc, out = c.exec_run(["nginx", "-t", "-q"])
            if rc != 0:
                raise RolloutFailed(f"nginx -t failed in {c.name}: {out.decode('utf-8', 'replace').strip()}")
            rc, out = c.exec_run(["nginx", "-s", "reload"])
            if rc != 0:
                raise RolloutFailed(f"nginx reload failed in {c.name}: {out.decode('utf-8', 'replace').strip()}")
        # The new worker processes take over at once; give the old ones a moment to hand over.
        time.sleep(1)

    # --- steps --------------------------------------------------------------------------------------------------
    def start(self, count, serving):
        before = {c.id for c in self.containers()}
        total = len(before) + count
        # Not --no-deps: Compose leaves depends_on out of the config hash of containers made that way, and a later
        # `docker compose up` would recreate them all at once. The dependencies are up already (unchanged).
        self.compose("up", "--detach", "--no-recreate", "--scale", f"{self.p['service']}={total}", self.p["service"])
        new = [c for c in self.containers() if c.id not in before]
        if len(new) != count:
            raise RolloutFailed(
                f"expected {count} new container(s) of {self.p['service']}, docker compose made {len(new)}"
            )
        for c in new:
            self.started.append(c)
        for c in new:
            self.gate(c)
            serving.append(c)
            self.write_upstream([s.name for s in serving])

    def stop(self, victims, serving):
        for c in victims:
            serving.remove(c)
        self.write_upstream([s.name for s in serving])
        time.sleep(self.p["drain_seconds"])
        for c in victims:
            c.stop(timeout=self.p["stop_timeout"])
            self.stopped.append(c)

    def undo(self, serving):
        """After a failure: old containers back in rotation, the new ones removed."""
        errors = []
        for c in self.stopped:
            try:
                c.start()
            except docker.errors.APIError as exc:
                errors.append(f"could not start {c.name} again: {exc}")
        for c in self.stopped:
            try:
                self.gate(c)
                serving.append(c)
            except RolloutFailed as exc:
                errors.append(str(exc))
        keep = [c for c in serving if c not in self.started]
        if keep:
            try:
                self.write_upstream([c.name for c in keep])
            except RolloutFailed as exc:
                errors.append(str(exc))
        time.sleep(self.p["drain_seconds"] if keep else 0)
        for c in self.started:
            try:
                c.remove(force=True)
            except docker.errors.APIError as exc:
                errors.append(f"could not remove {c.name}: {exc}")
        return [c.name for c in keep], errors

    def promote(self):
        target = self.p["promote_to"]
        if not target or os.path.abspath(target) == os.path.abspath(self.definition):
            return False
        with open(self.definition, encoding="utf-8") as fh:
            return write_if_changed(target, fh.read())


def main():
    module = AnsibleModule(
        argument_spec={
            "project_dir": {"type": "path", "required": True},
            "project_name": {"type": "str", "required": True},
            "definition": {"type": "path"},
            "promote_to": {"type": "path"},
            "service": {"type": "str", "default": "app"},
            "revision": {"type": "str", "required": True},
            "replicas": {"type": "int", "required": True},
            "max_surge": {"type": "int", "default": 1},
            "max_unavailable": {"type": "int", "default": 0},
            "port": {"type": "int", "default": 8000},
            "ready_path": {"type": "str", "default": "/ready"},
            "interval": {"type": "float", "default": 2},
            "timeout": {"type": "float", "default": 5},
            "healthy_threshold": {"type": "int", "default": 2},
            "unhealthy_threshold": {"type": "int", "default": 3},
            "start_timeout": {"type": "float", "default": 90},
            "upstream_file": {"type": "path", "required": True},
            "upstream_max_fails": {"type": "int", "default": 3},
            "upstream_fail_timeout": {"type": "str", "default": "10s"},
            "nginx_service": {"type": "str", "default": "nginx"},
            "drain_seconds": {"type": "float", "default": 5},
            "stop_timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = {
        "changed": False,
        "started": [],
        "stopped": [],
        "containers": [],
        "steps": [],
        "gates": [],
        "upstream_changed": False,
    }
    try:
        validate(p["replicas"], p["max_surge"], p["max_unavailable"])
        validate_thresholds(
            p["interval"],
            p["timeout"],
            p["healthy_threshold"],
            p["unhealthy_threshold"],
            p["start_timeout"],
            p["start_timeout"],
        )
    except (PlanError, GateError) as exc:
        module.fail_json(msg=str(exc), **result)
    if not p["ready_path"].startswith("/"):
        module.fail_json(msg=f"ready_path must start with /, got {p['ready_path']!r}", **result)
    if not p["revision"].strip():
        module.fail_json(msg="revision must not be empty", **result)
    if DOCKER_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("docker (python3-docker)"), exception=DOCKER_IMPORT_ERROR, **result)
    definition = p["definition"] or os.path.join(p["project_dir"], "compose.yaml")
    if not os.path.isfile(definition):
        module.fail_json(msg=f"definition {definition} does not exist", **result)

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        module.fail_json(msg=f"cannot reach the Docker engine: {exc}", **result)
    ro = Rollout(module, client)

    found = [ro.describe(c) for c in ro.containers()]
    old, new = classify(found, p["revision"])
    running_new = [c["obj"] for c in new if c["running"]]
    stale_new = [c["obj"] for c in new if not c["running"]]
    running_old = [c["obj"] for c in old if c["running"]]
    stopped_old = [c["obj"] for c in old if not c["running"]]

    # The work: replace running old containers, then scale the revision to replicas.
    steps = []
    if running_old:
        steps = [list(s) for s in plan_steps(p["replicas"], p["max_surge"], p["max_unavailable"], len(running_old))]
        # Containers of the revision already running count towards replicas.
        steps = account_existing(steps, len(running_new))
    elif len(running_new) < p["replicas"]:
        steps = [["start", p["replicas"] - len(running_new)]]
    elif len(running_new) > p["replicas"]:
        steps = [["stop", len(running_new) - p["replicas"]]]
    result["steps"] = steps

    before_names = sorted(c.name for c in running_old + running_new)
    current_upstream = ""
    if os.path.exists(p["upstream_file"]):
        with open(p["upstream_file"], encoding="utf-8") as fh:
            current_upstream = fh.read()

    if module.check_mode:
        after = [f"(new {p['revision']} container {i + 1})" for i in range(p["replicas"])] if steps else before_names
        result["changed"] = bool(steps) or bool(stale_new) or bool(stopped_old)
        if not steps and before_names:
            want = upstream_text(before_names, p["port"], p["upstream_max_fails"], p["upstream_fail_timeout"])
            result["changed"] = result["changed"] or want != current_upstream
        result["containers"] = after
        result["diff"] = {
            "before": {"containers": before_names, "upstream": current_upstream},
            "after": {"containers": after},
        }
        module.exit_json(**result)

    serving = running_old + running_new
    try:
        for c in stale_new:  # a new container that is not running (an earlier failed start): start over
            c.remove(force=True)
        for action, count in steps:
            if action == "start":
                ro.start(count, serving)
            else:
                pool = [c for c in serving if c in running_old] or [c for c in serving if c not in ro.started]
                pool = pool or list(serving)
                ro.stop(pool[:count], serving)
        if serving:
            ro.write_upstream([c.name for c in serving])
    except (RolloutFailed, PlanError, docker.errors.DockerException) as exc:
        keep, errors = ro.undo(serving)
        result.update(
            changed=True,
            started=[],
            stopped=[],
            containers=keep,
            gates=ro.gates,
            upstream_changed=ro.upstream_changed,
        )
        extra = ("; while undoing: " + "; ".join(errors)) if errors else ""
        module.fail_json(
            msg=f"Rollout of {p['service']} to {p['revision']} FAILED: {exc}. The new containers were removed; "
            f"serving now: {', '.join(keep) or 'nothing'}{extra}",
            **result,
        )

    # Success: the old containers go for good.
    for c in ro.stopped + stopped_old:
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)
    promoted = ro.promote()
    result.update(
        changed=bool(steps) or ro.upstream_changed or promoted or bool(stale_new) or bool(stopped_old),
        started=[c.name for c in ro.started],
        stopped=[c.name for c in ro.stopped + stopped_old],
        containers=sorted(c.name for c in serving),
        gates=ro.gates,
        upstream_changed=ro.upstream_changed,
    )
    if module._diff:
        result["diff"] = {
            "before": json.dumps({"containers": before_names}, indent=2) + "\n" + current_upstream,
            "after": json.dumps({"containers": result["containers"]}, indent=2)
            + "\n"
            + upstream_text(result["containers"], p["port"], p["upstream_max_fails"], p["upstream_fail_timeout"]),
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
