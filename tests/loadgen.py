"""Continuous HTTP(S) load for rollout tests and benchmarks (stdlib only: it is copied into a lab container).

    loadgen.py --url https://127.0.0.1/version --host app.lab.test --out /tmp/loadgen.json [--workers 4] [--rate 25]

Sends GET requests from --workers threads, each on its own keep-alive connection (reconnecting after an error or a
close), each at most --rate requests per second (0: as fast as answers come), until SIGTERM/SIGINT or --stop-file
appears, then writes a JSON summary to --out: requests sent, ok and
failed, failures by reason (status or exception), the JSON "version" field of the answers counted by value, and
the first and last time each version was seen, and a timeline: per whole second (Unix time), the answers counted by
version ("-" for none) and the failures. A request fails when the status is not 2xx or no answer comes.

Like browsers and Go's HTTP client (RFC 9112, 9.3.1), a GET that finds its reused keep-alive connection closed by
the server before any answer (the server closed it while idle, e.g. on a graceful nginx reload) is sent again once
on a new connection; these are counted as `retried_stale`, and fail if the retry fails.
"""

import argparse
import contextlib
import http.client
import json
import os
import signal
import ssl
import threading
import time
import urllib.parse
from collections import Counter


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.failures = Counter()
        self.versions = Counter()
        self.first_seen = {}
        self.last_seen = {}
        self.samples = []
        self.retried_stale = 0
        self.timeline = {}

    def record(self, ok, reason, version):
        now = time.time()
        with self.lock:
            self.sent += 1
            if ok:
                self.ok += 1
            else:
                self.failed += 1
                self.failures[reason] += 1
                if len(self.samples) < 20:
                    self.samples.append({"at": now, "reason": reason})
            second = self.timeline.setdefault(str(int(now)), {"failed": 0, "versions": Counter()})
            second["versions"][version or "-"] += 1
            if not ok:
                second["failed"] += 1
            if version:
                self.versions[version] += 1
                self.first_seen.setdefault(version, now)
                self.last_seen[version] = now


def worker(url, host, timeout, stats, stop, rate=0.0):
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    ctx = ssl._create_unverified_context() if parts.scheme == "https" else None  # lab certificates are self-signed
    conn, used = None, 0
    stale = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)

    def connect():
        if ctx is not None:
            return http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)

    def send(c):
        c.request("GET", path, headers={"Host": host or parts.hostname, "Connection": "keep-alive"})
        resp = c.getresponse()
        return resp, resp.read()

    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    while not stop.is_set():
        if interval:
            # A steady pace, not a burst after a slow answer: a late request is sent at once, the next one on time.
            next_at = max(next_at + interval, time.monotonic() - interval)
            delay = next_at - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
        try:
            if conn is None:
                conn, used = connect(), 0
            try:
                resp, body = send(conn)
            except stale:
                if used == 0:
                    raise
                conn.close()  # closed by the server while idle: send it again on a new connection, once
                with stats.lock:
                    stats.retried_stale += 1
                conn, used = connect(), 0
                resp, body = send(conn)
            used += 1
            version = None
            with contextlib.suppress(ValueError, AttributeError):
                version = json.loads(body).get("version")
            ok = 200 <= resp.status < 300
            stats.record(ok, f"status {resp.status}", version)
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as exc:
            stats.record(False, type(exc).__name__, None)
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--host", default="")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--rate", type=float, default=0, help="requests per second per worker (0: no limit)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: until signalled)")
    args = ap.parse_args()

    stats, stop = Stats(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_a: stop.set())
    started = time.time()
    threads = [
        threading.Thread(target=worker, args=(args.url, args.host, args.timeout, stats, stop, args.rate), daemon=True)
        for _i in range(args.workers)
    ]
    for t in threads:
        t.start()
    while not stop.is_set():
        if args.stop_file and os.path.exists(args.stop_file):
            stop.set()
        if args.duration and time.time() - started >= args.duration:
            stop.set()
        stop.wait(0.2)
    for t in threads:
        t.join(args.timeout + 1)
    summary = {
        "url": args.url,
        "rate_per_worker": args.rate,
        "workers": args.workers,
        "started": started,
        "stopped": time.time(),
        "sent": stats.sent,
        "ok": stats.ok,
        "failed": stats.failed,
        "failures": dict(stats.failures),
        "retried_stale": stats.retried_stale,
        "failure_samples": stats.samples,
        "versions": dict(stats.versions),
        "first_seen": stats.first_seen,
        "last_seen": stats.last_seen,
        "timeline": {
            sec: {"failed": v["failed"], "versions": dict(v["versions"])} for sec, v in stats.timeline.items()
        },
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(summary, fh, indent=1)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
