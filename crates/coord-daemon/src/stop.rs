//! The daemon's stop notice, made cheap to poll for the tasks that poll it
//! on every wake-up: each connection and each event stream.
//!
//! Why: a `CancellationToken`'s future takes the token's lock on every poll
//! (to read its state and to refresh its waker). A connection's task is
//! woken for every request and every event it streams, and `select!`
//! polls the stop branch each time; with 10,000 subscribers woken by one
//! event that was 20,000 acquisitions of one lock per event, bounced
//! between the workers. A [`StopWatch`] polls the token once, to register
//! its task, and after that only when a flag set just before the token is
//! cancelled says the wake-up may be the stop — or when it is polled from
//! another task, whose waker the token does not hold yet.
//!
//! It must not be the only stop signal: everything that waits rarely keeps
//! using the token directly.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The stop notice: a token and the flag raised just before it is
/// cancelled. Cloning shares both.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    token: CancellationToken,
    flag: Arc<AtomicBool>,
}

impl Stop {
    /// A notice not yet given.
    pub fn new() -> Self {
        Stop::default()
    }

    /// Gives the notice: raises the flag, then cancels the token (which
    /// wakes every watcher).
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// The token, for tasks that wait on it directly.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Completes once the notice is given (as `token().cancelled()`).
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// A future for a task that polls the notice on every wake-up.
    pub fn watch(&self) -> StopWatch {
        StopWatch {
            flag: self.flag.clone(),
            wait: Box::pin(self.token.clone().cancelled_owned()),
            registered: None,
        }
    }
}

/// Completes once the notice is given; see the module docs.
pub struct StopWatch {
    flag: Arc<AtomicBool>,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The waker the token holds for this watch.
    registered: Option<Waker>,
}

impl Future for StopWatch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let stale = self
            .registered
            .as_ref()
            .is_none_or(|w| !w.will_wake(cx.waker()));
        if stale || self.flag.load(Ordering::Acquire) {
            if self.wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            self.registered = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_watch_completes_when_the_notice_is_given() {
        let stop = Stop::new();
        let watch = stop.watch();
        let waiter = tokio::spawn(async move {
            // Poll it many times first, as a busy connection would.
            let mut watch = std::pin::pin!(watch);
            for _ in 0..100 {
                assert!(futures_util::poll!(watch.as_mut()).is_pending());
                tokio::task::yield_now().await;
            }
            watch.await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the watch woke")
            .expect("join");
    }

    #[tokio::test]
    async fn a_watch_made_after_the_notice_is_ready_at_once() {
        let stop = Stop::new();
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), stop.watch())
            .await
            .expect("ready");
        assert!(stop.token().is_cancelled());
    }

    /// Moved to another task, the watch registers that task's waker.
    #[tokio::test]
    async fn a_watch_polled_from_another_task_wakes_that_task() {
        let stop = Stop::new();
        let mut watch = Box::pin(stop.watch());
        assert!(futures_util::poll!(watch.as_mut()).is_pending());
        let waiter = tokio::spawn(watch);
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the watch woke")
            .expect("join");
    }
}
