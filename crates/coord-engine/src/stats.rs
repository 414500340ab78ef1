//! [`Counts`]: what the writer counts — events by kind and source,
//! commits, the writes in them and the largest batch, refusals by code,
//! the last minute's commit times, the last compaction. Counted once,
//! here: `/v1/status` reads a copy ([`Counts::read`]) and `/v1/metrics`
//! encodes its counters from the same numbers ([`CountsCollector`],
//! registered by [`crate::metrics::Metrics`]), so the two never disagree.
//!
//! It must not decide anything: it only counts.

use coord_proto::api::CompactionStatus;
use coord_proto::{ErrorCode, Event};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long commit times are kept for the percentiles of `/v1/status`.
const RECENT: Duration = Duration::from_secs(60);
/// The most commit times kept, whatever the rate.
const RECENT_MAX: usize = 100_000;

/// The writer's counters, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct Counts {
    tally: Mutex<Tally>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Events this daemon appended since start, by (kind, source) (on a
    /// shared log, not those it folded from the other daemons' appends).
    pub events: BTreeMap<(String, String), u64>,
    /// Commits (one store transaction each).
    pub commits: u64,
    /// Writes in them.
    pub writes: u64,
    /// The most writes in one commit.
    pub max_batch: u64,
    /// Writes refused, by error code (nothing of them was appended).
    pub refused: BTreeMap<String, u64>,
    /// The last compaction, if one ran.
    pub last_compaction: Option<CompactionStatus>,
    /// (when, µs) of each commit in the last minute, oldest first.
    pub recent: VecDeque<(Instant, u64)>,
}

impl Tally {
    /// Events by kind, every source summed.
    pub fn events_by_kind(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for ((kind, _), n) in &self.events {
            *out.entry(kind.clone()).or_default() += n;
        }
        out
    }

    /// Commit time percentile `p` (0–100) over the last minute, µs.
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

impl Counts {
    fn tally(&self) -> MutexGuard<'_, Tally> {
        // Counters only: a panic elsewhere while held left numbers, not a
        // broken structure.
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts events now in the log: one lookup per run of the same kind
    /// and source (a batch append is one run), not per event.
    pub fn events<'e>(&self, events: impl IntoIterator<Item = &'e Event>) {
        let mut t = self.tally();
        let mut run: Option<((&str, &str), u64)> = None;
        let add = |t: &mut Tally, (kind, source): (&str, &str), n: u64| {
            let key = (kind.to_string(), source.to_string());
            *t.events.entry(key).or_default() += n;
        };
        for e in events {
            let key = (e.kind(), e.source.as_str());
            match &mut run {
                Some((k, n)) if *k == key => *n += 1,
                _ => {
                    if let Some((k, n)) = run.replace((key, 1)) {
                        add(&mut t, k, n);
                    }
                }
            }
        }
        if let Some((k, n)) = run {
            add(&mut t, k, n);
        }
    }

    /// Counts one commit of `writes` writes whose append took `commit_us`
    /// µs, finished at `now`.
    pub fn commit(&self, writes: usize, commit_us: u64, now: Instant) {
        let mut t = self.tally();
        t.commits += 1;
        t.writes += writes as u64;
        t.max_batch = t.max_batch.max(writes as u64);
        t.recent.push_back((now, commit_us));
        while t
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RECENT)
            || t.recent.len() > RECENT_MAX
        {
            t.recent.pop_front();
        }
    }

    /// Counts `n` writes refused with `code`.
    pub fn refused(&self, code: ErrorCode, n: u64) {
        *self
            .tally()
            .refused
            .entry(code.as_str().to_string())
            .or_default() += n;
    }

    /// Notes a compaction.
    pub fn compacted(&self, c: CompactionStatus) {
        self.tally().last_compaction = Some(c);
    }

    /// A copy of every counter now.
    pub fn read(&self) -> Tally {
        self.tally().clone()
    }
}

/// The counters of [`Counts`] as Prometheus counters, encoded at each
/// scrape: `coord_events_total{kind,source}`,
/// `coord_writes_refused_total{code}`, `coord_commits_total`.
#[derive(Debug)]
pub struct CountsCollector(pub Arc<Counts>);

impl Collector for CountsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.0.read();
        let mut events = encoder.encode_descriptor(
            "coord_events",
            "Events appended to the log, by kind and source",
            None,
            MetricType::Counter,
        )?;
        for ((kind, source), n) in &t.events {
            let labels = [("kind", kind.as_str()), ("source", source.as_str())];
            ConstCounter::new(*n).encode(events.encode_family(&labels)?)?;
        }
        let mut refused = encoder.encode_descriptor(
            "coord_writes_refused",
            "Writes refused, by error code (nothing was appended)",
            None,
            MetricType::Counter,
        )?;
        for (code, n) in &t.refused {
            ConstCounter::new(*n).encode(refused.encode_family(&[("code", code.as_str())])?)?;
        }
        let commits = encoder.encode_descriptor(
            "coord_commits",
            "Batches committed by the writer (one store transaction each)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(t.commits).encode(commits)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_counted_once_for_status_and_for_metrics() {
        let counts = Arc::new(Counts::default());
        let e = |seq, kind: &str, source: &str| {
            let mut p = crate::hub::Published::custom(seq, kind).event.clone();
            p.source = source.into();
            p
        };
        let events = [e(1, "x.a", "api"), e(2, "x.a", "api"), e(3, "x.b", "cli")];
        counts.events(&events);
        counts.commit(3, 120, Instant::now());
        counts.refused(ErrorCode::LockHeld, 2);
        let t = counts.read();
        assert_eq!(t.events_by_kind().get("x.a"), Some(&2));
        assert_eq!((t.commits, t.writes, t.max_batch), (1, 3, 3));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(CountsCollector(counts.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(r#"coord_events_total{kind="x.a",source="api"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"coord_writes_refused_total{code="lock_held"} 2"#),
            "{text}"
        );
        assert!(text.contains("coord_commits_total 1"), "{text}");
    }
}
