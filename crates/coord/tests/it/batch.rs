//! `POST /v1/events/batch` and `coord publish --batch`: one request, many
//! events, one commit — order kept, all or nothing, idempotent per line.

use crate::support::{coord_cmd, Daemon};
use std::io::Write;
use std::process::Stdio;

#[test]
fn a_batch_keeps_its_order_and_answers_every_seq() {
    let d = Daemon::start(&[]);
    d.register("warm");
    let head = d.head();
    let lines: String = (0..1000)
        .map(|i| format!("{{\"tx_kind\":\"x.bulk\",\"payload\":{{\"i\":{i}}}}}\n"))
        .collect();
    // Through the CLI, from standard input.
    let mut child = coord_cmd()
        .args(["--json", "publish", "--batch", "-"])
        .env("COORD_SOCKET", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("coord publish");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let seqs: Vec<u64> = answer["seqs"]
        .as_array()
        .expect("seqs")
        .iter()
        .map(|s| s.as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (head + 1..=head + 1000).collect::<Vec<_>>());
    assert_eq!(d.head(), head + 1000);
    let events = d.all_events();
    let bulk: Vec<u64> = events
        .iter()
        .filter(|e| e["tx_kind"] == "x.bulk")
        .map(|e| e["payload"]["i"].as_u64().expect("i"))
        .collect();
    assert_eq!(
        bulk,
        (0..1000).collect::<Vec<_>>(),
        "the log keeps the lines' order"
    );
    // Text output.
    let file = d.dir.path().join("b.ndjson");
    std::fs::write(&file, "{\"tx_kind\":\"x.one\"}\n{\"tx_kind\":\"x.two\"}\n").expect("file");
    let text = d.ok(&["publish", "--batch", file.to_str().expect("utf-8")]);
    assert_eq!(
        text.trim(),
        format!("published 2 events (seq {}..={})", head + 1001, head + 1002)
    );
}

#[test]
fn a_bad_line_refuses_the_whole_batch_and_names_its_line() {
    let d = Daemon::start(&[]);
    let head = d.head();
    let r =
        d.batch("{\"tx_kind\":\"x.ok\"}\n{\"tx_kind\":\"x.ok\"}\n{\"tx_kind\":\"lock.acquire\"}\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "unknown_kind");
    assert_eq!(r.json()["error"]["line"], 3);
    let r = d.batch("{\"tx_kind\":\"x.ok\"}\n\n{\"tx_kind\": \n");
    assert_eq!(r.code(), "bad_json");
    assert_eq!(r.json()["error"]["line"], 3);
    let r = d.batch("{\"tx_kind\":\"x.ok\",\"payload\":[1]}\n");
    assert_eq!(r.code(), "invalid_field");
    let r = d.batch("\n\n");
    assert_eq!(r.code(), "invalid_field", "an empty batch");
    // Acting for a session needs its token, for the whole batch.
    d.register("owner");
    let head2 = d.head();
    let r = d.batch("{\"tx_kind\":\"x.ok\"}\n{\"tx_kind\":\"x.mine\",\"session_id\":\"owner\"}\n");
    assert_eq!(r.status, 401, "{:?}", r.json());
    assert_eq!(d.head(), head2, "nothing of a refused batch was appended");
    assert!(head2 > head);
    assert!(d.all_events().iter().all(|e| e["tx_kind"] != "x.ok"));
}

#[test]
fn a_retried_batch_appends_each_line_once() {
    let d = Daemon::start(&[]);
    let body: String = (0..5)
        .map(|i| format!("{{\"tx_kind\":\"x.idem\",\"tx_id\":\"01J0000000000000000000000{i}\"}}\n"))
        .collect();
    let first = d.batch(&body);
    assert_eq!(first.status, 201);
    let again = d.batch(&body);
    assert_eq!(again.status, 200, "every line a replay");
    assert_eq!(again.json()["seqs"], first.json()["seqs"]);
    assert_eq!(again.json()["replayed"], 5);
    // Old and new lines together: the old keep their seqs, the new append.
    let head = d.head();
    let mixed =
        format!("{body}{{\"tx_kind\":\"x.idem\",\"tx_id\":\"01J00000000000000000000009\"}}\n");
    let r = d.batch(&mixed);
    assert_eq!(r.status, 201);
    let seqs = r.json()["seqs"].clone();
    assert_eq!(seqs[0], first.json()["seqs"][0]);
    assert_eq!(seqs[5], head + 1);
    assert_eq!(r.json()["replayed"], 5);
    assert_eq!(
        d.all_events()
            .iter()
            .filter(|e| e["tx_kind"] == "x.idem")
            .count(),
        6
    );
}

/// A line the writer refuses (here a `tx_id` bound to another request, and
/// one copied from an event the daemon named) refuses the whole batch
/// too: nothing of it is appended, and the answer is that line's error.
#[test]
fn a_line_the_writer_refuses_refuses_the_whole_batch() {
    let d = Daemon::start(&[]);
    let tx = "01J00000000000000000000B7A";
    let first = d.batch(&format!("{{\"tx_kind\":\"x.first\",\"tx_id\":\"{tx}\"}}\n"));
    assert_eq!(first.status, 201, "{}", first.json());
    let head = d.head();
    let r = d.batch(
        &format!(
            "{{\"tx_kind\":\"x.ok\"}}\n\n{{\"tx_kind\":\"x.other\",\"tx_id\":\"{tx}\"}}\n{{\"tx_kind\":\"x.ok\"}}\n"
        ),
    );
    assert_eq!(r.status, 409, "{}", r.json());
    assert_eq!(r.code(), "tx_id_reused");
    assert_eq!(r.json()["error"]["line"], 3);
    assert_eq!(d.head(), head, "a line of a refused batch was appended");
    let m = d.http("GET", "/v1/metrics", &[], None);
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert!(
        text.contains("coord_writes_refused_total{code=\"tx_id_reused\"} 1"),
        "the refused line is counted once: {text}"
    );

    let named = d
        .all_events()
        .into_iter()
        .find(|e| e["tx_kind"] == "x.first")
        .and_then(|e| e["seq"].as_u64())
        .expect("the first event");
    // An event the daemon named itself, and its id sent back in a batch.
    let plain = d.batch("{\"tx_kind\":\"x.plain\"}\n");
    assert_eq!(plain.status, 201);
    let copied = d
        .all_events()
        .into_iter()
        .find(|e| e["tx_kind"] == "x.plain")
        .and_then(|e| e["tx_id"].as_str().map(str::to_string))
        .expect("its tx_id");
    let head = d.head();
    let r = d.batch(&format!(
        "{{\"tx_kind\":\"x.ok\"}}\n{{\"tx_kind\":\"x.echo\",\"tx_id\":\"{copied}\"}}\n"
    ));
    assert_eq!(r.code(), "tx_id_reused", "{}", r.json());
    assert_eq!(r.json()["error"]["line"], 2);
    assert_eq!(d.head(), head);
    assert!(d.all_events().iter().all(|e| e["tx_kind"] != "x.ok"));
    assert!(named < head);

    // The same lines without the bad one go in, in one commit.
    let r = d.batch("{\"tx_kind\":\"x.ok\"}\n{\"tx_kind\":\"x.ok\"}\n");
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(d.head(), head + 2);
}

/// The reproduction: two lines of one batch with one `tx_id` and
/// different events refuse the whole batch, before anything is appended
/// (head unchanged); the same line twice is one event, answered twice.
#[test]
fn one_tx_id_twice_in_a_batch_appends_nothing_or_one_event() {
    let d = Daemon::start(&[]);
    let tx = "01J00000000000000000000C7A";
    let head = d.head();
    let r = d.batch(&format!(
        "{{\"tx_kind\":\"x.a\",\"tx_id\":\"{tx}\"}}\n{{\"tx_kind\":\"x.b\",\"tx_id\":\"{tx}\"}}\n"
    ));
    assert_eq!(r.status, 409, "{}", r.json());
    assert_eq!(r.code(), "tx_id_reused");
    assert_eq!(r.json()["error"]["line"], 2);
    assert_eq!(r.json()["error"]["first_line"], 1);
    assert_eq!(d.head(), head, "a line of a refused batch was appended");

    let line = format!("{{\"tx_kind\":\"x.a\",\"tx_id\":\"{tx}\"}}\n");
    let r = d.batch(&format!("{line}{line}"));
    assert_eq!(r.status, 201, "{}", r.json());
    let seqs = r.json()["seqs"].clone();
    assert_eq!(seqs[0], seqs[1], "{seqs}");
    assert_eq!(d.head(), head + 1);
}
