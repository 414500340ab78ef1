//! `coord top` drawn into ratatui's `TestBackend` from a scripted log and
//! compared with insta snapshots (`snapshots/`): each pane, the detail,
//! the help, a lost connection, an 80×24 terminal and a monochrome one.
//!
//! The log is made the way the daemon makes it: commands validated by
//! coord-core against the folded state, each draft stamped as an event.
//! Times are fixed, so a snapshot changes only when the drawing does.

use super::model::{Key, Model, Pane};
use super::render::{draw, Theme};
use coord_core::{validate, Command, ExpiryPolicy, Probes};
use coord_proto::{Event, LifeState, LockMode, Timestamp};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// 2026-11-23T09:00:00Z.
const T0: i64 = 1_795_424_400_000;

struct Script {
    model: Model,
    clock: i64,
}

impl Script {
    fn new() -> Script {
        let mut model = Model::new("/run/user/1000/coord/coord.sock", true);
        model.reset(Default::default(), 0);
        Script { model, clock: T0 }
    }

    /// Validates `cmd` on the model's state and folds its events, `secs`
    /// after the previous command.
    fn run(&mut self, secs: i64, cmd: Command) {
        self.clock += secs * 1000;
        let outcome = validate(&self.model.state, &cmd).expect("scripted command is valid");
        for d in outcome.drafts {
            let seq = self.model.state.head + 1;
            self.model.apply(Event {
                seq,
                tx_id: ulid::Ulid::from_parts(self.clock as u64, seq as u128),
                ts: Timestamp(self.clock),
                ingress_ts: Timestamp(self.clock),
                source: "api".into(),
                session_id: d.session_id,
                resource: d.resource,
                payload: d.payload,
            });
        }
    }

    fn register(&mut self, secs: i64, id: &str, role: &str, task: &str, parent: Option<&str>) {
        self.run(
            secs,
            Command::Register {
                session_id: id.into(),
                role: role.into(),
                task: task.into(),
                blob: serde_json::Value::Null,
                phase: "plan".into(),
                pid: None,
                parent_session: parent.map(str::to_string),
                ttl_ms: 60_000,
                probes: Probes::default(),
                expiry: ExpiryPolicy::default(),
                extra: Default::default(),
            },
        );
    }

    fn state(&mut self, secs: i64, id: &str, from: LifeState, to: LifeState) {
        let registered_seq = self.model.state.view.sessions[id].registered_seq;
        self.run(
            secs,
            Command::SetState {
                session_id: id.into(),
                registered_seq,
                from,
                to,
                reason: if to == LifeState::NeedsInput {
                    "claude:PermissionRequest: permission: Write src/a.rs".into()
                } else {
                    "scripted".into()
                },
            },
        );
    }

    fn acquire(&mut self, secs: i64, id: &str, resource: &str, wait: bool) {
        self.run(
            secs,
            Command::Acquire {
                session_id: id.into(),
                resource: resource.into(),
                mode: LockMode::Exclusive,
                ttl_ms: None,
                wait,
                extra: Default::default(),
            },
        );
    }

    /// A fleet: a lead with two workers (one waiting for a lock the other
    /// holds, one needing input), a reviewer with mail, an order, an ended
    /// session.
    fn fleet() -> Script {
        let mut s = Script::new();
        s.register(0, "lead", "lead", "T-100", None);
        s.register(1, "w1", "worker", "T-101", Some("lead"));
        s.register(1, "w2", "worker", "T-102", Some("lead"));
        s.register(1, "rev", "reviewer", "T-100", None);
        s.register(1, "gone", "worker", "T-9", None);
        s.state(2, "w1", LifeState::Starting, LifeState::Active);
        s.acquire(1, "w1", "/repo/src/db.rs", false);
        s.acquire(1, "w2", "/repo/src/db.rs", true);
        s.state(5, "w2", LifeState::Starting, LifeState::NeedsInput);
        s.run(
            2,
            Command::Deliver {
                to_session: "rev".into(),
                msg_id: "m-1".into(),
                kind: "review".into(),
                from_session: Some("w1".into()),
                size: 42,
                extra: Default::default(),
            },
        );
        s.run(
            1,
            Command::Issue {
                order_id: "01JORDER0000000000000000001".into(),
                assignee: "rev".into(),
                ticket: "T-100".into(),
                from_session: Some("lead".into()),
                payload: None,
                extra: Default::default(),
            },
        );
        s.run(
            3,
            Command::Dereg {
                session_id: "gone".into(),
                reason: coord_proto::DeregReason::Explicit,
                exit_code: Some(0),
            },
        );
        s
    }

    fn screen(&self, w: u16, h: u16, color: bool) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        t.draw(|f| {
            draw(
                f,
                &self.model,
                Timestamp(self.clock + 10_000),
                Theme { color },
            )
        })
        .expect("draw");
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..h {
            let mut line = String::new();
            for x in 0..w {
                line.push_str(buf[(x, y)].symbol());
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[test]
fn sessions_pane_at_80x24() {
    let s = Script::fleet();
    insta::assert_snapshot!(s.screen(80, 24, true));
}

#[test]
fn sessions_pane_in_a_large_terminal_as_a_tree() {
    let mut s = Script::fleet();
    s.model.key(Key::Char('t'));
    insta::assert_snapshot!(s.screen(140, 30, true));
}

#[test]
fn locks_pane() {
    let mut s = Script::fleet();
    s.model.key(Key::Char('2'));
    assert_eq!(s.model.pane, Pane::Locks);
    insta::assert_snapshot!(s.screen(100, 12, true));
}

#[test]
fn orders_and_inboxes_pane() {
    let mut s = Script::fleet();
    s.model.key(Key::Char('3'));
    insta::assert_snapshot!(s.screen(100, 14, true));
}

#[test]
fn events_pane_filtered_and_paused() {
    let mut s = Script::fleet();
    for k in [Key::Char('/'), Key::Char('l'), Key::Char('o')] {
        s.model.key(k);
    }
    for c in "ck.*".chars() {
        s.model.key(Key::Char(c));
    }
    s.model.key(Key::Enter);
    insta::assert_snapshot!("events_filtered", s.screen(100, 12, true));
    s.model.key(Key::Char('p'));
    s.acquire(1, "rev", "/repo/README.md", false);
    let paused = s.screen(100, 12, true);
    assert!(
        !paused.contains("README"),
        "a paused tail shows nothing new"
    );
    s.model.key(Key::Char('p'));
    assert!(s.screen(100, 12, true).contains("README"));
}

#[test]
fn session_detail_and_help() {
    let mut s = Script::fleet();
    // needs_input floats to the top: w2 is the first row.
    s.model.key(Key::Enter);
    assert_eq!(s.model.detail.as_deref(), Some("w2"));
    insta::assert_snapshot!("detail", s.screen(100, 20, true));
    s.model.key(Key::Esc);
    s.model.key(Key::Char('?'));
    insta::assert_snapshot!("help", s.screen(80, 24, true));
}

#[test]
fn a_lost_daemon_shows_a_banner_until_an_event_arrives() {
    let mut s = Script::fleet();
    s.model.lost(s.clock, "the daemon closed the stream".into());
    let screen = s.screen(80, 24, true);
    assert!(screen.contains("DISCONNECTED 10s ago"), "{screen}");
    s.register(1, "late", "worker", "T-7", None);
    assert!(!s.screen(80, 24, true).contains("DISCONNECTED"));
}

#[test]
fn monochrome_keeps_every_state_apart() {
    let s = Script::fleet();
    let mut t = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    t.draw(|f| draw(f, &s.model, Timestamp(s.clock), Theme { color: false }))
        .expect("draw");
    let buf = t.backend().buffer().clone();
    // No colour anywhere…
    for cell in buf.content() {
        assert_eq!(cell.fg, ratatui::style::Color::Reset, "{cell:?}");
    }
    // …and each state still has its own glyph.
    let screen = s.screen(80, 24, false);
    insta::assert_snapshot!("monochrome", screen);
    for glyph in ["!", "●", "+", "✗"] {
        assert!(screen.contains(glyph), "{glyph} missing:\n{screen}");
    }
}

#[test]
fn the_bell_rings_once_per_session_entering_needs_input() {
    let mut s = Script::fleet();
    assert_eq!(s.model.bells, 1);
    s.model.bells = 0;
    s.model.key(Key::Char('b'));
    s.state(1, "w1", LifeState::Active, LifeState::NeedsInput);
    assert_eq!(s.model.bells, 0, "b turned the bell off");
}

#[test]
fn the_model_folds_exactly_like_the_daemon() {
    // Replaying the same events into a fresh state gives the same view.
    let s = Script::fleet();
    let mut replay = coord_core::State::default();
    for e in &s.model.tail {
        coord_core::apply(&mut replay, e);
    }
    assert_eq!(replay.view, s.model.state.view);
    // Snapshot + the rest equals the whole fold.
    let mut half = Script::new();
    let mid = s.model.tail.len() / 2;
    let mut first = coord_core::State::default();
    for e in s.model.tail.iter().take(mid) {
        coord_core::apply(&mut first, e);
    }
    half.model.reset(first.view.clone(), first.head);
    for e in s.model.tail.iter().skip(mid) {
        half.model.apply(e.clone());
    }
    assert_eq!(half.model.state.view, s.model.state.view);
}

/// The HB column shows the last renewal of the lease, which bare
/// heartbeats make without an event, not only the last logged heartbeat.
#[test]
fn hb_shows_the_last_renewal_not_the_last_logged_heartbeat() {
    let mut s = Script::new();
    s.register(0, "quiet", "worker", "TOD-1", None);
    s.clock += 120_000;
    let sid = "quiet".to_string();
    let last_logged = s.model.state.view.sessions[&sid].last_heartbeat;
    let renewed = Timestamp(s.clock);
    s.model.leases.insert(
        sid.clone(),
        coord_proto::view::Lease {
            renewed_at: renewed,
            expires_at: Timestamp(s.clock + 30_000),
        },
    );
    let session = s.model.state.view.sessions[&sid].clone();
    assert_eq!(s.model.renewed_at(&session), renewed);
    assert!(renewed > last_logged);
    // Drawn 10 s after the renewal: "10s", not the two minutes since the
    // registration.
    let screen = s.screen(100, 10, false);
    let hb = |screen: &str| -> String {
        let row = screen.lines().find(|l| l.contains("quiet")).expect("row");
        // + SESSION ROLE TASK PHASE STATE FOR HB LOCKS MAIL
        row.split_whitespace().nth(7).expect("HB cell").to_string()
    };
    assert_eq!(hb(&screen), "10s", "{screen}");
    s.model.leases.clear();
    assert_eq!(hb(&s.screen(100, 10, false)), "2m");
}

#[test]
fn approvals_pane_decides_with_a_key_per_decision() {
    let mut s = Script::fleet();
    let sid = s
        .model
        .state
        .view
        .sessions
        .keys()
        .next()
        .expect("a session")
        .clone();
    for (i, what) in ["src/db.rs", "src/lib.rs"].iter().enumerate() {
        s.run(
            2,
            Command::RequestApproval {
                session_id: sid.clone(),
                request: coord_proto::approval::ApprovalRequest {
                    approval_id: format!("ap-000000000000000{i}"),
                    agent: "claude".into(),
                    tool: "Write".into(),
                    summary: format!("Write {what}"),
                    paths: vec![what.to_string()],
                    command: None,
                    cwd: None,
                    tool_use_id: None,
                    input_bytes: 10,
                },
                policy: None,
            },
        );
    }
    s.model.key(Key::Char('5'));
    assert_eq!(s.model.pane, Pane::Approvals);
    let screen = s.screen(100, 12, true);
    assert!(screen.contains("approvals 2 (5)"), "{screen}");
    insta::assert_snapshot!(screen);
    s.model.key(Key::Char('a'));
    s.model.key(Key::Down);
    s.model.key(Key::Char('d'));
    for c in "use src2/".chars() {
        s.model.key(Key::Char(c));
    }
    assert!(s
        .screen(100, 12, true)
        .contains("deny, because: use src2/_"));
    s.model.key(Key::Enter);
    let sent: Vec<(String, coord_proto::api::Verdict, String)> = s
        .model
        .decisions
        .drain(..)
        .map(|d| (d.approval_id, d.verdict, d.reason))
        .collect();
    assert_eq!(
        sent,
        [
            (
                "ap-0000000000000000".into(),
                coord_proto::api::Verdict::Allow,
                String::new()
            ),
            (
                "ap-0000000000000001".into(),
                coord_proto::api::Verdict::Deny,
                "use src2/".into()
            ),
        ]
    );
    // Keys of other panes still work from here.
    s.model.key(Key::Char('1'));
    assert_eq!(s.model.pane, Pane::Sessions);
}
