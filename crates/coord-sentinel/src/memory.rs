//! `InMemorySource`: a test double fed by a handle.

use crate::error::SourceError;
use crate::source::SentinelEventSource;
use coord_proto::Event;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A source that returns whatever was pushed through its
/// [`InMemoryHandle`], in order. Cancel-safe: events leave the queue only
/// when `poll` returns.
pub struct InMemorySource {
    name: String,
    queue: Arc<Mutex<VecDeque<Event>>>,
    max_batch: usize,
}

/// Pushes events into an [`InMemorySource`] from elsewhere (a test).
#[derive(Clone)]
pub struct InMemoryHandle {
    queue: Arc<Mutex<VecDeque<Event>>>,
}

impl InMemorySource {
    /// A source named `name` and the handle that feeds it.
    pub fn new(name: &str) -> (Self, InMemoryHandle) {
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        (
            InMemorySource {
                name: name.to_string(),
                queue: queue.clone(),
                max_batch: usize::MAX,
            },
            InMemoryHandle { queue },
        )
    }

    /// Bounds one poll to `n` events.
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }
}

impl InMemoryHandle {
    /// Queues events for the next polls.
    pub fn push(&self, events: impl IntoIterator<Item = Event>) {
        if let Ok(mut q) = self.queue.lock() {
            q.extend(events);
        }
    }
}

impl SentinelEventSource for InMemorySource {
    async fn poll(&mut self) -> Result<Vec<Event>, SourceError> {
        let mut q = self
            .queue
            .lock()
            .map_err(|_| SourceError::Worker("queue poisoned".into()))?;
        let n = self.max_batch.min(q.len());
        Ok(q.drain(..n).collect())
    }

    fn name(&self) -> &str {
        &self.name
    }
}
