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
    /// socket is the default one, $XDG_RUNTIME_DIR/coord/coord.sock).
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

fn socket_unit() -> String {
    "# Written by `coord service install --user`.\n\
     [Unit]\n\
     Description=coord daemon socket\n\
     \n\
     [Socket]\n\
     ListenStream=%t/coord/coord.sock\n\
     SocketMode=0600\n\
     DirectoryMode=0700\n\
     \n\
     [Install]\n\
     WantedBy=sockets.target\n"
        .to_string()
}

fn service_unit(exe: &Path) -> String {
    format!(
        "# Written by `coord service install --user`.\n\
         [Unit]\n\
         Description=coord: the coordination log for agent sessions\n\
         Requires={SOCKET_UNIT}\n\
         After={SOCKET_UNIT}\n\
         \n\
         [Service]\n\
         Type=notify\n\
         ExecStart=\"{}\" daemon\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exe.display()
    )
}

pub(crate) fn service(cmd: ServiceCmd) -> Result<ExitCode> {
    let dir = unit_dir()?;
    match cmd {
        ServiceCmd::Install { .. } => {
            let exe = std::env::current_exe().context("locating the coord binary")?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, text) in [
                (SOCKET_UNIT, socket_unit()),
                (SERVICE_UNIT, service_unit(&exe)),
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
