"""Scrape targets from the inventory: per host, per instance, by firewall address, labelled by host name."""

import pytest
from ansible_collections.selfhosted.stack.plugins.plugin_utils._monitoring import (
    MonitoringError,
    check_jobs,
    scrape_configs,
)

GROUPS = {"all": ["lb1", "app1", "app2", "db1"], "app": ["app1", "app2"], "db": ["db1"], "lb": ["lb1"], "ungrouped": []}
HOSTVARS = {
    "lb1": {"ansible_host": "10.0.0.1"},
    "app1": {"ansible_host": "10.0.0.11", "app_port": 8000, "app_instances": 2},
    "app2": {"ansible_facts": {"default_ipv4": {"address": "10.0.0.12"}}},
    "db1": {"ansible_host": "db1.example.com", "common_firewall_address": "fd00::5"},
}
JOBS = [
    {"name": "node", "groups": ["all"], "port": 9100},
    {"name": "app", "groups": ["app"], "port": 8000, "port_var": "app_port", "instances_var": "app_instances"},
    {"name": "postgres", "groups": ["db"], "port": 9187},
    {"name": "redis", "groups": ["cache"], "port": 9121},
]


def test_targets_per_host_and_instance():
    cfg = {c["job_name"]: c for c in scrape_configs(JOBS, GROUPS, HOSTVARS)}
    assert set(cfg) == {"node", "app", "postgres"}  # no cache hosts: no redis job
    assert [t["labels"]["instance"] for t in cfg["node"]["static_configs"]] == ["app1", "app2", "db1", "lb1"]
    app = {t["labels"]["instance"]: t["targets"] for t in cfg["app"]["static_configs"]}
    assert app == {"app1:8000": ["10.0.0.11:8000"], "app1:8001": ["10.0.0.11:8001"], "app2:8000": ["10.0.0.12:8000"]}
    assert cfg["postgres"]["static_configs"][0]["targets"] == ["[fd00::5]:9187"]
    assert cfg["postgres"]["static_configs"][0]["labels"]["host"] == "db1"


def test_unknown_address_names_the_way_out():
    with pytest.raises(MonitoringError, match="Prometheus needs the address of host db1"):
        scrape_configs(JOBS[2:3], GROUPS, {"db1": {"ansible_host": "db1.example.com"}})


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"name": "a b", "groups": ["x"], "port": 1}, r"\[0\]\.name must be a job name"),
        ({"name": "a", "groups": [], "port": 1}, r"\[0\]\.groups must list"),
        ({"name": "a", "groups": ["x"], "port": 70000}, r"\[0\]\.port must be a port"),
        ({"name": "a", "groups": ["x"], "port": 1, "path": "/m"}, r"unknown keys \['path'\]"),
    ],
)
def test_bad_jobs_name_the_variable(job, message):
    problems = check_jobs([job])
    assert len(problems) == 1 and problems[0].startswith("prometheus_scrape_jobs[0]")
    with pytest.raises(MonitoringError, match=message):
        scrape_configs([job], GROUPS, HOSTVARS)


def test_duplicate_job_names():
    assert check_jobs([JOBS[0], JOBS[0]]) == ["prometheus_scrape_jobs[1].name 'node' is used twice"]


def test_compose_hosts_are_scraped_by_their_own_prometheus_not_this_one():
    groups = {**GROUPS, "app": ["app1", "app2", "dock1"], "all": [*GROUPS["all"], "dock1"]}
    hostvars = {**HOSTVARS, "dock1": {"ansible_host": "10.0.0.99", "deploy_mode": "compose"}}
    cfg = {c["job_name"]: c for c in scrape_configs(JOBS, groups, hostvars)}
    instances = [t["labels"]["instance"] for job in cfg.values() for t in job["static_configs"]]
    assert not [i for i in instances if i.startswith("dock1")], instances
