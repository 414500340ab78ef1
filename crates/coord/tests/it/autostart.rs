//! Auto-start: commands that find no daemon start exactly one, however
//! many race; `coord daemon stop` stops it; `--no-autostart` and a daemon
//! that cannot start give clear errors.

use crate::support::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `coord ARGS` with auto-start enabled, against `socket`, with the store
/// (and the daemon's log) under `data`.
fn coord(socket: &Path, data: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("COORD_SOCKET", socket)
        .env("XDG_DATA_HOME", data)
        .env_remove("COORD_NO_AUTOSTART")
        .env_remove("COORD_STORE")
        .env_remove("COORD_SESSION")
        .output()
        .expect("run coord")
}

/// Pids of `coord daemon` processes serving `socket`.
fn daemons_on(socket: &Path) -> Vec<u32> {
    let want = socket.to_str().expect("utf-8");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "daemon") && args.iter().any(|a| a == want) {
            let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if !state.contains(") Z") {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn fifty_racing_commands_start_one_daemon_and_all_get_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("run/coord.sock");
    let data = dir.path().join("data");
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (s, d) = (socket.clone(), data.clone());
            std::thread::spawn(move || coord(&s, &d, &["--json", "status"]))
        })
        .collect();
    let mut pids = std::collections::BTreeSet::new();
    let mut started = 0;
    for h in handles {
        let out = h.join().expect("thread");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        pids.insert(v["pid"].as_u64().expect("pid"));
        if String::from_utf8_lossy(&out.stderr).contains("started a daemon") {
            started += 1;
        }
    }
    assert_eq!(pids.len(), 1, "answers came from {pids:?}");
    assert_eq!(started, 1, "one command says it started the daemon");
    let running = daemons_on(&socket);
    assert_eq!(running.len(), 1, "daemons on the socket: {running:?}");
    assert_eq!(u64::from(running[0]), *pids.first().expect("pid"));
    // The daemon logs beside its store, and its socket directory is private.
    let log = std::fs::read_to_string(data.join("coord/daemon.log")).expect("daemon.log");
    assert!(log.contains("listening"), "{log}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("run"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // A second command uses it without starting another.
    let out = coord(&socket, &data, &["session", "list"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("started"));

    let out = coord(&socket, &data, &["daemon", "stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped the daemon"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemons_on(&socket).is_empty() {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!socket.exists(), "the socket was left behind");
    // Stopping what is not running is not an error.
    let out = coord(&socket, &data, &["daemon", "stop"]);
    assert!(out.status.success());
    assert!(
        daemons_on(&socket).is_empty(),
        "daemon stop started a daemon"
    );
}

#[test]
fn no_autostart_refuses_and_a_daemon_that_cannot_start_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("run/coord.sock");
    let data = dir.path().join("data");

    let out = coord(&socket, &data, &["--no-autostart", "status"]);
    assert_eq!(out.status.code(), Some(3));
    let out = Command::new(bin())
        .arg("status")
        .env("COORD_SOCKET", &socket)
        .env("XDG_DATA_HOME", &data)
        .env("COORD_NO_AUTOSTART", "1")
        .output()
        .expect("coord");
    assert_eq!(out.status.code(), Some(3));
    assert!(daemons_on(&socket).is_empty());

    // A store the daemon cannot open: the command fails with the reason.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        "this is not a SQLite database, not even close. ".repeat(200),
    )
    .expect("write");
    let out = Command::new(bin())
        .arg("status")
        .env("COORD_SOCKET", &socket)
        .env("COORD_STORE", &garbage)
        .env_remove("COORD_NO_AUTOSTART")
        .output()
        .expect("coord");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exited"), "{err}");
    assert!(daemons_on(&socket).is_empty());
}
