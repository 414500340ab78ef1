//! The `tx_id`s the daemon makes for events (PROTOCOL §4): a ULID whose 80
//! bits after the timestamp are the event's seq (48 bits) and then 32
//! random bits.
//!
//! Why the seq is in the id: `(source, tx_id)` must be unique in the log,
//! and the store does not keep an index on it (a second B-tree written by
//! every commit cost about a tenth of the daemon's CPU per event;
//! docs/BENCHMARKS.md, "The write path"). The ids a client sends are
//! checked against the idempotency records; the ids made here are unique
//! by construction (no two events share a seq), and one a client copies
//! from the stream and sends back as its own names the event it came from,
//! so the writer finds it with one read by seq ([`seq_of`]).
//!
//! Ids stay ordered: the timestamp comes from a monotonic ULID generator
//! and, within one millisecond, a later event has a higher seq.
//!
//! Pure functions: no clock, no I/O (the caller brings a fresh ULID for the
//! time and the random bits).

use ulid::Ulid;

/// Bits of the seq kept in an id; a seq beyond them wraps (2^48 events is
/// 89 years at 100,000 events/s).
const SEQ_BITS: u32 = 48;
const SEQ_MASK: u128 = (1 << SEQ_BITS) - 1;
/// Random bits after the seq.
const RANDOM_BITS: u32 = 32;

/// The id of the event at `seq`: `fresh`'s timestamp, then `seq`, then the
/// low 32 bits of `fresh`'s random part.
pub fn for_event(seq: u64, fresh: Ulid) -> Ulid {
    let random =
        ((u128::from(seq) & SEQ_MASK) << RANDOM_BITS) | (fresh.random() & ((1 << RANDOM_BITS) - 1));
    Ulid::from_parts(fresh.timestamp_ms(), random)
}

/// The seq an id made by [`for_event`] names. Any other ULID names some
/// seq too (its bits read the same way), so the caller must check that the
/// event there carries this very id. `None` for 0 (no event has it).
pub fn seq_of(id: Ulid) -> Option<u64> {
    let seq = ((id.random() >> RANDOM_BITS) & SEQ_MASK) as u64;
    (seq != 0).then_some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn an_id_names_its_seq_and_keeps_the_time(seq in 1u64..(1 << 48), ms in 0u64..(1 << 48), r: u128) {
            let fresh = Ulid::from_parts(ms, r);
            let id = for_event(seq, fresh);
            prop_assert_eq!(seq_of(id), Some(seq));
            prop_assert_eq!(id.timestamp_ms(), ms);
            prop_assert_eq!(id.random() & 0xffff_ffff, r & 0xffff_ffff);
        }

        #[test]
        fn ids_made_in_order_sort_in_order(seq in 1u64..(1 << 47), gap in 1u64..1000, ms in 0u64..(1 << 47), dms in 0u64..2, r1: u128, r2: u128) {
            // A later event: a higher seq, the same or a later millisecond
            // (the generator never goes back), any random bits.
            let a = for_event(seq, Ulid::from_parts(ms, r1));
            let b = for_event(seq + gap, Ulid::from_parts(ms + dms, r2));
            prop_assert!(a < b);
        }
    }

    #[test]
    fn distinct_seqs_give_distinct_ids_whatever_the_randomness() {
        let fresh = Ulid::from_parts(1_764_000_000_000, 7);
        assert_ne!(for_event(1, fresh), for_event(2, fresh));
        assert_eq!(seq_of(Ulid::from_parts(5, 0)), None);
    }
}
