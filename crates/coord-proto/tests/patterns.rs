//! Property tests of the lock conflict rule (PROTOCOL §7.1): `overlap` is
//! symmetric and reflexive, every common path it finds really matches
//! both patterns, it finds one whenever a brute-force search over short
//! paths does, and `within` never claims an inclusion a path disproves.

use coord_proto::pattern::{
    common_path, covers, intersects, is_pattern, literal_prefix, literal_suffix, matches, overlap,
    within,
};
use proptest::prelude::*;

/// Patterns over a tiny alphabet, so collisions are frequent.
fn pattern() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => Just("a"),
            3 => Just("b"),
            3 => Just("/"),
            2 => Just("*"),
            2 => Just("**"),
            1 => Just("?"),
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

/// Long patterns (up to 300 tokens), so the bit sets of `intersects` span
/// several 64-bit words and their carries cross word boundaries.
fn long_pattern() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            12 => Just("a"),
            2 => Just("b"),
            1 => Just("/"),
            2 => Just("*"),
            1 => Just("**"),
            1 => Just("?"),
        ],
        0..300,
    )
    .prop_map(|parts| parts.concat())
}

/// Every path over {a, b, /} up to `len` characters.
fn paths(len: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..len {
        let mut next = Vec::new();
        for p in &frontier {
            for c in ['a', 'b', '/'] {
                let mut q = p.clone();
                q.push(c);
                next.push(q);
            }
        }
        out.extend(next.iter().cloned());
        frontier = next;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn overlap_is_symmetric_and_reflexive(a in pattern(), b in pattern()) {
        prop_assert_eq!(overlap(&a, &b), overlap(&b, &a));
        prop_assert!(overlap(&a, &a));
    }

    #[test]
    fn a_common_path_matches_both(a in pattern(), b in pattern()) {
        if let Some(p) = common_path(&a, &b) {
            prop_assert!(matches(&a, &p), "{a:?} does not match its witness {p:?}");
            prop_assert!(matches(&b, &p), "{b:?} does not match its witness {p:?}");
        }
    }

    #[test]
    fn long_patterns_intersect_as_their_common_path_says(a in long_pattern(), b in long_pattern()) {
        prop_assert_eq!(intersects(&a, &b), common_path(&a, &b).is_some());
    }

    /// The literal-head shortcut of `covers` never changes its answer.
    #[test]
    fn covers_is_matches_for_a_pattern_and_equality_for_a_name(a in pattern(), b in pattern()) {
        // `b` with its wildcards made literal is a path.
        let path: String = b.chars().map(|c| if c == '*' || c == '?' { 'x' } else { c }).collect();
        let expected = if is_pattern(&a) { matches(&a, &path) } else { a == path };
        prop_assert_eq!(covers(&a, &path), expected);
    }

    #[test]
    fn intersects_is_common_path_without_the_path(a in pattern(), b in pattern()) {
        prop_assert_eq!(intersects(&a, &b), common_path(&a, &b).is_some());
    }

    /// What the lock index relies on: overlapping patterns have literal
    /// prefixes one of which starts the other, and likewise suffixes.
    #[test]
    fn overlapping_patterns_have_comparable_literal_ends(a in pattern(), b in pattern()) {
        if overlap(&a, &b) {
            let (pa, pb) = (literal_prefix(&a), literal_prefix(&b));
            prop_assert!(pa.starts_with(pb) || pb.starts_with(pa), "{a:?} {b:?}");
            let (sa, sb) = (literal_suffix(&a), literal_suffix(&b));
            prop_assert!(sa.ends_with(sb) || sb.ends_with(sa), "{a:?} {b:?}");
        }
    }

    /// The literal-ends shortcut never changes an answer of the rule as
    /// PROTOCOL §7.1 states it.
    #[test]
    fn overlap_is_the_stated_rule(a in pattern(), b in pattern()) {
        let rule = a == b
            || ((a.contains(['*', '?']) || b.contains(['*', '?']))
                && (matches(&a, &b) || matches(&b, &a) || common_path(&a, &b).is_some()));
        prop_assert_eq!(overlap(&a, &b), rule, "{:?} {:?}", a, b);
    }

    #[test]
    fn brute_force_agrees(a in pattern(), b in pattern()) {
        let shared = paths(5).into_iter().find(|p| matches(&a, p) && matches(&b, p));
        if let Some(p) = shared {
            prop_assert!(common_path(&a, &b).is_some(), "{a:?} and {b:?} share {p:?}");
            prop_assert!(overlap(&a, &b));
        }
        if !overlap(&a, &b) {
            prop_assert!(common_path(&a, &b).is_none());
        }
    }

    #[test]
    fn within_is_sound(inner in pattern(), outer in pattern()) {
        if within(&inner, &outer) {
            for p in paths(5) {
                if matches(&inner, &p) {
                    prop_assert!(matches(&outer, &p), "{inner:?} within {outer:?}, yet {p:?}");
                }
            }
            prop_assert!(overlap(&inner, &outer));
        }
    }
}
