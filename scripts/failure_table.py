"""The failure table of docs/DISTRIBUTED.md, measured (run through
scripts/failure-table): real daemons on a release build, real nats-server
nodes started here, the default 10 s daemon lease, one session per daemon
and a writer on each follower that posts an event every 20 ms with its own
tx_id, retrying a 503 with the same tx_id."""
import json, os, signal, socket, subprocess, sys, tempfile, threading, time
from collections import Counter

COORD = os.environ.get("COORD_BIN", "coord")
NATS = os.environ.get("NATS_SERVER", "nats-server")
def http(sock, method, path, body=None, timeout=10):
    cmd = ["curl", "-s", "-m", str(timeout), "--unix-socket", sock, "-X", method, "-w", "\n%{http_code}", "http://coord" + path]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    text, _, code = out.rpartition("\n")
    try: return int(code), json.loads(text) if text else {}
    except Exception: return 0, {}
class D:
    def __init__(s, url, extra=()):
        s.dir = tempfile.mkdtemp(prefix="coord-ft-")
        s.sock = s.dir + "/c.sock"
        s.p = subprocess.Popen([COORD, "daemon", "--store", url, "--socket", s.sock, *extra],
            stdout=subprocess.DEVNULL, stderr=open(s.dir + "/log", "w"), env={**os.environ, "COORD_LOG": "info"})
        for _ in range(300):
            if http(s.sock, "GET", "/v1/status")[0] == 200: break
            time.sleep(0.1)
    def status(s): return http(s.sock, "GET", "/v1/status")[1]
    def role(s): return s.status().get("store", {}).get("role")
    def register(s, sid):
        return http(s.sock, "POST", "/v1/sessions", {"session_id": sid, "ttl_ms": 3600000})
    def stop(s): s.p.send_signal(signal.SIGTERM); s.p.wait()
def leader_of(ds):
    while True:
        r = [d.role() for d in ds]
        if r.count("leader") == 1 and r.count("follower") == len(ds) - 1:
            return r.index("leader")
        time.sleep(0.2)
class Writer(threading.Thread):
    """Posts one event every 20 ms with a tx_id, retrying on 503 with the same tx_id; records refusals and the longest gap between acks."""
    def __init__(s, d, tag):
        super().__init__(daemon=True); s.d, s.tag, s.stop_ = d, tag, False
        s.acked, s.refused, s.unknown, s.maxgap, s.txs = 0, 0, 0, 0.0, []
    def run(s):
        last = time.time(); i = 0
        while not s.stop_:
            tx = "01K%023d" % (hash(s.tag) % 1000 * 100000 + i)
            while not s.stop_:
                c, b = http(s.d.sock, "POST", "/v1/events", {"tx_kind": "x.ft", "payload": {"i": i}, "tx_id": tx})
                if c in (200, 201):
                    now = time.time(); s.maxgap = max(s.maxgap, now - last); last = now; s.acked += 1; s.txs.append(tx); break
                s.refused += 1
                if "may or may not" in json.dumps(b): s.unknown += 1
                time.sleep(0.05)
            i += 1; time.sleep(0.02)
def events(d):
    out = subprocess.run(["curl", "-s", "-m", "10", "--unix-socket", d.sock, "http://coord/v1/events?since=0&follow=false"], capture_output=True, text=True).stdout
    evs = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return evs
def once(evs, txs):
    c = Counter(e.get("tx_id") for e in evs)
    return all(c[t] == 1 for t in txs)
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

class Servers:
    """One single node and one 3-node cluster, in a temporary directory."""
    def __init__(s):
        s.dir = tempfile.mkdtemp(prefix="coord-ft-nats-")
        s.single_port = free_port()
        s.procs = {"r1": s.spawn(["-a", "127.0.0.1", "-p", str(s.single_port), "-js", "-sd", s.dir + "/r1"], "r1")}
        s.ports = [free_port() for _ in range(3)]
        routes = [free_port() for _ in range(3)]
        for n in range(3):
            conf = "%s/n%d.conf" % (s.dir, n + 1)
            with open(conf, "w") as f:
                f.write("server_name: n%d\nlisten: 127.0.0.1:%d\njetstream { store_dir: %s/c%d }\n" % (n + 1, s.ports[n], s.dir, n + 1))
                f.write("cluster { name: ft, listen: 127.0.0.1:%d, routes: [%s] }\n" % (routes[n], ", ".join("nats-route://127.0.0.1:%d" % p for p in routes)))
            s.procs["n%d" % (n + 1)] = s.spawn(["-c", conf], "n%d" % (n + 1))
        time.sleep(5)
    def spawn(s, args, name):
        return subprocess.Popen([NATS, *args], stdout=subprocess.DEVNULL, stderr=open("%s/%s.log" % (s.dir, name), "a"))
    def r1(s): return "nats://127.0.0.1:%d" % s.single_port
    def r3(s): return "nats://" + ",".join("127.0.0.1:%d" % p for p in s.ports)
    def kill_node(s, n):
        s.procs["n%d" % n].send_signal(signal.SIGKILL); s.procs["n%d" % n].wait()
    def restart_node(s, n):
        s.procs["n%d" % n] = s.spawn(["-c", "%s/n%d.conf" % (s.dir, n)], "n%d" % n)
    def stop(s):
        for p in s.procs.values():
            p.send_signal(signal.SIGTERM); p.wait()

def run(scenario, servers):
    r3 = scenario.startswith("kill-node")
    url = (servers.r3() if r3 else servers.r1()) + "/ft%d" % int(time.time() * 1000 % 1e9)
    ds = [D(url, ["--replicas", "3"] if r3 else []) for _ in range(3)]
    l = leader_of(ds)
    for i, d in enumerate(ds): d.register("s%d" % i)
    ws = [Writer(d, "w%d%s" % (i, scenario)) for i, d in enumerate(ds) if i != l]
    for w in ws: w.start()
    time.sleep(2)
    t0 = time.time()
    note = ""
    if scenario == "kill-leader":
        ds[l].p.send_signal(signal.SIGKILL); ds[l].p.wait()
        leader_of([d for i, d in enumerate(ds) if i != l])
        note = "new leader after %.1f s; " % (time.time() - t0)
        time.sleep(8)
    elif scenario == "stop-leader":
        ds[l].p.send_signal(signal.SIGSTOP); time.sleep(30); ds[l].p.send_signal(signal.SIGCONT); time.sleep(5)
        note = "roles after: %s; " % [d.role() for d in ds]
    elif scenario == "stop-follower":
        f = [i for i in range(3) if i != l][0]
        ds[f].p.send_signal(signal.SIGSTOP); time.sleep(30); ds[f].p.send_signal(signal.SIGCONT); time.sleep(5)
    else:
        n = int(scenario[-1])
        servers.kill_node(n); time.sleep(10); servers.restart_node(n); time.sleep(8)
    for w in ws: w.stop_ = True
    for w in ws: w.join()
    live = [d for d in ds if d.p.poll() is None]
    evs = events(live[0])
    print("%s: %swrites acked %d, refused tries %d (outcome unknown %d), longest gap between acks %.2f s, every acked write once: %s, sessions ended: %s" % (
        scenario, note, sum(w.acked for w in ws), sum(w.refused for w in ws), sum(w.unknown for w in ws), max(w.maxgap for w in ws),
        once(evs, [t for w in ws for t in w.txs]),
        [e["session_id"] + ":" + e["payload"]["reason"] for e in evs if e.get("tx_kind") == "session.dereg"]), flush=True)
    for d in live: d.stop()

if __name__ == "__main__":
    scenarios = sys.argv[1:] or ["kill-leader", "stop-leader", "stop-follower", "kill-node1", "kill-node2", "kill-node3"]
    servers = Servers()
    try:
        for sc in scenarios:
            run(sc, servers)
    finally:
        servers.stop()
