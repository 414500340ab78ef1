//! The coord engine: everything that decides *when* and *in what order*
//! the log changes and who hears of it, with no HTTP, no sockets and no
//! thread-locals — driven through a [`writer::WriterHandle`] (commands in,
//! answers out) and read through a [`hub::Hub`] (events out).
//!
//! Parts, each in its own module:
//!
//! * [`writer`] — the single writer task: owns the [`coord_core::State`],
//!   drains commands in batches (group commit), validates, appends,
//!   applies, answers and publishes; the per-kind side effects of a
//!   commit live in one place (`writer::effects`);
//! * [`timers`], [`deadline`] — lease expiry and lock TTLs: one sorted
//!   set of deadlines the writer sleeps on, so nothing polls;
//! * [`waits`] — lock waits and long polls answered by commits;
//! * [`pidfd`], [`pidwatch`] — process exits as commands;
//! * [`hub`] — fan-out: a bounded ring of recent events, the head watch
//!   and per-subscriber cursors that fall back to the store; [`filter`]
//!   — the subscribers' filters, shared between equal ones;
//! * [`metrics`], [`stats`] — the counters the shell exposes;
//! * [`tokens`], [`event_ids`] — session tokens and the writer's `tx_id`s.
//!
//! It must not decide what is valid (that is coord-core), how bytes reach
//! the disk (coord-store), or how a request arrives or an answer leaves
//! (the shell, coord-daemon). It must not import hyper, axum or any
//! socket type, and holds no process-wide mutable state: two engines in
//! one process share nothing.
#![deny(missing_docs)]

pub mod deadline;
pub mod event_ids;
pub mod filter;
pub mod hub;
pub mod metrics;
pub mod pidfd;
pub mod pidwatch;
pub mod stats;
pub mod timers;
pub mod tokens;
pub mod waits;
pub mod writer;
