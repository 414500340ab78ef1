//! The sentinel: turn each event into one observation and hand it to a
//! sink. The loop calls only `source.poll()` and [`handle_event`]; nothing
//! here touches the coord root.

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
    /// An append-only file.
    Jsonl(tokio::fs::File),
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
            SinkSpec::Jsonl(p) => Sink::Jsonl(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .await?,
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
        let mut line = serde_json::to_vec(obs).unwrap_or_default();
        line.push(b'\n');
        match self {
            Sink::Jsonl(f) => {
                f.write_all(&line).await?;
                f.flush().await
            }
            Sink::Stdout(out) => {
                out.write_all(&line).await?;
                out.flush().await
            }
            Sink::Exec(cmd) => {
                if let Err(e) = run_exec(cmd, &line).await {
                    tracing::warn!(command = %cmd, error = %e, "observation command failed; going on");
                }
                Ok(())
            }
        }
    }
}

async fn run_exec(cmd: &str, input: &[u8]) -> std::io::Result<()> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
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
                for e in events.iter().filter(wanted) {
                    handle_event(e, sink).await?;
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
