#!/usr/bin/env python3
"""Drives `coord mcp` with a real MCP client that is not ours (the Python
`mcp` SDK) over stdio, against a real daemon on a temporary socket.

Checks: initialize and the tool list; a lock taken through MCP shows in
`coord lock list`; a second MCP server contending for it gets a tool error
naming the holder; a client subscribed to coord://inbox is told at once when
mail arrives, and reads it; when the client goes away the session ends; a
coordinating agent lists and decides its own children's permission prompts
(approvals) and no one else's.

Usage: scripts/mcp_check.py PATH-TO-COORD
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
import mcp.types as types

COORD = os.path.abspath(sys.argv[1])
WANT_TOOLS = {
    "status", "session_list", "lock_acquire", "lock_release", "lock_list",
    "send", "inbox", "inbox_ack", "dispatch_list", "dispatch_ack",
    "dispatch_complete", "dispatch_wait", "events", "report",
    "approvals", "approval_decide",
}


def coord(socket, *args):
    out = subprocess.run(
        [COORD, "--json", "--socket", socket, "--no-autostart", *args],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def text_of(result):
    return " ".join(c.text for c in result.content if getattr(c, "text", None))


def server(socket, sid, *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORD_")}
    env.update(COORD_SOCKET=socket, COORD_NO_AUTOSTART="1")
    return StdioServerParameters(
        command=COORD, args=["mcp", "--id", sid, "--ttl", "5s", *extra], env=env
    )


def live_sessions(socket):
    return {s["session_id"] for s in coord(socket, "session", "list")["sessions"]} - {"lead"}


async def main(socket):
    updated = asyncio.Queue()

    async def on_message(message):
        # SDK 2.x hands the notification itself; 1.x wrapped it.
        message = getattr(message, "root", message)
        if isinstance(message, types.ResourceUpdatedNotification):
            await updated.put(str(message.params.uri))

    coord(socket, "session", "register", "--id", "lead", "--ttl", "5m")
    async with stdio_client(server(socket, "agent-a", "--parent", "lead")) as (ra, wa):
        async with ClientSession(ra, wa, message_handler=on_message) as a:
            await a.initialize()
            tools = {t.name for t in (await a.list_tools()).tools}
            missing = WANT_TOOLS - tools
            assert not missing, f"tools missing: {missing}"
            for t in (await a.list_tools()).tools:
                assert t.description and t.input_schema, t.name
                # What strict validators (ajv) and typed clients take: no
                # `null` in a type list, no non-standard `format`.
                for name, prop in t.input_schema.get("properties", {}).items():
                    assert "format" not in prop, (t.name, name, prop)
                    assert not isinstance(prop.get("type"), list), (t.name, name, prop)

            # Numbers as strings, as the official Inspector's CLI sends them.
            r = await a.call_tool("events", {"limit": "3", "since": "0"})
            assert not r.is_error, text_of(r)
            r = await a.call_tool("events", {"limit": "three"})
            assert r.is_error, text_of(r)

            resources = (await a.list_resources()).resources
            assert all(x.mime_type == "application/json" for x in resources), resources

            r = await a.call_tool("lock_acquire", {"resource": "src/**"})
            assert not r.is_error, text_of(r)
            assert "fencing token" in text_of(r), text_of(r)
            assert r.structured_content["resource"] == "src/**", r.structured_content
            locks = coord(socket, "lock", "list")["locks"]
            holders = [h["session_id"] for l in locks if l["resource"] == "src/**" for h in l["holders"]]
            assert holders == ["agent-a"], locks

            r = await a.call_tool("session_list", {})
            assert "agent-a (" in text_of(r) and "lead (" in text_of(r), text_of(r)

            await a.subscribe_resource("coord://inbox")

            async with stdio_client(server(socket, "agent-b")) as (rb, wb):
                async with ClientSession(rb, wb) as b:
                    await b.initialize()
                    r = await b.call_tool("lock_acquire", {"resource": "src/main.rs"})
                    assert r.is_error, text_of(r)
                    assert "agent-a" in text_of(r) and "lock_held" in text_of(r), text_of(r)

                    sent_at = time.monotonic()
                    r = await b.call_tool("send", {"to": "agent-a", "body": "please review"})
                    assert not r.is_error, text_of(r)
                    uri = await asyncio.wait_for(updated.get(), timeout=30)
                    assert uri == "coord://inbox", uri
                    print(f"mcp: resource-updated {time.monotonic() - sent_at:.3f} s after the send")

            r = await a.call_tool("report", {"kind": "turn_ended"})
            assert not r.is_error, text_of(r)
            reports = subprocess.run(
                [COORD, "--socket", socket, "events", "--since", "start", "--no-follow",
                 "--format", "json", "--kind", "session.report"],
                capture_output=True, text=True, check=True,
            ).stdout.splitlines()
            assert any('"turn_ended"' in l and '"agent-a"' in l for l in reports), reports

            r = await a.call_tool("inbox", {"ack": True})
            assert not r.is_error, text_of(r)
            assert "please review" in text_of(r), text_of(r)
            assert "agent-a" in live_sessions(socket)

    # The client is gone: its server ends the session.
    deadline = time.monotonic() + 30
    while "agent-a" in live_sessions(socket):
        assert time.monotonic() < deadline, "agent-a outlived its MCP client"
        time.sleep(0.05)
    assert not coord(socket, "lock", "list")["locks"], "its lock outlived it"
    assert "lead" in {s["session_id"] for s in coord(socket, "session", "list")["sessions"]}

    # Under `coord session run` the server adopts the wrapper's session.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORD_")}
    env.update(COORD_SOCKET=socket, COORD_NO_AUTOSTART="1")
    wrapped = StdioServerParameters(
        command=COORD, args=["session", "run", "--id", "wrapped", "--", COORD, "mcp"], env=env
    )
    async with stdio_client(wrapped) as (rw, ww):
        async with ClientSession(rw, ww) as w:
            await w.initialize()
            r = await w.call_tool("status", {})
            assert "You are session wrapped" in text_of(r), text_of(r)
            assert live_sessions(socket) == {"wrapped"}, live_sessions(socket)
    deadline = time.monotonic() + 30
    while "wrapped" in live_sessions(socket):
        assert time.monotonic() < deadline, "the wrapper's session outlived its MCP server"
        time.sleep(0.05)
    await coordinator(socket)
    print("mcp: initialize, tools, locks, contention, push, report, adoption, session end and approvals all checked")


def hook(socket, payload, parent=None):
    """Runs `coord hook claude` with one payload; returns the process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORD_")}
    env.update(COORD_SOCKET=socket)
    if parent:
        env["COORD_SESSION"] = parent
    p = subprocess.Popen([COORD, "hook", "claude", "--approval-wait", "60s"], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdin.write(json.dumps(payload))
    p.stdin.close()
    p.stdin = None
    return p


async def coordinator(socket):
    """A coordinator decides its child's permission prompt over MCP, and
    cannot decide a stranger's."""
    async with stdio_client(server(socket, "boss")) as (r, w):
        async with ClientSession(r, w) as boss:
            await boss.initialize()
            asks = []
            for sid, parent, cmd in [("kid", "boss", "cargo test"), ("stranger", None, "rm -rf /")]:
                start = {"hook_event_name": "SessionStart", "session_id": sid, "cwd": "/tmp"}
                assert hook(socket, start, parent).wait(timeout=30) == 0
                ask = {"hook_event_name": "PermissionRequest", "session_id": sid, "cwd": "/tmp",
                       "tool_name": "Bash", "tool_input": {"command": cmd}}
                asks.append(hook(socket, ask, parent))
            deadline = time.monotonic() + 30
            while len(coord(socket, "approvals", "list")["approvals"]) < 2:
                assert time.monotonic() < deadline, "the approvals never showed"
                time.sleep(0.05)
            pending = {a["session_id"]: a["approval_id"] for a in coord(socket, "approvals", "list")["approvals"]}
            r = await boss.call_tool("approvals", {})
            assert not r.is_error, text_of(r)
            mine = [a["session_id"] for a in r.structured_content["approvals"]]
            assert mine == ["claude-kid"], r.structured_content
            r = await boss.call_tool("approval_decide", {"approval_id": pending["claude-stranger"], "decision": "allow"})
            assert r.is_error and "not_child" in text_of(r), text_of(r)
            r = await boss.call_tool("approval_decide", {"approval_id": pending["claude-kid"], "decision": "allow"})
            assert not r.is_error, text_of(r)
            out, _ = asks[0].communicate(timeout=30)
            said = json.loads(out)
            assert said["hookSpecificOutput"]["decision"]["behavior"] == "allow", said
            decided = coord(socket, "approvals", "show", pending["claude-kid"])["decision"]
            assert decided["by"] == "session:boss" and decided["via"] == "mcp", decided
            # The stranger's prompt is still pending; its hook gives up when
            # the approval is withdrawn (its session ends).
            assert [a["session_id"] for a in coord(socket, "approvals", "list")["approvals"]] == ["claude-stranger"]
            end = {"hook_event_name": "SessionEnd", "session_id": "stranger", "cwd": "/tmp"}
            assert hook(socket, end).wait(timeout=30) == 0
            out, _ = asks[1].communicate(timeout=30)
            assert out.strip() == "", f"a withdrawn approval leaves the terminal to decide: {out!r}"
            print("mcp: a coordinator decided its child's permission prompt, and not a stranger's")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="coord-mcp.") as d:
        sock_dir = os.path.join(d, "s")
        os.mkdir(sock_dir, 0o700)
        socket = os.path.join(sock_dir, "coord.sock")
        daemon = subprocess.Popen(
            [COORD, "daemon", "--socket", socket, "--store", os.path.join(d, "coord.db")],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "daemon.log"), "w"),
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(socket):
                assert daemon.poll() is None, "the daemon exited"
                assert time.monotonic() < deadline, "the daemon did not start"
                time.sleep(0.02)
            asyncio.run(main(socket))
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
