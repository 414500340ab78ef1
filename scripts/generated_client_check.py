#!/usr/bin/env python3
"""A client generated from docs/openapi.json by openapi-python-client,
driven against a real daemon over its Unix socket.

Usage: generated_client_check.py COORD_BINARY

It generates the client into a temporary directory, starts a daemon on a
temporary socket, and calls it through the generated functions and models
only: status, register, acquire (with the session's token), report to a
parent, send, inbox, the events stream and the metrics. Every call must
parse into the declared model (a 2xx the contract does not describe, or a
body that does not fit its schema, fails). The batch endpoint takes
NDJSON, which the generator does not support; it is sent through the
generated client's own httpx client.
"""

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    coord = os.path.abspath(sys.argv[1])
    gen = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    work = Path(tempfile.mkdtemp(prefix="coord-genclient-"))
    os.chmod(work, 0o700)
    out = subprocess.run(
        [gen or "openapi-python-client", "generate", "--path", str(ROOT / "docs/openapi.json"),
         "--meta", "none", "--output-path", str(work / "coord_client")],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # Only the NDJSON batch endpoint may be left out.
    skipped = [l for l in out.stdout.splitlines() if "will not be generated" in l]
    assert all("/v1/events/batch" in l for l in skipped), skipped
    sys.path.insert(0, str(work))

    import httpx
    client_mod = importlib.import_module("coord_client")
    from coord_client.api.status import status, metrics
    from coord_client.api.sessions import register
    from coord_client.api.locks import acquire
    from coord_client.api.pods import report
    from coord_client.api.inbox import send, inbox_list
    from coord_client.api.events import events
    from coord_client.models import (
        AcquireRequest, RegisterRequest, ReportRequest, ReportRequestKind, SendRequest,
        StatusResponse, RegisterResponse, AcquireResponse, WriteResponse, SendResponse,
        InboxResponse,
    )

    sock = work / "coord.sock"
    daemon = subprocess.Popen(
        [coord, "daemon", "--socket", str(sock), "--store", str(work / "log.db")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)

        def client(token=None):
            transport = httpx.HTTPTransport(uds=str(sock))
            args = dict(
                base_url="http://coord",
                raise_on_unexpected_status=True,
                httpx_args={"transport": transport},
            )
            if token:
                return client_mod.AuthenticatedClient(token=token, **args)
            return client_mod.Client(**args)

        anon = client()
        st = status.sync(client=anon)
        assert isinstance(st, StatusResponse), st
        assert st.protocol == 1, st

        lead = register.sync(client=anon, body=RegisterRequest(session_id="lead"))
        assert isinstance(lead, RegisterResponse), lead
        child = register.sync(
            client=anon, body=RegisterRequest(session_id="child", parent_session="lead")
        )
        assert isinstance(child, RegisterResponse), child
        as_child = client(child.token)

        got = acquire.sync(client=as_child, body=AcquireRequest(session_id="child", resource="src/**"))
        assert isinstance(got, AcquireResponse), got
        assert got.fencing_token >= 1, got

        r = report.sync("child", client=as_child, body=ReportRequest(kind=ReportRequestKind.TURN_ENDED))
        assert isinstance(r, WriteResponse), r

        sent = send.sync("lead", client=as_child, body=SendRequest(from_session="child", body="done"))
        assert isinstance(sent, SendResponse), sent
        box = inbox_list.sync("lead", client=client(lead.token))
        assert isinstance(box, InboxResponse), box
        # The report reaches the parent's inbox too; a listing carries no
        # bodies (inbox_read fetches one).
        assert [m.kind for m in box.messages] == ["report.turn_ended", "message"], box
        assert box.messages[1].size == len("done"), box

        # A batch (NDJSON) through the generated client's own httpx client.
        lines = "".join(json.dumps({"tx_kind": "x.gen", "payload": {"i": i}}) + "\n" for i in range(3))
        resp = anon.get_httpx_client().post(
            "/v1/events/batch", content=lines, headers={"content-type": "application/x-ndjson"}
        )
        assert resp.status_code == 201, resp.text

        text = events.sync(client=anon, since="start", follow=False)
        assert isinstance(text, str), text
        kinds = [json.loads(l)["tx_kind"] for l in text.splitlines() if l]
        for k in ("session.register", "lock.acquire", "session.report", "inbox.deliver", "x.gen"):
            assert k in kinds, (k, kinds)

        m = metrics.sync(client=anon)
        assert isinstance(m, str) and "coord_head_seq" in m, m
        print(f"generated client: {len(kinds)} events, status, register, acquire, report, send, inbox, batch, events and metrics checked")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


if __name__ == "__main__":
    main()
