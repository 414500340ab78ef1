//! The daemon's end of one client connection: a Unix stream socket that
//! asks epoll for write readiness only once a write would block.
//!
//! Why: on a Unix stream socket the kernel signals "writable" (`EPOLLOUT`)
//! every time the peer *reads* — each skb the peer consumes calls the
//! socket's write-space callback, which wakes the epoll set whether or not
//! the buffer was ever full. A socket registered for write readiness (as
//! tokio's `UnixStream` always is) therefore costs the daemon one extra
//! epoll event per response the client reads and per event a subscriber
//! reads, and often a parked worker's wake-up for nothing. A
//! [`ClientSocket`] is registered for read readiness only; writes go
//! straight to the non-blocking socket, and only the first write that
//! would block (a full socket buffer: a slow subscriber) re-registers it
//! for both, for the rest of its life.
//!
//! It must not buffer: every write is one `write`/`writev` call whose
//! count is returned as is, so hyper's flushes mean what they say.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// See the module docs.
pub struct ClientSocket {
    /// `None` only while being re-registered inside [`ClientSocket::want_writable`].
    fd: Option<AsyncFd<UnixStream>>,
    /// Registered for write readiness too (a write once blocked).
    writable: bool,
}

impl ClientSocket {
    /// Takes over an accepted connection (on this thread or another),
    /// registering it with the calling thread's runtime for read readiness
    /// only.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered (the
    /// epoll set is gone: the runtime is shutting down).
    pub fn from_std(std: UnixStream) -> io::Result<Self> {
        std.set_nonblocking(true)?;
        Ok(ClientSocket {
            fd: Some(register(std, Interest::READABLE)?),
            writable: false,
        })
    }

    /// Polls whether the peer has sent something or closed its end,
    /// without consuming anything: `Ready(Ok(0))` when it closed,
    /// `Ready(Ok(n))` with `n > 0` when it sent bytes (`recv` with
    /// `MSG_PEEK` of one byte). Nothing is left to drop when another
    /// branch wins: a stream polls this on every wake-up.
    ///
    /// # Errors
    /// The socket's error (a reset), or a lost registration.
    pub fn poll_peer(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let fd = self.fd()?;
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            match guard.try_io(|s| peek_into(s, &mut [0u8; 1])) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    /// Whether the peer has closed both directions (`POLLHUP` or
    /// `POLLERR` now), as opposed to only its sending side (a half-close,
    /// after which it may still read what the daemon writes).
    pub fn peer_gone(&self) -> bool {
        let Ok(fd) = self.fd() else { return true };
        let mut p = libc::pollfd {
            fd: fd.get_ref().as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout: never blocks.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n < 0 || p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
    }

    /// A future that completes once the peer has closed both directions
    /// (not on a half-close): for a connection whose reads are hyper's,
    /// which does not read while a request is in flight when half-closes
    /// are allowed, so it would not notice a client that left. Watches a
    /// duplicate of the descriptor for `EPOLLHUP`.
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated or registered.
    pub fn gone(&self) -> io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let dup = self.fd()?.get_ref().try_clone()?;
        // Write interest only: a half-close (which makes read readiness
        // final, so a read watch would wake forever) raises no event
        // here; a full close raises `EPOLLHUP`, which reads as write
        // closed.
        let fd = register(dup, Interest::WRITABLE)?;
        Ok(async move {
            loop {
                let Ok(mut ready) = fd.writable().await else {
                    return;
                };
                if ready.ready().is_write_closed() {
                    return;
                }
                ready.clear_ready();
            }
        })
    }

    /// One non-blocking `writev` of `bufs`, never waiting and never
    /// changing the registration: the bytes written, or `WouldBlock` when
    /// the socket is full (the caller then writes through
    /// [`AsyncWrite`], which waits). For a writer that holds the socket
    /// shared ([`crate::lane`]).
    ///
    /// # Errors
    /// `WouldBlock`, or the socket's error (`EPIPE` once the peer left).
    pub fn try_write_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut s = self.fd()?.get_ref();
        s.write_vectored(bufs)
    }

    fn fd(&self) -> io::Result<&AsyncFd<UnixStream>> {
        self.fd
            .as_ref()
            .ok_or_else(|| io::Error::other("socket lost its registration"))
    }

    /// Re-registers for read and write readiness. The registration checks
    /// the socket's state as it is added, so an edge that came in between
    /// is not lost.
    fn want_writable(&mut self) -> io::Result<()> {
        let fd = self
            .fd
            .take()
            .ok_or_else(|| io::Error::other("socket lost its registration"))?;
        let std = fd.into_inner();
        self.fd = Some(register(std, Interest::READABLE | Interest::WRITABLE)?);
        self.writable = true;
        Ok(())
    }

    /// One write attempt through `op`, waiting for write readiness only
    /// once the socket has been found full.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&UnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if !self.writable {
            let first = op(self.fd()?.get_ref());
            match first {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.want_writable()?;
                    // The old registration took any read waker with it:
                    // poll the task again so its reads register anew.
                    cx.waker().wake_by_ref();
                }
                r => {
                    crate::idle_spin::wrote();
                    return Poll::Ready(r);
                }
            }
        }
        loop {
            let fd = self.fd()?;
            let mut guard = ready!(fd.poll_write_ready(cx))?;
            match guard.try_io(|s| op(s.get_ref())) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }
}

/// `recv` with `MSG_PEEK` into `buf`: copies without consuming.
fn peek_into(s: &AsyncFd<UnixStream>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Registers `stream` with the runtime's epoll set for `interest`.
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: a `UnixStream` owns its descriptor: it stays open and the
    // same for as long as the `AsyncFd` owns the stream, and `as_raw_fd`
    // always answers it.
    unsafe { AsyncFd::register_with_interest(stream, interest) }.map_err(|e| e.into_parts().1)
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let fd = self.fd()?;
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            // Read into the uninitialized tail as tokio's own sockets do:
            // hyper hands over a fresh, uninitialized buffer on every read,
            // and zeroing it first (`initialize_unfilled`) cost a memset of
            // the whole read buffer per request.
            // SAFETY: `read` writes only initialized bytes, at most `len`.
            let dst = unsafe { buf.unfilled_mut() };
            let res = guard.try_io(|s| {
                // SAFETY: `dst` is valid for `dst.len()` bytes of writes.
                let n = unsafe { libc::read(s.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    // A short read drained the socket (as tokio's own
                    // sockets reason): forget the readiness now, so the
                    // next read waits for epoll instead of spending a
                    // syscall on EAGAIN. Data that came after the read
                    // brought a new readiness event, which this does not
                    // clear.
                    if n > 0 && n < dst.len() {
                        guard.clear_ready();
                    }
                    // SAFETY: the kernel initialized the first `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut s| s.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |mut s| s.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.fd()?.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (ClientSocket, tokio::net::UnixStream) {
        let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
        let a = a.into_std().expect("into_std");
        (ClientSocket::from_std(a).expect("register"), b)
    }

    #[tokio::test]
    async fn reads_and_writes_both_ways() {
        let (mut ours, mut theirs) = pair().await;
        theirs.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        ours.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        ours.write_all(b"pong").await.expect("write");
        theirs.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"pong");
        assert!(!ours.writable, "no write blocked, so no write interest");
    }

    /// A peer that does not read fills the socket buffer: the write that
    /// would block registers for write readiness and completes once the
    /// peer drains, with every byte in order.
    #[tokio::test]
    async fn a_full_buffer_waits_for_the_peer_and_loses_nothing() {
        let (mut ours, mut theirs) = pair().await;
        let total = 8 << 20;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            ours.write_all(&data).await.expect("write");
            ours.shutdown().await.expect("shutdown");
            ours.writable
        });
        // Let the writer fill the buffer before anything is read.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ");
        assert!(
            writer.await.expect("join"),
            "the blocked write asked for write readiness"
        );
    }

    /// A half-close leaves the peer reading; a close does not.
    #[tokio::test]
    async fn a_half_close_is_not_a_peer_gone() {
        let (ours, theirs) = pair().await;
        let theirs = theirs.into_std().expect("into_std");
        theirs
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let peer = std::future::poll_fn(|cx| ours.poll_peer(cx)).await;
        assert_eq!(peer.expect("peek"), 0);
        assert!(!ours.peer_gone());
        drop(theirs);
        assert!(ours.peer_gone());
    }

    #[tokio::test]
    async fn gone_is_a_full_close_not_a_half_close() {
        let (ours, peer) = pair().await;
        let gone = ours.gone().expect("watch");
        let mut gone = std::pin::pin!(gone);
        let mut peer = peer.into_std().expect("std");
        std::io::Write::write_all(&mut peer, b"GET / HTTP/1.1\r\n\r\n").expect("write");
        peer.shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        let early = tokio::time::timeout(Duration::from_millis(300), gone.as_mut()).await;
        assert!(early.is_err(), "a half-close is not gone");
        drop(peer);
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("a full close is gone");
    }

    #[tokio::test]
    async fn end_of_stream_reads_as_zero() {
        let (mut ours, theirs) = pair().await;
        drop(theirs);
        let mut buf = [0u8; 8];
        assert_eq!(ours.read(&mut buf).await.expect("read"), 0);
    }
}
