//! `coord session run -- CMD…`: run a command as a session.
//!
//! The session must carry CMD's own pid (so the daemon's pidfd sees CMD
//! exit) and CMD must already have `COORD_SESSION_TOKEN` in its
//! environment when it starts. The token is therefore made here, CMD is
//! forked with it, and the forked child waits on a pipe (before `exec`)
//! until the registration with its pid has been answered. On exit the
//! child is observed with `waitid(WNOWAIT)` so it stays a zombie, and
//! readable, while the session is deregistered with its exit status; only
//! then is it reaped.
//!
//! The wrapper and CMD live and die together. CMD dies with the wrapper:
//! it is started with `PR_SET_PDEATHSIG` = SIGTERM, so if the wrapper is
//! killed (even with SIGKILL) CMD receives SIGTERM at once, its exit is
//! seen by the daemon's pidfd and its locks go to the next waiter. The
//! wrapper dies with CMD: it exits with CMD's status. An agent is thus
//! never left running, registered to nobody, without being told.
//!
//! CMD's children die with it too: CMD leads a process group of its own
//! (registered as `process_group`, so the daemon signals the group on every
//! end it sees first), and the wrapper, a child subreaper, ends the group
//! and the orphans it adopted when CMD exits (crate::tree). A wrapper that
//! cannot reach its daemon for a whole lease treats its session as lost and
//! ends the tree the same way. When the wrapper runs in the terminal's
//! foreground, it hands the foreground to CMD's group, so the agent reads
//! the terminal and gets its Ctrl-C as if started by the shell.

use crate::args::{new_token, SessionAbout};
use crate::output::{code, Exit};
use anyhow::{anyhow, Context, Result};
use clap::Args;
use coord_client::Client;
use coord_proto::api::{DeregRequest, HeartbeatRequest, RegisterRequest};
use coord_proto::ErrorCode;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::Duration;

/// The hidden subcommand that waits on the start gate, then execs CMD.
pub const GATE: &str = "__gate";

/// `coord __gate FD -- CMD…`: blocks until one byte arrives on FD (the
/// session is registered), then replaces itself with CMD. If the pipe closes
/// without that byte the registration failed, and CMD never runs.
pub fn gate(args: &[String]) -> ExitCode {
    let (Some(fd), Some(cmd)) = (
        args.first().and_then(|s| s.parse::<i32>().ok()),
        args.iter().position(|a| a == "--").map(|i| &args[i + 1..]),
    ) else {
        eprintln!("coord: {GATE} FD -- CMD...");
        return ExitCode::from(2);
    };
    let Some(program) = cmd.first() else {
        eprintln!("coord: {GATE}: no command");
        return ExitCode::from(2);
    };
    let mut b = 0u8;
    loop {
        // SAFETY: reading one byte into a valid buffer from an inherited fd.
        let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if n < 0 && err.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return ExitCode::from(127);
    }
    // SAFETY: closing the gate fd we own before exec.
    unsafe { libc::close(fd) };
    let err = std::process::Command::new(program).args(&cmd[1..]).exec();
    eprintln!("coord: cannot run {program}: {err}");
    ExitCode::from(127)
}

/// Arguments of `coord session run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Session id [default: <command name>-<ulid>].
    #[arg(long = "id")]
    id: Option<String>,
    #[command(flatten)]
    about: SessionAbout,
    /// Lease; heartbeats go out every third of it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array or fails.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating the start gate pipe");
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits (on a blocking thread) until `pid` exits, without reaping it.
/// Returns the exit code, or 128 + signal.
async fn wait_exit(pid: u32) -> Result<i32> {
    tokio::task::spawn_blocking(move || loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: P_PID with our own child's pid and a valid siginfo pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            // SAFETY: after a successful waitid with WEXITED the status is set.
            let status = unsafe { info.si_status() };
            return Ok(if info.si_code == libc::CLD_EXITED {
                status
            } else {
                128 + status
            });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(anyhow!(err).context("waiting for the command"));
        }
    })
    .await
    .context("waiter thread")?
}

/// Runs the command as a session; returns its exit code.
pub async fn run(base: &Client, args: RunArgs) -> Result<ExitCode> {
    let program = args.command.first().cloned().unwrap_or_default();
    let id = args.id.clone().unwrap_or_else(|| {
        let name: String = std::path::Path::new(&program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(32)
            .collect();
        format!(
            "{}-{}",
            if name.is_empty() { "run" } else { &name },
            ulid::Ulid::new()
        )
    });
    let token = new_token();
    let (gate_r, gate_w) = pipe()?;
    let (raw_r, raw_w) = (gate_r.as_raw_fd(), gate_w.as_raw_fd());

    // CMD is started through `coord __gate FD -- CMD…`: the gate process
    // waits on the pipe and then execs CMD in place, so CMD keeps the pid
    // that was registered. (std's spawn waits for the exec, so the wait
    // cannot happen before the exec in the child itself.)
    let me = std::env::current_exe().context("locating the coord binary")?;
    let mut cmd = std::process::Command::new(me);
    cmd.arg(GATE)
        .arg(raw_r.to_string())
        .arg("--")
        .args(&args.command)
        .env("COORD_SESSION", &id)
        .env("COORD_SESSION_TOKEN", &token)
        .env("COORD_SOCKET", base.socket());
    let wrapper = std::process::id() as libc::pid_t;
    if let Err(e) = crate::tree::become_subreaper() {
        eprintln!("coord: cannot adopt the command's orphans ({e}); a child that calls setsid may outlive it");
    }
    // SAFETY: isatty, tcgetpgrp and getpgrp only read.
    let foreground = unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() };
    // SAFETY: only async-signal-safe calls (close, fcntl, prctl, getppid,
    // setpgid, signal, tcsetpgrp, getpid) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // A process group of its own: one signal reaches the tree.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if foreground {
                // Keep the terminal: the new group becomes the
                // foreground one (a background group asking would be
                // stopped by SIGTTOU, hence the ignore around it).
                libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, libc::getpid());
                libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            }
            // Die with the wrapper (the death signal survives the exec into
            // the gate and then into CMD). If the wrapper died before this
            // line, the signal would never come: stop now instead.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != wrapper {
                libc::_exit(143);
            }
            libc::close(raw_w);
            // Let the read end survive the exec into the gate.
            let flags = libc::fcntl(raw_r, libc::F_GETFD);
            if flags < 0 || libc::fcntl(raw_r, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    drop(gate_r);
    let pid = child.id();

    let mut req = RegisterRequest {
        session_id: id.clone(),
        pid: Some(pid),
        ttl_ms: Some(args.ttl.as_millis() as u64),
        token: Some(token.clone()),
        phase: Some("running".into()),
        process_group: true,
        ..Default::default()
    };
    let registered = match args.about.fill(&mut req) {
        Ok(()) => base.register(&req).await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    let grace = Duration::from_millis(
        req.kill_grace_ms
            .unwrap_or(coord_proto::DEFAULT_KILL_GRACE_MS),
    );
    if let Err(e) = registered {
        drop(gate_w);
        let _ = child.wait();
        take_back_terminal(foreground);
        return Err(e.context(format!("registering session {id}")));
    }
    // Open the gate: CMD execs now, already registered.
    // SAFETY: writing one byte from a valid buffer to our own pipe.
    let wrote = unsafe { libc::write(gate_w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
    drop(gate_w);
    if wrote != 1 {
        return Err(anyhow!(Exit(
            code::ERROR,
            "could not release the command".into()
        )));
    }

    let client = base.clone().with_token(Some(token));
    let beat = (args.ttl / 3).max(Duration::from_millis(200));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    let exit = wait_exit(pid);
    tokio::pin!(exit);
    let mut signals = Signals::new()?;
    let mut beating = true;
    let mut answered = tokio::time::Instant::now();
    let pgid = pid as libc::pid_t;
    let status = loop {
        tokio::select! {
            r = &mut exit => {
                let status = r?;
                if status > 128 && beating {
                    // Killed by a signal: if the daemon ended the session
                    // (and signalled the group) first, say so, as the
                    // heartbeat that would have found it would.
                    if let Err(e) = client.heartbeat(&id, &HeartbeatRequest::default()).await {
                        if e.code() == Some(ErrorCode::SessionNotFound) && !ended_by_itself(&e) {
                            eprintln!("coord: {e}; the daemon ended it and signalled the process group of {pid}");
                        }
                    }
                }
                break status;
            }
            _ = ticker.tick(), if beating => {
                match client.heartbeat(&id, &HeartbeatRequest::default()).await {
                    Ok(_) => answered = tokio::time::Instant::now(),
                    Err(e) if e.code() == Some(ErrorCode::SessionNotFound) => {
                        beating = false;
                        if ended_by_itself(&e) {
                            // The command ended its own session: it knows.
                            eprintln!("coord: session {id} was deregistered; heartbeats stop");
                        } else {
                            // Ended by someone else (expiry, force, …): the
                            // command must not go on believing it holds
                            // its locks. Tell it the way the wrapper's own
                            // death would.
                            eprintln!("coord: {e}; sending SIGTERM to {pid} and its process group");
                            // SAFETY: kill of our own child's group (its
                            // leader is not reaped, so the id is not reused).
                            unsafe { libc::kill(-pgid, libc::SIGTERM) };
                        }
                    }
                    Err(e) if e.code().is_none() && answered.elapsed() >= args.ttl => {
                        // Nobody has renewed the lease for a whole lease:
                        // the daemon ends the session (or, on a shared log,
                        // another daemon does, as `daemon_lost`) and hands
                        // its locks on. The agent must not act on them.
                        beating = false;
                        eprintln!(
                            "coord: the daemon has not answered for {} ms, the session's whole lease ({e}); \
                             session {id} is lost: stopping {pid} and its process group",
                            args.ttl.as_millis()
                        );
                        tokio::spawn(async move {
                            crate::tree::stop(pgid, pgid, grace).await;
                        });
                    }
                    Err(e) => eprintln!("coord: heartbeat failed: {e}"),
                }
            }
            sig = signals.next() => {
                if sig == libc::SIGCHLD {
                    crate::tree::reap_adopted(pgid);
                    continue;
                }
                // Pass INT/TERM/HUP on to the command's group; its exit
                // ends the run.
                // SAFETY: kill of our child's group with a valid signal.
                unsafe { libc::kill(-pgid, sig) };
            }
        }
    };
    // CMD is gone; what it started must not outlive its session.
    let left = crate::tree::stop(pgid, pgid, grace).await;
    if left > 0 {
        eprintln!(
            "coord: {left} process(es) of {program} ignored SIGTERM for {} ms: sent SIGKILL",
            grace.as_millis()
        );
    }
    take_back_terminal(foreground);
    match client
        .dereg(
            &id,
            &DeregRequest {
                exit_code: Some(status),
                ..Default::default()
            },
        )
        .await
    {
        Ok(_) => {}
        // The daemon saw the exit first through the pidfd.
        Err(e) if e.code() == Some(ErrorCode::SessionNotFound) => {}
        Err(e) => eprintln!("coord: deregistering {id} failed: {e}"),
    }
    let _ = child.wait();
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}

/// Whether a `session_not_found` says the session deregistered itself.
fn ended_by_itself(e: &coord_client::ClientError) -> bool {
    matches!(
        e,
        coord_client::ClientError::Api { body, .. }
            if body.error.fields.get("reason").and_then(|r| r.as_str()) == Some("explicit")
    )
}

/// Makes the wrapper's group the terminal's foreground again after CMD's
/// group had it (the shell reclaims it too; this keeps the wrapper's own
/// last words from stopping it with SIGTTOU).
fn take_back_terminal(foreground: bool) {
    if foreground {
        // SAFETY: signal, tcsetpgrp and getpgrp take plain integers.
        unsafe {
            let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            libc::tcsetpgrp(0, libc::getpgrp());
            libc::signal(libc::SIGTTOU, old);
        }
    }
}

struct Signals {
    /// Orphans adopted as subreaper exit: reap them.
    child: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            child: signal(SignalKind::child()).context("installing SIGCHLD handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
        })
    }

    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.child.recv() => libc::SIGCHLD,
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}
