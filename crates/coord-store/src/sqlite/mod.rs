//! [`SqliteLog`]: the embedded default backend (WAL, versioned migrations,
//! one writer connection, a small pool of reader connections).

mod event_log;
mod reader;
pub use reader::{StoreReader, StoredRow};
#[cfg(test)]
mod tests;

use crate::checkpoint::{estimate_pages, Checkpointer};
use crate::log::{
    AttachmentOp, Batch, CompactReport, EventLog, Retention, StoreError, StoredEvent, SyncMode,
    TxnRecord,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Schema migrations; entry `i` takes the schema from version `i` to `i+1`.
/// Never edit an entry once released: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the log and what commits with it.
    "CREATE TABLE events (
        seq        INTEGER PRIMARY KEY,
        source     TEXT    NOT NULL,
        tx_id      TEXT    NOT NULL,
        kind       TEXT    NOT NULL,
        ingress_ms INTEGER NOT NULL,
        body       TEXT    NOT NULL,
        UNIQUE (source, tx_id)
     );
     CREATE TABLE key_heads (key TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE txns (
        source   TEXT    NOT NULL,
        tx_id    TEXT    NOT NULL,
        seq      INTEGER NOT NULL,
        response TEXT    NOT NULL,
        PRIMARY KEY (source, tx_id)
     ) WITHOUT ROWID;
     CREATE INDEX txns_by_seq ON txns (seq);
     CREATE TABLE attachments (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
     CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, taken_ms INTEGER NOT NULL, state BLOB NOT NULL);
     CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    // 2: the log's identity (a ULID made once, when the store is created
    // or first opened by a coord that knows identities).
    "CREATE TABLE identity (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
    // 3: the events table without its UNIQUE (source, tx_id). That index
    // was a second B-tree every commit wrote (about 2.5 more WAL pages per
    // commit, a tenth of the daemon's CPU per event), and it turned a
    // client's copied tx_id into a failed commit for every write batched
    // with it. The writer keeps the pair unique instead: client ids are
    // checked against `txns`, and the ids it makes carry their event's seq
    // (coord-daemon's `event_ids`). SQLite cannot drop a UNIQUE constraint,
    // so the table is rebuilt: its rows copied once, on the first open
    // after the upgrade (1M events: under a second here). The old table's
    // pages go to SQLite's free list, and new events reuse them.
    "CREATE TABLE events_v3 (
        seq        INTEGER PRIMARY KEY,
        source     TEXT    NOT NULL,
        tx_id      TEXT    NOT NULL,
        kind       TEXT    NOT NULL,
        ingress_ms INTEGER NOT NULL,
        body       TEXT    NOT NULL
     );
     INSERT INTO events_v3 (seq, source, tx_id, kind, ingress_ms, body)
        SELECT seq, source, tx_id, kind, ingress_ms, body FROM events ORDER BY seq;
     DROP TABLE events;
     ALTER TABLE events_v3 RENAME TO events;",
];

/// Readers kept open for reuse; more may be opened under load.
const READER_POOL: usize = 8;

/// The SQLite event log. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct SqliteLog {
    inner: Arc<Inner>,
    /// Writes run on the calling thread instead of the blocking pool
    /// (see [`SqliteLog::on_caller_thread`]).
    inline_writes: bool,
}

struct Inner {
    path: PathBuf,
    log_id: String,
    /// Declared before the writer, so it stops (and closes its
    /// connection) first, and the writer's close, the last, checkpoints
    /// what is left and removes the WAL.
    checkpointer: Checkpointer,
    writer: Mutex<Connection>,
    /// The log's head as the writer last committed it ([`HEAD_UNKNOWN`]
    /// until the first append, and after a failed one), so an append need
    /// not query it. Read and written only under the writer's lock; only
    /// the writer connection appends (the lock file keeps other processes
    /// out), and compaction never moves the head.
    head: AtomicU64,
    readers: Mutex<Vec<Connection>>,
    /// Held for the life of the log so a second daemon cannot open it.
    _lock: File,
}

impl SqliteLog {
    /// Opens (creating if needed) the store at `path`, takes its lock file
    /// (`<path>.lock`), runs pending migrations and sets the sync mode.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process holds the store;
    /// [`StoreError::TooNew`] for a store from a newer coord; I/O errors.
    pub fn open(path: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        // One daemon per store however it is spelled: the lock, the
        // permission check and everything after act on the real file
        // (crate::path).
        let resolved = crate::path::resolve_store_path(path)?;
        let path = resolved.as_path();
        let dir = path.parent().unwrap_or(Path::new("/"));
        private_dir(dir)?;
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            // A link planted at the lock's name is refused, not followed.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|source| StoreError::Io {
                context: format!("opening {}", lock_path.display()),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(path.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StoreError::Io {
                    context: format!("locking {}", lock_path.display()),
                    source,
                })
            }
        }
        let mut writer = Connection::open(path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        let synchronous = match sync {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        };
        writer.pragma_update(None, "synchronous", synchronous)?;
        // The checkpoint thread takes over (crate::checkpoint).
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.pragma_update(None, "foreign_keys", "ON")?;
        writer.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut writer)?;
        let log_id = log_identity(&writer)?;
        set_private(path);
        let checkpointer = Checkpointer::start(path, synchronous)?;
        Ok(SqliteLog {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                log_id,
                checkpointer,
                writer: Mutex::new(writer),
                head: AtomicU64::new(HEAD_UNKNOWN),
                readers: Mutex::new(Vec::new()),
                _lock: lock,
            }),
            inline_writes: false,
        })
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A handle to the same log whose appends (and idempotency lookups)
    /// run on the calling thread,
    /// blocking it for the commit (tens to hundreds of µs with `sync
    /// normal`, an fsync with `full`), instead of hopping to the blocking
    /// pool and back. For the daemon's writer task, which has nothing else
    /// to do while it commits: the two thread hops per commit cost more
    /// than the commit on a 2-core machine (docs/BENCHMARKS.md, "the write
    /// path"). Snapshots, compaction and reads, which can take long, still
    /// go to the blocking pool.
    pub fn on_caller_thread(&self) -> SqliteLog {
        SqliteLog {
            inner: self.inner.clone(),
            inline_writes: true,
        }
    }

    /// Runs `f` with the writer connection on the blocking pool.
    async fn with_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .writer
                .lock()
                .map_err(|_| StoreError::Worker("writer connection poisoned".into()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    /// Runs `f` with a reader connection on the blocking pool.
    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut p| p.pop());
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &inner.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    c.busy_timeout(std::time::Duration::from_secs(5))?;
                    c
                }
            };
            let out = f(&conn);
            if let Ok(mut pool) = inner.readers.lock() {
                if pool.len() < READER_POOL {
                    pool.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// `path` as the path part of an SQLite URI (RFC 3986 percent-encoding of
/// every byte but unreserved ones and `/`).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = String::new();
    for &b in abs.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The store holds token hashes and message bodies: owner-only.
/// Makes the store's files 0600 (the database, its WAL and shared-memory
/// index, which hold message bodies, and the lock file): SQLite creates
/// the WAL and index with the database's mode, and a store made by an
/// older coord may be 0644.
fn set_private(path: &Path) {
    let name = path.as_os_str().to_string_lossy();
    for p in [
        path.to_path_buf(),
        PathBuf::from(format!("{name}-wal")),
        PathBuf::from(format!("{name}-shm")),
        lock_path(path),
    ] {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// Creates the store's directory (and its parents) 0700 if missing.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
    }
    Ok(())
}

/// Refuses a store directory (the resolved one: a link into /tmp is
/// judged as /tmp) that its
/// group or other users can write to (they could swap the database, plant
/// a link at its lock or hold it), even a sticky one like /tmp: the error
/// names the chmod that fixes it.
fn private_dir(dir: &Path) -> Result<(), StoreError> {
    let mode = std::fs::metadata(dir)
        .map_err(|source| StoreError::Io {
            context: format!("reading {}", dir.display()),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StoreError::InsecureDir {
            dir: dir.display().to_string(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    if found < known {
        // A migration that copies a table (3) leaves the whole copy in the
        // WAL; the writer's page count never saw it, so copy it back and
        // start the WAL over now rather than serve reads through it.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// The store's log id, made on first use.
fn log_identity(conn: &Connection) -> Result<String, StoreError> {
    let fresh = ulid::Ulid::new().to_string();
    conn.execute(
        "INSERT INTO identity (key, value) VALUES ('log_id', ?1) ON CONFLICT (key) DO NOTHING",
        params![fresh],
    )?;
    Ok(
        conn.query_row("SELECT value FROM identity WHERE key = 'log_id'", [], |r| {
            r.get(0)
        })?,
    )
}

fn bounds(conn: &Connection) -> Result<(u64, u64), StoreError> {
    // One statement, so both ends come from one read snapshot (two
    // statements could see a commit land between them and report an
    // oldest seq past a head they never saw). Each subquery is a lone
    // ORDER BY … LIMIT 1, which SQLite answers from the b-tree's edge;
    // `SELECT MIN(seq), MAX(seq)` would scan the whole table. After
    // compaction the log may be empty while seq numbers were used: the
    // head is remembered in meta so it never goes back.
    let (min, max, floor): (Option<i64>, Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT (SELECT seq FROM events ORDER BY seq ASC LIMIT 1), \
                    (SELECT seq FROM events ORDER BY seq DESC LIMIT 1), \
                    (SELECT value FROM meta WHERE key = 'head')",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let head = max.or(floor).unwrap_or(0).max(floor.unwrap_or(0)) as u64;
    let oldest = min.map(|m| m as u64).unwrap_or(head + 1);
    Ok((oldest, head))
}

fn txn_blocking(
    conn: &Connection,
    source: String,
    tx_id: String,
) -> Result<Option<TxnRecord>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT seq, response FROM txns WHERE source = ?1 AND tx_id = ?2")?
        .query_row(params![&source, &tx_id], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })
        .optional()?
        .map(|(seq, response)| TxnRecord {
            source,
            tx_id,
            seq,
            response,
        }))
}

/// `head` when the writer does not know the log's head (see
/// [`Inner::head`]).
const HEAD_UNKNOWN: u64 = u64::MAX;

/// A write transaction (`BEGIN IMMEDIATE`) on the writer connection whose
/// `BEGIN` and `COMMIT` are cached statements: rusqlite's `Transaction`
/// prepares both anew for every commit, which the writer, committing
/// thousands of times a second, would pay each time. Rolled back when
/// dropped uncommitted.
struct WriteTxn<'c> {
    conn: &'c Connection,
}

impl<'c> WriteTxn<'c> {
    fn begin(conn: &'c Connection) -> Result<Self, StoreError> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(WriteTxn { conn })
    }

    fn commit(self) -> Result<(), StoreError> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }
}

impl std::ops::Deref for WriteTxn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        // After a COMMIT, or an error that SQLite rolled back itself, no
        // transaction is open.
        if !self.conn.is_autocommit() {
            let _ = self
                .conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut s| s.execute([]));
        }
    }
}

/// [`append_blocking`], then counts the pages it wrote towards the next
/// checkpoint.
fn append_counted(inner: &Inner, conn: &Connection, batch: Batch) -> Result<(), StoreError> {
    let rows = batch.records.len() + batch.txns.len() + batch.attachments.len();
    let bytes = batch.records.iter().map(|r| r.json.len()).sum::<usize>()
        + batch.txns.iter().map(|t| t.response.len()).sum::<usize>();
    let last = batch.records.last().map(|r| r.seq);
    let known = inner.head.swap(HEAD_UNKNOWN, Ordering::Relaxed);
    append_blocking(conn, batch, (known != HEAD_UNKNOWN).then_some(known))?;
    inner.head.store(last.unwrap_or(known), Ordering::Relaxed);
    inner.checkpointer.wrote(conn, estimate_pages(rows, bytes));
    Ok(())
}

/// Appends `batch` in one transaction. `head`: the log's head if the
/// caller knows it, saving the query.
fn append_blocking(conn: &Connection, batch: Batch, head: Option<u64>) -> Result<(), StoreError> {
    let tx = WriteTxn::begin(conn)?;
    if let Some(first) = batch.records.first() {
        let head = match head {
            Some(h) => h,
            None => bounds(&tx)?.1,
        };
        if first.seq != head + 1 {
            return Err(StoreError::SeqGap {
                expected: head + 1,
                got: first.seq,
            });
        }
    }
    // Each statement is fetched from the cache only when its table has
    // rows in this batch: a fetch and its return to the cache cost about
    // 1,700 instructions (hashing the SQL, the LRU, reset and clearing the
    // bindings), and most commits touch two of the eight (callgrind,
    // docs/BENCHMARKS.md, "The write path").
    if !batch.expect.is_empty() {
        let mut get_key = tx.prepare_cached("SELECT seq FROM key_heads WHERE key = ?1")?;
        for e in &batch.expect {
            let found: Option<i64> = get_key.query_row([&e.key], |r| r.get(0)).optional()?;
            let found = found.map(|s| s as u64);
            if found != e.last_seq {
                return Err(StoreError::Conflict {
                    key: e.key.clone(),
                    expected: e.last_seq,
                    found,
                });
            }
        }
    }
    if !batch.records.is_empty() {
        let mut ins = tx.prepare_cached(
            "INSERT INTO events (seq, source, tx_id, kind, ingress_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut prev: Option<u64> = None;
        for r in &batch.records {
            if let Some(p) = prev {
                if r.seq != p + 1 {
                    return Err(StoreError::SeqGap {
                        expected: p + 1,
                        got: r.seq,
                    });
                }
            }
            prev = Some(r.seq);
            ins.execute(params![
                r.seq as i64,
                r.source,
                r.tx_id,
                r.kind,
                r.ingress_ms,
                r.json
            ])?;
        }
    }
    {
        let (mut set, mut del) = (None, None);
        for (key, seq) in &batch.key_updates {
            match seq {
                Some(s) => cached(&mut set, &tx, "INSERT INTO key_heads (key, seq) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET seq = excluded.seq")?
                    .execute(params![key, *s as i64])?,
                None => cached(&mut del, &tx, "DELETE FROM key_heads WHERE key = ?1")?.execute([key])?,
            };
        }
    }
    if !batch.txns.is_empty() {
        let mut ins = tx.prepare_cached(
            "INSERT OR IGNORE INTO txns (source, tx_id, seq, response) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for t in &batch.txns {
            ins.execute(params![t.source, t.tx_id, t.seq as i64, t.response])?;
        }
    }
    {
        let (mut put, mut del) = (None, None);
        for a in &batch.attachments {
            match a {
                AttachmentOp::Put { key, value } => cached(&mut put, &tx, "INSERT INTO attachments (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")?
                    .execute(params![key, value])?,
                AttachmentOp::Delete { key } => cached(&mut del, &tx, "DELETE FROM attachments WHERE key = ?1")?.execute([key])?,
            };
        }
    }
    tx.commit()?;
    Ok(())
}

/// The statement in `slot`, fetched from `conn`'s cache on first use: a
/// batch that never uses it never pays for the fetch.
fn cached<'s, 'c>(
    slot: &'s mut Option<rusqlite::CachedStatement<'c>>,
    conn: &'c Connection,
    sql: &str,
) -> Result<&'s mut rusqlite::CachedStatement<'c>, StoreError> {
    Ok(match slot.take() {
        Some(st) => slot.insert(st),
        None => slot.insert(conn.prepare_cached(sql)?),
    })
}
