# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decisions of the prometheus role: scrape targets from the inventory."""

from __future__ import annotations

import re

from ansible_collections.selfhosted.stack.plugins.plugin_utils._firewall import (
    FirewallError,
    host_address,
    is_compose_host,
)

JOB_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")


class MonitoringError(ValueError):
    """Bad input; the message names the variable and what is allowed."""


def _address(host, hostvars):
    try:
        address = host_address(host, hostvars)[0]
    except FirewallError as exc:
        raise MonitoringError(str(exc).replace("the firewall needs", "Prometheus needs")) from exc
    return f"[{address}]" if ":" in address else address


def _hv(hostvars, host):
    return hostvars.get(host, {}) if hasattr(hostvars, "get") else {}


def check_jobs(jobs, variable="prometheus_scrape_jobs"):
    """Problems of the job list, each naming the variable: name, groups, port or port_var."""
    problems = []
    seen = set()
    for i, job in enumerate(jobs or []):
        where = f"{variable}[{i}]"
        if not isinstance(job, dict):
            problems.append(f"{where} must be a dict with name, groups and port")
            continue
        name = job.get("name", "")
        if not JOB_NAME.match(str(name)):
            problems.append(f"{where}.name must be a job name (letters, digits, _ and -), got {name!r}")
        elif name in seen:
            problems.append(f"{where}.name {name!r} is used twice")
        seen.add(name)
        if not isinstance(job.get("groups"), list) or not job["groups"]:
            problems.append(f"{where}.groups must list inventory groups")
        port = job.get("port")
        if not (isinstance(port, int) and 0 < port < 65536) and not job.get("port_var"):
            problems.append(f"{where}.port must be a port number (or port_var the host variable holding it)")
        unknown = set(job) - {"name", "groups", "port", "port_var", "instances_var", "metrics_path", "scheme",
                              "interval", "params"}  # fmt: skip
        if unknown:
            problems.append(f"{where} has unknown keys {sorted(unknown)}")
    return problems


def static_configs(job, groups, hostvars):
    """Prometheus static_configs for one job: one target per host (per instance with instances_var), labelled
    with the inventory host name (instance: host or host:port) so dashboards and alerts name hosts, not IPs."""
    hosts = []
    for group in job["groups"]:
        members = [h for members in groups.values() for h in members] if group == "all" else groups.get(group, [])
        for h in members:
            if h not in hosts and not is_compose_host(h, hostvars):  # its own Prometheus scrapes it
                hosts.append(h)
    out = []
    for h in sorted(hosts):
        hv = _hv(hostvars, h)
        first = int(hv.get(job["port_var"], job.get("port", 0)) if job.get("port_var") else job["port"])
        count = int(hv.get(job["instances_var"], 1)) if job.get("instances_var") else 1
        address = _address(h, hostvars)
        for port in range(first, first + count):
            instance = f"{h}:{port}" if job.get("instances_var") else h
            out.append({"targets": [f"{address}:{port}"], "labels": {"instance": instance, "host": h}})
    return out


def scrape_configs(jobs, groups, hostvars, scrape_interval="15s"):
    """The scrape_configs of prometheus.yml for the jobs (see check_jobs); jobs with no host are left out."""
    problems = check_jobs(jobs)
    if problems:
        raise MonitoringError("; ".join(problems))
    out = []
    for job in jobs:
        targets = static_configs(job, groups, hostvars)
        if not targets:
            continue
        cfg = {"job_name": job["name"], "scrape_interval": job.get("interval", scrape_interval)}
        if job.get("metrics_path"):
            cfg["metrics_path"] = job["metrics_path"]
        if job.get("scheme"):
            cfg["scheme"] = job["scheme"]
        if job.get("params"):
            cfg["params"] = job["params"]
        cfg["static_configs"] = targets
        out.append(cfg)
    return out
