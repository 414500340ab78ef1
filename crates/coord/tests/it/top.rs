//! `coord top` end to end in a real tmux: a daemon, the view in a pane,
//! sessions registered from other processes, a process killed, the daemon
//! restarted (`send-keys` / `capture-pane`).

use crate::support::{bin, wait_until, Daemon, Tmux};
use std::process::Command;
use std::time::Duration;

fn pane(tmux: &Tmux) -> String {
    String::from_utf8_lossy(&tmux.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
}

fn wait_for(tmux: &Tmux, what: &str, f: impl Fn(&str) -> bool) {
    let mut last = String::new();
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(what, Duration::from_secs(20), || {
            last = pane(tmux);
            f(&last)
        })
    }));
    if ok.is_err() {
        panic!("timed out waiting for {what}; the pane shows:\n{last}");
    }
}

#[test]
fn top_shows_sessions_live_their_death_and_survives_a_daemon_restart() {
    let tmux = Tmux(format!("coord-top-{}", std::process::id()));
    let mut d = Daemon::start(&[]);
    // History from before the view started: the detail reads it from the
    // log.
    let tok = d.register("aaa-early");
    let env = [
        ("COORD_SESSION", "aaa-early"),
        ("COORD_SESSION_TOKEN", tok.as_str()),
    ];
    let out = d.coord_env(&["lock", "acquire", "/repo/early.rs"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmd = format!(
        "COORD_NO_AUTOSTART=1 NO_COLOR=1 {} --socket {} top --no-bell",
        bin(),
        d.socket.display()
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "100",
        "-y",
        "30",
        &cmd,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(&tmux, "the view", |p| {
        p.contains("coord top") && p.contains("SESSION")
    });
    wait_for(&tmux, "aaa-early", |p| p.contains("aaa-early"));
    tmux.run(&["send-keys", "-t", "top", "Enter"]);
    wait_for(&tmux, "the detail with events from the log", |p| {
        p.contains("Session aaa-early")
            && p.contains("lock.acquire")
            && p.contains("/repo/early.rs")
    });
    tmux.run(&["send-keys", "-t", "top", "Escape"]);
    wait_for(&tmux, "back to the list", |p| p.contains("SESSION"));

    // A session registered by another process appears without a key.
    d.register("alpha");
    wait_for(&tmux, "alpha", |p| p.contains("alpha"));

    // A session bound to a process: killing it shows the session dead.
    let mut child = Command::new("sleep").arg("600").spawn().expect("sleep");
    let pid = child.id().to_string();
    d.ok(&[
        "session", "register", "--id", "proc", "--pid", &pid, "--ttl", "1h",
    ]);
    wait_for(&tmux, "proc", |p| p.contains("proc"));
    child.kill().expect("kill");
    let _ = child.wait();
    wait_for(&tmux, "proc dead", |p| {
        p.lines()
            .any(|l| l.contains("proc") && l.contains("dead") && l.contains('✗'))
    });

    // Keys: the events pane and the help.
    tmux.run(&["send-keys", "-t", "top", "4"]);
    wait_for(&tmux, "the events tail", |p| p.contains("session.dereg"));
    tmux.run(&["send-keys", "-t", "top", "?"]);
    wait_for(&tmux, "the help", |p| {
        p.contains("Keys") && p.contains("quit")
    });
    tmux.run(&["send-keys", "-t", "top", "1"]);

    // The daemon goes away: a banner; it comes back: the view catches up.
    d.terminate();
    wait_for(&tmux, "the banner", |p| p.contains("DISCONNECTED"));
    d.restart();
    d.register("after-restart");
    wait_for(&tmux, "the catch-up", |p| {
        p.contains("after-restart") && !p.contains("DISCONNECTED")
    });

    tmux.run(&["send-keys", "-t", "top", "q"]);
    wait_until("top quits", Duration::from_secs(10), || {
        !tmux.run(&["has-session", "-t", "top"]).status.success()
    });
}
