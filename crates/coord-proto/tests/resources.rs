//! Properties of resource normalisation (PROTOCOL §2): users write paths
//! many ways, a lock must have one name.

use coord_proto::ids::{check_resource, normalize_resource};
use proptest::prelude::*;

/// Path-like strings: segments of letters, `.`, `..` and empties, with or
/// without a leading or trailing `/`.
fn messy_path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        4 => "[a-z]{1,3}(\\.rs)?",
        1 => Just(".".to_string()),
        1 => Just(String::new()),
        1 => Just("*".to_string()),
    ];
    (
        any::<bool>(),
        proptest::collection::vec(seg, 0..6),
        any::<bool>(),
    )
        .prop_map(|(abs, segs, trailing)| {
            let mut s = if abs { "/".to_string() } else { String::new() };
            s.push_str(&segs.join("/"));
            if trailing {
                s.push('/');
            }
            s
        })
}

proptest! {
    #[test]
    fn normalising_is_idempotent(p in messy_path()) {
        let once = normalize_resource(&p);
        prop_assert_eq!(normalize_resource(&once), once.clone());
    }

    #[test]
    fn a_normalised_path_is_valid_unless_it_names_nothing(p in messy_path()) {
        let n = normalize_resource(&p);
        let names_something = n.trim_start_matches('/').split('/').any(|s| !s.is_empty());
        prop_assert_eq!(check_resource(&n).is_ok(), names_something, "{:?} -> {:?}", p, n);
    }

    #[test]
    fn valid_resources_are_left_alone(p in messy_path()) {
        if check_resource(&p).is_ok() {
            prop_assert_eq!(normalize_resource(&p), p);
        }
    }

    #[test]
    fn spellings_of_one_path_agree(segs in proptest::collection::vec("[a-z]{1,4}", 1..5)) {
        let plain = segs.join("/");
        let dotted = format!("./{}", segs.join("/./"));
        let doubled = format!("{}/", segs.join("//"));
        prop_assert_eq!(normalize_resource(&dotted), plain.clone());
        prop_assert_eq!(normalize_resource(&doubled), plain.clone());
        let abs = format!("//{}", segs.join("/"));
        prop_assert_eq!(normalize_resource(&abs), format!("/{plain}"));
    }
}

#[test]
fn examples_from_the_protocol() {
    assert_eq!(normalize_resource("./src/a.rs"), "src/a.rs");
    assert_eq!(normalize_resource("src//a.rs"), "src/a.rs");
    assert_eq!(
        normalize_resource("/home/dev/repo/a.rs"),
        "/home/dev/repo/a.rs"
    );
    assert!(check_resource(&normalize_resource("src/../a.rs")).is_err());
    assert!(check_resource(&normalize_resource("/")).is_err());
    assert!(check_resource(&normalize_resource("./")).is_err());
}
