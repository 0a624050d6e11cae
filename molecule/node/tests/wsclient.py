"""A WebSocket client (stdlib only: it is copied into a lab host) for the node scenario's tests.

    wsclient.py --url wss://127.0.0.1/ws [--idle 70] [--out result.json]

Opens the connection (TLS, certificate not checked), reads the server's greeting, stays idle --idle seconds, then
sends a text message and reads its echo. Prints (or writes to --out) a JSON result: the handshake status and
headers, the greeting, the echo, and how long the connection was held; an error ends it with "error".
"""

import argparse
import base64
import json
import os
import socket
import ssl
import time
import urllib.parse


def read_frame(sock):
    head = recv_exact(sock, 2)
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(recv_exact(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(recv_exact(sock, 8), "big")
    return opcode, recv_exact(sock, length)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def send_text(sock, text):
    payload, mask = text.encode(), os.urandom(4)
    header = bytes([0x81, 0x80 | len(payload)])  # short messages only
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="wss://127.0.0.1/ws")
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--idle", type=float, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    result = {"started": time.time()}
    try:
        u = urllib.parse.urlsplit(args.url)
        raw = socket.create_connection((u.hostname, u.port or 443), timeout=args.idle + 30)
        sock = ssl._create_unverified_context().wrap_socket(raw, server_hostname=args.host)  # lab: self-signed
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET {u.path} HTTP/1.1\r\nHost: {args.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += recv_exact(sock, 1)
        lines = head.decode().split("\r\n")
        result["status"] = int(lines[0].split()[1])
        result["headers"] = {k.lower(): v.strip() for k, _sep, v in (ln.partition(":") for ln in lines[1:] if ln)}
        result["greeting"] = json.loads(read_frame(sock)[1])
        time.sleep(args.idle)
        send_text(sock, "ping after idle")
        result["echo"] = json.loads(read_frame(sock)[1])
        result["held_seconds"] = round(time.time() - result["started"], 1)
        sock.close()
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["held_seconds"] = round(time.time() - result["started"], 1)
    text = json.dumps(result)
    if args.out:
        with open(args.out + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(args.out + ".tmp", args.out)
    print(text)


if __name__ == "__main__":
    main()
