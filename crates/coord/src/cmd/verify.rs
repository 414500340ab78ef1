//! `coord verify --store PATH`: an offline check of a SQLite store, for
//! operators after an incident and for the chaos run after every kill.
//!
//! It reads the store read-only (no lock, no write, no -wal or -shm file
//! made beside a closed store) in one read transaction, so a running
//! daemon's store is read as of one commit however fast it writes; and it
//! folds the log with the daemon's
//! own `apply`, checking as it goes:
//!
//! * seqs are gap-free from the oldest retained event to the head;
//! * every event decodes, and its row's seq, source and tx_id columns agree
//!   with its body;
//! * `(source, tx_id)` is unique;
//! * lock safety (`coord_core::audit::lock_safety`) after every event
//!   that touches a lock;
//! * every `approval.decide` decides a pending approval: none without its
//!   request, none twice (`coord_core::audit::approval_order`);
//! * the latest snapshot equals the fold up to its seq — when the log still
//!   holds every event up to it; after compaction the fold starts from the
//!   snapshot instead, and that check is reported as not possible.
//!
//! The first violation is named (its seq and what is wrong) and the exit
//! code is 11. It must not change the store, and decides nothing: it only
//! reports.

use crate::output::{self, Exit};
use anyhow::Result;
use coord_core::{apply, audit, State};
use coord_proto::Event;
use coord_store::StoreReader;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::output::code::VIOLATION;

/// Rows read per query.
const PAGE: usize = 4096;

/// `coord verify` arguments.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The store to check (a coord.db file) [default: $COORD_STORE, else
    /// the daemon's default store].
    #[arg(long, value_name = "PATH", env = "COORD_STORE")]
    pub store: Option<PathBuf>,
}

/// What a clean check found.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Always true (a violation is an error, exit 11).
    pub ok: bool,
    /// Events read and folded.
    pub events: u64,
    /// Oldest retained seq.
    pub oldest_seq: u64,
    /// Head seq.
    pub head_seq: u64,
    /// Seq of the latest snapshot, if any.
    pub snapshot_seq: Option<u64>,
    /// Whether the snapshot was compared with the fold of the log up to it
    /// (false when there is none or the events before it were compacted).
    pub snapshot_checked: bool,
    /// Locks live at the head.
    pub locks: usize,
    /// Sessions live at the head.
    pub sessions: usize,
}

fn violation(seq: u64, what: impl std::fmt::Display) -> anyhow::Error {
    Exit(VIOLATION, format!("violation at seq {seq}: {what}")).into()
}

/// Checks the store at `path`; the report, or the first violation as an
/// [`Exit`] with code 11 (other errors: the store could not be read).
pub(crate) fn check(path: &Path) -> Result<Report> {
    // StoreError's message names the file and the cause once; a context
    // on top would say both again.
    let store = StoreReader::open(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (oldest, head) = store
        .bounds()
        .map_err(|e| anyhow::anyhow!("reading the log's bounds in {}: {e}", path.display()))?;
    let snapshot = store
        .snapshot()
        .map_err(|e| anyhow::anyhow!("reading the latest snapshot in {}: {e}", path.display()))?;
    let snapshot: Option<(u64, State)> = match snapshot {
        Some((seq, bytes)) => {
            let state = serde_json::from_slice::<State>(&bytes)
                .map_err(|e| violation(seq, format!("the snapshot does not decode: {e}")))?;
            if state.head != seq {
                return Err(violation(
                    seq,
                    format!("the snapshot says it is at seq {}", state.head),
                ));
            }
            Some((seq, state))
        }
        None => None,
    };
    // Where the fold starts: from nothing when the log is whole, else from
    // the snapshot, which must then reach the oldest retained event.
    let (mut state, mut after, compare) = if oldest <= 1 {
        (State::default(), 0, snapshot.as_ref())
    } else {
        match &snapshot {
            Some((seq, s)) if *seq + 1 >= oldest => (s.clone(), *seq, None),
            Some((seq, _)) => {
                return Err(violation(
                    oldest,
                    format!("events before {oldest} are compacted but the snapshot is at {seq}: seqs {} to {} are lost", seq + 1, oldest - 1),
                ))
            }
            None => {
                return Err(violation(
                    oldest,
                    format!("events before {oldest} are compacted and there is no snapshot"),
                ))
            }
        }
    };
    let mut seen: HashSet<(String, u128)> = HashSet::new();
    let mut expected = after + 1;
    let mut events = 0u64;
    // Events between the oldest retained and the snapshot (compacted case)
    // are read for the seq and uniqueness checks but not folded again.
    let mut cursor = oldest.saturating_sub(1);
    if oldest > 1 {
        expected = oldest;
    }
    loop {
        let rows = store
            .rows(cursor, PAGE)
            .map_err(|e| anyhow::anyhow!("reading events after {cursor}: {e}"))?;
        let Some(last) = rows.last() else { break };
        cursor = last.seq;
        for row in rows {
            if row.seq != expected {
                return Err(violation(
                    expected,
                    format!("seq {expected} is missing (the next stored is {})", row.seq),
                ));
            }
            expected += 1;
            let e = Event::from_json(&row.json)
                .map_err(|err| violation(row.seq, format!("the event does not decode: {err}")))?;
            if e.seq != row.seq || e.source != row.source || e.tx_id.to_string() != row.tx_id {
                return Err(violation(
                    row.seq,
                    format!(
                        "the row (seq {}, source {}, tx_id {}) disagrees with its event (seq {}, source {}, tx_id {})",
                        row.seq, row.source, row.tx_id, e.seq, e.source, e.tx_id
                    ),
                ));
            }
            if !seen.insert((e.source.clone(), u128::from(e.tx_id))) {
                return Err(violation(
                    row.seq,
                    format!("(source {}, tx_id {}) appears twice", e.source, e.tx_id),
                ));
            }
            events += 1;
            if e.seq <= after {
                continue;
            }
            audit::approval_order(&state, &e)
                .map_err(|why| violation(e.seq, format!("approvals: {why}")))?;
            apply(&mut state, &e);
            after = e.seq;
            if let Some(r) = e.resource.as_deref() {
                audit::lock_safety(&state, r)
                    .map_err(|why| violation(e.seq, format!("lock safety: {why}")))?;
            }
            if let Some((seq, snap)) = compare {
                if *seq == e.seq {
                    if let Some(at) = audit::first_difference(&state, snap) {
                        return Err(violation(
                            *seq,
                            format!("the snapshot differs from the fold of the log at {at}"),
                        ));
                    }
                }
            }
        }
    }
    if expected != head + 1 {
        return Err(violation(
            expected,
            format!("the log ends at {} but its head is {head}", expected - 1),
        ));
    }
    if let Some((seq, _)) = compare {
        if *seq > head {
            return Err(violation(
                *seq,
                format!("the snapshot is past the head ({head})"),
            ));
        }
    }
    Ok(Report {
        ok: true,
        events,
        oldest_seq: oldest,
        head_seq: head,
        snapshot_seq: snapshot.as_ref().map(|(s, _)| *s),
        snapshot_checked: compare.is_some(),
        locks: state.view.locks.len(),
        sessions: state.view.sessions.len(),
    })
}

/// Runs `coord verify`.
pub(crate) fn verify(args: VerifyArgs, json: bool) -> Result<ExitCode> {
    let store = args
        .store
        .filter(|s| !s.as_os_str().is_empty())
        .unwrap_or_else(coord_daemon::default_store_path);
    if store.to_str().is_some_and(|s| s.starts_with("nats://")) {
        return Err(anyhow::anyhow!(
            "coord verify reads a SQLite store; {} is a NATS log (its daemons check it as they fold)",
            store.display()
        ));
    }
    let r = check(&store)?;
    output::json_or_line(json, &r, || {
        let events = match r.events {
            0 => "no events".to_string(),
            n => format!("{n} events (seq {}..{})", r.oldest_seq, r.head_seq),
        };
        format!(
            "ok: {events}, gap-free, each decodes, (source, tx_id) unique, locks safe throughout; snapshot {}; live at the head: sessions {}, locks {}",
            match (r.snapshot_seq, r.snapshot_checked) {
                (Some(s), true) => format!("at {s} equals the fold"),
                (Some(s), false) => format!("at {s} (not compared: the events before it are compacted)"),
                (None, _) => "none".to_string(),
            },
            r.sessions,
            r.locks
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
