//! Subscribers' filters: which events each open stream wants, shared
//! between the streams that asked for the same one.
//!
//! It must not read or hold events: a filter only answers yes or no about
//! one event at a time.

use crate::hub::Published;
use coord_proto::ids;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// What a subscriber wants to see: the query's filter fields.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FilterKey {
    /// Kind globs (`lock.*`); none takes every kind.
    pub kinds: Vec<String>,
    /// Only events about this session (as the actor or named in the
    /// payload).
    pub session: Option<String>,
    /// Only events about this resource (normalized).
    pub resource: Option<String>,
}

/// A subscriber's filter, shared by every open subscriber that asked for
/// the same one ([`Filters`]), with the verdict on the last event it was
/// asked about.
///
/// Why shared: one event wakes every subscriber, and subscribers mostly
/// ask for the same few filters (a fleet's sentinels, a dashboard's
/// tabs). Each evaluating its own copy cost two cache misses per
/// subscriber (its globs live on the heap) — 6 % of the daemon's CPU when
/// fanning out to 10,000 (docs/BENCHMARKS.md, "Fan-out"). Shared, the
/// first subscriber woken evaluates it and the others read the verdict.
pub struct Filter {
    key: FilterKey,
    /// `seq << 1 | matched` for the last event evaluated; 0 for none (seqs
    /// start at 1). A verdict is a pure function of the filter and the
    /// event, and a seq names one event for the daemon's life, so a
    /// verdict stored by one thread is right for any other.
    last: AtomicU64,
}

impl Filter {
    fn new(key: FilterKey) -> Self {
        Filter {
            key,
            last: AtomicU64::new(0),
        }
    }

    /// Whether the subscriber wants `p`; evaluated once per event, then
    /// read by every subscriber sharing the filter.
    pub fn matches(&self, p: &Published) -> bool {
        let seq = p.event.seq;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && last >> 1 == seq {
            return last & 1 == 1;
        }
        let matched = self.evaluate(p);
        if seq < 1 << 63 {
            self.last
                .store(seq << 1 | u64::from(matched), Ordering::Relaxed);
        }
        matched
    }

    fn evaluate(&self, p: &Published) -> bool {
        let (e, f) = (&p.event, &self.key);
        if !f.kinds.is_empty() && !f.kinds.iter().any(|k| ids::glob_match(k, e.kind())) {
            return false;
        }
        if let Some(r) = &f.resource {
            if e.resource.as_deref() != Some(r.as_str()) {
                return false;
            }
        }
        if let Some(s) = &f.session {
            if e.session_id.as_deref() != Some(s.as_str()) && !e.payload.sessions().any(|x| x == s)
            {
                return false;
            }
        }
        true
    }
}

/// The open subscribers' filters, one [`Filter`] per distinct
/// [`FilterKey`]; see [`Filter`] for why. Holds them weakly: a filter
/// lives as long as a subscriber uses it, and dead entries are swept
/// whenever the table reaches a power of two from 64 up, so it holds at
/// most 64 entries or twice the live filters, whichever is more.
#[derive(Default)]
pub struct Filters {
    table: std::sync::Mutex<HashMap<FilterKey, Weak<Filter>>>,
}

impl Filters {
    /// The shared filter for `key`.
    pub fn get(&self, key: FilterKey) -> Arc<Filter> {
        // A poisoned table (a panic while held) is still a usable map.
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = table.get(&key).and_then(Weak::upgrade) {
            return f;
        }
        if table.len() >= 64 && table.len().is_power_of_two() {
            table.retain(|_, f| f.strong_count() > 0);
        }
        let f = Arc::new(Filter::new(key.clone()));
        table.insert(key, Arc::downgrade(&f));
        f
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    fn published(seq: u64, kind: &str) -> Published {
        Published::custom(seq, kind)
    }

    fn key(kinds: &[&str]) -> FilterKey {
        FilterKey {
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            session: None,
            resource: None,
        }
    }

    #[test]
    fn equal_filters_are_shared_and_dead_ones_swept() {
        let filters = Filters::default();
        let a = filters.get(key(&["x.a"]));
        let b = filters.get(key(&["x.a"]));
        assert!(Arc::ptr_eq(&a, &b));
        let c = filters.get(key(&["x.*"]));
        assert!(!Arc::ptr_eq(&a, &c));
        // 200 filters opened and closed one by one: the table is swept as
        // it grows, so it never holds more than twice the live ones (3).
        for i in 0..200 {
            drop(filters.get(key(&[&format!("x.k{i}")])));
            assert!(filters.len() <= 64 + 3, "{}", filters.len());
        }
        assert!(Arc::ptr_eq(&a, &filters.get(key(&["x.a"]))));
    }

    #[test]
    fn a_verdict_is_per_event() {
        let f = Filter::new(key(&["x.a*"]));
        assert!(f.matches(&published(1, "x.ab")));
        assert!(!f.matches(&published(2, "x.b")));
        assert!(!f.matches(&published(2, "x.b")));
        assert!(f.matches(&published(3, "x.a")));
        // The verdict is kept by seq: the same seq is the same event, so
        // the second subscriber asking about it reads the first's answer
        // (this one's body differs only to show the memo is read).
        assert!(f.matches(&published(3, "x.zzz")));
        assert!(!f.matches(&published(4, "x.zzz")));
        // A filter with no kinds takes everything.
        let all = Filter::new(key(&[]));
        assert!(all.matches(&published(5, "x.q")));
    }
}
