//! Smaller untruths a fleet hits on its first day: a waiter that gives up
//! (Ctrl-C) is not logged as a timeout. Real daemon, real CLI.

use crate::support::*;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn ctrl_c_on_a_lock_wait_is_logged_as_the_client_gone_not_a_timeout() {
    let d = Daemon::start(&[]);
    let a = d.register("holder");
    let b = d.register("waiter");
    d.coord_env(
        &["lock", "acquire", "r", "--session", "holder"],
        &[("COORD_SESSION_TOKEN", &a)],
    );
    let mut waiter = coord_cmd()
        .args([
            "lock",
            "acquire",
            "r",
            "--session",
            "waiter",
            "--wait",
            "60s",
        ])
        .env("COORD_SOCKET", &d.socket)
        .env("COORD_SESSION_TOKEN", &b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("waiter");
    wait_until("the waiter queued", Duration::from_secs(20), || {
        d.all_events().iter().any(|e| e["tx_kind"] == "lock.wait")
    });
    // SAFETY: SIGINT to the CLI process this test spawned (Ctrl-C).
    unsafe { libc::kill(waiter.id() as i32, libc::SIGINT) };
    waiter.wait().expect("waiter exits");
    let mut cancel = None;
    wait_until("the wait is cancelled", Duration::from_secs(20), || {
        cancel = d
            .all_events()
            .into_iter()
            .find(|e| e["tx_kind"] == "lock.wait_cancel");
        cancel.is_some()
    });
    let cancel = cancel.expect("cancel");
    assert_eq!(cancel["payload"]["reason"], "client_gone", "{cancel}");
}
