//! `coord service install|uninstall --user`: systemd user units that
//! start the daemon on the first connection to its socket (socket
//! activation) and know when it is ready (`Type=notify`).
//!
//! This module only writes and removes two unit files; it never runs
//! systemctl, so it works (and is tested) where systemd is absent. The
//! daemon's side, taking the passed socket and reporting readiness, is in
//! `cmd::daemon` and `coord_daemon::server`.

use crate::output;
use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub(crate) enum ServiceCmd {
    /// Write coord.socket and coord.service for `systemctl --user` (the
    /// socket is --socket or $COORD_SOCKET when given, else
    /// $XDG_RUNTIME_DIR/coord/coord.sock).
    Install {
        /// User units (the only kind supported).
        #[arg(long, required = true)]
        user: bool,
    },
    /// Remove the units `install` wrote.
    Uninstall {
        /// User units (the only kind supported).
        #[arg(long, required = true)]
        user: bool,
    },
}

const SOCKET_UNIT: &str = "coord.socket";
const SERVICE_UNIT: &str = "coord.service";

/// `$XDG_CONFIG_HOME/systemd/user` (else `~/.config/systemd/user`).
fn unit_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|h| PathBuf::from(h).join(".config"))
            .ok_or_else(|| anyhow!("neither XDG_CONFIG_HOME nor HOME is set"))?,
    };
    Ok(base.join("systemd").join("user"))
}

/// `s` with systemd's specifier character doubled (`%` → `%%`,
/// systemd.unit(5) "Specifiers"), so a path is taken as written.
fn no_specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// `s` as one double-quoted word of an `ExecStart=` line
/// (systemd.service(5) "Command lines"): `\` and `"` escaped, `%`
/// doubled, `$` doubled so it is not a variable.
fn exec_word(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "$$");
    format!("\"{}\"", no_specifiers(&escaped))
}

/// A path a unit file can carry: UTF-8 and one line.
fn unit_text(p: &Path, what: &str) -> Result<String> {
    let s = p.to_str().ok_or_else(|| {
        anyhow!(
            "{what} {} is not UTF-8; a unit file cannot name it",
            p.display()
        )
    })?;
    if s.contains(['\n', '\r']) {
        return Err(anyhow!(
            "{what} {s:?} holds a line break; a unit file cannot name it"
        ));
    }
    Ok(s.to_string())
}

fn socket_unit(socket: Option<&str>) -> String {
    let listen = socket.map_or_else(|| "%t/coord/coord.sock".to_string(), no_specifiers);
    format!(
        "# Written by `coord service install --user`.\n\
         [Unit]\n\
         Description=coord daemon socket\n\
         \n\
         [Socket]\n\
         ListenStream={listen}\n\
         SocketMode=0600\n\
         DirectoryMode=0700\n\
         \n\
         [Install]\n\
         WantedBy=sockets.target\n"
    )
}

fn service_unit(exe: &str, socket: Option<&str>) -> String {
    let socket = socket.map_or_else(String::new, |s| format!(" --socket {}", exec_word(s)));
    format!(
        "# Written by `coord service install --user`.\n\
         [Unit]\n\
         Description=coord: the coordination log for agent sessions\n\
         Requires={SOCKET_UNIT}\n\
         After={SOCKET_UNIT}\n\
         \n\
         [Service]\n\
         Type=notify\n\
         ExecStart={}{socket} daemon\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exec_word(exe)
    )
}

/// Runs `coord service …`; `socket` is the global `--socket` (or
/// `$COORD_SOCKET`), which the units then serve instead of the default.
pub(crate) fn service(cmd: ServiceCmd, socket: Option<&Path>) -> Result<ExitCode> {
    let dir = unit_dir()?;
    match cmd {
        ServiceCmd::Install { .. } => {
            let exe = std::env::current_exe().context("locating the coord binary")?;
            let exe = unit_text(&exe, "the coord binary")?;
            let socket = match socket {
                Some(p) if p.is_relative() => {
                    return Err(anyhow!(
                        "--socket {} is relative; a unit needs an absolute path",
                        p.display()
                    ))
                }
                Some(p) => Some(unit_text(p, "the socket")?),
                None => None,
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, text) in [
                (SOCKET_UNIT, socket_unit(socket.as_deref())),
                (SERVICE_UNIT, service_unit(&exe, socket.as_deref())),
            ] {
                let p = dir.join(name);
                std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
                output::line(&format!("wrote {}", p.display()))?;
            }
            output::line(
                "now: systemctl --user daemon-reload && systemctl --user enable --now coord.socket",
            )?;
        }
        ServiceCmd::Uninstall { .. } => {
            for name in [SOCKET_UNIT, SERVICE_UNIT] {
                let p = dir.join(name);
                match std::fs::remove_file(&p) {
                    Ok(()) => output::line(&format!("removed {}", p.display()))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
                }
            }
            output::line("first: systemctl --user disable --now coord.socket coord.service")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_written_as_systemd_reads_them() {
        let unit = service_unit("/opt/100%/co\"ord$x", Some("/run/a%b/c.sock"));
        assert!(
            unit.contains(
                "ExecStart=\"/opt/100%%/co\\\"ord$$x\" --socket \"/run/a%%b/c.sock\" daemon\n"
            ),
            "{unit}"
        );
        assert!(socket_unit(Some("/run/a%b/c.sock")).contains("ListenStream=/run/a%%b/c.sock\n"));
        assert!(socket_unit(None).contains("ListenStream=%t/coord/coord.sock\n"));
        assert!(unit_text(Path::new("/a\nb"), "x").is_err());
    }
}
