//! What `coord top` shows, kept by the daemon's own fold.
//!
//! [`Model`] owns a [`coord_core::State`] rebuilt from a snapshot and moved
//! forward by [`coord_core::apply`] for every event of the stream — the same
//! pure function the daemon runs, so the view cannot disagree with it — plus
//! what only a viewer needs: when each session entered its state, the tail
//! of recent events, the connection, and the interaction state (pane,
//! selection, filter, pause). It does no I/O and reads no clock: callers
//! pass `now`, so rendering is a pure function of the model (and tested
//! with ratatui's `TestBackend`).

use coord_core::State;
use coord_proto::view::{EndedSession, Session};
use coord_proto::{Event, LifeState, Payload, Timestamp};
use std::collections::{BTreeMap, VecDeque};

/// Events kept for the tail pane.
pub const TAIL: usize = 1_000;

/// The panes, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// Sessions (the default).
    Sessions,
    /// Locks and their queues.
    Locks,
    /// Dispatch orders and inboxes.
    Work,
    /// The live tail of events.
    Events,
    /// Pending approvals, with a key per decision.
    Approvals,
}

impl Pane {
    /// Every pane, in tab order.
    pub const ALL: [Pane; 5] = [
        Pane::Sessions,
        Pane::Locks,
        Pane::Work,
        Pane::Events,
        Pane::Approvals,
    ];

    /// Its tab title.
    pub fn title(self) -> &'static str {
        match self {
            Pane::Sessions => "Sessions",
            Pane::Locks => "Locks",
            Pane::Work => "Orders & inboxes",
            Pane::Events => "Events",
            Pane::Approvals => "Approvals",
        }
    }
}

/// The connection to the daemon, as the view last knew it.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Not connected yet.
    Connecting,
    /// Following the stream.
    Live,
    /// Lost at this time (ms since the epoch), for this reason.
    Lost {
        /// When.
        since_ms: i64,
        /// Why.
        why: String,
    },
}

/// What a key press does (decoded from the terminal by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A character.
    Char(char),
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Tab.
    Tab,
    /// Shift-Tab.
    BackTab,
    /// Up arrow.
    Up,
    /// Down arrow.
    Down,
    /// Backspace.
    Backspace,
}

/// What the caller must do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing visible changed.
    Same,
    /// Redraw.
    Redraw,
    /// Leave.
    Quit,
}

/// The whole view.
#[derive(Debug, Clone)]
pub struct Model {
    /// The folded state (the daemon's view after `state.head`).
    pub state: State,
    /// The socket or address shown in the title.
    pub origin: String,
    /// The recent events, oldest first.
    pub tail: VecDeque<Event>,
    /// The connection.
    pub link: Link,
    /// The pane in front.
    pub pane: Pane,
    /// Selected row of the sessions pane.
    pub selected: usize,
    /// The session whose detail is open.
    pub detail: Option<String>,
    /// The help overlay is open.
    pub help: bool,
    /// Sessions shown as a tree (children under their parent).
    pub tree: bool,
    /// The events tail is paused (new events are still folded, not shown).
    pub paused: bool,
    /// Seq the tail shows up to while paused.
    pub paused_at: u64,
    /// The events filter (kind glob, session or resource), when set.
    pub filter: Option<String>,
    /// The filter being typed.
    pub editing: Option<String>,
    /// Ring the bell when a session enters `needs_input`.
    pub bell: bool,
    /// Bells owed since the caller last took them.
    pub bells: u32,
    /// The open detail's session and its events read from the log (the
    /// caller fetches them when a detail opens; newer ones come from the
    /// tail).
    pub detail_events: Option<(String, Vec<Event>)>,
    /// Each session's lease as the daemon last reported it (`GET
    /// /v1/sessions`): bare renewals are not events, so only this tells
    /// when a lease was last renewed.
    pub leases: BTreeMap<String, coord_proto::view::Lease>,
    /// Selected row of the approvals pane.
    pub approval_selected: usize,
    /// A deny's reason being typed.
    pub reason: Option<String>,
    /// Decisions made with keys, for the caller to send.
    pub decisions: Vec<super::approvals::Decision>,
    /// How the last decision went (the caller's word).
    pub notice: Option<String>,
}

impl Model {
    /// An empty model, waiting for its first snapshot.
    pub fn new(origin: &str, bell: bool) -> Model {
        Model {
            state: State::default(),
            origin: origin.to_string(),
            tail: VecDeque::new(),
            link: Link::Connecting,
            pane: Pane::Sessions,
            selected: 0,
            detail: None,
            help: false,
            tree: false,
            paused: false,
            paused_at: 0,
            filter: None,
            editing: None,
            bell,
            bells: 0,
            detail_events: None,
            leases: BTreeMap::new(),
            approval_selected: 0,
            reason: None,
            decisions: Vec::new(),
            notice: None,
        }
    }

    /// When `s`'s lease was last renewed: the later of its last logged
    /// heartbeat and the renewal the daemon last reported (the HB column).
    pub fn renewed_at(&self, s: &Session) -> Timestamp {
        match self.leases.get(&s.session_id) {
            Some(l) if l.renewed_at > s.last_heartbeat => l.renewed_at,
            _ => s.last_heartbeat,
        }
    }

    /// Starts again from a snapshot at `seq` (first connection, a
    /// compacted cursor, another log). The tail is kept: it is history.
    pub fn reset(&mut self, view: coord_proto::view::View, seq: u64) {
        self.state = State::from_view(view, seq);
        self.link = Link::Live;
    }

    /// Folds one event. Events at or below the head are ignored (a resume
    /// never repeats one, but a model must not double-apply).
    pub fn apply(&mut self, e: Event) {
        if e.seq <= self.state.head {
            return;
        }
        if let Payload::SessionState(p) = &e.payload {
            if p.to == LifeState::NeedsInput && self.bell {
                self.bells += 1;
            }
        }
        coord_core::apply(&mut self.state, &e);
        self.tail.push_back(e);
        while self.tail.len() > TAIL {
            self.tail.pop_front();
        }
        self.link = Link::Live;
    }

    /// The connection was lost at `now_ms`.
    pub fn lost(&mut self, now_ms: i64, why: String) {
        if !matches!(self.link, Link::Lost { .. }) {
            self.link = Link::Lost {
                since_ms: now_ms,
                why,
            };
        }
    }

    /// Live sessions in display order: those that need input first, then
    /// stale, then the rest by id; as a tree, each child right under its
    /// parent (with its depth).
    pub fn sessions(&self) -> Vec<(usize, &Session)> {
        let rank = |s: &Session| match s.state {
            LifeState::NeedsInput => 0,
            LifeState::Stale => 1,
            _ => 2,
        };
        let mut flat: Vec<&Session> = self.state.view.sessions.values().collect();
        flat.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.session_id.cmp(&b.session_id)));
        if !self.tree {
            return flat.into_iter().map(|s| (0, s)).collect();
        }
        let live = &self.state.view.sessions;
        let mut out = Vec::new();
        let roots = flat.iter().filter(|s| {
            s.parent_session
                .as_ref()
                .is_none_or(|p| !live.contains_key(p))
        });
        for r in roots {
            self.push_tree(r, 0, &flat, &mut out);
        }
        out
    }

    fn push_tree<'a>(
        &'a self,
        s: &'a Session,
        depth: usize,
        all: &[&'a Session],
        out: &mut Vec<(usize, &'a Session)>,
    ) {
        out.push((depth, s));
        if depth > 16 {
            return;
        }
        for c in all
            .iter()
            .filter(|c| c.parent_session.as_deref() == Some(s.session_id.as_str()))
        {
            self.push_tree(c, depth + 1, all, out);
        }
    }

    /// Sessions that ended recently, newest first (shown dead).
    pub fn ended(&self) -> impl Iterator<Item = &EndedSession> {
        self.state.ended.iter().rev().take(8)
    }

    /// The session under the cursor.
    pub fn selected_session(&self) -> Option<String> {
        self.sessions()
            .get(self.selected)
            .map(|(_, s)| s.session_id.clone())
    }

    /// The tail as the events pane shows it: filtered, and frozen at the
    /// pause.
    pub fn visible_tail(&self) -> Vec<&Event> {
        self.tail
            .iter()
            .filter(|e| !self.paused || e.seq <= self.paused_at)
            .filter(|e| match &self.filter {
                None => true,
                Some(f) => matches_filter(e, f),
            })
            .collect()
    }

    /// Unacked messages of `session`.
    pub fn unread(&self, session: &str) -> usize {
        self.state.view.inboxes.get(session).map_or(0, Vec::len)
    }

    /// Locks `session` holds.
    pub fn held(&self, session: &str) -> Vec<String> {
        self.state
            .view
            .locks
            .values()
            .filter(|l| l.holders.iter().any(|h| h.session_id == session))
            .map(|l| l.resource.clone())
            .collect()
    }

    /// Handles a key.
    pub fn key(&mut self, k: Key) -> Outcome {
        if let Some(text) = self.editing.as_mut() {
            match k {
                Key::Enter => {
                    let f = std::mem::take(text);
                    self.filter = (!f.is_empty()).then_some(f);
                    self.editing = None;
                }
                Key::Esc => self.editing = None,
                Key::Backspace => {
                    text.pop();
                }
                Key::Char(c) => text.push(c),
                _ => return Outcome::Same,
            }
            return Outcome::Redraw;
        }
        if self.pane == Pane::Approvals && self.detail.is_none() && !self.help {
            if let Some(o) = super::approvals::key(self, k) {
                return o;
            }
        }
        if self.help {
            self.help = false;
            return match k {
                Key::Char('q') => Outcome::Quit,
                _ => Outcome::Redraw,
            };
        }
        match k {
            Key::Char('q') => return Outcome::Quit,
            Key::Char('?') => self.help = true,
            Key::Esc if self.detail.is_some() => self.detail = None,
            Key::Esc if self.filter.is_some() => self.filter = None,
            Key::Tab => self.pane = next_pane(self.pane, 1),
            Key::BackTab => self.pane = next_pane(self.pane, Pane::ALL.len() - 1),
            Key::Char(c @ '1'..='5') => {
                self.pane = Pane::ALL[(c as usize) - ('1' as usize)];
                self.detail = None;
            }
            Key::Up | Key::Char('k') => self.selected = self.selected.saturating_sub(1),
            Key::Down | Key::Char('j') => {
                let n = self.state.view.sessions.len();
                self.selected = (self.selected + 1).min(n.saturating_sub(1));
            }
            Key::Enter if self.pane == Pane::Sessions => self.detail = self.selected_session(),
            Key::Char('t') => self.tree = !self.tree,
            Key::Char('b') => self.bell = !self.bell,
            Key::Char('p') => {
                self.paused = !self.paused;
                self.paused_at = self.state.head;
            }
            Key::Char('/') => {
                self.pane = Pane::Events;
                self.editing = Some(self.filter.clone().unwrap_or_default());
            }
            _ => return Outcome::Same,
        }
        Outcome::Redraw
    }

    /// The events of `session` to show in its detail: those read from the
    /// log when it opened, then those of the tail after them.
    pub fn session_events(&self, session: &str) -> Vec<&Event> {
        let mut out: Vec<&Event> = Vec::new();
        let mut last = 0;
        if let Some((sid, events)) = &self.detail_events {
            if sid == session {
                out.extend(events.iter());
                last = events.last().map_or(0, |e| e.seq);
            }
        }
        out.extend(
            self.tail
                .iter()
                .filter(|e| e.seq > last && matches_filter(e, session)),
        );
        out
    }

    /// How long `session` has been in its state at `now` (ms): since the
    /// fold's `state_since`, or its registration while it is `starting`.
    pub fn in_state_ms(&self, session: &str, now: Timestamp) -> Option<u64> {
        self.state
            .view
            .sessions
            .get(session)
            .map(|s| s.state_since.unwrap_or(s.registered_at))
            .map(|at| (now.as_millis() - at.as_millis()).max(0) as u64)
    }
}

fn next_pane(p: Pane, step: usize) -> Pane {
    let i = Pane::ALL.iter().position(|x| *x == p).unwrap_or(0);
    Pane::ALL[(i + step) % Pane::ALL.len()]
}

/// The events filter: a kind glob (`lock.*`), or a session id, or a
/// resource.
pub fn matches_filter(e: &Event, f: &str) -> bool {
    glob(f, e.kind()) || e.session_id.as_deref() == Some(f) || e.resource.as_deref() == Some(f)
}

/// `*` matches any run of characters; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("lock.*", "lock.acquire"));
        assert!(glob("*.register", "session.register"));
        assert!(glob("*", "x"));
        assert!(!glob("lock.*", "session.register"));
        assert!(glob("session.register", "session.register"));
        assert!(glob("s*r*r", "session.register"));
    }
}
