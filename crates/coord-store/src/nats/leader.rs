//! What the daemons of one log need from NATS to share the work: the
//! leader key (one writer per log), daemon-lease revisions read fresh from
//! the server, and request/reply for writes forwarded to the leader.
//!
//! The election is a compare-and-set on the KV key `leader`: created when
//! absent, renewed by the leader with an update expecting its own last
//! revision, taken over by a candidate with an update expecting the stale
//! revision it saw. The revision is the **term**: exactly one daemon can
//! move the key from one revision to the next, so two leaders never hold
//! one term. Leadership is only for speed (one appender, no conflicts);
//! safety stays with the stream's expected-last-sequence on every append.
//!
//! It must not decide who is lost or when to campaign: that is the
//! daemon's; this file only answers what the server says.

use super::*;

/// Key of the leader record in the log's KV bucket.
const LEADER_KEY: &str = "leader";

/// What a claim on the leader key came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key now names this daemon, at this revision (the term).
    Won(u64),
    /// Another daemon moved the key first.
    Lost,
}

/// Why a forwarded request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Nobody listens on the leader's subject: the request was not
    /// delivered, so nothing of it can have been applied.
    #[error("no daemon serves {0}: the leader is gone")]
    NoResponders(String),
    /// The request went out and no reply came in time: it may or may not
    /// have been applied.
    #[error("the leader did not answer within {0} ms")]
    TimedOut(u64),
    /// The client could not send it (disconnected, payload too large).
    #[error("cannot send to the leader: {0}")]
    Failed(String),
}

impl JetStreamLog {
    fn rpc_subject(&self, daemon_id: &str) -> String {
        format!("coord.{}.rpc.{daemon_id}", self.inner.target.log)
    }

    /// The leader record: `(daemon id, revision)`, `None` when there is
    /// none (never elected, or resigned).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server does not answer: the
    /// caller must treat the leader as unknown.
    pub async fn leader(&self) -> Result<Option<(String, u64)>, StoreError> {
        let entry = self
            .inner
            .kv
            .entry(LEADER_KEY)
            .await
            .map_err(|e| nats_err("cannot read the leader key", e))?;
        self.touch();
        Ok(entry.and_then(|e| match e.operation {
            kv::Operation::Put => {
                Some((String::from_utf8_lossy(&e.value).into_owned(), e.revision))
            }
            _ => None,
        }))
    }

    /// Claims the leader key for `daemon_id`: creates it when `expected`
    /// is `None` (no leader), else updates it only if it is still at
    /// revision `expected` (renewing one's own term or taking a stale one
    /// over). A deleted key counts as absent.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server does not answer (the
    /// claim may or may not have landed; read the key again).
    pub async fn claim_leader(
        &self,
        daemon_id: &str,
        expected: Option<u64>,
    ) -> Result<Claim, StoreError> {
        let value = Bytes::from(daemon_id.to_string());
        let kv = &self.inner.kv;
        let result = match expected {
            None => match kv.create(LEADER_KEY, value).await {
                Ok(rev) => Ok(Claim::Won(rev)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Claim::Lost),
                Err(e) => Err(nats_err("cannot claim the leader key", e)),
            },
            Some(rev) => match kv.update(LEADER_KEY, value, rev).await {
                Ok(rev) => Ok(Claim::Won(rev)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(Claim::Lost),
                Err(e) => Err(nats_err("cannot renew the leader key", e)),
            },
        };
        if result.is_ok() {
            self.touch();
        }
        result
    }

    /// Gives the leader key up (a clean shutdown), only if it is still at
    /// `revision`: the next daemon takes over at once instead of after a
    /// lease.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn resign_leader(&self, revision: u64) -> Result<(), StoreError> {
        self.inner
            .kv
            .delete_expect_revision(LEADER_KEY, Some(revision))
            .await
            .map_err(|e| nats_err("cannot resign the leader key", e))
    }

    /// The revision of `daemon.<id>` as the server holds it now (`None`:
    /// no such lease). Read fresh from the server, never from a watcher,
    /// so a dead watcher cannot make a live daemon look lost.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]: the caller cannot judge.
    pub async fn daemon_lease_revision(&self, daemon_id: &str) -> Result<Option<u64>, StoreError> {
        let entry = self
            .inner
            .kv
            .entry(format!("daemon.{daemon_id}"))
            .await
            .map_err(|e| nats_err("cannot read a daemon lease", e))?;
        self.touch();
        Ok(entry.and_then(|e| (e.operation == kv::Operation::Put).then_some(e.revision)))
    }

    /// Subscribes to the requests forwarded to `daemon_id` (while it
    /// leads). Each message carries a reply subject for [`Self::respond`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn serve_forwarded(
        &self,
        daemon_id: &str,
    ) -> Result<async_nats::Subscriber, StoreError> {
        self.inner
            .client
            .subscribe(self.rpc_subject(daemon_id))
            .await
            .map_err(|e| nats_err("cannot serve forwarded writes", e))
    }

    /// Answers one forwarded request.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn respond(
        &self,
        reply: async_nats::Subject,
        payload: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.inner
            .client
            .publish(reply, Bytes::from(payload))
            .await
            .map_err(|e| nats_err("cannot answer a forwarded write", e))
    }

    /// Sends `payload` to the daemon `leader` and waits up to `timeout` for
    /// its reply.
    ///
    /// # Errors
    /// [`ForwardError`]: whether the request can have been applied.
    pub async fn forward(
        &self,
        leader: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, ForwardError> {
        let subject = self.rpc_subject(leader);
        let request = async_nats::Request::new()
            .payload(Bytes::from(payload))
            .timeout(Some(timeout));
        match self
            .inner
            .client
            .send_request(subject.clone(), request)
            .await
        {
            Ok(m) => Ok(m.payload),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => ForwardError::NoResponders(subject),
                async_nats::RequestErrorKind::TimedOut => {
                    ForwardError::TimedOut(timeout.as_millis() as u64)
                }
                _ => ForwardError::Failed(e.to_string()),
            }),
        }
    }
}
