//! The HTTP handlers of `docs/PROTOCOL.md` §8–9. Each turns a request into
//! a [`Command`] (or a read of the view) and the writer's answer into JSON;
//! none of them decides what is valid.

use crate::http::{json_response, require_admin, require_session, ApiError, JsonBody};
use crate::hub::{Hub, HubError, Published};
use crate::pidfd;
use crate::timers::Leases;
use crate::tokens;
use crate::tokens::TokenCache;
use crate::waits::WaitNotice;
use crate::writer::{body_key, Committed, Extras, Stats, Write, WriterHandle};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::{BufMut, Bytes, BytesMut};
use coord_core::{Command, Reply};
use coord_proto::api::*;
use coord_proto::view::{Message, OrderState};
use coord_proto::{
    ids, DeregReason, ErrorCode, Payload, Timestamp, WaitCancelReason, DEFAULT_SESSION_TTL_MS,
    MAX_DURATION_MS, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, VERSION,
};
use coord_store::{EventLog, SyncMode};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Everything a handler can reach.
pub struct App<L> {
    /// The writer.
    pub writer: WriterHandle,
    /// The fan-out hub.
    pub hub: Arc<Hub>,
    /// The store (reads only: catch-up, bodies, tokens).
    pub store: L,
    /// Token hashes.
    pub tokens: Arc<TokenCache>,
    /// The admin token.
    pub admin_token: String,
    /// Where the admin token is written.
    pub admin_token_path: PathBuf,
    /// Flips to true when the daemon starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Start time.
    pub started: Instant,
    /// Socket path.
    pub socket: PathBuf,
    /// Store path.
    pub store_path: PathBuf,
    /// Sync mode.
    pub sync: SyncMode,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Log bare heartbeats.
    pub log_heartbeats: bool,
    /// Every live session's lease (renewals included).
    pub leases: Arc<Leases>,
    /// The store's log identity (`Coord-Log-Id`).
    pub log_id: String,
}

type AppState<L> = State<Arc<App<L>>>;
type ApiResult = Result<Response, ApiError>;

/// The router of protocol version 1.
pub fn router<L: EventLog + Clone>(app: Arc<App<L>>) -> Router {
    Router::new()
        .route("/v1/status", get(status::<L>))
        .route("/v1/sessions", post(register::<L>).get(list_sessions::<L>))
        .route("/v1/sessions/{id}", get(get_session::<L>))
        .route("/v1/sessions/{id}/heartbeat", post(heartbeat::<L>))
        .route("/v1/sessions/{id}/dereg", post(dereg::<L>))
        .route("/v1/sessions/{id}/report", post(report::<L>))
        .route("/v1/locks/delegate", post(delegate::<L>))
        .route("/v1/locks", get(list_locks::<L>))
        .route("/v1/locks/acquire", post(acquire::<L>))
        .route("/v1/locks/release", post(release::<L>))
        .route("/v1/locks/check", get(check_lock::<L>))
        .route("/v1/inbox/{id}", post(send::<L>).get(inbox_list::<L>))
        .route("/v1/inbox/{id}/{msg}", get(inbox_read::<L>))
        .route("/v1/inbox/{id}/{msg}/ack", post(inbox_ack::<L>))
        .route("/v1/dispatch", post(issue::<L>).get(list_orders::<L>))
        .route("/v1/dispatch/next", get(dispatch_next::<L>))
        .route("/v1/dispatch/{id}", get(get_order::<L>))
        .route("/v1/dispatch/{id}/ack", post(order_ack::<L>))
        .route("/v1/dispatch/{id}/complete", post(order_complete::<L>))
        .route("/v1/events", get(events::<L>).post(custom_event::<L>))
        .route("/v1/snapshot", get(snapshot::<L>))
        .route("/v1/admin/export", post(export_legacy::<L>))
        .fallback(|| async {
            ApiError::new(
                ErrorCode::NotFound,
                "no such endpoint; see docs/PROTOCOL.md",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this path",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            app.log_id.clone(),
            versions,
        ))
        .with_state(app)
}

/// Adds `Coord-Protocol`, `Coord-Version` and `Coord-Log-Id` to every
/// answer and refuses a client that speaks another protocol.
async fn versions(
    State(log_id): State<String>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let theirs = req
        .headers()
        .get("coord-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut resp = match theirs {
        Some(v) if v.trim() != PROTOCOL_VERSION.to_string() => ApiError::new(
            ErrorCode::ProtocolMismatch,
            format!(
                "daemon speaks protocol {PROTOCOL_VERSION} (coord {VERSION}), client speaks {v}; use the coord binary that matches the daemon"
            ),
        )
        .with("daemon", PROTOCOL_VERSION)
        .with("client", v)
        .into_response(),
        _ => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.insert("coord-protocol", HeaderValue::from(PROTOCOL_VERSION));
    h.insert("coord-version", HeaderValue::from_static(VERSION));
    if let Ok(v) = HeaderValue::from_str(&log_id) {
        h.insert("coord-log-id", v);
    }
    resp
}

fn write(cmd: Command, tx_id: Option<ulid::Ulid>, ts: Option<Timestamp>) -> Write {
    Write {
        cmd,
        source: crate::writer::API.to_string(),
        tx_id,
        ts: ts.unwrap_or_else(Timestamp::now),
        extras: Extras::default(),
        reply: None,
    }
}

/// A write answer: 201 (`created`) or 200, `Coord-Replayed` on a replay.
fn written<T: serde::Serialize>(c: &Committed, created: bool, body: &T) -> Response {
    let status = if created && !c.replayed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = json_response(status, body);
    if c.replayed {
        resp.headers_mut()
            .insert("coord-replayed", HeaderValue::from_static("true"));
    }
    resp
}

fn ok<T: serde::Serialize>(body: &T) -> ApiResult {
    Ok(json_response(StatusCode::OK, body))
}

fn check_id(field: &str, v: &str) -> Result<(), ApiError> {
    ids::check_id(v).map_err(|why| {
        ApiError::new(ErrorCode::InvalidId, format!("{field} {v:?} {why}")).with("field", field)
    })
}

fn duration(field: &str, ms: u64) -> Result<(), ApiError> {
    if ms > MAX_DURATION_MS {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("{field} is at most {MAX_DURATION_MS} ms"),
        )
        .with("field", field));
    }
    Ok(())
}

async fn status<L: EventLog + Clone>(State(app): AppState<L>) -> ApiResult {
    let (sessions, locks) = app
        .writer
        .read(|s| (s.view.sessions.len() as u64, s.view.locks.len() as u64))
        .await?;
    let (oldest, _) = app
        .store
        .bounds()
        .await
        .map_err(|e| ApiError::new(ErrorCode::StoreUnavailable, e.to_string()))?;
    let events_by_kind = app
        .stats
        .events_by_kind
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    ok(&StatusResponse {
        version: VERSION.to_string(),
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
        log_id: app.log_id.clone(),
        socket: app.socket.display().to_string(),
        store: StoreStatus {
            path: app.store_path.display().to_string(),
            bytes: app.store.size_bytes(),
            sync: app.sync.as_str().to_string(),
        },
        head_seq: app.hub.head(),
        oldest_seq: oldest,
        uptime_ms: app.started.elapsed().as_millis() as u64,
        subscribers: app.hub.subscriber_count(),
        sessions,
        locks,
        events_by_kind,
    })
}

async fn register<L: EventLog + Clone>(
    State(app): AppState<L>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> ApiResult {
    check_id("session_id", &req.session_id)?;
    let token = match req.token.clone() {
        Some(t) if tokens::acceptable(&t) => t,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "token must be 32-128 characters of A-Za-z0-9_-",
            )
            .with("field", "token"))
        }
        None => tokens::generate(),
    };
    let pidfd = match req.pid {
        Some(pid) if pid > 0 => match pidfd::open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(ApiError::new(
                    ErrorCode::NoSuchProcess,
                    format!("no process with pid {pid} is running"),
                )
                .with("pid", pid))
            }
            Err(e) => {
                tracing::warn!(pid, error = %e, "pidfd_open failed; the session will not be watched");
                None
            }
        },
        _ => None,
    };
    let ttl_ms = req.ttl_ms.unwrap_or(DEFAULT_SESSION_TTL_MS);
    let mut w = write(
        Command::Register {
            session_id: req.session_id.clone(),
            role: req.role,
            task: req.task,
            blob: req.blob.unwrap_or_else(|| serde_json::json!({})),
            phase: req.phase.unwrap_or_else(|| "starting".into()),
            pid: req.pid,
            parent_session: req.parent_session,
            ttl_ms,
            probes: coord_core::Probes {
                tmux: req.tmux,
                activity_file: req.activity_file,
                transcript: req.transcript,
            },
            expiry: coord_core::ExpiryPolicy {
                on_expiry: req.on_expiry,
                kill_grace_ms: req.kill_grace_ms,
            },
            extra: Default::default(),
        },
        req.tx_id,
        req.ts,
    );
    w.extras.token_hash = Some(tokens::hash(&token));
    w.extras.pidfd = pidfd;
    let c = app.writer.write(w).await?;
    // A replay cannot return a daemon-made token (only its hash is kept);
    // a client-chosen one is echoed.
    let token = if c.replayed {
        req.token.unwrap_or_default()
    } else {
        token
    };
    Ok(written(
        &c,
        true,
        &RegisterResponse {
            session_id: req.session_id,
            token,
            seq: c.seq.unwrap_or(0),
            ttl_ms,
        },
    ))
}

async fn list_sessions<L: EventLog + Clone>(
    State(app): AppState<L>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let ended = match q.get("ended").map(String::as_str) {
        None | Some("false" | "0") => false,
        Some("true" | "1" | "") => true,
        Some(v) => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("ended={v:?}: expected true or false"),
            )
            .with("field", "ended"))
        }
    };
    let leases = app.leases.clone();
    let r = app
        .writer
        .read(move |s| SessionsResponse {
            seq: s.head,
            sessions: s
                .view
                .sessions
                .values()
                .map(|x| with_live_facts(s, &leases, x))
                .collect(),
            ended: if ended {
                s.ended.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
        .await?;
    ok(&r)
}

/// A session as the API shows it: the folded session plus what only the
/// daemon knows (its lease, renewals included) and what the locks' queues
/// say about it (what it waits for).
fn with_live_facts(
    s: &coord_core::State,
    leases: &Leases,
    session: &coord_proto::view::Session,
) -> coord_proto::view::Session {
    let mut out = session.clone();
    out.lease = leases.get(&session.session_id);
    let mut waiting: Vec<coord_proto::view::WaitingOn> = s
        .view
        .locks
        .values()
        .filter_map(|l| {
            l.waiters
                .iter()
                .position(|w| w.session_id == session.session_id)
                .map(|i| coord_proto::view::WaitingOn {
                    resource: l.resource.clone(),
                    mode: l.waiters[i].mode,
                    since: l.waiters[i].since_at,
                    position: i + 1,
                })
        })
        .collect();
    waiting.sort_by_key(|w| w.since);
    out.waiting_on = waiting;
    out
}

async fn get_session<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
) -> ApiResult {
    check_id("session_id", &id)?;
    let sid = id.clone();
    let leases = app.leases.clone();
    let detail = app
        .writer
        .read(move |s| {
            s.view.sessions.get(&sid).map(|session| SessionDetail {
                session: with_live_facts(s, &leases, session),
                locks: s
                    .view
                    .locks
                    .values()
                    .filter(|l| l.holders.iter().any(|h| h.session_id == sid))
                    .map(|l| l.resource.clone())
                    .collect(),
            })
        })
        .await?;
    match detail {
        Some(d) => ok(&d),
        None => Err(crate::http::session_gone(&app, &id).await),
    }
}

async fn heartbeat<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<HeartbeatRequest>,
) -> ApiResult {
    require_session(&app, &headers, &id).await?;
    let at = req.ts.unwrap_or_else(Timestamp::now);
    let c = app
        .writer
        .write(write(
            Command::Heartbeat {
                session_id: id.clone(),
                phase: req.phase,
                at,
                log_always: app.log_heartbeats,
            },
            req.tx_id,
            Some(at),
        ))
        .await?;
    let ttl_ms = app
        .writer
        .read(move |s| s.view.sessions.get(&id).map(|s| s.ttl_ms))
        .await?
        .unwrap_or(0);
    Ok(written(
        &c,
        false,
        &HeartbeatResponse { seq: c.seq, ttl_ms },
    ))
}

/// A child's report to its parent. A child of this daemon acts with its
/// token; a child of another daemon is reported by that daemon's
/// forwarder with this daemon's admin token (source `peer`).
async fn report<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ReportRequest>,
) -> ApiResult {
    check_id("session_id", &id)?;
    let sid = id.clone();
    let local = app
        .writer
        .read(move |s| s.view.sessions.contains_key(&sid))
        .await?;
    let admin = require_admin(&app, &headers).is_ok();
    if local && !admin {
        require_session(&app, &headers, &id).await?;
    } else if !local && !admin {
        return Err(ApiError::new(
            ErrorCode::AdminRequired,
            format!(
                "{id} is not a session of this daemon; a report forwarded for it needs the admin token (Coord-Admin-Token)"
            ),
        ));
    }
    let mut w = write(
        Command::Report {
            session_id: id,
            parent_session: req.parent_session,
            report: req.report,
        },
        req.tx_id,
        req.ts,
    );
    if !local {
        w.source = crate::writer::PEER.to_string();
    }
    let c = app.writer.write(w).await?;
    Ok(written(&c, true, &WriteResponse { seq: c.seq }))
}

/// `lock.delegate`: the parent (`session_id`, its token) hands part of its
/// scope to a child.
async fn delegate<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(mut req): JsonBody<DelegateRequest>,
) -> ApiResult {
    require_session(&app, &headers, &req.session_id).await?;
    req.resource = ids::normalize_resource(&req.resource);
    let c = app
        .writer
        .write(write(
            Command::Delegate {
                session_id: req.session_id,
                resource: req.resource,
                to_session: req.to_session,
            },
            req.tx_id,
            req.ts,
        ))
        .await?;
    Ok(written(&c, true, &WriteResponse { seq: c.seq }))
}

async fn dereg<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DeregRequest>,
) -> ApiResult {
    let reason = if req.force {
        require_admin(&app, &headers)?;
        DeregReason::Forced
    } else {
        require_session(&app, &headers, &id).await?;
        DeregReason::Explicit
    };
    let c = app
        .writer
        .write(write(
            Command::Dereg {
                session_id: id,
                reason,
                exit_code: req.exit_code,
            },
            req.tx_id,
            req.ts,
        ))
        .await?;
    Ok(written(&c, false, &WriteResponse { seq: c.seq }))
}

async fn list_locks<L: EventLog + Clone>(State(app): AppState<L>) -> ApiResult {
    let r = app
        .writer
        .read(|s| LocksResponse {
            seq: s.head,
            locks: s.view.locks.values().cloned().collect(),
        })
        .await?;
    ok(&r)
}

/// Cancels a queued wait if the handler is dropped (client gone) before
/// it learned the outcome.
struct CancelOnDrop {
    writer: WriterHandle,
    resource: String,
    session_id: String,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.writer.spawn_write(write(
                Command::CancelWait {
                    resource: self.resource.clone(),
                    session_id: self.session_id.clone(),
                    reason: WaitCancelReason::Timeout,
                },
                None,
                None,
            ));
        }
    }
}

async fn acquire<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(mut req): JsonBody<AcquireRequest>,
) -> ApiResult {
    require_session(&app, &headers, &req.session_id).await?;
    req.resource = ids::normalize_resource(&req.resource);
    duration("wait_ms", req.wait_ms)?;
    let started = Instant::now();
    let cmd = Command::Acquire {
        session_id: req.session_id.clone(),
        resource: req.resource.clone(),
        mode: req.mode,
        ttl_ms: req.ttl_ms,
        wait: req.wait_ms > 0,
        extra: Default::default(),
    };
    let (tx, mut rx) = oneshot::channel();
    let mut w = write(cmd.clone(), req.tx_id, req.ts);
    w.extras.wait = Some(tx);
    let mut c = app.writer.write(w).await?;
    if c.replayed && matches!(c.reply, Reply::Waiting) {
        // The original request waited and is gone; ask afresh so this
        // request is the one told of the grant.
        let (tx, rx2) = oneshot::channel();
        rx = rx2;
        let mut w = write(cmd, None, req.ts);
        w.extras.wait = Some(tx);
        c = app.writer.write(w).await?;
    }
    let granted = |seq: u64, already: bool| {
        written(
            &c,
            false,
            &AcquireResponse {
                seq,
                fencing_token: seq,
                resource: req.resource.clone(),
                mode: req.mode,
                already_held: already,
                waited_ms: started.elapsed().as_millis() as u64,
            },
        )
    };
    match c.reply {
        Reply::Granted => return Ok(granted(c.seq.unwrap_or(0), false)),
        Reply::AlreadyHeld { acquired_seq } => return Ok(granted(acquired_seq, true)),
        Reply::Waiting | Reply::AlreadyWaiting => {}
        other => {
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!("unexpected answer to an acquire: {other:?}"),
            ))
        }
    }
    let mut guard = CancelOnDrop {
        writer: app.writer.clone(),
        resource: req.resource.clone(),
        session_id: req.session_id.clone(),
        armed: true,
    };
    let deadline = started + Duration::from_millis(req.wait_ms);
    let mut shutdown = app.shutdown.clone();
    let notice = tokio::select! {
        n = &mut rx => Some(n),
        _ = tokio::time::sleep_until(deadline.into()) => None,
        _ = crate::until_shutdown(&mut shutdown) => {
            return Err(ApiError::new(ErrorCode::ShuttingDown, "the daemon is shutting down; the wait is cancelled"));
        }
    };
    guard.armed = false;
    match notice {
        Some(Ok(WaitNotice::Granted(seq))) => Ok(granted(seq, false)),
        Some(Ok(WaitNotice::Cancelled(WaitCancelReason::OwnerGone))) => Err(ApiError::new(
            ErrorCode::SessionNotFound,
            format!(
                "session {} ended while waiting for {}",
                req.session_id, req.resource
            ),
        )
        .with("session_id", req.session_id.as_str())),
        Some(Ok(WaitNotice::Cancelled(_))) => Err(timeout(&req.resource, started)),
        Some(Err(_)) => Err(ApiError::new(
            ErrorCode::LockHeld,
            format!(
                "another request of session {} now waits for {}; this one gave up",
                req.session_id, req.resource
            ),
        )),
        None => {
            // Out of time: leave the queue, unless the grant won the race.
            let c = app
                .writer
                .write(write(
                    Command::CancelWait {
                        resource: req.resource.clone(),
                        session_id: req.session_id.clone(),
                        reason: WaitCancelReason::Timeout,
                    },
                    None,
                    None,
                ))
                .await?;
            match c.reply {
                Reply::NotWaiting {
                    held_seq: Some(seq),
                } => Ok(granted(seq, false)),
                _ => Err(timeout(&req.resource, started)),
            }
        }
    }
}

fn timeout(resource: &str, started: Instant) -> ApiError {
    ApiError::new(
        ErrorCode::Timeout,
        format!(
            "{resource} was not granted within {} ms; left the queue",
            started.elapsed().as_millis()
        ),
    )
    .with("resource", resource)
}

async fn release<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(mut req): JsonBody<ReleaseRequest>,
) -> ApiResult {
    req.resource = ids::normalize_resource(&req.resource);
    if req.force {
        require_admin(&app, &headers)?;
    } else {
        require_session(&app, &headers, &req.session_id).await?;
    }
    let c = app
        .writer
        .write(write(
            Command::Release {
                session_id: req.session_id,
                resource: req.resource,
                force: req.force,
            },
            req.tx_id,
            req.ts,
        ))
        .await?;
    Ok(written(&c, false, &WriteResponse { seq: c.seq }))
}

/// `GET /v1/locks/check?resource=R&token=T`: whether fencing token T is
/// still a current grant of R (PROTOCOL §7.2).
async fn check_lock<L: EventLog + Clone>(
    State(app): AppState<L>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let resource = q.get("resource").ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidField, "resource is required").with("field", "resource")
    })?;
    let resource = ids::normalize_resource(resource);
    ids::check_resource(&resource).map_err(|why| {
        ApiError::new(ErrorCode::InvalidId, format!("resource {resource:?} {why}"))
            .with("field", "resource")
    })?;
    let token = q
        .get("token")
        .ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidField, "token is required").with("field", "token")
        })?
        .parse::<u64>()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidField,
                "token must be a fencing token (the seq of a grant)",
            )
            .with("field", "token")
        })?;
    let r = app
        .writer
        .read(move |s| {
            let holders: Vec<LockCheckHolder> = s
                .view
                .locks
                .get(&resource)
                .map(|l| {
                    l.holders
                        .iter()
                        .map(|h| LockCheckHolder {
                            session_id: h.session_id.clone(),
                            fencing_token: h.acquired_seq,
                        })
                        .collect()
                })
                .unwrap_or_default();
            LockCheckResponse {
                seq: s.head,
                current: holders.iter().any(|h| h.fencing_token == token),
                resource,
                token,
                holders,
            }
        })
        .await?;
    ok(&r)
}

async fn send<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(to): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<SendRequest>,
) -> ApiResult {
    check_id("to_session", &to)?;
    if req.body.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "message body is {} bytes, at most {MAX_MESSAGE_BYTES}",
                req.body.len()
            ),
        )
        .with("limit", MAX_MESSAGE_BYTES));
    }
    if let Some(from) = &req.from_session {
        require_session(&app, &headers, from).await?;
    }
    let msg_id = req.msg_id.unwrap_or_else(|| ulid::Ulid::new().to_string());
    let mut w = write(
        Command::Deliver {
            to_session: to,
            msg_id: msg_id.clone(),
            kind: req.kind.unwrap_or_else(|| "message".into()),
            from_session: req.from_session,
            size: req.body.len() as u64,
            extra: Default::default(),
        },
        req.tx_id,
        req.ts,
    );
    w.extras.body = Some(req.body);
    let c = app.writer.write(w).await?;
    Ok(written(
        &c,
        true,
        &SendResponse {
            seq: c.seq.unwrap_or(0),
            msg_id,
        },
    ))
}

async fn inbox_list<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    require_session(&app, &headers, &id).await?;
    let r = app
        .writer
        .read(move |s| InboxResponse {
            seq: s.head,
            messages: s.view.inboxes.get(&id).cloned().unwrap_or_default(),
        })
        .await?;
    ok(&r)
}

async fn inbox_read<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path((id, msg)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    require_session(&app, &headers, &id).await?;
    check_id("msg_id", &msg)?;
    let (sid, mid) = (id.clone(), msg.clone());
    let found: Option<Message> = app
        .writer
        .read(move |s| {
            s.view
                .inboxes
                .get(&sid)
                .and_then(|inbox| inbox.iter().find(|m| m.msg_id == mid).cloned())
        })
        .await?;
    let Some(mut m) = found else {
        return Err(ApiError::new(
            ErrorCode::MessageNotFound,
            format!("no unacked message {msg} in the inbox of {id}"),
        )
        .with("msg_id", msg));
    };
    let body = app
        .store
        .attachment(&body_key(&id, &msg))
        .await
        .map_err(|e| ApiError::new(ErrorCode::StoreUnavailable, e.to_string()))?;
    m.body = Some(String::from_utf8_lossy(&body.unwrap_or_default()).into_owned());
    ok(&m)
}

async fn inbox_ack<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path((id, msg)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<AckRequest>,
) -> ApiResult {
    require_session(&app, &headers, &id).await?;
    let c = app
        .writer
        .write(write(
            Command::AckMessage {
                session_id: id,
                msg_id: msg,
            },
            req.tx_id,
            req.ts,
        ))
        .await?;
    Ok(written(&c, false, &WriteResponse { seq: c.seq }))
}

async fn issue<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<IssueRequest>,
) -> ApiResult {
    if let Some(from) = &req.from_session {
        require_session(&app, &headers, from).await?;
    }
    let order_id = req
        .order_id
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let c = app
        .writer
        .write(write(
            Command::Issue {
                order_id: order_id.clone(),
                assignee: req.assignee,
                ticket: req.ticket,
                from_session: req.from_session,
                payload: req.payload,
                extra: Default::default(),
            },
            req.tx_id,
            req.ts,
        ))
        .await?;
    Ok(written(
        &c,
        true,
        &IssueResponse {
            seq: c.seq.unwrap_or(0),
            order_id,
        },
    ))
}

async fn list_orders<L: EventLog + Clone>(
    State(app): AppState<L>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let state = match q.get("state").map(String::as_str) {
        None | Some("") => None,
        Some("issued") => Some(OrderState::Issued),
        Some("acked") => Some(OrderState::Acked),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!(
                    "state {other:?}: expected issued or acked (completed orders leave the view)"
                ),
            )
            .with("field", "state"))
        }
    };
    let assignee = q.get("assignee").cloned().filter(|a| !a.is_empty());
    let r = app
        .writer
        .read(move |s| OrdersResponse {
            seq: s.head,
            orders: s
                .view
                .orders
                .values()
                .filter(|o| assignee.as_ref().is_none_or(|a| &o.assignee == a))
                .filter(|o| state.is_none_or(|st| o.state == st))
                .cloned()
                .collect(),
        })
        .await?;
    ok(&r)
}

async fn get_order<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
) -> ApiResult {
    check_id("order_id", &id)?;
    let oid = id.clone();
    match app
        .writer
        .read(move |s| s.view.orders.get(&oid).cloned())
        .await?
    {
        Some(o) => ok(&o),
        None => Err(order_not_found(&id)),
    }
}

fn order_not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::OrderNotFound, format!("no open order {id}")).with("order_id", id)
}

async fn dispatch_next<L: EventLog + Clone>(
    State(app): AppState<L>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let assignee = q.get("assignee").cloned().unwrap_or_default();
    check_id("assignee", &assignee)?;
    let wait_ms = match q.get("wait_ms") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidField,
                format!("wait_ms {v:?} is not a number"),
            )
            .with("field", "wait_ms")
        })?,
    };
    duration("wait_ms", wait_ms)?;
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut head_rx = app.hub.watch();
    let mut shutdown = app.shutdown.clone();
    loop {
        let who = assignee.clone();
        let (order, head) = app
            .writer
            .read(move |s| {
                let next = s
                    .view
                    .orders
                    .values()
                    .filter(|o| o.assignee == who && o.state == OrderState::Issued)
                    .min_by_key(|o| o.issued_seq)
                    .cloned();
                (next, s.head)
            })
            .await?;
        if let Some(o) = order {
            return ok(&o);
        }
        // Sleep until an order for this assignee is published.
        let mut cursor = head;
        loop {
            if *head_rx.borrow_and_update() <= cursor {
                tokio::select! {
                    r = head_rx.changed() => if r.is_err() { return Err(ApiError::new(ErrorCode::ShuttingDown, "the daemon is shutting down")) },
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        return Err(ApiError::new(ErrorCode::Timeout, format!("no order for {assignee} within {wait_ms} ms")));
                    }
                    _ = crate::until_shutdown(&mut shutdown) => return Err(ApiError::new(ErrorCode::ShuttingDown, "the daemon is shutting down")),
                }
                continue;
            }
            let upto = app.hub.head();
            let batch = app
                .hub
                .read_after(&app.store, cursor, upto)
                .await
                .map_err(|e| ApiError::new(e.code(), format!("{e:?}")))?;
            let Some(last) = batch.last() else { break };
            cursor = last.event.seq;
            if batch.iter().any(
                |p| matches!(&p.event.payload, Payload::DispatchIssue(d) if d.assignee == assignee),
            ) {
                break;
            }
        }
    }
}

async fn order_ack<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<AckRequest>,
) -> ApiResult {
    let assignee = assignee_of(&app, &headers, &id).await?;
    let c = app
        .writer
        .write(write(
            Command::AckOrder {
                order_id: id,
                session_id: assignee,
            },
            req.tx_id,
            req.ts,
        ))
        .await?;
    Ok(written(&c, false, &WriteResponse { seq: c.seq }))
}

async fn order_complete<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CompleteRequest>,
) -> ApiResult {
    let assignee = assignee_of(&app, &headers, &id).await?;
    let c = app
        .writer
        .write(write(
            Command::Complete {
                order_id: id,
                session_id: assignee,
                result: req.result,
            },
            req.tx_id,
            req.ts,
        ))
        .await?;
    Ok(written(&c, false, &WriteResponse { seq: c.seq }))
}

/// The order's assignee, after checking the request carries its token.
async fn assignee_of<L: EventLog + Clone>(
    app: &App<L>,
    headers: &HeaderMap,
    order_id: &str,
) -> Result<String, ApiError> {
    check_id("order_id", order_id)?;
    let oid = order_id.to_string();
    let assignee = app
        .writer
        .read(move |s| s.view.orders.get(&oid).map(|o| o.assignee.clone()))
        .await?
        .ok_or_else(|| order_not_found(order_id))?;
    require_session(app, headers, &assignee)
        .await
        .map_err(|e| {
            if e.0.code() == Some(ErrorCode::BadToken) {
                ApiError::new(
                    ErrorCode::NotAssignee,
                    format!("order {order_id} is assigned to {assignee}; the token is not its"),
                )
                .with("assignee", assignee.as_str())
            } else {
                e
            }
        })?;
    Ok(assignee)
}

async fn custom_event<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CustomEventRequest>,
) -> ApiResult {
    if let Some(s) = &req.session_id {
        require_session(&app, &headers, s).await?;
    }
    let body = match req.payload {
        None => serde_json::Map::new(),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => {
            return Err(
                ApiError::new(ErrorCode::InvalidField, "payload must be a JSON object")
                    .with("field", "payload"),
            )
        }
    };
    let c = app
        .writer
        .write(write(
            Command::Custom {
                kind: req.tx_kind,
                body,
                session_id: req.session_id,
                resource: req.resource,
            },
            req.tx_id,
            req.ts,
        ))
        .await?;
    Ok(written(&c, true, &WriteResponse { seq: c.seq }))
}

async fn snapshot<L: EventLog + Clone>(State(app): AppState<L>) -> ApiResult {
    let snap = app
        .writer
        .read(|s| Snapshot {
            seq: s.head,
            view: s.view.clone(),
        })
        .await?;
    ok(&snap)
}

/// What a subscriber wants to see.
struct Filter {
    kinds: Vec<String>,
    session: Option<String>,
    resource: Option<String>,
}

impl Filter {
    fn matches(&self, p: &Published) -> bool {
        let e = &p.event;
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| ids::glob_match(k, e.kind())) {
            return false;
        }
        if let Some(r) = &self.resource {
            if e.resource.as_deref() != Some(r.as_str()) {
                return false;
            }
        }
        if let Some(s) = &self.session {
            if e.session_id.as_deref() != Some(s.as_str()) && !e.payload.sessions().any(|x| x == s)
            {
                return false;
            }
        }
        true
    }
}

enum Cursor {
    Start,
    Now,
    After(u64),
}

fn parse_cursor(v: &str) -> Result<Cursor, ApiError> {
    match v.trim() {
        "start" => Ok(Cursor::Start),
        "now" | "" => Ok(Cursor::Now),
        n => n.parse::<u64>().map(Cursor::After).map_err(|_| {
            ApiError::new(
                ErrorCode::BadCursor,
                format!("cursor {n:?}: expected a seq number, start or now"),
            )
        }),
    }
}

async fn events<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let sse = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let cursor = match last_event_id.or_else(|| q.get("since").cloned()) {
        Some(v) => parse_cursor(&v)?,
        None => Cursor::Now,
    };
    let flag = |name: &str| -> Result<Option<bool>, ApiError> {
        match q.get(name).map(String::as_str) {
            None => Ok(None),
            Some("true" | "1" | "") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(v) => Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("{name}={v:?}: expected true or false"),
            )
            .with("field", name)),
        }
    };
    if let Some(theirs) = q.get("log_id").filter(|v| !v.is_empty()) {
        if *theirs != app.log_id {
            return Err(ApiError::new(
                ErrorCode::LogMismatch,
                format!(
                    "the cursor belongs to log {theirs}, this daemon serves log {}: its seqs mean nothing here; re-sync with since=start (or snapshot=true) and save the new log_id",
                    app.log_id
                ),
            )
            .with("log_id", app.log_id.as_str()));
        }
    }
    let want_snapshot = flag("snapshot")?.unwrap_or(false);
    let follow = flag("follow")?.unwrap_or(true);
    let filter = Filter {
        kinds: q
            .get("kinds")
            .map(|k| {
                k.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        session: q.get("session").cloned().filter(|s| !s.is_empty()),
        resource: q
            .get("resource")
            .filter(|s| !s.is_empty())
            .map(|r| ids::normalize_resource(r)),
    };

    let mut first: Option<Bytes> = None;
    let start = if want_snapshot {
        let snap = app
            .writer
            .read(|s| Snapshot {
                seq: s.head,
                view: s.view.clone(),
            })
            .await?;
        let json =
            serde_json::to_string(&serde_json::json!({ "snapshot": &snap })).unwrap_or_default();
        first = Some(if sse {
            Bytes::from(format!("event: snapshot\ndata: {json}\n\n"))
        } else {
            Bytes::from(format!("{json}\n"))
        });
        snap.seq
    } else {
        let (oldest, _) = app
            .store
            .bounds()
            .await
            .map_err(|e| ApiError::new(ErrorCode::StoreUnavailable, e.to_string()))?;
        match cursor {
            Cursor::Start => oldest.saturating_sub(1),
            Cursor::Now => app.hub.head(),
            Cursor::After(n) => {
                // Checked before compaction: a cursor past the head (from
                // another log, or u64::MAX) must not read as "compacted".
                let head = app.hub.head();
                if n > head {
                    return Err(ApiError::new(
                        ErrorCode::CursorAhead,
                        format!(
                            "since={n} is past the head of this log (seq {head}, log {}): the cursor was saved from another log or the log was replaced; re-sync with since=start or snapshot=true",
                            app.log_id
                        ),
                    )
                    .with("head_seq", head)
                    .with("log_id", app.log_id.as_str()));
                }
                if n.saturating_add(1) < oldest {
                    return Err(ApiError::new(
                        ErrorCode::Compacted,
                        format!(
                            "events after {n} were compacted; the oldest retained is {oldest}: re-sync with snapshot=true"
                        ),
                    )
                    .with("oldest_seq", oldest));
                }
                n
            }
        }
    };
    let upto = (!follow).then(|| app.hub.head());
    let sub = Subscription {
        guard: app.hub.subscriber(),
        head_rx: app.hub.watch(),
        shutdown: app.shutdown.clone(),
        app,
        cursor: start,
        upto,
        filter,
        sse,
        first,
        done: false,
    };
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        sub.next_chunk()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), sub))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let ct = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(ct),
    );
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    Ok(resp)
}

/// One open events stream: a cursor and a filter; it holds at most one
/// batch at a time and reads only when the client has taken the last.
struct Subscription<L> {
    app: Arc<App<L>>,
    guard: crate::hub::SubscriberGuard,
    head_rx: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    cursor: u64,
    upto: Option<u64>,
    filter: Filter,
    sse: bool,
    first: Option<Bytes>,
    done: bool,
}

impl<L: EventLog + Clone> Subscription<L> {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let _ = &self.guard;
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.done {
            return None;
        }
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            let head = *self.head_rx.borrow_and_update();
            let limit = self.upto.map_or(head, |u| u.min(head));
            if self.cursor >= limit {
                if self.upto.is_some_and(|u| self.cursor >= u) {
                    return None;
                }
                tokio::select! {
                    r = self.head_rx.changed() => if r.is_err() { return None },
                    _ = self.shutdown.changed() => return None,
                }
                continue;
            }
            match self
                .app
                .hub
                .read_after(&self.app.store, self.cursor, limit)
                .await
            {
                Ok(batch) => {
                    let matching: Vec<&Arc<Published>> =
                        batch.iter().filter(|p| self.filter.matches(p)).collect();
                    if let Some(last) = batch.last() {
                        self.cursor = last.event.seq;
                    }
                    // The common live case, one NDJSON event: send the shared
                    // line itself, no copy.
                    if let ([one], false) = (matching.as_slice(), self.sse) {
                        return Some(one.line.clone());
                    }
                    let mut buf = BytesMut::new();
                    for p in matching {
                        if self.sse {
                            buf.put_slice(
                                format!("id: {}\nevent: {}\ndata: ", p.event.seq, p.event.kind())
                                    .as_bytes(),
                            );
                            buf.put_slice(&p.json());
                            buf.put_slice(b"\n\n");
                        } else {
                            buf.put_slice(&p.line);
                        }
                    }
                    if !buf.is_empty() {
                        return Some(buf.freeze());
                    }
                }
                Err(e) => {
                    self.done = true;
                    let msg = match &e {
                        HubError::Compacted { oldest } => format!(
                            "the subscriber fell behind retention at seq {}; the oldest retained is {oldest}: re-sync with snapshot=true",
                            self.cursor
                        ),
                        HubError::Store(s) => s.clone(),
                    };
                    let mut body = coord_proto::ErrorBody::new(e.code(), msg);
                    if let HubError::Compacted { oldest } = e {
                        body = body.with("oldest_seq", oldest);
                    }
                    let json = serde_json::to_string(&body).unwrap_or_default();
                    return Some(Bytes::from(if self.sse {
                        format!("event: error\ndata: {json}\n\n")
                    } else {
                        format!("{json}\n")
                    }));
                }
            }
        }
    }
}

/// `POST /v1/admin/export`: write the view into a legacy root once.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportRequest {
    legacy_root: PathBuf,
}

async fn export_legacy<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ExportRequest>,
) -> ApiResult {
    require_admin(&app, &headers)?;
    if !req.legacy_root.is_absolute() {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "legacy_root must be an absolute path",
        )
        .with("field", "legacy_root"));
    }
    let exporter = coord_legacy::Exporter::new(&req.legacy_root);
    let (_, r) = crate::export::export_once(exporter, &app.writer, &app.store).await;
    match r {
        Ok(rep) => ok(&serde_json::json!({
            "legacy_root": req.legacy_root,
            "written": rep.written,
            "removed": rep.removed,
            "unchanged": rep.unchanged,
        })),
        Err(e) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("export to {} failed: {e}", req.legacy_root.display()),
        )),
    }
}
