//! The index of live locks: which locks may conflict with a resource, and
//! which locks a session holds or waits for, without a scan of every lock.
//!
//! Owns the two questions the lock commands ask on every acquire, release
//! and session end. It is derived from the view alone (the fold keeps it in
//! step, [`LockIndex::from_view`] rebuilds it), so it is never snapshotted
//! and never decides anything: [`crate::kinds`] still applies the conflict
//! rule (`coord_proto::pattern::overlap`) to the candidates it returns.
//!
//! Why it is sound: a resource's literal prefix (the text before its first
//! `*` or `?`, all of a plain name) starts every path it matches and its own
//! text, so two locks that conflict have literal prefixes one of which
//! starts the other; the same holds for literal suffixes from the end
//! (property-tested in `coord-proto/tests/patterns.rs`). A lookup takes the
//! locks whose prefix is a prefix of the resource's, or extends it, and the
//! same by suffix, and keeps the smaller of the two sets. Its cost is
//! O(|resource| · log n) plus the candidates, whatever else is held.

use coord_proto::pattern::{literal_prefix, literal_suffix};
use coord_proto::view::View;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// Live locks by literal prefix and suffix, and by session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockIndex {
    /// Resource names by literal prefix.
    by_prefix: BTreeMap<String, BTreeSet<String>>,
    /// Resource names by literal suffix, the suffix written backwards so
    /// that "ends with" becomes a prefix range.
    by_suffix: BTreeMap<String, BTreeSet<String>>,
    /// Resources each session holds or waits for.
    by_session: BTreeMap<String, BTreeSet<String>>,
}

fn reversed(s: &str) -> String {
    s.chars().rev().collect()
}

/// Buckets of `map` whose key is a prefix of `key` or starts with it.
fn related<'a>(
    map: &'a BTreeMap<String, BTreeSet<String>>,
    key: &str,
) -> Vec<&'a BTreeSet<String>> {
    let mut out = Vec::new();
    for end in key
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(key.len()))
    {
        if let Some(b) = map.get(&key[..end]) {
            out.push(b);
        }
    }
    let after = map
        .range::<str, _>((Bound::Excluded(key), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(key))
        .map(|(_, b)| b);
    out.extend(after);
    out
}

impl LockIndex {
    /// The index of every lock in `view`.
    pub fn from_view(view: &View) -> Self {
        let mut index = LockIndex::default();
        for lock in view.locks.values() {
            index.insert(&lock.resource);
            for s in lock
                .holders
                .iter()
                .map(|h| &h.session_id)
                .chain(lock.waiters.iter().map(|w| &w.session_id))
            {
                index.join(s, &lock.resource);
            }
        }
        index
    }

    /// Adds a live lock (no-op when present).
    pub fn insert(&mut self, resource: &str) {
        self.by_prefix
            .entry(literal_prefix(resource).to_string())
            .or_default()
            .insert(resource.to_string());
        self.by_suffix
            .entry(reversed(literal_suffix(resource)))
            .or_default()
            .insert(resource.to_string());
    }

    /// Drops a lock that is gone (no-op when absent).
    pub fn remove(&mut self, resource: &str) {
        for (map, key) in [
            (&mut self.by_prefix, literal_prefix(resource).to_string()),
            (&mut self.by_suffix, reversed(literal_suffix(resource))),
        ] {
            if let Some(b) = map.get_mut(&key) {
                b.remove(resource);
                if b.is_empty() {
                    map.remove(&key);
                }
            }
        }
    }

    /// Records that `session` holds or waits for `resource`.
    pub fn join(&mut self, session: &str, resource: &str) {
        self.by_session
            .entry(session.to_string())
            .or_default()
            .insert(resource.to_string());
    }

    /// Records that `session` neither holds nor waits for `resource` any more.
    pub fn leave(&mut self, session: &str, resource: &str) {
        if let Some(rs) = self.by_session.get_mut(session) {
            rs.remove(resource);
            if rs.is_empty() {
                self.by_session.remove(session);
            }
        }
    }

    /// Forgets every lock of `session`, returning them.
    pub fn leave_all(&mut self, session: &str) -> BTreeSet<String> {
        self.by_session.remove(session).unwrap_or_default()
    }

    /// The locks `session` holds or waits for, in resource order.
    pub fn of_session(&self, session: &str) -> impl Iterator<Item = &String> {
        self.by_session.get(session).into_iter().flatten()
    }

    /// How many locks `session` holds or waits for.
    pub fn count_of(&self, session: &str) -> usize {
        self.by_session.get(session).map_or(0, BTreeSet::len)
    }

    /// Every live lock that may conflict with `resource` (it included, if
    /// live): a superset of the conflicting ones, usually a small one.
    pub fn candidates(&self, resource: &str) -> Vec<&String> {
        let by_prefix = related(&self.by_prefix, literal_prefix(resource));
        let by_suffix = related(&self.by_suffix, &reversed(literal_suffix(resource)));
        let size = |bs: &[&BTreeSet<String>]| bs.iter().map(|b| b.len()).sum::<usize>();
        let smaller = if size(&by_prefix) <= size(&by_suffix) {
            by_prefix
        } else {
            by_suffix
        };
        smaller.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_proto::pattern::overlap;

    fn index(rs: &[&str]) -> LockIndex {
        let mut i = LockIndex::default();
        for r in rs {
            i.insert(r);
        }
        i
    }

    #[test]
    fn candidates_hold_every_conflict() {
        let held = [
            "src/**",
            "src/a.rs",
            "src/db/*.sql",
            "docs/**",
            "**/*.md",
            "*",
            "README.md",
            "src/db/schema.sql",
        ];
        let i = index(&held);
        for q in [
            "src/db/x.sql",
            "src/**",
            "README.md",
            "**",
            "docs/a.md",
            "x",
            "src/db/**",
        ] {
            let c: BTreeSet<&str> = i.candidates(q).into_iter().map(String::as_str).collect();
            for h in held {
                if overlap(h, q) {
                    assert!(c.contains(h), "{q} misses {h} in {c:?}");
                }
            }
        }
        // Unrelated prefixes and suffixes are not candidates.
        let c = i.candidates("src/db/x.sql");
        assert!(!c.iter().any(|r| r.as_str() == "docs/**"), "{c:?}");
    }

    #[test]
    fn removal_and_sessions() {
        let mut i = index(&["a/**", "b"]);
        i.join("s1", "a/**");
        i.join("s1", "b");
        assert_eq!(i.count_of("s1"), 2);
        i.leave("s1", "b");
        assert_eq!(i.of_session("s1").collect::<Vec<_>>(), ["a/**"]);
        i.remove("a/**");
        i.remove("b");
        assert!(i.candidates("a/x").is_empty());
        assert_eq!(i.leave_all("s1").len(), 1);
        assert_eq!(i, LockIndex::default());
    }
}
