//! The bytes of a connection, below HTTP: hyper's own answers to requests
//! it cannot parse, made into the documented JSON errors (PROTOCOL §3).
//!
//! hyper answers a request it cannot parse (garbage bytes, a malformed or
//! duplicate `Content-Length`, a NUL in the path, a request line or headers
//! over its buffer) by itself, before any handler runs, with a bare status
//! and an empty body, then closes the connection. [`JsonErrors`] wraps the
//! socket and recognises that answer as it is written — a `400`, `414` or
//! `431` head with `content-length: 0` and no `content-type` (every answer
//! coord's handlers make has one) — and writes the JSON error in its place,
//! with hyper's `Date` and the `Coord-*` headers every answer carries
//! (PROTOCOL §1). Everything else passes through untouched, in the same
//! write calls.
//!
//! It must not buffer, reorder or inspect anything but the start of a write
//! that begins a response head.

use coord_proto::{ErrorBody, ErrorCode};
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The `Coord-Protocol`, `Coord-Version` and `Coord-Log-Id` header lines
/// of one daemon, made once: what a parse-error answer carries as every
/// other answer does.
#[derive(Clone, Debug)]
pub struct Stamp(std::sync::Arc<[u8]>);

impl Stamp {
    /// The header lines of a daemon serving the log `log_id` (a ULID; a
    /// value that is not a valid header value is left out, as the router's
    /// front leaves it out).
    pub fn new(log_id: &str) -> Self {
        let mut lines = format!(
            "coord-protocol: {}\r\ncoord-version: {}\r\n",
            coord_proto::PROTOCOL_VERSION,
            coord_proto::VERSION
        );
        if axum::http::HeaderValue::from_str(log_id).is_ok() {
            lines.push_str(&format!("coord-log-id: {log_id}\r\n"));
        }
        Stamp(lines.into_bytes().into())
    }
}

/// A socket whose hyper-made parse-error answers become JSON errors.
pub struct JsonErrors<S> {
    inner: S,
    stamp: Stamp,
    /// A replacement being written: its bytes, how many are written, and
    /// how many bytes of hyper's own answer it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> JsonErrors<S> {
    /// Wraps `inner`; replacements carry `stamp`.
    pub fn new(inner: S, stamp: Stamp) -> Self {
        JsonErrors {
            inner,
            stamp,
            pending: None,
        }
    }
}

/// The JSON answer that replaces hyper's bare one in `head`, if `head` is
/// one (see the module comment), stamped with `stamp`.
pub(crate) fn replacement(head: &[u8], stamp: &Stamp) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let (code, message) = match rest.get(..3)? {
        b"400" => (
            ErrorCode::BadRequest,
            "the request is not valid HTTP/1.1: a malformed request line or header, a \
             Content-Length that is not one number (or two that disagree), or a control \
             character in the path",
        ),
        b"414" => (
            ErrorCode::UriTooLong,
            "the request target is longer than the daemon reads",
        ),
        b"431" => (
            ErrorCode::HeadersTooLarge,
            "the request line and headers are longer than the daemon reads",
        ),
        _ => return None,
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let lower = head[..end].to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    if has(b"\r\ncontent-type:") || !has(b"\r\ncontent-length: 0") {
        return None;
    }
    let mut body = serde_json::to_vec(&ErrorBody::new(code, message)).ok()?;
    body.push(b'\n');
    let status = code.status();
    let reason = match status {
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&stamp.0);
    // hyper's own `Date` (RFC 9110 §6.6.1: an origin server with a clock
    // MUST send it), kept as hyper wrote it.
    if let Some(date) = head[..end]
        .split(|b| *b == b'\n')
        .find(|l| l.len() > 5 && l[..5].eq_ignore_ascii_case(b"date:"))
    {
        out.extend_from_slice(date.strip_suffix(b"\r").unwrap_or(date));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Some(out)
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes the pending replacement to the end; then reports `claim`
    /// bytes of the caller's buffer written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        while let Some((bytes, done, claim)) = self.pending.as_mut() {
            if *done == bytes.len() {
                let claim = *claim;
                self.pending = None;
                return Poll::Ready(Ok(claim));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            *done += n;
        }
        Poll::Ready(Ok(0))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.pending.is_none() {
            if !buf.starts_with(b"HTTP/1.1 4") {
                return Pin::new(&mut self.inner).poll_write(cx, buf);
            }
            match replacement(buf, &self.stamp) {
                Some(r) => self.pending = Some((r, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.drain(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.pending.is_none() {
            let mut live = bufs.iter().filter(|b| !b.is_empty());
            let first = live.next();
            // hyper's bare answer is one head and nothing else.
            let candidate = match first {
                Some(b) if b.starts_with(b"HTTP/1.1 4") && live.next().is_none() => {
                    replacement(b, &self.stamp).map(|r| (r, b.len()))
                }
                _ => None,
            };
            match candidate {
                Some((r, len)) => self.pending = Some((r, 0, len)),
                None => return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            }
        }
        self.drain(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.pending.is_some() {
            ready!(self.drain(cx))?;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.pending.is_some() {
            ready!(self.drain(cx))?;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_parse_error_head_is_replaced() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 10:00:00 GMT\r\n\r\n";
        let stamp = Stamp::new("01KB0000000000000000000000");
        let r = replacement(bare, &stamp).expect("replaced");
        let text = String::from_utf8(r).expect("utf8");
        assert!(text.contains("content-type: application/json"), "{text}");
        // RFC 9110 §6.6.1 and PROTOCOL §1: Date and the Coord-* headers.
        assert!(
            text.contains("\r\ndate: Mon, 23 Nov 2026 10:00:00 GMT\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\ncoord-protocol: 1\r\n"), "{text}");
        assert!(
            text.contains("\r\ncoord-log-id: 01KB0000000000000000000000\r\n"),
            "{text}"
        );
        let body = text.split("\r\n\r\n").nth(1).expect("body");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "bad_request");
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("length");
        assert_eq!(len, body.len());

        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(String::from_utf8(replacement(big, &stamp).expect("431"))
            .expect("utf8")
            .contains("headers_too_large"));
        // coord's own errors carry a content type; other statuses pass.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(ours, &stamp).is_none());
        assert!(replacement(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            &stamp
        )
        .is_none());
        // A head followed by a body is not hyper's bare answer.
        assert!(replacement(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx",
            &stamp
        )
        .is_none());
    }
}
