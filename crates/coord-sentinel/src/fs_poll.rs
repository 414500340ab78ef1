//! [`FsPollSource`]: scan a legacy root on every poll, diff with the last
//! scan. The scanning itself is `coord_legacy::Feed`; this module stamps
//! its changes as events.

use crate::error::SourceError;
use crate::ledger::Ledger;
use crate::source::SentinelEventSource;
use coord_legacy::{Change, Feed};
use coord_proto::{Event, Payload, Timestamp};
use std::path::PathBuf;

/// Source name of events derived by scanning.
pub const SOURCE: &str = "fs-poll";

/// A feed of changes presented as events: the source's own `seq` (1, 2, …
/// per process) and a `tx_id` that is a ULID monotonic within the source.
/// Shared by [`FsPollSource`] and [`crate::FsWatchSource`].
///
/// Cancel-safe: the feed commits a scan only after its last await, and
/// stamping is synchronous.
pub(crate) struct FeedSource {
    pub(crate) feed: Feed,
    source: &'static str,
    name: String,
    seq: u64,
    ids: ulid::Generator,
    /// With a state file: the last scan whose changes were all handed.
    ledger: Option<Ledger>,
}

impl FeedSource {
    pub(crate) fn new(feed: Feed, source: &'static str) -> Self {
        FeedSource {
            name: format!("{source}:{}", feed.root().display()),
            feed,
            source,
            seq: 0,
            ids: ulid::Generator::new(),
            ledger: None,
        }
    }

    /// Keeps the last handed scan in `state_file`, so a restart emits only
    /// what changed since (removals made while it was down included). A
    /// state file of another root, or one that cannot be read, is set
    /// aside with a warning and the root is scanned from scratch.
    pub(crate) fn with_state_file(mut self, state_file: PathBuf) -> Self {
        let root = self.feed.root().display().to_string();
        let mut ledger = match Ledger::open(&state_file) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable sentinel state; rescanning the root from scratch");
                let _ = std::fs::remove_file(&state_file);
                Ledger::open(&state_file).unwrap_or_else(|_| Ledger::empty(state_file.clone()))
            }
        };
        if ledger.state.root.as_deref().is_some_and(|r| r != root) {
            tracing::warn!(
                state = %state_file.display(),
                was = ?ledger.state.root,
                root,
                "the state file is of another root; rescanning from scratch"
            );
            ledger.state = Default::default();
        }
        ledger.state.root = Some(root);
        // A batch in flight brings the source to its scan; the loop
        // completes the batch first.
        let scan = ledger
            .state
            .in_flight
            .as_ref()
            .and_then(|f| f.next_scan.clone())
            .or_else(|| ledger.state.scan.clone());
        if let Some(scan) = scan {
            match serde_json::from_value::<coord_legacy::layout::Root>(scan) {
                Ok(known) => self.feed = self.feed.with_known(known),
                Err(e) => {
                    tracing::warn!(error = %e, "the saved scan does not decode; rescanning from scratch");
                    ledger.state.scan = None;
                }
            }
        }
        self.ledger = Some(ledger);
        self
    }

    /// The same source over a reconfigured feed.
    pub(crate) fn map_feed(self, f: impl FnOnce(Feed) -> Feed) -> Self {
        FeedSource {
            feed: f(self.feed),
            ..self
        }
    }

    /// Stamps changes as events. A consumed message is dropped: the legacy
    /// poller emitted nothing for it (only the daemon's bridge records it).
    fn stamp(&mut self, changes: Vec<Change>) -> Vec<Event> {
        let now = Timestamp::now();
        changes
            .into_iter()
            .filter(|c| !matches!(c.draft.payload, Payload::InboxAck(_)))
            .map(|c| {
                self.seq += 1;
                Event {
                    seq: self.seq,
                    tx_id: self.ids.generate().unwrap_or_else(|_| ulid::Ulid::new()),
                    ts: c.ts.unwrap_or(now),
                    ingress_ts: now,
                    source: self.source.to_string(),
                    session_id: c.draft.session_id,
                    resource: c.draft.resource,
                    payload: c.draft.payload,
                }
            })
            .collect()
    }
}

impl SentinelEventSource for FeedSource {
    async fn poll(&mut self) -> Result<Vec<Event>, SourceError> {
        let changes = self
            .feed
            .next()
            .await
            .map_err(|e| SourceError::Worker(e.to_string()))?;
        Ok(self.stamp(changes))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn ledger(&mut self) -> Option<&mut Ledger> {
        self.ledger.as_mut()
    }

    fn position(&self) -> Option<serde_json::Value> {
        // A scan split over several batches is kept only once all of it
        // was handed (see FsPollSource).
        if self.feed.has_pending() {
            return None;
        }
        serde_json::to_value(self.feed.known()).ok()
    }
}

/// Scans a legacy coord root on every `poll()` and returns what changed
/// since the previous scan.
///
/// A new source has seen nothing, so its first poll emits the whole
/// current state as appearances (as the legacy poller did). Cancel-safe.
pub struct FsPollSource(FeedSource);

impl FsPollSource {
    /// A source for the root at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsPollSource(FeedSource::new(Feed::polling(root), SOURCE))
    }

    /// Bounds one poll to `n` events (the rest come with the next polls,
    /// before any new scan).
    pub fn with_max_batch(self, n: usize) -> Self {
        FsPollSource(self.0.map_feed(|f| f.with_max_batch(n)))
    }

    /// Keeps the last handed scan in `state_file` (one per root): a
    /// restart emits only what changed since, removals included. With
    /// [`Self::with_max_batch`] a scan whose changes span several batches
    /// is saved once all are handed, so a crash in between repeats that
    /// scan's earlier batches.
    pub fn with_state_file(self, state_file: impl Into<PathBuf>) -> Self {
        FsPollSource(self.0.with_state_file(state_file.into()))
    }
}

impl SentinelEventSource for FsPollSource {
    fn poll(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Vec<Event>, SourceError>> + Send {
        self.0.poll()
    }

    fn name(&self) -> &str {
        self.0.name()
    }

    fn ledger(&mut self) -> Option<&mut Ledger> {
        self.0.ledger()
    }

    fn position(&self) -> Option<serde_json::Value> {
        self.0.position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_proto::DeregReason;
    use std::future::Future;
    use std::path::Path;

    fn write(root: &Path, rel: &str, json: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, json).expect("write");
    }

    fn kinds(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| e.kind().to_string()).collect()
    }

    const S1: &str = r#"{"session_id":"s1","role":"worker","task":"T1","blob":{"cwd":"/x"},"phase":"planning","pid":7,"started_at":"2026-04-07T21:10:02.000Z","last_heartbeat":"2026-04-07T21:10:02.000Z","model":"opus"}"#;

    #[tokio::test]
    async fn session_register_heartbeat_and_dereg() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = FsPollSource::new(dir.path());
        assert!(
            src.poll().await.expect("poll").is_empty(),
            "an empty root emits nothing"
        );
        write(dir.path(), "sessions/s1.json", S1);
        let e = src.poll().await.expect("poll");
        assert_eq!(kinds(&e), ["session.register"]);
        match &e[0].payload {
            Payload::SessionRegister(p) => {
                assert_eq!(
                    (p.role.as_str(), p.task.as_str(), p.pid),
                    ("worker", "T1", Some(7))
                );
                assert_eq!(
                    p.extra.get("model"),
                    Some(&serde_json::json!("opus")),
                    "unknown fields ride in extra"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            src.poll().await.expect("poll").is_empty(),
            "no change, no event"
        );
        write(
            dir.path(),
            "sessions/s1.json",
            &S1.replace("\"phase\":\"planning\"", "\"phase\":\"editing\""),
        );
        let e = src.poll().await.expect("poll");
        assert_eq!(kinds(&e), ["session.heartbeat"]);
        std::fs::remove_file(dir.path().join("sessions/s1.json")).expect("rm");
        let e = src.poll().await.expect("poll");
        assert_eq!(kinds(&e), ["session.dereg"]);
        assert!(
            matches!(&e[0].payload, Payload::SessionDereg(d) if d.reason == DeregReason::Removed)
        );
        // seq and tx_id are monotonic within the source.
        assert!(e[0].seq == 3);
    }

    #[tokio::test]
    async fn lock_acquire_owner_change_and_release_with_decoded_resource() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = FsPollSource::new(dir.path());
        write(
            dir.path(),
            "locks/src%2Fmain.rs/record.json",
            r#"{"resource":"src/main.rs","owner_session":"a","acquired_at":"2026-04-07T21:11:00.000Z"}"#,
        );
        let e = src.poll().await.expect("poll");
        assert_eq!(kinds(&e), ["lock.acquire"]);
        assert_eq!(e[0].resource.as_deref(), Some("src/main.rs"));
        write(
            dir.path(),
            "locks/src%2Fmain.rs/record.json",
            r#"{"resource":"src/main.rs","owner_session":"b"}"#,
        );
        let e = src.poll().await.expect("poll");
        assert_eq!(kinds(&e), ["lock.release", "lock.acquire"]);
        assert_eq!(e[0].session_id.as_deref(), Some("a"));
        assert_eq!(e[1].session_id.as_deref(), Some("b"));
        std::fs::remove_dir_all(dir.path().join("locks/src%2Fmain.rs")).expect("rm");
        let e = src.poll().await.expect("poll");
        assert_eq!(kinds(&e), ["lock.release"]);
        // A weird resource round-trips through percent-decoding.
        write(
            dir.path(),
            "locks/ci%2Frun%25weird/record.json",
            r#"{"resource":"ci/run%weird","owner_session":"a"}"#,
        );
        let e = src.poll().await.expect("poll");
        assert_eq!(e[0].resource.as_deref(), Some("ci/run%weird"));
    }

    #[tokio::test]
    async fn inbox_deliver_and_dispatch_issue() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = FsPollSource::new(dir.path());
        write(
            dir.path(),
            "messages/inbox-s1/M1.json",
            r#"{"msg_id":"M1","from_session":"s2","kind":"status","body":"hello","sent_at":"2026-04-07T21:12:00.000Z"}"#,
        );
        write(
            dir.path(),
            "dispatch-orders/ord-1.json",
            r#"{"order_id":"ord-1","assignee":"s1","ticket":"TOD-1","payload":{"priority":"high"}}"#,
        );
        let e = src.poll().await.expect("poll");
        assert_eq!(kinds(&e), ["inbox.deliver", "dispatch.issue"]);
        assert!(
            matches!(&e[0].payload, Payload::InboxDeliver(d) if d.to_session == "s1" && d.size == 5 && d.from_session.as_deref() == Some("s2"))
        );
        assert!(matches!(&e[1].payload, Payload::DispatchIssue(d) if d.ticket == "TOD-1"));
        // Consuming a message (deleting it) emits nothing.
        std::fs::remove_file(dir.path().join("messages/inbox-s1/M1.json")).expect("rm");
        assert!(src.poll().await.expect("poll").is_empty());
    }

    #[tokio::test]
    async fn half_written_temp_unknown_and_mismatched_files_are_skipped() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut src = FsPollSource::new(dir.path());
        write(dir.path(), "sessions/s1.json", &S1[..S1.len() / 2]);
        write(dir.path(), "sessions/.s2.json.tmp", S1);
        write(dir.path(), "sessions/s3.json.tmp", S1);
        write(dir.path(), "sessions/notes.txt", "hi");
        write(dir.path(), "sessions/other.json", S1); // says s1, named other
        write(dir.path(), "stray/file.json", "{}");
        assert!(src.poll().await.expect("poll").is_empty());
        // Finished writing: now it appears, once.
        write(dir.path(), "sessions/s1.json", S1);
        assert_eq!(
            kinds(&src.poll().await.expect("poll")),
            ["session.register"]
        );
        // Rewritten in place, caught half-way: not a removal, not a change.
        write(dir.path(), "sessions/s1.json", &S1[..10]);
        assert!(src.poll().await.expect("poll").is_empty());
        write(dir.path(), "sessions/s1.json", S1);
        assert!(src.poll().await.expect("poll").is_empty());
    }

    #[tokio::test]
    async fn the_fixture_root_in_fixed_order() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/legacy/coord-root");
        if !root.exists() {
            // The fixture lives beside the repository in the shared folder.
            panic!("fixture root missing at {}", root.display());
        }
        let mut src = FsPollSource::new(&root);
        let e = src.poll().await.expect("poll");
        let got: Vec<(String, String)> = e
            .iter()
            .map(|e| {
                (
                    e.kind().to_string(),
                    e.session_id.clone().unwrap_or_default(),
                )
            })
            .collect();
        let want = [
            ("session.register", "claude-pid-1"),
            ("session.register", "claude-pid-2277"),
            ("session.register", "claude-pid-91952"),
            ("lock.acquire", "claude-pid-2277"),
            ("lock.acquire", "claude-pid-91952"),
            ("inbox.deliver", "claude-pid-1"),
            ("inbox.deliver", "claude-pid-91952"),
            ("dispatch.issue", "claude-pid-91952"),
        ];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
        assert!(src.poll().await.expect("poll").is_empty());
    }

    #[tokio::test]
    async fn max_batch_bounds_a_poll_and_the_rest_follows() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/legacy/coord-root");
        let mut src = FsPollSource::new(&root).with_max_batch(3);
        let mut all = Vec::new();
        for _ in 0..3 {
            let e = src.poll().await.expect("poll");
            assert!(e.len() <= 3);
            all.extend(e);
        }
        assert_eq!(all.len(), 8);
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_dropped_poll_loses_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "sessions/s1.json", S1);
        let mut src = FsPollSource::new(dir.path());
        {
            // Start a poll, let it reach its await, drop it.
            let mut fut = std::pin::pin!(src.poll());
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let _ = fut.as_mut().poll(&mut cx);
        }
        let e = src.poll().await.expect("poll");
        assert_eq!(
            kinds(&e),
            ["session.register"],
            "the dropped poll's events come now"
        );
    }
}
