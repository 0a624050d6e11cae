"""inventories/example parses (vault included) and yields the firewall the README promises."""

import json
import subprocess

import pytest
import yaml
from ansible_collections.selfhosted.stack.plugins.plugin_utils._firewall import compute_rules


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    password = tmp_path_factory.mktemp("vault") / "pass"
    password.write_text("example-only\n")
    out = subprocess.run(
        ["ansible-inventory", "-i", "inventories/example", "--list", "--vault-password-file", str(password)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def groups_of(inv):
    return {name: data.get("hosts", []) for name, data in inv.items() if name != "_meta"}


def test_vault_values_decrypt(inventory):
    hostvars = inventory["_meta"]["hostvars"]["db1.example.com"]
    assert hostvars["vault_postgresql_app_password"] == "change-me-app-db-password"


def test_firewall_of_example_hosts(inventory, render_services):
    groups = groups_of(inventory)
    groups["all"] = sorted(inventory["_meta"]["hostvars"])
    hostvars = inventory["_meta"]["hostvars"]
    with open("roles/_common/defaults/main.yml") as fh:
        services = yaml.safe_load(fh)["common_firewall_services"]
    services = render_services(services)  # the app entry's ports: app_port 8000, one instance (the example's)

    def rules(host):
        member = [g for g, hosts in groups.items() if host in hosts and g != "all"]
        return {r["name"]: r for r in compute_rules(services, host, member, groups, hostvars)}

    pg = rules("db1.example.com")["postgresql"]
    # app1, app2, worker1 (also beat), db1 and cache1 (backup), mon1 (monitoring); never lb1
    assert pg["sources4"] == ["10.0.1.11", "10.0.1.12", "10.0.1.21", "10.0.2.10", "10.0.2.20", "10.0.3.10"]
    assert "203.0.113.10" not in pg["sources4"]
    assert rules("lb1.example.com")["http"]["any"] is True
    assert "http" not in rules("app1.example.com")
