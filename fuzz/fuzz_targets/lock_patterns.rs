//! Lock-pattern overlap and containment (PROTOCOL §7.1) against the
//! brute-force oracle the property tests use: every path of up to five
//! characters over {a, b, /}.
#![no_main]

use coord_proto::pattern::{common_path, intersects, matches, overlap, within};
use libfuzzer_sys::fuzz_target;

/// Two patterns over a tiny alphabet from the input's bytes (a zero byte
/// separates them), so that collisions are frequent.
fn patterns(data: &[u8]) -> (String, String) {
    let piece = |b: u8| match b % 7 {
        0 | 1 => "a",
        2 => "b",
        3 => "/",
        4 => "*",
        5 => "**",
        _ => "?",
    };
    let mut parts = data.splitn(2, |b| *b == 0);
    let mut next = || -> String {
        parts
            .next()
            .unwrap_or_default()
            .iter()
            .take(8)
            .map(|b| piece(*b))
            .collect()
    };
    let a = next();
    let b = next();
    (a, b)
}

fn paths() -> &'static [String] {
    static PATHS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| {
        let mut out = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..5 {
            let next: Vec<String> = frontier
                .iter()
                .flat_map(|p| ['a', 'b', '/'].map(|c| format!("{p}{c}")))
                .collect();
            out.extend(next.iter().cloned());
            frontier = next;
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = patterns(data);
    let o = overlap(&a, &b);
    assert_eq!(o, overlap(&b, &a), "overlap is not symmetric: {a:?} {b:?}");
    assert!(overlap(&a, &a), "overlap is not reflexive: {a:?}");
    assert_eq!(
        intersects(&a, &b),
        common_path(&a, &b).is_some(),
        "{a:?} {b:?}"
    );
    if let Some(p) = common_path(&a, &b) {
        assert!(
            matches(&a, &p) && matches(&b, &p),
            "witness {p:?} of {a:?} {b:?}"
        );
    }
    if let Some(p) = paths().iter().find(|p| matches(&a, p) && matches(&b, p)) {
        assert!(o, "{a:?} and {b:?} both match {p:?} but do not overlap");
    }
    if within(&a, &b) {
        for p in paths() {
            assert!(
                !matches(&a, p) || matches(&b, p),
                "{a:?} within {b:?}, yet {p:?}"
            );
        }
    }
});
