//! [`Deadlines`]: the one deadline queue of the daemon. The writer keeps
//! lease and lock-TTL deadlines in one (keyed by lease and grant,
//! in `Instant`s), the lifecycle manager its per-session re-derivation
//! times (in ms). Each sleeps until the earliest entry with
//! [`sleep_until`] and not at all while the queue is empty, so an idle
//! daemon makes no periodic wake-ups.
//!
//! Owns only ordering: what a due key means is its user's business. No
//! I/O, no clock reads (callers pass `now`).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use tokio::time::Instant;

/// Keys with a deadline each, earliest first. Setting a key again moves
/// it; a key is due once its deadline is at or before `now`. Costs
/// O(log n) per change and per due key, never a scan of every key.
#[derive(Debug)]
pub struct Deadlines<T, K> {
    queue: BTreeSet<(T, K)>,
    index: HashMap<K, T>,
}

impl<T, K> Default for Deadlines<T, K> {
    fn default() -> Self {
        Deadlines {
            queue: BTreeSet::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Ord + Copy, K: Ord + Hash + Clone> Deadlines<T, K> {
    /// Sets (or moves) `key`'s deadline to `at`.
    pub fn set(&mut self, key: K, at: T) {
        if let Some(old) = self.index.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }

    /// Forgets `key`'s deadline (absent is fine).
    pub fn clear(&mut self, key: &K) {
        if let Some(old) = self.index.remove(key) {
            self.queue.remove(&(old, key.clone()));
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<T> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns at most `max` keys due at `now`, earliest
    /// first; the rest stay due for the next call.
    pub fn pop_due(&mut self, now: T, max: usize) -> Vec<K> {
        let mut due = Vec::new();
        while due.len() < max && self.queue.first().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, key)) = self.queue.pop_first() {
                self.index.remove(&key);
                due.push(key);
            }
        }
        due
    }
}

/// Sleeps until `at`, or forever when there is no deadline.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
impl<T: Ord + Copy, K: Ord + Hash + Clone> Deadlines<T, K> {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_due_in_deadline_order_and_a_moved_key_once() {
        let mut d: Deadlines<i64, &str> = Deadlines::default();
        assert_eq!(d.next(), None);
        d.set("b", 20);
        d.set("a", 10);
        d.set("c", 30);
        d.set("b", 5); // moved earlier
        assert_eq!(d.next(), Some(5));
        assert_eq!(d.len(), 3);
        assert_eq!(d.pop_due(10, usize::MAX), vec!["b", "a"]);
        d.clear(&"c");
        d.clear(&"nope");
        assert!(d.is_empty());
        assert_eq!(d.pop_due(100, usize::MAX), Vec::<&str>::new());
    }

    #[test]
    fn a_bounded_pop_leaves_the_rest_due() {
        let mut d: Deadlines<i64, u32> = Deadlines::default();
        for k in 0..5 {
            d.set(k, i64::from(k));
        }
        assert_eq!(d.pop_due(10, 2), vec![0, 1]);
        assert_eq!(d.next(), Some(2));
        assert_eq!(d.pop_due(10, 10), vec![2, 3, 4]);
    }

    #[test]
    fn agrees_with_a_naive_model_over_random_operations() {
        // A small deterministic generator is enough to walk many orders
        // of set / move / clear / pop.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut d: Deadlines<u64, u64> = Deadlines::default();
        let mut model: HashMap<u64, u64> = HashMap::new();
        for _ in 0..20_000 {
            let key = next() % 50;
            match next() % 4 {
                0 | 1 => {
                    let at = next() % 1_000;
                    d.set(key, at);
                    model.insert(key, at);
                }
                2 => {
                    d.clear(&key);
                    model.remove(&key);
                }
                _ => {
                    let now = next() % 1_000;
                    let mut want: Vec<(u64, u64)> = model
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(k, at)| (*at, *k))
                        .collect();
                    want.sort();
                    for (_, k) in &want {
                        model.remove(k);
                    }
                    let got = d.pop_due(now, usize::MAX);
                    assert_eq!(got, want.into_iter().map(|(_, k)| k).collect::<Vec<_>>());
                }
            }
            assert_eq!(d.len(), model.len());
            assert_eq!(d.next(), model.values().min().copied());
        }
    }
}
