//! What another session wrote never drives the reader's terminal: escape
//! sequences in a mail body or an event are printed as their escapes by
//! `coord inbox read` and `coord events`; bidirectional controls are
//! refused in roles, tasks and phases. Real daemon, real CLI.

use crate::support::*;

/// OSC 0 (title), OSC 52 (clipboard), CSI 2J (clear), OSC 8 (link), DCS,
/// the 8-bit CSI and a right-to-left override.
const HOSTILE: &str = "hi\u{1b}]0;owned\u{7}\u{1b}]52;c;aGVsbG8=\u{7}\u{1b}[2J\u{1b}]8;;http://x\u{1b}\\link\u{1b}P1$r\u{1b}\\\u{9b}31m\u{202e}fdp.exe";

fn assert_inert(out: &[u8], shown: &str) {
    let text = String::from_utf8_lossy(out);
    assert!(
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n') || coord_proto::ids::is_bidi_control(c)),
        "a control character reached the terminal: {text:?}"
    );
    assert!(text.contains(shown), "{text}");
}

#[test]
fn mail_bodies_and_events_print_escape_sequences_inert() {
    let d = Daemon::start(&[]);
    let from = d.register("sender");
    let to = d.register("reader");
    let sent = d.coord_env(
        &["send", "reader", HOSTILE],
        &[("COORD_SESSION", "sender"), ("COORD_SESSION_TOKEN", &from)],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    // A child's report, whose message is printed in the event's sentence.
    let child = json_of(&d.coord(&[
        "--json", "session", "register", "--id", "kid", "--parent", "reader",
    ]))["token"]
        .as_str()
        .expect("token")
        .to_string();
    let reported = d.coord_env(
        &["session", "report", "errored", "--message", HOSTILE],
        &[("COORD_SESSION", "kid"), ("COORD_SESSION_TOKEN", &child)],
    );
    assert!(
        reported.status.success(),
        "{}",
        String::from_utf8_lossy(&reported.stderr)
    );
    d.ok(&[
        "publish",
        "x.note",
        "--payload",
        &serde_json::json!({ "text": HOSTILE }).to_string(),
    ]);
    let read = d.coord_env(
        &["inbox", "read", "--all"],
        &[("COORD_SESSION", "reader"), ("COORD_SESSION_TOKEN", &to)],
    );
    let read = if read.status.success() {
        read
    } else {
        let listed = json_of(&d.coord_env(
            &["--json", "inbox", "list"],
            &[("COORD_SESSION", "reader"), ("COORD_SESSION_TOKEN", &to)],
        ));
        let id = listed["messages"][0]["msg_id"]
            .as_str()
            .expect("msg")
            .to_string();
        d.coord_env(
            &["inbox", "read", &id],
            &[("COORD_SESSION", "reader"), ("COORD_SESSION_TOKEN", &to)],
        )
    };
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_inert(&read.stdout, "\\u{1b}]0;owned");
    let events = d.coord(&["events", "--since", "start", "--no-follow"]);
    assert!(events.status.success());
    // The report's message is shown escaped (and the x.note payload as
    // JSON, whose escapes are inert too).
    assert_inert(&events.stdout, "\\u{1b}]0;owned");
}

#[test]
fn a_bidi_override_is_refused_in_a_role() {
    let d = Daemon::start(&[]);
    let out = d.coord(&[
        "session",
        "register",
        "--id",
        "s",
        "--role",
        "dev\u{202e}1v",
    ]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("U+202E"));
}
