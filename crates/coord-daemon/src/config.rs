//! Daemon settings and the default paths (PROTOCOL §1).

use coord_store::{Retention, SyncMode};
use std::path::PathBuf;

/// Everything `coord daemon` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SQLite store file.
    pub store: PathBuf,
    /// The Unix socket to serve on.
    pub socket: PathBuf,
    /// Whether `store` was named (`--store`, `COORD_STORE`) rather than
    /// defaulted. A defaulted store that differs from the one the socket
    /// last served is refused (`<socket>.store`, PROTOCOL §11.1); a named
    /// one is served, and the change is logged as a warning.
    pub store_named: bool,
    /// Commit durability.
    pub sync: SyncMode,
    /// What compaction keeps.
    pub retention: Retention,
    /// Take a snapshot (and compact) once this many events lie past the
    /// log's latest snapshot (counted across restarts).
    pub snapshot_every: u64,
    /// Log every heartbeat, not only phase changes.
    pub log_heartbeats: bool,
    /// Events kept in memory for live subscribers.
    pub ring_capacity: usize,
    /// Most bytes of events kept in memory for live subscribers (default
    /// 64 MiB); the ring ends at this or at `ring_capacity` events,
    /// whichever comes first.
    pub ring_bytes: usize,
    /// Most connections served at once (streams included); more wait in
    /// the accept queue.
    pub max_connections: usize,
    /// Longest a connection may take to send a request's headers, or stay
    /// idle between requests, before it is closed (default 10 s).
    pub header_timeout: std::time::Duration,
    /// Longest a request's body may take to arrive before the request is
    /// answered `408 timeout` (default 30 s).
    pub body_timeout: std::time::Duration,
    /// Bytes of request bodies held at once while they arrive, over every
    /// connection (default 64 MiB); more is `503 overloaded`.
    pub body_memory: usize,
    /// Bridge a legacy coord root into the log.
    pub legacy: Option<crate::BridgeConfig>,
    /// Keep this directory a legacy-layout copy of the view.
    pub export_legacy: Option<PathBuf>,
    /// The lifecycle manager's thresholds and probes.
    pub lifecycle: crate::LifecycleConfig,
    /// Forward the reports of top-level sessions to the daemon on this
    /// socket (fire-and-forget).
    pub parent_socket: Option<PathBuf>,
    /// A listening Unix socket handed over by a service manager (systemd
    /// socket activation, `LISTEN_FDS`). The daemon serves on it instead of
    /// binding `socket`, and leaves the socket file in place when it stops
    /// (the manager owns it). `socket` must be its path.
    pub listener: Option<std::sync::Arc<std::os::unix::net::UnixListener>>,
    /// Use this NATS JetStream log instead of the SQLite `store` (many
    /// daemons share it; PROTOCOL §12).
    pub nats: Option<coord_store::NatsTarget>,
    /// This daemon's id on a shared log (default: host name and a digest
    /// of the socket path, stable across restarts).
    pub daemon_id: Option<String>,
    /// How long a daemon's lease lasts without renewal, ms: after it, the
    /// other daemons end the sessions registered with it.
    pub daemon_lease_ms: u64,
    /// Serve the API and the web dashboard over HTTP/TCP on this address
    /// (PROTOCOL §13). Port 0 picks a free one (status reports it).
    pub http: Option<std::net::SocketAddr>,
    /// The approvals policy (PROTOCOL §14); `None`: `approvals.toml`
    /// beside the socket.
    pub approvals: Option<PathBuf>,
    /// A session waiting for a human (a pending approval, `needs_input`)
    /// this long gets one `session.notify`; `None`: never.
    pub notify_after: Option<std::time::Duration>,
}

impl Config {
    /// Defaults for a store and a socket.
    pub fn new(store: PathBuf, socket: PathBuf) -> Self {
        Config {
            store,
            socket,
            store_named: true,
            sync: SyncMode::Normal,
            retention: Retention::default(),
            snapshot_every: 10_000,
            log_heartbeats: false,
            ring_capacity: 8_192,
            ring_bytes: coord_engine::hub::DEFAULT_RING_BYTES,
            max_connections: 16_384,
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(30),
            body_memory: 64 << 20,
            legacy: None,
            export_legacy: None,
            lifecycle: crate::LifecycleConfig::default(),
            parent_socket: None,
            listener: None,
            nats: None,
            daemon_id: None,
            daemon_lease_ms: 10_000,
            http: None,
            approvals: None,
            notify_after: Some(std::time::Duration::from_secs(30)),
        }
    }
}

/// `$XDG_RUNTIME_DIR/coord/coord.sock`, else `$TMPDIR/coord-$UID/coord.sock`.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("coord").join("coord.sock"),
        None => {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            std::env::temp_dir()
                .join(format!("coord-{uid}"))
                .join("coord.sock")
        }
    }
}

/// `$XDG_DATA_HOME/coord/coord.db`, else `~/.local/share/coord/coord.db`.
pub fn default_store_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("coord").join("coord.db");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home)
            .join(".local")
            .join("share")
            .join("coord")
            .join("coord.db"),
        None => std::env::temp_dir().join("coord").join("coord.db"),
    }
}
