//! An agent is a tree: `coord session run` ends the agent's whole process
//! tree on every end of its session — the wrapper SIGKILLed, the lease run
//! out, the agent's own exit, the daemon gone for a whole lease — and a
//! child that left the group with `setsid` is still ended while the wrapper
//! lives (PROTOCOL §6.3). Real daemon, real CLI, real processes.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

/// The pid a script wrote into `path` (waits for a whole line).
fn pid_in(path: &Path) -> u32 {
    wait_until(
        &format!("{}", path.display()),
        Duration::from_secs(20),
        || std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n')),
    );
    std::fs::read_to_string(path)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// `coord session run --id ID --ttl TTL -- bash -c SCRIPT` on `d`'s socket,
/// with the built `coord` first on PATH; stderr goes to `<dir>/ID.err`.
fn run(d: &Daemon, id: &str, ttl: &str, script: &str) -> (Child, PathBuf) {
    let path = format!(
        "{}:{}",
        Path::new(bin()).parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let err = d.dir.path().join(format!("{id}.err"));
    let child = coord_cmd()
        .args([
            "session",
            "run",
            "--id",
            id,
            "--ttl",
            ttl,
            "--kill-grace",
            "2s",
            "--",
            "bash",
            "-c",
        ])
        .arg(script)
        .current_dir(d.dir.path())
        .env("COORD_SOCKET", &d.socket)
        .env("PATH", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("session run");
    (child, err)
}

/// The reproduction: the agent takes a lock and starts a child;
/// the wrapper is SIGKILLed. The agent dies of its death signal, the
/// daemon sees the exit, ends the session, passes the lock, and signals
/// the agent's process group, so the child goes too.
#[test]
fn a_killed_wrapper_takes_the_agents_children_with_it() {
    let d = Daemon::start(&[]);
    let (mut wrapper, _) = run(
        &d,
        "tree-a",
        "30s",
        "coord lock acquire x >/dev/null; sleep 120 & echo $! > child.pid; wait",
    );
    let child = pid_in(&d.dir.path().join("child.pid"));
    assert!(running(child));
    wrapper.kill().expect("kill -9 the wrapper");
    wrapper.wait().expect("reap");
    let dereg = dereg_of(&d, "tree-a");
    assert_eq!(dereg["payload"]["reason"], "process_exited", "{dereg}");
    assert_eq!(dereg["payload"]["group_kill_after_ms"], 2000, "{dereg}");
    wait_until("the agent's child is gone", Duration::from_secs(10), || {
        !running(child)
    });
}

/// The agent exits on its own and leaves a child behind, and another that
/// left the group with `setsid`: the wrapper ends both before it exits.
#[test]
fn an_agent_that_exits_leaves_no_children_running() {
    let d = Daemon::start(&[]);
    let (mut wrapper, err) = run(
        &d,
        "tree-b",
        "30s",
        "sleep 120 & echo $! > child.pid; setsid sleep 121 & echo $! > escaped.pid; sleep 0.3; exit 3",
    );
    let child = pid_in(&d.dir.path().join("child.pid"));
    let escaped = pid_in(&d.dir.path().join("escaped.pid"));
    let status = wrapper.wait().expect("wrapper exits");
    assert_eq!(
        status.code(),
        Some(3),
        "{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    assert!(
        !running(child),
        "the agent's child {child} outlived the wrapper"
    );
    assert!(
        !running(escaped),
        "the child that called setsid ({escaped}) outlived the wrapper, its subreaper"
    );
}

/// A lease that runs out while the agent still runs (the wrapper is
/// stopped, so nothing renews it): the daemon signals the agent and its
/// whole group.
#[test]
fn an_expired_lease_ends_the_agents_tree() {
    let d = Daemon::start(&[]);
    let (mut wrapper, _) = run(&d, "tree-c", "1s", "sleep 120 & echo $! > child.pid; wait");
    let child = pid_in(&d.dir.path().join("child.pid"));
    // SAFETY: SIGSTOP to the wrapper this test spawned.
    unsafe { libc::kill(wrapper.id() as i32, libc::SIGSTOP) };
    let dereg = dereg_of(&d, "tree-c");
    assert_eq!(dereg["payload"]["reason"], "expired", "{dereg}");
    assert_eq!(dereg["payload"]["process_alive"], true, "{dereg}");
    wait_until("the agent's child is gone", Duration::from_secs(10), || {
        !running(child)
    });
    // SAFETY: as above.
    unsafe { libc::kill(wrapper.id() as i32, libc::SIGCONT) };
    wrapper.wait().expect("wrapper exits");
}

/// The daemon dies and nothing answers for a whole lease: the wrapper
/// treats the session as lost (its locks are handed on by whoever serves
/// the log next) and stops the agent's tree, saying why.
#[test]
fn a_wrapper_without_a_daemon_for_a_whole_lease_stops_its_agent() {
    let mut d = Daemon::start(&[]);
    let (mut wrapper, err) = run(&d, "tree-d", "2s", "sleep 120 & echo $! > child.pid; wait");
    let child = pid_in(&d.dir.path().join("child.pid"));
    d.kill9();
    let mut status = None;
    wait_until("the wrapper stops", Duration::from_secs(20), || {
        status = wrapper.try_wait().expect("try_wait");
        status.is_some()
    });
    let said = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(said.contains("is lost"), "{said}");
    assert_ne!(status.and_then(|s| s.code()), Some(0), "{said}");
    assert!(
        !running(child),
        "the agent's child outlived its lost session"
    );
}
