//! The socket and the life of the daemon: start-up checks, the accept loop
//! and graceful shutdown.
//!
//! Start: refuse a live daemon on the socket, open the store (its lock file
//! keeps a second daemon out), fold the log, remove a stale socket file,
//! bind with mode 0600 in a 0700 directory.
//!
//! Shutdown, when the `shutdown` future resolves: stop accepting, flip the
//! shutdown watch (streams end at an event boundary, waits are answered
//! `shutting_down`), let every connection finish its in-flight request
//! (bounded by [`DRAIN`]), then stop the writer once its queue is drained
//! (it leaves a snapshot), and remove the socket and admin-token files.

use crate::api::{self, App};
use crate::config::Config;
use coord_engine::hub::Hub;
use coord_engine::timers::{Leases, Renewals};
use coord_engine::tokens;
use coord_engine::tokens::TokenCache;
use coord_engine::writer::{self, WriterConfig};
use coord_store::{EventLog, JetStreamLog, SqliteLog, StoreError};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for open connections.
const DRAIN: Duration = Duration::from_secs(10);
/// Longest Unix socket path (sun_path holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A daemon already answers on the socket.
    #[error("a coord daemon is already running on {0}: nothing to start (commands use it as it is; `coord daemon stop` stops it)")]
    AlreadyRunning(PathBuf),
    /// The socket's directory is open to other users.
    #[error("socket directory {dir} has mode {mode:o}; it must be 0700 (chmod 700 it, or pick another --socket)")]
    SocketDir {
        /// The directory.
        dir: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Something other than a socket (a regular file, a directory, a link)
    /// sits at the socket path; the daemon never deletes it.
    #[error("{0} exists and is not a socket; coord will not delete it (move it away, or pick another --socket)")]
    NotASocket(PathBuf),
    /// The socket path does not fit in `sun_path`.
    #[error("socket path {0} is longer than {MAX_SOCKET_PATH} bytes; pick a shorter --socket")]
    SocketPathTooLong(PathBuf),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log could not be folded.
    #[error("cannot rebuild the state from the log: {0}")]
    Fold(String),
    /// The socket last served another store, and this daemon's store was
    /// only the default: serving it would put another log under the
    /// socket's clients without a word (PROTOCOL §11.1).
    #[error("{socket} last served the log {log_id} in {served}, not the default store {store}: pass --store {served} to serve it again, or --store {store} to serve another log on this socket")]
    OtherLog {
        /// The socket.
        socket: PathBuf,
        /// The store it last served.
        served: String,
        /// That store's log id.
        log_id: String,
        /// The default store this daemon would have opened.
        store: String,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let context = context.into();
    move |source| ServeError::Io { context, source }
}

/// Runs the daemon until `shutdown` resolves, then stops gracefully.
///
/// # Errors
/// [`ServeError`] when start-up fails; after start-up, problems are logged
/// and the daemon keeps serving.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    // Every file the daemon creates (store, WAL, lock, socket, tokens,
    // snapshots) is private to its user: message bodies live in the WAL.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let socket = config.socket.clone();
    let activated = config.listener.clone();
    if activated.is_none() {
        check_socket(&socket)?;
    }
    match config.nats.clone() {
        Some(target) => {
            let id = config
                .daemon_id
                .clone()
                .unwrap_or_else(|| crate::cluster::default_daemon_id(&socket));
            let store = JetStreamLog::open(target, &id).await?;
            tracing::info!(daemon_id = %id, log_id = store.log_id(), "joined the shared log");
            serve(
                config,
                store.clone(),
                store.clone(),
                Some((store, id)),
                shutdown,
            )
            .await
        }
        None => {
            served_check(&config)?;
            let store = SqliteLog::open(&config.store, config.sync)?;
            // The writer commits on its own worker thread: no hop to the
            // blocking pool and back per batch (docs/BENCHMARKS.md, "the
            // write path").
            let writes = store.on_caller_thread();
            serve(config, store, writes, None, shutdown).await
        }
    }
}

/// `writes` is the handle the writer appends through (the same log as
/// `store`, maybe with another commit strategy).
async fn serve<L: EventLog + Clone>(
    config: Config,
    store: L,
    writes: L,
    shared: Option<(JetStreamLog, String)>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let socket = config.socket.clone();
    let activated = config.listener.clone();
    let daemon_id = shared.as_ref().map(|(_, id)| id.clone());
    let state = writer::load_state(&store).await.map_err(ServeError::Fold)?;
    tracing::info!(
        head = state.head,
        sessions = state.view.sessions.len(),
        backend = store.backend(),
        "state loaded"
    );

    let hub = Hub::with_bytes(state.head, config.ring_capacity, config.ring_bytes);
    let token_cache = Arc::new(TokenCache::default());
    let renewals = Arc::new(Renewals::default());
    let leases = Arc::new(Leases::default());
    let metrics = Arc::new(coord_engine::metrics::Metrics::default());
    let observed = config.lifecycle.observed.clone();
    let mut lifecycle_config = config.lifecycle.clone();
    lifecycle_config.daemon_id = daemon_id.clone();
    let (role_tx, role_rx) = tokio::sync::watch::channel(if shared.is_some() {
        writer::Role::Unknown
    } else {
        writer::Role::Alone
    });
    let (writer, writer_join, writer_stop) = writer::spawn(
        state,
        writes,
        hub.clone(),
        token_cache.clone(),
        WriterConfig {
            snapshot_every: config.snapshot_every.max(1),
            retention: config.retention,
            renewals: renewals.clone(),
            leases: leases.clone(),
            metrics: metrics.clone(),
            daemon_id: daemon_id.clone(),
            role: shared.as_ref().map(|_| role_rx.clone()),
            forward: shared
                .as_ref()
                .map(|(log, _)| Arc::new(crate::cluster::NatsForward(log.clone())) as _),
        },
    );
    let lifecycle = crate::LifecycleManager::spawn(
        lifecycle_config,
        writer.clone(),
        hub.clone(),
        store.clone(),
        renewals,
    );

    let web = match config.http {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(io(format!("binding --http {addr}")))?;
            let bound = l.local_addr().map_err(io("reading the --http address"))?;
            tracing::info!(http = %bound, "web dashboard listening");
            Some((l, Arc::new(crate::web_auth::WebAuth::new(bound))))
        }
        None => None,
    };
    let admin_token = tokens::generate();
    let admin_token_path = coord_client::admin_token_path(&socket);
    write_private(&admin_token_path, &admin_token)?;

    let listener = match &activated {
        Some(l) => {
            let l = l
                .try_clone()
                .map_err(io("duplicating the socket passed by the service manager"))?;
            l.set_nonblocking(true)
                .map_err(io("making the passed socket non-blocking"))?;
            UnixListener::from_std(l).map_err(io("serving on the passed socket"))?
        }
        None => {
            remove_stale_socket(&socket)?;
            let listener =
                UnixListener::bind(&socket).map_err(io(format!("binding {}", socket.display())))?;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
                .map_err(io(format!("chmod 600 {}", socket.display())))?;
            listener
        }
    };
    record_served(&socket, &app_store_name(&config), store.log_id());
    tracing::info!(socket = %socket.display(), activated = activated.is_some(), "listening");
    // A no-op unless a service manager asked (NOTIFY_SOCKET, Type=notify).
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not report readiness to the service manager");
    }

    // One notice for every task: the accept loop, connections, streams,
    // waits, the bridge, the exporter and the forwarder.
    let stopping = crate::stop::Stop::new();
    let background = TaskTracker::new();
    let app = Arc::new(App {
        writer,
        hub,
        filters: Default::default(),
        store: store.clone(),
        tokens: token_cache,
        admin_token,
        admin_token_path: admin_token_path.clone(),
        shutdown: stopping.clone(),
        started: Instant::now(),
        socket: socket.clone(),
        store_path: PathBuf::from(app_store_name(&config)),
        sync: config.sync,
        log_heartbeats: config.log_heartbeats,
        leases,
        metrics,
        observed: observed.clone(),
        log_id: store.log_id().to_string(),
        daemon_id: daemon_id.clone(),
        approvals_policy: Some(config.approvals.clone().unwrap_or_else(|| {
            socket.parent().map_or_else(
                || PathBuf::from("approvals.toml"),
                |d| d.join("approvals.toml"),
            )
        })),
        requester_waits: Default::default(),
        web: web.as_ref().map(|(_, a)| a.clone()),
        connections: Default::default(),
        role: role_rx,
    });
    let budget = crate::http::BodyBudget::new(config.body_memory);
    let http = Arc::new(crate::conn::Http::new(config.header_timeout));
    let router = api::router(app.clone())
        .layer(axum::Extension(crate::http::BodyTimeout(
            config.body_timeout,
        )))
        .layer(axum::Extension(budget));
    if let Some(root) = config.export_legacy.clone() {
        background.spawn(crate::export::run(
            root,
            app.writer.clone(),
            store.clone(),
            app.hub.clone(),
            stopping.token().clone(),
            observed.clone(),
        ));
    }
    if let Some(after) = config.notify_after.filter(|d| !d.is_zero()) {
        background.spawn(crate::notify::run(
            app.writer.clone(),
            app.hub.watch(),
            after,
            stopping.token().clone(),
        ));
    }
    if let Some(parent) = config.parent_socket.clone() {
        background.spawn(crate::forward::run(
            parent,
            app.writer.clone(),
            store.clone(),
            app.hub.clone(),
            stopping.token().clone(),
        ));
    }
    if let Some((listener, auth)) = web {
        let web_router = crate::web::router(app.clone(), auth, router.clone());
        background.spawn(crate::web::serve(
            listener,
            web_router,
            http.clone(),
            app.connections.clone(),
            stopping.token().clone(),
        ));
    }
    if let Some((log, id)) = shared {
        background.spawn(crate::cluster::run(
            log,
            id,
            config.daemon_lease_ms,
            app.writer.clone(),
            role_tx,
            stopping.token().clone(),
        ));
    }
    if let Some(b) = config.legacy.clone() {
        background.spawn(crate::bridge::run(
            b,
            app.writer.clone(),
            stopping.token().clone(),
            observed.clone(),
        ));
    }
    background.close();
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut accept_errors = crate::conn::AcceptErrors::default();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    accept_errors.note("accept failed", &e, Instant::now());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == uid => {}
            Ok(cred) => {
                tracing::warn!(peer_uid = cred.uid(), "refused a peer of another uid");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; refused");
                continue;
            }
        }
        let router = router.clone();
        let http = http.clone();
        let stop = stopping.clone();
        let connections = app.connections.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _open = crate::app::Open::count(&connections);
            let gone = match crate::conn::peer_gone(&stream) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch a connection for its close");
                    None
                }
            };
            http.serve(stream, router, stop.cancelled(), gone).await;
        });
    }

    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    drop(listener);
    // A passed socket belongs to the service manager, which keeps
    // accepting on it for the next start.
    if activated.is_none() && is_socket(&socket) {
        let _ = std::fs::remove_file(&socket);
    }
    stopping.cancel();
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            left = conns.len(),
            "connections still open after the drain window; closing them"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    // The bridge's last write is answered: the writer still runs.
    background.wait().await;
    lifecycle.stop().await;
    drop(router);
    drop(app);
    writer_stop.cancel();
    if let Err(e) = writer_join.await {
        tracing::error!(error = %e, "writer task failed");
    }
    let _ = std::fs::remove_file(&admin_token_path);
    tracing::info!("stopped");
    Ok(())
}

/// The store as clients see it and the socket's record names it: a NATS
/// log's URL, or the SQLite file's resolved path.
fn app_store_name(config: &Config) -> String {
    match &config.nats {
        Some(t) => format!("nats://{}/{}", t.servers.join(","), t.log),
        None => coord_store::resolve_store_path(&config.store)
            .unwrap_or_else(|_| config.store.clone())
            .display()
            .to_string(),
    }
}

/// Refuses to put a defaulted SQLite store under a socket whose record
/// names another one (`<socket>.store`): the socket's clients hold tokens
/// and cursors of that log. A named store is served; the change is logged.
fn served_check(config: &Config) -> Result<(), ServeError> {
    let served = match coord_client::read_served(&config.socket) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the socket's record of the store it served");
            return Ok(());
        }
    };
    let store = app_store_name(config);
    if served.store == store {
        return Ok(());
    }
    if config.store_named {
        tracing::warn!(
            socket = %config.socket.display(),
            served = %served.store,
            log_id = %served.log_id,
            store = %store,
            "this socket last served another log; serving the named store instead (clients' tokens and cursors of the old log are refused)"
        );
        return Ok(());
    }
    Err(ServeError::OtherLog {
        socket: config.socket.clone(),
        served: served.store,
        log_id: served.log_id,
        store,
    })
}

/// Writes `<socket>.store` (0600): what auto-start must serve on this
/// socket next. A failure is logged, not fatal: the record only guards
/// later starts.
fn record_served(socket: &Path, store: &str, log_id: &str) {
    let rec = coord_client::Served {
        store: store.to_string(),
        log_id: log_id.to_string(),
    };
    let path = coord_client::served_path(socket);
    let body = serde_json::to_string(&rec).unwrap_or_default() + "\n";
    // Written beside and renamed over, so a reader never sees half of it.
    let tmp = path.with_extension("store.tmp");
    let result = write_private(&tmp, &body).and_then(|()| {
        std::fs::rename(&tmp, &path).map_err(io(format!("renaming to {}", path.display())))
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not record the store this socket serves");
    }
}

/// True when `path` itself (not what a link points to) is a socket.
fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Removes a socket file left by a daemon that died (`check_socket` has
/// made sure none answers on it). Anything else at that path — a regular
/// file, a directory, a link — is someone's data or a trap: refused, never
/// deleted.
fn remove_stale_socket(socket: &Path) -> Result<(), ServeError> {
    match std::fs::symlink_metadata(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ServeError::Io {
            context: format!("reading {}", socket.display()),
            source: e,
        }),
        Ok(_) if is_socket(socket) => std::fs::remove_file(socket)
            .map_err(io(format!("removing stale socket {}", socket.display()))),
        Ok(_) => Err(ServeError::NotASocket(socket.to_path_buf())),
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), ServeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    f.write_all(contents.as_bytes())
        .map_err(io(format!("writing {}", path.display())))
}

/// Creates the socket directory (0700) or checks its mode, and refuses to
/// start if a live daemon answers on the socket.
fn check_socket(socket: &Path) -> Result<(), ServeError> {
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(ServeError::SocketPathTooLong(socket.to_path_buf()));
    }
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("chmod 700 {}", dir.display())))?;
    }
    let mode = std::fs::metadata(dir)
        .map_err(io(format!("reading {}", dir.display())))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(ServeError::SocketDir {
            dir: dir.to_path_buf(),
            mode,
        });
    }
    if socket.exists() && std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(ServeError::AlreadyRunning(socket.to_path_buf()));
    }
    Ok(())
}
