//! One client connection, served by hyper — the daemon's only HTTP stack.
//!
//! Every connection, on the Unix socket or the dashboard's TCP listener,
//! is handed to hyper-util's `auto` server: HTTP/1.1 (keep-alive,
//! pipelining, half-closes) or HTTP/2 with prior knowledge (`curl
//! --http2-prior-knowledge`), told apart by hyper from the first bytes.
//! Appends, event streams and every other request go through the one
//! router ([`crate::api::router`]); hyper frames the answers, chunks the
//! streams and runs the header-read timeout on its own timer.
//!
//! It must not parse, frame or rewrite a byte itself, and it must not
//! decide anything about a request: that is the router's.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A connection's read buffer, bytes (128 KiB): the most a request line and
/// headers may take over HTTP/1.1 (more is `431`), and with the body limit
/// what one connection can make the daemon hold.
pub(crate) const MAX_HEAD_BYTES: usize = 128 << 10;

/// The most header bytes an HTTP/2 client may send in one request, bytes:
/// the HTTP/1.1 limit, so both versions hold a connection to the same.
const MAX_HEADER_LIST: u32 = MAX_HEAD_BYTES as u32;

/// A future that completes when the client has left (see [`peer_gone`]).
pub(crate) type Gone = Pin<Box<dyn Future<Output = ()> + Send>>;

/// hyper's server with the daemon's settings, shared by every connection.
///
/// HTTP/1.1: a connection that takes longer than `header_timeout` to send
/// a request's headers — or stays idle that long between requests — is
/// closed; a response being streamed is not waiting for headers. Half-closes
/// are allowed: a client that sends its requests and then shuts its write
/// side (`printf … | socat`, `nc -N`) is still answered, every pipelined
/// request of it. HTTP/2: the same header budget, and hyper's own flow
/// control per stream.
pub(crate) struct Http {
    builder: auto::Builder<TokioExecutor>,
    header_timeout: Duration,
}

impl Http {
    /// The server settings for connections whose headers must arrive within
    /// `header_timeout`.
    pub(crate) fn new(header_timeout: Duration) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .half_close(true)
            .max_buf_size(MAX_HEAD_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_LIST);
        Http {
            builder,
            header_timeout,
        }
    }

    /// Serves `stream` with `router` until it ends, or until `stop`
    /// completes — then gracefully: the request in flight is answered, a
    /// stream ends at an event boundary — or until `gone` completes: the
    /// client left with a request in flight (a lock wait, a long poll), and
    /// dropping the connection drops its handler, which cancels what it
    /// waited for as `client_gone`.
    pub(crate) async fn serve<S>(
        &self,
        stream: S,
        router: Router,
        stop: impl Future<Output = ()>,
        gone: Option<Gone>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let svc = TowerToHyperService::new(router);
        let stream = FirstBytes::new(stream, self.header_timeout);
        let conn = self.builder.serve_connection(TokioIo::new(stream), svc);
        let mut conn = std::pin::pin!(conn);
        let gone = async {
            match gone {
                Some(g) => g.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // The connection's own end first: a client that closes right
            // after its answer has not left mid-request.
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            _ = stop => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            _ = gone => tracing::debug!("the client closed the connection"),
        }
    }
}

/// A future that completes once the peer of `stream` has closed both
/// directions — not on a half-close, after which it still reads what the
/// daemon writes. hyper does not read while a request is in flight when
/// half-closes are allowed, so it would not notice a client that left; this
/// watches a duplicate of the descriptor for `EPOLLHUP` (write interest
/// only: a half-close makes read readiness final and would wake a read
/// watch forever, but raises no write event).
///
/// # Errors
/// When the descriptor cannot be duplicated or registered with the reactor.
pub(crate) fn peer_gone(stream: &impl AsFd) -> io::Result<Gone> {
    let dup = stream.as_fd().try_clone_to_owned()?;
    // SAFETY: the `AsyncFd` owns `dup`, so the descriptor stays open, and
    // the same, for as long as it is registered.
    let fd = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }
        .map_err(io::Error::from)?;
    Ok(Box::pin(async move {
        loop {
            let Ok(mut ready) = fd.writable().await else {
                return;
            };
            if ready.ready().is_write_closed() {
                return;
            }
            ready.clear_ready();
        }
    }))
}

/// How often a run of accept failures is logged.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// Accept failures (EMFILE under a connection flood, ENOMEM) logged at most
/// once per [`ACCEPT_WARN_EVERY`] with the count suppressed since: the
/// accept loop retries every 50 ms, and a flood must not flood the log.
#[derive(Default)]
pub(crate) struct AcceptErrors {
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    /// Notes one failure at `now`; returns whether it was logged.
    pub(crate) fn note(&mut self, what: &str, e: &std::io::Error, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < ACCEPT_WARN_EVERY)
        {
            self.suppressed += 1;
            return false;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "{what}");
        self.last = Some(now);
        self.suppressed = 0;
        true
    }
}

/// Bytes of a connection read before hyper has told HTTP/1.1 from HTTP/2
/// for sure: the length of the HTTP/2 preface, the most it reads to decide.
const PREFACE_BYTES: u64 = 24;

/// A connection whose first [`PREFACE_BYTES`] must arrive within the
/// header timeout. hyper's own header-read timer starts only once it has
/// decided which version the client speaks, and deciding waits for bytes
/// without a timer of its own: a client that connects and sends nothing
/// (or one byte of `PRI`) would hold a connection slot for ever. After
/// those bytes, hyper's timers (the HTTP/1.1 header-read timeout, the idle
/// keep-alive) govern the connection.
struct FirstBytes<S> {
    inner: S,
    /// Bytes read so far, up to [`PREFACE_BYTES`].
    read: u64,
    /// When the first bytes must have arrived; `None` once they have.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FirstBytes<S> {
    fn new(inner: S, within: Duration) -> Self {
        FirstBytes {
            inner,
            read: 0,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = (buf.filled().len() - before) as u64;
            self.read = self.read.saturating_add(n);
            if self.read >= PREFACE_BYTES || n == 0 {
                self.deadline = None;
            }
            return r;
        }
        if r.is_pending() {
            if let Some(d) = self.deadline.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the header timeout",
                    )));
                }
            }
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_are_logged_once_per_window() {
        let mut errors = AcceptErrors::default();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let t0 = Instant::now();
        let logged = (0..1000)
            .filter(|i| errors.note("accept failed", &e, t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(logged, 1, "a 1 s flood of failures");
        assert!(errors.note("accept failed", &e, t0 + ACCEPT_WARN_EVERY));
        assert!(!errors.note("accept failed", &e, t0 + ACCEPT_WARN_EVERY));
    }
}
