//! Every write request body decoder of PROTOCOL §8, through the daemon's
//! own decoder: any bytes are decoded or refused with an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = coord_daemon::fuzzing::decode_bodies(data);
});
