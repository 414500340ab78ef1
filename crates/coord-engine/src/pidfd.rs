//! Process-exit notification without polling: `pidfd_open(2)` gives a file
//! descriptor that becomes readable when the process exits, which tokio's
//! reactor waits on like any socket.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

/// Opens a pidfd for `pid`.
///
/// # Errors
/// `ESRCH` (io::ErrorKind::NotFound is not used by the kernel) when no
/// such process exists; other OS errors (e.g. `ENOSYS` before Linux 5.3).
pub fn open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process behind `fd` exits and returns its exit status
/// if it can still be read (the process is a zombie its parent has not
/// reaped yet): the exit code, or 128 + signal number.
///
/// # Errors
/// Registering the descriptor with the reactor failed.
pub async fn exited(fd: OwnedFd, pid: u32) -> io::Result<Option<i32>> {
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open
    // and refers to the same pidfd until the AsyncFd is dropped.
    let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)?;
    let _ready = afd.readable().await?;
    Ok(zombie_exit_code(pid))
}

/// True while the process behind `fd` has not exited. A pidfd turns
/// readable at exit (even before the zombie is reaped), so a zero-timeout
/// `poll` answers exactly, with no pid-reuse race.
pub fn is_running(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 0
}

/// Sends `signal` to the process behind `fd` (`pidfd_send_signal(2)`): it
/// reaches that process or none, never a later one with a reused pid.
///
/// # Errors
/// `ESRCH` when it has exited; `EPERM` when it is not ours to signal.
pub fn send_signal(fd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: a pidfd we own, a signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the wait status of a zombie from `/proc/<pid>/stat` (field 52).
pub fn zombie_exit_code(pid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() != Some(&"Z") {
        return None;
    }
    // `rest` starts at field 3, so field 52 is index 49.
    let status: i32 = fields.get(49)?.parse().ok()?;
    Some(if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        128 + (status & 0x7f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notices_a_child_exit_with_its_status() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.1; exit 7"])
            .spawn()
            .expect("spawn");
        let fd = open(child.id()).expect("pidfd");
        let code = exited(fd, child.id()).await.expect("wait");
        assert_eq!(
            code,
            Some(7),
            "the zombie's status is readable before reaping"
        );
        child.wait().expect("reap");
    }

    #[test]
    fn a_signal_reaches_the_process_and_running_tells_its_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let fd = open(child.id()).expect("pidfd");
        assert!(is_running(&fd));
        send_signal(&fd, libc::SIGTERM).expect("signal");
        let status = child.wait().expect("reap");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        assert!(!is_running(&fd), "an exited process is not running");
        let err = send_signal(&fd, libc::SIGKILL).expect_err("reaped");
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    fn a_missing_process_is_esrch() {
        let err = open(i32::MAX as u32).expect_err("no such pid");
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
