# Copyright: selfhosted.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure firewall decisions: which ports a host opens, and to which source addresses.

Used by the selfhosted.stack.firewall_rules filter; no Ansible objects here, so it is unit-tested directly.
"""

import ipaddress

SERVICE_KEYS = {"name", "ports", "proto", "on_groups", "from", "from_groups", "from_cidrs"}
PROTOS = ("tcp", "udp")


class FirewallError(ValueError):
    """An input the firewall cannot be computed from; the message names the variable."""


def _is_port(value):
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _network(text):
    """An address or CIDR as an ip_network, or None when it is neither."""
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        return None


def is_ip_address(text):
    """Whether text is a single IPv4 or IPv6 address (not a network, not a name)."""
    try:
        ipaddress.ip_address(str(text))
    except ValueError:
        return False
    return True


def service_problems(services, ssh_port=22, ssh_sources=()):
    """Every problem in common_firewall_services (+ extra) and the SSH settings, as messages."""
    problems = []
    if not _is_port(ssh_port):
        problems.append(f"common_firewall_ssh_port must be a port number 1-65535, got {ssh_port!r}")
    for src in ssh_sources or ():
        if _network(src) is None:
            problems.append(f"common_firewall_ssh_sources: {src!r} is not an IP address or CIDR")
    if not isinstance(services, list):
        return [*problems, "common_firewall_services must be a list of services"]
    names = set()
    for index, svc in enumerate(services):
        where = f"common_firewall_services[{index}]"
        if not isinstance(svc, dict):
            problems.append(f"{where} must be a dict with name, ports, on_groups and from/from_groups")
            continue
        name = svc.get("name")
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
            problems.append(f"{where}.name must be a word of letters, digits, '-', '_' or '.', got {name!r}")
        else:
            where = f"common_firewall_services ({name})"
            if name in names:
                problems.append(f"{where}: the name is used twice")
            names.add(name)
        unknown = sorted(set(svc) - SERVICE_KEYS)
        if unknown:
            problems.append(f"{where}: unknown keys {unknown}; allowed: {sorted(SERVICE_KEYS)}")
        ports = svc.get("ports")
        if not isinstance(ports, list) or not ports or not all(_is_port(p) for p in ports):
            problems.append(f"{where}.ports must be a non-empty list of port numbers 1-65535, got {ports!r}")
        if svc.get("proto", "tcp") not in PROTOS:
            problems.append(f"{where}.proto must be one of {list(PROTOS)}, got {svc.get('proto')!r}")
        on_groups = svc.get("on_groups")
        if not isinstance(on_groups, list) or not on_groups or not all(isinstance(g, str) for g in on_groups):
            problems.append(f"{where}.on_groups must be a non-empty list of inventory group names")
        src_any = svc.get("from")
        if src_any not in (None, "any"):
            problems.append(f"{where}.from must be 'any' or left out (then from_groups/from_cidrs apply)")
        from_groups = svc.get("from_groups", [])
        from_cidrs = svc.get("from_cidrs", [])
        if not isinstance(from_groups, list) or not all(isinstance(g, str) for g in from_groups):
            problems.append(f"{where}.from_groups must be a list of inventory group names")
        if not isinstance(from_cidrs, list):
            problems.append(f"{where}.from_cidrs must be a list of addresses or CIDRs")
        else:
            problems.extend(
                f"{where}.from_cidrs: {c!r} is not an IP address or CIDR" for c in from_cidrs if _network(c) is None
            )
        if src_any == "any" and (from_groups or from_cidrs):
            problems.append(f"{where}: 'from: any' cannot be combined with from_groups or from_cidrs")
        if src_any is None and not from_groups and not from_cidrs:
            problems.append(f"{where}: say who may connect: from: any, from_groups or from_cidrs")
    return problems


def _usable(address):
    ip = _network(address)
    return ip is not None and not (ip.network_address.is_loopback or ip.network_address.is_link_local)


def _reachable_ansible_host(hv):
    """The host's ansible_host when it is an IP address its peers reach it at, else None. A loopback ansible_host
    (ssh through a tunnel or a forwarded port) is where the controller reaches the host, not where the other hosts
    do: then the address comes from the facts, as for a host name."""
    try:
        ip = ipaddress.ip_address(hv.get("ansible_host") or "")
    except ValueError:
        return None
    return None if ip.is_loopback else str(ip)


def needs_address_facts(name, hostvars):
    """Whether host_address() needs facts of host `name` that hostvars does not hold yet (no
    common_firewall_address, no reachable IP ansible_host, no default address in its facts)."""
    hv = hostvars.get(name, {}) if hasattr(hostvars, "get") else {}
    if hv.get("common_firewall_address") or _reachable_ansible_host(hv) is not None:
        return False
    facts = hv.get("ansible_facts") or {}
    return not (facts.get("default_ipv4") or facts.get("default_ipv6"))


def host_address(name, hostvars):
    """The addresses (v4 and v6 lists) other hosts' firewalls use for inventory host `name`."""
    hv = hostvars.get(name, {}) if hasattr(hostvars, "get") else {}
    explicit = hv.get("common_firewall_address") or ""
    if explicit:
        if _network(explicit) is None:
            raise FirewallError(f"common_firewall_address of host {name} must be an IP address, got {explicit!r}")
        return [explicit]
    ip = _reachable_ansible_host(hv)
    if ip is not None:
        return [ip]
    facts = hv.get("ansible_facts") or {}
    found = []
    for key in ("default_ipv4", "default_ipv6"):
        address = (facts.get(key) or {}).get("address")
        if address:
            found.append(address)
    if not found:
        # No default route (an air-gapped host): its first global address.
        for key in ("all_ipv4_addresses", "all_ipv6_addresses"):
            usable = [a for a in facts.get(key) or [] if _usable(a)]
            if usable:
                found.append(usable[0])
                break
    if not found:
        raise FirewallError(
            f"the firewall needs the address of host {name}: gather its facts in the same run (it is in a group "
            f"allowed to connect), give it an IP ansible_host, or set common_firewall_address for it"
        )
    return found


def compute_rules(services, hostname, host_groups, groups, hostvars):
    """The open ports of `hostname`: a list of {name, proto, ports, any, sources4, sources6}, sorted by name.

    A service applies when the host is in one of its on_groups ('all' matches every host). Sources are the
    addresses of the hosts in from_groups (unknown groups count as empty) plus from_cidrs; an applicable service
    whose source set is empty stays closed (never opened to everyone by accident).
    """
    problems = service_problems(services)
    if problems:
        raise FirewallError("; ".join(problems))
    member_of = set(host_groups) | {"all"}
    rules = []
    for svc in services:
        if not member_of & set(svc["on_groups"]):
            continue
        rule = {
            "name": svc["name"],
            "proto": svc.get("proto", "tcp"),
            "ports": sorted(set(svc["ports"])),
            "any": svc.get("from") == "any",
            "sources4": [],
            "sources6": [],
        }
        if not rule["any"]:
            sources = set()
            for group in svc.get("from_groups", []):
                for peer in groups.get(group, []):
                    if not is_compose_host(peer, hostvars):
                        sources.update(host_address(peer, hostvars))
            sources.update(str(_network(c)) if "/" in str(c) else str(c) for c in svc.get("from_cidrs", []))
            for src in sources:
                (rule["sources6"] if _network(src).version == 6 else rule["sources4"]).append(src)
            rule["sources4"].sort(key=_network)
            rule["sources6"].sort(key=_network)
        rules.append(rule)
    return sorted(rules, key=lambda r: r["name"])


def is_compose_host(name, hostvars):
    """A host with deploy_mode compose keeps its services inside its own Compose project (only its nginx is
    published): other hosts neither reach its services nor are reached by them, so it is left out of their
    allow-lists, upstreams and scrape targets."""
    try:
        hv = hostvars[name]
    except (KeyError, TypeError):
        return False
    try:
        return str(hv.get("deploy_mode", "vm")) == "compose"
    except AttributeError:
        return False


def group_addresses(group_names, groups, hostvars):
    """The addresses of every host in the given groups, as host networks (a.b.c.d/32, x::y/128), sorted.

    The same address rules as the firewall (host_address), for allow-lists such as pg_hba.conf. Hosts with
    deploy_mode compose are left out (is_compose_host).
    """
    found = set()
    for group in group_names:
        for peer in groups.get(group, []):
            if not is_compose_host(peer, hostvars):
                found.update(host_address(peer, hostvars))
    return sorted((str(_network(a)) for a in found), key=lambda a: (_network(a).version, _network(a)))
