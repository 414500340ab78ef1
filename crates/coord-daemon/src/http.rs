//! The HTTP edge: JSON bodies with precise errors, tokens, and error
//! answers. Everything a request carries is checked here or in coord-core
//! before it reaches the writer.

use crate::app::App;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coord_engine::tokens;
use coord_proto::{ErrorBody, ErrorCode, MAX_REQUEST_BYTES};
use coord_store::EventLog;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// An error answer: `{"error":{…}}` with the status of its code.
#[derive(Debug)]
pub struct ApiError(pub ErrorBody);

impl From<ErrorBody> for ApiError {
    fn from(b: ErrorBody) -> Self {
        ApiError(b)
    }
}

impl From<coord_engine::writer::WriteError> for ApiError {
    fn from(e: coord_engine::writer::WriteError) -> Self {
        ApiError(e.to_body())
    }
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ErrorBody::new(code, message))
    }

    /// Adds a code-specific field.
    pub fn with(self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        ApiError(self.0.with(key, value))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self
            .0
            .code()
            .map(|c| c.status())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = json_response(status, &self.0);
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1: a 401 MUST say how to authenticate.
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"coord\""),
            );
        }
        resp
    }
}

/// A JSON answer with a status.
pub fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON request body, parsed with coord's error codes: `bad_json`,
/// `unknown_field`, `invalid_field`, `body_too_large`,
/// `unsupported_media_type`. An empty body reads as `{}`. The second field
/// is the request's [`Digest`] when the body carries a `tx_id`.
pub struct JsonBody<T>(pub T, pub Digest);

/// What an idempotency record is bound to (PROTOCOL §7): SHA-256 (its
/// first 128 bits, in hex: the record carries it per event)
/// of the method, the path (with its parameters: the session, message or
/// order it names) and the body as canonical JSON (keys sorted, no
/// whitespace) without `ts`, the one field a retry may change. `None` for
/// a request without a `tx_id`, which leaves no record.
///
/// A write whose `tx_id` has a record with another digest is
/// `409 tx_id_reused`; a record made before digests existed matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digest(pub Option<String>);

impl Digest {
    /// The digest of `method path` with JSON `body`, if the body is an
    /// object with a `tx_id` (the caller has parsed it already, so it is
    /// valid JSON; anything else gives `None`).
    pub fn of(method: &str, path: &str, body: &[u8]) -> Digest {
        use sha2::{Digest as _, Sha256};
        // Cheap test first: most writes carry no tx_id.
        if !body.windows(7).any(|w| w == b"\"tx_id\"") {
            return Digest(None);
        }
        let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice(body) else {
            return Digest(None);
        };
        if !m.contains_key("tx_id") {
            return Digest(None);
        }
        m.remove("ts");
        // serde_json's map is ordered by key: the encoding is canonical.
        let canonical = serde_json::Value::Object(m).to_string();
        let mut h = Sha256::new();
        h.update(method.as_bytes());
        h.update(b" ");
        h.update(path.as_bytes());
        h.update(b"\n");
        h.update(canonical.as_bytes());
        Digest(Some(coord_engine::tokens::hex(&h.finalize()[..16])))
    }
}

impl<T: DeserializeOwned> JsonBody<T> {
    /// Refuses a `Content-Type` that is not JSON (`unsupported_media_type`);
    /// none at all is JSON.
    pub(crate) fn check_type(headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE) {
            let ct = media_type(ct);
            // curl -d sends a form type by default; a JSON body under it is
            // still accepted so the documented one-liners work.
            let ok = matches!(
                ct.as_str(),
                "application/json" | "application/x-www-form-urlencoded" | ""
            );
            if !ok {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("content-type {ct:?}: send application/json"),
                ));
            }
        }
        Ok(())
    }

    /// Parses a body read whole (an empty one reads as `{}`), with the
    /// digest of `method` and `path` over it.
    pub(crate) fn parse(method: &str, path: &str, bytes: &[u8]) -> Result<Self, ApiError> {
        let bytes = Self::or_empty_object(bytes);
        let body = parse_json(bytes)?;
        Ok(JsonBody(body, Digest::of(method, path, bytes)))
    }

    fn or_empty_object(bytes: &[u8]) -> &[u8] {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            bytes
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        Self::check_type(req.headers())?;
        let timeout = body_timeout(&req);
        let budget = body_budget(&req);
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let bytes = read_body_up_to(req.into_body(), MAX_REQUEST_BYTES, timeout, budget).await?;
        Self::parse(&method, &path, &bytes)
    }
}

/// The media type of a `Content-Type` value (RFC 9110 §8.3.1): what comes
/// before any `;` parameter, trimmed and lowercased, compared whole — so
/// `application/jsonfoo` is not `application/json`. A value that is not
/// visible ASCII comes back as itself escaped, which matches no type.
pub(crate) fn media_type(v: &axum::http::HeaderValue) -> String {
    match v.to_str() {
        Ok(s) => s
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
        Err(_) => format!("{:?}", v.as_bytes()),
    }
}

/// An NDJSON body (`POST /v1/events/batch`) of at most
/// [`coord_proto::MAX_BATCH_BYTES`], unparsed.
pub struct NdjsonBody(pub Vec<u8>);

impl<S: Send + Sync> FromRequest<S> for NdjsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(axum::http::header::CONTENT_TYPE) {
            let ct = media_type(ct);
            let ok = matches!(
                ct.as_str(),
                "application/x-ndjson"
                    | "application/jsonl"
                    | "text/plain"
                    | "application/json"
                    | "application/x-www-form-urlencoded"
                    | ""
            );
            if !ok {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("content-type {ct:?}: send application/x-ndjson"),
                ));
            }
        }
        let timeout = body_timeout(&req);
        let budget = body_budget(&req);
        read_body_up_to(
            req.into_body(),
            coord_proto::MAX_BATCH_BYTES,
            timeout,
            budget,
        )
        .await
        .map(NdjsonBody)
    }
}

/// Most bytes of an oversized body read (and dropped) before answering 413.
const DRAIN_LIMIT: usize = 16 << 20;

/// How long a request's body may take to arrive (the daemon's
/// `--body-timeout`), carried to the extractors as a request extension.
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeout(pub Duration);

/// When no [`BodyTimeout`] was set (a router built without the daemon).
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

fn body_timeout(req: &Request) -> Duration {
    req.extensions()
        .get::<BodyTimeout>()
        .map_or(DEFAULT_BODY_TIMEOUT, |t| t.0)
}

/// The bytes of request bodies the daemon holds at once while they arrive,
/// over every connection (`--body-memory-mib`, default 64 MiB): a body
/// whose next bytes do not fit is answered `503 overloaded`. Carried to
/// the extractors as a request extension; a router without it is
/// unbounded (tests of the handlers alone).
#[derive(Clone, Debug)]
pub struct BodyBudget {
    bytes: usize,
    left: std::sync::Arc<tokio::sync::Semaphore>,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes,
            left: std::sync::Arc::new(tokio::sync::Semaphore::new(bytes)),
        }
    }

    /// Takes `n` more bytes into `held`, or says the daemon is full.
    fn take(
        &self,
        n: usize,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<(), ApiError> {
        if n == 0 {
            return Ok(());
        }
        let Ok(n32) = u32::try_from(n) else {
            return Err(self.full());
        };
        match self.left.clone().try_acquire_many_owned(n32) {
            Ok(p) => {
                match held {
                    Some(h) => h.merge(p),
                    None => *held = Some(p),
                }
                Ok(())
            }
            Err(_) => Err(self.full()),
        }
    }

    fn full(&self) -> ApiError {
        ApiError::new(
            ErrorCode::Overloaded,
            format!(
                "the daemon is receiving {} MiB of request bodies, its --body-memory-mib; retry shortly",
                self.bytes >> 20
            ),
        )
        .with("limit", self.bytes)
    }
}

fn body_budget(req: &Request) -> Option<BodyBudget> {
    req.extensions().get::<BodyBudget>().cloned()
}

/// Reads a body of at most `limit` bytes (1 MiB for JSON, 16 MiB for a
/// batch). A larger one — or one refused by the budget — is read on and
/// dropped, up to [`DRAIN_LIMIT`], before the 413 (503) is answered:
/// closing a Unix socket with unread data resets it, and the client would
/// see `ECONNRESET` instead of the error.
async fn read_body_up_to(
    body: axum::body::Body,
    limit: usize,
    timeout: Duration,
    budget: Option<BodyBudget>,
) -> Result<Vec<u8>, ApiError> {
    // A body sent slowly holds a connection and its buffer: the whole body
    // must arrive within `timeout`, and its bytes count against the budget
    // of every body in flight while it does.
    tokio::time::timeout(timeout, read_body_within(body, limit, budget))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            )
            .with("timeout_ms", timeout.as_millis() as u64))
        })
}

async fn read_body_within(
    mut body: axum::body::Body,
    limit: usize,
    budget: Option<BodyBudget>,
) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request body is over {limit} bytes"),
        )
        .with("limit", limit)
    };
    // Sized once from the declared length (within the limit): a body
    // grown by doubling leaves a trail of freed buffers behind it. The
    // declared bytes are charged to the budget before they are allocated:
    // a head that declares 10 MB and sends 16 bytes holds 10 MB of the
    // budget, not 10 MB beside it.
    let declared = axum::body::HttpBody::size_hint(&body)
        .exact()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= limit)
        .unwrap_or(0);
    let mut held = None;
    let mut refused: Option<ApiError> = None;
    let mut charged = 0usize;
    if declared > 0 {
        match budget.as_ref().map(|b| b.take(declared, &mut held)) {
            Some(Err(e)) => refused = Some(e),
            _ => charged = declared,
        }
    }
    let mut buf = Vec::with_capacity(if refused.is_none() { declared } else { 0 });
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(ErrorCode::BadJson, format!("reading the body failed: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DRAIN_LIMIT.max(limit) {
            return Err(too_large());
        }
        if seen <= limit && refused.is_none() {
            let more = seen.saturating_sub(charged);
            charged += more;
            if let Some(Err(e)) = budget.as_ref().map(|b| b.take(more, &mut held)) {
                // Over budget: free what is held, drain the rest.
                refused = Some(e);
                buf = Vec::new();
                held = None;
                continue;
            }
            buf.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    if let Some(e) = refused {
        return Err(e);
    }
    Ok(buf)
}

/// Parses JSON into `T` with coord's error codes.
///
/// # Errors
/// `bad_json`, `unknown_field` or `invalid_field`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would accept a struct written as an array; the protocol does not.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let valid = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        return Err(ApiError::new(
            ErrorCode::BadJson,
            if valid {
                "body must be a JSON object".to_string()
            } else {
                format!(
                    "body is not valid JSON: {}",
                    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                )
            },
        ));
    }
    // The fast path: serde_path_to_error records every key it passes (an
    // allocation per key of a payload), which only an error needs. A body
    // that fails is parsed again, the same way, to name the failing field.
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    // serde_path_to_error names the field that failed as a path
    // (`ttl_ms`, `scope[2]`); serde's own message says what was wrong.
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // An unknown field fails at the object that holds it (path "."
        // for the top level); serde names it in the message only.
        let field = match (path.as_str(), backticked(&msg)) {
            (".", Some(named)) => named,
            (".", None) => String::new(),
            (p, _) => p.to_string(),
        };
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::new(ErrorCode::BadJson, format!("body is not valid JSON: {msg}"))
            }
            _ if msg.starts_with("unknown field") => {
                ApiError::new(ErrorCode::UnknownField, msg.clone()).with("field", field)
            }
            _ => ApiError::new(ErrorCode::InvalidField, msg.clone()).with("field", field),
        }
    })
}

fn backticked(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_string())
}

/// Query parameters decoded into `T`, with coord's error codes: a value of
/// the wrong type is `invalid_field` naming the parameter. Parameters `T`
/// does not know are ignored.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| {
                let field = e.path().to_string();
                let msg = e.into_inner().to_string();
                let field = if field == "." {
                    backticked(&msg).unwrap_or_default()
                } else {
                    field
                };
                ApiError::new(
                    ErrorCode::InvalidField,
                    format!("query parameter {field}: {msg}"),
                )
                .with("field", field)
            })
    }
}

/// A query flag: `true`, `1` or empty (`?snapshot`) is true; `false` or
/// `0` is false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> serde::Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "true" | "1" | "" => Ok(Flag(true)),
            "false" | "0" => Ok(Flag(false)),
            v => Err(serde::de::Error::custom(format!(
                "{v:?}: expected true or false"
            ))),
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim())
}

/// Checks that the request carries `session_id`'s token.
///
/// # Errors
/// `invalid_id`, `token_required`, `session_not_found`, `bad_token`.
pub async fn require_session<L: EventLog + Clone>(
    app: &App<L>,
    headers: &HeaderMap,
    session_id: &str,
) -> Result<(), ApiError> {
    coord_proto::ids::check_id(session_id).map_err(|why| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("session_id {session_id:?} {why}"),
        )
        .with("field", "session_id")
    })?;
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            ErrorCode::TokenRequired,
            format!(
                "acting for session {session_id} needs its token: send Authorization: Bearer <token> (the CLI reads COORD_SESSION_TOKEN)"
            ),
        ));
    };
    let stored = match app.tokens.get(session_id) {
        Some(h) => Some(h),
        None => {
            let loaded = app
                .store
                .attachment(&format!("token/{session_id}"))
                .await
                .map_err(|e| ApiError::new(ErrorCode::StoreUnavailable, e.to_string()))?
                .and_then(|b| String::from_utf8(b).ok());
            if let Some(h) = &loaded {
                app.tokens.put(session_id, h.clone());
            }
            loaded
        }
    };
    let Some(stored) = stored else {
        return Err(session_gone(app, session_id).await);
    };
    if !tokens::same(&tokens::hash(token), &stored) {
        return Err(ApiError::new(
            ErrorCode::BadToken,
            format!("the token is not session {session_id}'s"),
        )
        .with("session_id", session_id));
    }
    Ok(())
}

/// Checks the admin token (`Coord-Admin-Token`).
///
/// # Errors
/// `admin_required`.
pub fn require_admin<L: EventLog + Clone>(
    app: &App<L>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let given = headers
        .get("coord-admin-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if given.is_empty() || !tokens::same(given, &app.admin_token) {
        return Err(ApiError::new(
            ErrorCode::AdminRequired,
            format!(
                "force needs the admin token: send Coord-Admin-Token with the contents of {}",
                app.admin_token_path.display()
            ),
        ));
    }
    Ok(())
}

/// `session_not_found` for `session_id`, saying when and how it ended if
/// the daemon still remembers (PROTOCOL §6, recently ended sessions).
pub async fn session_gone<L: EventLog + Clone>(app: &App<L>, session_id: &str) -> ApiError {
    let sid = session_id.to_string();
    let ended = app
        .writer
        .read(move |s| s.ended_session(&sid).cloned())
        .await
        .ok()
        .flatten();
    let err = match ended {
        Some(e) => {
            let how = match e.reason {
                coord_proto::DeregReason::Expired => "its lease expired".to_string(),
                coord_proto::DeregReason::ProcessExited => match e.exit_code {
                    Some(c) => format!("its process exited with code {c}"),
                    None => "its process exited".to_string(),
                },
                coord_proto::DeregReason::Explicit => "it deregistered".to_string(),
                coord_proto::DeregReason::Forced => "an admin ended it".to_string(),
                coord_proto::DeregReason::Removed => "its legacy file was removed".to_string(),
                coord_proto::DeregReason::RuntimeGone => "its runtime is gone".to_string(),
                coord_proto::DeregReason::DaemonLost => {
                    "the daemon it registered with was lost".to_string()
                }
            };
            ApiError::new(
                ErrorCode::SessionNotFound,
                format!(
                    "session {session_id} ended at {} (seq {}): {how}; register again to continue",
                    e.ended_at, e.ended_seq
                ),
            )
            .with("ended_at", e.ended_at.to_string())
            .with("reason", serde_json::to_value(e.reason).unwrap_or_default())
        }
        None => ApiError::new(
            ErrorCode::SessionNotFound,
            format!("no live session {session_id}"),
        ),
    };
    err.with("session_id", session_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_proto::api::AcquireRequest;

    fn code(r: Result<AcquireRequest, ApiError>) -> String {
        r.err().map(|e| e.0.error.code).unwrap_or_default()
    }

    #[test]
    fn json_errors_are_precise() {
        assert_eq!(code(parse_json(b"{")), "bad_json");
        assert_eq!(code(parse_json(b"[1]")), "bad_json");
        assert_eq!(
            code(parse_json(br#"{"session_id":"a","resource":"r","x":1}"#)),
            "unknown_field"
        );
        assert_eq!(
            code(parse_json(br#"{"session_id":5,"resource":"r"}"#)),
            "invalid_field"
        );
        assert_eq!(code(parse_json(br#"{"resource":"r"}"#)), "invalid_field");
        let e = parse_json::<AcquireRequest>(br#"{"session_id":"a","resource":"r","wiat_ms":1}"#)
            .err()
            .map(|e| e.0);
        assert_eq!(
            e.and_then(|e| e.error.fields.get("field").cloned()),
            Some("wiat_ms".into())
        );
    }
}
