//! The legacy file parser (LEGACY_LAYOUT.md): the first byte picks the
//! file kind, the rest is its body. A body either does not parse ("not
//! yet", a writer half-way) or parses to a file that encodes and parses
//! back to itself, and the diff of a root holding it never panics.
#![no_main]

use coord_legacy::layout::{is_temp, LockFile, MessageFile, OrderFile, Root, SessionFile};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    body: &[u8],
) -> Option<T> {
    let f: T = serde_json::from_slice(body).ok()?;
    let again = serde_json::to_vec(&f).expect("a parsed file encodes");
    let back: T = serde_json::from_slice(&again).expect("an encoded file parses");
    assert_eq!(back, f);
    Some(f)
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    if let Ok(name) = std::str::from_utf8(body) {
        let _ = is_temp(name);
    }
    let mut root = Root::default();
    match kind % 4 {
        0 => {
            if let Some(f) = round_trip::<SessionFile>(body) {
                root.sessions.insert(f.session_id.clone(), f);
            }
        }
        1 => {
            if let Some(f) = round_trip::<LockFile>(body) {
                root.locks
                    .insert(coord_legacy::layout::encode_resource(&f.resource), f);
            }
        }
        2 => {
            if let Some(f) = round_trip::<MessageFile>(body) {
                root.messages.insert(("inbox".into(), "m".into()), f);
            }
        }
        _ => {
            if let Some(f) = round_trip::<OrderFile>(body) {
                root.orders.insert("o".into(), f);
            }
        }
    }
    let _ = coord_legacy::diff(&Root::default(), &root);
    let _ = coord_legacy::diff(&root, &Root::default());
});
