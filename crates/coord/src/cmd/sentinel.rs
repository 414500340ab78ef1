//! `coord sentinel`: a source, a sink, and one observation per event.

use crate::args::*;
use crate::output::{code, Exit};
use anyhow::{anyhow, Context, Result};
use clap::Args;
use coord_client::Client;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct SentinelArgs {
    /// Where events come from: fs-poll (scan a legacy root on a timer),
    /// fs-watch (rescan it when inotify reports a change) or event-manager
    /// (the daemon's log).
    #[arg(long, env = "SENTINEL_SOURCE", value_enum, default_value_t = SourceArg::EventManager)]
    source: SourceArg,
    /// The legacy coord root (fs-poll, fs-watch).
    #[arg(long)]
    coord_root: Option<PathBuf>,
    /// jsonl:PATH, stdout or exec:CMD.
    #[arg(long, default_value = "stdout")]
    sink: String,
    /// Pause between polls that found nothing [default: 2s for fs-poll].
    /// fs-watch and event-manager wait for changes instead; fs-watch uses
    /// it as its fallback polling interval.
    #[arg(long, value_parser = duration)]
    interval: Option<Duration>,
    /// Where the sentinel keeps what it has handed to its sink: one file
    /// per log (sentinel-<log_id>.cursor) or per legacy root
    /// (sentinel-fs-poll-<hash>.cursor, sentinel-fs-watch-<hash>.cursor), never shared between two of them
    /// [default: $XDG_STATE_HOME/coord].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The state file itself (overrides --state-dir). A cursor saved from
    /// another log is refused; a scan of another root is set aside.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Start over: forget the saved state (the cursor and any unfinished
    /// batch) and read the log from its start.
    #[arg(long)]
    reset: bool,
    /// Most events taken per poll.
    #[arg(long)]
    max_batch: Option<usize>,
    /// Only observe kinds matching these globs (repeatable): --kind 'lock.*'.
    #[arg(long = "kind")]
    kinds: Vec<String>,
}

impl SentinelArgs {
    /// Only the log source talks to the daemon; file sources read a
    /// legacy root and must not start a daemon nobody asked for.
    pub(crate) fn needs_daemon(&self) -> bool {
        matches!(self.source, SourceArg::EventManager)
    }
}

/// `--reset`: forgets the saved state, so the sentinel starts over.
fn reset_if_asked(reset: bool, state: &std::path::Path) -> Result<()> {
    if !reset {
        return Ok(());
    }
    match std::fs::remove_file(state) {
        Ok(()) => {
            eprintln!(
                "coord sentinel: --reset: forgot {}; starting over",
                state.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!(e).context(format!("--reset: removing {}", state.display()))),
    }
}

/// A file name part for a file source over a legacy root: the source
/// (`fs-poll`, `fs-watch`) and a 64-bit FNV-1a hash of the root's absolute
/// path, so neither two roots nor two sources share a state file.
fn root_key(source: &str, root: &std::path::Path) -> String {
    let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in abs.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{source}-{h:016x}")
}

/// The event-manager state file of the log `log_id` in `dir` (default
/// `$XDG_STATE_HOME/coord`): one per log, so sentinels of two daemons
/// never share a cursor.
pub(crate) fn default_state_file(dir: Option<&std::path::Path>, log_id: &str) -> PathBuf {
    let name = format!("sentinel-{log_id}.cursor");
    if let Some(dir) = dir {
        return dir.join(name);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local").join("state"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("coord").join(name)
}

pub(crate) async fn sentinel(base: Client, args: SentinelArgs) -> Result<ExitCode> {
    use coord_sentinel::sentinel::run;
    use coord_sentinel::{EventManagerSource, FsPollSource, FsWatchSource, Sink, SinkSpec};
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COORD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let spec: SinkSpec = args
        .sink
        .parse()
        .map_err(|e: String| anyhow!(Exit(code::INVALID, e)))?;
    let mut sink = Sink::open(&spec)
        .await
        .with_context(|| format!("opening the sink {}", args.sink))?;
    let shutdown = shutdown_signal()?;
    let root = || {
        let root = args.coord_root.clone().ok_or_else(|| {
            anyhow!(Exit(
                code::USAGE,
                format!("--source {} needs --coord-root DIR", args.source.name())
            ))
        })?;
        if !root.is_dir() {
            eprintln!(
                "coord sentinel: warning: --coord-root {} does not exist or is not a directory; it reads as empty until it appears",
                root.display()
            );
        }
        Ok::<_, anyhow::Error>(root)
    };
    // A file source keeps its last handed scan per root.
    let root_state = |root: &std::path::Path| -> Result<PathBuf> {
        let state = args.state_file.clone().unwrap_or_else(|| {
            default_state_file(
                args.state_dir.as_deref(),
                &root_key(args.source.name(), root),
            )
        });
        reset_if_asked(args.reset, &state)?;
        eprintln!(
            "coord sentinel: {} of {}; last scan in {}",
            args.source.name(),
            root.display(),
            state.display()
        );
        Ok(state)
    };
    match args.source {
        SourceArg::FsWatch => {
            let root = root()?;
            let state = root_state(&root)?;
            let mut src = FsWatchSource::new(root)
                .with_poll_interval(args.interval.unwrap_or(Duration::from_secs(2)))
                .with_state_file(state);
            if let Some(n) = args.max_batch {
                src = src.with_max_batch(n);
            }
            run(&mut src, &mut sink, Duration::ZERO, &args.kinds, shutdown).await?;
        }
        SourceArg::FsPoll => {
            let root = root()?;
            let state = root_state(&root)?;
            let mut src = FsPollSource::new(root).with_state_file(state);
            if let Some(n) = args.max_batch {
                src = src.with_max_batch(n);
            }
            let interval = args.interval.unwrap_or(Duration::from_secs(2));
            run(&mut src, &mut sink, interval, &args.kinds, shutdown).await?;
        }
        SourceArg::EventManager => {
            let log_id = base.status().await?.log_id;
            let state = args
                .state_file
                .unwrap_or_else(|| default_state_file(args.state_dir.as_deref(), &log_id));
            reset_if_asked(args.reset, &state)?;
            eprintln!(
                "coord sentinel: following log {log_id} at {}; cursor in {}",
                base.socket().display(),
                state.display()
            );
            let kinds: Vec<&str> = args.kinds.iter().map(String::as_str).collect();
            let mut src = EventManagerSource::new(base, &state)?
                .with_log_id(&log_id)
                .map_err(|e| anyhow!(Exit(code::COMPACTED, e.to_string())))?;
            if !kinds.is_empty() {
                src = src.with_kinds(&kinds);
            }
            if let Some(n) = args.max_batch {
                src = src.with_max_batch(n);
            }
            // The loop records every batch it hands to the sink (the
            // ledger's protocol), so there is nothing left to save here.
            run(&mut src, &mut sink, Duration::ZERO, &args.kinds, shutdown).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
