//! A typed async client for the coord daemon's HTTP API over its Unix
//! socket (`docs/PROTOCOL.md`).
//!
//! [`Client`] has one method per endpoint; [`EventStream`] reads the NDJSON
//! events stream item by item. Every request sends `Coord-Protocol`, and
//! every answer's `Coord-Protocol` is checked, so a version mismatch is a
//! [`ClientError::Protocol`] and not an obscure decode error.
//!
//! The client opens one connection per request (a Unix-socket connect costs
//! microseconds) and holds no state besides the socket path and tokens.
//! It must not interpret the view or retry writes on its own.
#![deny(missing_docs)]

mod approvals;
mod served;

pub use coord_proto::render_event;
pub use served::{read_served, served_path, Served};

use bytes::Bytes;
use coord_proto::api::*;
use coord_proto::view::{Message, Order};
use coord_proto::{ErrorBody, ErrorCode, PROTOCOL_VERSION};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers on the socket.
    // The OS error is part of the message and deliberately not a
    // `source`, so an error chain prints it once.
    #[error("cannot reach the coord daemon at {socket}: {os_error} (start it with `coord daemon`, or point --socket / COORD_SOCKET at it)")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The OS error.
        os_error: std::io::Error,
    },
    /// The daemon answered with an error body.
    #[error("{}: {}", .body.error.code, .body.error.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// The error.
        body: ErrorBody,
    },
    /// The daemon speaks another protocol version.
    #[error("daemon speaks protocol {daemon}, this coord speaks {PROTOCOL_VERSION}; use the coord binary that matches the daemon")]
    Protocol {
        /// The daemon's version.
        daemon: String,
    },
    /// The connection broke or the answer was not what the protocol says.
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    /// The protocol error code, for [`ClientError::Api`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { body, .. } => body.code(),
            _ => None,
        }
    }

    /// The daemon is not there: the connection was refused, or it was
    /// accepted and dropped by a daemon going down or coming up. What a
    /// caller that waits for the daemon (`--reconnect`) retries on; every
    /// other error is an answer.
    pub fn daemon_lost(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Transport(_)
        )
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// A client bound to a socket, optionally acting for a session.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    token: Option<String>,
    admin_token: Option<String>,
}

/// A successful answer with its metadata.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    /// HTTP status.
    pub status: u16,
    /// `Coord-Replayed: true`: the answer of an earlier identical write.
    pub replayed: bool,
    /// The body.
    pub body: T,
}

impl Client {
    /// A client for the daemon at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            token: None,
            admin_token: None,
        }
    }

    /// Sends `token` as `Authorization: Bearer` on every call.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Sends `token` as `Coord-Admin-Token` on every call.
    pub fn with_admin_token(mut self, token: Option<String>) -> Self {
        self.admin_token = token;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        accept: Option<&str>,
    ) -> Result<hyper::Response<Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|os_error| ClientError::Connect {
                socket: self.socket.clone(),
                os_error,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "coord")
            .header("coord-protocol", PROTOCOL_VERSION.to_string());
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(a) = accept {
            req = req.header(hyper::header::ACCEPT, a);
        }
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(t) = &self.admin_token {
            req = req.header("coord-admin-token", t.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Transport(format!("building request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Transport(format!("request failed: {e}")))?;
        if let Some(v) = resp.headers().get("coord-protocol") {
            let v = v.to_str().unwrap_or("?");
            if v != PROTOCOL_VERSION.to_string() {
                return Err(ClientError::Protocol {
                    daemon: v.to_string(),
                });
            }
        }
        Ok(resp)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer<T>> {
        let resp = self.send(method, path, body, None).await?;
        let status = resp.status();
        let replayed = resp
            .headers()
            .get("coord-replayed")
            .is_some_and(|v| v == "true");
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(format!("reading answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Transport(format!(
                "unexpected answer ({e}): {}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        Ok(Answer {
            status: status.as_u16(),
            replayed,
            body,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.call(Method::GET, path, None).await?.body)
    }

    async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Answer<T>> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ClientError::Transport(format!("encoding request: {e}")))?;
        self.call(Method::POST, path, Some(bytes)).await
    }

    /// `GET /v1/status`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn status(&self) -> Result<StatusResponse> {
        self.get("/v1/status").await
    }

    /// `POST /v1/sessions`.
    ///
    /// # Errors
    /// See [`ClientError`]; `session_exists`, `no_such_process`, …
    pub async fn register(&self, req: &RegisterRequest) -> Result<Answer<RegisterResponse>> {
        self.post("/v1/sessions", req).await
    }

    /// `GET /v1/sessions`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn sessions(&self) -> Result<SessionsResponse> {
        self.get("/v1/sessions").await
    }

    /// `GET /v1/sessions?ended=true`: live sessions and the recently ended
    /// ones with how each ended.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn sessions_with_ended(&self) -> Result<SessionsResponse> {
        self.get("/v1/sessions?ended=true").await
    }

    /// `GET /v1/sessions/{id}`.
    ///
    /// # Errors
    /// See [`ClientError`]; `session_not_found`.
    pub async fn session(&self, id: &str) -> Result<SessionDetail> {
        self.get(&format!("/v1/sessions/{}", enc(id))).await
    }

    /// `POST /v1/sessions/{id}/heartbeat` (token).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn heartbeat(
        &self,
        id: &str,
        req: &HeartbeatRequest,
    ) -> Result<Answer<HeartbeatResponse>> {
        self.post(&format!("/v1/sessions/{}/heartbeat", enc(id)), req)
            .await
    }

    /// `POST /v1/sessions/{id}/dereg` (token, or admin with `force`).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn dereg(&self, id: &str, req: &DeregRequest) -> Result<Answer<WriteResponse>> {
        self.post(&format!("/v1/sessions/{}/dereg", enc(id)), req)
            .await
    }

    /// `POST /v1/sessions/{id}/report` (the child's token): a report to
    /// its parent.
    ///
    /// # Errors
    /// See [`ClientError`]; `not_child`, `session_not_found`.
    pub async fn report(&self, id: &str, req: &ReportRequest) -> Result<Answer<WriteResponse>> {
        self.post(&format!("/v1/sessions/{}/report", enc(id)), req)
            .await
    }

    /// `POST /v1/locks/delegate` (the parent's token).
    ///
    /// # Errors
    /// See [`ClientError`]; `not_child`, `lock_not_held`, `lock_held`.
    pub async fn delegate(&self, req: &DelegateRequest) -> Result<Answer<WriteResponse>> {
        self.post("/v1/locks/delegate", req).await
    }

    /// `POST /v1/locks/acquire` (token). Waits up to `req.wait_ms`.
    ///
    /// # Errors
    /// See [`ClientError`]; `lock_held`, `timeout`.
    pub async fn acquire(&self, req: &AcquireRequest) -> Result<Answer<AcquireResponse>> {
        self.post("/v1/locks/acquire", req).await
    }

    /// `POST /v1/locks/release` (token, or admin with `force`).
    ///
    /// # Errors
    /// See [`ClientError`]; `lock_not_held`, `not_owner`.
    pub async fn release(&self, req: &ReleaseRequest) -> Result<Answer<WriteResponse>> {
        self.post("/v1/locks/release", req).await
    }

    /// `GET /v1/locks`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn locks(&self) -> Result<LocksResponse> {
        self.get("/v1/locks").await
    }

    /// `GET /v1/locks?covering=…`: only the locks whose resource covers
    /// one of `paths` (PROTOCOL §7.1; at most 64 paths).
    ///
    /// # Errors
    /// See [`ClientError`]; `invalid_field` for more than 64 paths or a
    /// path that is not a valid resource.
    pub async fn locks_covering(&self, paths: &[String]) -> Result<LocksResponse> {
        let params: Vec<(&str, &str)> = paths.iter().map(|p| ("covering", p.as_str())).collect();
        let q = query(&params)?;
        self.get(&format!("/v1/locks?{q}")).await
    }

    /// `GET /v1/locks/check`: is fencing token `token` (issued by the log
    /// `log_id`, when known) still a current grant of `resource`?
    ///
    /// # Errors
    /// See [`ClientError`]; `invalid_id` for a bad resource.
    pub async fn check_lock(
        &self,
        resource: &str,
        token: u64,
        log_id: Option<&str>,
    ) -> Result<LockCheckResponse> {
        let token = token.to_string();
        let mut params = vec![("resource", resource), ("token", token.as_str())];
        if let Some(l) = log_id {
            params.push(("log_id", l));
        }
        let q = query(&params)?;
        self.get(&format!("/v1/locks/check?{q}")).await
    }

    /// `POST /v1/inbox/{to}`.
    ///
    /// # Errors
    /// See [`ClientError`]; `session_not_found`, `message_too_large`.
    pub async fn send_message(&self, to: &str, req: &SendRequest) -> Result<Answer<SendResponse>> {
        self.post(&format!("/v1/inbox/{}", enc(to)), req).await
    }

    /// `GET /v1/inbox/{id}` (token).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn inbox(&self, id: &str) -> Result<InboxResponse> {
        self.get(&format!("/v1/inbox/{}", enc(id))).await
    }

    /// `GET /v1/inbox/{id}/{msg}` (token): the message with its body.
    ///
    /// # Errors
    /// See [`ClientError`]; `message_not_found`.
    pub async fn read_message(&self, id: &str, msg: &str) -> Result<Message> {
        self.get(&format!("/v1/inbox/{}/{}", enc(id), enc(msg)))
            .await
    }

    /// `POST /v1/inbox/{id}/{msg}/ack` (token).
    ///
    /// # Errors
    /// See [`ClientError`]; `message_not_found`.
    pub async fn ack_message(&self, id: &str, msg: &str) -> Result<Answer<WriteResponse>> {
        self.post(
            &format!("/v1/inbox/{}/{}/ack", enc(id), enc(msg)),
            &AckRequest::default(),
        )
        .await
    }

    /// `POST /v1/dispatch`.
    ///
    /// # Errors
    /// See [`ClientError`]; `order_exists`, `session_not_found`.
    pub async fn issue(&self, req: &IssueRequest) -> Result<Answer<IssueResponse>> {
        self.post("/v1/dispatch", req).await
    }

    /// `GET /v1/dispatch?assignee=&state=`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn orders(
        &self,
        assignee: Option<&str>,
        state: Option<&str>,
    ) -> Result<OrdersResponse> {
        let mut pairs = Vec::new();
        if let Some(a) = assignee {
            pairs.push(("assignee", a));
        }
        if let Some(s) = state {
            pairs.push(("state", s));
        }
        let q = query(&pairs)?;
        self.get(&format!("/v1/dispatch?{q}")).await
    }

    /// `GET /v1/dispatch/{id}`.
    ///
    /// # Errors
    /// See [`ClientError`]; `order_not_found`.
    pub async fn order(&self, id: &str) -> Result<Order> {
        self.get(&format!("/v1/dispatch/{}", enc(id))).await
    }

    /// `GET /v1/dispatch/next?assignee=&wait_ms=`.
    ///
    /// # Errors
    /// See [`ClientError`]; `timeout`.
    pub async fn next_order(&self, assignee: &str, wait_ms: u64) -> Result<Order> {
        let q = query(&[("assignee", assignee), ("wait_ms", &wait_ms.to_string())])?;
        self.get(&format!("/v1/dispatch/next?{q}")).await
    }

    /// `POST /v1/dispatch/{id}/ack` (assignee's token).
    ///
    /// # Errors
    /// See [`ClientError`]; `order_state`, `not_assignee`.
    pub async fn ack_order(&self, id: &str) -> Result<Answer<WriteResponse>> {
        self.post(
            &format!("/v1/dispatch/{}/ack", enc(id)),
            &AckRequest::default(),
        )
        .await
    }

    /// `POST /v1/dispatch/{id}/complete` (assignee's token).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn complete_order(
        &self,
        id: &str,
        req: &CompleteRequest,
    ) -> Result<Answer<WriteResponse>> {
        self.post(&format!("/v1/dispatch/{}/complete", enc(id)), req)
            .await
    }

    /// `POST /v1/dispatch/{id}/cancel` (the issuer's token, or the admin
    /// token without `session_id`).
    ///
    /// # Errors
    /// See [`ClientError`]; `order_not_found`, `not_owner`.
    pub async fn cancel_order(
        &self,
        id: &str,
        req: &CancelOrderRequest,
    ) -> Result<Answer<WriteResponse>> {
        self.post(&format!("/v1/dispatch/{}/cancel", enc(id)), req)
            .await
    }

    /// `POST /v1/dispatch/{id}/reassign` (the issuer's token, or the admin
    /// token without `session_id`).
    ///
    /// # Errors
    /// See [`ClientError`]; `order_not_found`, `not_owner`,
    /// `session_not_found` (the new assignee), `order_state` (already its).
    pub async fn reassign_order(
        &self,
        id: &str,
        req: &ReassignOrderRequest,
    ) -> Result<Answer<WriteResponse>> {
        self.post(&format!("/v1/dispatch/{}/reassign", enc(id)), req)
            .await
    }

    /// `POST /v1/events`: publish an `x.*` event.
    ///
    /// # Errors
    /// See [`ClientError`]; `unknown_kind`.
    pub async fn publish(&self, req: &CustomEventRequest) -> Result<Answer<WriteResponse>> {
        self.post("/v1/events", req).await
    }

    /// `POST /v1/admin/export` (admin token): writes the view into a
    /// legacy root once; answers what was written, removed and unchanged.
    ///
    /// # Errors
    /// See [`ClientError`]; `admin_required`.
    pub async fn export_legacy(&self, root: &Path) -> Result<ExportResponse> {
        Ok(self
            .post(
                "/v1/admin/export",
                &ExportRequest {
                    legacy_root: root.to_string_lossy().into_owned(),
                },
            )
            .await?
            .body)
    }

    /// `POST /v1/events/batch`: `ndjson` holds one custom-event request per
    /// line; all are appended in one commit or none is.
    ///
    /// # Errors
    /// See [`ClientError`]; a bad line is `400` naming it (`line`).
    pub async fn publish_batch(
        &self,
        ndjson: Vec<u8>,
    ) -> Result<Answer<coord_proto::api::BatchResponse>> {
        self.call(Method::POST, "/v1/events/batch", Some(ndjson))
            .await
    }

    /// `POST /v1/ui/login` (needs the admin token): a one-time login URL
    /// for the web dashboard.
    ///
    /// # Errors
    /// See [`ClientError`]; `not_found` when the daemon serves no
    /// dashboard.
    pub async fn ui_login(&self) -> Result<coord_proto::api::UiLoginResponse> {
        Ok(self
            .post("/v1/ui/login", &serde_json::json!({}))
            .await?
            .body)
    }

    /// `POST /v1/ui/revoke` (needs the admin token): ends the dashboard
    /// login `viewer` (`*`: every login).
    ///
    /// # Errors
    /// See [`ClientError`]; `not_found` when the daemon serves no
    /// dashboard.
    pub async fn ui_revoke(&self, viewer: &str) -> Result<coord_proto::api::UiRevokeResponse> {
        Ok(self
            .post(
                "/v1/ui/revoke",
                &coord_proto::api::UiRevokeRequest {
                    viewer: viewer.to_string(),
                },
            )
            .await?
            .body)
    }

    /// `GET /v1/snapshot`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn snapshot(&self) -> Result<Snapshot> {
        self.get("/v1/snapshot").await
    }

    /// `GET /v1/events?…`: opens the NDJSON stream.
    ///
    /// # Errors
    /// See [`ClientError`]; `compacted`, `bad_cursor`.
    pub async fn events(&self, q: &EventsQuery) -> Result<EventStream> {
        let q = query(q)?;
        let resp = self
            .send(Method::GET, &format!("/v1/events?{q}"), None, None)
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            return Err(api_error(status, &bytes));
        }
        let log_id = resp
            .headers()
            .get("coord-log-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(EventStream::new(resp.into_body(), log_id))
    }
}

fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            body,
        },
        Err(_) => ClientError::Transport(format!(
            "daemon answered {status} without an error body: {}",
            String::from_utf8_lossy(bytes)
        )),
    }
}

/// Where a daemon on `socket` keeps its admin token:
/// `<socket>.admin-token` (mode 0600, PROTOCOL §4). The daemon writes it
/// there; the CLI and a child daemon's forwarder read it from there.
pub fn admin_token_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".admin-token");
    PathBuf::from(p)
}

/// Exponential backoff between retries: `first`, doubling up to `max`.
/// The one retry pacing of coord (the lifecycle manager's store retries,
/// the CLI's reconnects).
#[derive(Debug, Clone)]
pub struct Backoff {
    next: std::time::Duration,
    first: std::time::Duration,
    max: std::time::Duration,
}

impl Backoff {
    /// Starts at `first`, never waits longer than `max`.
    pub fn new(first: std::time::Duration, max: std::time::Duration) -> Self {
        Backoff {
            next: first,
            first,
            max,
        }
    }

    /// The pause before the next attempt (and doubles the one after).
    pub fn next_delay(&mut self) -> std::time::Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `first` after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// A query string (without `?`) from pairs or a struct.
fn query<T: serde::Serialize + ?Sized>(q: &T) -> Result<String> {
    serde_urlencoded::to_string(q)
        .map_err(|e| ClientError::Transport(format!("encoding the query: {e}")))
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'@' | b'*' | b',')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Longest NDJSON line accepted from the daemon (a snapshot of a large
/// view is one line), bytes.
const MAX_LINE: usize = 256 << 20;

type Lines = tokio_util::codec::FramedRead<
    tokio_util::io::StreamReader<
        std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>>,
        Bytes,
    >,
    tokio_util::codec::LinesCodec,
>;

/// An open events stream: one [`StreamItem`] per NDJSON line.
pub struct EventStream {
    lines: Lines,
    log_id: Option<String>,
}

/// One raw line of the stream and what it decodes to.
#[derive(Debug, Clone)]
pub struct Line {
    /// The JSON line as the daemon sent it (no newline).
    pub raw: Bytes,
    /// The decoded item, or the error line the daemon ended the stream with.
    pub item: std::result::Result<StreamItem, ErrorBody>,
}

impl EventStream {
    fn new(body: Incoming, log_id: Option<String>) -> Self {
        use futures_util::TryStreamExt;
        let data: std::pin::Pin<
            Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>,
        > = Box::pin(body.into_data_stream().map_err(std::io::Error::other));
        let lines = tokio_util::codec::FramedRead::new(
            tokio_util::io::StreamReader::new(data),
            tokio_util::codec::LinesCodec::new_with_max_length(MAX_LINE),
        );
        EventStream { lines, log_id }
    }

    /// The identity of the log this stream reads (`Coord-Log-Id`).
    pub fn log_id(&self) -> Option<&str> {
        self.log_id.as_deref()
    }

    /// The next line; `None` when the daemon ended the stream.
    ///
    /// # Errors
    /// [`ClientError::Transport`] for a broken connection or a line that
    /// does not decode.
    pub async fn next(&mut self) -> Result<Option<Line>> {
        use futures_util::StreamExt;
        let Some(text) = self.lines.next().await else {
            return Ok(None);
        };
        let text = text.map_err(|e| ClientError::Transport(format!("stream broke: {e}")))?;
        if text.starts_with("{\"error\"") {
            let body: ErrorBody = serde_json::from_str(&text)
                .map_err(|e| ClientError::Transport(format!("bad error line: {e}")))?;
            return Ok(Some(Line {
                raw: Bytes::from(text),
                item: Err(body),
            }));
        }
        let item = StreamItem::from_line(&text)
            .map_err(|e| ClientError::Transport(format!("bad stream line: {e}")))?;
        Ok(Some(Line {
            raw: Bytes::from(text),
            item: Ok(item),
        }))
    }
}
