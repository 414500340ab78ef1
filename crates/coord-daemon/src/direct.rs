//! Event streams and appends served straight on the client's socket,
//! beside hyper.
//!
//! Why: fanning one event out to 10,000 subscribers, hyper's connection
//! machinery — its dispatcher polling the response body, the body's
//! adapters, its write queue, the chunk encoder — was the largest part of
//! the daemon's user-space CPU per subscriber (docs/BENCHMARKS.md,
//! "Fan-out"). A live stream needs none of it: after the head it is one
//! chunk per batch of events. An append (`POST /v1/events`) is the write
//! path's one request: served here, it costs no dispatcher either.
//!
//! What: a connection on the daemon's socket is read here first. When a
//! request read is a whole `GET /v1/events` head asking for NDJSON (no
//! body, HTTP/1.1, not Server-Sent Events), it is passed through the same
//! router as any other — so it gets the same checks, errors, headers and
//! metrics. The events handler, finding a [`StreamSlot`] on the request,
//! leaves its subscription there instead of in the response body; this
//! module writes the head and then the stream in HTTP/1.1 chunked coding,
//! one `writev` per batch; once the stream has caught up it parks in its
//! thread's fan-out lane ([`crate::lane`]), which writes the next events
//! for it. A stream that ends (`follow=false`, or the daemon stopping)
//! ends with the last chunk, and the connection goes on as before. An
//! append read whole (head and body) goes to [`Appends`], which takes it
//! through the router's steps for that one route without the router
//! itself, and its answer is written with its `content-length`. Any other
//! request — and everything after it on that connection — is hyper's,
//! which reads first what was read here of it.
//!
//! It must not decide anything about a request (the router and
//! [`Appends`] do), and it must not lose or reorder a byte: what a client
//! sent behind a request is the next request, served after it, here or by
//! hyper.

use crate::api::{Appends, DirectStream};
use crate::coarse_timer::CoarseTimer;
use crate::lane::Back;
use crate::socket::ClientSocket;
use crate::stop::Stop;
use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Response, Version};
use coord_store::EventLog;
use http_body_util::BodyExt;
use hyper_util::service::TowerToHyperService;
use std::any::Any;
use std::future::Future;
use std::io::{self, IoSlice, Write as _};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most of a request read at once, bytes: a request this module
/// serves must arrive whole within it; a longer one (or one not all there
/// yet) is hyper's to read.
const READ_BYTES: usize = 4 << 10;
/// The most header lines parsed; more, and the request is hyper's.
const MAX_HEADERS: usize = 32;

/// Where the events handler leaves a live stream for the connection to
/// write itself (see the module docs). Put on a request only by
/// [`serve_client`]; cloning shares the slot.
#[derive(Clone, Default)]
pub(crate) struct StreamSlot(Arc<Mutex<Option<Box<dyn Any + Send>>>>);

impl StreamSlot {
    /// Leaves `stream` for the connection.
    pub(crate) fn put<T: Any + Send>(&self, stream: T) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(Box::new(stream));
        }
    }

    /// What the handler left, if it left a `T`.
    fn take<T: Any>(&self) -> Option<T> {
        let boxed = self.0.lock().ok()?.take()?;
        boxed.downcast::<T>().ok().map(|b| *b)
    }
}

/// A request this module serves: the request (its body, an append's, is
/// `body`), the bytes it takes on the socket (head and body), whether the
/// client asked to close the connection after it, and which kind it is.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) request: Request<Body>,
    pub(crate) body: bytes::Bytes,
    pub(crate) len: usize,
    pub(crate) close: bool,
    pub(crate) append: bool,
}

/// The request that starts `buf` (what was read of the connection), when
/// it is one this module serves:
///
/// - a complete `GET /v1/events` head of HTTP/1.1 with no body, no
///   `Expect` or `Upgrade`, and no `Accept` naming `text/event-stream`
///   (an event stream; `len` is the head's);
/// - a complete `POST /v1/events` of HTTP/1.1 (an append) whose
///   `Content-Length` body is all in `buf`, with no `Transfer-Encoding`,
///   `Expect` or `Upgrade` (`len` is the head's and the body's).
///
/// `None` leaves the request to hyper, which also answers every malformed
/// one.
pub(crate) fn parse_head(buf: &[u8]) -> Option<Head> {
    // Most connections carry something else: decided without parsing.
    let append = if buf.starts_with(b"GET /v1/events") {
        false
    } else if buf.starts_with(b"POST /v1/events") {
        true
    } else {
        return None;
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    if req.version != Some(1) {
        return None;
    }
    let target = req.path?;
    if target.split('?').next() != Some("/v1/events") {
        return None;
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = if append { Method::POST } else { Method::GET };
    *request.uri_mut() = target.parse().ok()?;
    *request.version_mut() = Version::HTTP_11;
    // Filled in place rather than through `Request::builder`, whose
    // per-header `Result` chain cost about as much as the parse itself
    // (callgrind, docs/BENCHMARKS.md, "The write path"); a name or value
    // it would refuse is refused here too.
    let headers = request.headers_mut();
    headers.reserve(req.headers.len());
    let mut close = false;
    let mut length: Option<usize> = None;
    let mut hosts = 0;
    // Names and values compared in place: this runs once per append.
    let is = |name: &str, want: &str| name.eq_ignore_ascii_case(want);
    for h in req.headers.iter() {
        let value = h.value.trim_ascii();
        if is(h.name, "content-length") {
            // One length, digits only (RFC 9110 §8.6); anything else is
            // hyper's to refuse.
            if length.is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return None;
            }
            length = Some(std::str::from_utf8(value).ok()?.parse().ok()?);
        } else if is(h.name, "transfer-encoding")
            || is(h.name, "expect")
            || is(h.name, "upgrade")
            || (!append && is(h.name, "accept") && names_event_stream(value))
        {
            return None;
        } else if is(h.name, "host") {
            hosts += 1;
        } else if is(h.name, "connection")
            && value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            close = true;
        }
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    // Not exactly one Host: the router's front refuses it (RFC 9112 §3.2).
    if hosts != 1 {
        return None;
    }
    let (body, len) = match (append, length.unwrap_or(0)) {
        (false, 0) => (bytes::Bytes::new(), len),
        (false, _) => return None,
        (true, n) => {
            let end = len.checked_add(n).filter(|&end| end <= buf.len())?;
            (bytes::Bytes::copy_from_slice(&buf[len..end]), end)
        }
    };
    Some(Head {
        request,
        body,
        len,
        close,
        append,
    })
}

/// Whether an `Accept` value names `text/event-stream`, in any case.
fn names_event_stream(accept: &[u8]) -> bool {
    const SSE: &[u8] = b"text/event-stream";
    accept
        .windows(SSE.len())
        .any(|w| w.eq_ignore_ascii_case(SSE))
}

/// Serves one connection on the daemon's socket: requests this module
/// takes (see the module docs) here, the rest of the connection from the
/// first other request on with hyper ([`crate::server::serve_http`]),
/// which is handed what was read of that request first. Before a
/// request's head arrives, `header_timeout` and the stop notice close the
/// connection, as hyper would.
pub(crate) async fn serve_client<L: EventLog + Clone>(
    stream: ClientSocket,
    svc: TowerToHyperService<axum::Router>,
    appends: Arc<Appends<L>>,
    stamp: crate::wire::Stamp,
    timer: &CoarseTimer,
    header_timeout: Duration,
    stop: Stop,
) {
    // Shared with the fan-out lane while a stream is parked there; owned
    // again whenever this task writes.
    let mut stream = Arc::new(stream);
    // What was read and not yet served: `buf[..filled]`. Kept from one
    // request to the next; let go while a stream is served with nothing
    // behind it (a parked subscriber holds no buffer).
    let mut buf = Vec::new();
    let mut filled = 0;
    // The header timeout's sleep, kept from one request to the next and
    // moved to each wait's deadline: deadlines are coarse (a tenth of the
    // timeout), so most moves change nothing, and a connection registers
    // with the shared timer about once per grain instead of per request
    // (docs/BENCHMARKS.md, "The write path"). Let go before anything but
    // an append is answered, so a long stream leaves no entry behind.
    let mut sleep: Option<std::pin::Pin<Box<dyn hyper::rt::Sleep>>> = None;
    loop {
        if filled == 0 {
            buf.resize(READ_BYTES, 0);
            let Ok(own) = owned(&mut stream) else { return };
            let deadline = std::time::Instant::now() + header_timeout;
            let timeout = match &mut sleep {
                Some(s) => {
                    hyper::rt::Timer::reset(timer, s, deadline);
                    s
                }
                None => sleep.insert(hyper::rt::Timer::sleep_until(timer, deadline)),
            };
            let read = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                r = own.read(&mut buf) => r,
                _ = timeout.as_mut() => return,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => filled = n,
            }
        }
        let Some(head) = parse_head(&buf[..filled]) else {
            break;
        };
        // Take the request out of the buffer; a request sent behind it
        // stays for the next turn.
        buf.copy_within(head.len..filled, 0);
        filled -= head.len;
        if !head.append {
            sleep = None;
            if filled == 0 {
                buf = Vec::new();
            }
        }
        if !answer::<L>(&mut stream, &svc, &appends, head, &stop, filled > 0).await {
            return;
        }
    }
    buf.truncate(filled);
    if let Ok(stream) = Arc::try_unwrap(stream) {
        let gone = stream
            .gone()
            .ok()
            .map(|g| Box::pin(g) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>);
        let stream = Rewound {
            read: bytes::Bytes::from(buf),
            stream,
        };
        crate::server::serve_http(
            stream,
            svc,
            stamp,
            timer,
            header_timeout,
            stop.watch(),
            gone,
        )
        .await;
    }
}

/// A connection handed to hyper with the bytes this module read of its
/// next request, which hyper reads first.
struct Rewound {
    read: bytes::Bytes,
    stream: ClientSocket,
}

impl tokio::io::AsyncRead for Rewound {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            let first = self.read.split_to(n);
            buf.put_slice(&first);
            return Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Rewound {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The socket for this task to write: no stream is parked in the lane, so
/// no one else holds it. Anything else is a broken invariant, which ends
/// the connection rather than interleave two writers' bytes.
fn owned(stream: &mut Arc<ClientSocket>) -> io::Result<&mut ClientSocket> {
    Arc::get_mut(stream)
        .ok_or_else(|| io::Error::other("the socket is still shared with the fan-out lane"))
}

/// Answers one request taken by [`serve_client`]; whether the connection
/// goes on.
async fn answer<L: EventLog + Clone>(
    stream: &mut Arc<ClientSocket>,
    svc: &TowerToHyperService<axum::Router>,
    appends: &Appends<L>,
    head: Head,
    stop: &Stop,
    sent_more: bool,
) -> bool {
    let Head {
        mut request,
        body,
        close,
        append,
        ..
    } = head;
    let slot = StreamSlot::default();
    let response = if append {
        appends.answer(request.headers(), &body).await
    } else {
        request.extensions_mut().insert(slot.clone());
        match hyper::service::Service::call(svc, request).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    };
    let mut out = head_of(&response, close);
    let body = response.into_body();
    match slot.take::<DirectStream<L>>() {
        Some(mut events) => {
            drop(body);
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            let Ok(own) = owned(stream) else { return false };
            if own.write_all(&out).await.is_err() {
                return false;
            }
            if !write_stream(stream, &mut events, stop, sent_more).await {
                return false;
            }
            drop(events);
            let Ok(own) = owned(stream) else { return false };
            if own.write_all(b"0\r\n\r\n").await.is_err() {
                return false;
            }
        }
        None => {
            let Ok(own) = owned(stream) else { return false };
            if !write_body(own, out, body).await {
                return false;
            }
        }
    }
    !close && !stop.token().is_cancelled()
}

/// The status line and headers of `response` (less its framing headers,
/// which the caller adds), a `Date`, and `connection: close` if asked.
fn head_of(response: &Response<Body>, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let status = response.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !response.headers().contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        http_date(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out
}

/// Appends the current time as an HTTP date (RFC 9110 §5.6.7), formatted
/// at most once a second per thread, as hyper does for its answers.
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(d.1.as_bytes());
    });
}

/// Writes an answer the router made whole (an error, in practice): with
/// `content-length` when its size is known, else chunked, frame by frame.
async fn write_body(stream: &mut ClientSocket, mut out: Vec<u8>, mut body: Body) -> bool {
    let size = axum::body::HttpBody::size_hint(&body).exact();
    if let Some(n) = size {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "content-length: {n}\r\n\r\n");
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    }
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            if size.is_some() {
                out.extend_from_slice(&data);
            } else {
                if stream.write_all(&out).await.is_err() {
                    return false;
                }
                out.clear();
                if write_chunk(stream, &data).await.is_err() {
                    return false;
                }
            }
        }
    }
    if size.is_none() {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    stream.write_all(&out).await.is_ok()
}

/// Writes the stream's chunks until it ends (`true`) or the client goes
/// away (`false`). Caught up, the stream parks in the fan-out lane, which
/// writes the next events for it ([`crate::lane`]); this task then only
/// waits for it to be handed back. While waiting it watches the socket: a
/// client that closed its end is let go at once rather than at the next
/// event's failed write.
async fn write_stream<L: EventLog + Clone>(
    stream: &mut Arc<ClientSocket>,
    events: &mut DirectStream<L>,
    stop: &Stop,
    mut sent_more: bool,
) -> bool {
    // A client that sent more (a pipelined request, maybe read already:
    // `sent_more`) or half-closed keeps the socket readable: stop watching
    // it then.
    // The lane runs on the thread's own scheduler: a runtime that may move
    // tasks between threads has no lane.
    let lane = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread;
    loop {
        if lane && !stop.token().is_cancelled() {
            let parked = events
                .parking(stream)
                .and_then(|p| crate::lane::park(events.hub(), p));
            if let Some((ticket, mut back)) = parked {
                let mut outcome = wait_parked(stream, &mut back, stop, &mut sent_more).await;
                // Out of the lane (if it has not handed the stream back),
                // so the socket is this task's again, going on after what
                // the lane sent: a stop must not repeat it.
                match ticket.withdraw() {
                    Some(after) => events.resume(after),
                    None if matches!(outcome, Parked::Stopping) => {
                        if let Ok(b) = back.try_recv() {
                            outcome = Parked::Back(b);
                        }
                    }
                    None => {}
                }
                match outcome {
                    Parked::Back(Back::From { after }) => events.resume(after),
                    Parked::Back(Back::Partial { after, rest }) => {
                        events.resume(after);
                        let Ok(own) = owned(stream) else { return false };
                        if own.write_all(&rest).await.is_err() {
                            return false;
                        }
                    }
                    Parked::Back(Back::Failed) | Parked::HungUp => return false,
                    Parked::Stopping => {}
                }
                continue;
            }
        }
        let mut next = std::pin::pin!(events.next_chunk());
        let chunk = std::future::poll_fn(|cx| {
            if let Poll::Ready(chunk) = next.as_mut().poll(cx) {
                return Poll::Ready(Some(chunk));
            }
            if !sent_more {
                match peer(stream, cx) {
                    Peer::Quiet => {}
                    Peer::Done => sent_more = true,
                    Peer::Gone => return Poll::Ready(None),
                }
            }
            Poll::Pending
        })
        .await;
        match chunk {
            None => return false,
            Some(None) => return true,
            Some(Some(chunk)) => {
                let Ok(own) = owned(stream) else { return false };
                if write_chunk(own, &chunk).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// What the client of a stream did, as far as its socket tells.
enum Peer {
    /// Nothing yet.
    Quiet,
    /// Nothing more to watch for: it sent a request behind the stream's
    /// (served after the stream) or closed only its sending side (it still
    /// reads).
    Done,
    /// It closed the connection, or the socket failed.
    Gone,
}

/// Polls the socket of a stream for what its client did.
fn peer(stream: &ClientSocket, cx: &mut std::task::Context<'_>) -> Peer {
    match stream.poll_peer(cx) {
        Poll::Pending => Peer::Quiet,
        Poll::Ready(Ok(n)) if n > 0 => Peer::Done,
        Poll::Ready(Ok(_)) if !stream.peer_gone() => Peer::Done,
        Poll::Ready(_) => Peer::Gone,
    }
}

/// How a parked stream's wait ended.
enum Parked {
    /// The lane handed it back.
    Back(Back),
    /// Its client closed the connection.
    HungUp,
    /// The daemon is stopping (or the lane's hub is gone).
    Stopping,
}

/// Waits while the stream is parked in the lane.
async fn wait_parked(
    stream: &Arc<ClientSocket>,
    back: &mut tokio::sync::oneshot::Receiver<Back>,
    stop: &Stop,
    sent_more: &mut bool,
) -> Parked {
    let mut stopping = std::pin::pin!(stop.cancelled());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = std::pin::Pin::new(&mut *back).poll(cx) {
            // A lane never lets a stream go without a word (it hands each
            // back with its position); a closed channel means its thread
            // is going away with the daemon.
            return Poll::Ready(r.map_or(Parked::Stopping, Parked::Back));
        }
        if stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Parked::Stopping);
        }
        if !*sent_more {
            match peer(stream, cx) {
                Peer::Quiet => {}
                Peer::Done => *sent_more = true,
                Peer::Gone => return Poll::Ready(Parked::HungUp),
            }
        }
        Poll::Pending
    })
    .await
}

/// Writes `data` as one chunk of HTTP/1.1 chunked coding (RFC 9112 §7.1):
/// its length in hex, CRLF, the data, CRLF — one `writev` unless the
/// socket takes only part.
async fn write_chunk(stream: &mut ClientSocket, data: &[u8]) -> io::Result<()> {
    let mut size = [0u8; 18];
    let size = crate::lane::chunk_size_line(data.len(), &mut size);
    let total = size.len() + data.len() + 2;
    let bufs = [
        IoSlice::new(size),
        IoSlice::new(data),
        IoSlice::new(b"\r\n"),
    ];
    let n = stream.write_vectored(&bufs).await?;
    if n == total {
        return Ok(());
    }
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    let mut rest = Vec::with_capacity(total);
    rest.extend_from_slice(size);
    rest.extend_from_slice(data);
    rest.extend_from_slice(b"\r\n");
    stream.write_all(&rest[n..]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Option<Head> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn takes_whole_ndjson_event_stream_heads() {
        let h = head("GET /v1/events?since=start&kinds=x.* HTTP/1.1\r\nhost: coord\r\naccept: application/x-ndjson\r\n\r\nPOST /v1/events HTTP/1.1\r\nhost: coord\r\n")
            .expect("an events head");
        assert_eq!(h.len, "GET /v1/events?since=start&kinds=x.* HTTP/1.1\r\nhost: coord\r\naccept: application/x-ndjson\r\n\r\n".len());
        assert_eq!(h.request.uri(), "/v1/events?since=start&kinds=x.*");
        assert_eq!(h.request.headers()["host"], "coord");
        assert!(!h.close);
        let h = head(
            "GET /v1/events HTTP/1.1\r\nhost: coord\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n",
        )
        .expect("an events head");
        assert!(h.close);
    }

    #[test]
    fn takes_whole_appends_with_their_body() {
        let one = "POST /v1/events HTTP/1.1\r\nHost: coord\r\nContent-Length: 2\r\n\r\n{}";
        let h = head(&format!(
            "{one}GET /v1/status HTTP/1.1\r\nhost: coord\r\n\r\n"
        ))
        .expect("an append");
        assert!(h.append);
        assert_eq!(
            h.len,
            one.len(),
            "the head and the body, not the next request"
        );
        assert_eq!(h.request.method(), Method::POST);
        assert_eq!(h.request.headers()["host"], "coord");
        assert_eq!(&h.body[..], b"{}");
        let h = head("POST /v1/events HTTP/1.1\r\nhost: coord\r\nconnection: close\r\n\r\n")
            .expect("no body");
        assert!(h.close);
        assert!(h.body.is_empty());
        let h = head("GET /v1/events HTTP/1.1\r\nhost: coord\r\n\r\n").expect("a stream");
        assert!(!h.append);
    }

    #[test]
    fn leaves_everything_else_to_hyper() {
        for s in [
            "GET /v1/events HTTP/1.1\r\nhost: coord\r\n",
            "GET /v1/events HTTP/1.0\r\nhost: coord\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\nhost: coord\r\nAccept: text/event-stream\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\nhost: coord\r\nAccept: application/json, Text/Event-Stream\r\n\r\n",
            "GET /v1/events/batch HTTP/1.1\r\nhost: coord\r\n\r\n",
            "GET /v1/eventsx HTTP/1.1\r\nhost: coord\r\n\r\n",
            "POST /v1/events HTTP/1.1\r\nhost: coord\r\ncontent-length: 3\r\n\r\n{}",
            "POST /v1/events HTTP/1.1\r\nhost: coord\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "POST /v1/events HTTP/1.1\r\nhost: coord\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n{}",
            "POST /v1/events HTTP/1.1\r\nhost: coord\r\ncontent-length: +2\r\n\r\n{}",
            "POST /v1/events HTTP/1.1\r\nhost: coord\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n",
            "POST /v1/events/batch HTTP/1.1\r\nhost: coord\r\ncontent-length: 2\r\n\r\n{}",
            "POST /v1/events HTTP/1.0\r\nhost: coord\r\ncontent-length: 2\r\n\r\n{}",
            "GET /v1/events HTTP/1.1\r\nhost: coord\r\ncontent-length: 2\r\n\r\n{}",
            "GET /v1/events HTTP/1.1\r\nhost: coord\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\nhost: coord\r\nexpect: 100-continue\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\nhost: coord\r\nbad header\r\n\r\n",
            "GET /v1/status HTTP/1.1\r\nhost: coord\r\n\r\n",
            "HEAD /v1/events HTTP/1.1\r\nhost: coord\r\n\r\n",
            "",
            // RFC 9112 §3.2: the front refuses these with 400.
            "GET /v1/events HTTP/1.1\r\n\r\n",
            "POST /v1/events HTTP/1.1\r\nhost: a\r\nHost: b\r\ncontent-length: 2\r\n\r\n{}",
        ] {
            assert!(head(s).is_none(), "{s:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: y\r\n")).collect();
        assert!(head(&format!(
            "GET /v1/events HTTP/1.1\r\nhost: coord\r\n{many}\r\n"
        ))
        .is_none());
    }
}
