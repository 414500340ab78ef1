//! Writes that must land: undoing what a caller was told failed (a
//! timed-out wait's cancel, the cancel of a wait whose client left). When
//! the store refuses one, the writer keeps it and commits it first, ahead
//! of every other write, as soon as the log takes writes again.
//!
//! It must not decide which writes must land: the handler marks them
//! (`Extras::must_land`).

use super::*;

/// How often writes that must land are tried again while the store
/// refuses them.
pub(super) const RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// Most writes kept to land later; past it the oldest are dropped (with
/// an error in the log), so an outage cannot grow the daemon without
/// bound.
const MOST: usize = 65_536;

impl Write {
    /// A copy to commit later, without its reply channel: the caller has
    /// its answer already.
    pub(super) fn to_land_later(&self) -> Write {
        Write {
            cmd: self.cmd.clone(),
            source: self.source.clone(),
            tx_id: self.tx_id,
            digest: self.digest.clone(),
            ts: self.ts,
            extras: Extras {
                must_land: true,
                origin: self.extras.origin.clone(),
                ..Extras::default()
            },
            reply: None,
        }
    }
}

impl<L: EventLog + Clone> Writer<L> {
    /// Keeps the must-land writes of a batch the store refused.
    pub(super) fn keep_must_land<'a>(&mut self, refused: impl IntoIterator<Item = &'a Write>) {
        for w in refused.into_iter().filter(|w| w.extras.must_land) {
            if self.must_land.len() >= MOST {
                let dropped = self.must_land.remove(0);
                tracing::error!(cmd = ?dropped.cmd, "too many writes wait for the store; dropped the oldest");
            }
            tracing::info!(cmd = ?w.cmd, "the store refused a write that must land; it goes first once the log is writable");
            self.must_land.push(w.to_land_later());
        }
    }
}
