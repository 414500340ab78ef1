//! One writer per log (PROTOCOL §12): a daemon that follows another's
//! lead sends its batches to the leader instead of appending them, and
//! answers its callers from the leader's reply once its own view has
//! folded the events the reply names.
//!
//! The leader takes forwarded writes into its own queue like any other
//! caller's, so they join its group commit; only the leader validates and
//! appends, and the daemons stop racing each other for the stream's next
//! sequence. The stream's expected-last-sequence stays the fence: a
//! deposed or paused leader's append is refused, and a follower that
//! cannot reach any leader commits on its own exactly as before.
//!
//! What stays with the follower: its callers' wait channels, pidfds,
//! lease renewals and tokens (`after_answer` runs where the caller is).
//! It must not decide who leads: the role arrives through a watch.

use super::*;
use std::time::Duration;

/// Version of the forwarded-write wire form: daemons of one log must
/// speak the same one; a leader refuses another and the follower then
/// commits on its own.
pub const FORWARD_VERSION: u32 = 1;

/// How long a follower waits for the leader's reply, in ms. Past it the
/// callers are told the outcome is unknown (retry with the same `tx_id`),
/// and the leader drops a request it reads later than this.
pub const FORWARD_TIMEOUT_MS: u64 = 4_000;

/// How long a follower waits for its own view to fold what the leader
/// committed before it answers anyway (ms).
const FOLD_PATIENCE: Duration = Duration::from_secs(2);

/// How long a follower waits for its live follower to deliver the
/// leader's commit before it reads the stream itself.
const FOLD_NUDGE: Duration = Duration::from_millis(200);

/// After a forward that got no reply, how long this daemon commits on its
/// own instead of forwarding again (the leader may be paused).
const SUSPECT_FOR: Duration = Duration::from_secs(3);

/// This daemon's part in its log's election.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Role {
    /// The log is this daemon's alone (SQLite): no election.
    #[default]
    Alone,
    /// This daemon leads, in term `term` (the leader key's revision).
    Leader {
        /// The term.
        term: u64,
    },
    /// Another daemon leads: writes go to it.
    Follower {
        /// The leader's daemon id.
        leader: String,
        /// Its term.
        term: u64,
    },
    /// Nobody is known to lead (an election, an outage): this daemon
    /// appends on its own, conditionally, as every daemon once did.
    Unknown,
}

impl Role {
    /// `leader`, `follower`, `unknown` or `alone`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Alone => "alone",
            Role::Leader { .. } => "leader",
            Role::Follower { .. } => "follower",
            Role::Unknown => "unknown",
        }
    }
}

/// Why a forward got no usable reply.
#[derive(Debug, Clone)]
pub enum ForwardFailure {
    /// The request certainly was not applied (nobody listened, the leader
    /// refused it unread): commit here instead.
    NotDelivered(String),
    /// It went out and no reply came: it may have been applied.
    Unknown(String),
}

/// Sends a forwarded batch to a leader and returns its reply's bytes.
pub trait Forward: Send + Sync + 'static {
    /// Sends `payload` to the daemon `leader`.
    fn forward<'a>(
        &'a self,
        leader: &'a str,
        payload: Vec<u8>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<u8>, ForwardFailure>> + Send + 'a>,
    >;
}

/// A batch sent to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// [`FORWARD_VERSION`].
    pub v: u32,
    /// Commit all or none (a batch append).
    pub atomic: bool,
    /// ms since the epoch after which the sender no longer waits: a leader
    /// that reads it later drops it unapplied.
    pub expires_ms: i64,
    /// The writes, in order.
    pub writes: Vec<ForwardedWrite>,
}

/// One write as forwarded: the request without what cannot leave its
/// daemon (a pidfd, a wait channel, a reply channel).
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedWrite {
    /// The command.
    pub cmd: Command,
    /// Its source.
    pub source: String,
    /// The client's idempotency key.
    pub tx_id: Option<Ulid>,
    /// The request digest bound to the key.
    pub digest: Option<String>,
    /// Source time.
    pub ts: Timestamp,
    /// The daemon the write came from (stamped on a register).
    pub origin: Option<String>,
    /// The session token's hash, for a register.
    pub token_hash: Option<String>,
    /// The message body, for a deliver.
    pub body: Option<String>,
}

/// The leader's answer: one per forwarded write, in order, or why none
/// was applied.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardReply {
    /// Set when the leader applied nothing (unknown version, expired,
    /// unreadable): the follower commits on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The answers.
    #[serde(default)]
    pub answers: Vec<Result<Committed, WireError>>,
}

/// A [`WriteError`] as it crosses between daemons.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireError {
    /// The state machine refused it.
    Rejected(ErrorBody),
    /// The store refused the append.
    StoreUnavailable(String),
    /// The leader is shutting down.
    ShuttingDown,
    /// A bug.
    Internal(String),
    /// Its group was refused.
    GroupRefused,
}

impl From<&WriteError> for WireError {
    fn from(e: &WriteError) -> Self {
        match e {
            WriteError::Rejected(r) => WireError::Rejected(r.0.clone()),
            WriteError::StoreUnavailable(m) => WireError::StoreUnavailable(m.clone()),
            WriteError::ShuttingDown => WireError::ShuttingDown,
            WriteError::Internal(m) => WireError::Internal(m.clone()),
            WriteError::GroupRefused => WireError::GroupRefused,
        }
    }
}

impl From<WireError> for WriteError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Rejected(b) => WriteError::Rejected(coord_core::Rejection(b)),
            WireError::StoreUnavailable(m) => WriteError::StoreUnavailable(m),
            // The leader stopped before committing it: nothing applied,
            // and a retry finds the next leader.
            WireError::ShuttingDown => {
                WriteError::StoreUnavailable("the leader is shutting down; retry".into())
            }
            WireError::Internal(m) => WriteError::Internal(m),
            WireError::GroupRefused => WriteError::GroupRefused,
        }
    }
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

impl ForwardedWrite {
    fn of(w: &Write, here: Option<&String>) -> Self {
        ForwardedWrite {
            cmd: w.cmd.clone(),
            source: w.source.clone(),
            tx_id: w.tx_id,
            digest: w.digest.clone(),
            ts: w.ts,
            origin: w.extras.origin.clone().or_else(|| here.cloned()),
            token_hash: w.extras.token_hash.clone(),
            body: w.extras.body.clone(),
        }
    }

    fn into_write(self, reply: Replier) -> Write {
        Write {
            cmd: self.cmd,
            source: self.source,
            tx_id: self.tx_id,
            digest: self.digest,
            ts: self.ts,
            extras: Extras {
                token_hash: self.token_hash,
                body: self.body,
                origin: self.origin,
                ..Extras::default()
            },
            reply: Some(reply),
        }
    }
}

/// The leader's side, first half: decodes a forwarded batch and puts its
/// writes in this daemon's writer queue (where they join the group
/// commit), in the order the batches arrived — call it for each batch
/// before taking the next. The returned future waits for the answers and
/// encodes the reply; it never fails: what cannot be applied is said in
/// the reply.
pub async fn queue_forwarded(
    writer: &WriterHandle,
    payload: &[u8],
) -> impl std::future::Future<Output = Vec<u8>> + Send + 'static {
    let refused = |why: String| ForwardReply {
        refused: Some(why),
        answers: Vec::new(),
    };
    let mut rxs = Vec::new();
    let early = match serde_json::from_slice::<ForwardRequest>(payload) {
        Err(e) => Some(refused(format!("unreadable forwarded batch: {e}"))),
        Ok(r) if r.v != FORWARD_VERSION => Some(refused(format!(
            "forwarded batch version {} (this daemon speaks {FORWARD_VERSION})",
            r.v
        ))),
        Ok(r) if now_ms() > r.expires_ms => Some(refused(
            "the forwarded batch expired before the leader read it".into(),
        )),
        Ok(r) => {
            let writes: Vec<Write> = r
                .writes
                .into_iter()
                .map(|fw| {
                    let (tx, rx) = oneshot::channel();
                    rxs.push(rx);
                    fw.into_write(tx)
                })
                .collect();
            let queued = if r.atomic {
                writer.tx.send(Request::Group(writes)).await.is_ok()
            } else {
                let mut ok = true;
                for w in writes {
                    ok &= writer.tx.send(Request::Write(Box::new(w))).await.is_ok();
                }
                ok
            };
            (!queued).then(|| refused("the leader is shutting down".into()))
        }
    };
    async move {
        let reply = match early {
            Some(r) => r,
            None => {
                let mut answers = Vec::with_capacity(rxs.len());
                for rx in rxs {
                    let a = rx.await.unwrap_or(Err(WriteError::ShuttingDown));
                    answers.push(a.map_err(|e| WireError::from(&e)));
                }
                ForwardReply {
                    refused: None,
                    answers,
                }
            }
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    }
}

/// Most batches a follower has at its leader at once: the next batch goes
/// out while earlier ones are being committed, so a follower's writes do
/// not queue behind a round trip.
const IN_FLIGHT: usize = 4;

/// A forwarded batch on its way, as a task of its own: its writes (kept
/// for their callers and effects) and what the leader said.
pub(super) type Flight =
    tokio::task::JoinHandle<(Vec<Write>, bool, Result<Vec<u8>, ForwardFailure>)>;

impl<L: EventLog + Clone> Writer<L> {
    /// The daemon to forward to now, if any.
    pub(super) fn forward_to(&self) -> Option<String> {
        self.config.forward.as_ref()?;
        if self.suspect_until.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        match &*self.config.role.as_ref()?.borrow() {
            Role::Follower { leader, .. } => Some(leader.clone()),
            _ => None,
        }
    }

    /// Sends `writes` to `leader` without waiting for the reply (at most
    /// [`IN_FLIGHT`] batches out; past that the oldest is finished first).
    /// Hands them back when they cannot be sent (commit them here).
    pub(super) async fn forward(
        &mut self,
        leader: &str,
        writes: Vec<Write>,
        atomic: bool,
    ) -> Result<(), Vec<Write>> {
        let Some(fwd) = self.config.forward.clone() else {
            return Err(writes);
        };
        let here = self.config.daemon_id.as_ref();
        let req = ForwardRequest {
            v: FORWARD_VERSION,
            atomic,
            expires_ms: now_ms() + FORWARD_TIMEOUT_MS as i64,
            writes: writes.iter().map(|w| ForwardedWrite::of(w, here)).collect(),
        };
        let payload = match serde_json::to_vec(&req) {
            Ok(p) => p,
            Err(_) => return Err(writes),
        };
        while self.in_flight.len() >= IN_FLIGHT {
            self.land_one().await;
        }
        let leader = leader.to_string();
        self.in_flight.push_back(tokio::spawn(async move {
            let r = fwd.forward(&leader, payload).await;
            (writes, atomic, r)
        }));
        Ok(())
    }

    /// Waits for the oldest batch at the leader and finishes it.
    pub(super) async fn land_one(&mut self) {
        use futures_util::StreamExt;
        match self.in_flight.next().await {
            Some(Ok((writes, atomic, r))) => self.landed(writes, atomic, r).await,
            // The task cannot panic short of a bug; its callers were
            // answered `shutting_down` when their channels dropped.
            Some(Err(e)) => tracing::error!(error = %e, "a forwarded batch's task failed"),
            None => {}
        }
    }

    /// Finishes every batch at the leader, oldest first: a commit here
    /// (this daemon's own order) and a shutdown must see them all answered.
    /// Reads do not wait for them: their callers have no answer yet.
    pub(super) async fn land_all(&mut self) {
        while !self.in_flight.is_empty() {
            self.land_one().await;
        }
    }

    /// Answers the callers of a forwarded batch from the leader's reply,
    /// once this daemon's view has folded what it names; commits the
    /// batch here instead when the leader certainly applied none of it.
    pub(super) async fn landed(
        &mut self,
        writes: Vec<Write>,
        atomic: bool,
        reply: Result<Vec<u8>, ForwardFailure>,
    ) {
        let reply = match reply {
            Ok(bytes) => serde_json::from_slice::<ForwardReply>(&bytes)
                .map_err(|e| ForwardFailure::Unknown(format!("unreadable reply: {e}"))),
            Err(f) => Err(f),
        };
        let reply = match reply {
            Ok(r) if r.refused.is_none() && r.answers.len() == writes.len() => r,
            Ok(r) => {
                tracing::debug!(refused = ?r.refused, "the leader applied nothing; committing here");
                return self.commit_here(writes, atomic).await;
            }
            Err(ForwardFailure::NotDelivered(why)) => {
                tracing::debug!(why, "forward not delivered; committing here");
                return self.commit_here(writes, atomic).await;
            }
            Err(ForwardFailure::Unknown(why)) => {
                tracing::warn!(
                    why,
                    "the leader did not answer; its callers are told to retry"
                );
                self.suspect_until = Some(Instant::now() + SUSPECT_FOR);
                // Applied or not, a write that must land is tried again:
                // each one is idempotent (a second cancel finds no wait).
                self.keep_must_land(writes.iter());
                let msg = format!(
                    "the leader daemon did not answer ({why}); the write may or may not \
                     have been applied: retry with the same tx_id"
                );
                self.config
                    .metrics
                    .counts
                    .refused(ErrorCode::StoreUnavailable, writes.len() as u64);
                for w in writes {
                    if let Some(tx) = w.reply {
                        let _ = tx.send(Err(WriteError::StoreUnavailable(msg.clone())));
                    }
                }
                return;
            }
        };
        self.config.metrics.forwarded.inc_by(writes.len() as u64);
        let target = reply
            .answers
            .iter()
            .filter_map(|a| a.as_ref().ok().and_then(|c| c.seq))
            .max();
        if let Some(t) = target {
            self.fold_until(t).await;
        }
        for (mut w, a) in writes.into_iter().zip(reply.answers) {
            let a: Result<Committed, WriteError> = a.map_err(WriteError::from);
            match &a {
                Ok(c) => self.after_answer(&mut w, c),
                Err(e) => self.config.metrics.counts.refused(e.code(), 1),
            }
            if let Some(tx) = w.reply.take() {
                let _ = tx.send(a);
            }
        }
    }

    /// Folds what the store has until the state reaches `seq`, waiting
    /// for the live follower to index it, within [`FOLD_PATIENCE`]; past
    /// [`FOLD_NUDGE`] the store is asked to read the stream itself (the
    /// follower may have died with a node).
    async fn fold_until(&mut self, seq: u64) {
        let started = Instant::now();
        let deadline = started + FOLD_PATIENCE;
        let mut nudged = false;
        while self.state.head < seq {
            self.catch_up().await;
            if self.state.head >= seq {
                break;
            }
            let wait_until = if nudged {
                deadline
            } else {
                (started + FOLD_NUDGE).min(deadline)
            };
            if tokio::time::timeout_at(wait_until, store_moved(&mut self.store_head))
                .await
                .is_err()
                && !nudged
            {
                nudged = true;
                self.store.refresh().await;
                continue;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    seq,
                    head = self.state.head,
                    "the leader's commit has not reached this daemon yet; answering anyway"
                );
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a follower sends is what the leader applies: the command, its
    /// idempotency key and digest, its origin and its attachments survive
    /// the wire, and an answer's error keeps its code.
    #[test]
    fn a_forwarded_write_and_its_answer_cross_the_wire_unchanged() {
        let cmd = Command::Release {
            session_id: "s1".into(),
            resource: "/db".into(),
            force: false,
        };
        let tx = Ulid::new();
        let mut w = internal(cmd.clone());
        w.tx_id = Some(tx);
        w.digest = Some("d".into());
        w.extras.body = Some("hello\nthere".into());
        let req = ForwardRequest {
            v: FORWARD_VERSION,
            atomic: true,
            expires_ms: 42,
            writes: vec![ForwardedWrite::of(&w, Some(&"daemon-b".to_string()))],
        };
        let back: ForwardRequest =
            serde_json::from_slice(&serde_json::to_vec(&req).expect("encode")).expect("decode");
        assert!(back.atomic);
        let (tx_reply, _rx) = oneshot::channel();
        let again = back
            .writes
            .into_iter()
            .next()
            .expect("one")
            .into_write(tx_reply);
        assert_eq!(again.cmd, cmd);
        assert_eq!(again.tx_id, Some(tx));
        assert_eq!(again.digest.as_deref(), Some("d"));
        assert_eq!(again.extras.origin.as_deref(), Some("daemon-b"));
        assert_eq!(again.extras.body.as_deref(), Some("hello\nthere"));

        let refused = WriteError::Rejected(coord_core::Rejection(ErrorBody::new(
            ErrorCode::LockHeld,
            "held",
        )));
        let reply = ForwardReply {
            refused: None,
            answers: vec![
                Err(WireError::from(&refused)),
                Ok(Committed {
                    first_seq: Some(7),
                    seq: Some(8),
                    reply: coord_core::Reply::Done,
                    replayed: true,
                    digest: None,
                }),
            ],
        };
        let back: ForwardReply =
            serde_json::from_slice(&serde_json::to_vec(&reply).expect("encode")).expect("decode");
        let mut answers = back.answers.into_iter();
        let e = WriteError::from(answers.next().expect("err").expect_err("an error"));
        assert_eq!(e.code(), ErrorCode::LockHeld);
        let c = answers.next().expect("ok").expect("an answer");
        assert_eq!((c.first_seq, c.seq, c.replayed), (Some(7), Some(8), true));
        // A leader shutting down applied nothing: the caller may retry.
        assert_eq!(
            WriteError::from(WireError::ShuttingDown).code(),
            ErrorCode::StoreUnavailable
        );
    }
}
