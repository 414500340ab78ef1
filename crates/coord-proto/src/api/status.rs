//! The answer of `GET /v1/status` (PROTOCOL §10) and its groups.

use super::*;

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusResponse {
    /// Daemon version.
    pub version: String,
    /// Protocol version.
    pub protocol: u32,
    /// Daemon pid.
    pub pid: u32,
    /// The log's identity (a ULID made with the store); cursors are only
    /// meaningful on the log they came from.
    pub log_id: String,
    /// Socket path.
    pub socket: String,
    /// Store facts.
    pub store: StoreStatus,
    /// The HTTP/TCP address of the web dashboard, when `--http` serves
    /// one (`127.0.0.1:8765`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Last seq in the log (0 when empty).
    pub head_seq: u64,
    /// Oldest retained seq (head+1 when empty).
    pub oldest_seq: u64,
    /// Time since start, ms.
    pub uptime_ms: u64,
    /// Open event streams.
    pub subscribers: u64,
    /// Live sessions.
    pub sessions: u64,
    /// Held or awaited locks.
    pub locks: u64,
    /// Events appended since start, by kind.
    pub events_by_kind: BTreeMap<String, u64>,
    /// The writer's commits.
    #[serde(default)]
    pub writer: WriterStatus,
    /// The event streams.
    #[serde(default)]
    pub streams: StreamsStatus,
    /// Client connections open now (event streams included), on the
    /// socket and the dashboard's listener.
    #[serde(default)]
    pub connections: u64,
    /// Sessions, leases and locks.
    #[serde(default)]
    pub leases: LeasesStatus,
    /// The lifecycle manager's probes.
    #[serde(default)]
    pub lifecycle: LifecycleStatus,
    /// The legacy bridge, when the daemon bridges a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeStatus>,
    /// The legacy export, when the daemon keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStatus>,
}

/// `/v1/status` `lifecycle`: the lifecycle manager's probes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecycleStatus {
    /// Probe calls made since start (tmux, process, activity file,
    /// transcript).
    pub probes_run: u64,
    /// Probe failures reported, by session.
    pub probe_errors: BTreeMap<String, u64>,
    /// Whether the manager probes on an interval now (some session has a
    /// runtime or files that cannot notify).
    pub probing: bool,
    /// How many sessions the interval probes.
    pub probed_sessions: u64,
}

/// `/v1/status` `bridge`: the legacy bridge.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BridgeStatus {
    /// `watch`, `poll`, or `polling fallback` (watching was impossible).
    pub mode: String,
    /// Why it fell back to polling, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The root bridged.
    pub root: String,
    /// File changes seen.
    pub changes_seen: u64,
    /// Scans that found changes.
    pub batches: u64,
    /// Changes written to the log (imports), batched from `changes_seen`.
    pub imports: u64,
    /// Files the last scan skipped as malformed (half-written, or naming
    /// another id than their file name).
    #[serde(default)]
    pub skipped_malformed: u64,
    /// The last error and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<Timestamp>,
}

/// `/v1/status` `export`: the legacy export.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportStatus {
    /// The root written.
    pub root: String,
    /// Export passes run.
    pub exports: u64,
    /// Events those passes covered (one pass follows a burst of commits).
    pub batched_from: u64,
    /// Files written and removed in all.
    pub files_changed: u64,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<Timestamp>,
}

/// `/v1/status` `writer`: what the single writer has been doing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WriterStatus {
    /// Batches committed since start.
    pub commits: u64,
    /// Writes per batch, on average.
    pub mean_batch: f64,
    /// The largest batch.
    pub max_batch: u64,
    /// Commit latency over the last minute, p50, µs.
    pub commit_p50_us: Option<u64>,
    /// Commit latency over the last minute, p99, µs.
    pub commit_p99_us: Option<u64>,
    /// Requests waiting for the writer now.
    pub queue_depth: u64,
    /// Writes refused since start, by error code.
    pub refused: BTreeMap<String, u64>,
}

/// `/v1/status` `streams`: the subscribers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamsStatus {
    /// Open event streams.
    pub subscribers: u64,
    /// Those reading from the in-memory ring.
    pub live: u64,
    /// Those catching up from the store (behind the ring).
    pub catching_up: u64,
    /// The cursor of the furthest-behind subscriber.
    pub furthest_behind_seq: Option<u64>,
    /// How many events it has yet to read.
    pub lag_events: u64,
    /// How long ago the first event it has yet to read was appended, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
}

/// `/v1/status` `leases`: sessions, leases and locks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeasesStatus {
    /// Live sessions by lifecycle state.
    pub sessions_by_state: BTreeMap<String, u64>,
    /// Leases that run out within the next 60 s unless renewed.
    pub expiring_within_60s: u64,
    /// Locks with at least one holder.
    pub locks_held: u64,
    /// Sessions queued for a lock.
    pub waiters: u64,
    /// How long the longest-waiting waiter has waited, ms.
    pub longest_wait_ms: Option<u64>,
}
