//! [`FsPollSource`]: scan a legacy root, diff with the previous scan.

use crate::legacy::{self, Root};
use crate::source::{SentinelEventSource, SourceError};
use coord_proto::{
    DeregReason, DispatchIssue, Draft, Event, InboxDeliver, LockAcquire, LockMode, LockRelease,
    Payload, ReleaseReason, SessionDereg, SessionHeartbeat, SessionRegister, Timestamp,
    DEFAULT_SESSION_TTL_MS,
};
use std::collections::VecDeque;
use std::path::PathBuf;

/// Source name of events derived by scanning.
pub const SOURCE: &str = "fs-poll";

/// The events that turn `prev` into `next`, in LEGACY_LAYOUT's fixed order:
/// sessions, locks, inboxes, dispatch orders; by name within each. Each
/// draft comes with the time it happened by the file's own clock, if the
/// file says.
pub fn diff(prev: &Root, next: &Root) -> Vec<(Option<Timestamp>, Draft)> {
    let mut out = Vec::new();
    let draft = |session: &str, resource: Option<&str>, payload| Draft {
        session_id: Some(session.to_string()),
        resource: resource.map(str::to_string),
        payload,
    };
    let names: std::collections::BTreeSet<&String> =
        prev.sessions.keys().chain(next.sessions.keys()).collect();
    for id in names {
        match (prev.sessions.get(id), next.sessions.get(id)) {
            (None, Some(s)) => out.push((
                s.started_at.or(s.last_heartbeat),
                draft(
                    id,
                    None,
                    Payload::SessionRegister(SessionRegister {
                        role: s.role.clone(),
                        task: s.task.clone(),
                        blob: s.blob.clone(),
                        phase: s.phase.clone(),
                        pid: s.pid,
                        parent_session: None,
                        ttl_ms: DEFAULT_SESSION_TTL_MS,
                        extra: s.extra.clone(),
                    }),
                ),
            )),
            (Some(a), Some(b)) if a.last_heartbeat != b.last_heartbeat || a.phase != b.phase => out
                .push((
                    b.last_heartbeat,
                    draft(
                        id,
                        None,
                        Payload::SessionHeartbeat(SessionHeartbeat {
                            last_heartbeat: b.last_heartbeat.unwrap_or_default(),
                            phase: b.phase.clone(),
                        }),
                    ),
                )),
            (Some(_), None) => out.push((
                None,
                draft(
                    id,
                    None,
                    Payload::SessionDereg(SessionDereg {
                        reason: DeregReason::Removed,
                        exit_code: None,
                    }),
                ),
            )),
            _ => {}
        }
    }
    let release = |l: &legacy::LockFile| {
        (
            None,
            draft(
                &l.owner_session,
                Some(&l.resource),
                Payload::LockRelease(LockRelease {
                    resource: l.resource.clone(),
                    owner_session: l.owner_session.clone(),
                    reason: ReleaseReason::Released,
                }),
            ),
        )
    };
    let acquire = |l: &legacy::LockFile| {
        (
            l.acquired_at,
            draft(
                &l.owner_session,
                Some(&l.resource),
                Payload::LockAcquire(LockAcquire {
                    resource: l.resource.clone(),
                    owner_session: l.owner_session.clone(),
                    mode: LockMode::Exclusive,
                    ttl_ms: None,
                    extra: l.extra.clone(),
                }),
            ),
        )
    };
    let dirs: std::collections::BTreeSet<&String> =
        prev.locks.keys().chain(next.locks.keys()).collect();
    for dir in dirs {
        match (prev.locks.get(dir), next.locks.get(dir)) {
            (None, Some(l)) => out.push(acquire(l)),
            (Some(a), Some(b)) if a.owner_session != b.owner_session => {
                out.push(release(a));
                out.push(acquire(b));
            }
            (Some(a), None) => out.push(release(a)),
            _ => {}
        }
    }
    for ((to, msg_id), m) in &next.messages {
        if prev.messages.contains_key(&(to.clone(), msg_id.clone())) {
            continue;
        }
        out.push((
            m.sent_at,
            draft(
                to,
                None,
                Payload::InboxDeliver(InboxDeliver {
                    to_session: to.clone(),
                    msg_id: msg_id.clone(),
                    kind: m.kind.clone(),
                    from_session: m.from_session.clone(),
                    size: m.body.len() as u64,
                    extra: m.extra.clone(),
                }),
            ),
        ));
    }
    for (id, o) in &next.orders {
        if prev.orders.contains_key(id) {
            continue;
        }
        out.push((
            o.issued_at,
            draft(
                &o.assignee,
                None,
                Payload::DispatchIssue(DispatchIssue {
                    order_id: id.clone(),
                    assignee: o.assignee.clone(),
                    ticket: o.ticket.clone(),
                    from_session: None,
                    payload: o.payload.clone(),
                    extra: o.extra.clone(),
                }),
            ),
        ));
    }
    out
}

/// The scan-and-diff engine shared by [`FsPollSource`] and
/// `FsWatchSource`: the last scan, the events not yet returned, the source's
/// own seq and its monotonic ULID generator.
pub(crate) struct Scanner {
    pub(crate) root: PathBuf,
    source: &'static str,
    known: Root,
    pending: VecDeque<Event>,
    seq: u64,
    ids: ulid::Generator,
    pub(crate) max_batch: Option<usize>,
    pub(crate) scanned: bool,
}

impl Scanner {
    pub(crate) fn new(root: PathBuf, source: &'static str) -> Self {
        Scanner {
            root,
            source,
            known: Root::default(),
            pending: VecDeque::new(),
            seq: 0,
            ids: ulid::Generator::new(),
            max_batch: None,
            scanned: false,
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Up to `max_batch` pending events.
    pub(crate) fn take(&mut self) -> Vec<Event> {
        let n = self.max_batch.unwrap_or(usize::MAX).min(self.pending.len());
        self.pending.drain(..n).collect()
    }

    /// Scans the root and queues the difference. Cancel-safe: the scan runs
    /// on the blocking pool against a copy of the last one, and its result
    /// is committed after the only await.
    pub(crate) async fn rescan(&mut self) -> Result<(), SourceError> {
        let root = self.root.clone();
        let prev = self.known.clone();
        let (next, drafts) = tokio::task::spawn_blocking(move || {
            let next = legacy::scan(&root, &prev);
            let drafts = diff(&prev, &next);
            (next, drafts)
        })
        .await
        .map_err(|e| SourceError::Worker(e.to_string()))?;
        // Commit: from here on there is no await.
        self.known = next;
        self.scanned = true;
        let now = Timestamp::now();
        for (ts, d) in drafts {
            self.seq += 1;
            let tx_id = self.ids.generate().unwrap_or_else(|_| ulid::Ulid::new());
            self.pending.push_back(Event {
                seq: self.seq,
                tx_id,
                ts: ts.unwrap_or(now),
                ingress_ts: now,
                source: self.source.to_string(),
                session_id: d.session_id,
                resource: d.resource,
                payload: d.payload,
            });
        }
        Ok(())
    }
}

/// Scans a legacy coord root on every `poll()` and returns what changed
/// since the previous scan.
///
/// A new source has seen nothing, so its first poll emits the whole
/// current state as appearances (as the legacy poller did). Events carry
/// the source's own `seq` (1, 2, … per process) and a `tx_id` that is a
/// ULID monotonic within the source.
///
/// Cancel-safe: see `Scanner::rescan`; events leave the pending queue only
/// when `poll` returns them.
pub struct FsPollSource {
    scanner: Scanner,
    name: String,
}

impl FsPollSource {
    /// A source for the root at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        FsPollSource {
            name: format!("{SOURCE}:{}", root.display()),
            scanner: Scanner::new(root, SOURCE),
        }
    }

    /// Bounds one poll to `n` events (the rest come with the next polls,
    /// before any new scan).
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.scanner.max_batch = Some(n.max(1));
        self
    }
}

impl SentinelEventSource for FsPollSource {
    async fn poll(&mut self) -> Result<Vec<Event>, SourceError> {
        if !self.scanner.has_pending() {
            self.scanner.rescan().await?;
        }
        Ok(self.scanner.take())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/coord-root");
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
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/coord-root");
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
