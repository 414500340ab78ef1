//! Auto-start: a command that finds no daemon on its socket starts one in
//! the background and proceeds (PROTOCOL §11.1).
//!
//! Exactly one daemon starts however many commands race: each takes an
//! exclusive `flock` on `<socket>.autostart.lock` (beside the socket, in
//! the daemon's 0700 socket directory), looks again, and only the one that
//! still finds nothing starts `coord daemon --socket S` in a new session
//! (so a terminal's Ctrl-C does not reach it) with its log appended to
//! `daemon.log` beside the store. The store is the one the socket last
//! served (`<socket>.store`, written by the daemon), so a crash never
//! brings a socket back on another log. The lock is held until the new daemon
//! answers, so the others then find it. The daemon's own rule (it refuses
//! to start while another answers on its socket) is the second fence.
//!
//! This module decides nothing about the log; it only spawns and waits.

use crate::output::{code, Exit};
use anyhow::{anyhow, Context, Result};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started daemon has to answer (opening a large store and
/// replaying its tail included).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a daemon answers on `socket` (a connect, nothing sent).
pub(crate) fn answers(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Makes sure a daemon answers on `socket`, starting one if none does.
/// Returns the pid of the daemon it started, if it started one.
///
/// # Errors
/// The socket directory or the lock file cannot be created, the daemon
/// cannot be spawned, or it exits (or stays silent for 30 s) before it
/// answers; the message carries the end of its log.
pub(crate) fn ensure(socket: &Path) -> Result<Option<u32>> {
    if answers(socket) {
        return Ok(None);
    }
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the socket directory {}", dir.display()))?;
    }
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".autostart.lock");
    let lock_path = dir.join(name);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    flock_exclusive(&lock).with_context(|| format!("locking {}", lock_path.display()))?;
    // Another command may have started it while this one waited.
    if answers(socket) {
        return Ok(None);
    }
    let store = store_to_serve(socket)?;
    let log_path = store
        .parent()
        .map(|d| d.join("daemon.log"))
        .unwrap_or_else(|| PathBuf::from("daemon.log"));
    if let Some(d) = log_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .with_context(|| format!("creating {}", d.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("opening the daemon log {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the coord binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("daemon")
        .arg("--socket")
        .arg(socket)
        .arg("--store")
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory; it only
    // detaches the child from this command's terminal and process group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting `coord daemon`")?;
    let pid = child.id();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if answers(socket) {
            eprintln!(
                "coord: started a daemon (pid {pid}) on {}; its log is {}",
                socket.display(),
                log_path.display()
            );
            return Ok(Some(pid));
        }
        if let Some(status) = child.try_wait().context("watching the new daemon")? {
            return Err(anyhow!(Exit(
                code::UNREACHABLE,
                format!(
                    "no daemon answered on {} and the one started for it exited ({status}):\n{}",
                    socket.display(),
                    tail(&log_path)
                )
            )));
        }
        if Instant::now() > deadline {
            return Err(anyhow!(Exit(
                code::UNREACHABLE,
                format!(
                    "the daemon started on {} (pid {pid}) did not answer within {} s; see {}",
                    socket.display(),
                    START_TIMEOUT.as_secs(),
                    log_path.display()
                )
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The store an auto-started daemon serves: the one the socket last
/// served (`<socket>.store`), so a crash never brings the socket back on
/// another log; else `COORD_STORE`, else the default.
///
/// # Errors
/// A record that cannot be read, a `COORD_STORE` naming another store than
/// the record, or a recorded SQLite store that is gone: each refused with
/// the reason and what to run instead (exit 3), never guessed around.
fn store_to_serve(socket: &Path) -> Result<PathBuf> {
    let asked = std::env::var_os("COORD_STORE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let refuse = |why: String| anyhow!(Exit(code::UNREACHABLE, why));
    let served = coord_client::read_served(socket).map_err(|e| {
        refuse(format!(
            "no daemon answers on {}, and {e}",
            socket.display()
        ))
    })?;
    let Some(served) = served else {
        return Ok(asked.unwrap_or_else(coord_daemon::default_store_path));
    };
    if let Some(asked) = asked {
        let same = match asked.to_str() {
            Some(url) if url.starts_with("nats://") => url == served.store,
            _ => coord_store::resolve_store_path(&asked)
                .is_ok_and(|p| p.as_os_str() == served.store.as_str()),
        };
        if !same {
            return Err(refuse(format!(
                "no daemon answers on {}; it last served the log {} in {}, and COORD_STORE names {}: \
                 start the daemon yourself (`coord daemon --socket {} --store …`) to choose",
                socket.display(),
                served.log_id,
                served.store,
                asked.display(),
                socket.display()
            )));
        }
    }
    let store = PathBuf::from(&served.store);
    if !served.store.starts_with("nats://") && !store.exists() {
        return Err(refuse(format!(
            "no daemon answers on {}; it last served the log {} in {}, which no longer exists: \
             start a daemon yourself (`coord daemon --socket {} --store …`) to serve a new log there",
            socket.display(),
            served.log_id,
            served.store,
            socket.display()
        )));
    }
    Ok(store)
}

fn flock_exclusive(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: the descriptor is open for the duration of the call.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The last lines of the daemon's log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
