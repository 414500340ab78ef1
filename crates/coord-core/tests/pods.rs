//! The pod hierarchy in the state machine: every report kind and its
//! parent-side effects, repeated and out-of-order delivery, scope
//! delegation with glob locks, and its return when the child ends.

use coord_core::{apply, validate, Command, Probes, Reply, State};
use coord_proto::view::Session;
use coord_proto::{
    DeregReason, ErrorCode, Event, LifeState, LockMode, Payload, ReleaseReason, Report, Timestamp,
};
use ulid::Ulid;

/// A state and its log, driven like the writer drives them.
#[derive(Default)]
struct Pod {
    state: State,
    log: Vec<Event>,
}

impl Pod {
    /// Applies `cmd`; returns the kinds it appended, or the error code.
    fn run(&mut self, cmd: Command) -> Result<Vec<String>, String> {
        let outcome = validate(&self.state, &cmd).map_err(|r| r.0.error.code.clone())?;
        let mut kinds = Vec::new();
        for (i, d) in outcome.drafts.into_iter().enumerate() {
            if let Payload::InboxDeliver(p) = &d.payload {
                if p.kind.starts_with("report.") {
                    let body = outcome.bodies.get(&i).expect("a notification has a body");
                    assert_eq!(body.len() as u64, p.size);
                    let v: serde_json::Value = serde_json::from_str(body).expect("JSON body");
                    assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()));
                }
            }
            let e = Event {
                seq: self.state.head + 1,
                tx_id: Ulid::nil(),
                ts: Timestamp(1),
                ingress_ts: Timestamp(1),
                source: "test".into(),
                session_id: d.session_id,
                resource: d.resource,
                payload: d.payload,
            };
            kinds.push(e.kind().to_string());
            apply(&mut self.state, &e);
            self.log.push(e);
        }
        if matches!(outcome.reply, Reply::NoChange) {
            kinds.push("no_change".into());
        }
        Ok(kinds)
    }

    fn ok(&mut self, cmd: Command) -> Vec<String> {
        match self.run(cmd) {
            Ok(k) => k,
            Err(code) => panic!("refused: {code}"),
        }
    }

    fn session(&self, id: &str) -> &Session {
        &self.state.view.sessions[id]
    }

    fn inbox_kinds(&self, id: &str) -> Vec<String> {
        self.state
            .view
            .inboxes
            .get(id)
            .map(|m| m.iter().map(|m| m.kind.clone()).collect())
            .unwrap_or_default()
    }
}

fn reg(id: &str, parent: Option<&str>) -> Command {
    Command::Register {
        session_id: id.into(),
        role: String::new(),
        task: String::new(),
        blob: serde_json::json!({}),
        phase: String::new(),
        pid: None,
        parent_session: parent.map(String::from),
        ttl_ms: 30_000,
        probes: Probes::default(),
        expiry: Default::default(),
        extra: Default::default(),
    }
}

fn report(child: &str, r: Report) -> Command {
    Command::Report {
        session_id: child.into(),
        parent_session: None,
        report: r,
    }
}

fn acq(id: &str, resource: &str) -> Command {
    Command::Acquire {
        session_id: id.into(),
        resource: resource.into(),
        mode: LockMode::Exclusive,
        ttl_ms: None,
        wait: false,
        extra: Default::default(),
    }
}

fn delegate(from: &str, resource: &str, to: &str) -> Command {
    Command::Delegate {
        session_id: from.into(),
        resource: resource.into(),
        to_session: to.into(),
    }
}

/// gp <- p <- c, all local.
fn pod() -> Pod {
    let mut pod = Pod::default();
    pod.ok(reg("gp", None));
    pod.ok(reg("p", Some("gp")));
    pod.ok(reg("c", Some("p")));
    pod
}

#[test]
fn registering_a_child_enters_it_in_the_parents_registry() {
    let pod = pod();
    assert!(pod.session("gp").children.contains_key("p"));
    assert!(pod.session("p").children.contains_key("c"));
}

#[test]
fn turn_ended_and_errored_notify_the_parent() {
    let mut pod = pod();
    assert_eq!(
        pod.ok(report("c", Report::TurnEnded)),
        ["session.report", "inbox.deliver"]
    );
    pod.ok(report(
        "c",
        Report::Errored {
            message: "tests failed".into(),
        },
    ));
    assert_eq!(
        pod.inbox_kinds("p"),
        ["report.turn_ended", "report.errored"]
    );
    assert_eq!(
        pod.session("p").children["c"].last_report.as_deref(),
        Some("errored")
    );
    // The grandparent hears nothing of it.
    assert!(pod.inbox_kinds("gp").is_empty());
}

#[test]
fn shut_down_removes_the_child_and_is_idempotent() {
    let mut pod = pod();
    pod.ok(report("c", Report::ShutDown));
    assert!(!pod.session("p").children.contains_key("c"));
    assert!(pod.session("p").ended_children.contains("c"));
    // Repeated: logged, but no second notification and no error.
    assert_eq!(pod.ok(report("c", Report::ShutDown)), ["session.report"]);
    // Out of order: a turn that ends after the shutdown changes nothing.
    assert_eq!(pod.ok(report("c", Report::TurnEnded)), ["session.report"]);
    assert!(!pod.session("p").children.contains_key("c"));
    assert_eq!(pod.inbox_kinds("p"), ["report.shut_down"]);
}

#[test]
fn scope_sub_delegated_registers_the_grandchild_and_goes_up() {
    let mut pod = pod();
    let kinds = pod.ok(report(
        "c",
        Report::ScopeSubDelegated {
            sub_session: "g".into(),
            scope: vec!["src/db/**".into()],
        },
    ));
    // To p, then re-emitted by p to gp, each with its notification.
    assert_eq!(
        kinds,
        [
            "session.report",
            "inbox.deliver",
            "session.report",
            "inbox.deliver"
        ]
    );
    let g = &pod.session("p").children["g"];
    assert_eq!(g.via.as_deref(), Some("c"));
    assert_eq!(g.scope, ["src/db/**"]);
    let g_at_gp = &pod.session("gp").children["g"];
    assert_eq!(g_at_gp.via.as_deref(), Some("p"));
    // Repeated delivery leaves the registries as they were.
    let before = pod.state.view.sessions.clone();
    pod.ok(report(
        "c",
        Report::ScopeSubDelegated {
            sub_session: "g".into(),
            scope: vec!["src/db/**".into()],
        },
    ));
    assert_eq!(
        pod.session("p").children["g"],
        before["p"].children["g"].clone()
    );
    // The child's shutdown takes the grandchild it reported with it.
    pod.ok(report("c", Report::ShutDown));
    assert!(!pod.session("p").children.contains_key("g"));
}

#[test]
fn a_report_of_another_daemons_child_needs_a_local_parent() {
    let mut pod = pod();
    // Out of order: the first thing gp hears of remote-c is a delegation.
    let kinds = pod.ok(Command::Report {
        session_id: "remote-c".into(),
        parent_session: Some("gp".into()),
        report: Report::ScopeSubDelegated {
            sub_session: "remote-g".into(),
            scope: vec!["docs/**".into()],
        },
    });
    assert_eq!(kinds, ["session.report", "inbox.deliver"]);
    assert!(pod.session("gp").children.contains_key("remote-c"));
    assert_eq!(
        pod.session("gp").children["remote-g"].via.as_deref(),
        Some("remote-c")
    );
    assert_eq!(
        pod.run(Command::Report {
            session_id: "remote-c".into(),
            parent_session: Some("nobody".into()),
            report: Report::TurnEnded,
        }),
        Err("session_not_found".into())
    );
    assert_eq!(
        pod.run(report("remote-c", Report::TurnEnded)),
        Err("session_not_found".into())
    );
    // A local child may not claim another parent, nor may a root report.
    assert_eq!(
        pod.run(Command::Report {
            session_id: "c".into(),
            parent_session: Some("gp".into()),
            report: Report::TurnEnded,
        }),
        Err("not_child".into())
    );
    assert_eq!(
        pod.run(report("gp", Report::TurnEnded)),
        Err("not_child".into())
    );
}

#[test]
fn delegation_hands_down_a_scope_that_returns_when_the_child_ends() {
    let mut pod = pod();
    pod.ok(reg("stranger", None));
    pod.ok(acq("p", "src/**"));
    // Outside the parent's scope, or to a non-child: refused.
    assert_eq!(
        pod.run(delegate("p", "docs/**", "c")),
        Err("lock_not_held".into())
    );
    assert_eq!(
        pod.run(delegate("p", "src/db/**", "stranger")),
        Err("not_child".into())
    );
    let kinds = pod.ok(delegate("p", "src/db/**", "c"));
    // p has a parent: it reports the sub-delegation to gp.
    assert_eq!(kinds, ["lock.delegate", "session.report", "inbox.deliver"]);
    assert_eq!(
        pod.state.view.locks["src/db/**"].holders[0]
            .delegated_from
            .as_deref(),
        Some("p")
    );
    assert_eq!(pod.session("gp").children["c"].via.as_deref(), Some("p"));
    // Repeated: nothing new.
    assert_eq!(pod.ok(delegate("p", "src/db/**", "c")), ["no_change"]);

    // The child works inside its scope; the parent and strangers may not.
    pod.ok(acq("c", "src/db/schema.sql"));
    assert_eq!(
        pod.run(acq("p", "src/db/other.sql")),
        Err("lock_held".into())
    );
    assert_eq!(
        pod.run(acq("stranger", "src/main.rs")),
        Err("lock_held".into())
    );
    // Outside its delegated scope the child is blocked by its parent.
    assert_eq!(pod.run(acq("c", "src/main.rs")), Err("lock_held".into()));

    // The child ends: its own lock is released, the delegated one returns.
    let before = pod.log.len();
    pod.ok(Command::Dereg {
        session_id: "c".into(),
        reason: DeregReason::Explicit,
        exit_code: None,
    });
    let releases: Vec<(String, ReleaseReason)> = pod.log[before..]
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::LockRelease(r) => Some((r.resource.clone(), r.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        releases,
        [
            ("src/db/**".to_string(), ReleaseReason::Returned),
            ("src/db/schema.sql".to_string(), ReleaseReason::OwnerGone),
        ]
    );
    assert!(pod
        .inbox_kinds("p")
        .contains(&"report.shut_down".to_string()));
    pod.ok(acq("p", "src/db/other.sql"));
}

#[test]
fn a_session_end_is_a_dead_transition_and_an_abnormal_end_is_reported() {
    let mut pod = pod();
    let kinds = pod.ok(Command::ProcessExited {
        session_id: "c".into(),
        registered_seq: 3,
        exit_code: Some(2),
    });
    assert_eq!(
        kinds,
        [
            "session.state",
            "session.report",
            "inbox.deliver",
            "session.report",
            "inbox.deliver",
            "session.dereg"
        ]
    );
    match &pod.log[3].payload {
        Payload::SessionState(s) => {
            assert_eq!((s.from, s.to), (LifeState::Starting, LifeState::Dead));
            assert_eq!(s.reason, "process_exited");
        }
        other => panic!("expected session.state, got {other:?}"),
    }
    assert_eq!(pod.inbox_kinds("p"), ["report.errored", "report.shut_down"]);
}

#[test]
fn lifecycle_transitions_are_checked_against_the_view() {
    let mut pod = pod();
    let set = |from, to| Command::SetState {
        session_id: "c".into(),
        registered_seq: 3,
        from,
        to,
        reason: "test".into(),
    };
    assert_eq!(
        pod.ok(set(LifeState::Starting, LifeState::Active)),
        ["session.state"]
    );
    assert_eq!(pod.session("c").state, LifeState::Active);
    // A manager that lost a race changes nothing.
    assert_eq!(
        pod.ok(set(LifeState::Starting, LifeState::Idle)),
        ["no_change"]
    );
    assert_eq!(
        pod.run(set(LifeState::Active, LifeState::Dead)),
        Err(ErrorCode::InvalidField.as_str().into())
    );
}

#[test]
fn a_released_pattern_grants_a_waiter_of_an_overlapping_lock() {
    let mut pod = pod();
    pod.ok(reg("w", None));
    pod.ok(acq("gp", "src/**"));
    let kinds = pod.ok(Command::Acquire {
        session_id: "w".into(),
        resource: "src/a.rs".into(),
        mode: LockMode::Exclusive,
        ttl_ms: None,
        wait: true,
        extra: Default::default(),
    });
    assert_eq!(kinds, ["lock.wait"]);
    let kinds = pod.ok(Command::Release {
        session_id: "gp".into(),
        resource: "src/**".into(),
        force: false,
    });
    assert_eq!(kinds, ["lock.release", "lock.acquire"]);
    assert_eq!(pod.state.view.locks["src/a.rs"].holders[0].session_id, "w");
}
