"""Helpers the scenarios' testinfra tests share: hosts by group, running plays, reading their recap."""

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import threading
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
    # Plain text whatever the caller's terminal: the recap is read with a regular expression.
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def wait_for(predicate, timeout=60, step=1.0):
    """Poll predicate() until it is true or timeout seconds passed; returns whether it became true.

    An exception from predicate() counts as "not yet" (a service restarting, half-written JSON): polling goes on,
    and if the last try before the deadline raised, that exception is raised so the test shows the cause.
    """
    deadline = time.monotonic() + timeout
    error = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
            error = None
        except Exception as exc:  # any failure of the probe means "not yet"
            error = exc
        time.sleep(step)
    if error is not None:
        raise error
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


@functools.cache
def check_mode_run(playbook_path="converge.yml", *args):
    """(rc, output) of `--check --diff` with these extra arguments, run once per scenario however many tests read
    it."""
    return playbook(playbook_path, "--check", "--diff", *args)


def assert_check_mode_clean(secrets=(), playbook_path="converge.yml"):
    """--check --diff on converged hosts: every host ran, no change, no failure, no secret value in the output.

    One run per scenario: the tests of one fleet that each make this claim (the core scenario's base, data tier and
    edge, each with its own secrets) read the same run's output."""
    rc, out = check_mode_run(playbook_path)
    assert rc == 0, out
    counts = recap(out)
    assert set(counts) >= set(hosts("all")), out
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), out
    assert not [s for s in secrets if s in out], "a secret value appears in the --check --diff output"


def descendants(pid):
    """The pids of every process below `pid` (children, their children...), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    # pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def kill_tree(proc):
    """SIGKILL a subprocess.Popen and everything it started, also what left its session: Mitogen's connection
    process calls setsid(), so killing the process group alone leaves it running into the next scenarios.
    `proc` must have been started with start_new_session=True (its group is killed: what it forks meanwhile too)."""
    below = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def request_json(on, path, method="GET", data=None):
    """An HTTPS request to nginx on lab host `on` (from itself); returns (status, parsed JSON body or text)."""
    body = f"-H 'Content-Type: application/json' -d '{json.dumps(data)}'" if data is not None else ""
    out = host(on).check_output(
        f"curl -sk -o /tmp/body -w '%{{http_code}}' -X {method} {body} https://127.0.0.1{path}; echo; cat /tmp/body"
    )
    status, _sep, text = out.partition("\n")
    try:
        return int(status), json.loads(text)
    except ValueError:
        return int(status), text


LOADGEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "loadgen.py")


class Load:
    """tests/loadgen.py inside lab host `on` for the length of a `with` block: GET `url` (TLS, keep-alive, Host
    header) from 4 threads at 25 requests per second each; afterwards .result holds its counts, the proof of "zero
    failed requests".

    Paced, not flat out: unpaced it sent about 1,600 requests a second (85,604 in one 54 s test), CPU the other
    scenarios and the rollout under test share; 100 a second still puts thousands of requests through every rollout
    step and reload. (The deploys were not measurably faster for it: their time is the rollout's tasks.)"""

    def __init__(self, on, name, url="https://127.0.0.1/version", host_header="app.lab.test", workers=4, rate=25):
        self.on, self.url, self.host_header, self.workers, self.rate = on, url, host_header, workers, rate
        self.out, self.stop_file = f"/tmp/loadgen-{name}.json", f"/tmp/loadgen-{name}.stop"
        self.result = None

    def __enter__(self):
        # Lab containers are named after their hosts; docker cp and exec -d reach them from here.
        host(self.on).run(f"rm -f {self.out} {self.stop_file}")
        subprocess.run(["docker", "cp", LOADGEN, f"{self.on}:/root/loadgen.py"], check=True)
        subprocess.run(
            ["docker", "exec", "-d", self.on, "python3", "/root/loadgen.py", "--url", self.url,
             "--host", self.host_header, "--workers", str(self.workers), "--rate", str(self.rate), "--out", self.out,
             "--stop-file", self.stop_file],
            check=True,
        )  # fmt: skip
        time.sleep(2)
        return self

    def __exit__(self, *exc):
        h = host(self.on)
        h.run(f"touch {self.stop_file}")
        assert wait_for(lambda: h.file(self.out).exists, 30)
        self.result = json.loads(h.file(self.out).content_string)


def assert_no_request_failed(load):
    r = load.result
    assert r["sent"] > 200, r  # the generator really ran through the whole rollout
    assert r["failed"] == 0 and r["ok"] == r["sent"], r


class UpstreamWatch:
    """Reads the upstream servers of port `port` in nginx.conf on lab host `lb` every 0.3 s for the length of a
    `with` block (a deploy): .samples is [(time, {host: weight} of the weighted servers, [hosts marked down])].
    Relies on the nginx role writing each server line as `server ADDRESS:PORT [weight=N] ... [down]; # HOST`."""

    def __init__(self, lb, port):
        self.lb, self.samples, self.stop = lb, [], threading.Event()
        self.line = re.compile(rf"^\s*server \S+?:{port}( weight=(\d+))?.*?( down)?; # (\S+)$", re.M)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            proc = subprocess.run(
                ["docker", "exec", self.lb, "cat", "/etc/nginx/nginx.conf"], capture_output=True, text=True, check=False
            )
            servers = self.line.findall(proc.stdout)
            if servers:
                weights = {m[3]: int(m[1]) for m in servers if m[1]}
                drained = sorted(m[3] for m in servers if m[2])
                self.samples.append((time.time(), weights, drained))
            time.sleep(0.3)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)

    def weight_steps(self):
        """[[weights, drained, first time, last time]] for each distinct non-empty weights state, in order."""
        out = []
        for at, weights, drained in self.samples:
            if not weights:
                continue
            if out and out[-1][0] == weights and out[-1][1] == drained:
                out[-1][3] = at
            else:
                out.append([weights, drained, at, at])
        return out
