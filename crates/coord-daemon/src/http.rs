//! The HTTP edge: JSON bodies with precise errors, tokens, and error
//! answers. Everything a request carries is checked here or in coord-core
//! before it reaches the writer.

use crate::app::App;
use crate::tokens;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
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

impl From<crate::writer::WriteError> for ApiError {
    fn from(e: crate::writer::WriteError) -> Self {
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
        json_response(status, &self.0)
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
/// `unsupported_media_type`. An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(axum::http::header::CONTENT_TYPE) {
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
        let timeout = body_timeout(&req);
        let bytes = read_body(req.into_body(), timeout).await?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_json(bytes).map(JsonBody)
    }
}

/// The media type of a `Content-Type` value (RFC 9110 §8.3.1): what comes
/// before any `;` parameter, trimmed and lowercased, compared whole — so
/// `application/jsonfoo` is not `application/json`. A value that is not
/// visible ASCII comes back as itself escaped, which matches no type.
fn media_type(v: &axum::http::HeaderValue) -> String {
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
        read_body_up_to(req.into_body(), coord_proto::MAX_BATCH_BYTES, timeout)
            .await
            .map(NdjsonBody)
    }
}

/// Most bytes of an oversized body read (and dropped) before answering 413.
const DRAIN_LIMIT: usize = 16 << 20;

/// Reads a body of at most [`MAX_REQUEST_BYTES`]. A larger one is read on
/// and dropped, up to [`DRAIN_LIMIT`], before the 413 is answered: closing
/// a Unix socket with unread data resets it, and the client would see
/// `ECONNRESET` instead of the error.
async fn read_body(body: axum::body::Body, timeout: Duration) -> Result<Vec<u8>, ApiError> {
    read_body_up_to(body, MAX_REQUEST_BYTES, timeout).await
}

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

/// [`read_body`] with another limit.
async fn read_body_up_to(
    body: axum::body::Body,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, ApiError> {
    // A body sent slowly holds a connection and its buffer: the whole body
    // must arrive within `timeout`.
    tokio::time::timeout(timeout, read_body_within(body, limit))
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

async fn read_body_within(mut body: axum::body::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request body is over {limit} bytes"),
        )
        .with("limit", limit)
    };
    let mut buf = Vec::new();
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
        if seen <= limit {
            buf.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(too_large());
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
