//! The HTTP handlers of `docs/PROTOCOL.md` §8–9, one module per kind of
//! request (sessions, pods, locks, inbox, dispatch, approvals, events, status). Each turns a request into
//! a [`Command`] (or a read of the view) and the writer's answer into JSON;
//! none of them decides what is valid.

use crate::http::{
    json_response, require_admin, require_session, ApiError, Digest, Flag, JsonBody, QueryParams,
};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::{BufMut, Bytes, BytesMut};
use coord_core::{Command, Reply};
use coord_engine::hub::{HubError, Published};
use coord_engine::pidfd;
use coord_engine::timers::Leases;
use coord_engine::tokens;
use coord_engine::waits::WaitNotice;
use coord_engine::writer::{body_key, Committed, Extras, Write, WriterHandle};
use coord_proto::api::*;
use coord_proto::view::{Message, OrderState};
use coord_proto::{
    ids, DeregReason, ErrorCode, Payload, Timestamp, WaitCancelReason, DEFAULT_SESSION_TTL_MS,
    MAX_DURATION_MS, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, VERSION,
};
use coord_store::EventLog;
use prometheus_client::metrics::histogram::Histogram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(crate) mod approvals;
mod dispatch;
mod events;
pub(crate) use events::parse_query_and_cursor;
mod inbox;
mod locks;
pub(crate) mod openapi;
mod pods;
mod sessions;
mod status;

use dispatch::*;
use events::*;
use inbox::*;
use locks::*;
use openapi::openapi_json;
use pods::*;
use sessions::*;
use status::*;

pub use crate::app::App;

pub(crate) type AppState<L> = State<Arc<App<L>>>;
pub(crate) type ApiResult = Result<Response, ApiError>;

/// The router of protocol version 1.
pub fn router<L: EventLog + Clone>(app: Arc<App<L>>) -> Router {
    Router::new()
        .route("/v1/status", get(status::<L>))
        .route(
            "/v1/openapi.json",
            get(openapi_json).layer(axum::Extension(openapi::Document(Bytes::from(
                openapi::document(),
            )))),
        )
        .route("/v1/metrics", get(metrics::<L>))
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
        .route("/v1/dispatch/{id}/cancel", post(order_cancel::<L>))
        .route("/v1/dispatch/{id}/reassign", post(order_reassign::<L>))
        .route(
            "/v1/approvals",
            post(approvals::ask::<L>).get(approvals::list::<L>),
        )
        .route("/v1/approvals/{id}", get(approvals::show::<L>))
        .route("/v1/approvals/{id}/wait", get(approvals::wait::<L>))
        .route("/v1/approvals/{id}/decide", post(approvals::decide::<L>))
        .route(
            "/v1/approvals/{id}/withdraw",
            post(approvals::withdraw::<L>),
        )
        .route("/v1/events", get(events::<L>).post(custom_event::<L>))
        .route("/v1/events/batch", post(custom_batch::<L>))
        .route("/v1/snapshot", get(snapshot::<L>))
        .route("/v1/admin/export", post(export_legacy::<L>))
        .route("/v1/ui/login", post(ui_login::<L>))
        .route("/v1/ui/revoke", post(ui_revoke::<L>))
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
        // One layer, not two: each `from_fn` layer boxes a future and
        // clones the router's service per request.
        .layer(axum::middleware::from_fn_with_state(
            Front::new(app.metrics.clone(), &app.log_id),
            front,
        ))
        .with_state(app)
}

/// What [`front`] needs: the metrics it times into and the headers it
/// stamps on every answer.
#[derive(Clone)]
pub(crate) struct Front {
    metrics: Arc<coord_engine::metrics::Metrics>,
    stamp: Arc<Stamp>,
}

/// The values of the headers every answer carries, made once rather than
/// parsed and checked per answer.
struct Stamp {
    protocol: HeaderValue,
    version: HeaderValue,
    /// `None` if the log id is not a valid header value (it always is: a
    /// ULID), in which case answers go without it, as before.
    log_id: Option<HeaderValue>,
}

const COORD_PROTOCOL: HeaderName = HeaderName::from_static("coord-protocol");
const COORD_VERSION: HeaderName = HeaderName::from_static("coord-version");
const COORD_LOG_ID: HeaderName = HeaderName::from_static("coord-log-id");

impl Front {
    /// The front of a daemon whose log is `log_id`, timing into `metrics`.
    pub(crate) fn new(metrics: Arc<coord_engine::metrics::Metrics>, log_id: &str) -> Self {
        Front {
            metrics,
            stamp: Arc::new(Stamp {
                protocol: HeaderValue::from(PROTOCOL_VERSION),
                version: HeaderValue::from_static(VERSION),
                log_id: HeaderValue::from_str(log_id).ok(),
            }),
        }
    }
}

/// Every request passes here: a client that speaks another protocol is
/// refused (a `Coord-Protocol` header that is there but unreadable is a
/// mismatch, not absent); every answer carries `Coord-Protocol`,
/// `Coord-Version` and `Coord-Log-Id`; every request is timed into
/// `coord_http_request_duration_seconds` by the route's pattern (so
/// session ids do not multiply the series).
pub(crate) async fn front(
    State(front): State<Front>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let resp = match request_refusal(&req).or_else(|| protocol_refusal(req.headers())) {
        Some(refused) => refused,
        None => next.run(req).await,
    };
    front.finish(resp, route, method, started)
}

/// The methods of RFC 9110 §9, PATCH (RFC 5789) and QUERY (the HTTP
/// working group's safe method with a body): any other is not implemented
/// anywhere (`501`), where a known one on the wrong path is `405`.
const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY",
];

/// What HTTP itself requires of a request before any route sees it: an
/// HTTP/1.1 request carries exactly one `Host` (RFC 9112 §3.2: else
/// `400`), and its method is one HTTP defines (RFC 9110 §9.1: else `501`).
fn request_refusal(req: &axum::extract::Request) -> Option<Response> {
    if !KNOWN_METHODS.contains(&req.method().as_str()) {
        return Some(
            ApiError::new(
                ErrorCode::NotImplemented,
                format!(
                    "method {} is not one this daemon implements (GET, HEAD, POST)",
                    coord_proto::ids::terminal_safe(req.method().as_str(), false)
                ),
            )
            .into_response(),
        );
    }
    if req.version() == axum::http::Version::HTTP_11 {
        let hosts = req
            .headers()
            .get_all(axum::http::header::HOST)
            .iter()
            .count();
        if hosts != 1 {
            return Some(
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "an HTTP/1.1 request carries exactly one Host header; this one has {hosts}"
                    ),
                )
                .with("hosts", hosts)
                .into_response(),
            );
        }
    }
    None
}

/// The answer to a client that speaks another protocol: a
/// `Coord-Protocol` header that is there but is not ours (or unreadable).
fn protocol_refusal(headers: &HeaderMap) -> Option<Response> {
    let theirs = headers.get(COORD_PROTOCOL).map(|v| {
        v.to_str()
            .map(str::to_string)
            .unwrap_or_else(|_| format!("{:?}", v.as_bytes()))
    })?;
    if theirs.trim() == PROTOCOL_VERSION.to_string() {
        return None;
    }
    Some(
        ApiError::new(
            ErrorCode::ProtocolMismatch,
            format!(
                "daemon speaks protocol {PROTOCOL_VERSION} (coord {VERSION}), client speaks {theirs}; use the coord binary that matches the daemon"
            ),
        )
        .with("daemon", PROTOCOL_VERSION)
        .with("client", theirs)
        .into_response(),
    )
}

impl Front {
    /// Stamps an answer with the protocol, version and log id headers and
    /// times its request into the metrics.
    fn finish(
        &self,
        mut resp: Response,
        route: String,
        method: String,
        started: Instant,
    ) -> Response {
        self.stamp(&mut resp);
        let status = resp.status().as_u16();
        tracing::debug!(route = %route, method = %method, status, elapsed_us = started.elapsed().as_micros() as u64, "request");
        self.timer(route, method, status)
            .observe(started.elapsed().as_secs_f64());
        resp
    }

    /// Adds the protocol, version and log id headers to `resp`.
    fn stamp(&self, resp: &mut Response) {
        let h = resp.headers_mut();
        h.insert(COORD_PROTOCOL, self.stamp.protocol.clone());
        h.insert(COORD_VERSION, self.stamp.version.clone());
        if let Some(v) = &self.stamp.log_id {
            h.insert(COORD_LOG_ID, v.clone());
        }
    }

    /// The request-duration histogram of one route, method and status
    /// (a handle to the series, which it creates if new).
    fn timer(&self, route: String, method: String, status: u16) -> Histogram {
        self.metrics
            .requests
            .get_or_create(&coord_engine::metrics::RequestLabels {
                route,
                method,
                status: status.to_string(),
            })
            .clone()
    }
}

/// Who may ask for a write.
pub(crate) enum Auth<'a> {
    /// Anyone who can reach the socket.
    Anyone,
    /// The session's own token (`Authorization: Bearer`).
    Session(&'a str),
    /// The session's token when one is named (`from_session`), else anyone.
    MaybeSession(Option<&'a str>),
    /// The admin token (`force`).
    Admin,
}

impl Auth<'_> {
    /// Checks the request's credentials.
    pub(crate) async fn check<L: EventLog + Clone>(
        &self,
        app: &App<L>,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        match self {
            Auth::Anyone | Auth::MaybeSession(None) => Ok(()),
            Auth::Session(id) | Auth::MaybeSession(Some(id)) => {
                require_session(app, headers, id).await
            }
            Auth::Admin => require_admin(app, headers),
        }
    }
}

/// The one path of a write: authenticate, hand the command to the writer,
/// wait for its commit.
///
/// # Errors
/// The authentication error, the state machine's rejection,
/// `store_unavailable` or `shutting_down`.
pub(crate) async fn submit<L: EventLog + Clone>(
    app: &App<L>,
    headers: &HeaderMap,
    auth: Auth<'_>,
    w: Write,
) -> Result<Committed, ApiError> {
    auth.check(app, headers).await?;
    Ok(app.writer.write(w).await?)
}

/// [`submit`], answered `{"seq":N}`: 201 when the write `creates`
/// something, else 200 (a replay is always 200 with `Coord-Replayed`).
pub(crate) async fn submit_seq<L: EventLog + Clone>(
    app: &App<L>,
    headers: &HeaderMap,
    auth: Auth<'_>,
    w: Write,
    creates: bool,
) -> ApiResult {
    let c = submit(app, headers, auth, w).await?;
    Ok(written(&c, creates, &WriteResponse { seq: c.seq }))
}

/// A write from the API: its idempotency key, source time and the
/// request digest its record is bound to (PROTOCOL §7).
pub(crate) fn write(
    cmd: Command,
    tx_id: Option<ulid::Ulid>,
    ts: Option<Timestamp>,
    digest: &Digest,
) -> Write {
    Write {
        cmd,
        source: coord_engine::writer::API.to_string(),
        tx_id,
        digest: digest.0.clone(),
        ts: ts.unwrap_or_else(Timestamp::now),
        extras: Extras::default(),
        reply: None,
    }
}

/// A write answer: 201 (`created`) or 200, `Coord-Replayed` on a replay.
pub(crate) fn written<T: serde::Serialize>(c: &Committed, created: bool, body: &T) -> Response {
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

pub(crate) fn ok<T: serde::Serialize>(body: &T) -> ApiResult {
    Ok(json_response(StatusCode::OK, body))
}

/// A long poll's sleep: returns once an event published after `head`
/// is `wanted`; `timeout()` once `deadline` passes first; `shutting_down`
/// when the daemon stops. Callers read the view again after it returns.
pub(crate) async fn until_event<L: EventLog + Clone>(
    app: &App<L>,
    head: u64,
    deadline: Instant,
    wanted: impl Fn(&Payload) -> bool,
    timeout: impl FnOnce() -> ApiError,
) -> Result<(), ApiError> {
    let stopping = || ApiError::new(ErrorCode::ShuttingDown, "the daemon is shutting down");
    let mut log = coord_engine::hub::LogCursor::new(&app.hub, app.store.clone(), head);
    loop {
        let batch = tokio::select! {
            r = log.next() => r.map_err(|e| ApiError::new(e.code(), format!("{e:?}")))?,
            _ = tokio::time::sleep_until(deadline.into()) => return Err(timeout()),
            _ = app.shutdown.cancelled() => return Err(stopping()),
        };
        let Some(batch) = batch else {
            return Err(stopping());
        };
        if batch.iter().any(|p| wanted(&p.event.payload)) {
            return Ok(());
        }
    }
}

pub(crate) fn check_id(field: &str, v: &str) -> Result<(), ApiError> {
    ids::check_id(v).map_err(|why| {
        ApiError::new(ErrorCode::InvalidId, format!("{field} {v:?} {why}")).with("field", field)
    })
}

pub(crate) fn duration(field: &str, ms: u64) -> Result<(), ApiError> {
    if ms > MAX_DURATION_MS {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("{field} is at most {MAX_DURATION_MS} ms"),
        )
        .with("field", field));
    }
    Ok(())
}
