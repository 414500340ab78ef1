//! [`Observed`]: what the background parts of the daemon report for
//! `/v1/status` — the lifecycle manager's probes, the legacy bridge and the
//! legacy export. Each part writes its own section; the status handler
//! reads them. Nothing here acts on what it holds.

use coord_proto::api::{BridgeStatus, ExportStatus, LifecycleStatus};
use coord_proto::Timestamp;
use std::sync::Mutex;

/// The shared sections.
#[derive(Debug, Default)]
pub struct Observed {
    lifecycle: Mutex<LifecycleStatus>,
    bridge: Mutex<Option<BridgeStatus>>,
    export: Mutex<Option<ExportStatus>>,
}

impl Observed {
    /// Changes the lifecycle section.
    pub fn lifecycle(&self, f: impl FnOnce(&mut LifecycleStatus)) {
        if let Ok(mut l) = self.lifecycle.lock() {
            f(&mut l);
        }
    }

    /// Changes the bridge section (created on first use).
    pub fn bridge(&self, f: impl FnOnce(&mut BridgeStatus)) {
        if let Ok(mut b) = self.bridge.lock() {
            f(b.get_or_insert_with(Default::default));
        }
    }

    /// Changes the export section (created on first use).
    pub fn export(&self, f: impl FnOnce(&mut ExportStatus)) {
        if let Ok(mut e) = self.export.lock() {
            f(e.get_or_insert_with(Default::default));
        }
    }

    /// A copy of every section.
    pub fn snapshot(&self) -> (LifecycleStatus, Option<BridgeStatus>, Option<ExportStatus>) {
        (
            self.lifecycle.lock().map(|l| l.clone()).unwrap_or_default(),
            self.bridge.lock().ok().and_then(|b| b.clone()),
            self.export.lock().ok().and_then(|e| e.clone()),
        )
    }
}

/// Now, for `last_error_at`.
pub fn now() -> Timestamp {
    Timestamp::now()
}
