//! The fan-out lane: one task per thread that writes each new event to
//! every caught-up event stream on that thread, instead of waking each
//! stream's own task.
//!
//! Why: one event fanned out to 10,000 streams woke 10,000 tasks, and
//! waking one — the notification, the scheduler, the poll down through
//! its nested futures, each on memory no other stream shares — was the
//! largest user-space cost left per subscriber. Serving them from one
//! task halved the daemon's CPU per event (docs/BENCHMARKS.md,
//! "Fan-out").
//!
//! How: a stream written by the connection itself ([`crate::direct`])
//! that has sent everything up to the hub's head *parks* here: it leaves
//! a share of its socket, its filter and its position, and its task then
//! waits only for the lane to hand it back or for its client to hang up.
//! On every move of the head the lane copies the new events out of the
//! hub's ring once and, for each parked stream, writes those its filter
//! takes as one chunk, with one non-blocking `writev`. It hands a stream
//! back, with its position, when it cannot serve it: the socket is full
//! (the stream goes on at its own pace, with back-pressure; if the socket
//! took part of the chunk, the rest is handed back to be written first),
//! the events have left the ring or are more than one write carries, or
//! the write failed.
//!
//! Invariants: a stream's bytes are written either by the lane (while it
//! is parked) or by its own task, never both, and always as whole chunks
//! in seq order; a stream parks only at the hub's head and never behind
//! the lane, so the lane's events cover everything it has not sent.
//!
//! It must not wait: every write is non-blocking, and whatever would wait
//! goes back to the stream's own task.

use crate::api::Filter;
use crate::hub::{Hub, Published};
use crate::socket::ClientSocket;
use bytes::Bytes;
use slab::Slab;
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Most events one lane write carries to one stream; more, and the stream
/// is handed back to catch up in batches of its own.
const MOST_EVENTS: usize = 256;

/// Most bytes of events the lane writes to one stream at once (the hub's
/// batch bound): more, and the stream's own task catches up batch by
/// batch, so a stream that stops reading holds at most about this much.
const MOST_BYTES: usize = crate::hub::BATCH_BYTES;

/// What a stream leaves with the lane.
pub(crate) struct Parking {
    /// Its socket, shared while parked.
    pub(crate) socket: Arc<ClientSocket>,
    /// What it wants to see.
    pub(crate) filter: Arc<Filter>,
    /// It has been sent every event up to this seq.
    pub(crate) after: u64,
    /// Its subscriber's cursor, for the lag metrics.
    pub(crate) read: Arc<AtomicU64>,
}

/// Why the lane hands a stream back.
#[derive(Debug)]
pub(crate) enum Back {
    /// Go on from `after`: nothing after it was written.
    From {
        /// The last seq sent.
        after: u64,
    },
    /// The socket took only part of the chunk carrying the events up to
    /// `after`: write `rest` first, then go on from `after`.
    Partial {
        /// The last seq in the chunk.
        after: u64,
        /// The chunk's bytes the socket did not take.
        rest: Bytes,
    },
    /// The write failed: the client is gone.
    Failed,
}

struct Entry {
    id: u64,
    parking: Parking,
    back: oneshot::Sender<Back>,
}

/// One hub's lane on this thread.
struct Lane {
    hub_addr: usize,
    /// The lane has handed out every event up to this seq.
    pos: u64,
    entries: Slab<Entry>,
    /// Its task is alive.
    running: bool,
    next_id: u64,
}

thread_local! {
    /// This thread's lanes, one per hub (tests run several daemons'
    /// hubs on one thread).
    static LANES: RefCell<Vec<Lane>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's lane of `hub_addr`, if it has one.
fn with_lane<T>(hub_addr: usize, f: impl FnOnce(&mut Lane) -> T) -> Option<T> {
    LANES
        .try_with(|lanes| {
            let mut lanes = lanes.try_borrow_mut().ok()?;
            lanes.iter_mut().find(|l| l.hub_addr == hub_addr).map(f)
        })
        .ok()
        .flatten()
}

/// A parked stream's claim on its entry: dropping it takes the stream out
/// of the lane (when the lane has not handed it back already).
pub(crate) struct Ticket {
    hub_addr: usize,
    key: usize,
    id: u64,
}

impl Ticket {
    /// Takes the stream out of the lane and returns the last seq the lane
    /// sent it (`None` when the lane has handed it back already: its
    /// [`Back`] waits in the receiver). A stream that leaves without
    /// asking would go on from where it parked and send again what the
    /// lane sent meanwhile.
    pub(crate) fn withdraw(self) -> Option<u64> {
        with_lane(self.hub_addr, |l| {
            if l.entries.get(self.key).is_some_and(|e| e.id == self.id) {
                Some(l.entries.remove(self.key).parking.after)
            } else {
                None
            }
        })
        .flatten()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        with_lane(self.hub_addr, |l| {
            if l.entries.get(self.key).is_some_and(|e| e.id == self.id) {
                l.entries.remove(self.key);
            }
        });
    }
}

/// Parks a stream on this thread's lane, starting the lane's task if it
/// is not running. Refused (`None`) unless the stream is at the hub's head
/// and not behind the lane.
pub(crate) fn park(hub: &Arc<Hub>, parking: Parking) -> Option<(Ticket, oneshot::Receiver<Back>)> {
    if parking.after != hub.head() {
        return None;
    }
    let hub_addr = hub.addr();
    let (ticket, rx, start) = LANES
        .try_with(|lanes| {
            let mut lanes = lanes.try_borrow_mut().ok()?;
            let i = match lanes.iter().position(|l| l.hub_addr == hub_addr) {
                Some(i) => i,
                None => {
                    lanes.push(Lane {
                        hub_addr,
                        pos: parking.after,
                        entries: Slab::new(),
                        running: false,
                        next_id: 0,
                    });
                    lanes.len() - 1
                }
            };
            let lane = &mut lanes[i];
            if lane.entries.is_empty() {
                // No one to serve, so its position is free to move.
                lane.pos = parking.after;
            }
            if parking.after < lane.pos {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            let id = lane.next_id;
            lane.next_id += 1;
            let key = lane.entries.insert(Entry {
                id,
                parking,
                back: tx,
            });
            let start = !lane.running;
            lane.running = true;
            Some((Ticket { hub_addr, key, id }, rx, start))
        })
        .ok()
        .flatten()?;
    if start {
        tokio::spawn(run(hub.clone()));
    }
    Some((ticket, rx))
}

/// Serves this thread's parked streams up to the hub's head now, from the
/// caller: the writer, right after it publishes a commit, so a subscriber's
/// line leaves before the writer's bookkeeping and without a trip through
/// the scheduler to the lane's task (which then finds its lane at the head,
/// with nothing to do). The same work on the same thread as the task's, one
/// at a time, so the invariants above hold; a lane already borrowed (never,
/// from the writer) is left to its task.
pub(crate) fn serve_now(hub: &Hub) {
    let head = hub.head();
    with_lane(hub.addr(), |l| {
        if head > l.pos && !l.entries.is_empty() {
            step(l, hub, head);
        }
    });
}

/// The lane's task on this thread: follows the head while anything is
/// parked, and ends when nothing is.
async fn run(hub: Arc<Hub>) {
    let hub_addr = hub.addr();
    let mut head = hub.watch();
    loop {
        let now = *head.borrow_and_update();
        let done = with_lane(hub_addr, |l| {
            if now > l.pos {
                step(l, &hub, now);
            }
            if l.entries.is_empty() {
                l.running = false;
                true
            } else {
                false
            }
        });
        if done != Some(false) {
            return;
        }
        if head.changed().await.is_err() {
            // The head's watch is gone (the daemon stops): every parked
            // stream is handed back with what it was sent, so it ends (or
            // drains up to the head) from there. Let go without a word, a
            // stream would go on from where it parked and send again what
            // the lane sent it since.
            with_lane(hub_addr, |l| {
                for e in l.entries.drain() {
                    let _ = e.back.send(Back::From {
                        after: e.parking.after,
                    });
                }
                l.running = false;
            });
            return;
        }
    }
}

/// Serves every parked stream the events up to `head`, then moves the
/// lane there.
fn step(lane: &mut Lane, hub: &Hub, head: u64) {
    let events = hub.ring_after(lane.pos, head, MOST_EVENTS);
    let mut handed = Vec::new();
    match &events {
        None => {
            // Out of the ring, or too many for one write: each stream
            // catches up on its own.
            for (key, e) in lane.entries.iter() {
                handed.push((
                    key,
                    Back::From {
                        after: e.parking.after,
                    },
                ));
            }
        }
        Some(events) => {
            for (key, e) in lane.entries.iter_mut() {
                if e.back.is_closed() {
                    // Its task is gone without taking it out.
                    handed.push((key, Back::Failed));
                } else if let Some(back) = serve(&mut e.parking, events) {
                    handed.push((key, back));
                }
            }
            crate::idle_spin::wrote();
        }
    }
    for (key, back) in handed {
        let e = lane.entries.remove(key);
        let _ = e.back.send(back);
    }
    lane.pos = head;
}

/// Writes to one parked stream the events of `events` after its position
/// that its filter takes; `None` when it stays parked.
fn serve(p: &mut Parking, events: &[Arc<Published>]) -> Option<Back> {
    let fresh = &events[events.partition_point(|e| e.event.seq <= p.after)..];
    let last = fresh.last()?.event.seq;
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut single: Option<&[u8]> = None;
    let mut len = 0usize;
    for e in fresh {
        if p.filter.matches(e) {
            len += e.line.len();
            match single.take() {
                None if lines.is_empty() => single = Some(&e.line),
                first => {
                    lines.extend(first);
                    lines.push(&e.line);
                }
            }
        }
    }
    if single.is_none() && lines.is_empty() {
        p.after = last;
        p.read.store(last, Ordering::Relaxed);
        return None;
    }
    if len > MOST_BYTES {
        return Some(Back::From { after: p.after });
    }
    let mut size = [0u8; 18];
    let size = chunk_size_line(len, &mut size);
    let written = match single {
        Some(line) => {
            let bufs = [
                IoSlice::new(size),
                IoSlice::new(line),
                IoSlice::new(b"\r\n"),
            ];
            p.socket.try_write_now(&bufs)
        }
        None => {
            let mut bufs = Vec::with_capacity(lines.len() + 2);
            bufs.push(IoSlice::new(size));
            bufs.extend(lines.iter().map(|l| IoSlice::new(l)));
            bufs.push(IoSlice::new(b"\r\n"));
            p.socket.try_write_now(&bufs)
        }
    };
    let total = size.len() + len + 2;
    match written {
        Ok(n) if n == total => {
            p.after = last;
            p.read.store(last, Ordering::Relaxed);
            None
        }
        Ok(0) => Some(Back::From { after: p.after }),
        Ok(n) => {
            // Only what the socket did not take is kept.
            let mut rest = Vec::with_capacity(total - n);
            let mut skip = n;
            let parts = std::iter::once(size)
                .chain(single)
                .chain(lines.iter().copied())
                .chain(std::iter::once(&b"\r\n"[..]));
            for part in parts {
                let from = skip.min(part.len());
                skip -= from;
                rest.extend_from_slice(&part[from..]);
            }
            Some(Back::Partial {
                after: last,
                rest: Bytes::from(rest),
            })
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Some(Back::From { after: p.after })
        }
        Err(_) => Some(Back::Failed),
    }
}

/// The size line of a chunk of `len` bytes (RFC 9112 §7.1): hex digits
/// and CRLF, in `buf`.
pub(crate) fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let d = digits.len() - i;
    buf[..d].copy_from_slice(&digits[i..]);
    buf[d] = b'\r';
    buf[d + 1] = b'\n';
    &buf[..d + 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Filters;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    fn published(seq: u64, kind: &str) -> Arc<Published> {
        Arc::new(Published::custom(seq, kind))
    }

    fn pair() -> (Arc<ClientSocket>, tokio::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        b.set_nonblocking(true).expect("nonblocking");
        (
            Arc::new(ClientSocket::from_std(a).expect("register")),
            tokio::net::UnixStream::from_std(b).expect("register"),
        )
    }

    fn parking(socket: &Arc<ClientSocket>, filter: Arc<Filter>, after: u64) -> Parking {
        Parking {
            socket: socket.clone(),
            filter,
            after,
            read: Arc::new(AtomicU64::new(after)),
        }
    }

    /// Reads exactly `n` bytes, or fails after a second.
    async fn read_n(peer: &mut tokio::net::UnixStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(1), peer.read_exact(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        buf
    }

    fn chunk(lines: &[&Arc<Published>]) -> Vec<u8> {
        let body: Vec<u8> = lines.iter().flat_map(|p| p.line.to_vec()).collect();
        let mut out = format!("{:x}\r\n", body.len()).into_bytes();
        out.extend(body);
        out.extend(b"\r\n");
        out
    }

    #[test]
    fn chunk_size_lines_are_hex() {
        let mut b = [0u8; 18];
        assert_eq!(chunk_size_line(0, &mut b), b"0\r\n");
        assert_eq!(chunk_size_line(0x1f3, &mut b), b"1f3\r\n");
        assert_eq!(chunk_size_line(usize::MAX, &mut b), b"ffffffffffffffff\r\n");
    }

    /// Parked streams get what their filters take, as one chunk per
    /// commit, without their tasks; a stream not at the head is refused.
    #[tokio::test]
    async fn the_lane_writes_each_commit_to_its_parked_streams() {
        let hub = Hub::new(0, 64);
        let filters = Filters::default();
        let (a, mut peer_a) = pair();
        let (b, mut peer_b) = pair();
        let parked_a = park(&hub, parking(&a, filters.everything(), 0)).expect("parks");
        let read_b = Arc::new(AtomicU64::new(0));
        let parked_b = park(
            &hub,
            Parking {
                read: read_b.clone(),
                ..parking(&b, filters.kinds("x.b*"), 0)
            },
        )
        .expect("parks");
        assert!(
            park(&hub, parking(&a, filters.everything(), 1)).is_none(),
            "not at the head"
        );

        let (e1, e2) = (published(1, "x.a"), published(2, "x.b"));
        hub.publish(vec![e1.clone(), e2.clone()]);
        assert_eq!(
            read_n(&mut peer_a, chunk(&[&e1, &e2]).len()).await,
            chunk(&[&e1, &e2])
        );
        assert_eq!(
            read_n(&mut peer_b, chunk(&[&e2]).len()).await,
            chunk(&[&e2])
        );
        let e3 = published(3, "x.a");
        hub.publish(vec![e3.clone()]);
        assert_eq!(
            read_n(&mut peer_a, chunk(&[&e3]).len()).await,
            chunk(&[&e3])
        );
        // b's filter took nothing of 3, but its cursor moved past it.
        tokio::time::timeout(Duration::from_secs(1), async {
            while read_b.load(Ordering::Relaxed) != 3 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("b's cursor at 3");
        // Still parked: nothing handed back.
        let (_ta, mut back_a) = parked_a;
        assert!(back_a.try_recv().is_err());
        drop(parked_b);
    }

    /// `serve_now` writes a commit to the parked streams before the caller
    /// yields (the lane's task has not run: the peer's bytes are there to
    /// read without waiting), and the task, when it runs, writes nothing a
    /// second time.
    #[tokio::test]
    async fn serve_now_writes_at_once_and_the_task_does_not_repeat_it() {
        let hub = Hub::new(0, 64);
        let filters = Filters::default();
        let (a, peer_a) = pair();
        let _parked = park(&hub, parking(&a, filters.everything(), 0)).expect("parks");
        let e1 = published(1, "x.a");
        hub.publish(vec![e1.clone()]);
        serve_now(&hub);
        // No await since the publish: only serve_now can have written.
        // The peer read as a plain non-blocking socket: tokio's own
        // `try_read` would wait for its reactor to report readiness first.
        let want = chunk(&[&e1]);
        let mut got = vec![0u8; want.len()];
        let mut std_peer = peer_a.into_std().expect("into_std");
        let n = std::io::Read::read(&mut std_peer, &mut got).expect("written before any yield");
        assert_eq!(&got[..n], &want[..]);
        assert_eq!(with_lane(hub.addr(), |l| l.pos), Some(1));
        let mut peer_a = tokio::net::UnixStream::from_std(std_peer).expect("register");
        // Let the lane's task see the head move; then the next commit
        // arrives whole and alone, with nothing of the first again.
        tokio::task::yield_now().await;
        let e2 = published(2, "x.a");
        hub.publish(vec![e2.clone()]);
        assert_eq!(
            read_n(&mut peer_a, chunk(&[&e2]).len()).await,
            chunk(&[&e2])
        );
        let mut std_peer = peer_a.into_std().expect("into_std");
        let mut extra = [0u8; 64];
        assert!(
            matches!(std::io::Read::read(&mut std_peer, &mut extra), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "nothing written twice"
        );
    }

    /// A full socket, a peer that left and a taken-out ticket: the first
    /// two are handed back with what their tasks need to go on, the third
    /// is written nothing more.
    #[tokio::test]
    async fn what_the_lane_cannot_write_goes_back_to_the_stream() {
        let hub = Hub::new(0, 64);
        let filters = Filters::default();

        let (full, _peer_full) = pair();
        let filler = vec![b'f'; 64 << 10];
        while full.try_write_now(&[IoSlice::new(&filler)]).is_ok() {}
        let (_t1, back_full) = park(&hub, parking(&full, filters.everything(), 0)).expect("parks");

        let (gone, peer_gone) = pair();
        drop(peer_gone);
        let (_t2, back_gone) = park(&hub, parking(&gone, filters.everything(), 0)).expect("parks");

        let (left, mut peer_left) = pair();
        let (t3, _back_left) = park(&hub, parking(&left, filters.everything(), 0)).expect("parks");
        drop(t3);

        let e1 = published(1, "x.a");
        hub.publish(vec![e1.clone()]);
        match tokio::time::timeout(Duration::from_secs(1), back_full).await {
            Ok(Ok(Back::From { after: 0 })) => {}
            Ok(Ok(Back::Partial { after: 1, rest })) => {
                assert!(chunk(&[&e1]).ends_with(&rest), "{rest:?}");
            }
            other => panic!("full socket: {other:?}"),
        }
        match tokio::time::timeout(Duration::from_secs(1), back_gone).await {
            Ok(Ok(Back::Failed)) => {}
            other => panic!("peer gone: {other:?}"),
        }
        let mut b = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(100), peer_left.read(&mut b))
                .await
                .is_err(),
            "a stream taken out of the lane is not written to"
        );
        // Nothing is parked any more, so the lane's task has ended.
        assert_eq!(
            with_lane(hub.addr(), |l| (l.entries.len(), l.running)),
            Some((0, false))
        );
    }
}
