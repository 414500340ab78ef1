//! The sentinel: turn each event into one observation and hand it to a
//! sink. The loop calls only `source.poll()` and [`handle_event`]; nothing
//! here touches the coord root.

use crate::ledger::{InFlight, Ledger};
use crate::source::SentinelEventSource;
use coord_proto::Event;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// What a sentinel writes per event: kind, who, what, and one human line.
/// Deliberately free of seq, ids and times, so two sources that saw the
/// same changes produce byte-identical observations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// `tx_kind`.
    pub kind: String,
    /// The session the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The resource the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// One line for people.
    pub summary: String,
}

/// The observation for an event.
pub fn observe(e: &Event) -> Observation {
    Observation {
        kind: e.kind().to_string(),
        session: e.session_id.clone(),
        resource: e.resource.clone(),
        summary: coord_client::render_event(e),
    }
}

/// Where observations go, as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    /// `jsonl:PATH`: append one JSON line per observation.
    Jsonl(PathBuf),
    /// `stdout`: one JSON line per observation on standard output.
    Stdout,
    /// `exec:CMD`: run `sh -c CMD` per observation with the JSON on stdin.
    Exec(String),
}

impl std::str::FromStr for SinkSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "stdout" {
            Ok(SinkSpec::Stdout)
        } else if let Some(p) = s.strip_prefix("jsonl:").filter(|p| !p.is_empty()) {
            Ok(SinkSpec::Jsonl(PathBuf::from(p)))
        } else if let Some(c) = s.strip_prefix("exec:").filter(|c| !c.is_empty()) {
            Ok(SinkSpec::Exec(c.to_string()))
        } else {
            Err(format!(
                "sink {s:?}: expected jsonl:PATH, stdout or exec:CMD"
            ))
        }
    }
}

/// An open sink.
pub enum Sink {
    /// An append-only file, and its path (to read back what landed).
    Jsonl(tokio::fs::File, PathBuf),
    /// Standard output.
    Stdout(tokio::io::Stdout),
    /// A command per observation.
    Exec(String),
}

impl Sink {
    /// Opens the sink a spec names.
    ///
    /// # Errors
    /// The file cannot be opened for appending.
    pub async fn open(spec: &SinkSpec) -> std::io::Result<Sink> {
        Ok(match spec {
            // Observations carry message text: a new sink file is 0600.
            SinkSpec::Jsonl(p) => Sink::Jsonl(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(p)
                    .await?,
                p.clone(),
            ),
            SinkSpec::Stdout => Sink::Stdout(tokio::io::stdout()),
            SinkSpec::Exec(c) => Sink::Exec(c.clone()),
        })
    }

    /// Writes one observation. A failing `exec` command is logged and
    /// survived; a file or stdout that cannot be written is an error.
    ///
    /// # Errors
    /// Writing to the file or stdout failed.
    pub async fn write(&mut self, obs: &Observation) -> std::io::Result<()> {
        let line = serde_json::to_string(obs).unwrap_or_default();
        self.write_line(&line, "", false).await
    }

    /// For a sink the sentinel can read back (`jsonl`), its length in
    /// bytes: the ledger's mark of where a batch began.
    ///
    /// # Errors
    /// The file's metadata cannot be read.
    pub async fn mark(&mut self) -> std::io::Result<Option<u64>> {
        match self {
            Sink::Jsonl(f, _) => Ok(Some(f.metadata().await?.len())),
            _ => Ok(None),
        }
    }

    /// For a `jsonl` sink: how many complete lines follow `mark` (what
    /// landed of a batch that began there). A half-written last line is
    /// cut off, so it is written again whole.
    ///
    /// # Errors
    /// The file cannot be read or truncated.
    pub async fn landed_since(&mut self, mark: u64) -> std::io::Result<usize> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let Sink::Jsonl(f, path) = self else {
            return Ok(0);
        };
        let len = f.metadata().await?.len();
        if len <= mark {
            return Ok(0);
        }
        // Read through a handle of its own: the sink's is append-only.
        let mut tail = Vec::new();
        let mut r = tokio::fs::File::open(&*path).await?;
        r.seek(std::io::SeekFrom::Start(mark)).await?;
        r.read_to_end(&mut tail).await?;
        let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < tail.len() {
            f.set_len(mark + complete as u64).await?;
        }
        Ok(tail[..complete].iter().filter(|b| **b == b'\n').count())
    }

    /// Writes one observation line (JSON, no newline). An `exec:` command
    /// gets `COORD_EVENT_KEY` (`source:tx_id`) and `COORD_REDELIVERY` (`1`
    /// when the line may have been handed before a crash) in its
    /// environment.
    ///
    /// # Errors
    /// Writing to the file or stdout failed.
    pub async fn write_line(
        &mut self,
        line: &str,
        key: &str,
        redelivery: bool,
    ) -> std::io::Result<()> {
        let mut line = line.as_bytes().to_vec();
        line.push(b'\n');
        match self {
            Sink::Jsonl(f, _) => {
                f.write_all(&line).await?;
                f.flush().await
            }
            Sink::Stdout(out) => {
                out.write_all(&line).await?;
                out.flush().await
            }
            Sink::Exec(cmd) => {
                if let Err(e) = run_exec(cmd, &line, key, redelivery).await {
                    tracing::warn!(command = %cmd, error = %e, "observation command failed; going on");
                }
                Ok(())
            }
        }
    }
}

async fn run_exec(cmd: &str, input: &[u8], key: &str, redelivery: bool) -> std::io::Result<()> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("COORD_EVENT_KEY", key)
        .env("COORD_REDELIVERY", if redelivery { "1" } else { "0" })
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is not an error.
        let _ = stdin.write_all(input).await;
    }
    let status = child.wait().await?;
    if !status.success() {
        return Err(std::io::Error::other(format!("exited with {status}")));
    }
    Ok(())
}

/// Handles one event: one observation to the sink.
///
/// # Errors
/// The sink could not be written (see [`Sink::write`]).
pub async fn handle_event(e: &Event, sink: &mut Sink) -> std::io::Result<()> {
    sink.write(&observe(e)).await
}

/// Runs a sentinel until `shutdown` resolves: poll, handle every event
/// whose kind matches one of `kinds` (globs; empty = all), sleep `interval`
/// when there was nothing new. A failing poll is logged and retried with
/// backoff (up to 30 s); it loses nothing.
///
/// # Errors
/// The sink failed.
pub async fn run<S: SentinelEventSource>(
    source: &mut S,
    sink: &mut Sink,
    interval: Duration,
    kinds: &[String],
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = interval;
    if let Some(ledger) = source.ledger() {
        finish_in_flight(ledger, sink).await?;
    }
    loop {
        let polled = tokio::select! {
            r = source.poll() => r,
            _ = &mut shutdown => return Ok(()),
        };
        let wait = match polled {
            Ok(events) => {
                backoff = interval;
                let wanted = |e: &&Event| {
                    kinds.is_empty()
                        || kinds
                            .iter()
                            .any(|k| coord_proto::ids::glob_match(k, e.kind()))
                };
                let position = source.position();
                match source.ledger() {
                    Some(ledger) => {
                        let batch: Vec<&Event> = events.iter().filter(wanted).collect();
                        let cursor = events.last().map_or(0, |e| e.seq);
                        let next_scan = position;
                        hand_batch(ledger, sink, &batch, cursor, next_scan).await?;
                    }
                    None => {
                        for e in events.iter().filter(wanted) {
                            handle_event(e, sink).await?;
                        }
                    }
                }
                if !events.is_empty() {
                    continue;
                }
                interval
            }
            Err(e) => {
                tracing::warn!(source = source.name(), error = %e, "poll failed; retrying");
                backoff = (backoff * 2).clamp(
                    interval.max(Duration::from_millis(100)),
                    Duration::from_secs(30),
                );
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}

fn state_error(e: crate::error::SourceError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Hands one batch to the sink under the ledger's protocol
/// ([`crate::ledger`]): record it, hand each observation (recording the
/// count where the sink cannot be read back), then finish it.
async fn hand_batch(
    ledger: &mut Ledger,
    sink: &mut Sink,
    batch: &[&Event],
    cursor: u64,
    next_scan: Option<serde_json::Value>,
) -> std::io::Result<()> {
    let lines: Vec<String> = batch
        .iter()
        .map(|e| serde_json::to_string(&observe(e)).unwrap_or_default())
        .collect();
    let keys: Vec<String> = batch
        .iter()
        .map(|e| format!("{}:{}", e.source, e.tx_id))
        .collect();
    let sink_len = sink.mark().await?;
    ledger
        .begin(InFlight {
            lines,
            keys,
            cursor,
            handed: 0,
            sink_len,
            next_scan,
        })
        .map_err(state_error)?;
    hand_rest(ledger, sink, 0, false).await
}

/// Completes a batch a crashed sentinel left in flight, then finishes it.
async fn finish_in_flight(ledger: &mut Ledger, sink: &mut Sink) -> std::io::Result<()> {
    let Some(f) = ledger.state.in_flight.clone() else {
        return Ok(());
    };
    let (from, maybe_handed) = match (f.sink_len, sink.mark().await?) {
        // The sink says exactly what landed.
        (Some(mark), Some(_)) => (sink.landed_since(mark).await?.min(f.lines.len()), false),
        // Only the count recorded so far is known; the next one may have
        // been handed just before the crash.
        _ => (f.handed, f.handed < f.lines.len()),
    };
    tracing::warn!(
        state = %ledger.path().display(),
        handed = from,
        of = f.lines.len(),
        "finishing a batch a stopped sentinel left unfinished"
    );
    hand_rest(ledger, sink, from, maybe_handed).await
}

/// Hands observations `from..` of the batch in flight and finishes it.
async fn hand_rest(
    ledger: &mut Ledger,
    sink: &mut Sink,
    from: usize,
    first_maybe_handed: bool,
) -> std::io::Result<()> {
    let Some(f) = ledger.state.in_flight.clone() else {
        return Ok(());
    };
    let count_each = f.sink_len.is_none();
    for i in from..f.lines.len() {
        let redelivery = first_maybe_handed && i == from;
        sink.write_line(&f.lines[i], &f.keys[i], redelivery).await?;
        if count_each {
            ledger.handed(i + 1).map_err(state_error)?;
        }
    }
    ledger.finish().map_err(state_error)
}

#[cfg(test)]
mod tests {
    //! The ledger's recovery, at the instant that matters: a sentinel
    //! killed in the middle of handing a batch.

    use super::*;

    fn batch(n: usize, sink_len: Option<u64>, handed: usize) -> InFlight {
        InFlight {
            lines: (0..n).map(|i| format!("{{\"n\":{i}}}")).collect(),
            keys: (0..n).map(|i| format!("api:{i}")).collect(),
            cursor: 90 + n as u64,
            handed,
            sink_len,
            next_scan: None,
        }
    }

    #[tokio::test]
    async fn a_jsonl_batch_cut_mid_line_is_completed_without_a_repeat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("obs.jsonl");
        // Before the batch the sink held one line; the crash left two of
        // the batch's five lines and half of the third.
        std::fs::write(&out, "{\"old\":true}\n{\"n\":0}\n{\"n\":1}\n{\"n\"").expect("sink");
        let mark = "{\"old\":true}\n".len() as u64;
        let mut ledger = Ledger::open(dir.path().join("state")).expect("ledger");
        ledger.begin(batch(5, Some(mark), 0)).expect("begin");
        let mut sink = Sink::open(&SinkSpec::Jsonl(out.clone()))
            .await
            .expect("sink");
        finish_in_flight(&mut ledger, &mut sink)
            .await
            .expect("recover");
        let text = std::fs::read_to_string(&out).expect("read");
        let want = "{\"old\":true}\n{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n";
        assert_eq!(text, want);
        assert_eq!(ledger.state.cursor, 95);
        assert!(ledger.state.in_flight.is_none());
        let reopened = Ledger::open(dir.path().join("state")).expect("reopen");
        assert_eq!(reopened.state, ledger.state, "finished on disk too");
    }

    #[tokio::test]
    async fn an_exec_batch_goes_on_after_the_count_and_flags_the_one_in_doubt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("keys");
        let cmd = format!(
            "echo \"$COORD_EVENT_KEY $COORD_REDELIVERY\" >> '{}'",
            out.display()
        );
        let mut ledger = Ledger::open(dir.path().join("state")).expect("ledger");
        ledger.begin(batch(3, None, 1)).expect("begin");
        let mut sink = Sink::open(&SinkSpec::Exec(cmd)).await.expect("sink");
        finish_in_flight(&mut ledger, &mut sink)
            .await
            .expect("recover");
        let text = std::fs::read_to_string(&out).expect("read");
        assert_eq!(text, "api:1 1\napi:2 0\n");
        assert_eq!(ledger.state.cursor, 93);
    }

    #[tokio::test]
    async fn a_batch_is_recorded_before_the_sink_sees_it_and_finished_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("obs.jsonl");
        let mut ledger = Ledger::open(dir.path().join("state")).expect("ledger");
        let mut sink = Sink::open(&SinkSpec::Jsonl(out.clone()))
            .await
            .expect("sink");
        let e = Event {
            seq: 7,
            tx_id: ulid::Ulid::new(),
            ts: coord_proto::Timestamp(0),
            ingress_ts: coord_proto::Timestamp(0),
            source: "api".into(),
            session_id: Some("s".into()),
            resource: None,
            payload: coord_proto::Payload::Custom {
                kind: "x.t".into(),
                body: Default::default(),
            },
        };
        hand_batch(&mut ledger, &mut sink, &[&e], 9, None)
            .await
            .expect("hand");
        assert_eq!(
            ledger.state.cursor, 9,
            "the cursor passes unmatched events too"
        );
        assert_eq!(
            std::fs::read_to_string(&out).expect("read").lines().count(),
            1
        );
    }
}
