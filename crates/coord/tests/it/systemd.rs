//! systemd integration without systemd: the daemon serves on a socket
//! passed the way systemd passes one (fd 3, `LISTEN_FDS`, `LISTEN_PID`),
//! reports `READY=1` and `STOPPING=1` on `NOTIFY_SOCKET`, leaves the
//! passed socket in place for the next start; and `coord service` writes
//! and removes the user units.

use crate::support::*;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `coord daemon` as systemd would: `listener` as fd 3, the
/// variables naming it, and `notify` as its NOTIFY_SOCKET.
fn activate(listener: &UnixListener, store: &Path, notify: &Path) -> Child {
    let fd = listener.as_raw_fd();
    let mut c = Command::new("sh");
    // $$ is the shell's pid, which `exec` hands to the daemon.
    c.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" daemon --store \"$1\"")
        .arg(bin())
        .arg(store)
        .env("NOTIFY_SOCKET", notify)
        .env("COORD_NO_AUTOSTART", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; they only arrange the
    // child's descriptor table.
    unsafe {
        c.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.spawn().expect("spawn the daemon")
}

fn expect_notice(notify: &UnixDatagram, want: &str) {
    let mut buf = [0u8; 4096];
    let n = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("waiting for {want}: {e}"));
    let got = String::from_utf8_lossy(&buf[..n]);
    assert!(got.lines().any(|l| l == want), "got {got:?}, wanted {want}");
}

fn status(socket: &Path) -> serde_json::Value {
    let out = coord_cmd()
        .args(["--json", "status", "--socket"])
        .arg(socket)
        .output()
        .expect("coord");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn a_socket_passed_like_systemd_is_served_and_readiness_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_dir = dir.path().join("run");
    std::fs::create_dir(&sock_dir).expect("mkdir");
    let socket = sock_dir.join("coord.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let store = dir.path().join("coord.db");

    let mut daemon = Reaped(activate(&listener, &store, &notify_path));
    expect_notice(&notify, "READY=1");
    let s = status(&socket);
    assert_eq!(s["socket"], socket.to_str().expect("utf-8"));
    assert_eq!(s["pid"], daemon.id());
    let out = coord_cmd()
        .args(["session", "register", "--id", "activated", "--socket"])
        .arg(&socket)
        .output()
        .expect("coord");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = s["head_seq"].as_u64().expect("head") + 1;

    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    expect_notice(&notify, "STOPPING=1");
    assert!(daemon.wait().expect("wait").success());
    assert!(socket.exists(), "the passed socket belongs to the manager");

    // The manager starts it again on the same socket; the log is intact.
    let _again = Reaped(activate(&listener, &store, &notify_path));
    expect_notice(&notify, "READY=1");
    assert!(status(&socket)["head_seq"].as_u64().expect("head") >= head);
}

#[test]
fn service_install_writes_user_units_and_uninstall_removes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        coord_cmd()
            .args(args)
            .env("XDG_CONFIG_HOME", dir.path())
            .env_remove("COORD_SOCKET")
            .output()
            .expect("coord")
    };
    let out = run(&["service", "install", "--user"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let units = dir.path().join("systemd/user");
    let socket = std::fs::read_to_string(units.join("coord.socket")).expect("coord.socket");
    assert!(
        socket.contains("ListenStream=%t/coord/coord.sock"),
        "{socket}"
    );
    assert!(socket.contains("SocketMode=0600"), "{socket}");
    let service = std::fs::read_to_string(units.join("coord.service")).expect("coord.service");
    assert!(service.contains("Type=notify"), "{service}");
    assert!(
        service.contains(&format!("ExecStart=\"{}\" daemon", bin())),
        "{service}"
    );

    let out = run(&["service", "uninstall", "--user"]);
    assert!(out.status.success());
    assert!(!units.join("coord.socket").exists());
    assert!(!units.join("coord.service").exists());
    // System units are not offered: --user is required.
    assert_eq!(run(&["service", "install"]).status.code(), Some(2));

    // --socket is served, not ignored; `%` is doubled so systemd takes
    // the path as written (systemd.unit(5), "Specifiers").
    let out = run(&[
        "--socket",
        "/run/c%d/coord.sock",
        "service",
        "install",
        "--user",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket = std::fs::read_to_string(units.join("coord.socket")).expect("coord.socket");
    assert!(
        socket.contains("ListenStream=/run/c%%d/coord.sock\n"),
        "{socket}"
    );
    let service = std::fs::read_to_string(units.join("coord.service")).expect("coord.service");
    assert!(
        service.contains("--socket \"/run/c%%d/coord.sock\" daemon"),
        "{service}"
    );
    let out = run(&["--socket", "rel.sock", "service", "install", "--user"]);
    assert!(!out.status.success(), "a relative socket is refused");
}
