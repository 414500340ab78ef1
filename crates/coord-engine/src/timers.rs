//! Time-driven ends: lease and lock-TTL deadlines, and what the rest of
//! the daemon learns about leases (renewals are not events).
//!
//! [`Timers`] follows the committed events the writer hands it (a
//! registration sets a lease deadline, a grant with a TTL sets a lock
//! deadline, an end or a release clears them) and, when the writer wakes
//! at [`Timers::next`], turns due deadlines into `ExpireLease` /
//! `ExpireLock` commands. Those commands carry the registration or grant
//! they were set for, so one that lost a race (a renewal, a release) is a
//! no-op in the state machine. It must not write anything itself: the
//! writer owns every commit.
//!
//! [`Leases`] (renewal and expiry per live session, for the API) and
//! [`Renewals`] (bare renewals, for the lifecycle manager) are shared
//! read-mostly tables the writer keeps up to date here.

use crate::deadline::Deadlines;
use coord_core::{Command, State};
use coord_proto::view::Lease;
use coord_proto::{Event, Payload, Timestamp};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKey {
    /// A session's lease, for one registration.
    Lease {
        /// The session.
        session_id: String,
        /// The seq of the registration the lease belongs to.
        registered_seq: u64,
    },
    /// A lock's TTL, for one grant.
    LockTtl {
        /// The locked resource.
        resource: String,
        /// The holder.
        session_id: String,
        /// The seq of the grant the TTL belongs to.
        acquired_seq: u64,
    },
}

/// Lease and lock-TTL deadlines.
pub struct Timers {
    due: Deadlines<Instant, TimerKey>,
    /// The registration whose lease timer is set, per session.
    lease_of: HashMap<String, u64>,
    /// The TTL timer of each (resource, holder).
    lock_ttls: HashMap<(String, String), TimerKey>,
    leases: Arc<Leases>,
    /// This daemon's id on a shared log: only sessions registered with it
    /// get a lease timer here (the others' daemons keep theirs).
    daemon_id: Option<String>,
    /// Leases given [`GRACE`] after a late wake-up, not to be given it
    /// again before they are renewed.
    postponed: std::collections::HashSet<TimerKey>,
}

/// How late past a lease's end the writer must wake to count as not
/// having run (paused) rather than merely busy.
pub const LATE: Duration = Duration::from_secs(1);

/// How long a lease that ran out while the writer did not run waits for
/// the renewals sent meanwhile.
pub const GRACE: Duration = Duration::from_secs(2);

impl Timers {
    /// No deadlines; `leases` is kept in step with the lease timers.
    pub fn new(leases: Arc<Leases>, daemon_id: Option<String>) -> Self {
        Timers {
            due: Deadlines::default(),
            lease_of: HashMap::new(),
            lock_ttls: HashMap::new(),
            leases,
            daemon_id,
            postponed: Default::default(),
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.due.next()
    }

    /// The commands of at most `max` deadlines due at `now`, earliest
    /// first (the rest stay due). `running` says whether a session's
    /// watched process still runs (an expiry says so).
    ///
    /// A writer that wakes more than [`LATE`] after a lease ran out was
    /// not running (a SIGSTOP, a suspended VM, a starved process): the
    /// renewals its sessions sent meanwhile wait unread in its sockets.
    /// Such a lease gets [`GRACE`] from now, once, for them to arrive,
    /// instead of ending a live session on the daemon's own stale clock.
    pub fn due(
        &mut self,
        now: Instant,
        max: usize,
        running: impl Fn(&str) -> bool,
    ) -> Vec<Command> {
        if let Some(first) = self.due.next() {
            let late = now.saturating_duration_since(first);
            if late > LATE {
                let mut postponed = 0;
                for key in self.due.pop_due(now, usize::MAX) {
                    let grace =
                        matches!(key, TimerKey::Lease { .. }) && self.postponed.insert(key.clone());
                    if grace {
                        postponed += 1;
                        self.due.set(key, now + GRACE);
                    } else {
                        self.due.set(key, now);
                    }
                }
                if postponed > 0 {
                    tracing::warn!(
                        late_ms = late.as_millis() as u64,
                        leases = postponed,
                        grace_ms = GRACE.as_millis() as u64,
                        "woke up late (paused?); leases that ran out meanwhile wait for the renewals sent during it"
                    );
                }
            }
        }
        self.due
            .pop_due(now, max)
            .into_iter()
            .map(|key| match key {
                TimerKey::Lease {
                    session_id,
                    registered_seq,
                } => {
                    self.postponed.remove(&TimerKey::Lease {
                        session_id: session_id.clone(),
                        registered_seq,
                    });
                    self.lease_of.remove(&session_id);
                    Command::ExpireLease {
                        process_alive: running(&session_id),
                        session_id,
                        registered_seq,
                    }
                }
                TimerKey::LockTtl {
                    resource,
                    session_id,
                    acquired_seq,
                } => {
                    self.lock_ttls
                        .remove(&(resource.clone(), session_id.clone()));
                    Command::ExpireLock {
                        resource,
                        session_id,
                        acquired_seq,
                    }
                }
            })
            .collect()
    }

    /// Starts (or restarts) a lease: `ttl_ms` from now.
    pub fn renew(&mut self, session_id: &str, registered_seq: u64, ttl_ms: u64) {
        self.renew_at(session_id, registered_seq, ttl_ms, Instant::now());
    }

    /// [`renew`](Self::renew) as of `now`.
    pub fn renew_at(&mut self, session_id: &str, registered_seq: u64, ttl_ms: u64, now: Instant) {
        self.leases.renew(session_id, ttl_ms);
        self.lease_of.insert(session_id.to_string(), registered_seq);
        let key = TimerKey::Lease {
            session_id: session_id.to_string(),
            registered_seq,
        };
        self.postponed.remove(&key);
        self.due.set(key, now + Duration::from_millis(ttl_ms));
    }

    /// Follows one committed event.
    pub fn on_event(&mut self, e: &Event) {
        let sid = e.session_id.as_deref().unwrap_or_default();
        match &e.payload {
            Payload::SessionRegister(p) if p.daemon == self.daemon_id => {
                self.renew(sid, e.seq, p.ttl_ms)
            }
            Payload::SessionDereg(_) => {
                self.leases.remove(sid);
                if let Some(registered_seq) = self.lease_of.remove(sid) {
                    let key = TimerKey::Lease {
                        session_id: sid.to_string(),
                        registered_seq,
                    };
                    self.postponed.remove(&key);
                    self.due.clear(&key);
                }
            }
            Payload::LockAcquire(p) => {
                if let Some(ttl) = p.ttl_ms {
                    self.set_lock_ttl(
                        &p.resource,
                        &p.owner_session,
                        e.seq,
                        Instant::now() + Duration::from_millis(ttl),
                    );
                }
            }
            Payload::LockRelease(p) => {
                if let Some(t) = self
                    .lock_ttls
                    .remove(&(p.resource.clone(), p.owner_session.clone()))
                {
                    self.due.clear(&t);
                }
            }
            _ => {}
        }
    }

    fn set_lock_ttl(&mut self, resource: &str, session_id: &str, acquired_seq: u64, at: Instant) {
        let key = TimerKey::LockTtl {
            resource: resource.to_string(),
            session_id: session_id.to_string(),
            acquired_seq,
        };
        let holder = (resource.to_string(), session_id.to_string());
        if let Some(old) = self.lock_ttls.insert(holder, key.clone()) {
            self.due.clear(&old);
        }
        self.due.set(key, at);
    }

    /// After a restart: every lease gets a fresh TTL (renewals are not
    /// logged, so the last one is unknown), lock TTLs resume from their
    /// grant time (the daemon's clock, `acquired_at`).
    pub fn restore(&mut self, state: &State) {
        let now_wall = Timestamp::now().as_millis();
        let now = Instant::now();
        for s in state.view.sessions.values() {
            if s.daemon == self.daemon_id {
                self.renew(&s.session_id, s.registered_seq, s.ttl_ms);
            }
        }
        for l in state.view.locks.values() {
            for h in &l.holders {
                if let Some(ttl) = h.ttl_ms {
                    let left = h.acquired_at.plus_ms(ttl).as_millis() - now_wall;
                    self.set_lock_ttl(
                        &l.resource,
                        &h.session_id,
                        h.acquired_seq,
                        now + Duration::from_millis(left.max(0) as u64),
                    );
                }
            }
        }
    }
}

/// Every live session's lease as the writer holds it: renewals are not
/// events, so this, not the view, knows when a lease was last renewed.
/// Written only through [`Timers`]; read by the API.
#[derive(Default)]
pub struct Leases {
    map: Mutex<HashMap<String, Lease>>,
}

impl Leases {
    /// The lease of `session_id`, if it is live.
    pub fn get(&self, session_id: &str) -> Option<Lease> {
        self.map.lock().ok()?.get(session_id).cloned()
    }

    fn renew(&self, session_id: &str, ttl_ms: u64) {
        let now = Timestamp::now();
        if let Ok(mut m) = self.map.lock() {
            m.insert(
                session_id.to_string(),
                Lease {
                    renewed_at: now,
                    expires_at: now.plus_ms(ttl_ms),
                },
            );
        }
    }

    fn remove(&self, session_id: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(session_id);
        }
    }
}

/// Bare lease renewals, noted by the writer for the lifecycle manager
/// (they are not events). Holds at most one entry per session.
#[derive(Default)]
pub struct Renewals {
    seen: Mutex<HashMap<String, i64>>,
    /// Notified after each renewal noted.
    pub notify: Notify,
}

impl Renewals {
    /// Notes a renewal of `session_id` now.
    pub fn note(&self, session_id: &str) {
        if let Ok(mut m) = self.seen.lock() {
            m.insert(session_id.to_string(), Timestamp::now().as_millis());
        }
        self.notify.notify_one();
    }

    /// Takes every renewal noted since the last call (ms since the epoch,
    /// by session).
    pub fn take(&self) -> HashMap<String, i64> {
        self.seen
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiries(cmds: &[Command]) -> usize {
        cmds.iter()
            .filter(|c| matches!(c, Command::ExpireLease { .. }))
            .count()
    }

    /// On time, a lease ends when it runs out; woken late (paused), it
    /// waits `GRACE` once for the renewals sent meanwhile, and a renewal
    /// within it keeps the session.
    #[test]
    fn a_lease_that_ran_out_while_the_writer_slept_waits_for_its_renewals() {
        let t0 = Instant::now();
        let mut t = Timers::new(Arc::default(), None);
        t.renew_at("on-time", 1, 1_000, t0);
        assert_eq!(
            expiries(&t.due(t0 + Duration::from_millis(1_100), 10, |_| false)),
            1
        );

        t.renew_at("slept", 2, 1_000, t0);
        t.renew_at("renewed", 3, 1_000, t0);
        let woke = t0 + Duration::from_secs(5);
        assert_eq!(
            expiries(&t.due(woke, 10, |_| false)),
            0,
            "ended on a stale clock"
        );
        t.renew_at("renewed", 3, 10_000, woke + Duration::from_millis(100));
        let after = woke + GRACE + Duration::from_millis(10);
        let ended = t.due(after, 10, |_| false);
        assert_eq!(expiries(&ended), 1);
        assert!(
            matches!(&ended[0], Command::ExpireLease { session_id, .. } if session_id == "slept")
        );
        // The grace is given once: woken late again, it ends.
        t.renew_at("again", 4, 1_000, after);
        let late = after + Duration::from_secs(5);
        assert_eq!(expiries(&t.due(late, 10, |_| false)), 0);
        assert_eq!(
            expiries(&t.due(late + Duration::from_secs(10), 10, |_| false)),
            1
        );
    }
}
