//! [`StoreReader`]: a read-only look at a SQLite store for `coord verify`,
//! without a lock and without writing a byte.

use super::*;

/// One stored row as `coord verify` reads it: the columns beside the body,
/// so their agreement with the body can be checked too.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// The row's seq column.
    pub seq: u64,
    /// The row's source column.
    pub source: String,
    /// The row's tx_id column.
    pub tx_id: String,
    /// The event as stored (one JSON line).
    pub json: String,
}

/// A read-only handle on a SQLite store for offline checks (`coord
/// verify`): it takes no lock and writes nothing — not even a -wal or -shm
/// file beside a closed store — so it may look at the store of a running
/// daemon or of a stopped or crashed one. It reads one snapshot: every
/// call sees the store as of its first read, however the daemon commits
/// meanwhile.
pub struct StoreReader {
    conn: Connection,
}

impl StoreReader {
    /// Opens `path` read-only.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when it is no SQLite database or cannot be
    /// read; [`StoreError::TooNew`] is not checked (a newer store is read as
    /// far as its tables allow).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Io {
                context: format!("no store at {}", path.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let name = path.as_os_str().to_string_lossy();
        let live = [format!("{name}-wal"), format!("{name}-shm")]
            .iter()
            .any(|p| Path::new(p).exists());
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if live {
            // A daemon's store (or a copy with its WAL): read through the
            // WAL index it shares with the writer.
            Connection::open_with_flags(path, flags)?
        } else {
            // A closed or copied store: `immutable` reads the file as it
            // is and creates no -wal or -shm beside it (a read-only open in
            // WAL mode would).
            Connection::open_with_flags(
                format!("file:{}?immutable=1", uri_path(path)),
                flags | OpenFlags::SQLITE_OPEN_URI,
            )?
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // One read transaction for the reader's life: every call sees the
        // store as of the first read, so bounds, rows and the snapshot
        // agree while a daemon goes on committing.
        conn.execute_batch("BEGIN DEFERRED")?;
        Ok(StoreReader { conn })
    }

    /// `(oldest retained seq, head seq)`, as [`crate::EventLog::bounds`].
    ///
    /// # Errors
    /// SQLite errors.
    pub fn bounds(&self) -> Result<(u64, u64), StoreError> {
        bounds(&self.conn)
    }

    /// Up to `limit` rows after `after`, in seq order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn rows(&self, after: u64, limit: usize) -> Result<Vec<StoredRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, source, tx_id, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after as i64, limit as i64], |r| {
            Ok(StoredRow {
                seq: r.get::<_, i64>(0)? as u64,
                source: r.get(1)?,
                tx_id: r.get(2)?,
                json: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The latest snapshot: its seq and the encoded state.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, state FROM snapshots ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?)
    }
}
