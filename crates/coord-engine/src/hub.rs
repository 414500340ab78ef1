//! The fan-out hub (DESIGN §5, guarantee 3).
//!
//! The writer pushes every committed event, serialized once, into a bounded
//! ring and bumps a `watch` of the head seq. Subscribers are pull-based:
//! each keeps only its cursor, wakes on the watch, and copies the next batch
//! out of the ring, or, when it has fallen behind the ring, out of the
//! store. So the writer never waits for a subscriber, a slow subscriber is
//! never dropped, and a subscriber holds at most one batch ([`BATCH`]
//! events, at most [`BATCH_BYTES`] of them but never less than one event)
//! in memory. The ring is bounded twice: by events (`--ring-events`) and
//! by bytes (`--ring-mib`), whichever is reached first, so large events
//! cannot make it hold more than its bytes.

use bytes::Bytes;
use coord_proto::{ErrorCode, Event};
use coord_store::EventLog;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Most events one subscriber takes per wake-up.
pub const BATCH: usize = 1024;

/// Most bytes of events one subscriber takes per wake-up (64 KiB): a
/// batch ends at [`BATCH`] events or here, whichever comes first, but
/// always holds at least one event. A subscriber that stops reading holds
/// about one batch.
pub const BATCH_BYTES: usize = 64 << 10;

/// The ring: its events in seq order and the sum of what they hold
/// ([`Published::held_bytes`]).
#[derive(Default)]
struct Ring {
    events: VecDeque<Arc<Published>>,
    bytes: usize,
}

/// How many of `events` (in order) make one batch: at most `most`, at
/// most [`BATCH_BYTES`] of lines, at least one when there is one.
fn batch_len<'a>(events: impl Iterator<Item = &'a Arc<Published>>, most: usize) -> usize {
    let mut bytes = 0usize;
    let mut n = 0usize;
    for p in events.take(most) {
        bytes += p.line.len();
        if n > 0 && bytes > BATCH_BYTES {
            break;
        }
        n += 1;
    }
    n
}

/// The ring's byte bound when none is configured (64 MiB).
pub const DEFAULT_RING_BYTES: usize = 64 << 20;

/// A committed event and its wire form, shared by every subscriber.
#[derive(Debug)]
pub struct Published {
    /// The decoded event, for filtering.
    pub event: Event,
    /// Its JSON followed by a newline: an NDJSON line ready to send, shared
    /// by every subscriber without a copy.
    pub line: Bytes,
}

impl Published {
    /// Wraps an event and its JSON (without newline).
    pub fn new(event: Event, mut json: String) -> Self {
        json.push('\n');
        Published {
            event,
            line: Bytes::from(json),
        }
    }

    /// About what it holds in memory, bytes: its line and its decoded
    /// event, counted as large as the line (the payload's strings and
    /// values are about the JSON's size), so twice the line.
    pub fn held_bytes(&self) -> usize {
        2 * self.line.len()
    }

    /// The JSON without the newline.
    pub fn json(&self) -> Bytes {
        self.line.slice(..self.line.len().saturating_sub(1))
    }

    /// A custom event of `kind` at `seq` with an empty payload, source
    /// `test`: for tests of what reads the hub.
    pub fn custom(seq: u64, kind: &str) -> Self {
        let event = Event {
            seq,
            tx_id: ulid::Ulid::new(),
            ts: coord_proto::Timestamp(0),
            ingress_ts: coord_proto::Timestamp(0),
            source: "test".into(),
            session_id: None,
            resource: None,
            payload: coord_proto::Payload::Custom {
                kind: kind.into(),
                body: Default::default(),
            },
        };
        let json = event.to_json();
        Published::new(event, json)
    }
}

/// See the module docs.
pub struct Hub {
    ring: RwLock<Ring>,
    capacity: usize,
    /// The most bytes of lines the ring holds (at least its last event).
    capacity_bytes: usize,
    head: watch::Sender<u64>,
    subscribers: AtomicU64,
    /// Each open subscriber's cursor, for lag metrics.
    cursors: std::sync::Mutex<std::collections::HashMap<u64, Arc<AtomicU64>>>,
    next_id: AtomicU64,
}

/// Why a subscriber cannot go on.
#[derive(Debug)]
pub enum HubError {
    /// Its cursor fell below the retained history while it lagged.
    Compacted {
        /// Oldest seq the store still has.
        oldest: u64,
    },
    /// The store failed or holds an undecodable event.
    Store(String),
}

impl HubError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::Compacted { .. } => ErrorCode::Compacted,
            HubError::Store(_) => ErrorCode::StoreUnavailable,
        }
    }
}

/// Counts a subscriber for `/v1/status` while alive, and shows how far it
/// has read (for lag metrics).
pub struct SubscriberGuard {
    hub: Arc<Hub>,
    id: u64,
    cursor: Arc<AtomicU64>,
}

impl SubscriberGuard {
    /// Notes that the subscriber has read up to `seq`.
    pub fn read_up_to(&self, seq: u64) {
        self.cursor.store(seq, Ordering::Relaxed);
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut c) = self.hub.cursors.lock() {
            c.remove(&self.id);
        }
    }
}

impl Hub {
    /// A hub whose log ends at `head`, its ring holding at most
    /// `capacity` events and [`DEFAULT_RING_BYTES`] of them.
    pub fn new(head: u64, capacity: usize) -> Arc<Self> {
        Self::with_bytes(head, capacity, DEFAULT_RING_BYTES)
    }

    /// A hub whose log ends at `head`, its ring holding at most `capacity`
    /// events and at most `bytes` of their lines (but always the newest).
    pub fn with_bytes(head: u64, capacity: usize, bytes: usize) -> Arc<Self> {
        Arc::new(Hub {
            ring: RwLock::new(Ring {
                events: VecDeque::with_capacity(capacity.min(1 << 16)),
                bytes: 0,
            }),
            capacity: capacity.max(1),
            capacity_bytes: bytes.max(1),
            head: watch::Sender::new(head),
            subscribers: AtomicU64::new(0),
            cursors: Default::default(),
            next_id: AtomicU64::new(0),
        })
    }

    /// Publishes committed events (in seq order, continuing the head): each
    /// goes into the ring, then the head moves to the last. Takes any
    /// iterator, so a caller that still needs its events hands over clones
    /// of the `Arc`s, not a copied `Vec`.
    pub fn publish(&self, events: impl IntoIterator<Item = Arc<Published>>) {
        let mut last = None;
        // The ring only holds `Arc`s: a panic elsewhere while the lock was
        // held cannot have left it half-changed, so a poisoned lock is used
        // as is rather than the events dropped.
        let mut ring = self
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in events {
            if ring.events.len() == self.capacity {
                if let Some(old) = ring.events.pop_front() {
                    ring.bytes -= old.held_bytes();
                }
            }
            last = Some(p.event.seq);
            ring.bytes += p.held_bytes();
            ring.events.push_back(p);
            while ring.bytes > self.capacity_bytes && ring.events.len() > 1 {
                if let Some(old) = ring.events.pop_front() {
                    ring.bytes -= old.held_bytes();
                }
            }
        }
        drop(ring);
        if let Some(last) = last {
            self.head.send_replace(last);
        }
    }

    /// Moves the head to `head` with an empty ring: the writer reloaded
    /// its state from a snapshot past events it never published (it slept
    /// through a compaction). Subscribers behind read on from the store,
    /// which tells them what was compacted, as after any compaction.
    pub fn jump(&self, head: u64) {
        let mut ring = self
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.events.clear();
        ring.bytes = 0;
        drop(ring);
        self.head.send_replace(head);
    }

    /// The seq of the last published event.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// A receiver that changes whenever the head moves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Registers a subscriber for the status counter.
    pub fn subscriber(self: &Arc<Self>, cursor: u64) -> SubscriberGuard {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cursor = Arc::new(AtomicU64::new(cursor));
        if let Ok(mut c) = self.cursors.lock() {
            c.insert(id, cursor.clone());
        }
        SubscriberGuard {
            hub: self.clone(),
            id,
            cursor,
        }
    }

    /// Every open subscriber's cursor.
    pub fn cursors(&self) -> Vec<u64> {
        self.cursors
            .lock()
            .map(|c| c.values().map(|a| a.load(Ordering::Relaxed)).collect())
            .unwrap_or_default()
    }

    /// The oldest seq still in the ring.
    pub fn ring_front(&self) -> Option<u64> {
        self.ring.read().ok()?.events.front().map(|p| p.event.seq)
    }

    /// The events and bytes of lines the ring holds now.
    pub fn ring_size(&self) -> (usize, usize) {
        self.ring
            .read()
            .map(|r| (r.events.len(), r.bytes))
            .unwrap_or_default()
    }

    /// The lowest cursor of the open subscribers (the furthest behind).
    pub fn slowest_cursor(&self) -> Option<u64> {
        let c = self.cursors.lock().ok()?;
        c.values().map(|a| a.load(Ordering::Relaxed)).min()
    }

    /// Open subscribers.
    pub fn subscriber_count(&self) -> u64 {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// The events after `after` up to `upto`, from the ring only: `None`
    /// when the ring no longer holds them all or they are more than
    /// `most`.
    pub fn ring_after(&self, after: u64, upto: u64, most: usize) -> Option<Vec<Arc<Published>>> {
        if upto <= after {
            return Some(Vec::new());
        }
        let want = usize::try_from(upto - after).ok().filter(|&n| n <= most)?;
        let ring = self.ring.read().ok()?;
        let ring = &ring.events;
        let first = ring.front()?.event.seq;
        if first > after + 1 {
            return None;
        }
        let start = usize::try_from(after + 1 - first).ok()?;
        let events: Vec<_> = ring
            .range(start.min(ring.len())..)
            .take(want)
            .cloned()
            .collect();
        (events.len() == want).then_some(events)
    }

    /// Up to [`BATCH`] events after `cursor` and at most `upto`, from the
    /// ring if it still holds `cursor + 1`, else from the store. Returns an
    /// empty batch only when `cursor >= upto`.
    ///
    /// # Errors
    /// [`HubError::Compacted`] if the store no longer has `cursor + 1`.
    pub async fn read_after<L: EventLog>(
        &self,
        store: &L,
        cursor: u64,
        upto: u64,
    ) -> Result<Vec<Arc<Published>>, HubError> {
        if cursor >= upto {
            return Ok(Vec::new());
        }
        let want = ((upto - cursor) as usize).min(BATCH);
        // Events in the store are about the size of those in the ring: a
        // read from the store asks for about a batch's bytes of them.
        let mut store_want = want;
        if let Ok(ring) = self.ring.read() {
            let events = &ring.events;
            if let Some(front) = events.front() {
                let first = front.event.seq;
                if first <= cursor + 1 {
                    let start = (cursor + 1 - first) as usize;
                    if start < events.len() {
                        let n = batch_len(events.range(start..), want);
                        return Ok(events.range(start..).take(n).cloned().collect());
                    }
                }
                let mean = ring.bytes / events.len().max(1);
                store_want = (BATCH_BYTES / mean.max(1)).clamp(1, want);
            }
        }
        let stored = store
            .read(cursor, store_want)
            .await
            .map_err(|e| HubError::Store(e.to_string()))?;
        match stored.first() {
            Some(e) if e.seq == cursor + 1 => {}
            _ => {
                let (oldest, _) = store
                    .bounds()
                    .await
                    .map_err(|e| HubError::Store(e.to_string()))?;
                return Err(HubError::Compacted { oldest });
            }
        }
        let mut bytes = 0usize;
        stored
            .into_iter()
            .take_while(|e| e.seq <= upto)
            .take_while(|e| {
                let first = bytes == 0;
                bytes += e.json.len() + 1;
                first || bytes <= BATCH_BYTES
            })
            .map(|e| {
                let event = Event::from_json(&e.json)
                    .map_err(|err| HubError::Store(format!("event {}: {err}", e.seq)))?;
                Ok(Arc::new(Published::new(event, e.json)))
            })
            .collect()
    }
}

/// A reader of the committed log from a cursor: the one way the daemon
/// follows its own log (event streams, `dispatch/next`, the lifecycle
/// manager, the report forwarder). It holds no events of its own: each
/// call copies at most one batch out of the ring (or the store, for a
/// reader that fell behind) and moves the cursor past it.
///
/// Cancel-safe: the cursor moves only when a call returns a batch, so a
/// dropped call loses nothing and the next one reads the same events.
pub struct LogCursor<L> {
    hub: Arc<Hub>,
    store: L,
    head: watch::Receiver<u64>,
    after: u64,
    upto: Option<u64>,
}

impl<L: EventLog> LogCursor<L> {
    /// A cursor after `after` (0: from the start of the log).
    pub fn new(hub: &Arc<Hub>, store: L, after: u64) -> Self {
        LogCursor {
            head: hub.watch(),
            hub: hub.clone(),
            store,
            after,
            upto: None,
        }
    }

    /// Stops at `upto`: [`LogCursor::next`] answers `None` once there.
    pub fn until(mut self, upto: u64) -> Self {
        self.upto = Some(upto);
        self
    }

    /// The seq of the last event handed out.
    pub fn position(&self) -> u64 {
        self.after
    }

    /// Moves the cursor to `seq` (after a resync, or to skip past events
    /// a reader gave up on).
    pub fn seek(&mut self, seq: u64) {
        self.after = seq;
    }

    /// The next batch of committed events, waiting for one. `None` when
    /// the `until` bound is reached or the hub is gone (the daemon stops).
    ///
    /// # Errors
    /// [`HubError::Compacted`] when retention removed events not yet read;
    /// [`HubError::Store`] when the store fails.
    pub async fn next(&mut self) -> Result<Option<Vec<Arc<Published>>>, HubError> {
        loop {
            if self.upto.is_some_and(|u| self.after >= u) {
                return Ok(None);
            }
            let head = *self.head.borrow_and_update();
            if self.after >= head {
                if self.head.changed().await.is_err() {
                    return Ok(None);
                }
                continue;
            }
            let batch = self.next_ready().await?;
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
    }

    /// The next batch without waiting: empty at the head (or the bound).
    ///
    /// # Errors
    /// As [`LogCursor::next`].
    pub async fn next_ready(&mut self) -> Result<Vec<Arc<Published>>, HubError> {
        let head = self.hub.head();
        let limit = self.upto.map_or(head, |u| u.min(head));
        let batch = self.hub.read_after(&self.store, self.after, limit).await?;
        if let Some(last) = batch.last() {
            self.after = last.event.seq;
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A custom event at `seq` whose line is about `bytes` long.
    fn sized(seq: u64, bytes: usize) -> Arc<Published> {
        let mut p = Published::custom(seq, "x.big");
        if let coord_proto::Payload::Custom { body, .. } = &mut p.event.payload {
            body.insert("pad".into(), "p".repeat(bytes).into());
        }
        let json = p.event.to_json();
        Arc::new(Published::new(p.event, json))
    }

    /// Issue 34 item 5: large events are bounded by the ring's bytes, not
    /// only its count; the newest event always stays.
    #[test]
    fn the_ring_is_bounded_by_bytes_as_well_as_events() {
        let hub = Hub::with_bytes(0, 1_000, 1 << 20);
        hub.publish((1..=100).map(|s| sized(s, 100 << 10)));
        let (events, bytes) = hub.ring_size();
        assert!(bytes <= 1 << 20, "{bytes} bytes held");
        assert_eq!(
            events, 5,
            "five 100 KiB events (and their decoded forms) fit in 1 MiB"
        );
        assert_eq!(hub.ring_front(), Some(96));
        // One event over the whole bound is still kept, alone.
        hub.publish([sized(101, 2 << 20)]);
        assert_eq!(hub.ring_size().0, 1);
        assert_eq!(hub.ring_front(), Some(101));
        // Small events: the count bounds it.
        let hub = Hub::with_bytes(0, 8, 1 << 20);
        hub.publish((1..=20).map(|s| sized(s, 10)));
        assert_eq!(hub.ring_size().0, 8);
    }

    /// A subscriber's batch ends at BATCH_BYTES (but holds one event at
    /// least), so a stalled subscriber holds a bounded amount.
    #[test]
    fn a_batch_is_bounded_by_bytes() {
        let small: Vec<_> = (1..=2_000).map(|s| sized(s, 10)).collect();
        let n = batch_len(small.iter(), BATCH);
        let bytes = |k: usize| small[..k].iter().map(|p| p.line.len()).sum::<usize>();
        assert!(
            bytes(n) <= BATCH_BYTES && bytes(n + 1) > BATCH_BYTES,
            "{n} events"
        );
        assert_eq!(batch_len(small.iter(), 10), 10, "the count bounds it too");
        let big: Vec<_> = (1..=50).map(|s| sized(s, 100 << 10)).collect();
        let mid: Vec<_> = (1..=50).map(|s| sized(s, 20 << 10)).collect();
        assert_eq!(
            batch_len(mid.iter(), BATCH),
            3,
            "three 20 KiB events in 64 KiB"
        );
        let n = batch_len(big.iter(), BATCH);
        assert_eq!(n, 1, "one 100 KiB event per 64 KiB batch");
        let huge = [sized(1, 1 << 20), sized(2, 10)];
        assert_eq!(batch_len(huge.iter(), BATCH), 1, "one event at least");
        assert_eq!(batch_len(std::iter::empty(), BATCH), 0);
    }
}
