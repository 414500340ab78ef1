//! One module per subcommand family: its arguments (clap) and the code
//! that runs it. Each calls the client or the daemon and prints through
//! `crate::output`; none decides anything about sessions or locks.

pub(crate) mod approvals;
pub(crate) mod daemon;
pub(crate) mod dispatch;
pub(crate) mod events;
pub(crate) mod explain;
pub(crate) mod guard;
pub(crate) mod inbox;
pub(crate) mod lock;
pub(crate) mod mcp;
mod mcp_approvals;
mod mcp_args;
pub(crate) mod sentinel;
pub(crate) mod service;
pub(crate) mod session;
pub(crate) mod verify;
