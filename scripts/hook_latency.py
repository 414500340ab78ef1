#!/usr/bin/env python3
"""How long `coord hook claude` takes an agent, process start included
(issue 35: p99 ≤ 20 ms for a tool check of an unlocked path).

Usage: hook_latency.py COORD_BINARY [RUNS] [LOCKS]

Starts a daemon on a temporary socket with LOCKS (default 1,000) locks
held by another session (none covering the path), registers one hook
session through a SessionStart event, then times RUNS PreToolUse events
for a Write of an unlocked file in a git work tree, and RUNS PostToolUse
events (which also look for mail), and RUNS PermissionRequest events for
a Write under tmp/ that a policy rule (approvals.toml) allows — from the
hook firing to the agent reading `{"behavior":"allow"}` (issue 38), each a
new approval — each a fresh `coord hook claude` process fed on stdin, as
the agent runs it. Prints p50, p90, p99 and max in ms for each.
"""

import json
import os
import subprocess
import sys
import tempfile
import time


def main():
    coord, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 500
    nlocks = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    work = tempfile.mkdtemp(prefix="coord-hooklat-")
    os.chmod(work, 0o700)
    sock = os.path.join(work, "coord.sock")
    repo = os.path.join(work, "repo")
    os.makedirs(os.path.join(repo, "src"))
    subprocess.run(["git", "init", "-q", repo], check=True)
    env = dict(os.environ, COORD_SOCKET=sock, COORD_NO_AUTOSTART="1")
    env.pop("COORD_SESSION", None)
    daemon = subprocess.Popen([coord, "daemon", "--socket", sock, "--store", os.path.join(work, "log.db")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(sock):
            time.sleep(0.05)
        reg = json.loads(subprocess.run([coord, "--json", "session", "register", "--id", "other", "--ttl", "1h"],
                                        env=env, capture_output=True, text=True, check=True).stdout)
        tok_env = dict(env, COORD_SESSION="other", COORD_SESSION_TOKEN=reg["token"])
        for i in range(nlocks):
            subprocess.run([coord, "lock", "acquire", f"elsewhere/m{i}/**"], env=tok_env,
                           capture_output=True, check=True)
        start = {"hook_event_name": "SessionStart", "session_id": "lat-1", "cwd": repo, "source": "startup"}
        subprocess.run([coord, "hook", "claude"], input=json.dumps(start), env=env, text=True, check=True,
                       capture_output=True)
        tool = {"session_id": "lat-1", "cwd": repo, "tool_name": "Write",
                "tool_input": {"file_path": os.path.join(repo, "src/a.rs")}}
        with open(os.path.join(work, "approvals.toml"), "w") as f:
            f.write('[[rule]]\nname = "scratch"\ndecision = "allow"\ntool = "Write"\npath = "tmp/**"\n')
        scratch = dict(tool, tool_input={"file_path": os.path.join(repo, "tmp/a.rs"), "content": "x"})
        for event in ["PreToolUse", "PostToolUse", "PermissionRequest"]:
            times = []
            for i in range(runs):
                if event == "PermissionRequest":
                    payload = json.dumps(dict(scratch, hook_event_name=event, tool_use_id=f"toolu_{i}"))
                else:
                    payload = json.dumps(dict(tool, hook_event_name=event))
                t0 = time.perf_counter()
                r = subprocess.run([coord, "hook", "claude"], input=payload, env=env, text=True, capture_output=True)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.returncode == 0, r.stderr
                if event == "PermissionRequest":
                    said = json.loads(r.stdout)
                    assert said["hookSpecificOutput"]["decision"]["behavior"] == "allow", r.stdout
            times.sort()
            pct = lambda p: times[min(len(times) - 1, int(len(times) * p))]
            what = ("PermissionRequest Write under tmp/, allowed by a policy rule" if event == "PermissionRequest"
                    else f"{event} Write of an unlocked path")
            print(f"coord hook claude, {what}, {nlocks:,} other locks held, {runs} runs: "
                  f"p50 {pct(0.5):.1f} ms, p90 {pct(0.9):.1f} ms, p99 {pct(0.99):.1f} ms, max {times[-1]:.1f} ms")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


if __name__ == "__main__":
    main()
