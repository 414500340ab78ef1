//! [`Metrics`]: what the daemon counts for Prometheus (`GET /v1/metrics`,
//! OpenMetrics text from `prometheus-client`). The writer's counters live
//! in [`Counts`] (shared with `/v1/status`) and are encoded from it at each
//! scrape; histograms are fed where things happen (the writer's commits,
//! the API's requests and lock waits); gauges are read from the state, the
//! hub and the store when a scrape asks. Names follow Prometheus conventions (`coord_` prefix,
//! `_total`, `_seconds`, `_bytes`), each with help text;
//! `docs/OBSERVABILITY.md` lists them.
//!
//! It must not decide anything: it only counts.

use crate::stats::{Counts, CountsCollector};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

/// A session state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `starting`, `active`, `idle`, `needs_input`, `stale`.
    pub state: String,
}

/// A lifecycle probe.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabel {
    /// `tmux`, `process`, `activity_file`, `transcript`.
    pub probe: String,
}

/// An HTTP request: its route (the pattern, so ids do not multiply the
/// series), method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `/v1/sessions/{id}`, …
    pub route: String,
    /// `GET`, `POST`.
    pub method: String,
    /// `200`, `409`, …
    pub status: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 50 µs … ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric of the daemon, registered once.
pub struct Metrics {
    registry: Registry,
    /// Events, commits and refusals, counted once for `/v1/status` and
    /// `/v1/metrics` alike.
    pub counts: Arc<Counts>,
    /// Appends refused because another daemon appended first (shared
    /// log), each followed by a catch-up and a retry.
    pub conflicts: Counter,
    /// Writes this daemon sent to its log's leader instead of appending
    /// them (shared log, follower).
    pub forwarded: Counter,
    /// Dashboard requests (HTTP/TCP) refused before any route: writes
    /// without the admin token, decisions without an approver's CSRF
    /// secret (a forged cross-site request lands here).
    pub web_refused: Counter,
    /// Writes per commit.
    pub batch_size: Histogram,
    /// Time of one append (the store's transaction), seconds.
    pub commit_seconds: Histogram,
    /// Request latency by route, method and status, seconds.
    pub requests: HistogramFamily<RequestLabels>,
    /// Time a granted lock spent queued, seconds.
    pub lock_wait_seconds: Histogram,
    /// Probe errors by probe (`session.probe_error` events).
    pub probe_errors: Family<ProbeLabel, Counter>,
    /// Changes the legacy bridge found in its root.
    pub bridge_changes: Counter,
    /// Live sessions by lifecycle state.
    pub sessions: Family<StateLabel, Gauge>,
    /// Held or awaited locks.
    pub locks: Gauge,
    /// Sessions queued for a lock.
    pub waiters: Gauge,
    /// Open event streams.
    pub subscribers: Gauge,
    /// Events the furthest-behind subscriber has yet to read.
    pub subscriber_lag: Gauge,
    /// Requests queued for the writer.
    pub queue_depth: Gauge,
    /// The store on disk, bytes.
    pub store_bytes: Gauge,
    /// Seq of the last event.
    pub head_seq: Gauge,
    /// Events held in the fan-out ring.
    pub ring_events: Gauge,
    /// Bytes of events held in the fan-out ring.
    pub ring_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            counts: Arc::new(Counts::default()),
            conflicts: Counter::default(),
            forwarded: Counter::default(),
            web_refused: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            commit_seconds: latency(),
            requests: Family::new_with_constructor(latency),
            lock_wait_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 12)),
            probe_errors: Family::default(),
            bridge_changes: Counter::default(),
            sessions: Family::default(),
            locks: Gauge::default(),
            waiters: Gauge::default(),
            subscribers: Gauge::default(),
            subscriber_lag: Gauge::default(),
            queue_depth: Gauge::default(),
            store_bytes: Gauge::default(),
            head_seq: Gauge::default(),
            ring_events: Gauge::default(),
            ring_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        r.register_collector(Box::new(CountsCollector(m.counts.clone())));
        r.register(
            "coord_append_conflicts",
            "Appends refused because another daemon appended first (then caught up and retried)",
            m.conflicts.clone(),
        );
        r.register(
            "coord_forwarded_writes",
            "Writes sent to the log's leader daemon instead of appended here (shared log)",
            m.forwarded.clone(),
        );
        r.register(
            "coord_web_refused_writes",
            "Dashboard writes refused before any route: no admin token, or a decision without an approver's CSRF secret",
            m.web_refused.clone(),
        );
        r.register(
            "coord_commit_batch_size",
            "Writes per committed batch",
            m.batch_size.clone(),
        );
        r.register_with_unit(
            "coord_commit_duration",
            "Time of one batch's append to the store",
            Unit::Seconds,
            m.commit_seconds.clone(),
        );
        r.register_with_unit(
            "coord_http_request_duration",
            "HTTP request latency by route, method and status (streams: until the answer's head)",
            Unit::Seconds,
            m.requests.clone(),
        );
        r.register_with_unit(
            "coord_lock_wait",
            "Time a granted lock spent in its queue",
            Unit::Seconds,
            m.lock_wait_seconds.clone(),
        );
        r.register(
            "coord_probe_errors",
            "Lifecycle probe failures, by probe (session.probe_error events)",
            m.probe_errors.clone(),
        );
        r.register(
            "coord_bridge_file_changes",
            "Changes the legacy bridge found in its root",
            m.bridge_changes.clone(),
        );
        r.register(
            "coord_sessions",
            "Live sessions by lifecycle state",
            m.sessions.clone(),
        );
        r.register("coord_locks", "Held or awaited locks", m.locks.clone());
        r.register(
            "coord_lock_waiters",
            "Sessions queued for a lock",
            m.waiters.clone(),
        );
        r.register(
            "coord_subscribers",
            "Open event streams",
            m.subscribers.clone(),
        );
        r.register(
            "coord_subscriber_lag_events",
            "Events the furthest-behind subscriber has yet to read",
            m.subscriber_lag.clone(),
        );
        r.register(
            "coord_writer_queue_depth",
            "Requests waiting for the writer",
            m.queue_depth.clone(),
        );
        r.register_with_unit(
            "coord_store_size",
            "The store on disk (database and WAL)",
            Unit::Bytes,
            m.store_bytes.clone(),
        );
        r.register(
            "coord_head_seq",
            "Seq of the last event in the log",
            m.head_seq.clone(),
        );
        r.register(
            "coord_ring_events",
            "Events held in memory for live subscribers",
            m.ring_events.clone(),
        );
        r.register_with_unit(
            "coord_ring",
            "Events held in memory for live subscribers, by their size (at most --ring-mib)",
            Unit::Bytes,
            m.ring_bytes.clone(),
        );
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Every metric in the Prometheus text format 0.0.4, for a scraper
    /// that does not accept OpenMetrics (`promtool check metrics`, older
    /// tools): [`Metrics::encode`] rewritten by [`to_text_004`].
    pub fn encode_text_004(&self) -> String {
        to_text_004(&self.encode())
    }
}

/// Rewrites OpenMetrics text (as prometheus-client writes it) as the
/// Prometheus text format 0.0.4, as the Prometheus client libraries serve
/// it to a scraper that did not ask for OpenMetrics: a counter's `# HELP`
/// and `# TYPE` name its `_total` series (OpenMetrics names the family
/// without the suffix, which a 0.0.4 parser reads as a family with no
/// samples and samples with no help), and `# UNIT` and `# EOF` go. Sample
/// lines are the same in both formats (no exemplars or `_created` series
/// are written here).
pub fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's HELP comes before its TYPE: held until the type is known.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let series = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {series} {text}\n"));
            }
            out.push_str(&format!("# TYPE {series} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_004_names_help_and_type_after_each_series() {
        let m = Metrics::default();
        m.counts.commit(1, 100, std::time::Instant::now());
        m.head_seq.set(7);
        m.commit_seconds.observe(0.001);
        let text = m.encode_text_004();
        assert!(
            text.contains("# HELP coord_commits_total Batches committed"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE coord_commits_total counter\ncoord_commits_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE coord_head_seq gauge\ncoord_head_seq 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE coord_commit_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Every sample's family has help and a type (what promtool checks).
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
                })
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no help for {name}: {text}"
            );
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "no type for {name}: {text}"
            );
        }
    }
}
