//! The event envelope codec (PROTOCOL §5): any line either fails to decode
//! or decodes to an event whose encoding decodes to the same event and
//! encodes to the same line again.
#![no_main]

use coord_proto::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(e) = Event::from_json(text) {
        let line = e.to_json();
        let back = Event::from_json(&line).expect("an encoded event decodes");
        assert_eq!(back, e, "the round trip changed the event");
        assert_eq!(back.to_json(), line, "the encoding is not stable");
    }
});
