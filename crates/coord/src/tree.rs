//! An agent's process tree as `coord session run` owns it: the process
//! group its agent leads, and the orphans the wrapper adopts as the
//! agent's subreaper (PROTOCOL §6.3).
//!
//! Real agents are trees — shells, compilers, test runners, language
//! servers. The agent is started as the leader of a process group of its
//! own, so one `kill(-pgid)` reaches every descendant that stayed in it;
//! the wrapper is also a child subreaper (`PR_SET_CHILD_SUBREAPER`), so a
//! descendant that left the group with `setsid` and lost its parent is
//! re-parented to the wrapper instead of init, and the wrapper can still
//! end it. What escapes both (a `setsid` daemon whose parent outlives the
//! wrapper's SIGKILL) is beyond a process group's reach; only a cgroup
//! would hold it, and coord does not create cgroups.
//!
//! This module only finds and signals processes; it never talks to the
//! daemon and decides nothing about the session.

use std::time::{Duration, Instant};

/// How often [`stop`] looks whether the tree is gone during its grace.
const POLL: Duration = Duration::from_millis(50);

/// Makes the calling process a child subreaper, so orphaned descendants
/// of its children are re-parented to it.
///
/// # Errors
/// The `prctl` error (a kernel without subreapers).
pub(crate) fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a plain integer.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One live process of the tree, read from `/proc/<pid>/stat`.
struct Member {
    pid: libc::pid_t,
    zombie: bool,
}

/// The processes of the tree: every member of process group `pgid` (the
/// leader included), and every child of this process (the leader, and
/// orphans it adopted).
fn members(pgid: libc::pid_t) -> Vec<Member> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parens.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: libc::pid_t = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let pgrp: libc::pid_t = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if pgrp == pgid || ppid == me {
            out.push(Member {
                pid,
                zombie: state == "Z" || state == "X",
            });
        }
    }
    out
}

/// Reaps the exited orphans this process adopted (never `leader`, whose
/// exit status the wrapper reads itself). Returns how many it reaped.
pub(crate) fn reap_adopted(leader: libc::pid_t) -> usize {
    let mut reaped = 0;
    for m in members(0) {
        if m.zombie && m.pid != leader {
            // SAFETY: waitpid on a specific child with WNOHANG never blocks.
            let r = unsafe { libc::waitpid(m.pid, std::ptr::null_mut(), libc::WNOHANG) };
            if r == m.pid {
                reaped += 1;
            }
        }
    }
    reaped
}

/// Sends `signal` to group `pgid` and to every adopted orphan.
fn signal_all(pgid: libc::pid_t, signal: i32) {
    // SAFETY: kill with a negative id signals a process group.
    unsafe { libc::kill(-pgid, signal) };
    for m in members(pgid) {
        if !m.zombie {
            // SAFETY: kill with a pid read just now from /proc; a child of
            // ours (or a group member) cannot be reused before it is
            // reaped.
            unsafe { libc::kill(m.pid, signal) };
        }
    }
}

/// Ends the tree of the agent `leader` (which leads group `pgid`, and may
/// have exited already: the wrapper keeps it unreaped): SIGTERM to every
/// member now, SIGKILL to what is left after `grace`, reaping adopted
/// orphans (never `leader`) as they exit. Returns how many processes still ran when
/// SIGKILL was sent (0 when SIGTERM sufficed).
pub(crate) async fn stop(pgid: libc::pid_t, leader: libc::pid_t, grace: Duration) -> usize {
    signal_all(pgid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        reap_adopted(leader);
        let live = members(pgid).iter().filter(|m| !m.zombie).count();
        if live == 0 {
            return 0;
        }
        if Instant::now() >= deadline {
            signal_all(pgid, libc::SIGKILL);
            tokio::time::sleep(POLL).await;
            reap_adopted(leader);
            return live;
        }
        tokio::time::sleep(POLL).await;
    }
}
