//! The lifecycle manager: keeps every live session's [`LifeState`] in step
//! with reality and records each transition as a `session.state` event
//! (PROTOCOL §6.1).
//!
//! It owns the per-session inputs (last activity, last heartbeat, what the
//! agent's transcript says) and the deadlines derived from them; it must
//! not change the state itself: every decision is a command to the writer,
//! which validates it against the view (a transition the view has moved
//! past is a no-op). The decision is the pure function [`derive`], tested
//! on its own; the loop around it is I/O.
//!
//! What wakes it, and nothing else:
//! * a commit (the hub's head moves): registrations, deregistrations and
//!   every event that is a session's activity;
//! * a bare lease renewal, which is not an event, noted by the writer on
//!   [`Renewals`];
//! * the earliest deadline (idle or stale threshold of some session);
//! * the probe interval, only while some session has a runtime that cannot
//!   notify (tmux) or activity files to look at. A process runtime needs no
//!   probe: the writer's pidfd watch ends the session the moment its
//!   process exits, and that end is the `dead` transition.
//!
//! A probe that fails for one session becomes a `session.probe_error`
//! event (once per distinct failure) and the loop goes on. Only a store
//! failure holds it up: the write is retried with backoff until it lands
//! or the manager is stopped.

pub use crate::probes::{Activity, Agent, BoxFuture, ProbeError, Runtime};
use coord_core::Command;
use coord_engine::deadline::{sleep_until, Deadlines};
use coord_engine::hub::{Hub, HubError, LogCursor};
use coord_engine::timers::Renewals;
use coord_engine::writer::{internal, WriterHandle};
use coord_proto::view::Session;
use coord_proto::{ErrorCode, Event, LifeState, Payload, Timestamp};
use coord_store::EventLog;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The thresholds between states (PROTOCOL §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// No activity for this long makes a session `idle`, ms.
    pub idle_after_ms: u64,
    /// No heartbeat for this share of its lease makes a session `stale`,
    /// percent (1..=100).
    pub stale_after_pct: u8,
    /// Probe interval for runtimes that cannot notify and for activity
    /// files, ms.
    pub probe_interval_ms: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            idle_after_ms: 60_000,
            stale_after_pct: 50,
            probe_interval_ms: 5_000,
        }
    }
}

impl Thresholds {
    fn stale_after_ms(&self, ttl_ms: u64) -> i64 {
        (ttl_ms * u64::from(self.stale_after_pct.clamp(1, 100)) / 100) as i64
    }
}

/// What [`derive`] decides from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// Registration time, ms.
    pub registered_ms: i64,
    /// Last activity, ms, and what it was (`heartbeat`, `inbox`, …).
    pub last_activity: Option<(i64, &'static str)>,
    /// Last heartbeat or lease renewal, ms.
    pub last_heartbeat_ms: i64,
    /// The transcript ends waiting for input.
    pub waiting_for_input: bool,
    /// The state the agent last reported of itself (a hook), with its
    /// reason: it holds until the next report.
    pub reported: Option<(LifeState, String)>,
    /// Lease, ms.
    pub ttl_ms: u64,
}

/// The state a session should be in at `now_ms`, why, and when (ms) the
/// answer would change by itself if nothing else happened.
///
/// Order of precedence: `stale` (heartbeats stopped) over what the agent
/// reported of itself (a hook: first-hand, so no guess overrides it) over
/// `needs_input` from the transcript over `starting`/`active`/`idle`.
/// `dead` is never derived here: it comes from the runtime.
pub fn derive(i: &Inputs, now_ms: i64, th: &Thresholds) -> (LifeState, String, Option<i64>) {
    let stale_at = i.last_heartbeat_ms + th.stale_after_ms(i.ttl_ms);
    if now_ms >= stale_at {
        let silent = now_ms - i.last_heartbeat_ms;
        return (
            LifeState::Stale,
            format!("no heartbeat for {silent} ms"),
            None,
        );
    }
    if let Some((state, why)) = &i.reported {
        return (*state, why.clone(), Some(stale_at));
    }
    if i.waiting_for_input {
        return (
            LifeState::NeedsInput,
            "transcript waits for input".into(),
            Some(stale_at),
        );
    }
    let idle = th.idle_after_ms as i64;
    match i.last_activity {
        None if now_ms >= i.registered_ms + idle => (
            LifeState::Idle,
            format!("no activity in {idle} ms since registration"),
            Some(stale_at),
        ),
        None => (
            LifeState::Starting,
            "registered".into(),
            Some(stale_at.min(i.registered_ms + idle)),
        ),
        Some((at, _)) if now_ms >= at + idle => (
            LifeState::Idle,
            format!("no activity for {idle} ms"),
            Some(stale_at),
        ),
        Some((at, what)) => (
            LifeState::Active,
            format!("activity: {what}"),
            Some(stale_at.min(at + idle)),
        ),
    }
}

/// How the manager is set up.
#[derive(Clone)]
pub struct LifecycleConfig {
    /// The thresholds.
    pub thresholds: Thresholds,
    /// Liveness probe (default: [`HostRuntime`]).
    pub runtime: Arc<dyn Runtime>,
    /// Activity probe (default: [`FileAgent`]).
    pub agent: Arc<dyn Agent>,
    /// Where the manager reports its probes for `/v1/status`.
    pub observed: Arc<crate::observed::Observed>,
    /// On a shared log, this daemon's id: only the sessions registered
    /// with it are tracked (the others' heartbeats and processes are seen
    /// by their own daemons, which record their states).
    pub daemon_id: Option<String>,
}

impl std::fmt::Debug for LifecycleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecycleConfig")
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            thresholds: Thresholds::default(),
            runtime: Arc::new(crate::probes::HostRuntime::default()),
            agent: Arc::new(crate::probes::FileAgent),
            observed: Default::default(),
            daemon_id: None,
        }
    }
}

/// The running manager. Dropping it leaves the manager running (it lives
/// as long as the writer); [`LifecycleHandle::stop`] stops it.
pub struct LifecycleHandle {
    stop: CancellationToken,
    join: JoinHandle<()>,
}

impl LifecycleHandle {
    /// Stops the manager and waits until it has: a write it is retrying is
    /// abandoned, nothing else is left half done.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "lifecycle manager task failed");
        }
    }
}

/// The manager; see the module docs.
pub struct LifecycleManager;

struct Tracked {
    session: Session,
    state: LifeState,
    inputs: Inputs,
    /// Whether a probe looks at it (fixed at registration).
    probed: bool,
    probe_error: Option<ProbeError>,
}

struct Run<L> {
    config: LifecycleConfig,
    writer: WriterHandle,
    hub: Arc<Hub>,
    /// The committed events not yet observed.
    log: LogCursor<L>,
    renewals: Arc<Renewals>,
    stop: CancellationToken,
    sessions: HashMap<String, Tracked>,
    /// When to derive each session's state again (ms), earliest first, so
    /// a wake-up costs the sessions that are due and not every tracked
    /// one. A session without one is derived only when something happens
    /// to it.
    due: Deadlines<i64, String>,
    /// Tracked sessions a probe looks at.
    probed: usize,
}

impl LifecycleManager {
    /// Starts the manager on the writer's committed state.
    pub fn spawn<L: EventLog + Clone>(
        config: LifecycleConfig,
        writer: WriterHandle,
        hub: Arc<Hub>,
        store: L,
        renewals: Arc<Renewals>,
    ) -> LifecycleHandle {
        let stop = CancellationToken::new();
        let run = Run {
            config,
            writer,
            log: LogCursor::new(&hub, store, 0),
            hub,
            renewals,
            stop: stop.clone(),
            sessions: HashMap::new(),
            due: Deadlines::default(),
            probed: 0,
        };
        let join = tokio::spawn(run.main());
        LifecycleHandle { stop, join }
    }
}

fn instant_of(ms: i64) -> Instant {
    let now = Timestamp::now().as_millis();
    Instant::now() + Duration::from_millis((ms - now).max(0) as u64)
}

impl<L: EventLog + Clone> Run<L> {
    fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    async fn main(mut self) {
        // The watch is taken before the first read of the state: a commit
        // between the two then still marks it changed. Taken after, such a
        // commit went unseen until the next one (a session registered as
        // the manager started was never moved to idle on a quiet log).
        let mut head = self.hub.watch();
        if !self.resync().await {
            return;
        }
        let renewals = self.renewals.clone();
        let mut next_probe: Option<Instant> = None;
        loop {
            if self.stopped() {
                break;
            }
            self.evaluate_all().await;
            let probed = self.probed as u64;
            self.config.observed.lifecycle(|l| {
                l.probing = probed > 0;
                l.probed_sessions = probed;
            });
            next_probe = match (self.probed > 0, next_probe) {
                (false, _) => None,
                (true, Some(at)) => Some(at),
                (true, None) => Some(
                    Instant::now()
                        + Duration::from_millis(self.config.thresholds.probe_interval_ms.max(1)),
                ),
            };
            let deadline = self.due.next();
            let wake = match (deadline.map(instant_of), next_probe) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let stop = self.stop.clone();
            tokio::select! {
                _ = stop.cancelled() => break,
                r = head.changed() => {
                    if r.is_err() {
                        break;
                    }
                    if !self.follow().await {
                        break;
                    }
                }
                _ = renewals.notify.notified() => {
                    for (sid, at) in renewals.take() {
                        if let Some(t) = self.sessions.get_mut(&sid) {
                            t.inputs.last_heartbeat_ms = t.inputs.last_heartbeat_ms.max(at);
                            // A stale session has no deadline: look now.
                            if t.state == LifeState::Stale {
                                self.schedule(&sid, Some(at));
                            }
                        }
                    }
                }
                _ = sleep_until(wake) => {
                    if next_probe.is_some_and(|at| at <= Instant::now()) {
                        next_probe = None;
                        self.probe_all().await;
                    }
                }
            }
        }
        tracing::debug!("lifecycle manager stopped");
    }

    fn probed(&self, s: &Session) -> bool {
        self.config.runtime.needs_probe(s) || self.config.agent.needs_probe(s)
    }

    /// (Re)loads the live sessions from the view. False when the writer is
    /// gone.
    async fn resync(&mut self) -> bool {
        let Ok((sessions, head)) = self
            .writer
            .read(|s| (s.view.sessions.clone(), s.head))
            .await
        else {
            return false;
        };
        let now = Timestamp::now().as_millis();
        let idle = self.config.thresholds.idle_after_ms as i64;
        self.sessions.clear();
        self.due = Deadlines::default();
        self.probed = 0;
        for s in sessions.into_values() {
            // Leases got a fresh TTL at start, so heartbeats count from now;
            // activity is placed so that the view's state is what derive
            // would say, until something new happens.
            let last_activity = match s.state {
                LifeState::Starting => None,
                LifeState::Idle => Some((now - idle, "restart")),
                _ => Some((now, "restart")),
            };
            self.track(s, now, last_activity);
        }
        self.log.seek(head);
        let ids: Vec<Session> = self.sessions.values().map(|t| t.session.clone()).collect();
        for s in ids {
            self.check_alive(&s).await;
        }
        true
    }

    fn track(&mut self, s: Session, now: i64, last_activity: Option<(i64, &'static str)>) {
        if s.daemon != self.config.daemon_id {
            return;
        }
        let inputs = Inputs {
            registered_ms: s.registered_at.as_millis().min(now),
            last_activity,
            last_heartbeat_ms: now,
            waiting_for_input: false,
            // What a hook said before a restart still holds.
            reported: s
                .reported
                .as_ref()
                .map(|r| (r.state, format!("{}: {}", r.source, r.reason))),
            ttl_ms: s.ttl_ms,
        };
        let sid = s.session_id.clone();
        self.untrack(&sid);
        let probed = self.probed(&s);
        self.probed += usize::from(probed);
        self.sessions.insert(
            sid.clone(),
            Tracked {
                state: s.state,
                session: s,
                inputs,
                probed,
                probe_error: None,
            },
        );
        self.schedule(&sid, Some(now));
    }

    fn untrack(&mut self, sid: &str) {
        self.schedule(sid, None);
        if let Some(t) = self.sessions.remove(sid) {
            self.probed -= usize::from(t.probed);
        }
    }

    /// Sets (or clears) when `sid` is derived again.
    fn schedule(&mut self, sid: &str, at: Option<i64>) {
        match at {
            Some(at) if self.sessions.contains_key(sid) => self.due.set(sid.to_string(), at),
            _ => self.due.clear(&sid.to_string()),
        }
    }

    /// Reads every committed event after the cursor. False when stopping.
    async fn follow(&mut self) -> bool {
        loop {
            let batch = match self.log.next_ready().await {
                Ok(b) => b,
                Err(HubError::Compacted { .. }) => return self.resync().await,
                Err(e) => {
                    tracing::warn!(error = ?e, "lifecycle manager cannot read the log; resyncing");
                    return self.resync().await;
                }
            };
            if batch.is_empty() {
                return true;
            }
            for p in batch {
                self.observe(&p.event).await;
            }
        }
    }

    async fn observe(&mut self, e: &Event) {
        let now = Timestamp::now().as_millis();
        let sid = e.session_id.as_deref().unwrap_or("");
        let mut activity: Vec<(&str, &'static str)> = Vec::new();
        match &e.payload {
            Payload::SessionRegister(p) => {
                let s = coord_core::registered_session(sid, e, p);
                self.track(s.clone(), now, None);
                if let Some(t) = self.sessions.get_mut(sid) {
                    t.inputs.registered_ms = now;
                }
                self.check_alive(&s).await;
            }
            Payload::SessionDereg(_) => {
                self.untrack(sid);
            }
            Payload::SessionState(p) => {
                if let Some(t) = self.sessions.get_mut(sid) {
                    t.state = p.to;
                }
            }
            Payload::SessionHeartbeat(p) => {
                if let Some(t) = self.sessions.get_mut(sid) {
                    t.inputs.last_heartbeat_ms = now;
                    if let Some(r) = &p.reported {
                        t.inputs.reported = Some((r.state, format!("{}: {}", r.source, r.reason)));
                    }
                }
                activity.push((sid, "heartbeat"));
            }
            Payload::InboxDeliver(p) => {
                if let Some(f) = &p.from_session {
                    activity.push((f, "inbox"));
                }
            }
            Payload::InboxAck(p) => activity.push((&p.to_session, "inbox")),
            Payload::LockAcquire(p) => activity.push((&p.owner_session, "lock")),
            Payload::LockWait(p) => activity.push((&p.owner_session, "lock")),
            Payload::LockRelease(p) if p.reason == coord_proto::ReleaseReason::Released => {
                activity.push((&p.owner_session, "lock"))
            }
            Payload::LockDelegate(p) => activity.push((&p.from_session, "lock")),
            Payload::DispatchAck(p) => activity.push((&p.assignee, "dispatch")),
            Payload::DispatchComplete(p) => activity.push((&p.assignee, "dispatch")),
            Payload::DispatchIssue(p) => {
                if let Some(f) = &p.from_session {
                    activity.push((f, "dispatch"));
                }
            }
            Payload::SessionReport(_) => activity.push((sid, "report")),
            _ => {}
        }
        for (who, what) in activity {
            if let Some(t) = self.sessions.get_mut(who) {
                if t.inputs.last_activity.is_none_or(|(at, _)| at <= now) {
                    t.inputs.last_activity = Some((now, what));
                }
                // Activity of its own means the agent is no longer waiting.
                if what != "heartbeat" {
                    t.inputs.waiting_for_input = false;
                }
                self.schedule(who, Some(now));
            }
        }
    }

    /// Asks the runtime once (at registration and restart); a session whose
    /// runtime is already gone ends now.
    async fn check_alive(&mut self, s: &Session) {
        let r = self.config.runtime.is_alive(s).await;
        self.after_alive(s, r).await;
    }

    async fn after_alive(&mut self, s: &Session, r: Result<Option<bool>, ProbeError>) {
        match r {
            Ok(Some(false)) => {
                let cmd = match (&s.tmux, s.pid) {
                    // A process that is gone ends exactly as the writer's
                    // pidfd watch would end it (whichever comes first wins,
                    // the other changes nothing), with its exit status if
                    // it can still be read.
                    (None, Some(pid)) => Command::ProcessExited {
                        session_id: s.session_id.clone(),
                        registered_seq: s.registered_seq,
                        exit_code: coord_engine::pidfd::zombie_exit_code(pid),
                    },
                    (tmux, _) => Command::RuntimeGone {
                        session_id: s.session_id.clone(),
                        registered_seq: s.registered_seq,
                        reason: match tmux {
                            Some(t) => format!("tmux session {t} is gone"),
                            None => "runtime is gone".into(),
                        },
                    },
                };
                self.submit(cmd).await;
            }
            Ok(_) => {}
            Err(pe) => self.probe_failed(s, pe).await,
        }
    }

    async fn probe_failed(&mut self, s: &Session, pe: ProbeError) {
        let Some(t) = self.sessions.get_mut(&s.session_id) else {
            return;
        };
        if t.probe_error.as_ref() == Some(&pe) {
            return;
        }
        t.probe_error = Some(pe.clone());
        self.config.observed.lifecycle(|l| {
            *l.probe_errors.entry(s.session_id.clone()).or_default() += 1;
        });
        tracing::info!(session = %s.session_id, probe = %pe.probe, error = %pe.message, "probe failed");
        self.submit(Command::ProbeError {
            session_id: s.session_id.clone(),
            registered_seq: s.registered_seq,
            probe: pe.probe,
            message: pe.message,
        })
        .await;
    }

    async fn probe_all(&mut self) {
        let targets: Vec<Session> = self
            .sessions
            .values()
            .filter(|t| t.probed)
            .map(|t| t.session.clone())
            .collect();
        let probed = targets.len() as u64;
        self.config.observed.lifecycle(|l| l.probes_run += probed);
        for s in targets {
            if self.stopped() {
                return;
            }
            let mut failed = None;
            if self.config.runtime.needs_probe(&s) {
                match self.config.runtime.is_alive(&s).await {
                    Ok(Some(false)) => {
                        self.after_alive(&s, Ok(Some(false))).await;
                        continue;
                    }
                    Ok(_) => {}
                    Err(pe) => failed = Some(pe),
                }
            }
            if self.config.agent.needs_probe(&s) {
                match self.config.agent.detect_activity(&s).await {
                    Ok(Some(a)) => {
                        if let Some(t) = self.sessions.get_mut(&s.session_id) {
                            let at = a.at.as_millis();
                            if t.inputs.last_activity.is_none_or(|(last, _)| at > last) {
                                t.inputs.last_activity = Some((at, "agent"));
                            }
                            t.inputs.waiting_for_input = a.waiting_for_input;
                            self.schedule(&s.session_id, Some(Timestamp::now().as_millis()));
                        }
                    }
                    Ok(None) => {}
                    Err(pe) => failed = failed.or(Some(pe)),
                }
            }
            match failed {
                Some(pe) => self.probe_failed(&s, pe).await,
                None => {
                    if let Some(t) = self.sessions.get_mut(&s.session_id) {
                        t.probe_error = None;
                    }
                }
            }
        }
    }

    /// Re-derives every session whose deadline has come and writes the
    /// transitions.
    async fn evaluate_all(&mut self) {
        let now = Timestamp::now().as_millis();
        let th = self.config.thresholds;
        let mut writes = Vec::new();
        for sid in self.due.pop_due(now, usize::MAX) {
            let Some(t) = self.sessions.get_mut(&sid) else {
                continue;
            };
            let (to, reason, next) = derive(&t.inputs, now, &th);
            if to != t.state {
                writes.push(Command::SetState {
                    session_id: t.session.session_id.clone(),
                    registered_seq: t.session.registered_seq,
                    from: t.state,
                    to,
                    reason,
                });
                // The event will say so too; assuming it now keeps one
                // transition from being written twice.
                t.state = to;
            }
            self.schedule(&sid, next);
        }
        for w in writes {
            self.submit(w).await;
        }
    }

    /// Writes one command; store failures are retried with backoff (the
    /// only failure that holds the manager up), rejections are dropped.
    async fn submit(&mut self, cmd: Command) {
        let mut backoff =
            coord_client::Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            match self.writer.write(internal(cmd.clone())).await {
                Ok(_) => return,
                Err(e) if e.code() == ErrorCode::StoreUnavailable => {
                    let pause = backoff.next_delay();
                    tracing::warn!(command = ?cmd, error = %e, retry_in_ms = pause.as_millis() as u64, "lifecycle write failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "lifecycle write refused");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TH: Thresholds = Thresholds {
        idle_after_ms: 1_000,
        stale_after_pct: 50,
        probe_interval_ms: 100,
    };

    fn inputs() -> Inputs {
        Inputs {
            registered_ms: 0,
            last_activity: None,
            last_heartbeat_ms: 0,
            waiting_for_input: false,
            reported: None,
            ttl_ms: 10_000,
        }
    }

    /// A state the agent reported of itself holds whatever the clock and
    /// the transcript say, until the lease stops being renewed.
    #[test]
    fn a_reported_state_holds_until_the_next_report_or_staleness() {
        let i = Inputs {
            last_activity: Some((1_000, "heartbeat")),
            last_heartbeat_ms: 1_000,
            waiting_for_input: false,
            reported: Some((
                LifeState::NeedsInput,
                "claude:PermissionRequest: Write a.rs".into(),
            )),
            ..inputs()
        };
        let (s, why, _) = derive(&i, 5_000, &TH);
        assert_eq!(
            s,
            LifeState::NeedsInput,
            "not idle after the idle threshold"
        );
        assert!(why.contains("PermissionRequest"), "{why}");
        let idle = Inputs {
            reported: Some((LifeState::Idle, "claude:Stop: turn ended".into())),
            waiting_for_input: true,
            ..i.clone()
        };
        assert_eq!(
            derive(&idle, 1_100, &TH).0,
            LifeState::Idle,
            "no guess overrides it"
        );
        assert_eq!(derive(&i, 6_000, &TH).0, LifeState::Stale);
    }

    #[test]
    fn starting_until_activity_or_idle_threshold() {
        let (s, _, next) = derive(&inputs(), 500, &TH);
        assert_eq!(s, LifeState::Starting);
        assert_eq!(next, Some(1_000));
        let (s, _, _) = derive(&inputs(), 1_000, &TH);
        assert_eq!(s, LifeState::Idle);
    }

    #[test]
    fn activity_makes_active_then_idle() {
        let i = Inputs {
            last_activity: Some((2_000, "inbox")),
            last_heartbeat_ms: 2_000,
            ..inputs()
        };
        let (s, why, next) = derive(&i, 2_500, &TH);
        assert_eq!(
            (s, why.as_str(), next),
            (LifeState::Active, "activity: inbox", Some(3_000))
        );
        assert_eq!(derive(&i, 3_000, &TH).0, LifeState::Idle);
    }

    #[test]
    fn stale_wins_over_everything_and_needs_input_over_activity() {
        let i = Inputs {
            last_activity: Some((4_000, "inbox")),
            waiting_for_input: true,
            ..inputs()
        };
        assert_eq!(derive(&i, 4_100, &TH).0, LifeState::NeedsInput);
        // Half of a 10 s lease without a heartbeat.
        let (s, why, next) = derive(&i, 5_000, &TH);
        assert_eq!((s, next), (LifeState::Stale, None));
        assert!(why.contains("5000 ms"), "{why}");
    }
}
