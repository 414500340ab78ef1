#!/usr/bin/env python3
"""A scripted model server on loopback for the real coding agents' tests:
it speaks the Anthropic Messages API (streamed server-sent events), which
Claude Code calls at ANTHROPIC_BASE_URL; the OpenAI Responses API
(`POST /v1/responses`, streamed), which Codex calls at its model
provider's base_url; and the Gemini API (`:generateContent`,
`:streamGenerateContent?alt=sse`), which Gemini CLI calls at
GOOGLE_GEMINI_BASE_URL (its model router's request is answered with the
JSON score it asks for).

Usage: model_server.py SCRIPT.json PORT_FILE LOG.jsonl

SCRIPT.json: {"tool": {"name": "Write", "input": {...}} | null,
              "by_prompt": [["keyword", {"name": ..., "input": ...}], ...]
                  (Claude Code: the first whose keyword is in the prompt
                  decides the tool call; else "tool"; for Codex an entry
                  {"shell": ..., "shell_args": ...} decides its command),
              "shell": "command for Codex's exec_command" | null,
              "shell_args": {more arguments of that call} | null,
              "call": {"name": "write_file", "args": {...}} | null  (Gemini),
              "wait_for": "a file whose existence releases that call" | null,
              "reply": "text of the final answer"}

A request that carries tools and whose last message is the user's prompt
is answered with the script's tool call (Codex: an `exec_command` call
running "shell"); a request
whose last message holds a tool_result, or that carries no tools (the
agent's side queries), is answered with the reply text. Every request body
is appended to LOG.jsonl, so a test can read what the model was given.
The port it listens on is written to PORT_FILE.
"""

import json
import os
import sys
import time
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


def last_message(body):
    """The last message that is not the agent's own system note (Claude
    Code 2.1 appends its environment as a trailing `system` message)."""
    msgs = [m for m in body.get("messages") or [] if m.get("role") != "system"]
    return msgs[-1] if msgs else {}


def last_is_tool_result(body):
    content = last_message(body).get("content")
    return isinstance(content, list) and any(
        isinstance(c, dict) and c.get("type") == "tool_result" for c in content)


def last_text(body):
    """The text of the last message after its last tool result: a prompt
    and what the agent added. A prompt typed after a refused tool call
    shares its message with the refusal's tool result."""
    content = last_message(body).get("content")
    if isinstance(content, str):
        return content
    blocks = [c for c in content or [] if isinstance(c, dict)]
    results = [i for i, c in enumerate(blocks) if c.get("type") == "tool_result"]
    after = blocks[results[-1] + 1:] if results else blocks
    return " ".join(c.get("text", "") for c in after)


def responses(body):
    """One streamed Responses API answer: Codex's exec_command call running
    the script's shell command after a user message, else the reply."""
    COUNT[0] += 1
    n = COUNT[0]
    items = body.get("input") or []
    last = items[-1] if items else {}
    shell, args = SCRIPT.get("shell"), SCRIPT.get("shell_args") or {}
    said = " ".join(c.get("text", "") for c in last.get("content") or [] if isinstance(c, dict))
    for keyword, t in SCRIPT.get("by_prompt") or []:
        if keyword in said and "shell" in t:
            shell, args = t["shell"], t.get("shell_args") or {}
            break
    if shell and body.get("tools") and last.get("type") == "message" and last.get("role") == "user":
        # A test that must act while the agent waits for its model names a
        # file to wait for (at most 60 s).
        gate = SCRIPT.get("wait_for")
        deadline = time.monotonic() + 60
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)
        item = {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}",
                "name": "exec_command",
                "arguments": json.dumps({"cmd": shell, **args})}
    else:
        item = {"type": "message", "role": "assistant", "id": f"msg_{n}",
                "content": [{"type": "output_text", "text": SCRIPT.get("reply", "done"), "annotations": []}]}

    def event(kind, data):
        return f"event: {kind}\ndata: {json.dumps(dict(data, type=kind))}\n\n".encode()
    out = event("response.created", {"response": {"id": f"resp_{n}"}})
    out += event("response.output_item.done", {"output_index": 0, "item": item})
    out += event("response.completed", {"response": {"id": f"resp_{n}", "usage": {
        "input_tokens": 1, "output_tokens": 1, "total_tokens": 2,
        "input_tokens_details": None, "output_tokens_details": None}}})
    return out


def gemini(body):
    """One Gemini API answer: the router's score, the script's function
    call after the user's prompt, else the reply."""
    config = body.get("generationConfig") or {}
    contents = body.get("contents") or []
    last = contents[-1] if contents else {}
    user_text = last.get("role") == "user" and any("text" in p for p in last.get("parts") or [])
    call = SCRIPT.get("call")
    if "complexity_score" in json.dumps(config.get("responseJsonSchema") or {}):
        parts = [{"text": json.dumps({"complexity_reasoning": "scripted", "complexity_score": 10})}]
    elif call and body.get("tools") and user_text:
        gate = SCRIPT.get("wait_for")
        deadline = time.monotonic() + 60
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)
        parts = [{"functionCall": call}]
    else:
        parts = [{"text": SCRIPT.get("reply", "done")}]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2}}


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
        if ":generateContent" in self.path or ":streamGenerateContent" in self.path:
            answer_json = json.dumps(gemini(body))
            sse_mode = "alt=sse" in self.path
            data = (f"data: {answer_json}\r\n\r\n" if sse_mode else answer_json).encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream" if sse_mode else "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.path.startswith("/v1/responses"):
            data = responses(body)
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if not self.path.startswith("/v1/messages") or "count_tokens" in self.path:
            data = json.dumps({"input_tokens": 10}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        tool = SCRIPT.get("tool")
        prompt = last_text(body)
        prompted = False
        for keyword, t in SCRIPT.get("by_prompt") or []:
            if keyword in prompt:
                tool, prompted = t, True
                break
        if body.get("tools") and tool and (prompted or not last_is_tool_result(body)):
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
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
