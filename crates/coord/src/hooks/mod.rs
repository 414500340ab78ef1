//! Coding agents seen first-hand: `coord hook AGENT` runs as the agents'
//! own hooks (docs/AGENTS.md).
//!
//! `event` turns an agent's hook payload into what happened (pure);
//! `run` tells the daemon and answers the agent; `approval` turns a
//! permission request into an approval and waits for its decision;
//! `install` puts the
//! entries that run it into each agent's settings file; `codex_trust`
//! asks Codex's app-server to trust them. It must not start a
//! daemon or block an agent for a failure of coord's own.

pub(crate) mod approval;
pub(crate) mod codex_trust;
pub(crate) mod event;
pub(crate) mod install;
pub(crate) mod run;
pub(crate) mod version;
