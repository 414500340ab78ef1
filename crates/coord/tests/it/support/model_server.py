#!/usr/bin/env python3
"""A scripted model server on loopback for the real coding agents' tests:
it speaks the Anthropic Messages API (streamed server-sent events), which
Claude Code calls at ANTHROPIC_BASE_URL.

Usage: model_server.py SCRIPT.json PORT_FILE LOG.jsonl

SCRIPT.json: {"tool": {"name": "Write", "input": {...}} | null,
              "reply": "text of the final answer"}

A request that carries tools and whose last message is the user's prompt
is answered with the script's tool call (once per conversation); a request
whose last message holds a tool_result, or that carries no tools (the
agent's side queries), is answered with the reply text. Every request body
is appended to LOG.jsonl, so a test can read what the model was given.
The port it listens on is written to PORT_FILE.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCRIPT = json.load(open(sys.argv[1]))
PORT_FILE, LOG = sys.argv[2], sys.argv[3]
LOCK = threading.Lock()
COUNT = [0]


def sse(kind, data):
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def answer(block, stop):
    COUNT[0] += 1
    msg = {"id": f"msg_{COUNT[0]}", "type": "message", "role": "assistant", "model": "scripted",
           "content": [], "stop_reason": None, "stop_sequence": None,
           "usage": {"input_tokens": 10, "output_tokens": 1}}
    out = sse("message_start", {"type": "message_start", "message": msg})
    if block["type"] == "tool_use":
        start = {"type": "tool_use", "id": f"toolu_{COUNT[0]}", "name": block["name"], "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
    else:
        start = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block["text"]}
    out += sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start})
    out += sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    out += sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    out += sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": 1}})
    out += sse("message_stop", {"type": "message_stop"})
    return out


def last_is_tool_result(body):
    msgs = body.get("messages") or []
    if not msgs:
        return False
    content = msgs[-1].get("content")
    return isinstance(content, list) and any(
        isinstance(c, dict) and c.get("type") == "tool_result" for c in content)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        self.do_HEAD()

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        with LOCK:
            with open(LOG, "a") as f:
                f.write(json.dumps({"path": self.path, "body": body}) + "\n")
        if not self.path.startswith("/v1/messages") or "count_tokens" in self.path:
            data = json.dumps({"input_tokens": 10}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        tool = SCRIPT.get("tool")
        if body.get("tools") and tool and not last_is_tool_result(body):
            data = answer({"type": "tool_use", **tool}, "tool_use")
        else:
            data = answer({"type": "text", "text": SCRIPT.get("reply", "done")}, "end_turn")
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            text = SCRIPT.get("reply", "done")
            msg = json.dumps({"id": "msg_x", "type": "message", "role": "assistant", "model": "scripted",
                              "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                              "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
