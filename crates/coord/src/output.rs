//! Output and exit codes: tables for people, JSON for scripts, and the
//! documented exit codes of PROTOCOL §11.

use coord_client::ClientError;
use coord_proto::view::EndedSession;
use coord_proto::{DeregReason, ErrorCode, Event, Timestamp};
use std::io::Write;

/// Exit codes (PROTOCOL §11).
pub mod code {
    /// Any other error.
    pub const ERROR: u8 = 1;
    /// A usage mistake: a missing or malformed argument.
    pub const USAGE: u8 = 2;
    /// The daemon is not reachable.
    pub const UNREACHABLE: u8 = 3;
    /// Conflict: held, exists, wrong state, not yours.
    pub const CONFLICT: u8 = 4;
    /// A wait timed out.
    pub const TIMEOUT: u8 = 5;
    /// Not found.
    pub const NOT_FOUND: u8 = 6;
    /// Token missing or wrong.
    pub const AUTH: u8 = 7;
    /// Protocol mismatch.
    pub const PROTOCOL: u8 = 8;
    /// The cursor is not valid on this log: compacted, past the head, or
    /// saved from another log.
    pub const COMPACTED: u8 = 9;
    /// Invalid input.
    pub const INVALID: u8 = 10;
    /// `coord verify` found a store that breaks a guarantee.
    pub const VIOLATION: u8 = 11;
}

/// The exit code for an error chain.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(ce) = cause.downcast_ref::<ClientError>() {
            return client_code(ce);
        }
        if let Some(c) = cause.downcast_ref::<Exit>() {
            return c.0;
        }
        if let Some(h) = cause.downcast_ref::<Hinted>() {
            return client_code(&h.0);
        }
    }
    code::ERROR
}

/// A daemon's error with a hint on what to do next, printed after it
/// (`lock_held: … is held by b (exclusive); queue for it with --wait …`).
/// The exit code and the JSON error stay the daemon's.
#[derive(Debug)]
pub struct Hinted(pub ClientError, pub &'static str);

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {}", self.0, self.1)
    }
}

impl std::error::Error for Hinted {}

/// An error that carries its own exit code.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

fn client_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Connect { .. } => code::UNREACHABLE,
        ClientError::Protocol { .. } => code::PROTOCOL,
        ClientError::Api { .. } => match e.code() {
            Some(
                ErrorCode::LockHeld
                | ErrorCode::LockNotHeld
                | ErrorCode::SessionExists
                | ErrorCode::OrderExists
                | ErrorCode::OrderState
                | ErrorCode::ApprovalDecided
                | ErrorCode::MessageExists
                | ErrorCode::NotOwner
                | ErrorCode::NotAssignee
                | ErrorCode::NotChild,
            ) => code::CONFLICT,
            Some(ErrorCode::Timeout) => code::TIMEOUT,
            Some(
                ErrorCode::SessionNotFound
                | ErrorCode::MessageNotFound
                | ErrorCode::OrderNotFound
                | ErrorCode::ApprovalNotFound
                | ErrorCode::NotFound,
            ) => code::NOT_FOUND,
            Some(ErrorCode::TokenRequired | ErrorCode::BadToken | ErrorCode::AdminRequired) => {
                code::AUTH
            }
            Some(ErrorCode::ProtocolMismatch) => code::PROTOCOL,
            Some(ErrorCode::Compacted | ErrorCode::CursorAhead | ErrorCode::LogMismatch) => {
                code::COMPACTED
            }
            Some(
                ErrorCode::BadJson
                | ErrorCode::UnknownField
                | ErrorCode::InvalidField
                | ErrorCode::InvalidId
                | ErrorCode::UnknownKind
                | ErrorCode::BadCursor
                | ErrorCode::BodyTooLarge
                | ErrorCode::MessageTooLarge
                | ErrorCode::UnsupportedMediaType
                | ErrorCode::NoSuchProcess,
            ) => code::INVALID,
            _ => code::ERROR,
        },
        _ => code::ERROR,
    }
}

/// The stable name of an exit code, for JSON errors that did not come
/// from the daemon (the daemon's own codes are passed through).
fn code_name(c: u8) -> &'static str {
    match c {
        code::USAGE => "usage",
        code::UNREACHABLE => "unreachable",
        code::CONFLICT => "conflict",
        code::TIMEOUT => "timeout",
        code::NOT_FOUND => "not_found",
        code::AUTH => "auth",
        code::PROTOCOL => "protocol_mismatch",
        code::COMPACTED => "cursor",
        code::INVALID => "invalid",
        code::VIOLATION => "violation",
        _ => "error",
    }
}

/// The error as `{"error":{"code","message",…}}` for `--json`: the
/// daemon's own error body when it sent one (with every field it had),
/// else a code named after the exit code.
pub fn error_json(err: &anyhow::Error) -> serde_json::Value {
    let message = format!("{err:#}");
    for cause in err.chain() {
        let client = cause
            .downcast_ref::<ClientError>()
            .or_else(|| cause.downcast_ref::<Hinted>().map(|h| &h.0));
        if let Some(ClientError::Api { body, .. }) = client {
            let mut v = serde_json::to_value(body).unwrap_or_default();
            if let Some(e) = v.get_mut("error").and_then(|e| e.as_object_mut()) {
                e.insert("message".into(), message.into());
            }
            return v;
        }
    }
    serde_json::json!({"error": {"code": code_name(exit_code(err)), "message": message}})
}

/// A duration between two times, short: `850ms`, `12s`, `4m10s`, `3h`.
/// Negative spans (clock skew) read as 0.
pub fn span(later: Timestamp, earlier: Timestamp) -> String {
    let ms = (later.as_millis() - earlier.as_millis()).max(0);
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..=59 => format!("{s}s"),
        60..=3599 if s % 60 == 0 => format!("{}m", s / 60),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// How a session ended, in a few words: `exit 0`, `expired (SIGTERM sent)`.
pub fn how_ended(e: &EndedSession) -> String {
    let base = match (e.reason, e.exit_code) {
        (DeregReason::ProcessExited, Some(c)) => format!("process exited, code {c}"),
        (DeregReason::ProcessExited, None) => "process exited".into(),
        (DeregReason::Explicit, Some(c)) => format!("deregistered, exit code {c}"),
        (DeregReason::Explicit, None) => "deregistered".into(),
        (DeregReason::Expired, _) => "lease expired".into(),
        (DeregReason::Forced, _) => "forced by admin".into(),
        (DeregReason::Removed, _) => "legacy file removed".into(),
        (DeregReason::RuntimeGone, _) => "runtime gone".into(),
        (DeregReason::DaemonLost, _) => "daemon lost".into(),
    };
    match &e.signal {
        Some(sig) => format!("{base} ({sig} sent to its live process)"),
        None => base,
    }
}

/// True if the error is a write to a closed pipe (`coord events | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints a value as one line of JSON.
pub fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes bytes to stdout as they are (a script, a page).
pub fn raw(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// Prints a line.
pub fn line(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Prints `value` as JSON for scripts, or one line for people (`line` is
/// only built for people).
pub fn json_or_line<T: serde::Serialize>(
    as_json: bool,
    value: &T,
    line: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if as_json {
        json(value)
    } else {
        self::line(&line())
    }
}

/// Prints `value` as JSON for scripts, or as a table for people (`rows`
/// is only built for the table).
pub fn json_or_table<T: serde::Serialize>(
    as_json: bool,
    value: &T,
    header: &[&str],
    rows: impl FnOnce() -> Vec<Vec<String>>,
) -> anyhow::Result<()> {
    if as_json {
        json(value)
    } else {
        table(header, &rows())
    }
}

/// Prints rows as an aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let fmt = |cells: Vec<String>| {
        let n = cells.len();
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == n {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        fmt(header.iter().map(|h| h.to_string()).collect())
    )?;
    for r in rows {
        writeln!(out, "{}", fmt(r.clone()))?;
    }
    Ok(())
}

/// One human line for an event (`coord events --format text`): seq, time,
/// kind and the summary, with any control or bidirectional character in
/// what another session wrote (a report, a payload) shown as its escape,
/// never sent to the terminal.
pub fn render(e: &Event) -> String {
    format!(
        "{:>6}  {}  {:<17}  {}",
        e.seq,
        e.ts,
        e.kind(),
        coord_proto::ids::terminal_safe(&coord_client::render_event(e), false)
    )
}

/// Prints a write's answer: its JSON, or `WHAT (seq N)`.
pub fn print_write(
    as_json: bool,
    w: &coord_proto::api::WriteResponse,
    what: &str,
) -> anyhow::Result<std::process::ExitCode> {
    if as_json {
        json(w)?;
    } else {
        match w.seq {
            Some(seq) => line(&format!("{what} (seq {seq})"))?,
            None => line(&format!("{what} (nothing to append)"))?,
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The grouped sections of `coord status --verbose`.
pub fn verbose_status(s: &coord_proto::api::StatusResponse) -> anyhow::Result<()> {
    let us = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{:.2} ms", v as f64 / 1000.0));
    let w = &s.writer;
    line("writer")?;
    line(&format!(
        "  commits {}  batch mean {:.1} max {}  commit p50 {} p99 {} (last minute)  queue {}",
        w.commits,
        w.mean_batch,
        w.max_batch,
        us(w.commit_p50_us),
        us(w.commit_p99_us),
        w.queue_depth
    ))?;
    if !w.refused.is_empty() {
        let refused: Vec<String> = w.refused.iter().map(|(k, n)| format!("{k} {n}")).collect();
        line(&format!("  refused {}", refused.join(", ")))?;
    }
    let st = &s.streams;
    line("streams")?;
    line(&format!(
        "  {} open: {} live, {} catching up from the store; furthest behind {} ({} events{})",
        st.subscribers,
        st.live,
        st.catching_up,
        st.furthest_behind_seq
            .map_or("-".to_string(), |c| format!("at seq {c}")),
        st.lag_events,
        st.lag_ms
            .map(|ms| format!(", {ms} ms old"))
            .unwrap_or_default()
    ))?;
    line(&format!("connections  {} open", s.connections))?;
    let l = &s.leases;
    line("sessions and locks")?;
    let states: Vec<String> = l
        .sessions_by_state
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    line(&format!(
        "  {}  leases expiring within 60 s {}",
        if states.is_empty() {
            "no sessions".to_string()
        } else {
            states.join(", ")
        },
        l.expiring_within_60s
    ))?;
    line(&format!(
        "  locks held {}  waiters {}  longest wait {}",
        l.locks_held,
        l.waiters,
        l.longest_wait_ms
            .map_or("-".to_string(), |ms| format!("{ms} ms"))
    ))?;
    let lc = &s.lifecycle;
    line("lifecycle")?;
    line(&format!(
        "  probes run {}  {}  probe errors {}",
        lc.probes_run,
        if lc.probing {
            format!("probing {} session(s) on an interval", lc.probed_sessions)
        } else {
            "not probing (nothing needs it)".to_string()
        },
        if lc.probe_errors.is_empty() {
            "none".to_string()
        } else {
            lc.probe_errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ))?;
    if let Some(b) = &s.bridge {
        line("legacy bridge")?;
        line(&format!(
            "  {} {}{}  changes seen {}  imports {} (batched from {} changes in {} scans)  skipped as malformed {}",
            b.mode,
            b.root,
            b.fallback_reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            b.changes_seen,
            b.imports,
            b.changes_seen,
            b.batches,
            b.skipped_malformed
        ))?;
        if let (Some(e), Some(at)) = (&b.last_error, b.last_error_at) {
            line(&format!("  last error at {at}: {e}"))?;
        }
    }
    if let Some(x) = &s.export {
        line("legacy export")?;
        line(&format!(
            "  {}  exports {} (batched from {} events)  files changed {}",
            x.root, x.exports, x.batched_from, x.files_changed
        ))?;
        if let (Some(e), Some(at)) = (&x.last_error, x.last_error_at) {
            line(&format!("  last error at {at}: {e}"))?;
        }
    }
    let sto = &s.store;
    line("store")?;
    line(&format!(
        "  {} {} ({} bytes, sync {})  oldest seq {}  snapshot {}",
        sto.backend,
        sto.path,
        sto.bytes,
        sto.sync,
        s.oldest_seq,
        match (sto.snapshot_seq, sto.snapshot_age_ms) {
            (Some(seq), Some(age)) => format!("at seq {seq}, {} s ago", age / 1000),
            _ => "none yet".to_string(),
        }
    ))?;
    if let Some(c) = &sto.last_compaction {
        line(&format!(
            "  last compaction at {}: {} events dropped, oldest seq {}",
            c.at, c.deleted, c.oldest_seq
        ))?;
    }
    Ok(())
}
