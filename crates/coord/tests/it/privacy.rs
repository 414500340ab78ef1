//! Private by default: the daemon's files are its user's alone, it never
//! deletes what is not its stale socket, and it refuses a store directory
//! others can write to.

use crate::support::{coord_cmd, post, Daemon};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs `coord daemon` expecting it to refuse to start; returns stderr.
fn refused(socket: &Path, store: &Path) -> String {
    let mut child = coord_cmd()
        .args(["daemon", "--socket"])
        .arg(socket)
        .arg("--store")
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coord daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            assert!(!status.success(), "the daemon started");
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_store_and_its_files_are_private() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("fresh").join("data");
    let store = dir.join("coord.db");
    let d = Daemon::start_with_store(Some(store.clone()), &[]);
    let tok = d.register("p1");
    let r = post(
        &d,
        "/v1/inbox/p1",
        Some(&tok),
        &json!({"from_session":"p1","body":"a secret"}),
    );
    assert!(r.status < 300, "{:?}", r.json());
    assert_eq!(mode(&dir), 0o700, "store directory");
    for name in ["coord.db", "coord.db-wal", "coord.db-shm", "coord.db.lock"] {
        let p = dir.join(name);
        assert!(p.exists(), "{name} missing");
        assert_eq!(mode(&p), 0o600, "{name}");
    }
    assert_eq!(mode(&d.socket), 0o600, "socket");
}

#[test]
fn a_store_directory_others_can_write_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).expect("run dir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).expect("open dir");
    for m in [0o777, 0o770, 0o1777] {
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(m)).expect("chmod");
        let err = refused(&run.join("s.sock"), &open.join("coord.db"));
        assert!(err.contains("chmod 700"), "mode {m:o}: {err}");
        assert!(
            !open.join("coord.db").exists(),
            "mode {m:o}: a store was made"
        );
    }
}

#[test]
fn a_regular_file_at_the_socket_path_is_never_deleted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).expect("run dir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let socket = run.join("s.sock");
    std::fs::write(&socket, "not a socket").expect("plant");
    let err = refused(&socket, &run.join("coord.db"));
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&socket).expect("still there"),
        "not a socket"
    );
    // A link planted there is refused the same way, and its target kept.
    std::fs::remove_file(&socket).expect("rm");
    let target = tmp.path().join("target");
    std::fs::write(&target, "kept").expect("target");
    std::os::unix::fs::symlink(&target, &socket).expect("link");
    let err = refused(&socket, &run.join("coord.db"));
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).expect("target"), "kept");
}
