//! The web dashboard in a real headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini), against a real daemon serving `--http`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test installs
//! them); `COORD_CHROMEDRIVER` / `COORD_CHROMIUM` name other binaries.

use crate::support::{free_port, wait_until, Daemon};
use fantoccini::{ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) struct Driver(pub(crate) Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn binary(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        p.exists(),
        "{} not found: install Debian's chromium and chromium-driver (scripts/test does), or set {var}",
        p.display()
    );
    p
}

/// One request's bytes sent over a fresh TCP connection; the status and
/// the whole answer (the connection is closed by `Connection: close`).
pub(crate) fn raw(addr: &str, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// A chromedriver on a free port, and the port once it listens.
pub(crate) fn chromedriver(binary: &Path) -> (Driver, u16) {
    let port = free_port();
    let driver = Driver(
        Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    wait_until("chromedriver", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (driver, port)
}

/// A headless Chromium session through the chromedriver on `port`, its
/// window `size` (`1280,800`).
pub(crate) async fn browser(chromium: &Path, port: u16, size: &str) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", format!("--window-size={size}")]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

fn raw_get(addr: &str, path: &str, host: &str) -> (u16, String) {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn the_dashboard_is_live_guarded_and_shows_who_needs_input() {
    let chromedriver = binary("COORD_CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = binary("COORD_CHROMIUM", "/usr/bin/chromium");
    let d = Daemon::start(&["--http", "127.0.0.1:0", "--probe-interval", "100ms"]);
    let st = d.http("GET", "/v1/status", &[], None).json();
    let addr = st["http"]
        .as_str()
        .expect("status names the http address")
        .to_string();

    // Without a token the page and the API answer 401; a wrong Host 403.
    let (code, _) = raw_get(&addr, "/", &addr);
    assert_eq!(code, 401);
    let (code, body) = raw_get(&addr, "/v1/sessions", &addr);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("token_required"));
    let (code, body) = raw_get(&addr, "/v1/sessions", "rebound.example.com");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("host_not_allowed"));

    // A dashboard connection counts in /v1/status `connections` like a
    // socket's (the status request itself is one more).
    let held = std::net::TcpStream::connect(&addr).expect("connect to the dashboard");
    wait_until(
        "the dashboard connection is counted",
        Duration::from_secs(20),
        || {
            let st = d.http("GET", "/v1/status", &[], None).json();
            st["connections"].as_u64().is_some_and(|n| n >= 2)
        },
    );
    drop(held);

    let url = d.ok(&["ui"]).trim().to_string();
    assert!(
        url.starts_with(&format!("http://{addr}/login?token=")),
        "{url}"
    );

    let (driver, port) = self::chromedriver(&chromedriver);

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = browser(&chromium, port, "1280,800").await;
        c.goto(&url).await.expect("login");
        // The login link set the cookie and sent us to the page.
        assert_eq!(c.current_url().await.expect("url").path(), "/");
        let summary = c.find(Locator::Id("summary")).await.expect("summary");
        for _ in 0..100 {
            if summary.text().await.unwrap_or_default().contains("seq") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The link is spent.
        let (code, _) = raw_get(&addr, url.trim_start_matches(&format!("http://{addr}")), &addr);
        assert_eq!(code, 403, "a login link works once");

        // A session registered after the page loaded shows up, no reload.
        d.register("web-1");
        let row = "tr[data-session=\"web-1\"]";
        let mut found = false;
        for _ in 0..200 {
            if c.find(Locator::Css(row)).await.is_ok() {
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(found, "web-1 never appeared:\n{}", c.source().await.unwrap_or_default());

        // A session whose transcript waits for a human: highlighted.
        let transcript = d.dir.path().join("t.jsonl");
        std::fs::write(
            &transcript,
            "{\"type\":\"user\",\"message\":{}}\n{\"type\":\"assistant\",\"message\":{\"stop_reason\":\"end_turn\"}}\n",
        )
        .expect("transcript");
        d.ok(&[
            "session",
            "register",
            "--id",
            "asks",
            "--transcript",
            transcript.to_str().expect("utf-8"),
        ]);
        let needs = "tr[data-session=\"asks\"][data-state=\"needs_input\"].needs";
        let mut highlighted = false;
        for _ in 0..300 {
            if c.find(Locator::Css(needs)).await.is_ok() {
                highlighted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(highlighted, "asks never shown as needing input:\n{}", c.source().await.unwrap_or_default());
        // It floats to the top.
        let first = c
            .find(Locator::Css("#sessions tr"))
            .await
            .expect("a row")
            .attr("data-session")
            .await
            .expect("attr");
        assert_eq!(first.as_deref(), Some("asks"));
        // What it waits for stands where its phase would be.
        let waits = c
            .find(Locator::Css("tr[data-session=\"asks\"] td.waits"))
            .await
            .expect("what it waits for")
            .text()
            .await
            .expect("text");
        assert!(!waits.trim().is_empty(), "an empty reason");

        // The page's own API calls ride on the cookie; a write does not.
        let status: serde_json::Value = c
            .execute_async(
                "const done = arguments[0]; fetch('/v1/events', {method: 'POST', headers: {'content-type': 'application/json'}, body: '{\"tx_kind\":\"x.csrf\"}'}).then(r => done(r.status));",
                vec![],
            )
            .await
            .expect("fetch");
        assert_eq!(status, serde_json::json!(403), "a cookie never authorizes a write");

        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(out_dir.join("dashboard.png"), &png).expect("write screenshot");
        if let Some(dir) = std::env::var_os("COORD_WRITE_SCREENSHOTS") {
            std::fs::write(PathBuf::from(dir).join("dashboard.png"), &png).expect("write screenshot");
        }

        // The page allows no inline script or style (its own files only),
        // and each login has its own cookie, which can be revoked alone.
        let cookie = c
            .get_named_cookie("coord_view")
            .await
            .expect("the login cookie")
            .value()
            .to_string();
        let with_cookie = |path: &str| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr).expect("connect");
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: coord_view={cookie}\r\nConnection: close\r\n\r\n"
            )
            .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            out
        };
        let page = with_cookie("/");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        let csp = page
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-security-policy:"))
            .expect("a CSP")
            .to_string();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(with_cookie("/app.js").starts_with("HTTP/1.1 200"));
        let other = d.ok(&["--json", "ui"]);
        let other: serde_json::Value = serde_json::from_str(&other).expect("json");
        let out = d.ok(&["ui", "--revoke", other["viewer"].as_str().expect("viewer")]);
        assert!(out.contains("revoked 0"), "an unopened login: {out}");
        assert!(with_cookie("/v1/status").starts_with("HTTP/1.1 200"), "another login's revoke leaves this one");
        let out = d.ok(&["ui", "--revoke", "all"]);
        assert!(out.contains("revoked 1"), "{out}");
        assert!(with_cookie("/v1/status").starts_with("HTTP/1.1 403"), "a revoked cookie reads nothing");
        c.close().await.expect("close");
    });
    drop(driver);
    assert!(
        !d.all_events().iter().any(|e| e["tx_kind"] == "x.csrf"),
        "the refused write appended nothing"
    );
}
