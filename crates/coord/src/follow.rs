//! Following the log from the CLI (`coord events`, `coord inbox read
//! --follow`) across a daemon that goes away.
//!
//! A [`Follower`] keeps the seq of the last item it handed out and the
//! identity of the log it reads. When the stream ends or breaks while
//! following, it says so on stderr; with `reconnect` it waits for the
//! daemon to come back and resumes after that seq on the same log (a
//! daemon that returns with another log is refused by the daemon with
//! `log_mismatch`, never silently read from the wrong place), without it
//! the follow fails with exit code 3.
//!
//! It must not decide what to print: callers get [`Line`]s as the daemon
//! sent them.

use crate::output::{code, Exit};
use anyhow::{anyhow, Result};
use coord_client::{Client, EventStream, Line};
use coord_proto::api::EventsQuery;
use coord_proto::api::StreamItem;
use std::time::Duration;

/// Longest pause between two attempts to reach a daemon that went away.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where a follow starts.
#[derive(Debug, Clone)]
pub enum Since {
    /// From the oldest retained event.
    Start,
    /// From the head when the follow starts.
    Now,
    /// After this seq.
    After(u64),
}

impl std::str::FromStr for Since {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "start" => Ok(Since::Start),
            "now" => Ok(Since::Now),
            n => n
                .parse()
                .map(Since::After)
                .map_err(|_| format!("{n:?}: expected a seq number, start or now")),
        }
    }
}

/// A resumable follow of the events stream.
pub struct Follower {
    client: Client,
    /// Filters (kinds, session, resource); the cursor fields are set per
    /// connection.
    filters: EventsQuery,
    /// `snapshot=true` until the first connection opened.
    snapshot: bool,
    follow: bool,
    reconnect: bool,
    /// Seq of the last event or snapshot handed out; `None` before the
    /// first (then a reconnect starts where the first connection did).
    cursor: Option<u64>,
    start: Since,
    log_id: Option<String>,
    stream: Option<EventStream>,
}

impl Follower {
    /// A follower of `client`'s log; nothing is sent until [`Self::next`].
    ///
    /// `filters` selects kinds, a session or a resource; its cursor
    /// fields are ignored.
    pub fn new(client: Client, start: Since, filters: EventsQuery) -> Self {
        Follower {
            client,
            filters,
            snapshot: false,
            follow: true,
            reconnect: false,
            cursor: None,
            start,
            log_id: None,
            stream: None,
        }
    }

    /// Starts with a snapshot of the view.
    pub fn with_snapshot(mut self, on: bool) -> Self {
        self.snapshot = on;
        self
    }

    /// `false`: stop at the head as it was when the stream opened.
    pub fn with_follow(mut self, on: bool) -> Self {
        self.follow = on;
        self
    }

    /// Wait for a daemon that went away and resume after the last seq.
    pub fn with_reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

    fn query(&self) -> EventsQuery {
        let since = match (self.cursor, &self.start) {
            (Some(seq), _) => seq.to_string(),
            (None, Since::Start) => "start".into(),
            (None, Since::Now) => "now".into(),
            (None, Since::After(n)) => n.to_string(),
        };
        EventsQuery {
            since: Some(since),
            log_id: self.log_id.clone(),
            snapshot: self.snapshot.then_some(true),
            follow: (!self.follow).then_some(false),
            ..self.filters.clone()
        }
    }

    /// Opens the stream; for `since=now` the head is pinned first, so a
    /// reconnect before any event resumes from there, not from a later
    /// "now".
    async fn open(&mut self) -> Result<(), coord_client::ClientError> {
        if self.cursor.is_none() && matches!(self.start, Since::Now) {
            let st = self.client.status().await?;
            self.cursor = Some(st.head_seq);
            self.log_id.get_or_insert(st.log_id);
        }
        let stream = self.client.events(&self.query()).await?;
        // A reconnect resumes after the last seq; it never asks for the
        // snapshot again.
        self.snapshot = false;
        if self.log_id.is_none() {
            self.log_id = stream.log_id().map(str::to_string);
        }
        self.stream = Some(stream);
        Ok(())
    }

    /// The next line, or `None` when a non-following stream reached its
    /// end.
    ///
    /// # Errors
    /// Anything the daemon refuses (`compacted`, `cursor_ahead`,
    /// `log_mismatch`, …); a daemon that went away, unless reconnecting
    /// (then this waits until it is back).
    pub async fn next(&mut self) -> Result<Option<Line>> {
        let mut backoff = coord_client::Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        let mut lost = false;
        loop {
            if self.stream.is_none() {
                match self.open().await {
                    Ok(()) => {
                        if lost {
                            eprintln!(
                                "coord: reconnected to {}; resuming after seq {}",
                                self.client.socket().display(),
                                self.cursor.map_or("-".into(), |c| c.to_string())
                            );
                            lost = false;
                        }
                    }
                    Err(e) if self.reconnect && e.daemon_lost() => {
                        if !lost {
                            eprintln!("coord: {e}; retrying");
                            lost = true;
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let why = match stream.next().await {
                Ok(Some(line)) => {
                    match &line.item {
                        Ok(StreamItem::Event(e)) => self.cursor = Some(e.seq),
                        Ok(StreamItem::Snapshot(s)) => self.cursor = Some(s.seq),
                        Err(_) => {}
                    }
                    return Ok(Some(line));
                }
                Ok(None) if !self.follow => return Ok(None),
                Ok(None) => "the daemon closed the stream".to_string(),
                Err(e) => format!("the stream broke: {e}"),
            };
            self.stream = None;
            let at = self
                .cursor
                .map_or_else(|| "before any event".into(), |c| format!("after seq {c}"));
            if !self.reconnect {
                return Err(anyhow!(Exit(
                    code::UNREACHABLE,
                    format!(
                        "lost the daemon at {} {at}: {why} (pass --reconnect to wait for it and resume)",
                        self.client.socket().display()
                    )
                )));
            }
            eprintln!(
                "coord: lost the daemon at {} {at}: {why}; reconnecting",
                self.client.socket().display()
            );
            lost = true;
        }
    }
}
