//! Process-exit watches of sessions that registered a pid: one pidfd
//! per session, watched by the reactor (no polling), plus a duplicate kept
//! to ask "does it still run?" when the lease expires and to signal it
//! then (PROTOCOL §6.3).
//!
//! A watch reports an exit through the callback it was given (the writer
//! turns it into a `ProcessExited` command); this module never writes to
//! the log itself and does not know the writer.

use crate::pidfd;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::task::AbortHandle;

struct Watch {
    task: AbortHandle,
    /// The watched pid: the id of its process group, when it leads one.
    pid: u32,
    /// A duplicate of the watched pidfd, for liveness checks and signals.
    fd: Option<OwnedFd>,
}

/// The watched processes, by session id.
#[derive(Default)]
pub struct PidWatches {
    watches: HashMap<String, Watch>,
}

impl PidWatches {
    /// Watches `pid` for `session_id` (replacing an older watch); `fd` is
    /// a pidfd opened earlier (at registration, before the pid could be
    /// reused), else one is opened now. `exited` runs once with the exit
    /// status when the process ends, or at once if it is already gone.
    pub fn watch(
        &mut self,
        session_id: &str,
        pid: u32,
        fd: Option<OwnedFd>,
        exited: impl FnOnce(Option<i32>) + Send + 'static,
    ) {
        let fd = match fd.map(Ok).unwrap_or_else(|| pidfd::open(pid)) {
            Ok(fd) => fd,
            Err(e) => {
                // Gone already (or pidfds unsupported): treat as exited now
                // rather than keep a session nothing will ever end.
                tracing::info!(pid, error = %e, "registered process is not running");
                exited(None);
                return;
            }
        };
        let dup = match fd.try_clone() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot keep a pidfd to signal at expiry");
                None
            }
        };
        let task = tokio::spawn(async move {
            let code = pidfd::exited(fd, pid).await.ok().flatten();
            exited(code);
        });
        let old = self.watches.insert(
            session_id.to_string(),
            Watch {
                task: task.abort_handle(),
                pid,
                fd: dup,
            },
        );
        if let Some(old) = old {
            old.task.abort();
        }
    }

    /// True while `session_id`'s watched process runs (exactly: its pidfd
    /// is not readable yet).
    pub fn is_running(&self, session_id: &str) -> bool {
        self.watches
            .get(session_id)
            .and_then(|w| w.fd.as_ref())
            .is_some_and(pidfd::is_running)
    }

    /// The session ended: stop watching. With `terminate` (ms of grace),
    /// its process outlived the lease and is sent SIGTERM, then SIGKILL
    /// after the grace if it still runs. With `group` (ms of grace), the
    /// process group it leads gets the same, whether or not the leader
    /// still runs: its children must not outlive the session.
    pub fn end(&mut self, session_id: &str, terminate: Option<u64>, group: Option<u64>) {
        let Some(w) = self.watches.remove(session_id) else {
            return;
        };
        w.task.abort();
        if let Some(grace_ms) = group {
            terminate_group(w.pid, session_id.to_string(), grace_ms);
        }
        if let (Some(fd), Some(grace_ms)) = (w.fd, terminate) {
            self::terminate(fd, session_id.to_string(), grace_ms);
        }
    }

    /// Stops every watch (shutdown).
    pub fn abort_all(&mut self) {
        for (_, w) in self.watches.drain() {
            w.task.abort();
        }
    }
}

/// SIGTERM to every member of process group `pgid` now, SIGKILL after
/// `grace_ms` to what is left. A group id cannot be handed to a new
/// process while any member lives, so the signal reaches this tree or
/// nobody (`ESRCH`: the group is empty).
fn terminate_group(pgid: u32, session_id: String, grace_ms: u64) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill with a negative id signals a process group; no memory.
    if unsafe { libc::kill(-pgid, libc::SIGTERM) } != 0 {
        return; // ESRCH: nobody left in the group.
    }
    tracing::info!(
        session_id,
        pgid,
        grace_ms,
        "session ended: sent SIGTERM to its process group"
    );
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(grace_ms)).await;
        // SAFETY: as above; signal 0 only asks whether a member exists.
        if unsafe { libc::kill(-pgid, 0) } == 0 {
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            tracing::info!(
                session_id,
                pgid,
                "process group still running after the kill grace: sent SIGKILL"
            );
        }
    });
}

/// SIGTERM now, SIGKILL after `grace_ms` if it still runs. The pidfd makes
/// both reach this process or none.
fn terminate(fd: OwnedFd, session_id: String, grace_ms: u64) {
    match pidfd::send_signal(&fd, libc::SIGTERM) {
        Ok(()) => tracing::info!(
            session_id,
            grace_ms,
            "lease expired with the process running: sent SIGTERM"
        ),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
        Err(e) => tracing::warn!(
            session_id,
            error = %e,
            "cannot signal the process of an expired session"
        ),
    }
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(grace_ms)).await;
        if pidfd::is_running(&fd) {
            match pidfd::send_signal(&fd, libc::SIGKILL) {
                Ok(()) => tracing::info!(
                    session_id,
                    "still running after the kill grace: sent SIGKILL"
                ),
                Err(e) => {
                    tracing::warn!(session_id, error = %e, "cannot SIGKILL the process of an expired session")
                }
            }
        }
    });
}
