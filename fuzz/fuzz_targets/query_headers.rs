//! The query and header parsers of the events stream (PROTOCOL §9): any
//! query string and any `Last-Event-ID` / `Content-Type` /
//! `Coord-Protocol` value is parsed or refused, never a panic; a cursor
//! that parses is a seq, `start` or `now`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, cursor_ok) = coord_daemon::fuzzing::query_and_headers(data);
    if cursor_ok {
        let value = data
            .iter()
            .position(|b| *b == b'\n')
            .map_or(&[][..], |i| &data[i + 1..]);
        let v = std::str::from_utf8(value).expect("a parsed cursor is UTF-8");
        let v = v.trim();
        assert!(
            v.is_empty() || v == "start" || v == "now" || v.parse::<u64>().is_ok(),
            "cursor {v:?} parsed"
        );
    }
});
