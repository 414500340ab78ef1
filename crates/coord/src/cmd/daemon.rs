//! `coord daemon`: the daemon in the foreground, configured from flags.

use crate::args::*;
use crate::output::{self, code, Exit};
use anyhow::anyhow;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use coord_client::{Client, ClientError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct DaemonArgs {
    #[command(subcommand)]
    action: Option<DaemonAction>,
    /// Log lines as text (default) or one JSON object per line (also
    /// chosen by the global --json).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    log_format: Format,
    /// The log: a SQLite file [default: $XDG_DATA_HOME/coord/coord.db],
    /// or a NATS JetStream log shared by many daemons,
    /// nats://HOST:PORT[,HOST:PORT…]/LOG (see docs/DISTRIBUTED.md).
    #[arg(long, env = "COORD_STORE")]
    store: Option<PathBuf>,
    /// Replicas of a NATS log's stream, KV bucket and snapshot store (1, or
    /// 3 on a 3-node cluster); used when the log is first created.
    #[arg(help_heading = "Shared log", long, default_value_t = 1)]
    replicas: usize,
    /// This daemon's id on a shared (NATS) log [default: host name and a
    /// digest of the socket path].
    #[arg(help_heading = "Shared log", long, env = "COORD_DAEMON_ID")]
    daemon_id: Option<String>,
    /// On a shared log: how long this daemon's lease lasts unrenewed before
    /// other daemons end the sessions registered with it.
    #[arg(help_heading = "Shared log", long, default_value = "10s", value_parser = duration)]
    daemon_lease: Duration,
    /// Also serve the API and the web dashboard over HTTP on this TCP
    /// address (loopback: 127.0.0.1:8765; port 0 picks one). Every request
    /// needs a token; `coord ui` prints a login URL.
    #[arg(help_heading = "Web dashboard", long)]
    http: Option<std::net::SocketAddr>,
    /// Allow --http on an address other than loopback (the dashboard is
    /// then reachable from other machines; it still needs a token).
    #[arg(help_heading = "Web dashboard", long)]
    http_allow_remote: bool,
    /// Commit durability: normal (survives a crash of the daemon) or full (fsync every commit).
    #[arg(long, value_enum, default_value_t = SyncArg::Normal)]
    sync: SyncArg,
    /// Keep at least the last N events when compacting.
    #[arg(help_heading = "Retention", long)]
    keep_events: Option<u64>,
    /// Keep at least the events of the last D days when compacting.
    #[arg(help_heading = "Retention", long)]
    keep_days: Option<u64>,
    /// Snapshot (and compact) every N events, counted from the log's latest
    /// snapshot (so restarts do not reset the count), and at shutdown.
    #[arg(help_heading = "Retention", long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Append a session.heartbeat for every renewal, not only phase changes.
    #[arg(help_heading = "Retention", long)]
    log_heartbeats: bool,
    /// Bridge this legacy coord root into the log (sessions, locks, inbox
    /// files and dispatch orders become events).
    #[arg(help_heading = "Legacy bridge", long)]
    legacy_root: Option<PathBuf>,
    /// How the bridge sees changes: watch (inotify) or poll.
    #[arg(help_heading = "Legacy bridge", long, value_enum, default_value_t = LegacyModeArg::Watch)]
    legacy_mode: LegacyModeArg,
    /// Rescan interval of the bridge when polling.
    #[arg(help_heading = "Legacy bridge", long, default_value = "2s", value_parser = duration)]
    legacy_interval: Duration,
    /// Lease of bridged sessions (renewed by their heartbeats).
    #[arg(help_heading = "Legacy bridge", long, default_value = "24h", value_parser = duration)]
    legacy_ttl: Duration,
    /// Keep DIR a legacy-layout copy of the view (may be the --legacy-root:
    /// bridged objects are left to their own writers, so nothing feeds back).
    #[arg(help_heading = "Legacy bridge", long)]
    export_legacy: Option<PathBuf>,
    /// The approvals policy (PROTOCOL §14; default: approvals.toml beside
    /// the socket), read at each request.
    #[arg(long, env = "COORD_APPROVALS")]
    approvals: Option<PathBuf>,
    /// A session waiting for a human this long (a pending approval, or
    /// needs_input) gets one session.notify event, for the sentinel's
    /// sinks (0s: never).
    #[arg(long, default_value = "30s", value_parser = duration)]
    notify_after: Duration,
    /// Forward the reports of top-level sessions (whose parent is not a
    /// session here) to the daemon on this socket, fire-and-forget.
    #[arg(help_heading = "Legacy bridge", long)]
    parent_socket: Option<PathBuf>,
    /// Lifecycle: a session with no activity for this long is idle.
    #[arg(help_heading = "Lifecycle", long, default_value = "60s", value_parser = duration)]
    idle_after: Duration,
    /// Lifecycle: a session without a heartbeat for this percentage of its
    /// lease is stale.
    #[arg(help_heading = "Lifecycle", long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    stale_after_pct: u8,
    /// Lifecycle: probe tmux sessions and activity files this often (only
    /// while such sessions exist).
    #[arg(help_heading = "Lifecycle", long, default_value = "5s", value_parser = duration)]
    probe_interval: Duration,
    /// tmux server socket name for liveness probes (tmux -L NAME).
    #[arg(help_heading = "Lifecycle", long)]
    tmux_socket: Option<String>,
    /// Most connections (event streams included) served at once.
    #[arg(help_heading = "Limits and tuning", long, default_value_t = 16_384)]
    max_connections: usize,
    /// Worker threads of the daemon's runtime (default 1).
    ///
    /// The writer, the hub, the timers and every connection are tasks of
    /// one tokio runtime: with 1 a single thread runs everything and a
    /// request reaches the writer and its answer comes back without a
    /// wake-up between threads; with more it is tokio's work-stealing
    /// scheduler, which spreads a large fan-out over the cores at the
    /// cost of those wake-ups (docs/BENCHMARKS.md, "Engine and shell").
    #[arg(help_heading = "Limits and tuning", long, env = "COORD_THREADS", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) threads: Option<u16>,
    /// Close a connection that takes longer than this to send a request's
    /// headers, or stays idle this long between requests (event streams
    /// being answered are not idle).
    #[arg(help_heading = "Limits and tuning", long, default_value = "10s", value_parser = duration)]
    header_timeout: Duration,
    /// Answer `408 timeout` when a request's body takes longer than this
    /// to arrive.
    #[arg(help_heading = "Limits and tuning", long, default_value = "30s", value_parser = duration)]
    body_timeout: Duration,
    /// MiB of request bodies held at once while they arrive, over every
    /// connection; a body that does not fit is answered `503 overloaded`.
    #[arg(help_heading = "Limits and tuning", long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    body_memory_mib: u64,
    /// Recent events kept in memory for live subscribers; slower ones read
    /// the store.
    #[arg(help_heading = "Limits and tuning", long, default_value_t = 8_192)]
    ring_events: usize,
    /// MiB of recent events kept in memory for live subscribers: the ring
    /// ends here or at --ring-events, whichever comes first.
    #[arg(help_heading = "Limits and tuning", long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    ring_mib: u64,
}

/// What to do with a running daemon.
#[derive(Subcommand, Debug)]
pub(crate) enum DaemonAction {
    /// Stop the daemon on the socket gracefully (SIGTERM: in-flight
    /// writes finish, streams end, the socket is removed) and wait until
    /// it is gone.
    Stop {
        /// Give up waiting after this long (it keeps stopping).
        #[arg(long, default_value = "30s", value_parser = duration)]
        wait: Duration,
    },
}

pub(crate) async fn daemon(
    base: &Client,
    socket: PathBuf,
    args: DaemonArgs,
    json: bool,
) -> Result<ExitCode> {
    if let Some(DaemonAction::Stop { wait }) = args.action {
        return stop(base, &socket, wait, json).await;
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COORD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if json || args.log_format == Format::Json {
        // One JSON object per log line, for log shippers.
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let store_named = args.store.is_some();
    let store = args.store.unwrap_or_else(coord_daemon::default_store_path);
    let (socket, listener) = match SYSTEMD_SOCKET.get().copied().flatten() {
        Some(fd) => {
            let (path, l) = passed_socket(fd)?;
            (path, Some(std::sync::Arc::new(l)))
        }
        None => (socket, None),
    };
    let nats = match store.to_str() {
        Some(url) if url.starts_with("nats://") => {
            Some(coord_daemon::NatsTarget::parse(url, args.replicas).map_err(|e| anyhow!(e))?)
        }
        _ => None,
    };
    if let Some(id) = &args.daemon_id {
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(anyhow!("--daemon-id {id:?}: must be 1-64 of [A-Za-z0-9_-]"));
        }
    }
    if let Some(addr) = args.http {
        if !addr.ip().is_loopback() && !args.http_allow_remote {
            return Err(anyhow!(
                "--http {addr} is not a loopback address: pass --http-allow-remote to serve the dashboard to other machines"
            ));
        }
    }
    let mut config = coord_daemon::Config::new(store, socket);
    config.store_named = store_named;
    config.http = args.http;
    config.nats = nats;
    config.daemon_id = args.daemon_id.clone();
    config.daemon_lease_ms = args.daemon_lease.as_millis() as u64;
    config.listener = listener;
    config.sync = args.sync.into();
    config.retention = coord_store::Retention {
        keep_events: args.keep_events,
        keep_ms: args.keep_days.map(|d| d.saturating_mul(86_400_000)),
    };
    config.snapshot_every = args.snapshot_every;
    config.log_heartbeats = args.log_heartbeats;
    config.max_connections = args.max_connections;
    config.header_timeout = args.header_timeout;
    config.body_timeout = args.body_timeout;
    config.body_memory = usize::try_from(args.body_memory_mib << 20).unwrap_or(usize::MAX);
    config.ring_capacity = args.ring_events.max(1);
    config.ring_bytes = usize::try_from(args.ring_mib << 20).unwrap_or(usize::MAX);
    config.export_legacy = args.export_legacy;
    config.approvals = args.approvals;
    config.notify_after = Some(args.notify_after).filter(|d| !d.is_zero());
    config.parent_socket = args.parent_socket;
    config.lifecycle.thresholds = coord_daemon::Thresholds {
        idle_after_ms: ms(args.idle_after).max(1),
        stale_after_pct: args.stale_after_pct,
        probe_interval_ms: ms(args.probe_interval).max(1),
    };
    config.lifecycle.runtime = std::sync::Arc::new(coord_daemon::probes::HostRuntime {
        tmux_socket: args.tmux_socket,
    });
    if let Some(root) = args.legacy_root {
        config.legacy = Some(coord_daemon::BridgeConfig {
            root,
            mode: match args.legacy_mode {
                LegacyModeArg::Watch => coord_daemon::LegacyMode::Watch,
                LegacyModeArg::Poll => coord_daemon::LegacyMode::Poll,
            },
            poll_interval: args.legacy_interval,
            ttl_ms: ms(args.legacy_ttl).max(coord_proto::MIN_SESSION_TTL_MS),
        });
    }
    let shutdown = shutdown_signal()?;
    coord_daemon::run(config, shutdown)
        .await
        .context("the daemon could not start")?;
    Ok(ExitCode::SUCCESS)
}

/// `coord daemon stop`: SIGTERM to the pid the daemon reports, then wait
/// until its socket stops answering and the process is gone. Nothing
/// answering is not an error: there is nothing to stop.
async fn stop(
    base: &Client,
    socket: &std::path::Path,
    wait: Duration,
    json: bool,
) -> Result<ExitCode> {
    let status = match base.status().await {
        Ok(s) => s,
        Err(ClientError::Connect { .. }) => {
            let msg = format!("no daemon answers on {}", socket.display());
            output::json_or_line(
                json,
                &serde_json::json!({"stopped": false, "socket": socket}),
                || msg,
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    };
    let pid = status.pid as libc::pid_t;
    // SAFETY: kill has no memory effects; the pid is the daemon's own report.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(anyhow!(Exit(
            code::ERROR,
            format!("signalling the daemon (pid {pid}): {e}")
        )));
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        let alive = running(pid);
        if !alive && !crate::autostart::answers(socket) {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(anyhow!(Exit(
                code::TIMEOUT,
                format!(
                    "the daemon (pid {pid}) is still stopping after {}; it was sent SIGTERM",
                    humantime::format_duration(wait)
                )
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    output::json_or_line(
        json,
        &serde_json::json!({"stopped": true, "pid": pid, "socket": socket}),
        || format!("stopped the daemon (pid {pid}) on {}", socket.display()),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Whether `pid` exists and has not exited (a zombie waiting for its
/// parent to reap it has exited).
fn running(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    u32::try_from(pid).is_ok_and(crate::procfs::alive)
}

/// The first socket a service manager passed (`LISTEN_FDS`/`LISTEN_PID`,
/// sd_listen_fds(3)), taken once by `main` before any thread starts,
/// because reading it unsets those variables.
static SYSTEMD_SOCKET: std::sync::OnceLock<Option<std::os::fd::RawFd>> = std::sync::OnceLock::new();

/// Takes the socket systemd passed to this process, if any. Call before
/// the async runtime starts (it edits the environment).
pub(crate) fn take_systemd_socket() {
    let fd = sd_notify::listen_fds().ok().and_then(|mut fds| fds.next());
    let _ = SYSTEMD_SOCKET.set(fd);
}

/// The passed descriptor as a listening Unix socket, and its path.
fn passed_socket(fd: std::os::fd::RawFd) -> Result<(PathBuf, std::os::unix::net::UnixListener)> {
    use std::os::fd::FromRawFd;
    // SAFETY: the service manager handed this descriptor to this process
    // for its own use (sd_listen_fds(3)); it is taken exactly once.
    let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    let addr = l.local_addr().map_err(|e| {
        anyhow!(Exit(
            code::USAGE,
            format!("the socket passed in LISTEN_FDS (fd {fd}) is not a Unix socket: {e}")
        ))
    })?;
    let path = addr.as_pathname().map(PathBuf::from).ok_or_else(|| {
        anyhow!(Exit(
            code::USAGE,
            format!("the socket passed in LISTEN_FDS (fd {fd}) has no path (ListenStream= must name a file)")
        ))
    })?;
    Ok((path, l))
}

/// The worker threads the daemon's runtime gets: `--threads`, else 1
/// (measured on two cores: one thread answers sooner, commits more and
/// holds less memory than two; two fan out to 10,000 subscribers sooner;
/// docs/BENCHMARKS.md, "Engine and shell").
pub(crate) fn runtime_threads(args: &DaemonArgs) -> usize {
    args.threads.map_or(1, usize::from)
}
