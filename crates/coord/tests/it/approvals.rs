//! The approval queue without an agent's terminal (PROTOCOL §14): the hook
//! driven with the payloads the agents send. A retried hook is one
//! approval; a daemon that is not there leaves the terminal to decide; a
//! session that ends withdraws what it asked; a hook killed while it
//! waits withdraws it too (unless a retried one still waits), and an
//! observer's wait that hangs up does not; a session waiting for a
//! human past `--notify-after` is one `session.notify`, which a sentinel
//! carries to an ntfy-style HTTP endpoint, once per request and never for
//! a turn that merely ended.

use crate::support::{coord_cmd, wait_until, Daemon, Reaped};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

/// `coord hook claude --approval-wait WAIT` fed `payload`, running.
pub(crate) fn hook(socket: &Path, payload: serde_json::Value, wait: &str) -> Child {
    let mut child = coord_cmd()
        .args([
            "--socket",
            socket.to_str().expect("utf8"),
            "hook",
            "claude",
            "--approval-wait",
            wait,
        ])
        .env_remove("COORD_SESSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coord hook");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(payload.to_string().as_bytes())
        .expect("write");
    child
}

fn start(d: &Daemon, sid: &str) {
    let out = hook(
        &d.socket,
        serde_json::json!({"hook_event_name": "SessionStart", "session_id": sid, "cwd": "/tmp"}),
        "0s",
    )
    .wait_with_output()
    .expect("hook");
    assert!(out.status.success());
}

fn ask(sid: &str, command: &str) -> serde_json::Value {
    serde_json::json!({
        "hook_event_name": "PermissionRequest", "session_id": sid, "cwd": "/tmp",
        "tool_name": "Bash", "tool_input": {"command": command}, "tool_use_id": format!("toolu-{command}"),
        "a_field_from_a_newer_agent": {"anything": true}
    })
}

fn pending(d: &Daemon) -> Vec<serde_json::Value> {
    d.http("GET", "/v1/approvals", &[], None).json()["approvals"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn duplicates_are_one_a_missing_daemon_leaves_the_terminal_and_an_end_withdraws() {
    let d = Daemon::start(&[]);
    start(&d, "dup");
    // The hook retried (the same call twice): one approval, both wait on it.
    let first = hook(&d.socket, ask("dup", "cargo test"), "60s");
    let second = hook(&d.socket, ask("dup", "cargo test"), "60s");
    wait_until("the approval", Duration::from_secs(20), || {
        pending(&d).len() == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pending(&d).len(), 1, "a retried hook is the same approval");
    let id = pending(&d)[0]["approval_id"]
        .as_str()
        .expect("id")
        .to_string();
    d.ok(&["approvals", "allow", &id]);
    for h in [first, second] {
        let out = h.wait_with_output().expect("hook");
        let said: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(said["hookSpecificOutput"]["decision"]["behavior"], "allow");
    }
    let requests = d
        .all_events()
        .iter()
        .filter(|e| e["tx_kind"] == "approval.request")
        .count();
    assert_eq!(requests, 1);

    // The session ends while it asks: withdrawn; the hook leaves the
    // decision to the terminal (no output).
    let waiting = hook(&d.socket, ask("dup", "cargo publish"), "60s");
    wait_until("the second approval", Duration::from_secs(20), || {
        pending(&d).len() == 1
    });
    let end = hook(
        &d.socket,
        serde_json::json!({"hook_event_name": "SessionEnd", "session_id": "dup", "cwd": "/tmp"}),
        "0s",
    );
    assert!(end.wait_with_output().expect("hook").status.success());
    let out = waiting.wait_with_output().expect("hook");
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = d.ok(&["approvals", "log"]);
    assert!(
        log.contains("withdrawn") && log.contains("cargo publish"),
        "{log}"
    );

    // No daemon at all: exit 0, no decision, a word on stderr, at once.
    let gone = d.dir.path().join("nobody.sock");
    let started = std::time::Instant::now();
    let out = hook(&gone, ask("x", "ls"), "60s")
        .wait_with_output()
        .expect("hook");
    assert!(out.status.success() && out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("terminal decides"),
        "{out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// An ntfy-style receiver: each POST's `Title` header and body, one line.
const RECEIVER: &str = r#"
import http.server, sys

class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with open(sys.argv[2], "ab") as f:
            f.write((self.headers.get("Title") or "").encode() + b" " + body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_port))
s.serve_forever()
"#;

#[test]
fn a_long_wait_is_one_notice_carried_to_an_ntfy_style_endpoint() {
    let d = Daemon::start(&["--notify-after", "1s", "--idle-after", "1s"]);
    // An ntfy-style receiver: each POST's Title header and body, one line.
    let got = d.dir.path().join("notices.txt");
    let port_file = d.dir.path().join("port");
    let receiver = Reaped(
        std::process::Command::new("python3")
            .args(["-c", RECEIVER])
            .arg(&port_file)
            .arg(&got)
            .spawn()
            .expect("python3"),
    );
    let mut port = String::new();
    wait_until("the receiver", Duration::from_secs(20), || {
        port = std::fs::read_to_string(&port_file).unwrap_or_default();
        !port.is_empty()
    });
    // What a user points at ntfy: POST the observation with a title.
    let send = format!(
        "exec:python3 -c \"import sys,urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:{port}/coord', data=sys.stdin.buffer.read(), headers={{'Title': 'coord'}}))\""
    );
    let sentinel = Reaped(
        coord_cmd()
            .args(["sentinel", "--kind", "session.notify", "--sink", &send])
            .env("COORD_SOCKET", &d.socket)
            .env("XDG_STATE_HOME", d.dir.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("sentinel"),
    );

    start(&d, "asks");
    start(&d, "works");
    // A turn that ends is not a wait for a human.
    let stop = hook(
        &d.socket,
        serde_json::json!({"hook_event_name": "Stop", "session_id": "works", "cwd": "/tmp"}),
        "0s",
    );
    assert!(stop.wait_with_output().expect("hook").status.success());
    let waiting = hook(&d.socket, ask("asks", "cargo publish"), "6s");
    let lines = || {
        std::fs::read_to_string(&got)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_until("the notice", Duration::from_secs(20), || {
        !lines().is_empty()
    });
    let out = waiting.wait_with_output().expect("hook");
    assert!(out.stdout.is_empty(), "it expired: the terminal decides");
    std::thread::sleep(Duration::from_millis(2_500));
    let all = lines();
    assert_eq!(
        all.len(),
        1,
        "one notice for one request, none for the idle turn: {all:?}"
    );
    assert!(
        all[0].starts_with("coord ")
            && all[0].contains("cargo publish")
            && all[0].contains("claude-asks"),
        "{all:?}"
    );
    let notices: Vec<_> = d
        .all_events()
        .into_iter()
        .filter(|e| e["tx_kind"] == "session.notify")
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0]["payload"]["approval_id"].is_string(),
        "{}",
        notices[0]
    );
    drop(sentinel);
    drop(receiver);
}

#[test]
fn a_hook_the_agent_kills_withdraws_its_request_when_nobody_else_waits() {
    let mut d = Daemon::start(&[]);
    start(&d, "killed");
    // A retried hook waits beside the first: killing one leaves the
    // request to the other.
    let mut first = hook(&d.socket, ask("killed", "make deploy"), "60s");
    let mut second = hook(&d.socket, ask("killed", "make deploy"), "60s");
    wait_until("a pending approval", Duration::from_secs(20), || {
        pending(&d).len() == 1
    });
    let id = pending(&d)[0]["approval_id"]
        .as_str()
        .expect("id")
        .to_string();
    let state = || {
        d.http("GET", "/v1/sessions/claude-killed", &[], None)
            .json()["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    wait_until("the session waits", Duration::from_secs(20), || {
        state() == "needs_input"
    });
    // Both hooks are in their wait before one is killed.
    std::thread::sleep(Duration::from_millis(500));
    first.kill().expect("kill -9");
    first.wait().expect("reaped");
    // What the daemon does with a closed wait it does at once; a second
    // is ample for the one left not to be withdrawn.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pending(&d).len(), 1, "the other hook still waits on it");

    second.kill().expect("kill -9");
    second.wait().expect("reaped");
    wait_until("the request withdrawn", Duration::from_secs(20), || {
        pending(&d).is_empty()
    });
    let a = d
        .http("GET", &format!("/v1/approvals/{id}"), &[], None)
        .json();
    assert_eq!(a["decision"]["decision"], "withdrawn", "{a}");
    assert_eq!(
        a["decision"]["reason"], "the agent ended its hook while it waited",
        "{a}"
    );
    assert_eq!(a["decision"]["by"], "claude-killed", "{a}");
    wait_until(
        "the session no longer waits",
        Duration::from_secs(20),
        || state() == "idle",
    );
    let s = d
        .http("GET", "/v1/sessions/claude-killed", &[], None)
        .json();
    assert!(
        s["state_reason"].as_str().is_some_and(|r| r.contains(&id)),
        "{s}"
    );

    // Someone else's wait (no session_id) that goes away withdraws nothing.
    let third = hook(&d.socket, ask("killed", "make release"), "60s");
    wait_until("another pending approval", Duration::from_secs(20), || {
        pending(&d).len() == 1
    });
    let other = pending(&d)[0]["approval_id"]
        .as_str()
        .expect("id")
        .to_string();
    {
        // An observer opens a long wait and hangs up in the middle of it.
        let mut c = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
        write!(
            c,
            "GET /v1/approvals/{other}/wait?wait_ms=30000 HTTP/1.1\r\nHost: coord\r\n\r\n"
        )
        .expect("request");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pending(&d).len(), 1, "an observer's wait withdraws nothing");

    // A daemon that stops cuts the hook's wait too; that is not the agent
    // ending its hook: the terminal decides and nothing is withdrawn.
    assert!(d.terminate().success());
    let out = third.wait_with_output().expect("hook");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "the terminal decides: {out:?}");
    d.restart();
    let a = d
        .http("GET", &format!("/v1/approvals/{other}"), &[], None)
        .json();
    assert!(a["decision"].is_null(), "still pending: {a}");
}

#[test]
fn bad_requests_get_precise_errors_and_append_nothing() {
    use crate::support::post;
    let d = Daemon::start(&[]);
    let a = d.register("a");
    let b = d.register("b");
    let ask = |token: &str, body: serde_json::Value| post(&d, "/v1/approvals", Some(token), &body);
    let base = serde_json::json!({"session_id": "a", "agent": "claude", "tool": "Bash", "summary": "Bash ls"});
    let head = d.head();
    // Another session's token, an unknown field, an input over 256 KiB.
    let r = ask(&b, base.clone());
    assert_eq!(r.status, 403, "{}", r.json());
    let mut odd = base.clone();
    odd["colour"] = "red".into();
    let r = ask(&a, odd);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("unknown_field"))
    );
    let mut big = base.clone();
    big["input"] = serde_json::json!({"content": "x".repeat(300 << 10)});
    let r = ask(&a, big);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (413, Some("message_too_large"))
    );
    let mut bad_id = base.clone();
    bad_id["approval_id"] = "no spaces please".into();
    let r = ask(&a, bad_id);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("invalid_id"))
    );
    assert_eq!(d.head(), head, "refused requests append nothing");

    // A real one; then bad decisions.
    let r = ask(&a, base.clone());
    assert_eq!(r.status, 201, "{}", r.json());
    let id = r.json()["approval_id"].as_str().expect("id").to_string();
    let again = ask(&a, base);
    assert_eq!(again.status, 200, "a duplicate is the same approval");
    assert_eq!(again.json()["approval_id"], id.as_str());
    let head = d.head();
    let decide = format!("/v1/approvals/{id}/decide");
    let withdraw = format!("/v1/approvals/{id}/withdraw");
    let refusals: [(&str, Option<&str>, serde_json::Value, u16, &str); 4] = [
        (
            &decide,
            None,
            serde_json::json!({"decision": "allow"}),
            403,
            "admin_required",
        ),
        (
            &decide,
            Some(&b),
            serde_json::json!({"decision": "allow", "session_id": "b"}),
            409,
            "not_child",
        ),
        (
            &withdraw,
            Some(&b),
            serde_json::json!({"session_id": "b", "decision": "withdrawn"}),
            403,
            "not_owner",
        ),
        (
            "/v1/approvals/ap-0000000000000000/withdraw",
            Some(&a),
            serde_json::json!({"session_id": "a", "decision": "expired"}),
            404,
            "approval_not_found",
        ),
    ];
    for (path, token, body, status, code) in refusals {
        let r = post(&d, path, token, &body);
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str()),
            (status, Some(code)),
            "POST {path} {body}"
        );
    }
    // Only the requester's own wait may withdraw on a hangup.
    let bearer = format!("Bearer {b}");
    let r = d.http(
        "GET",
        &format!("/v1/approvals/{id}/wait?wait_ms=10&session_id=b"),
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (403, Some("not_owner"))
    );
    let out = d.coord(&["approvals", "allow", &id, "--reason", "x", "--by", ""]);
    assert!(out.status.success());
    let out = d.coord(&["approvals", "deny", &id]);
    assert_eq!(out.status.code(), Some(4), "decided already is a conflict");
    assert!(String::from_utf8_lossy(&out.stderr).contains("approval_decided"));
    let r = d.http(
        "GET",
        &format!("/v1/approvals/{id}/wait?wait_ms=700000"),
        &[],
        None,
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );
    assert_eq!(d.head(), head + 1, "one decision appended, nothing else");

    // The policy checker names a file that does not parse; a good one
    // says which rule decides.
    let rules = d.dir.path().join("rules.toml");
    let policy = rules.to_str().expect("utf8");
    let test = |rest: &[&str]| {
        let mut args = vec!["approvals", "test"];
        args.extend_from_slice(rest);
        args.extend_from_slice(&["--policy", policy]);
        d.coord(&args)
    };
    std::fs::write(&rules, "[[rule]]\nname = \"x\"\ndecision = \"maybe\"\n").expect("rules");
    let out = test(&["--tool", "Write"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not parse"),
        "{out:?}"
    );
    std::fs::write(&rules, "[[rule]]\nname = \"no pushes\"\ndecision = \"deny\"\ntool = \"Bash\"\ncommand = \"git push\"\n").expect("rules");
    for (command, said) in [
        ("git push --force", "deny: rule \"no pushes\""),
        ("git pull", "no rule"),
    ] {
        let out = test(&["--tool", "Bash", "--command", command]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(said), "{command}: {text}");
    }
}
