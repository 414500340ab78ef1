//! The leader election of a shared log: which daemon appends (PROTOCOL
//! §12, docs/DISTRIBUTED.md).
//!
//! A compare-and-set on the KV key `leader` whose revision is the term
//! (`coord_store::Claim`). The leader renews it every tick; a follower
//! that sees the revision unchanged for a whole lease — measured only
//! while its own renewals kept succeeding, so neither a dead watcher, an
//! outage nor its own pause counts — takes the stale term over with an
//! update that expects it, which exactly one candidate wins. A leader that
//! cannot renew for a lease steps down to `unknown`; one that finds the
//! key moved steps down at once. Leadership only saves conflicts: the
//! stream's expected-last-sequence still fences every append.
//!
//! It must not write to the log or judge sessions.

use coord_engine::writer::Role;
use coord_store::{Claim, JetStreamLog};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One daemon's view of the election, moved one tick at a time.
pub struct Election {
    me: String,
    lease: Duration,
    role: watch::Sender<Role>,
    /// The leader record last read and since when it had that revision.
    seen: Option<(String, u64, Instant)>,
    /// When this daemon last renewed its own term.
    renewed: Option<Instant>,
}

impl Election {
    /// An election for daemon `me`; `role` is where its outcome goes.
    pub fn new(me: String, lease: Duration, role: watch::Sender<Role>) -> Self {
        Election {
            me,
            lease,
            role,
            seen: None,
            renewed: None,
        }
    }

    /// This daemon's term while it leads.
    pub fn term(&self) -> Option<u64> {
        match *self.role.borrow() {
            Role::Leader { term } => Some(term),
            _ => None,
        }
    }

    fn set(&self, role: Role) {
        self.role.send_if_modified(|r| {
            if *r == role {
                return false;
            }
            // A renewal moves the term every tick: say only what changes
            // hands.
            let leader = |x: &Role| match x {
                Role::Follower { leader, .. } => Some(leader.clone()),
                _ => None,
            };
            if r.name() != role.name() || leader(r) != leader(&role) {
                tracing::info!(from = r.name(), to = role.name(), ?role, "election");
            }
            *r = role;
            true
        });
    }

    /// One tick: renew the own term, or read the record and campaign when
    /// there is none or it went stale. `trusted_since`: since when this
    /// daemon's own view of the cluster has been continuous (its renewals
    /// succeeded, it was not paused); staleness is only counted from then.
    pub async fn step(&mut self, log: &JetStreamLog, now: Instant, trusted_since: Instant) {
        if let Some(term) = self.term() {
            match log.claim_leader(&self.me, Some(term)).await {
                Ok(Claim::Won(t)) => {
                    self.renewed = Some(now);
                    self.set(Role::Leader { term: t });
                    return;
                }
                Ok(Claim::Lost) => {
                    tracing::warn!(term, "another daemon took the lead; following it");
                    self.set(Role::Unknown);
                }
                Err(e) => {
                    let since = self.renewed.unwrap_or(now);
                    if now.duration_since(since) >= self.lease {
                        tracing::warn!(error = %e, "cannot renew the lead for a whole lease; stepping down");
                        self.set(Role::Unknown);
                    }
                    return;
                }
            }
        }
        let record = match log.leader().await {
            Ok(r) => r,
            // Cannot read: keep the role (a follower's forwards still
            // reach a live leader over the core connection).
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the leader key");
                return;
            }
        };
        match record {
            None => self.campaign(log, None, now).await,
            Some((id, rev)) if id == self.me => self.campaign(log, Some(rev), now).await,
            Some((id, rev)) => {
                let since = match &self.seen {
                    Some((sid, srev, at)) if *sid == id && *srev == rev => *at,
                    _ => now,
                };
                self.seen = Some((id.clone(), rev, since));
                let stale_for = now.duration_since(since.max(trusted_since));
                if stale_for >= self.lease {
                    tracing::warn!(leader = %id, term = rev, stale_ms = stale_for.as_millis() as u64, "the leader has not renewed for a lease; taking over");
                    self.campaign(log, Some(rev), now).await;
                } else {
                    self.set(Role::Follower {
                        leader: id,
                        term: rev,
                    });
                }
            }
        }
    }

    async fn campaign(&mut self, log: &JetStreamLog, expected: Option<u64>, now: Instant) {
        match log.claim_leader(&self.me, expected).await {
            Ok(Claim::Won(term)) => {
                self.renewed = Some(now);
                self.seen = None;
                self.set(Role::Leader { term });
            }
            Ok(Claim::Lost) => self.set(Role::Unknown),
            Err(e) => tracing::debug!(error = %e, "cannot claim the lead"),
        }
    }

    /// Gives the lead up at shutdown so a follower takes over at its next
    /// tick instead of after a lease.
    pub async fn resign(&self, log: &JetStreamLog) {
        if let Some(term) = self.term() {
            self.set(Role::Unknown);
            match log.resign_leader(term).await {
                Ok(()) => tracing::info!(term, "resigned the lead"),
                Err(e) => tracing::debug!(error = %e, "could not resign the lead"),
            }
        }
    }
}
