//! Property tests of the state machine (DESIGN §5, "functional core"):
//! for random command sequences the live state equals the fold of the log,
//! folds are deterministic, validate never panics, and the lock invariants
//! (one exclusive holder, FIFO queue, no holder without a session) hold
//! after every command.

use coord_core::{apply, validate, Command, Reply, State};
use coord_proto::pattern::overlap;
use coord_proto::{
    DeregReason, Event, LifeState, LockMode, Payload, Report, Timestamp, WaitCancelReason,
};
use proptest::prelude::*;
use ulid::Ulid;

fn sid() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0u8..5).prop_map(|i| format!("s{i}")),
        1 => any::<String>(),
        1 => Just("../etc".to_string()),
    ]
}

fn resource() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0u8..3).prop_map(|i| format!("src/r{i}.rs")),
        3 => prop_oneof![
            Just("src/**".to_string()),
            Just("src/*.rs".to_string()),
            Just("src/r?.rs".to_string()),
            Just("**".to_string()),
            Just("docs/**".to_string()),
            Just("**/r1.rs".to_string()),
            Just("*.rs".to_string()),
            Just("src/r*".to_string()),
        ],
        1 => any::<String>(),
    ]
}

fn life() -> impl Strategy<Value = LifeState> {
    prop_oneof![
        Just(LifeState::Starting),
        Just(LifeState::Active),
        Just(LifeState::Idle),
        Just(LifeState::NeedsInput),
        Just(LifeState::Stale),
        Just(LifeState::Dead),
    ]
}

fn report() -> impl Strategy<Value = Report> {
    prop_oneof![
        Just(Report::TurnEnded),
        Just(Report::ShutDown),
        "[a-z ]{0,8}".prop_map(|message| Report::Errored { message }),
        (sid(), resource()).prop_map(|(sub_session, r)| Report::ScopeSubDelegated {
            sub_session,
            scope: vec![r],
        }),
    ]
}

fn mode() -> impl Strategy<Value = LockMode> {
    prop_oneof![Just(LockMode::Exclusive), Just(LockMode::Shared)]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            sid(),
            proptest::option::of(1u32..100),
            500u64..100_000,
            proptest::option::of(sid())
        )
            .prop_map(|(s, pid, ttl, parent)| {
                Command::Register {
                    session_id: s,
                    role: "worker".into(),
                    task: "t".into(),
                    blob: serde_json::json!({}),
                    phase: "starting".into(),
                    pid,
                    parent_session: parent,
                    ttl_ms: ttl,
                    probes: Default::default(),
                    expiry: Default::default(),
                    extra: Default::default(),
                }
            }),
        (sid(), proptest::option::of(sid()), report()).prop_map(|(s, parent, report)| {
            Command::Report {
                session_id: s,
                parent_session: parent,
                report,
            }
        }),
        (sid(), resource(), sid()).prop_map(|(s, r, to)| Command::Delegate {
            session_id: s,
            resource: r,
            to_session: to,
        }),
        (sid(), 0u64..40, life(), life()).prop_map(|(s, seq, from, to)| Command::SetState {
            session_id: s,
            registered_seq: seq,
            from,
            to,
            reason: "test".into(),
        }),
        (sid(), 0u64..40).prop_map(|(s, seq)| Command::ProbeError {
            session_id: s,
            registered_seq: seq,
            probe: "tmux".into(),
            message: "boom".into(),
        }),
        (sid(), 0u64..40).prop_map(|(s, seq)| Command::RuntimeGone {
            session_id: s,
            registered_seq: seq,
            reason: "gone".into(),
        }),
        (sid(), proptest::option::of("[a-c]"), any::<bool>()).prop_map(|(s, phase, hook)| {
            Command::Heartbeat {
                session_id: s,
                phase,
                at: Timestamp(5),
                log_always: false,
                reported: hook.then(|| coord_proto::ReportedState {
                    state: coord_proto::LifeState::NeedsInput,
                    reason: "Write a.rs".into(),
                    source: "claude:PermissionRequest".into(),
                }),
            }
        }),
        sid().prop_map(|s| Command::Dereg {
            session_id: s,
            reason: DeregReason::Explicit,
            exit_code: None
        }),
        (sid(), 0u64..40, any::<bool>()).prop_map(|(s, seq, alive)| Command::ExpireLease {
            session_id: s,
            registered_seq: seq,
            process_alive: alive
        }),
        (sid(), 0u64..40).prop_map(|(s, seq)| Command::ProcessExited {
            session_id: s,
            registered_seq: seq,
            exit_code: Some(9)
        }),
        (
            sid(),
            resource(),
            mode(),
            any::<bool>(),
            proptest::option::of(1u64..10)
        )
            .prop_map(|(s, r, m, wait, ttl)| Command::Acquire {
                session_id: s,
                resource: r,
                mode: m,
                ttl_ms: ttl,
                wait,
                extra: Default::default(),
            }),
        (sid(), resource(), any::<bool>()).prop_map(|(s, r, force)| Command::Release {
            session_id: s,
            resource: r,
            force
        }),
        (sid(), resource(), 0u64..40).prop_map(|(s, r, seq)| Command::ExpireLock {
            resource: r,
            session_id: s,
            acquired_seq: seq
        }),
        (sid(), resource()).prop_map(|(s, r)| Command::CancelWait {
            resource: r,
            session_id: s,
            reason: WaitCancelReason::Timeout
        }),
        Just(Command::CancelAllWaits { daemon: None }),
        (sid(), sid(), "[a-c]").prop_map(|(to, from, m)| Command::Deliver {
            to_session: to,
            msg_id: m,
            kind: "note".into(),
            from_session: Some(from),
            size: 3,
            extra: Default::default(),
        }),
        (sid(), "[a-c]").prop_map(|(s, m)| Command::AckMessage {
            session_id: s,
            msg_id: m
        }),
        ("o[0-2]", sid(), proptest::option::of(sid())).prop_map(|(o, a, from)| Command::Issue {
            order_id: o,
            assignee: a,
            ticket: "T-1".into(),
            from_session: from,
            payload: None,
            extra: Default::default(),
        }),
        ("o[0-2]", sid()).prop_map(|(o, s)| Command::AckOrder {
            order_id: o,
            session_id: s
        }),
        ("o[0-2]", sid()).prop_map(|(o, s)| Command::Complete {
            order_id: o,
            session_id: s,
            result: None
        }),
        ("o[0-2]", proptest::option::of(sid())).prop_map(|(o, by)| Command::CancelOrder {
            order_id: o,
            by,
            reason: String::new()
        }),
        ("o[0-2]", proptest::option::of(sid()), sid()).prop_map(|(o, by, a)| {
            Command::ReassignOrder {
                order_id: o,
                by,
                assignee: a,
            }
        }),
        ("ap-[0-2]", sid(), "(Write|Bash)", any::<bool>()).prop_map(|(a, s, tool, rules)| {
            Command::RequestApproval {
                session_id: s,
                request: coord_proto::approval::ApprovalRequest {
                    approval_id: a,
                    agent: "claude".into(),
                    tool,
                    summary: "Write tmp/x".into(),
                    paths: vec!["tmp/x".into()],
                    command: None,
                    cwd: None,
                    tool_use_id: None,
                    input_bytes: 2,
                },
                policy: rules.then(|| {
                    coord_core::policy::Policy::parse(
                        "[[rule]]\nname='scratch'\ndecision='allow'\ntool='Write'\npath='tmp/**'\n",
                    )
                    .expect("policy")
                }),
            }
        }),
        ("ap-[0-2]", 0usize..5, proptest::option::of(sid())).prop_map(|(a, d, coordinator)| {
            use coord_proto::approval::Decision::*;
            Command::DecideApproval {
                approval_id: a,
                decision: [Allow, Deny, Ask, Withdrawn, Expired][d],
                reason: String::new(),
                by: "t".into(),
                via: "socket".into(),
                as_session: coordinator,
                requester: None,
            }
        }),
        (sid(), proptest::option::of("ap-[0-2]"), 0i64..40).prop_map(|(s, a, since)| {
            Command::Notify {
                session_id: s,
                approval_id: a,
                since: Timestamp(since),
                waited_ms: 30_000,
            }
        }),
        ("[a-z.]{0,6}", proptest::option::of(sid())).prop_map(|(k, s)| Command::Custom {
            kind: format!("x.{k}"),
            body: serde_json::Map::new(),
            session_id: s,
            resource: None
        }),
    ]
}

/// Runs commands like the daemon's writer: validate, stamp, apply.
fn run(cmds: &[Command]) -> (State, Vec<Event>) {
    let mut state = State::default();
    let mut log = Vec::new();
    for cmd in cmds {
        run_one(&mut state, &mut log, cmd);
        check_invariants(&state);
    }
    (state, log)
}

/// One command, run again while it answers `Unfinished` (as the writer
/// does); the number of commits it took.
fn run_one(state: &mut State, log: &mut Vec<Event>, cmd: &Command) -> usize {
    let mut commits = 0;
    loop {
        let Ok(outcome) = validate(state, cmd) else {
            return commits;
        };
        commits += 1;
        for d in outcome.drafts {
            let e = Event {
                seq: state.head + 1,
                tx_id: Ulid::nil(),
                ts: Timestamp(state.head as i64),
                ingress_ts: Timestamp(state.head as i64),
                source: "test".into(),
                session_id: d.session_id,
                resource: d.resource,
                payload: d.payload,
            };
            apply(state, &e);
            log.push(e);
        }
        if outcome.reply != Reply::Unfinished {
            return commits;
        }
    }
}

fn fold(log: &[Event]) -> State {
    let mut s = State::default();
    for e in log {
        apply(&mut s, e);
    }
    s
}

fn check_invariants(state: &State) {
    // A notice is never repeated: each approval and each needs_input spell
    // is notified at most once (validate refuses a second one).
    for a in state.view.approvals.values() {
        if a.notified {
            let again = Command::Notify {
                session_id: a.session_id.clone(),
                approval_id: Some(a.approval_id.clone()),
                since: a.requested_at,
                waited_ms: 1,
            };
            assert!(
                validate(state, &again).is_ok_and(|o| o.drafts.is_empty()),
                "approval {} notified twice",
                a.approval_id
            );
        }
    }
    // No approval is pending for a session that ended, and none is both
    // pending and decided.
    for a in state.view.approvals.values() {
        assert!(
            state.view.sessions.contains_key(&a.session_id),
            "approval {} pending for the ended {}",
            a.approval_id,
            a.session_id
        );
        assert!(
            a.decision.is_none(),
            "a pending approval with a decision: {a:?}"
        );
        assert!(
            !state.decided.iter().any(|d| d.approval_id == a.approval_id),
            "approval {} both pending and decided",
            a.approval_id
        );
    }
    // A session's state says since when and why, once it left `starting`.
    for s in state.view.sessions.values() {
        assert!(
            s.state == LifeState::Starting
                || (s.state_since.is_some() && !s.state_reason.is_empty()),
            "{} is {:?} with no reason or time: {s:?}",
            s.session_id,
            s.state
        );
    }
    // No order is left open to nobody: an ended assignee's orders are
    // orphaned, for their issuer to reassign or cancel.
    for o in state.view.orders.values() {
        assert!(
            o.state == coord_proto::view::OrderState::Orphaned
                || state.view.sessions.contains_key(&o.assignee),
            "order {} open for the ended {}: {o:?}",
            o.order_id,
            o.assignee
        );
    }
    for (r, lock) in &state.view.locks {
        assert!(
            !lock.holders.is_empty() || !lock.waiters.is_empty(),
            "empty lock {r} kept"
        );
        if lock.mode == LockMode::Exclusive {
            assert!(
                lock.holders.len() <= 1,
                "two exclusive holders of {r}: {lock:?}"
            );
        }
        for h in &lock.holders {
            assert!(
                state.view.sessions.contains_key(&h.session_id),
                "orphan holder {h:?}"
            );
            assert!(
                !lock.waiters.iter().any(|w| w.session_id == h.session_id),
                "holder also waits: {lock:?}"
            );
        }
        for w in &lock.waiters {
            assert!(
                state.view.sessions.contains_key(&w.session_id),
                "orphan waiter {w:?}"
            );
        }
        if lock.holders.is_empty() {
            // Only a conflicting lock of another resource can keep a free
            // lock's queue waiting.
            let blocked = state.view.locks.values().any(|other| {
                other.resource != *r && !other.holders.is_empty() && overlap(&other.resource, r)
            });
            assert!(
                lock.waiters.is_empty() || blocked,
                "free lock with waiters: {lock:?}"
            );
        }
        // FIFO: the queue is ordered by when each waiter joined.
        assert!(lock
            .waiters
            .windows(2)
            .all(|w| w[0].since_seq < w[1].since_seq));
    }
    // The conflict rule: two holds of overlapping resources by different
    // sessions, one of them exclusive, exist only inside a pod (one holder
    // is an ancestor of the other, by delegation).
    let holds: Vec<_> = state
        .view
        .locks
        .values()
        .flat_map(|l| l.holders.iter().map(move |h| (l, h)))
        .collect();
    for (l1, h1) in &holds {
        for (l2, h2) in &holds {
            if l1.resource == l2.resource || h1.session_id == h2.session_id {
                continue;
            }
            if l1.mode == LockMode::Shared && l2.mode == LockMode::Shared {
                continue;
            }
            if overlap(&l1.resource, &l2.resource) {
                assert!(
                    ancestor(state, &h1.session_id, &h2.session_id)
                        || ancestor(state, &h2.session_id, &h1.session_id),
                    "conflicting holds {} by {} and {} by {}",
                    l1.resource,
                    h1.session_id,
                    l2.resource,
                    h2.session_id
                );
            }
        }
    }
    assert_eq!(
        state.lock_index,
        coord_core::LockIndex::from_view(&state.view),
        "lock index out of step with the view"
    );
    for id in state.view.inboxes.keys() {
        assert!(
            state.view.sessions.contains_key(id),
            "inbox of a dead session {id}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fold_of_the_log_equals_the_live_state(cmds in proptest::collection::vec(command(), 0..80)) {
        let (live, log) = run(&cmds);
        let folded = fold(&log);
        prop_assert_eq!(&folded, &live);
        // Every approval is asked once and decided at most once.
        let mut audited = State::default();
        for e in &log {
            prop_assert_eq!(coord_core::audit::approval_order(&audited, e), Ok(()));
            apply(&mut audited, e);
        }
        prop_assert_eq!(fold(&log), folded);
        // seq is gap-free from 1.
        for (i, e) in log.iter().enumerate() {
            prop_assert_eq!(e.seq, i as u64 + 1);
        }
    }

    #[test]
    fn the_log_survives_its_wire_encoding(cmds in proptest::collection::vec(command(), 0..40)) {
        let (live, log) = run(&cmds);
        let decoded: Vec<Event> = log
            .iter()
            .map(|e| Event::from_json(&e.to_json()).expect("decode"))
            .collect();
        prop_assert_eq!(fold(&decoded), live);
    }

    #[test]
    fn snapshot_plus_tail_equals_full_fold(cmds in proptest::collection::vec(command(), 0..60), cut in 0usize..60) {
        let (live, log) = run(&cmds);
        let cut = cut.min(log.len());
        let snap: State = serde_json::from_str(
            &serde_json::to_string(&fold(&log[..cut])).expect("encode"),
        ).expect("decode");
        let mut s = snap;
        for e in &log[cut..] {
            apply(&mut s, e);
        }
        prop_assert_eq!(s, live);
    }

    #[test]
    fn validate_never_panics(cmds in proptest::collection::vec(command(), 0..30), last in command()) {
        let (state, _) = run(&cmds);
        let _ = validate(&state, &last);
    }
}

fn ancestor(state: &State, a: &str, of: &str) -> bool {
    let mut cur = of.to_string();
    for _ in 0..16 {
        match state
            .view
            .sessions
            .get(&cur)
            .and_then(|s| s.parent_session.clone())
        {
            Some(p) if p == a => return true,
            Some(p) => cur = p,
            None => return false,
        }
    }
    false
}

fn reg(s: &str) -> Command {
    Command::Register {
        session_id: s.into(),
        role: String::new(),
        task: String::new(),
        blob: serde_json::Value::Null,
        phase: String::new(),
        pid: None,
        parent_session: None,
        ttl_ms: 30_000,
        probes: Default::default(),
        expiry: Default::default(),
        extra: Default::default(),
    }
}

fn acq(s: &str, mode: LockMode) -> Command {
    Command::Acquire {
        session_id: s.into(),
        resource: "db".into(),
        mode,
        ttl_ms: None,
        wait: true,
        extra: Default::default(),
    }
}

#[test]
fn grants_go_to_waiters_in_fifo_order_when_the_holder_dies() {
    let (state, log) = run(&[
        reg("a"),
        reg("b"),
        reg("c"),
        acq("a", LockMode::Exclusive),
        acq("c", LockMode::Exclusive),
        acq("b", LockMode::Exclusive),
        Command::ProcessExited {
            session_id: "a".into(),
            registered_seq: 1,
            exit_code: Some(137),
        },
    ]);
    let holders: Vec<_> = state.view.locks["db"]
        .holders
        .iter()
        .map(|h| h.session_id.as_str())
        .collect();
    assert_eq!(holders, ["c"]);
    let kinds: Vec<_> = log.iter().skip(6).map(|e| e.kind().to_string()).collect();
    assert_eq!(
        kinds,
        [
            "session.state",
            "lock.release",
            "lock.acquire",
            "session.dereg"
        ]
    );
    match &log[8].payload {
        Payload::LockAcquire(p) => assert_eq!(p.owner_session, "c"),
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn shared_waiters_behind_an_exclusive_one_wait_for_it() {
    let (state, _) = run(&[
        reg("a"),
        reg("b"),
        reg("c"),
        acq("a", LockMode::Shared),
        acq("b", LockMode::Exclusive),
        acq("c", LockMode::Shared),
    ]);
    let lock = &state.view.locks["db"];
    assert_eq!(lock.holders.len(), 1, "c must not barge past b: {lock:?}");
    assert_eq!(lock.waiters.len(), 2);
}

fn acquire(s: &str, resource: &str, wait: bool) -> Command {
    Command::Acquire {
        session_id: s.into(),
        resource: resource.into(),
        mode: LockMode::Exclusive,
        ttl_ms: None,
        wait,
        extra: Default::default(),
    }
}

#[test]
fn a_session_with_many_locks_ends_over_bounded_commits() {
    let (mut state, mut log) = run(&[reg("a"), reg("b")]);
    for i in 0..600 {
        run_one(
            &mut state,
            &mut log,
            &acquire("a", &format!("p{i}/**"), false),
        );
    }
    run_one(&mut state, &mut log, &acquire("b", "p7/x.rs", true));
    assert_eq!(state.lock_index.count_of("a"), 600);
    let end = Command::Dereg {
        session_id: "a".into(),
        reason: DeregReason::Explicit,
        exit_code: None,
    };
    let first = validate(&state, &end).expect("dereg");
    assert_eq!(first.reply, Reply::Unfinished);
    let releases = first
        .drafts
        .iter()
        .filter(|d| matches!(d.payload, Payload::LockRelease(_)))
        .count();
    assert_eq!(releases, coord_proto::CASCADE_CHUNK);
    let before = log.len();
    let commits = run_one(&mut state, &mut log, &end);
    assert_eq!(
        commits,
        600usize.div_ceil(coord_proto::CASCADE_CHUNK),
        "600 locks in chunks, the last with the end"
    );
    check_invariants(&state);
    assert!(!state.view.sessions.contains_key("a"));
    assert_eq!(state.lock_index.count_of("a"), 0);
    assert_eq!(state.view.locks["p7/x.rs"].holders[0].session_id, "b");
    // One dereg event, last; every release before it.
    let tail = &log[before..];
    assert!(matches!(
        tail.last().map(|e| &e.payload),
        Some(Payload::SessionDereg(_))
    ));
    assert_eq!(fold(&log), state);
}

#[test]
fn lock_bounds_have_their_own_codes() {
    let (mut state, mut log) = run(&[reg("a")]);
    let long = format!("{}/**", "d".repeat(coord_proto::MAX_PATTERN_BYTES - 3));
    assert_eq!(long.len(), coord_proto::MAX_PATTERN_BYTES);
    assert!(validate(&state, &acquire("a", &long, false)).is_ok());
    let too_long = format!("d{long}");
    let err = validate(&state, &acquire("a", &too_long, false)).expect_err("too long");
    assert_eq!(err.code(), Some(coord_proto::ErrorCode::PatternTooLong));
    // A plain name keeps the resource limit.
    assert!(validate(&state, &acquire("a", &"n".repeat(1000), false)).is_ok());

    for i in 0..coord_proto::MAX_LOCKS_PER_SESSION {
        run_one(&mut state, &mut log, &acquire("a", &format!("r{i}"), false));
    }
    assert_eq!(
        state.lock_index.count_of("a"),
        coord_proto::MAX_LOCKS_PER_SESSION
    );
    let err = validate(&state, &acquire("a", "one-more", false)).expect_err("full");
    assert_eq!(err.code(), Some(coord_proto::ErrorCode::TooManyLocks));
    // What it holds already still answers as held.
    assert!(validate(&state, &acquire("a", "r5", false)).is_ok());
}
