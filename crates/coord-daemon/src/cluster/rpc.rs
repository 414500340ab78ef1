//! Writes forwarded between the daemons of a shared log over NATS
//! request/reply: serving them while this daemon may lead, and the
//! [`Forward`] a follower's writer sends its batches through.
//!
//! It must not interpret a batch: the engine (`coord_engine::writer::
//! queue_forwarded`) decodes, applies and answers.

use coord_engine::writer::{self, Forward, ForwardFailure, WriterHandle};
use coord_store::{ForwardError, JetStreamLog};
use futures_util::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A follower's way to its leader: NATS request/reply on the leader's
/// subject, [`writer::FORWARD_TIMEOUT_MS`] per batch.
pub struct NatsForward(pub JetStreamLog);

impl Forward for NatsForward {
    fn forward<'a>(
        &'a self,
        leader: &'a str,
        payload: Vec<u8>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<u8>, ForwardFailure>> + Send + 'a>,
    > {
        Box::pin(async move {
            let timeout = Duration::from_millis(writer::FORWARD_TIMEOUT_MS);
            match self.0.forward(leader, payload, timeout).await {
                Ok(bytes) => Ok(bytes.to_vec()),
                Err(e @ ForwardError::TimedOut(_)) => Err(ForwardFailure::Unknown(e.to_string())),
                Err(e) => Err(ForwardFailure::NotDelivered(e.to_string())),
            }
        })
    }
}

/// Serves the writes other daemons forward to this one until `stop`.
/// Subscribed for the daemon's whole life: a request only comes while
/// some daemon believes this one leads, and applying it here is safe
/// whatever this daemon's role (its appends are conditional).
pub async fn serve(log: JetStreamLog, me: String, writer: WriterHandle, stop: CancellationToken) {
    loop {
        let mut sub = match log.serve_forwarded(&me).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serve forwarded writes; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = sub.unsubscribe().await;
                    return;
                }
                m = sub.next() => m,
            };
            let Some(msg) = msg else { break };
            let Some(reply) = msg.reply else { continue };
            // Queued here, in the order the batches arrived (a follower's
            // batches keep its order); answered by a task each, so the
            // batches of several followers share the leader's commits.
            let answer = writer::queue_forwarded(&writer, &msg.payload).await;
            let log = log.clone();
            tokio::spawn(async move {
                if let Err(e) = log.respond(reply, answer.await).await {
                    tracing::warn!(error = %e, "cannot answer a forwarded batch");
                }
            });
        }
    }
}
