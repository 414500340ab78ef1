"""Checks schemathesis runs against a real coord daemon (scripts/contract).

Beside schemathesis' own checks (no 5xx, documented status codes, content
types and schemas), two of coord's promises (PROTOCOL §3):

* every error answer is a JSON body {"error": {"code", "message"}} whose
  code is one PROTOCOL §3 documents;
* a refused request appends nothing to the log.

The run uses one worker, so between the status read before a request and
the one after it no other request of the run is served. The daemon may
append on its own in that window (lease expiry, lifecycle transitions of
sessions the run registered); those events have source "lifecycle", so
only events with source "api" count against a refused request.
"""

import json
import os
import urllib.request

import schemathesis

BASE = os.environ["COORD_CONTRACT_URL"]
with open(os.environ["COORD_OPENAPI"]) as f:
    _doc = json.load(f)
KNOWN_CODES = {
    code.strip()
    for r in _doc["components"]["responses"].values()
    for code in r["description"].removeprefix("Error:").split(",")
}

_head_before = {}


def _get(path):
    with urllib.request.urlopen(BASE + path, timeout=10) as r:
        return r.read()


def _head():
    return json.loads(_get("/v1/status"))["head_seq"]


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    _head_before[id(case)] = _head()


@schemathesis.check
def errors_are_documented_json(ctx, response, case):
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
        code = body["error"]["code"]
        message = body["error"]["message"]
    except (ValueError, KeyError, TypeError) as e:
        raise AssertionError(f"error answer {response.status_code} is not a JSON error body ({e}): {response.content[:200]!r}")
    if code not in KNOWN_CODES:
        raise AssertionError(f"undocumented error code {code!r}")
    if not message:
        raise AssertionError(f"error {code} has an empty message")
    return None


@schemathesis.check
def refused_requests_append_nothing(ctx, response, case):
    before = _head_before.pop(id(case), None)
    if before is None or response.status_code < 400:
        return None
    after = _head()
    if after == before:
        return None
    lines = _get(f"/v1/events?since={before}&follow=false").decode().splitlines()
    by_api = [json.loads(l) for l in lines if l.strip()]
    by_api = [e for e in by_api if e.get("source") == "api" and e.get("seq", 0) <= after]
    if by_api:
        raise AssertionError(
            f"a refused request ({response.status_code}) appended {len(by_api)} event(s): {by_api[0]}"
        )
    return None
