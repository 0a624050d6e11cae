# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.stack.plugins.plugin_utils._firewall import (
    FirewallError,
    compute_rules,
    group_addresses,
    is_ip_address,
    needs_address_facts,
    service_problems,
)


def firewall_rules(services, hostname, host_groups, groups, hostvars):
    try:
        return compute_rules(services, hostname, host_groups, groups, hostvars)
    except FirewallError as exc:
        raise AnsibleFilterError(f"selfhosted.stack.firewall_rules for {hostname}: {exc}") from exc


def firewall_service_problems(services, ssh_port=22, ssh_sources=None):
    return service_problems(services, ssh_port, ssh_sources or [])


def group_addresses_filter(group_names, groups, hostvars):
    try:
        return group_addresses(group_names, groups, hostvars)
    except FirewallError as exc:
        raise AnsibleFilterError(f"selfhosted.stack.group_addresses: {exc}") from exc


def hosts_needing_address_facts(hostnames, hostvars):
    return [h for h in hostnames if needs_address_facts(h, hostvars)]


def not_ip_addresses(values):
    return [v for v in values if not is_ip_address(v)]


class FilterModule:
    def filters(self):
        return {
            "firewall_rules": firewall_rules,
            "firewall_service_problems": firewall_service_problems,
            "not_ip_addresses": not_ip_addresses,
            "group_addresses": group_addresses_filter,
            "hosts_needing_address_facts": hosts_needing_address_facts,
        }
