"""Helpers the scenarios' testinfra tests share: hosts by group, running plays, reading their recap."""

import os
import re
import subprocess
import time

import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
SCENARIO_DIR = os.environ.get("MOLECULE_SCENARIO_DIRECTORY", "")
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def hosts(pattern="all"):
    return testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts(pattern)


def host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def address(name):
    """The host's IPv4 address on the lab network."""
    out = host(name).check_output("ip -4 -o addr show scope global")
    return re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out).group(1)


def playbook(path, *args):
    """Run a playbook against the scenario's hosts; returns (returncode, output)."""
    cmd = ["ansible-playbook", "-i", INVENTORY, os.path.join(SCENARIO_DIR, path), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=False)
    return proc.returncode, proc.stdout + proc.stderr


def wait_for(predicate, timeout=60, step=1.0):
    """Poll predicate() until it is true or timeout seconds passed; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def recap(output):
    """{host: {'ok', 'changed', 'unreachable', 'failed'}} from a play's recap."""
    return {
        m.group(1): {
            "ok": int(m.group(2)),
            "changed": int(m.group(3)),
            "unreachable": int(m.group(4)),
            "failed": int(m.group(5)),
        }
        for m in RECAP.finditer(output)
    }


def can_connect(src, dst_address, port, timeout=2):
    """Whether host `src` opens a TCP connection to dst_address:port (a firewall drop times out)."""
    code = (
        "import socket,sys\n"
        f"s=socket.socket(); s.settimeout({timeout})\n"
        f"sys.exit(s.connect_ex(('{dst_address}', {port})))\n"
    )
    return host(src).run(f'python3 -c "{code}"').rc == 0


def assert_refused_in_preflight(tag, extra, variable, playbook_path="converge.yml"):
    """Bad input stops the run in the role's preflight (only that tag runs), naming the variable, nothing changed."""
    rc, out = playbook(playbook_path, "--tags", tag, "-e", extra)
    assert rc != 0, out
    assert variable in out, out
    assert all(c["changed"] == 0 for c in recap(out).values()), out


def assert_check_mode_clean(secrets=(), playbook_path="converge.yml"):
    """--check --diff on converged hosts: every host ran, no change, no failure, no secret value in the output."""
    rc, out = playbook(playbook_path, "--check", "--diff")
    assert rc == 0, out
    counts = recap(out)
    assert set(counts) >= set(hosts("all")), out
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), out
    assert not [s for s in secrets if s in out], "a secret value appears in the --check --diff output"
