//! Entry points for the fuzz targets in `fuzz/` (issue class "fuzzed
//! codecs"): the request-body decoders, the query and header parsers, and
//! the whole HTTP front end over an in-memory connection. Not part of the daemon's
//! API; hidden from its docs.
//!
//! Each function takes untrusted bytes and must return (with an answer or
//! an error), never panic; the targets add the checks of what a valid
//! answer looks like.

use crate::api;
use crate::app::App;
use coord_engine::hub::Hub;
use coord_engine::writer::{self, WriterConfig};
use coord_proto::api::*;
use coord_store::{EventLog, Retention, SqliteLog, SyncMode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Decodes `body` as every write request body of PROTOCOL §8, with the
/// daemon's own decoder (its error codes and field paths); returns how
/// many decoded.
pub fn decode_bodies(body: &[u8]) -> usize {
    use crate::http::parse_json;
    [
        parse_json::<RegisterRequest>(body).is_ok(),
        parse_json::<HeartbeatRequest>(body).is_ok(),
        parse_json::<DeregRequest>(body).is_ok(),
        parse_json::<ReportRequest>(body).is_ok(),
        parse_json::<DelegateRequest>(body).is_ok(),
        parse_json::<AcquireRequest>(body).is_ok(),
        parse_json::<ReleaseRequest>(body).is_ok(),
        parse_json::<SendRequest>(body).is_ok(),
        parse_json::<AckRequest>(body).is_ok(),
        parse_json::<IssueRequest>(body).is_ok(),
        parse_json::<CompleteRequest>(body).is_ok(),
        parse_json::<CustomEventRequest>(body).is_ok(),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

/// The query and header parsers: the input up to its first newline is an
/// events query string, the rest a header value read as a
/// `Last-Event-ID`, a `Content-Type` and a `Coord-Protocol`. Returns
/// whether the query and the cursor parsed.
pub fn query_and_headers(input: &[u8]) -> (bool, bool) {
    let (query, value) = match input.iter().position(|b| *b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    if let Ok(v) = axum::http::HeaderValue::from_bytes(value) {
        let _ = crate::http::media_type(&v);
        let _ = v.to_str().map(|s| s.trim() == "1");
    }
    let query = String::from_utf8_lossy(query);
    api::parse_query_and_cursor(&query, value)
}

/// A daemon's router on a fresh store in `dir`, without a socket: what
/// [`serve_bytes`] talks to. Its writer task runs on the caller's runtime.
pub async fn router(dir: &std::path::Path) -> Result<axum::Router, String> {
    let store =
        SqliteLog::open(&dir.join("fuzz.db"), SyncMode::Normal).map_err(|e| e.to_string())?;
    let hub = Hub::new(0, 4096);
    let tokens = Arc::new(coord_engine::tokens::TokenCache::default());
    let leases = Arc::new(coord_engine::timers::Leases::default());
    let metrics = Arc::new(coord_engine::metrics::Metrics::default());
    let (writer, _join, _stop) = writer::spawn(
        coord_core::State::default(),
        store.on_caller_thread(),
        hub.clone(),
        tokens.clone(),
        WriterConfig {
            snapshot_every: 1000,
            retention: Retention::default(),
            renewals: Default::default(),
            leases: leases.clone(),
            metrics: metrics.clone(),
            daemon_id: None,
            role: None,
            forward: None,
        },
    );
    let app = Arc::new(App {
        writer,
        hub,
        filters: Default::default(),
        log_id: store.log_id().to_string(),
        store,
        tokens,
        admin_token: "a".repeat(32),
        admin_token_path: dir.join("admin-token"),
        shutdown: crate::stop::Stop::new(),
        started: Instant::now(),
        socket: dir.join("fuzz.sock"),
        store_path: dir.join("fuzz.db"),
        sync: SyncMode::Normal,
        log_heartbeats: false,
        leases,
        metrics,
        observed: Default::default(),
        daemon_id: None,
        approvals_policy: None,
        requester_waits: Default::default(),
        web: None,
        connections: Default::default(),
        role: tokio::sync::watch::channel(coord_engine::writer::Role::Alone).1,
    });
    Ok(
        api::router(app).layer(axum::Extension(crate::http::BodyTimeout(
            Duration::from_millis(200),
        ))),
    )
}

/// Serves one connection (a Unix socketpair) that sends `input` and then
/// closes its write side; returns every byte the daemon answered (at most 1 MiB, within
/// `within`: an event stream asked to follow is cut off there).
pub async fn serve_bytes(router: &axum::Router, input: &[u8], within: Duration) -> Vec<u8> {
    // A real socketpair, as the daemon's connections are Unix sockets.
    let Ok((mut client, server)) = tokio::net::UnixStream::pair() else {
        return Vec::new();
    };
    let router = router.clone();
    let conn = tokio::spawn(async move {
        crate::conn::Http::new(Duration::from_millis(200))
            .serve(server, router, std::future::pending(), None)
            .await;
    });
    let mut out = Vec::new();
    let talk = async {
        let _ = client.write_all(input).await;
        let _ = client.shutdown().await;
        let mut buf = [0u8; 8192];
        while out.len() < (1 << 20) {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(within, talk).await;
    conn.abort();
    out
}
