"""The firewall decisions: which ports a host opens, and to whom."""

import ipaddress

import pytest
from ansible_collections.selfhosted.stack.plugins.plugin_utils._firewall import (
    FirewallError,
    compute_rules,
    host_address,
    needs_address_facts,
    service_problems,
)
from hypothesis import given
from hypothesis import strategies as st

DEFAULT_SERVICES = [
    {"name": "http", "ports": [80, 443], "on_groups": ["lb"], "from": "any"},
    {"name": "postgresql", "ports": [5432], "on_groups": ["db"], "from_groups": ["app", "worker", "monitoring"]},
    {"name": "node-exporter", "ports": [9100], "on_groups": ["all"], "from_groups": ["monitoring"]},
    {"name": "redis", "ports": [6379], "on_groups": ["cache"], "from_groups": ["app"], "from_cidrs": ["10.9.0.0/24"]},
]
GROUPS = {
    "all": ["lb1", "app1", "app2", "db1", "mon1"],
    "lb": ["lb1"],
    "app": ["app1", "app2"],
    "db": ["db1"],
    "monitoring": ["mon1"],
}
HOSTVARS = {
    "lb1": {"ansible_host": "192.0.2.10"},
    "app1": {"ansible_host": "app1.example.com", "ansible_facts": {"default_ipv4": {"address": "192.0.2.21"}}},
    "app2": {
        "ansible_host": "2001:db8::22",
    },
    "db1": {"ansible_host": "192.0.2.30"},
    "mon1": {"common_firewall_address": "192.0.2.40", "ansible_host": "198.51.100.1"},
}


def rules_for(host, services=None, groups=None, hostvars=None):
    services = DEFAULT_SERVICES if services is None else services
    groups = GROUPS if groups is None else groups
    hostvars = HOSTVARS if hostvars is None else hostvars
    member = [g for g, members in groups.items() if host in members and g != "all"]
    return {r["name"]: r for r in compute_rules(services, host, member, groups, hostvars)}


def test_db_opens_postgresql_to_app_worker_monitoring_addresses_only():
    rules = rules_for("db1")
    assert set(rules) == {"postgresql", "node-exporter"}
    pg = rules["postgresql"]
    assert pg["any"] is False
    assert pg["sources4"] == ["192.0.2.21", "192.0.2.40"]  # app1 from facts, mon1 explicit; worker group absent
    assert pg["sources6"] == ["2001:db8::22"]  # app2's ansible_host is an IPv6 address


def test_lb_opens_http_to_everyone():
    rules = rules_for("lb1")
    assert rules["http"]["any"] is True
    assert rules["http"]["ports"] == [80, 443]
    assert "postgresql" not in rules


def test_all_group_applies_to_every_host():
    for host in GROUPS["all"]:
        assert rules_for(host)["node-exporter"]["sources4"] == ["192.0.2.40"]


def test_service_with_no_source_host_stays_closed_not_open():
    services = [{"name": "pg", "ports": [5432], "on_groups": ["db"], "from_groups": ["backup"]}]
    rule = rules_for("db1", services)["pg"]
    assert rule["any"] is False
    assert rule["sources4"] == [] and rule["sources6"] == []


def test_cidrs_are_normalised_and_merged_with_hosts():
    groups = {**GROUPS, "cache": ["db1"]}
    rule = rules_for("db1", groups=groups)["redis"]
    assert rule["sources4"] == ["10.9.0.0/24", "192.0.2.21"]


def test_missing_address_is_a_clear_error():
    hostvars = {**HOSTVARS, "app1": {"ansible_host": "app1.example.com"}}
    with pytest.raises(FirewallError, match=r"address of host app1.*common_firewall_address"):
        rules_for("db1", hostvars=hostvars)


def test_bad_explicit_address():
    with pytest.raises(FirewallError, match="common_firewall_address of host x"):
        host_address("x", {"x": {"common_firewall_address": "not-an-ip"}})


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ({"name": "x", "ports": ["fast"], "on_groups": ["db"], "from": "any"}, "(x).ports"),
        ({"name": "x", "ports": [70000], "on_groups": ["db"], "from": "any"}, "(x).ports"),
        ({"name": "x", "ports": [], "on_groups": ["db"], "from": "any"}, "(x).ports"),
        ({"name": "x", "ports": [1], "on_groups": [], "from": "any"}, "(x).on_groups"),
        ({"name": "x", "ports": [1], "on_groups": ["db"], "from": "everyone"}, "(x).from must be 'any'"),
        ({"name": "x", "ports": [1], "on_groups": ["db"]}, "say who may connect"),
        ({"name": "x", "ports": [1], "on_groups": ["db"], "from": "any", "from_groups": ["a"]}, "cannot be combined"),
        ({"name": "x", "ports": [1], "on_groups": ["db"], "from_cidrs": ["10.0.0.0/33"]}, "is not an IP address"),
        ({"name": "x", "ports": [1], "on_groups": ["db"], "proto": "sctp", "from": "any"}, "(x).proto"),
        ({"name": "x", "ports": [1], "on_groups": ["db"], "from": "any", "port": 2}, "unknown keys ['port']"),
        ({"name": "bad name", "ports": [1], "on_groups": ["db"], "from": "any"}, "[0].name"),
        ("postgresql", "[0] must be a dict"),
    ],
)
def test_service_problems_name_the_variable(service, message):
    problems = service_problems([service])
    assert len(problems) >= 1
    assert any(message in p for p in problems), problems
    assert all(p.startswith("common_firewall_services") for p in problems)


def test_duplicate_names_and_ssh_settings():
    svc = {"name": "x", "ports": [1], "on_groups": ["db"], "from": "any"}
    problems = service_problems([svc, svc], ssh_port=0, ssh_sources=["10.0.0.0/8", "nope"])
    assert any("used twice" in p for p in problems)
    assert any(p.startswith("common_firewall_ssh_port") for p in problems)
    assert any("'nope' is not an IP address" in p for p in problems)


def test_default_services_of_the_role_are_valid(render_services):
    import yaml

    with open("roles/_common/defaults/main.yml") as fh:
        defaults = yaml.safe_load(fh)
    for hostvars in ({}, {"app_port": 3000, "app_instances": 3}):
        services = render_services(defaults["common_firewall_services"], **hostvars)
        assert service_problems(services, defaults["common_firewall_ssh_port"]) == []


def test_the_app_entry_follows_app_port_and_instances(render_services):
    import yaml

    with open("roles/_common/defaults/main.yml") as fh:
        defaults = yaml.safe_load(fh)

    def ports(**hostvars):
        return next(s for s in render_services(defaults["common_firewall_services"], **hostvars) if s["name"] == "app")[
            "ports"
        ]

    assert ports() == [8000]
    assert ports(app_port=3000) == [3000]
    assert ports(app_port=3000, app_instances=2) == [3000, 3001]


def test_compute_rules_refuses_invalid_services():
    with pytest.raises(FirewallError, match="ports"):
        compute_rules([{"name": "x", "ports": "80", "on_groups": ["db"], "from": "any"}], "db1", ["db"], GROUPS, {})


# A host's own address: never a loopback one (a loopback ansible_host is only how the controller reaches it).
addresses = (st.ip_addresses(v=4) | st.ip_addresses(v=6)).filter(lambda ip: not ip.is_loopback).map(str)


@given(
    peers=st.dictionaries(st.from_regex(r"h[0-9]{1,3}", fullmatch=True), addresses, min_size=0, max_size=8),
    allowed=st.sets(st.from_regex(r"h[0-9]{1,3}", fullmatch=True), max_size=8),
)
def test_sources_are_exactly_the_allowed_group(peers, allowed):
    """Whatever the inventory, a restricted port admits exactly the allowed group's addresses."""
    members = sorted(set(peers) & allowed)
    groups = {"all": [*sorted(peers), "db1"], "db": ["db1"], "app": members}
    hostvars = {name: {"ansible_host": addr} for name, addr in peers.items()}
    hostvars["db1"] = {"ansible_host": "192.0.2.30"}
    services = [{"name": "pg", "ports": [5432], "on_groups": ["db"], "from_groups": ["app"]}]
    (rule,) = compute_rules(services, "db1", ["db"], groups, hostvars)
    expected = {str(ipaddress.ip_address(peers[m])) for m in members}
    assert set(rule["sources4"]) | set(rule["sources6"]) == expected
    assert rule["any"] is False


@pytest.mark.parametrize(
    ("text", "ok"),
    [("127.0.0.1", True), ("::1", True), ("999.1.1.1", False), ("10.0.0.0/8", False), ("cache1", False), ("", False)],
)
def test_is_ip_address(text, ok):
    from ansible_collections.selfhosted.stack.plugins.plugin_utils._firewall import is_ip_address

    assert is_ip_address(text) is ok


def test_group_addresses_as_host_networks():
    from ansible_collections.selfhosted.stack.plugins.plugin_utils._firewall import group_addresses

    assert group_addresses(["app", "monitoring", "nosuchgroup"], GROUPS, HOSTVARS) == [
        "192.0.2.21/32",
        "192.0.2.40/32",
        "2001:db8::22/128",
    ]
    assert group_addresses([], GROUPS, HOSTVARS) == []


def test_host_without_default_route_uses_its_first_global_address():
    facts = {"all_ipv4_addresses": ["127.0.0.1", "169.254.1.1", "10.1.2.3", "10.9.9.9"], "all_ipv6_addresses": []}
    assert host_address("h", {"h": {"ansible_facts": facts}}) == ["10.1.2.3"]
    v6 = {"all_ipv4_addresses": [], "all_ipv6_addresses": ["fe80::1", "2001:db8::7"]}
    assert host_address("h", {"h": {"ansible_facts": v6}}) == ["2001:db8::7"]


def test_compose_hosts_are_left_out_of_other_hosts_allow_lists():
    from ansible_collections.selfhosted.stack.plugins.plugin_utils._firewall import group_addresses, is_compose_host

    groups = {**GROUPS, "app": ["app1", "app2", "dock1"], "all": [*GROUPS["all"], "dock1"]}
    hostvars = {**HOSTVARS, "dock1": {"ansible_host": "192.0.2.99", "deploy_mode": "compose"}}
    assert is_compose_host("dock1", hostvars) and not is_compose_host("app1", hostvars)
    assert not is_compose_host("unknown", hostvars)
    assert "192.0.2.99/32" not in group_addresses(["app"], groups, hostvars)
    rules = rules_for("db1", groups=groups, hostvars=hostvars)
    assert "192.0.2.99" not in rules["postgresql"]["sources4"], rules["postgresql"]


@pytest.mark.parametrize("connect_to", ["127.0.0.1", "::1", "127.0.0.2"])
def test_a_loopback_ansible_host_is_not_the_hosts_address(connect_to):
    """Reached through a tunnel or a forwarded port (ssh to 127.0.0.1:2201), a host is not at a loopback address for
    the other hosts: its address comes from its facts, as with a host name."""
    facts = {"default_ipv4": {"address": "192.0.2.21"}}
    assert host_address("app1", {"app1": {"ansible_host": connect_to, "ansible_facts": facts}}) == ["192.0.2.21"]
    with pytest.raises(FirewallError, match=r"address of host app1"):
        host_address("app1", {"app1": {"ansible_host": connect_to}})


@pytest.mark.parametrize(
    ("hostvars", "needed"),
    [
        ({}, True),  # a host name, no facts yet
        ({"ansible_host": "db1.example.com"}, True),
        ({"ansible_host": "127.0.0.1"}, True),  # loopback: where the controller reaches it, not its peers
        ({"ansible_host": "::1"}, True),
        ({"ansible_host": "10.0.0.5"}, False),
        ({"common_firewall_address": "10.0.0.6"}, False),
        ({"ansible_facts": {"default_ipv4": {"address": "10.0.0.7"}}}, False),
        ({"ansible_host": "127.0.0.1", "ansible_facts": {"default_ipv6": {"address": "2001:db8::1"}}}, False),
    ],
)
def test_needs_address_facts_follows_host_address(hostvars, needed):
    assert needs_address_facts("h", {"h": hostvars}) is needed
    if not needed:
        assert host_address("h", {"h": hostvars})  # the rule finds an address without gathering
