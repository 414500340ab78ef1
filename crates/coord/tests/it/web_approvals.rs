//! Approvals on the web dashboard in a real headless Chromium (PROTOCOL
//! §13, §14): an approver login's Allow button decides and the waiting
//! hook hands the decision to the agent; a viewer login sees the queue
//! and cannot decide; a forged request from another origin on the same
//! site (a form, a no-cors fetch, both carrying the approver's cookie)
//! decides nothing; a request with the cookie and no or a wrong CSRF
//! secret is refused.

use super::web::binary;
use crate::support::{free_port, wait_until, Daemon};
use fantoccini::Locator;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One HTTP/1.1 request with a JSON body over TCP.
fn raw(addr: &str, head: &str, body: &str) -> (u16, String) {
    super::web::raw(
        addr,
        &format!(
            "{head}\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn an_approver_decides_in_the_browser_and_nobody_else_does() {
    let chromedriver = binary("COORD_CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = binary("COORD_CHROMIUM", "/usr/bin/chromium");
    let d = Daemon::start(&["--http", "127.0.0.1:0"]);
    let addr = d.http("GET", "/v1/status", &[], None).json()["http"]
        .as_str()
        .expect("http")
        .to_string();

    // An agent's hooks: a session, then a permission request that waits.
    let hook = |payload: serde_json::Value| super::approvals::hook(&d.socket, payload, "120s");
    let started = hook(
        serde_json::json!({"hook_event_name": "SessionStart", "session_id": "w-1", "cwd": "/tmp"}),
    );
    assert!(started.wait_with_output().expect("hook").status.success());
    let waiting = hook(serde_json::json!({
        "hook_event_name": "PermissionRequest", "session_id": "w-1", "cwd": "/tmp",
        "tool_name": "Bash", "tool_input": {"command": "cargo publish"}
    }));
    let mut id = String::new();
    wait_until("a pending approval", Duration::from_secs(20), || {
        let list = d.http("GET", "/v1/approvals", &[], None).json();
        id = list["approvals"][0]["approval_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        !id.is_empty()
    });
    let pending = || {
        d.http("GET", "/v1/approvals", &[], None).json()["approvals"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    };

    // Refused decisions, as the daemon counted them (so the forged
    // requests below are seen to arrive, and to be refused).
    let refused = || -> u64 {
        let text =
            String::from_utf8_lossy(&d.http("GET", "/v1/metrics", &[], None).body).into_owned();
        text.lines()
            .filter(|l| l.starts_with("coord_web_refused_writes_total "))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let viewer_url = d.ok(&["ui"]).trim().to_string();
    let approver_url = d
        .ok(&["ui", "--approver", "--name", "alice"])
        .trim()
        .to_string();

    // The attacker's page: another origin on the same site (another port
    // of 127.0.0.1), so a SameSite cookie rides along.
    let evil = tempfile::tempdir().expect("tempdir");
    let decide = format!("http://{addr}/v1/approvals/{id}/decide");
    std::fs::write(
        evil.path().join("index.html"),
        format!(
            r#"<!doctype html><form id="f" method="POST" action="{decide}" enctype="text/plain"><input name='{{"decision":"allow","by":"mallory","x":"' value='"}}'></form>
<script>fetch("{decide}", {{method: "POST", mode: "no-cors", credentials: "include", headers: {{"content-type": "text/plain"}}, body: '{{"decision":"allow"}}'}}).finally(() => document.getElementById("f").submit());</script>"#
        ),
    )
    .expect("evil page");
    let evil_port = free_port();
    let mut evil_server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &evil_port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(evil.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    wait_until("the attacker's server", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", evil_port)).is_ok()
    });

    let (driver, port) = super::web::chromedriver(&chromedriver);
    let row = format!("tr[data-approval=\"{id}\"]");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = super::web::browser(&chromium, port, "1280,900").await;
        let find = |css: String| {
            let c = c.clone();
            async move {
                for _ in 0..200 {
                    if let Ok(e) = c.find(Locator::Css(&css)).await {
                        return Some(e);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None
            }
        };

        // A viewer sees the request and has no buttons; its cookie and
        // any CSRF guess decide nothing.
        c.goto(&viewer_url).await.expect("viewer login");
        // The page re-renders its rows every second: read a row afresh.
        let mut text = String::new();
        for _ in 0..100 {
            if let Some(r) = find(row.clone()).await {
                text = r.text().await.unwrap_or_default();
                if text.contains("cargo publish") {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(text.contains("cargo publish"), "the row: {text:?}");
        assert!(find(format!("{row} td.dim")).await.is_some(), "view only");
        assert!(c.find(Locator::Css(&format!("{row} button"))).await.is_err(), "no buttons for a viewer");
        let status: serde_json::Value = c
            .execute_async(
                &format!("const done = arguments[0]; fetch('/v1/approvals/{id}/decide', {{method: 'POST', headers: {{'content-type': 'application/json', 'coord-csrf': 'guess'}}, body: '{{\"decision\":\"allow\"}}'}}).then(r => done(r.status));"),
                vec![],
            )
            .await
            .expect("fetch");
        assert_eq!(status, serde_json::json!(403), "a viewer cannot decide");
        assert!(pending());

        // The approver logs in (its cookie replaces the viewer's) and then
        // visits the attacker's page, which tries twice with that cookie.
        c.goto(&approver_url).await.expect("approver login");
        assert!(find(format!("{row} button.allow")).await.is_some(), "an approver gets buttons");
        let before = refused();
        c.goto(&format!("http://127.0.0.1:{evil_port}/")).await.expect("the attacker's page");
        for _ in 0..100 {
            if refused() >= before + 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(refused(), before + 2, "both forged requests arrived and were refused");
        assert!(pending(), "a forged cross-site request decided nothing");

        // The approver's own page decides: Allow.
        c.goto(&format!("http://{addr}/")).await.expect("the dashboard");
        let mut clicked = false;
        for _ in 0..50 {
            if let Some(allow) = find(format!("{row} button.allow")).await {
                if allow.click().await.is_ok() {
                    clicked = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(clicked, "the Allow button");
        c.close().await.expect("close");
    });
    drop(driver);
    let _ = evil_server.kill();
    let _ = evil_server.wait();

    let out = waiting.wait_with_output().expect("hook");
    let said: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the hook's answer is JSON");
    assert_eq!(
        said["hookSpecificOutput"]["decision"]["behavior"], "allow",
        "{said}"
    );
    let a = d
        .http("GET", &format!("/v1/approvals/{id}"), &[], None)
        .json();
    assert_eq!(a["decision"]["by"], "alice", "{a}");
    let via = a["decision"]["via"].as_str().unwrap_or("");
    assert!(
        via.starts_with("web v-") && via.contains(" from 127.0.0.1:"),
        "{via}"
    );
    let decides: Vec<_> = d
        .all_events()
        .into_iter()
        .filter(|e| e["tx_kind"] == "approval.decide")
        .collect();
    assert_eq!(decides.len(), 1, "one decision: {decides:?}");

    // Over raw HTTP with the approver's cookie: no or a wrong CSRF secret
    // is refused, as is the viewer secret as a bearer token.
    let login = d.ok(&["--json", "ui", "--approver"]);
    let login: serde_json::Value = serde_json::from_str(&login).expect("json");
    let path = login["url"]
        .as_str()
        .expect("url")
        .trim_start_matches(&format!("http://{addr}"))
        .to_string();
    let (code, answer) = raw(&addr, &format!("GET {path} HTTP/1.1"), "");
    assert_eq!(code, 303, "{answer}");
    let cookie = answer
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: coord_view=")
                .or_else(|| l.strip_prefix("Set-Cookie: coord_view="))
        })
        .and_then(|v| v.split(';').next())
        .expect("a cookie")
        .to_string();
    let waiting = hook(serde_json::json!({
        "hook_event_name": "PermissionRequest", "session_id": "w-1", "cwd": "/tmp",
        "tool_name": "Bash", "tool_input": {"command": "rm -rf target"}
    }));
    let mut second = String::new();
    wait_until("a second pending approval", Duration::from_secs(20), || {
        let list = d.http("GET", "/v1/approvals", &[], None).json();
        second = list["approvals"][0]["approval_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        !second.is_empty()
    });
    let head =
        format!("POST /v1/approvals/{second}/decide HTTP/1.1\r\nCookie: coord_view={cookie}");
    let (code, body) = raw(&addr, &head, r#"{"decision":"deny","reason":"no"}"#);
    assert_eq!(code, 403, "no CSRF secret: {body}");
    assert!(body.contains("admin_required"), "{body}");
    let (code, body) = raw(
        &addr,
        &format!("{head}\r\nCoord-Csrf: wrong"),
        r#"{"decision":"deny","reason":"no"}"#,
    );
    assert_eq!(code, 403, "a wrong CSRF secret: {body}");
    let (code, me) = raw(
        &addr,
        &format!("GET /v1/ui/me HTTP/1.1\r\nCookie: coord_view={cookie}"),
        "",
    );
    assert_eq!(code, 200, "{me}");
    let csrf = me
        .split("\"csrf\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the login's CSRF secret")
        .to_string();
    let (code, body) = raw(
        &addr,
        &format!("{head}\r\nCoord-Csrf: {csrf}"),
        r#"{"decision":"deny","reason":"not on Fridays"}"#,
    );
    assert_eq!(code, 200, "the cookie and its CSRF secret: {body}");
    let out = waiting.wait_with_output().expect("hook");
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        said["hookSpecificOutput"]["decision"]["message"], "not on Fridays",
        "{said}"
    );
}
