//! Locks: acquire (or queue), release, TTL expiry, wait cancellation,
//! and the FIFO grant that follows every release, over patterns with the
//! overlap rule. Owns `lock.acquire`, `lock.wait`, `lock.wait_cancel`,
//! `lock.release`. Pure: no I/O, no clock.

use super::MAX_POD_DEPTH;
use crate::command::{Command, Outcome, Rejection, Reply};
use crate::kinds::check::*;
use crate::state::State;
use coord_proto::pattern::{overlap, within};
use coord_proto::view::{Holder, Lock, View, Waiter};
use coord_proto::Event;
use coord_proto::{
    Draft, LockAcquire, LockMode, LockRelease, LockWait, LockWaitCancel, Payload, ReleaseReason,
    WaitCancelReason,
};
use coord_proto::{ErrorCode, MAX_DURATION_MS};
use std::collections::BTreeMap;

/// Decides what a lock command does (see [`crate::validate`]).
pub(crate) fn validate(state: &State, cmd: &Command) -> Result<Outcome> {
    let view = &state.view;
    match cmd {
        Command::Acquire {
            session_id,
            resource,
            mode,
            ttl_ms,
            wait,
            extra,
        } => acquire(state, session_id, resource, (*mode, *ttl_ms, *wait), extra),
        Command::Release {
            session_id,
            resource,
            force,
        } => {
            id("session_id", session_id)?;
            res(resource)?;
            let Some(lock) = view.locks.get(resource) else {
                return Err(not_held(resource));
            };
            if !lock.holders.iter().any(|h| &h.session_id == session_id) {
                if lock.holders.is_empty() {
                    return Err(not_held(resource));
                }
                return Err(Rejection::new(
                    ErrorCode::NotOwner,
                    format!(
                        "{session_id} does not hold {resource}; it is held by {}",
                        holder_names(lock).join(", ")
                    ),
                )
                .with("resource", resource.as_str())
                .with("holders", holder_names(lock)));
            }
            let reason = if *force {
                ReleaseReason::Forced
            } else {
                ReleaseReason::Released
            };
            let mut locks = Locks::new(state);
            let mut drafts = Vec::new();
            release_into(&mut locks, resource, session_id, reason, &mut drafts);
            Ok(done(drafts))
        }
        Command::ExpireLock {
            resource,
            session_id,
            acquired_seq,
        } => {
            let held = view.locks.get(resource).filter(|l| {
                l.holders
                    .iter()
                    .any(|h| &h.session_id == session_id && h.acquired_seq == *acquired_seq)
            });
            Ok(match held {
                Some(_) => {
                    let mut locks = Locks::new(state);
                    let mut drafts = Vec::new();
                    release_into(
                        &mut locks,
                        resource,
                        session_id,
                        ReleaseReason::Expired,
                        &mut drafts,
                    );
                    done(drafts)
                }
                None => no_change(),
            })
        }
        Command::CancelWait {
            resource,
            session_id,
            reason,
        } => {
            let Some(lock) = view.locks.get(resource) else {
                return Ok(Outcome {
                    drafts: Vec::new(),
                    reply: Reply::NotWaiting { held_seq: None },
                    bodies: BTreeMap::new(),
                });
            };
            if !lock.waiters.iter().any(|w| &w.session_id == session_id) {
                let held_seq = lock
                    .holders
                    .iter()
                    .find(|h| &h.session_id == session_id)
                    .map(|h| h.acquired_seq);
                return Ok(Outcome {
                    drafts: Vec::new(),
                    reply: Reply::NotWaiting { held_seq },
                    bodies: BTreeMap::new(),
                });
            }
            let mut locks = Locks::new(state);
            let mut drafts = Vec::new();
            cancel_wait_into(&mut locks, resource, session_id, *reason, &mut drafts);
            Ok(done(drafts))
        }
        Command::CancelAllWaits { daemon } => {
            let mut drafts = Vec::new();
            let of_daemon = |sid: &str| {
                daemon.is_none()
                    || view.sessions.get(sid).and_then(|s| s.daemon.as_ref()) == daemon.as_ref()
            };
            for lock in view.locks.values() {
                for w in lock.waiters.iter().filter(|w| of_daemon(&w.session_id)) {
                    drafts.push(Draft {
                        session_id: Some(w.session_id.clone()),
                        resource: Some(lock.resource.clone()),
                        payload: Payload::LockWaitCancel(LockWaitCancel {
                            resource: lock.resource.clone(),
                            owner_session: w.session_id.clone(),
                            reason: WaitCancelReason::Restart,
                        }),
                    });
                }
            }
            Ok(if drafts.is_empty() {
                no_change()
            } else {
                done(drafts)
            })
        }
        other => Err(not_mine(other)),
    }
}

/// Folds one of this kind's events into the state (see [`crate::apply`]).
pub(crate) fn apply(state: &mut State, event: &Event) {
    let view = &mut state.view;
    match &event.payload {
        Payload::LockAcquire(p) => grant(
            view,
            &p.resource,
            p.mode,
            Holder {
                session_id: p.owner_session.clone(),
                acquired_seq: event.seq,
                acquired_at: event.ingress_ts,
                ttl_ms: p.ttl_ms,
                delegated_from: None,
            },
        ),
        Payload::LockWait(p) => {
            let lock = lock_entry(view, &p.resource, LockMode::Exclusive);
            lock.waiters.retain(|w| w.session_id != p.owner_session);
            lock.waiters.push(Waiter {
                session_id: p.owner_session.clone(),
                mode: p.mode,
                since_seq: event.seq,
                since_at: event.ingress_ts,
                ttl_ms: p.ttl_ms,
            });
        }
        Payload::LockWaitCancel(p) => {
            if let Some(lock) = view.locks.get_mut(&p.resource) {
                lock.waiters.retain(|w| w.session_id != p.owner_session);
                if lock.holders.is_empty() && lock.waiters.is_empty() {
                    view.locks.remove(&p.resource);
                }
            }
        }
        Payload::LockRelease(p) => {
            if let Some(lock) = view.locks.get_mut(&p.resource) {
                lock.holders.retain(|h| h.session_id != p.owner_session);
                if lock.holders.is_empty() && lock.waiters.is_empty() {
                    view.locks.remove(&p.resource);
                }
            }
        }
        _ => {}
    }
}

/// The locks as one command changes them: reads fall through to the view,
/// the first change to a lock copies it. Validate never touches the state,
/// so a cascade (a session's end releasing several locks and granting
/// their waiters) works on this overlay.
pub(crate) struct Locks<'s> {
    state: &'s State,
    changed: BTreeMap<String, Lock>,
    /// Locks this command created (absent from the view, so absent from
    /// the state's index): the few a lookup must check besides the index.
    created: Vec<String>,
}

impl<'s> Locks<'s> {
    pub(crate) fn new(state: &'s State) -> Self {
        Locks {
            state,
            changed: BTreeMap::new(),
            created: Vec::new(),
        }
    }

    pub(crate) fn get(&self, r: &str) -> Option<&Lock> {
        self.changed
            .get(r)
            .or_else(|| self.state.view.locks.get(r))
            .filter(|l| !(l.holders.is_empty() && l.waiters.is_empty()))
    }

    pub(crate) fn get_mut(&mut self, r: &str) -> Option<&mut Lock> {
        if !self.changed.contains_key(r) {
            let l = self.state.view.locks.get(r)?.clone();
            self.changed.insert(r.to_string(), l);
        }
        self.changed.get_mut(r)
    }

    pub(crate) fn entry(&mut self, r: &str, mode: LockMode) -> &mut Lock {
        let base = self.state.view.locks.get(r);
        if base.is_none() && !self.changed.contains_key(r) {
            self.created.push(r.to_string());
        }
        self.changed.entry(r.to_string()).or_insert_with(|| {
            base.cloned().unwrap_or_else(|| Lock {
                resource: r.to_string(),
                mode,
                holders: Vec::new(),
                waiters: Vec::new(),
            })
        })
    }

    /// Resources other than `r` that conflict with it under the pattern
    /// rule: the state's index narrows the live locks to the few whose
    /// literal ends fit `r`'s, so the cost does not grow with what else
    /// is held.
    pub(crate) fn overlapping(&self, r: &str) -> Vec<String> {
        self.overlapping_where(r, |_| true)
    }

    /// [`Self::overlapping`] among the locks `keep` accepts: `keep` runs
    /// first, so the conflict test is spent only on locks that matter to
    /// the caller (not on the caller's own holds, say).
    pub(crate) fn overlapping_where(&self, r: &str, keep: impl Fn(&Lock) -> bool) -> Vec<String> {
        let mut out: Vec<String> = self
            .state
            .lock_index
            .candidates(r)
            .into_iter()
            .chain(self.created.iter())
            .filter(|k| k.as_str() != r && self.get(k).is_some_and(&keep) && overlap(k, r))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The first other lock whose holders keep `who` from taking `r` in
    /// `mode`, with those holders.
    pub(crate) fn blocker(
        &self,
        r: &str,
        who: &str,
        mode: LockMode,
    ) -> Option<(String, Vec<String>)> {
        let others = |l: &Lock| {
            !(mode == LockMode::Shared && l.mode == LockMode::Shared)
                && l.holders.iter().any(|h| h.session_id != who)
        };
        for k in self.overlapping_where(r, others) {
            let Some(l) = self.get(&k) else { continue };
            let bad: Vec<String> = l
                .holders
                .iter()
                .filter(|h| h.session_id != who && !self.exempt(&h.session_id, who, r))
                .map(|h| h.session_id.clone())
                .collect();
            if !bad.is_empty() {
                return Some((k, bad));
            }
        }
        None
    }

    /// A hold of an ancestor does not block a descendant inside a scope
    /// the descendant was delegated: that part of the ancestor's scope was
    /// handed down on purpose.
    pub(crate) fn exempt(&self, holder: &str, who: &str, r: &str) -> bool {
        if !is_ancestor(&self.state.view, holder, who) {
            return false;
        }
        let delegated = |l: &Lock| {
            l.holders
                .iter()
                .any(|h| h.session_id == who && h.delegated_from.is_some())
        };
        let mut candidates = self.overlapping_where(r, delegated);
        candidates.push(r.to_string());
        candidates.iter().any(|k| {
            self.get(k).is_some_and(|l| {
                within(r, &l.resource)
                    && l.holders
                        .iter()
                        .any(|h| h.session_id == who && h.delegated_from.is_some())
            })
        })
    }

    pub(crate) fn holds_of(&self, who: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .state
            .lock_index
            .of_session(who)
            .chain(self.changed.keys())
            .filter(|k| {
                self.get(k)
                    .is_some_and(|l| l.holders.iter().any(|h| h.session_id == who))
            })
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

pub(crate) fn acquire(
    state: &State,
    session_id: &str,
    resource: &str,
    (mode, ttl_ms, wait): (LockMode, Option<u64>, bool),
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<Outcome> {
    let view = &state.view;
    session(view, session_id)?;
    lockable(resource)?;
    if let Some(t) = ttl_ms {
        if !(1..=MAX_DURATION_MS).contains(&t) {
            return Err(invalid(
                "ttl_ms",
                format!("must be 1..={MAX_DURATION_MS} ms"),
            ));
        }
    }
    let lock = view.locks.get(resource);
    if let Some(lock) = lock {
        if let Some(h) = lock.holders.iter().find(|h| h.session_id == session_id) {
            if lock.mode == mode {
                return Ok(Outcome {
                    drafts: Vec::new(),
                    reply: Reply::AlreadyHeld {
                        acquired_seq: h.acquired_seq,
                    },
                    bodies: BTreeMap::new(),
                });
            }
            return Err(Rejection::new(
                ErrorCode::LockHeld,
                format!(
                    "{session_id} holds {resource} in {} mode; release it before asking for {}",
                    lock.mode.as_str(),
                    mode.as_str()
                ),
            )
            .with("resource", resource)
            .with("holders", holder_names(lock))
            .with("mode", lock.mode.as_str()));
        }
        if wait && lock.waiters.iter().any(|w| w.session_id == session_id) {
            return Ok(Outcome {
                drafts: Vec::new(),
                reply: Reply::AlreadyWaiting,
                bodies: BTreeMap::new(),
            });
        }
    }
    room_for_lock(state, session_id)?;
    let same_free = match lock {
        None => true,
        Some(l) => {
            l.waiters.is_empty()
                && (l.holders.is_empty()
                    || (l.mode == LockMode::Shared && mode == LockMode::Shared))
        }
    };
    let locks = Locks::new(state);
    let blocker = locks.blocker(resource, session_id, mode);
    let draft = |payload| Draft {
        session_id: Some(session_id.to_string()),
        resource: Some(resource.to_string()),
        payload,
    };
    if same_free && blocker.is_none() {
        return Ok(Outcome {
            drafts: vec![draft(Payload::LockAcquire(LockAcquire {
                resource: resource.to_string(),
                owner_session: session_id.to_string(),
                mode,
                ttl_ms,
                extra: extra.clone(),
            }))],
            reply: Reply::Granted,
            bodies: BTreeMap::new(),
        });
    }
    if !wait {
        return Err(match (lock, blocker) {
            (Some(l), _) if !same_free => held(l, resource),
            (_, Some((other, holders))) => Rejection::new(
                ErrorCode::LockHeld,
                format!(
                    "{resource} conflicts with {other}, held by {}",
                    holders.join(", ")
                ),
            )
            .with("resource", resource)
            .with("conflicts_with", other)
            .with("holders", holders),
            _ => not_held(resource),
        });
    }
    Ok(Outcome {
        drafts: vec![draft(Payload::LockWait(LockWait {
            resource: resource.to_string(),
            owner_session: session_id.to_string(),
            mode,
            ttl_ms,
        }))],
        reply: Reply::Waiting,
        bodies: BTreeMap::new(),
    })
}

pub(crate) fn release_into(
    locks: &mut Locks<'_>,
    resource: &str,
    session_id: &str,
    reason: ReleaseReason,
    out: &mut Vec<Draft>,
) {
    if let Some(lock) = locks.get_mut(resource) {
        lock.holders.retain(|h| h.session_id != session_id);
    }
    out.push(Draft {
        session_id: Some(session_id.to_string()),
        resource: Some(resource.to_string()),
        payload: Payload::LockRelease(LockRelease {
            resource: resource.to_string(),
            owner_session: session_id.to_string(),
            reason,
        }),
    });
    regrant(locks, resource, out);
}

pub(crate) fn cancel_wait_into(
    locks: &mut Locks<'_>,
    resource: &str,
    session_id: &str,
    reason: WaitCancelReason,
    out: &mut Vec<Draft>,
) {
    if let Some(lock) = locks.get_mut(resource) {
        lock.waiters.retain(|w| w.session_id != session_id);
    }
    out.push(Draft {
        session_id: Some(session_id.to_string()),
        resource: Some(resource.to_string()),
        payload: Payload::LockWaitCancel(LockWaitCancel {
            resource: resource.to_string(),
            owner_session: session_id.to_string(),
            reason,
        }),
    });
    // The leaver may have been what blocked shared waiters behind it.
    regrant(locks, resource, out);
}

/// After `resource` lost a holder or waiter: its queue, then the queues
/// of every lock that conflicts with it, may move.
pub(crate) fn regrant(locks: &mut Locks<'_>, resource: &str, out: &mut Vec<Draft>) {
    grant_into(locks, resource, out);
    for other in locks.overlapping_where(resource, |l| !l.waiters.is_empty()) {
        grant_into(locks, &other, out);
    }
}

/// Grants the head of the queue while it is compatible with the holders
/// and with every conflicting lock: strict FIFO, so a waiter that cannot
/// go blocks every waiter behind it.
pub(crate) fn grant_into(locks: &mut Locks<'_>, resource: &str, out: &mut Vec<Draft>) {
    loop {
        let Some(lock) = locks.get(resource) else {
            return;
        };
        let Some(w) = lock.waiters.first().cloned() else {
            return;
        };
        let compatible = lock.holders.is_empty()
            || (lock.mode == LockMode::Shared && w.mode == LockMode::Shared);
        if !compatible || locks.blocker(resource, &w.session_id, w.mode).is_some() {
            return;
        }
        let lock = locks.entry(resource, w.mode);
        lock.waiters.remove(0);
        lock.mode = w.mode;
        lock.holders.push(coord_proto::view::Holder {
            session_id: w.session_id.clone(),
            acquired_seq: 0,
            acquired_at: coord_proto::Timestamp(0),
            ttl_ms: w.ttl_ms,
            delegated_from: None,
        });
        out.push(Draft {
            session_id: Some(w.session_id.clone()),
            resource: Some(resource.to_string()),
            payload: Payload::LockAcquire(LockAcquire {
                resource: resource.to_string(),
                owner_session: w.session_id,
                mode: w.mode,
                ttl_ms: w.ttl_ms,
                extra: Default::default(),
            }),
        });
    }
}

pub(crate) fn held(lock: &Lock, resource: &str) -> Rejection {
    Rejection::new(
        ErrorCode::LockHeld,
        format!(
            "{resource} is held by {} ({})",
            holder_names(lock).join(", "),
            lock.mode.as_str()
        ),
    )
    .with("resource", resource)
    .with("holders", holder_names(lock))
    .with("mode", lock.mode.as_str())
}

pub(crate) fn not_held(resource: &str) -> Rejection {
    Rejection::new(ErrorCode::LockNotHeld, format!("nobody holds {resource}"))
        .with("resource", resource)
}

pub(crate) fn holder_names(lock: &Lock) -> Vec<String> {
    lock.holders.iter().map(|h| h.session_id.clone()).collect()
}

pub(crate) fn is_ancestor(view: &View, ancestor: &str, of: &str) -> bool {
    let mut cur = of;
    for _ in 0..MAX_POD_DEPTH {
        match view
            .sessions
            .get(cur)
            .and_then(|s| s.parent_session.as_deref())
        {
            Some(p) if p == ancestor => return true,
            Some(p) => cur = p,
            None => return false,
        }
    }
    false
}

/// The lock on `resource`, created (in `mode`, empty) if absent.
pub(crate) fn lock_entry<'v>(view: &'v mut View, resource: &str, mode: LockMode) -> &'v mut Lock {
    view.locks
        .entry(resource.to_string())
        .or_insert_with(|| Lock {
            resource: resource.to_string(),
            mode,
            holders: Vec::new(),
            waiters: Vec::new(),
        })
}

/// A new hold (a grant or a delegation): the holder leaves the queue and
/// any older hold of its own, and the lock takes the hold's mode.
pub(crate) fn grant(view: &mut View, resource: &str, mode: LockMode, holder: Holder) {
    let lock = lock_entry(view, resource, mode);
    lock.waiters.retain(|w| w.session_id != holder.session_id);
    lock.holders.retain(|h| h.session_id != holder.session_id);
    lock.mode = mode;
    lock.holders.push(holder);
}
