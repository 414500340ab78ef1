//! One socket, one log; one store, one daemon. A crash never brings a
//! socket back on another log (auto-start serves the store the socket last
//! served, or refuses with the reason), a fencing token is current only on
//! the log that issued it, and two spellings of one store file are one
//! store (PROTOCOL §7.2, §11.1). Real daemons, the real CLI.

use crate::support::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `coord ARGS` with auto-start on, `COORD_STORE` as given (else unset)
/// and the default store under `data`.
fn coord_auto(socket: &Path, data: &Path, store: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .env("COORD_SOCKET", socket)
        .env("XDG_DATA_HOME", data)
        .env_remove("COORD_NO_AUTOSTART")
        .env_remove("COORD_STORE")
        .env_remove("COORD_SESSION")
        .env_remove("COORD_SESSION_TOKEN");
    if let Some(s) = store {
        c.env("COORD_STORE", s);
    }
    c.output().expect("run coord")
}

/// Stops an auto-started daemon (not a child of the test) by its pid.
struct AutoDaemon(u32);

impl Drop for AutoDaemon {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to the daemon this test caused to start.
        unsafe { libc::kill(self.0 as i32, libc::SIGTERM) };
        let pid = self.0;
        wait_until(
            "the auto-started daemon exits",
            Duration::from_secs(20),
            || {
                !Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.contains(") Z"))
            },
        );
    }
}

/// The issue's reproduction: a daemon on a named store is SIGKILLed while
/// `holder` holds `shared-res`; the next plain command auto-starts a
/// daemon, which must serve that same log, so an intruder cannot be
/// granted the lock again under the same token.
#[test]
fn a_crash_brings_the_socket_back_on_the_log_it_served() {
    if on_nats() {
        // About SQLite store files: skipped by name on the NATS pass
        // (scripts/test).
        return;
    }
    let mut d = Daemon::start(&[]);
    let holder = d.register("holder");
    let got = json_of(&d.coord_env(
        &[
            "--json",
            "lock",
            "acquire",
            "shared-res",
            "--session",
            "holder",
        ],
        &[("COORD_SESSION_TOKEN", &holder)],
    ));
    let log_id = got["log_id"]
        .as_str()
        .expect("log_id in the acquire answer")
        .to_string();
    let token = got["fencing_token"].as_u64().expect("token");
    d.kill9();

    let data = d.dir.path().join("elsewhere");
    let status = coord_auto(&d.socket, &data, None, &["--json", "status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let st = json_of(&status);
    let _daemon = AutoDaemon(st["pid"].as_u64().expect("pid") as u32);
    assert_eq!(
        st["log_id"],
        log_id.as_str(),
        "auto-start served another log: {st}"
    );
    assert!(
        !data.join("coord").join("coord.db").exists(),
        "a default store was created"
    );

    let intruder = coord_auto(
        &d.socket,
        &data,
        None,
        &["--json", "session", "register", "--id", "intruder"],
    );
    let itok = json_of(&intruder)["token"]
        .as_str()
        .expect("token")
        .to_string();
    let mut c = Command::new(bin());
    let refused = c
        .args(["lock", "acquire", "shared-res", "--session", "intruder"])
        .env("COORD_SOCKET", &d.socket)
        .env("COORD_NO_AUTOSTART", "1")
        .env("COORD_SESSION_TOKEN", &itok)
        .output()
        .expect("run");
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let check = coord_auto(
        &d.socket,
        &data,
        None,
        &[
            "lock",
            "check",
            "shared-res",
            "--token",
            &token.to_string(),
            "--log-id",
            &log_id,
        ],
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// What auto-start refuses, with the reason: `COORD_STORE` naming another
/// store than the socket last served, and a recorded store that is gone.
/// A plain `coord daemon` on the default store is refused the same way.
#[test]
fn auto_start_refuses_another_log_on_a_socket_and_says_why() {
    if on_nats() {
        // About SQLite store files: skipped by name on the NATS pass
        // (scripts/test).
        return;
    }
    let mut d = Daemon::start(&[]);
    d.terminate();
    let data = d.dir.path().join("elsewhere");
    let other = d.dir.path().join("other.db");
    let out = coord_auto(&d.socket, &data, Some(&other), &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("last served the log") && err.contains("COORD_STORE names"),
        "{err}"
    );
    assert!(!other.exists(), "the other store was created");

    let out = Command::new(bin())
        .args(["daemon", "--socket"])
        .arg(&d.socket)
        .env("XDG_DATA_HOME", &data)
        .env_remove("COORD_STORE")
        .output()
        .expect("coord daemon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("last served the log") && err.contains("--store"),
        "{err}"
    );

    std::fs::remove_file(&d.store).expect("remove the store");
    let out = coord_auto(&d.socket, &data, None, &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no longer exists"), "{err}");
}

/// A fencing token from one log is stale on another, whatever its number,
/// and the check says why.
#[test]
fn a_token_of_another_log_is_stale_and_says_why() {
    let a = Daemon::start(&[]);
    let b = Daemon::start(&[]);
    let mut tokens = Vec::new();
    for d in [&a, &b] {
        let t = d.register("s");
        let got = json_of(&d.coord_env(
            &["--json", "lock", "acquire", "r", "--session", "s"],
            &[("COORD_SESSION_TOKEN", &t)],
        ));
        tokens.push((
            got["fencing_token"].as_u64().expect("token"),
            got["log_id"].as_str().expect("log").to_string(),
        ));
    }
    assert_eq!(tokens[0].0, tokens[1].0, "the same seq on two fresh logs");
    let tok = tokens[0].0.to_string();
    let check = |log: &str, json: bool| {
        let mut args = vec!["lock", "check", "r", "--token", &tok, "--log-id", log];
        if json {
            args.insert(0, "--json");
        }
        b.coord(&args)
    };
    assert!(check(&tokens[1].1, false).status.success());
    let other = check(&tokens[0].1, false);
    assert_eq!(other.status.code(), Some(4));
    let said = String::from_utf8_lossy(&other.stdout);
    assert!(
        said.contains("issued by the log") && said.contains(&tokens[0].1),
        "{said}"
    );
    let j = json_of(&check(&tokens[0].1, true));
    assert_eq!(j["current"], false);
    assert_eq!(j["reason"], "other_log");
}

/// `real/coord.db` and `alias/coord.db` (a link to it) are one store: the
/// second daemon is refused. A link into a world-writable directory is
/// judged by that directory.
#[test]
fn one_store_however_it_is_spelled() {
    if on_nats() {
        // About SQLite store files: skipped by name on the NATS pass
        // (scripts/test).
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let real = t.path().join("real");
    let alias = t.path().join("alias");
    for dir in [&real, &alias] {
        std::fs::create_dir(dir).expect("mkdir");
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
    }
    std::os::unix::fs::symlink(real.join("coord.db"), alias.join("coord.db")).expect("link");
    let _first = Daemon::start_with_store(Some(real.join("coord.db")), &[]);
    let socket2 = t.path().join("s2/coord.sock");
    let err = refused_daemon(&alias.join("coord.db"), &socket2);
    assert!(err.contains("in use by another coord daemon"), "{err}");

    let public = t.path().join("public");
    std::fs::create_dir(&public).expect("mkdir");
    std::fs::set_permissions(
        &public,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod");
    std::os::unix::fs::symlink(public.join("coord.db"), alias.join("pub.db")).expect("link");
    let err = refused_daemon(&alias.join("pub.db"), &socket2);
    assert!(err.contains("other users can write"), "{err}");
}

/// Runs `coord daemon --store STORE --socket SOCKET`, which must refuse to
/// start; its stderr.
fn refused_daemon(store: &Path, socket: &Path) -> String {
    let out = Command::new(bin())
        .args(["daemon", "--store"])
        .arg(store)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("coord daemon");
    assert!(
        !out.status.success(),
        "a daemon started on {}",
        store.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
