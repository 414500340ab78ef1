//! [`Stats`]: what the writer counts for `/v1/status` (events by kind,
//! batches, refusals, recent commit latencies, the last compaction). The
//! writer fills it; the status handler reads a copy.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Shared counters for `/v1/status`.
#[derive(Default)]
pub struct Stats {
    /// Events appended since start, by kind.
    pub events_by_kind: Mutex<BTreeMap<String, u64>>,
    /// Commits, writes in them, and the largest batch, since start.
    pub batches: Mutex<BatchStats>,
}

/// What the writer's commits looked like (for `/v1/status`).
#[derive(Debug, Default, Clone)]
pub struct BatchStats {
    /// Batches committed.
    pub commits: u64,
    /// Writes in them.
    pub writes: u64,
    /// The largest batch.
    pub max_batch: u64,
    /// Refused writes by code.
    pub refused: BTreeMap<String, u64>,
    /// The last compaction, if one ran.
    pub last_compaction: Option<coord_proto::api::CompactionStatus>,
    /// (when, µs) of each commit in the last minute, oldest first.
    pub recent: std::collections::VecDeque<(std::time::Instant, u64)>,
}

impl BatchStats {
    /// Commit latency percentile `p` (0–100) over the last minute, µs.
    pub fn recent_percentile(&self, p: f64) -> Option<u64> {
        let mut v: Vec<u64> = self.recent.iter().map(|(_, us)| *us).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v.get(i).copied()
    }
}
