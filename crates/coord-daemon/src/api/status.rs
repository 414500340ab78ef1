//! `GET /v1/status`, `GET /v1/snapshot` and `POST /v1/admin/export`:
//! what the daemon and its view look like, and the view written out.

use super::*;
use coord_engine::writer::Role;
use std::collections::BTreeMap;

#[utoipa::path(get, path = "/v1/status", tag = "status", responses((status = 200, description = "The daemon and its log", body = StatusResponse)))]
pub(crate) async fn status<L: EventLog + Clone>(State(app): AppState<L>) -> ApiResult {
    let now = Timestamp::now();
    let leases_of = app.leases.clone();
    let (sessions, locks, leases) = app
        .writer
        .read(move |s| {
            let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
            let mut expiring = 0;
            for x in s.view.sessions.values() {
                *by_state.entry(x.state.as_str().to_string()).or_default() += 1;
                if leases_of
                    .get(&x.session_id)
                    .is_some_and(|l| l.expires_at.as_millis() - now.as_millis() <= 60_000)
                {
                    expiring += 1;
                }
            }
            let held = s
                .view
                .locks
                .values()
                .filter(|l| !l.holders.is_empty())
                .count();
            let waiters: Vec<_> = s.view.locks.values().flat_map(|l| &l.waiters).collect();
            let longest = waiters
                .iter()
                .map(|w| (now.as_millis() - w.since_at.as_millis()).max(0) as u64)
                .max();
            (
                s.view.sessions.len() as u64,
                s.view.locks.len() as u64,
                LeasesStatus {
                    sessions_by_state: by_state,
                    expiring_within_60s: expiring,
                    locks_held: held as u64,
                    waiters: waiters.len() as u64,
                    longest_wait_ms: longest,
                },
            )
        })
        .await?;
    let (oldest, _) = app
        .store
        .bounds()
        .await
        .map_err(|e| ApiError::new(ErrorCode::StoreUnavailable, e.to_string()))?;
    let snapshot = app
        .store
        .snapshot_info()
        .await
        .map_err(|e| ApiError::new(ErrorCode::StoreUnavailable, e.to_string()))?;
    let batches = app.metrics.counts.read();
    let events_by_kind = batches.events_by_kind();
    let (lifecycle, bridge, export) = app.observed.snapshot();
    let head = app.hub.head();
    let cursors = app.hub.cursors();
    let front = app.hub.ring_front();
    let behind = |c: &u64| front.is_none_or(|f| c + 1 < f) && *c < head;
    let slowest = cursors.iter().min().copied();
    // The age of the oldest event a subscriber has yet to read.
    let lag_ms = match slowest.filter(|c| *c < head) {
        Some(c) => app
            .hub
            .read_after(&app.store, c, c + 1)
            .await
            .ok()
            .and_then(|b| b.first().map(|p| p.event.ingress_ts))
            .map(|t| (now.as_millis() - t.as_millis()).max(0) as u64),
        None => None,
    };
    ok(&StatusResponse {
        version: VERSION.to_string(),
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
        log_id: app.log_id.clone(),
        socket: app.socket.display().to_string(),
        http: app.web.as_ref().map(|w| w.addr.to_string()),
        store: StoreStatus {
            path: app.store_path.display().to_string(),
            bytes: app.store.size_bytes(),
            sync: app.sync.as_str().to_string(),
            backend: app.store.backend().into(),
            connected: app.store.remote_health().map(|(c, _)| c),
            stale_ms: app
                .store
                .remote_health()
                .map(|(_, at)| (now.as_millis() - at).max(0) as u64),
            daemon_id: app.daemon_id.clone(),
            role: app
                .daemon_id
                .as_ref()
                .map(|_| app.role.borrow().name().to_string()),
            leader: match &*app.role.borrow() {
                Role::Leader { .. } => app.daemon_id.clone(),
                Role::Follower { leader, .. } => Some(leader.clone()),
                _ => None,
            },
            term: match &*app.role.borrow() {
                Role::Leader { term } | Role::Follower { term, .. } => Some(*term),
                _ => None,
            },
            snapshot_seq: snapshot.map(|(seq, _)| seq),
            snapshot_age_ms: snapshot.map(|(_, at)| (now.as_millis() - at).max(0) as u64),
            last_compaction: batches.last_compaction.clone(),
        },
        head_seq: head,
        oldest_seq: oldest,
        uptime_ms: app.started.elapsed().as_millis() as u64,
        subscribers: app.hub.subscriber_count(),
        sessions,
        locks,
        events_by_kind,
        writer: WriterStatus {
            commits: batches.commits,
            mean_batch: if batches.commits == 0 {
                0.0
            } else {
                batches.writes as f64 / batches.commits as f64
            },
            max_batch: batches.max_batch,
            commit_p50_us: batches.recent_percentile(50.0),
            commit_p99_us: batches.recent_percentile(99.0),
            queue_depth: app.writer.queue_depth() as u64,
            refused: batches.refused,
        },
        connections: app.connections.load(std::sync::atomic::Ordering::Relaxed) as u64,
        streams: StreamsStatus {
            subscribers: cursors.len() as u64,
            catching_up: cursors.iter().filter(|c| behind(c)).count() as u64,
            live: cursors.iter().filter(|c| !behind(c)).count() as u64,
            furthest_behind_seq: slowest,
            lag_events: slowest.map_or(0, |c| head.saturating_sub(c)),
            lag_ms,
        },
        leases,
        lifecycle,
        bridge,
        export,
    })
}

#[utoipa::path(get, path = "/v1/snapshot", tag = "status", responses((status = 200, description = "The view after seq", body = Snapshot)))]
pub(crate) async fn snapshot<L: EventLog + Clone>(State(app): AppState<L>) -> ApiResult {
    ok(&take_snapshot(&app).await?)
}

/// The view and the seq it reflects, taken by the writer between batches
/// (so a stream that follows from `seq` misses and doubles nothing).
pub(crate) async fn take_snapshot<L: EventLog + Clone>(app: &App<L>) -> Result<Snapshot, ApiError> {
    Ok(app
        .writer
        .read(|s| Snapshot {
            seq: s.head,
            view: s.view.clone(),
        })
        .await?)
}

#[utoipa::path(post, path = "/v1/admin/export", tag = "status", request_body = ExportRequest, security(("admin_token" = [])), responses((status = 200, description = "What was written", body = ExportResponse)))]
pub(crate) async fn export_legacy<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(req, _): JsonBody<ExportRequest>,
) -> ApiResult {
    require_admin(&app, &headers)?;
    let root = PathBuf::from(&req.legacy_root);
    if !root.is_absolute() {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "legacy_root must be an absolute path",
        )
        .with("field", "legacy_root"));
    }
    let exporter = coord_legacy::Exporter::new(&root);
    let (_, r) = crate::export::export_once(exporter, &app.writer, &app.store).await;
    match r {
        Ok(rep) => ok(&ExportResponse {
            legacy_root: req.legacy_root,
            written: rep.written as u64,
            removed: rep.removed as u64,
            unchanged: rep.unchanged as u64,
        }),
        Err(e) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("export to {} failed: {e}", root.display()),
        )),
    }
}

/// `GET /v1/metrics`: every metric, in the OpenMetrics text format when
/// the scraper accepts it (`Accept: application/openmetrics-text`, as
/// Prometheus sends), else in the Prometheus text format 0.0.4, as the
/// Prometheus client libraries negotiate; gauges are read now.
#[utoipa::path(get, path = "/v1/metrics", tag = "status", summary = "Metrics for Prometheus", params(("Accept" = Option<String>, Header, description = "application/openmetrics-text for OpenMetrics; anything else gets the text format 0.0.4")), responses((status = 200, description = "Metrics (docs/OBSERVABILITY.md)", content((String = "text/plain; version=0.0.4"), (String = "application/openmetrics-text")))))]
pub(crate) async fn metrics<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
) -> ApiResult {
    let openmetrics = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let m = app.metrics.clone();
    let (by_state, locks, waiters) = app
        .writer
        .read(|s| {
            let mut by_state: std::collections::BTreeMap<&'static str, i64> =
                ["starting", "active", "idle", "needs_input", "stale"]
                    .into_iter()
                    .map(|k| (k, 0))
                    .collect();
            for x in s.view.sessions.values() {
                *by_state.entry(x.state.as_str()).or_default() += 1;
            }
            let waiters: usize = s.view.locks.values().map(|l| l.waiters.len()).sum();
            (by_state, s.view.locks.len() as i64, waiters as i64)
        })
        .await?;
    for (state, n) in by_state {
        m.sessions
            .get_or_create(&coord_engine::metrics::StateLabel {
                state: state.to_string(),
            })
            .set(n);
    }
    m.locks.set(locks);
    m.waiters.set(waiters);
    let head = app.hub.head();
    m.head_seq.set(head as i64);
    m.subscribers.set(app.hub.subscriber_count() as i64);
    m.subscriber_lag.set(
        app.hub
            .slowest_cursor()
            .map_or(0, |c| head.saturating_sub(c)) as i64,
    );
    m.queue_depth.set(app.writer.queue_depth() as i64);
    m.store_bytes.set(app.store.size_bytes() as i64);
    let (ring_events, ring_bytes) = app.hub.ring_size();
    m.ring_events.set(ring_events as i64);
    m.ring_bytes.set(ring_bytes as i64);
    let (body, ctype) = if openmetrics {
        (
            m.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            m.encode_text_004(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(ctype),
    );
    Ok(resp)
}

#[utoipa::path(post, path = "/v1/ui/login", tag = "status", params(("role" = Option<String>, Query, description = "viewer (default) or approver: an approver login also decides approvals (PROTOCOL §14)"), ("name" = Option<String>, Query, description = "Who the login is, as its decisions record it")), security(("admin_token" = [])), responses((status = 200, description = "A one-time login URL for the web dashboard (`coord ui`)", body = UiLoginResponse)))]
pub(crate) async fn ui_login<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<LoginQuery>,
) -> ApiResult {
    require_admin(&app, &headers)?;
    let role = match q.role.as_deref() {
        None | Some("" | "viewer") => crate::web_auth::WebRole::Viewer,
        Some("approver") => crate::web_auth::WebRole::Approver,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("role {other:?}: expected viewer or approver"),
            )
            .with("field", "role"))
        }
    };
    if let Some(n) = &q.name {
        coord_proto::ids::check_text(n).map_err(|why| {
            ApiError::new(ErrorCode::InvalidField, format!("name {why}")).with("field", "name")
        })?;
    }
    match &app.web {
        Some(w) => {
            let (url, viewer) = w.login_url_as(role, q.name.as_deref().filter(|n| !n.is_empty()));
            ok(&coord_proto::api::UiLoginResponse { url, viewer })
        }
        None => Err(no_dashboard()),
    }
}

/// `POST /v1/ui/login` query.
#[derive(serde::Deserialize)]
pub(crate) struct LoginQuery {
    role: Option<String>,
    name: Option<String>,
}

fn no_dashboard() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "this daemon serves no dashboard: start it with --http 127.0.0.1:PORT",
    )
}

#[utoipa::path(post, path = "/v1/ui/revoke", tag = "status", security(("admin_token" = [])), request_body = UiRevokeRequest, responses((status = 200, description = "The viewer's login (or with `*` every login) is ended: its cookie no longer reads", body = UiRevokeResponse)))]
pub(crate) async fn ui_revoke<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    crate::http::JsonBody(req, _): crate::http::JsonBody<coord_proto::api::UiRevokeRequest>,
) -> ApiResult {
    require_admin(&app, &headers)?;
    let web = app.web.as_ref().ok_or_else(no_dashboard)?;
    let revoked = web.revoke(&req.viewer) as u64;
    ok(&coord_proto::api::UiRevokeResponse { revoked })
}
