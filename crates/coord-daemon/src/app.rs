//! [`App`]: everything a request handler can reach (the writer, the hub,
//! the store for reads, tokens, counters, the shutdown notice). Shared by
//! `api` (the handlers) and `http` (extraction and authentication).

use coord_engine::hub::Hub;
use coord_engine::timers::Leases;
use coord_engine::tokens::TokenCache;
use coord_engine::writer::WriterHandle;
use coord_store::SyncMode;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Everything a handler can reach.
pub struct App<L> {
    /// The writer.
    pub writer: WriterHandle,
    /// The fan-out hub.
    pub hub: Arc<Hub>,
    /// The open subscribers' filters, shared between equal ones.
    pub filters: coord_engine::filter::Filters,
    /// The store (reads only: catch-up, bodies, tokens).
    pub store: L,
    /// Token hashes.
    pub tokens: Arc<TokenCache>,
    /// The admin token.
    pub admin_token: String,
    /// Where the admin token is written.
    pub admin_token_path: PathBuf,
    /// Flips to true when the daemon starts shutting down.
    pub shutdown: crate::stop::Stop,
    /// Start time.
    pub started: Instant,
    /// Socket path.
    pub socket: PathBuf,
    /// Store path.
    pub store_path: PathBuf,
    /// Sync mode.
    pub sync: SyncMode,
    /// Log bare heartbeats.
    pub log_heartbeats: bool,
    /// What the lifecycle manager, the bridge and the export report.
    pub observed: Arc<crate::observed::Observed>,
    /// What `/v1/metrics` reports.
    pub metrics: Arc<coord_engine::metrics::Metrics>,
    /// Every live session's lease (renewals included).
    pub leases: Arc<Leases>,
    /// The store's log identity (`Coord-Log-Id`).
    pub log_id: String,
    /// This daemon's id on a shared log.
    pub daemon_id: Option<String>,
    /// The approvals policy file (`approvals.toml`), read at each request.
    pub approvals_policy: Option<PathBuf>,
    /// How many requesters' waits are open now, per approval id: a wait
    /// cut off withdraws its approval only when it was the last one
    /// (PROTOCOL §14; a retried hook waits beside the first).
    pub requester_waits: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// The web dashboard's secrets, when `--http` serves one.
    pub web: Option<Arc<crate::web_auth::WebAuth>>,
    /// Connections open now, event streams included.
    pub connections: Arc<AtomicUsize>,
    /// This daemon's part in its log's election (`Alone` on SQLite).
    pub role: tokio::sync::watch::Receiver<coord_engine::writer::Role>,
}

/// One open connection, counted in [`App::connections`] for as long as it
/// lives.
pub(crate) struct Open(Arc<AtomicUsize>);

impl Open {
    /// Counts one more connection in `n` until the guard drops.
    pub(crate) fn count(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Open(n.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
