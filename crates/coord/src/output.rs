//! Output and exit codes: tables for people, JSON for scripts, and the
//! documented exit codes of PROTOCOL §11.

use coord_client::ClientError;
use coord_proto::{ErrorCode, Event};
use std::io::Write;

/// Exit codes (PROTOCOL §11).
pub mod code {
    /// Any other error.
    pub const ERROR: u8 = 1;
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
    /// Cursor compacted.
    pub const COMPACTED: u8 = 9;
    /// Invalid input.
    pub const INVALID: u8 = 10;
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
    }
    code::ERROR
}

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
                | ErrorCode::NotFound,
            ) => code::NOT_FOUND,
            Some(ErrorCode::TokenRequired | ErrorCode::BadToken | ErrorCode::AdminRequired) => {
                code::AUTH
            }
            Some(ErrorCode::ProtocolMismatch) => code::PROTOCOL,
            Some(ErrorCode::Compacted) => code::COMPACTED,
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

/// Prints a line.
pub fn line(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
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
/// kind and the summary.
pub fn render(e: &Event) -> String {
    format!(
        "{:>6}  {}  {:<17}  {}",
        e.seq,
        e.ts,
        e.kind(),
        coord_client::render_event(e)
    )
}
