//! The coord daemon: owns the event log and serves it on a Unix socket.
//!
//! Parts, each in its own module:
//!
//! * `writer` — the single writer task: owns the [`coord_core::State`],
//!   drains commands in batches (group commit), validates, appends, applies,
//!   answers, publishes; also owns the timer queue (leases, lock TTLs) and
//!   the pidfd watches, so nothing polls;
//! * `hub` — fan-out: a bounded ring of recent events and per-subscriber
//!   cursors that fall back to the store, so no subscriber is dropped or
//!   slows a writer;
//! * `api` — the HTTP handlers of `docs/PROTOCOL.md`;
//! * `http` — request extraction (JSON bodies, tokens) and error answers;
//! * `server` — the socket (permissions, peer uid, stale files), the accept
//!   loop and graceful shutdown;
//! * `bridge` — the legacy bridge: a legacy coord root's changes become
//!   commands;
//! * `export` — the view written out in the legacy layout (on request and,
//!   debounced, after commits);
//! * [`lifecycle`] — the lifecycle manager: each session's state
//!   (starting, active, idle, needs_input, stale, dead) kept in step with
//!   its runtime and agent, through the probe traits it holds;
//! * [`probes`] — the real probes: tmux and processes, activity files and
//!   transcripts;
//! * `notify` — a session waiting for a human past `--notify-after` gets
//!   one `session.notify`, for the sentinel's sinks;
//! * `forward` — `--parent-socket`: reports of top-level sessions sent on
//!   to a parent daemon, fire-and-forget;
//! * `pidfd`, `tokens` — process-exit notification and session tokens.
//!
//! The crate must not decide what is valid (that is coord-core) or how
//! bytes reach the disk (that is coord-store).
#![deny(missing_docs)]

mod api;
mod app;
mod bridge;
pub mod cluster;
mod config;
mod conn;
mod export;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod http;
pub mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
mod notify;
pub mod observed;
pub mod probes;
mod server;
mod stop;
pub mod web;
mod web_auth;

pub use bridge::{BridgeConfig, LegacyMode};
pub use config::{default_socket_path, default_store_path, Config};
pub use coord_engine::timers::Renewals;
pub use coord_store::NatsTarget;
pub use lifecycle::{LifecycleConfig, LifecycleHandle, LifecycleManager, Thresholds};
pub use server::{run, ServeError};
