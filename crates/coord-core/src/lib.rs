//! The pure state machine of coord: what a command does to the view.
//!
//! * [`State`] — the view plus the bookkeeping the log needs (head seq and
//!   the last seq per key, for conditional appends);
//! * [`Command`] — what a writer asks for;
//! * [`validate`] — decides, from the state alone, which events a command
//!   produces (or why it is rejected) and what to answer;
//! * [`apply`] — folds one committed event into the state;
//! * [`keys`] — the consistency keys an event touches.
//!
//! This crate does no I/O, spawns nothing, reads no clock (time comes in on
//! the commands) and never panics on input: it is the part every backend
//! shares and the part property tests drive directly. The view must only
//! ever change through [`apply`]; `fold(log) == live view` is the invariant
//! `tests/fold.rs` guards.
#![deny(missing_docs)]

pub mod audit;
mod command;
mod kinds;
mod lock_index;
pub mod policy;
mod state;

pub use command::{Command, ExpiryPolicy, Outcome, Probes, Rejection, Reply};
pub use kinds::approval::find as find_approval;
pub use kinds::custom::check_custom;
pub use kinds::session::registered_session;
pub use kinds::{apply, validate, MAX_REPORT_MESSAGE_BYTES};
pub use lock_index::LockIndex;
pub use policy::RuleVerdict;
pub use state::{keys, State};
