#!/usr/bin/env python3
"""Times the edges people and agents touch (docs/BENCHMARKS.md, "Tools"):

* auto-start: the first `coord status` on a fresh socket and store, which
  starts the daemon, until its answer;
* a warm `coord status` (process start, connect, one request);
* `coord guard check` on 100 staged paths against 100 held locks;
* an MCP tool call round trip through `coord mcp` (the Python MCP SDK,
  `lock_acquire` then `lock_release`, one call each).

Asserts nothing; prints medians and p90s. Needs the Python `mcp` package
(scripts/test installs it in its MCP virtualenv).

Usage: bench_tools.py PATH-TO-COORD [ROUNDS]
"""

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

COORD = os.path.abspath(sys.argv[1])
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 20


def env_for(socket, data, autostart=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORD_")}
    env.update(COORD_SOCKET=socket, XDG_DATA_HOME=data)
    if not autostart:
        env["COORD_NO_AUTOSTART"] = "1"
    return env


def report(name, samples):
    samples = sorted(samples)
    p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
    print(f"{name}: median {statistics.median(samples) * 1000:.1f} ms, "
          f"p90 {p90 * 1000:.1f} ms (n = {len(samples)})")


def run(args, env, **kw):
    subprocess.run([COORD, *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def autostart():
    cold, warm = [], []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory() as d:
            socket, data = os.path.join(d, "run", "coord.sock"), os.path.join(d, "data")
            env = env_for(socket, data)
            t = time.perf_counter()
            run(["status"], env)
            cold.append(time.perf_counter() - t)
            for _ in range(10):
                t = time.perf_counter()
                run(["status"], env)
                warm.append(time.perf_counter() - t)
            run(["daemon", "stop"], env)
    report("auto-start, first `coord status` on a fresh socket", cold)
    report("warm `coord status`", warm)


def guard():
    with tempfile.TemporaryDirectory() as d:
        socket, data = os.path.join(d, "run", "coord.sock"), os.path.join(d, "data")
        env = env_for(socket, data)
        run(["status"], env)
        repo = os.path.join(d, "repo")
        git = ["git", "-c", "user.name=b", "-c", "user.email=b@example.com", "-C", repo]
        subprocess.run(["git", "init", "-q", repo], check=True)
        for i in range(100):
            with open(os.path.join(repo, f"f{i:03}.txt"), "w") as f:
                f.write("x\n")
        subprocess.run([*git, "add", "."], check=True)
        for i in range(100):
            out = subprocess.run([COORD, "--json", "session", "register", "--id", f"s{i}"],
                                 env=env, check=True, capture_output=True, text=True).stdout
            token = __import__("json").loads(out)["token"]
            run(["lock", "acquire", f"dir{i}/**", "--session", f"s{i}", "--token", token], env)
        samples = []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            run(["guard", "check"], env, cwd=repo)
            samples.append(time.perf_counter() - t)
        run(["daemon", "stop"], env)
    report("`coord guard check`, 100 staged paths, 100 locks", samples)


async def mcp_calls():
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    with tempfile.TemporaryDirectory() as d:
        socket, data = os.path.join(d, "run", "coord.sock"), os.path.join(d, "data")
        env = env_for(socket, data)
        run(["status"], env)
        params = StdioServerParameters(command=COORD, args=["mcp", "--id", "bench"], env=env)
        samples = []
        async with stdio_client(params) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                for _ in range(ROUNDS * 10):
                    t = time.perf_counter()
                    await s.call_tool("lock_acquire", {"resource": "src/**"})
                    samples.append(time.perf_counter() - t)
                    await s.call_tool("lock_release", {"resource": "src/**"})
        run(["daemon", "stop"], env)
    report("MCP `lock_acquire` round trip through `coord mcp`", samples)


if __name__ == "__main__":
    autostart()
    guard()
    asyncio.run(mcp_calls())
