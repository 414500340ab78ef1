//! [`Checkpointer`]: copies the SQLite WAL back into the database file on a
//! thread of its own, so the writer's thread does not stall on it.
//!
//! SQLite's own automatic checkpoint runs inside the commit that pushes
//! the WAL past 1,000 pages: that commit copies the pages and, with
//! `synchronous=NORMAL` or `FULL`, fsyncs the WAL and the database file.
//! The daemon's writer runs on the thread that also serves connections, so
//! that commit stalled every client for milliseconds (3.4 % of the
//! daemon's CPU under 16 writers, plus the fsyncs' wait; docs/BENCHMARKS.md,
//! "The write path").
//!
//! Here the writer only adds an estimate of the pages each commit wrote
//! and, about every [`CHECKPOINT_PAGES`], nudges this thread, which runs a
//! `PASSIVE` checkpoint on its own connection: it never waits for, or
//! blocks, the writer or a reader.
//!
//! But SQLite starts the WAL over from its first frame only when a write
//! transaction begins with *all* of it copied, and a writer that keeps
//! writing has always committed a few frames while the thread copied (and
//! fsynced). So once [`INLINE_AFTER_PAGES`] were written without the WAL
//! copied to its end, the writer runs one passive checkpoint itself,
//! between two commits. The thread has copied all but the frames since its
//! last pass by then (at most about [`CHECKPOINT_PAGES`]), so the writer
//! does a fraction of the copying SQLite's own checkpoint did, a quarter
//! as often, and the next commit starts the WAL over.
//!
//! Only one checkpoint runs at a time (SQLite's checkpoint lock, which no
//! busy handler waits for), so the two take turns through `pass`: the
//! writer skips its step while the thread's pass runs and tries again at
//! its next commit; past [`HARD_CAP_PAGES`] it waits for the pass instead.
//! That bounds the WAL however slow the thread gets on a loaded machine,
//! or should it be gone. A reader whose snapshot still uses the WAL's end
//! keeps any checkpoint from finishing; the writer then tries again after
//! another [`CHECKPOINT_PAGES`], not at every commit.
//!
//! The estimate need not be exact: it only paces the nudges and the
//! bounds, as SQLite's own threshold does.
//!
//! It must not write anything but checkpoints, and owns no data.

use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// WAL pages (of 4,096 bytes) written between two checkpoints: SQLite's
/// own default.
pub(crate) const CHECKPOINT_PAGES: u64 = 1_000;

/// Pages written without the WAL copied to its end after which the writer
/// checkpoints itself (see the module docs): the WAL's size stays within
/// about this many pages (16 MiB) while the thread keeps up.
pub(crate) const INLINE_AFTER_PAGES: u64 = 4 * CHECKPOINT_PAGES;

/// Pages after which the writer waits for a pass of the thread under way
/// rather than skip its step: the WAL's bound (32 MiB) however slow the
/// thread is.
pub(crate) const HARD_CAP_PAGES: u64 = 2 * INLINE_AFTER_PAGES;

/// Counters shared by the writer and the checkpoint thread.
#[derive(Default)]
struct Pages {
    /// Pages written since the last nudge.
    since_nudge: AtomicU64,
    /// Pages written since a checkpoint last copied the whole WAL.
    since_done: AtomicU64,
    /// Checkpoints the thread ran (for tests).
    done: AtomicU64,
}

/// See the module docs. Dropping it stops the thread and waits for a
/// checkpoint under way to end.
pub(crate) struct Checkpointer {
    pages: Arc<Pages>,
    /// Held by whoever runs a checkpoint, the thread or the writer.
    pass: Arc<Mutex<()>>,
    nudge: Mutex<Option<mpsc::Sender<()>>>,
    join: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread with its own connection to the database at
    /// `path`, checkpointing with the given `synchronous` setting (the
    /// writer's, so a checkpoint is as durable as a commit).
    ///
    /// # Errors
    /// When the connection cannot be opened or the thread started.
    pub(crate) fn start(path: &Path, synchronous: &str) -> Result<Self, crate::StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        // This connection never writes, but make sure it never takes a
        // checkpoint of its own on the side either.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let pages = Arc::new(Pages::default());
        let pass = Arc::new(Mutex::new(()));
        let (tx, rx) = mpsc::channel::<()>();
        let shared = pages.clone();
        let turn = pass.clone();
        let join = std::thread::Builder::new()
            .name("coord-checkpoint".into())
            .spawn(move || {
                // Ends when the sender is dropped (the log closes).
                while rx.recv().is_ok() {
                    // Nudges that came while a checkpoint ran are covered by
                    // the next one.
                    while rx.try_recv().is_ok() {}
                    // A poisoned lock guards nothing but the turn itself.
                    let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
                    // Failing: the next nudge tries again, and the writer's
                    // own step bounds the WAL. Done or not, the writer
                    // cannot tell from here whether it has committed
                    // meanwhile, so only its own step counts as "copied to
                    // the end".
                    let _ = passive_checkpoint(&conn);
                    shared.done.fetch_add(1, Ordering::Relaxed);
                }
            })
            .map_err(|source| crate::StoreError::Io {
                context: "starting the checkpoint thread".into(),
                source,
            })?;
        Ok(Checkpointer {
            pages,
            pass,
            nudge: Mutex::new(Some(tx)),
            join: Some(join),
        })
    }

    /// Counts `pages` written by a commit of the writer connection `conn`,
    /// nudging the thread every [`CHECKPOINT_PAGES`]; past
    /// [`INLINE_AFTER_PAGES`] without the whole WAL copied, checkpoints on
    /// `conn` itself (see the module docs).
    pub(crate) fn wrote(&self, conn: &Connection, pages: u64) {
        let since_done = self.pages.since_done.fetch_add(pages, Ordering::Relaxed) + pages;
        let since_nudge = self.pages.since_nudge.fetch_add(pages, Ordering::Relaxed) + pages;
        if since_done >= INLINE_AFTER_PAGES {
            let turn = if since_done >= HARD_CAP_PAGES {
                Some(self.pass.lock().unwrap_or_else(|p| p.into_inner()))
            } else {
                self.pass.try_lock().ok()
            };
            // The thread's pass is under way: try again at the next commit.
            let Some(_turn) = turn else { return };
            let left = if passive_checkpoint(conn) == Ok(Some(0)) {
                0
            } else {
                // A reader still uses the WAL's end (or the checkpoint
                // failed): try again after another CHECKPOINT_PAGES, not
                // at every commit meanwhile.
                INLINE_AFTER_PAGES - CHECKPOINT_PAGES
            };
            self.pages.since_done.store(left, Ordering::Relaxed);
            return;
        }
        if since_nudge >= CHECKPOINT_PAGES {
            self.pages.since_nudge.store(0, Ordering::Relaxed);
            if let Ok(n) = self.nudge.lock() {
                if let Some(tx) = n.as_ref() {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Checkpoints the thread has run so far.
    #[cfg(test)]
    pub(crate) fn completed(&self) -> u64 {
        self.pages.done.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Ok(mut n) = self.nudge.lock() {
            n.take();
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// One `PASSIVE` checkpoint: copies what it can without waiting for
/// anyone. Returns the frames of the WAL it left uncopied (0: the next
/// write transaction can start the WAL over), or `None` when another
/// checkpoint held the WAL.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    // Columns: busy, frames in the WAL, frames copied.
    let (busy, log, copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok((busy == 0).then_some((log - copied).max(0)))
}

/// About how many WAL pages a commit of `rows` rows holding `bytes` bytes
/// writes: a commit rewrites at least a table's last leaf and an index's,
/// a row takes its bytes and some 64 more of keys and headers, and pages
/// are about two thirds full (rows of 1 KB fill three to a page).
pub(crate) fn estimate_pages(rows: usize, bytes: usize) -> u64 {
    2 + (bytes + 64 * rows) as u64 * 3 / 2 / 4_096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_counts_two_leaves_and_the_rows_bytes() {
        assert_eq!(estimate_pages(0, 0), 2);
        // One small event: its row and its index entry, two pages.
        assert_eq!(estimate_pages(1, 200), 2);
        // 1,000 rows of 1 KB: some 400 pages of rows.
        assert_eq!(estimate_pages(1_000, 1_024_000), 2 + 1_632_000 / 4_096);
    }

    /// A WAL database at `dir/c.db` with a row in its WAL, its writer
    /// connection (no automatic checkpoints), and a checkpointer whose
    /// thread is stopped: only the writer's own step can checkpoint.
    fn writer_without_thread(
        dir: &tempfile::TempDir,
    ) -> (std::path::PathBuf, Connection, Checkpointer) {
        let path = dir.path().join("c.db");
        let conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no auto");
        conn.execute_batch("CREATE TABLE t (v BLOB); INSERT INTO t VALUES (zeroblob(100000));")
            .expect("write");
        let c = Checkpointer::start(&path, "NORMAL").expect("start");
        c.nudge.lock().expect("lock").take();
        (path, conn, c)
    }

    #[test]
    fn far_behind_the_writer_checkpoints_inline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, conn, c) = writer_without_thread(&dir);
        let backfilled = |conn: &Connection| -> i64 {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(2))
                .expect("pragma")
        };
        c.wrote(&conn, INLINE_AFTER_PAGES - 1);
        assert_eq!(
            c.pages.since_done.load(Ordering::Relaxed),
            INLINE_AFTER_PAGES - 1
        );
        c.wrote(&conn, 1);
        assert_eq!(
            c.pages.since_done.load(Ordering::Relaxed),
            0,
            "checkpointed inline"
        );
        assert!(backfilled(&conn) > 0);
    }

    #[test]
    fn a_checkpoint_a_reader_holds_back_is_retried_later_not_on_every_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, conn, c) = writer_without_thread(&dir);
        // A reader's snapshot ends where the WAL ends now; what is written
        // after it cannot be copied while it reads.
        let reader = Connection::open(&path).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let n: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("read");
        assert_eq!(n, 1);
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))", [])
            .expect("write");
        c.wrote(&conn, INLINE_AFTER_PAGES);
        assert_eq!(
            c.pages.since_done.load(Ordering::Relaxed),
            INLINE_AFTER_PAGES - CHECKPOINT_PAGES,
            "held back: retried after another CHECKPOINT_PAGES"
        );
        c.wrote(&conn, 1);
        assert_eq!(
            c.pages.since_done.load(Ordering::Relaxed),
            INLINE_AFTER_PAGES - CHECKPOINT_PAGES + 1,
            "not retried on the next commit"
        );
        reader.execute_batch("COMMIT").expect("end the read");
        c.wrote(&conn, CHECKPOINT_PAGES);
        assert_eq!(
            c.pages.since_done.load(Ordering::Relaxed),
            0,
            "done once released"
        );
    }
}
