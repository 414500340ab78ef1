//! The lifecycle manager against a real writer and SQLite store, with a
//! mock runtime and agent: every transition, a probe error, and stop
//! semantics.

use crate::lifecycle::*;
use coord_core::{Command, Probes};
use coord_engine::hub::Hub;
use coord_engine::timers::Renewals;
use coord_engine::tokens::TokenCache;
use coord_engine::writer::{self, internal, WriterConfig, WriterHandle};
use coord_proto::view::Session;
use coord_proto::{Event, LifeState, Payload, Timestamp};
use coord_store::{EventLog, Retention, SqliteLog, SyncMode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Scripted answers per session id.
#[derive(Default)]
struct Mock {
    alive: Script<bool>,
    activity: Script<Activity>,
}

impl Mock {
    fn set_alive(&self, id: &str, v: Result<Option<bool>, String>) {
        self.alive.lock().expect("lock").insert(id.into(), v);
    }
    fn set_activity(&self, id: &str, v: Result<Option<Activity>, String>) {
        self.activity.lock().expect("lock").insert(id.into(), v);
    }
}

/// Scripted answers of one probe, per session id.
type Script<T> = Mutex<HashMap<String, Result<Option<T>, String>>>;

/// The scripted answer for `s` (`Ok(None)` when there is none).
fn answer<T: Clone>(script: &Script<T>, s: &Session, probe: &str) -> Result<Option<T>, ProbeError> {
    match script.lock().expect("lock").get(&s.session_id).cloned() {
        None => Ok(None),
        Some(Ok(v)) => Ok(v),
        Some(Err(m)) => Err(ProbeError::new(probe, m)),
    }
}

/// A session is probed when it has a script (fixed at registration, as a
/// tmux name or transcript path would be).
fn scripted<T>(script: &Script<T>, s: &Session) -> bool {
    script.lock().expect("lock").contains_key(&s.session_id)
}

struct MockRuntime(Arc<Mock>);
struct MockAgent(Arc<Mock>);

impl Runtime for MockRuntime {
    fn is_alive<'a>(&'a self, s: &'a Session) -> BoxFuture<'a, Result<Option<bool>, ProbeError>> {
        let r = answer(&self.0.alive, s, "mock-runtime");
        Box::pin(async move { r })
    }
    fn needs_probe(&self, s: &Session) -> bool {
        scripted(&self.0.alive, s)
    }
}

impl Agent for MockAgent {
    fn detect_activity<'a>(
        &'a self,
        s: &'a Session,
    ) -> BoxFuture<'a, Result<Option<Activity>, ProbeError>> {
        let r = answer(&self.0.activity, s, "mock-agent");
        Box::pin(async move { r })
    }
    fn needs_probe(&self, s: &Session) -> bool {
        scripted(&self.0.activity, s)
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    writer: WriterHandle,
    hub: Arc<Hub>,
    store: SqliteLog,
    renewals: Arc<Renewals>,
    mock: Arc<Mock>,
    // Dropping it would stop the writer.
    _stop: tokio_util::sync::CancellationToken,
}

const TH: Thresholds = Thresholds {
    idle_after_ms: 300,
    stale_after_pct: 50,
    probe_interval_ms: 30,
};

async fn rig() -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteLog::open(&dir.path().join("t.db"), SyncMode::Normal).expect("store");
    let state = writer::load_state(&store).await.expect("state");
    let hub = Hub::new(state.head, 1024);
    let renewals = Arc::new(Renewals::default());
    let (writer, _join, stop) = writer::spawn(
        state,
        store.clone(),
        hub.clone(),
        Arc::new(TokenCache::default()),
        WriterConfig {
            snapshot_every: 10_000,
            retention: Retention::default(),
            renewals: renewals.clone(),
            leases: Default::default(),
            metrics: Default::default(),
            daemon_id: None,
            role: None,
            forward: None,
        },
    );
    Rig {
        _dir: dir,
        writer,
        hub,
        store,
        renewals,
        mock: Arc::new(Mock::default()),
        _stop: stop,
    }
}

impl Rig {
    fn manager(&self) -> LifecycleHandle {
        LifecycleManager::spawn(
            LifecycleConfig {
                thresholds: TH,
                runtime: Arc::new(MockRuntime(self.mock.clone())),
                agent: Arc::new(MockAgent(self.mock.clone())),
                observed: Default::default(),
                daemon_id: None,
            },
            self.writer.clone(),
            self.hub.clone(),
            self.store.clone(),
            self.renewals.clone(),
        )
    }

    async fn run(&self, cmd: Command) {
        self.writer.write(internal(cmd)).await.expect("write");
    }

    async fn register(&self, id: &str, ttl_ms: u64) {
        self.run(Command::Register {
            session_id: id.into(),
            role: String::new(),
            task: String::new(),
            blob: serde_json::json!({}),
            phase: "starting".into(),
            pid: None,
            parent_session: None,
            ttl_ms,
            probes: Probes::default(),
            expiry: Default::default(),
            extra: Default::default(),
        })
        .await;
    }

    async fn heartbeat(&self, id: &str) {
        let mut w = internal(Command::Heartbeat {
            session_id: id.into(),
            phase: None,
            at: Timestamp::now(),
            log_always: false,
            reported: None,
        });
        w.source = writer::API.into();
        self.writer.write(w).await.expect("heartbeat");
    }

    async fn state(&self, id: &str) -> Option<LifeState> {
        let id = id.to_string();
        self.writer
            .read(move |s| s.view.sessions.get(&id).map(|s| s.state))
            .await
            .expect("read")
    }

    /// Waits (at most 30 s, a ceiling for a loaded machine, not an
    /// expectation) until `id` is in state `want`.
    async fn wait_state(&self, id: &str, want: Option<LifeState>) {
        for _ in 0..3000 {
            if self.state(id).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{id} never reached {want:?}; it is {:?}",
            self.state(id).await
        );
    }

    async fn events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            let batch = self.store.read(cursor, 1000).await.expect("read");
            if batch.is_empty() {
                return out;
            }
            for s in batch {
                cursor = s.seq;
                out.push(Event::from_json(&s.json).expect("event"));
            }
        }
    }

    async fn transitions(&self, id: &str) -> Vec<(LifeState, LifeState)> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.session_id.as_deref() == Some(id))
            .filter_map(|e| match e.payload {
                Payload::SessionState(s) => Some((s.from, s.to)),
                _ => None,
            })
            .collect()
    }
}

fn activity(waiting: bool) -> Result<Option<Activity>, String> {
    Ok(Some(Activity {
        at: Timestamp::now(),
        waiting_for_input: waiting,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_is_recorded() {
    use LifeState::*;
    let r = rig().await;
    let _m = r.manager();
    // Which sessions are probed is fixed at registration (as a tmux name or
    // a transcript path would be): s1's agent and runtime are, from the
    // start, with nothing to report yet.
    r.mock.set_activity("s1", Ok(None));
    r.mock.set_alive("s1", Ok(Some(true)));
    // A 12 s lease: stale after 6 s without a heartbeat, long enough that
    // the walk through the other states ends first even on a loaded
    // machine (at 4 s a busy CI machine saw the lease run out mid-walk).
    r.register("s1", 12_000).await;
    r.register("peer", 60_000).await;
    r.wait_state("s1", Some(Starting)).await;
    // starting -> active: it sends mail.
    r.run(Command::Deliver {
        to_session: "peer".into(),
        msg_id: "m1".into(),
        kind: "note".into(),
        from_session: Some("s1".into()),
        size: 0,
        extra: Default::default(),
    })
    .await;
    r.wait_state("s1", Some(Active)).await;
    // active -> idle: nothing for the idle threshold.
    r.wait_state("s1", Some(Idle)).await;
    // idle -> needs_input: its transcript waits for a human.
    r.mock.set_activity("s1", activity(true));
    r.wait_state("s1", Some(NeedsInput)).await;
    // needs_input -> active: it works again.
    r.mock.set_activity("s1", activity(false));
    r.wait_state("s1", Some(Active)).await;
    r.mock.set_activity("s1", Ok(None));
    // -> stale: no heartbeat for half its lease; a renewal brings it back.
    r.wait_state("s1", Some(Stale)).await;
    r.heartbeat("s1").await;
    for _ in 0..1000 {
        if !matches!(r.state("s1").await, Some(Stale)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(r.state("s1").await, Some(Stale), "a heartbeat ends stale");
    // -> dead: its runtime is gone; the session ends with it.
    r.mock.set_alive("s1", Ok(Some(false)));
    r.wait_state("s1", None).await;

    let t = r.transitions("s1").await;
    let expect_in_order = [
        (Starting, Active),
        (Active, Idle),
        (Idle, NeedsInput),
        (NeedsInput, Active),
    ];
    let mut at = 0;
    for want in expect_in_order {
        let pos = t[at..]
            .iter()
            .position(|x| *x == want)
            .unwrap_or_else(|| panic!("{want:?} missing after {at} in {t:?}"));
        at += pos + 1;
    }
    assert!(t[at..].iter().any(|(_, to)| *to == Stale), "{t:?}");
    let (from_stale, _) = t
        .iter()
        .rposition(|(f, _)| *f == Stale)
        .map(|i| t[i])
        .expect("left stale");
    assert_eq!(from_stale, Stale);
    assert_eq!(t.last().map(|x| x.1), Some(Dead), "{t:?}");
    let events = r.events().await;
    let dereg = events
        .iter()
        .rev()
        .find(|e| matches!(e.payload, Payload::SessionDereg(_)))
        .expect("dereg");
    match &dereg.payload {
        Payload::SessionDereg(d) => {
            assert_eq!(d.reason, coord_proto::DeregReason::RuntimeGone)
        }
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_probe_is_an_event_and_the_loop_goes_on() {
    let r = rig().await;
    let _m = r.manager();
    r.mock
        .set_alive("broken", Err("tmux: command not found".into()));
    r.register("broken", 60_000).await;
    r.register("fine", 60_000).await;
    // Several probe intervals pass: one event per distinct failure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.wait_state("fine", Some(LifeState::Idle)).await;
    let errors: Vec<Event> = r
        .events()
        .await
        .into_iter()
        .filter(|e| matches!(e.payload, Payload::SessionProbeError(_)))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].session_id.as_deref(), Some("broken"));
    match &errors[0].payload {
        Payload::SessionProbeError(p) => {
            assert_eq!(p.probe, "mock-runtime");
            assert!(p.message.contains("not found"));
        }
        _ => unreachable!(),
    }
    // The broken session lives on and keeps its own transitions.
    r.wait_state("broken", Some(LifeState::Idle)).await;
    // A new failure is a new event.
    r.mock
        .set_alive("broken", Err("tmux: server exited".into()));
    for _ in 0..1000 {
        let n = r
            .events()
            .await
            .iter()
            .filter(|e| matches!(e.payload, Payload::SessionProbeError(_)))
            .count();
        if n == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the second, different failure was not recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_does_not_stop_the_manager_but_stop_does() {
    let r = rig().await;
    drop(r.manager());
    r.register("a", 60_000).await;
    // Still running: the idle threshold moves it.
    r.wait_state("a", Some(LifeState::Idle)).await;

    let r = rig().await;
    let m = r.manager();
    r.register("b", 60_000).await;
    r.wait_state("b", Some(LifeState::Idle)).await;
    m.stop().await;
    r.register("c", 60_000).await;
    tokio::time::sleep(Duration::from_millis(3 * TH.idle_after_ms)).await;
    assert_eq!(
        r.state("c").await,
        Some(LifeState::Starting),
        "a stopped manager writes nothing"
    );
}

/// A queued acquire and the release that grants it, committed in one batch:
/// the waiter is answered from the state (the grant's event went by before
/// the wait was registered). Regression test for a lost wake-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_granted_in_its_own_batch_is_answered() {
    let r = rig().await;
    r.register("holder", 60_000).await;
    r.register("waiter", 60_000).await;
    let acquire = |who: &str, wait: bool| Command::Acquire {
        session_id: who.into(),
        resource: "db".into(),
        mode: coord_proto::LockMode::Exclusive,
        ttl_ms: None,
        wait,
        extra: Default::default(),
    };
    r.run(acquire("holder", false)).await;
    // Hold the writer busy so both requests below land in one batch.
    let busy = r
        .writer
        .read(|_| std::thread::sleep(Duration::from_millis(200)));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut wait = internal(acquire("waiter", true));
    wait.extras.wait = Some(tx);
    let release = internal(Command::Release {
        session_id: "holder".into(),
        resource: "db".into(),
        force: false,
    });
    let (_, a, b) = tokio::join!(busy, r.writer.write(wait), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.writer.write(release).await
    });
    a.expect("wait queued");
    b.expect("released");
    let notice = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the waiter is answered, not left hanging")
        .expect("notice");
    assert!(
        matches!(notice, coord_engine::waits::WaitNotice::Granted(_)),
        "{notice:?}"
    );
}
