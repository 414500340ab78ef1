//! Guarantee 2: SIGKILL under write load loses no acknowledged write; the
//! restarted view equals the fold of the log; a subscriber resuming from
//! its last seq gets no gap and no duplicate.

use crate::support::{assert_gap_free, fold, raw_http, Daemon, Follower};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn sigkill_under_load_loses_no_acknowledged_write() {
    let mut d = Daemon::start(&[]);
    let tok = d.register("loader");
    let live = Follower::start(&d, &["--since", "0"]);
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let socket = d.socket.clone();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, socket, tok) =
                (acked.clone(), stop.clone(), socket.clone(), tok.clone());
            std::thread::spawn(move || {
                let auth = format!("Bearer {tok}");
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let tx = ulid_for(w, i);
                    // Writer 0 also churns a lock so the view is not trivial.
                    let (path, body) = if w == 0 && i % 2 == 0 {
                        (
                            "/v1/locks/acquire",
                            json!({"session_id":"loader","resource":"hot","tx_id":tx}),
                        )
                    } else if w == 0 {
                        (
                            "/v1/locks/release",
                            json!({"session_id":"loader","resource":"hot","tx_id":tx}),
                        )
                    } else {
                        (
                            "/v1/events",
                            json!({"tx_kind":"x.load","payload":{"w":w,"i":i},"tx_id":tx}),
                        )
                    };
                    let headers = [("Authorization", auth.as_str())];
                    match raw_http(
                        &socket,
                        "POST",
                        path,
                        &headers,
                        Some(body.to_string().as_bytes()),
                    ) {
                        Ok(r) if r.status < 300 => {
                            if let Some(seq) = r.json()["seq"].as_u64() {
                                acked.lock().expect("lock").push((tx, seq));
                            }
                        }
                        Ok(r) => panic!(
                            "write refused: {} {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ),
                        Err(_) => break, // the daemon is gone
                    }
                }
            })
        })
        .collect();
    // Let the load build, then kill the daemon mid-flight.
    while acked.lock().expect("lock").len() < 400 {
        std::thread::sleep(Duration::from_millis(10));
    }
    d.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let seen_before = live.stop();

    d.restart();
    let events = d.all_events();
    assert_gap_free(&events, 1);
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 400);
    for (tx, seq) in &acked {
        let e = &events[(*seq - 1) as usize];
        assert_eq!(
            e["tx_id"].as_str(),
            Some(tx.as_str()),
            "acknowledged write {tx} at seq {seq} is not in the log"
        );
    }
    let snap = d.http("GET", "/v1/snapshot", &[], None).json();
    assert_eq!(
        serde_json::to_value(fold(&events).view).expect("view"),
        snap["view"]
    );

    // Resume from the last seq the live subscriber saw.
    let last = seen_before
        .last()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0);
    let resumed: Vec<Value> = d
        .ok(&[
            "events",
            "--since",
            &last.to_string(),
            "--no-follow",
            "--format",
            "json",
        ])
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let mut joined: Vec<Value> = seen_before
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    joined.extend(resumed);
    assert_gap_free(&joined, 1);
    assert_eq!(joined, events);
}

/// A valid, distinct ULID per (writer, index).
fn ulid_for(w: usize, i: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut n = ((w as u128) << 64) | u128::from(i) | (1u128 << 120);
    let mut out = [b'0'; 26];
    for c in out.iter_mut().rev() {
        *c = ALPHABET[(n % 32) as usize];
        n /= 32;
    }
    String::from_utf8(out.to_vec()).unwrap_or_default()
}
