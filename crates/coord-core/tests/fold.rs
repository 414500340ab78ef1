//! Property tests of the state machine (DESIGN §5, "functional core"):
//! for random command sequences the live state equals the fold of the log,
//! folds are deterministic, validate never panics, and the lock invariants
//! (one exclusive holder, FIFO queue, no holder without a session) hold
//! after every command.

use coord_core::{apply, validate, Command, State};
use coord_proto::{DeregReason, Event, LockMode, Payload, Timestamp, WaitCancelReason};
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
        1 => any::<String>(),
    ]
}

fn mode() -> impl Strategy<Value = LockMode> {
    prop_oneof![Just(LockMode::Exclusive), Just(LockMode::Shared)]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (sid(), proptest::option::of(1u32..100), 500u64..100_000).prop_map(|(s, pid, ttl)| {
            Command::Register {
                session_id: s,
                role: "worker".into(),
                task: "t".into(),
                blob: serde_json::json!({}),
                phase: "starting".into(),
                pid,
                parent_session: None,
                ttl_ms: ttl,
                extra: Default::default(),
            }
        }),
        (sid(), proptest::option::of("[a-c]")).prop_map(|(s, phase)| Command::Heartbeat {
            session_id: s,
            phase,
            at: Timestamp(5),
            log_always: false,
        }),
        sid().prop_map(|s| Command::Dereg {
            session_id: s,
            reason: DeregReason::Explicit,
            exit_code: None
        }),
        (sid(), 0u64..40).prop_map(|(s, seq)| Command::ExpireLease {
            session_id: s,
            registered_seq: seq
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
        Just(Command::CancelAllWaits),
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
        ("o[0-2]", sid()).prop_map(|(o, a)| Command::Issue {
            order_id: o,
            assignee: a,
            ticket: "T-1".into(),
            from_session: None,
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
        let Ok(outcome) = validate(&state, cmd) else {
            continue;
        };
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
            apply(&mut state, &e);
            log.push(e);
        }
        check_invariants(&state);
    }
    (state, log)
}

fn fold(log: &[Event]) -> State {
    let mut s = State::default();
    for e in log {
        apply(&mut s, e);
    }
    s
}

fn check_invariants(state: &State) {
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
            assert!(lock.waiters.is_empty(), "free lock with waiters: {lock:?}");
        }
        // FIFO: the queue is ordered by when each waiter joined.
        assert!(lock
            .waiters
            .windows(2)
            .all(|w| w[0].since_seq < w[1].since_seq));
    }
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
    assert_eq!(kinds, ["lock.release", "lock.acquire", "session.dereg"]);
    match &log[7].payload {
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
