//! `/v1/metrics` reflects a scripted run exactly: counters equal the
//! events in the log, refusals are counted by code, gauges show the view,
//! and a stalled subscriber shows as behind.

use crate::support::{post, Daemon, Follower};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// `name{labels} value` samples of the OpenMetrics text.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn metrics(d: &Daemon) -> (String, BTreeMap<String, f64>) {
    let r = d.http(
        "GET",
        "/v1/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        r.header("content-type")
    );
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let s = samples(&text);
    (text, s)
}

#[test]
fn metrics_reflect_a_scripted_run_exactly() {
    let d = Daemon::start(&[]);
    let t1 = d.register("m1");
    d.register("m2");
    // A refusal: m1 exists.
    let r = post(&d, "/v1/sessions", None, &json!({"session_id":"m1"}));
    assert_eq!(r.status, 409);
    post(
        &d,
        "/v1/locks/acquire",
        Some(&t1),
        &json!({"session_id":"m1","resource":"a"}),
    );
    for i in 0..5 {
        post(
            &d,
            "/v1/events",
            None,
            &json!({"tx_kind":"x.m","payload":{"i":i}}),
        );
    }
    let (text, s) = metrics(&d);
    // Every metric family has help text.
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = l.split_whitespace().nth(2).expect("name");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help"
        );
    }
    // Counters equal the log, by kind and source.
    let mut by: BTreeMap<(String, String), f64> = BTreeMap::new();
    for e in d.all_events() {
        *by.entry((
            e["tx_kind"].as_str().unwrap_or_default().to_string(),
            e["source"].as_str().unwrap_or_default().to_string(),
        ))
        .or_default() += 1.0;
    }
    let mut counted: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (k, v) in &s {
        if let Some(labels) = k.strip_prefix("coord_events_total{") {
            let get = |name: &str| {
                labels
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or_default()
                    .to_string()
            };
            counted.insert((get("kind"), get("source")), *v);
        }
    }
    assert_eq!(counted, by, "coord_events_total vs the log");
    assert_eq!(
        s.get("coord_writes_refused_total{code=\"session_exists\"}"),
        Some(&1.0)
    );
    assert_eq!(s.get("coord_head_seq"), Some(&(d.head() as f64)));
    assert_eq!(s.get("coord_locks"), Some(&1.0));
    let live: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("coord_sessions{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(live, 2.0);
    assert!(
        s.keys().any(|k| k.starts_with(
            "coord_http_request_duration_seconds_count{route=\"/v1/sessions\",method=\"POST\",status=\"409\"}"
        )),
        "request latency by route and status"
    );

    // A subscriber that stops reading falls behind, and shows it.
    let stalled = Follower::start_unread(&d, &["--since", "0"]);
    let pad = "x".repeat(2000);
    for i in 0..1500 {
        post(
            &d,
            "/v1/events",
            None,
            &json!({"tx_kind":"x.fill","payload":{"i":i,"pad":pad}}),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let (_, s) = metrics(&d);
    assert_eq!(s.get("coord_subscribers"), Some(&1.0));
    let lag = s.get("coord_subscriber_lag_events").copied().unwrap_or(0.0);
    assert!(
        lag > 100.0,
        "a stalled subscriber shows as behind: lag {lag}"
    );
    // The status tells the same story.
    let st = d.http("GET", "/v1/status", &[], None).json();
    assert_eq!(st["writer"]["refused"]["session_exists"], 1, "{st}");
    assert!(st["writer"]["commits"].as_u64().is_some_and(|c| c > 0));
    assert!(st["writer"]["commit_p99_us"].as_u64().is_some(), "{st}");
    assert_eq!(st["streams"]["subscribers"], 1);
    assert!(
        st["streams"]["lag_events"]
            .as_u64()
            .is_some_and(|l| l > 100),
        "{st}"
    );
    assert!(st["streams"]["lag_ms"].as_u64().is_some(), "{st}");
    assert_eq!(st["leases"]["locks_held"], 1);
    let backend = if crate::support::on_nats() {
        "nats"
    } else {
        "sqlite"
    };
    assert_eq!(st["store"]["backend"], backend);
    let verbose = d.ok(&["status", "--verbose"]);
    for section in ["writer", "streams", "sessions and locks", "store"] {
        assert!(
            verbose.lines().any(|l| l == section),
            "no {section} section: {verbose}"
        );
    }
    assert!(verbose.contains("refused session_exists 1"), "{verbose}");
    drop(stalled);
}

/// The status reports the bridge, the export and the lifecycle manager's
/// probes of a daemon that runs all three.
#[test]
fn the_status_reports_the_bridge_the_export_and_the_probes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let out = dir.path().join("export");
    std::fs::create_dir_all(root.join("sessions")).expect("root");
    std::fs::write(
        root.join("sessions").join("legacy-1.json"),
        r#"{"session_id":"legacy-1","role":"w","task":"T","blob":{},"phase":"p"}"#,
    )
    .expect("session file");
    // A half-written file: skipped as malformed, and said so.
    std::fs::write(
        root.join("sessions").join("legacy-2.json"),
        r#"{"session_id":"leg"#,
    )
    .expect("half-written file");
    let (root_s, out_s) = (root.to_string_lossy(), out.to_string_lossy());
    let d = Daemon::start(&[
        "--legacy-root",
        &root_s,
        "--legacy-mode",
        "poll",
        "--legacy-interval",
        "50ms",
        "--export-legacy",
        &out_s,
        "--probe-interval",
        "100ms",
    ]);
    let activity = dir.path().join("activity");
    std::fs::write(&activity, "").expect("activity file");
    d.ok(&[
        "session",
        "register",
        "--id",
        "probed",
        "--activity-file",
        activity.to_str().expect("utf8"),
    ]);
    crate::support::wait_until(
        "bridge, export and probes reported",
        Duration::from_secs(20),
        || {
            let st = d.http("GET", "/v1/status", &[], None).json();
            st["bridge"]["imports"].as_u64().is_some_and(|n| n >= 1)
                && st["export"]["exports"].as_u64().is_some_and(|n| n >= 1)
                && st["lifecycle"]["probes_run"]
                    .as_u64()
                    .is_some_and(|n| n >= 1)
        },
    );
    let st = d.http("GET", "/v1/status", &[], None).json();
    assert_eq!(st["bridge"]["mode"], "poll", "{st}");
    assert!(st["bridge"]["changes_seen"]
        .as_u64()
        .is_some_and(|n| n >= 1));
    assert_eq!(st["lifecycle"]["probing"], true, "{st}");
    assert_eq!(st["lifecycle"]["probed_sessions"], 1, "{st}");
    let verbose = d.ok(&["status", "-v"]);
    for section in ["lifecycle", "legacy bridge", "legacy export"] {
        assert!(verbose.lines().any(|l| l == section), "{verbose}");
    }
}

/// A bridge that cannot watch its root says it polls instead, and why.
#[test]
fn a_bridge_in_polling_fallback_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A root that does not exist yet cannot be watched.
    let root = dir.path().join("not-yet");
    let root_s = root.to_string_lossy();
    let d = Daemon::start(&[
        "--legacy-root",
        &root_s,
        "--legacy-mode",
        "watch",
        "--legacy-interval",
        "50ms",
    ]);
    crate::support::wait_until("fallback reported", Duration::from_secs(20), || {
        d.http("GET", "/v1/status", &[], None).json()["bridge"]["mode"] == "polling fallback"
    });
    let st = d.http("GET", "/v1/status", &[], None).json();
    assert!(
        st["bridge"]["fallback_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{st}"
    );
    let verbose = d.ok(&["status", "--verbose"]);
    assert!(verbose.contains("polling fallback"), "{verbose}");
}

/// Without `Accept: application/openmetrics-text` (promtool, curl) the
/// text format 0.0.4 is served, where every sample's family has its help
/// and type under the sample's own name (`coord_events_total`).
#[test]
fn a_scraper_without_openmetrics_gets_the_text_format_with_help_for_every_series() {
    let d = Daemon::start(&[]);
    d.register("m1");
    let r = d.http(
        "GET",
        "/v1/metrics",
        &[("Accept", "text/plain;version=0.0.4")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(text.contains("# HELP coord_events_total "), "{text}");
    assert!(text.contains("# TYPE coord_events_total counter"), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    let plain = d.http("GET", "/v1/metrics", &[], None);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
}
