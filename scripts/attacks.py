#!/usr/bin/env python3
"""Memory and stall under three attacks on a real daemon (issue 34, items
3–5), for docs/BENCHMARKS.md ("Memory under attack").

Usage: attacks.py COORD_BINARY [ATTACK...]   (attacks: bodies patterns ring stalled)

Each attack gets a fresh daemon on a temporary socket and store. While it
runs, a probe writer appends one event every 20 ms and records its
longest wait. Printed per attack: the daemon's RSS before, at the peak of
the attack, and after the attackers left; the probe's longest wait; and
what the attack is about (acquire times for the pattern attack).
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def request(sock_path, method, path, body=b"", headers=(), timeout=60):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    head = f"{method} {path} HTTP/1.1\r\nHost: coord\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    s.sendall(head.encode() + b"\r\n" + body)
    data = b""
    while chunk := s.recv(1 << 16):
        data += chunk
    s.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


# Every daemon started, so a failed attack leaves none running.
STARTED = []


class Daemon:
    def __init__(self, coord, *args):
        self.dir = tempfile.mkdtemp(prefix="coord-attack-")
        os.chmod(self.dir, 0o700)
        self.sock = os.path.join(self.dir, "coord.sock")
        self.proc = subprocess.Popen(
            [coord, "daemon", "--socket", self.sock, "--store", os.path.join(self.dir, "log.db"),
             "--max-connections", "4096", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        STARTED.append(self.proc)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(20):
            request(self.sock, "GET", "/v1/status")

    def rss(self):
        return rss_mib(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Probe:
    """Appends one event every 20 ms; keeps the longest wait."""

    def __init__(self, sock):
        self.sock, self.longest, self.stop = sock, 0.0, threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        body = json.dumps({"tx_kind": "x.probe"}).encode()
        while not self.stop.is_set():
            t0 = time.monotonic()
            request(self.sock, "POST", "/v1/events", body, [("Content-Type", "application/json")])
            self.longest = max(self.longest, time.monotonic() - t0)
            time.sleep(0.02)

    def finish(self):
        self.stop.set()
        self.t.join()
        return self.longest * 1000


def register(sock, sid):
    _, b = request(sock, "POST", "/v1/sessions", json.dumps({"session_id": sid, "ttl_ms": 600000}).encode(),
                   [("Content-Type", "application/json")])
    return json.loads(b)["token"]


def bodies(coord):
    """1,000 connections, each a head declaring a 10 MB batch and 16 bytes."""
    d = Daemon(coord)
    before = d.rss()
    probe = Probe(d.sock)
    conns = []
    for _ in range(1000):
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.sock)
        s.sendall(b"POST /v1/events/batch HTTP/1.1\r\nHost: coord\r\nContent-Type: application/x-ndjson\r\n"
                  b"Content-Length: 10000000\r\n\r\n{\"tx_kind\":\"x.a\"")
        conns.append(s)
    time.sleep(2)
    peak = d.rss()
    for s in conns:
        s.close()
    time.sleep(1)
    after = d.rss()
    wait = probe.finish()
    d.stop()
    return before, peak, after, wait, ""


def patterns(coord):
    """Session A holds 2,000 patterns with no literal ends (`*17*a*a*…*`,
    245 bytes); session B acquires and releases a 254-byte pattern that
    conflicts with none of them 20 times."""
    d = Daemon(coord)
    before = d.rss()
    a = register(d.sock, "a")
    for i in range(2000):
        p = f"*{i}*"
        while len(p) < 244:
            p += "a*"
        st, b = request(d.sock, "POST", "/v1/locks/acquire", json.dumps({"session_id": "a", "resource": p}).encode(),
                        [("Content-Type", "application/json"), ("Authorization", f"Bearer {a}")], timeout=600)
        assert st == 200, b
    b_tok = register(d.sock, "b")
    probe = Probe(d.sock)
    # Like A's patterns but for a last `/x`, which none of them can
    # match: the conflict test must see all of it to say no.
    target = "*17*"
    while len(target) < 250:
        target += "a*"
    target += "/x"
    times = []
    for _ in range(20):
        t0 = time.monotonic()
        st, body = request(d.sock, "POST", "/v1/locks/acquire",
                           json.dumps({"session_id": "b", "resource": target}).encode(),
                           [("Content-Type", "application/json"), ("Authorization", f"Bearer {b_tok}")], timeout=600)
        times.append(time.monotonic() - t0)
        assert st == 200, body
        request(d.sock, "POST", "/v1/locks/release", json.dumps({"session_id": "b", "resource": target}).encode(),
                [("Content-Type", "application/json"), ("Authorization", f"Bearer {b_tok}")], timeout=600)
    peak = d.rss()
    wait = probe.finish()
    after = d.rss()
    d.stop()
    times.sort()
    return before, peak, after, wait, f"B's acquire p50 {times[10]*1000:.1f} ms, max {times[-1]*1000:.1f} ms"


def ring(coord):
    """1,500 events of 400 KB, nobody subscribed."""
    d = Daemon(coord)
    before = d.rss()
    probe = Probe(d.sock)
    line = (json.dumps({"tx_kind": "x.big", "payload": {"pad": "p" * 400_000}}) + "\n").encode()
    for _ in range(75):
        st, b = request(d.sock, "POST", "/v1/events/batch", line * 20, [("Content-Type", "application/x-ndjson")])
        assert st == 201, b
    peak = d.rss()
    wait = probe.finish()
    time.sleep(1)
    after = d.rss()
    d.stop()
    return before, peak, after, wait, ""


def stalled(coord):
    """500 subscribers that never read, while 20,000 events of 1 KB come."""
    d = Daemon(coord)
    before = d.rss()
    subs = []
    for _ in range(500):
        s = socket.socket(socket.AF_UNIX)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(d.sock)
        s.sendall(b"GET /v1/events?since=now HTTP/1.1\r\nHost: coord\r\nAccept: application/x-ndjson\r\n\r\n")
        subs.append(s)
    time.sleep(1)
    probe = Probe(d.sock)
    line = (json.dumps({"tx_kind": "x.kb", "payload": {"pad": "p" * 1000}}) + "\n").encode()
    for _ in range(40):
        st, b = request(d.sock, "POST", "/v1/events/batch", line * 500, [("Content-Type", "application/x-ndjson")])
        assert st == 201, b
    time.sleep(2)
    peak = d.rss()
    wait = probe.finish()
    for s in subs:
        s.close()
    time.sleep(2)
    after = d.rss()
    d.stop()
    return before, peak, after, wait, ""


ATTACKS = {"bodies": bodies, "patterns": patterns, "ring": ring, "stalled": stalled}


def main():
    coord = sys.argv[1]
    names = sys.argv[2:] or list(ATTACKS)
    print("| attack | RSS before | RSS at peak | RSS after | probe's longest wait | notes |")
    print("| --- | --- | --- | --- | --- | --- |")
    try:
        for name in names:
            before, peak, after, wait, notes = ATTACKS[name](coord)
            print(f"| {name} | {before:.0f} MiB | {peak:.0f} MiB | {after:.0f} MiB | {wait:.0f} ms | {notes} |", flush=True)
    finally:
        for p in STARTED:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=60)


if __name__ == "__main__":
    main()
