//! What the CLI reads of other processes from `/proc`: a process's
//! state and parent (`/proc/PID/stat`), name, command line and
//! executable. It owns those files' formats; it must not signal or change
//! any process.

/// The fields of `/proc/PID/stat` after the command name (which is in
/// parentheses and may itself hold spaces and parentheses): the state is
/// the first, the parent's pid the second. `None` when there is no such
/// process.
fn stat_after_name(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether `pid` exists and has not exited (a zombie waiting to be reaped
/// has exited).
pub(crate) fn alive(pid: u32) -> bool {
    stat_after_name(pid)
        .and_then(|f| f.into_iter().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The parent of `pid`.
pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    stat_after_name(pid)?.get(1)?.parse().ok()
}

/// The command name of `pid` (`/proc/PID/comm`, without its newline).
pub(crate) fn comm(pid: u32) -> Option<String> {
    Some(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_string(),
    )
}

/// The command line of `pid` (`/proc/PID/cmdline`, NUL-separated).
pub(crate) fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The executable of `pid` (`/proc/PID/exe`), when it may be read.
pub(crate) fn exe(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_its_parent() {
        let me = std::process::id();
        assert!(alive(me));
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
        assert!(comm(me).is_some_and(|c| !c.is_empty()));
        assert!(!alive(u32::MAX));
    }
}
