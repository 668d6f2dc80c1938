//! Short-lived, bounded caches that keep per-request round trips off the hot path (who an API
//! key belongs to, a project's destination settings, checked DNS answers, per-profile HTTP
//! clients). Entries live for the configured time; a revoked key or a changed allowlist takes
//! effect on every instance within it (`cache_ttl_ms`; 0 turns caching off). Past its size
//! bound a cache evicts its oldest entries first (every entry lives the same time, so the
//! oldest are the nearest to expiring anyway), one for each entry added, never all at once.
//!
//! A map behind a read-write lock: a proxy call looks up three of these caches, and a
//! general-purpose concurrent cache (moka's, with its access buffers, frequency sketch and
//! clock) cost ~3,000 instructions a call for those three lookups (docs/benchmarks.md,
//! issue 17). A lookup here takes the read lock, hashes the key and reads the clock once.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

/// A cache whose entries expire `ttl` after insertion, holding at most `capacity` of them.
pub struct TtlCache<K, V> {
    inner: Option<Inner<K, V>>,
}

struct Inner<K, V> {
    ttl: Duration,
    capacity: usize,
    state: RwLock<State<K, V>>,
}

struct State<K, V> {
    entries: HashMap<K, Stored<V>>,
    /// Each insertion's number and key, oldest first. A key inserted again (or removed) leaves
    /// its older records behind; they are skipped when they come up, and dropped in one pass
    /// once they outnumber the entries (so the queue stays within about twice the map).
    order: VecDeque<(u64, K)>,
    insertions: u64,
}

struct Stored<V> {
    value: V,
    expires: Instant,
    insertion: u64,
}

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A zero `ttl` keeps nothing.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        let inner = (!ttl.is_zero()).then(|| Inner {
            ttl,
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX).max(1),
            state: RwLock::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
                insertions: 0,
            }),
        });
        Self { inner }
    }

    /// Looks up by any borrowed form of the key (`&str` for a `String` key: no allocation).
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = self.inner.as_ref()?;
        let state = inner.state.read().unwrap_or_else(PoisonError::into_inner);
        let stored = state.entries.get(key)?;
        (stored.expires > Instant::now()).then(|| stored.value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let Some(inner) = &self.inner else {
            return;
        };
        let expires = Instant::now() + inner.ttl;
        let mut state = inner.state.write().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        state.insertions += 1;
        let insertion = state.insertions;
        state.order.push_back((insertion, key.clone()));
        state.entries.insert(
            key,
            Stored {
                value,
                expires,
                insertion,
            },
        );
        while state.entries.len() > inner.capacity {
            let Some((insertion, key)) = state.order.pop_front() else {
                break;
            };
            if state
                .entries
                .get(&key)
                .is_some_and(|stored| stored.insertion == insertion)
            {
                state.entries.remove(&key);
            }
        }
        if state.order.len() > 2 * state.entries.len() + 64 {
            let entries = &state.entries;
            state.order.retain(|(insertion, key)| {
                entries
                    .get(key)
                    .is_some_and(|stored| stored.insertion == *insertion)
            });
        }
    }

    /// Forgets one entry (on this instance), e.g. after its settings changed here.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(inner) = &self.inner {
            let mut state = inner.state.write().unwrap_or_else(PoisonError::into_inner);
            state.entries.remove(key);
        }
    }

    /// Forgets every entry (on this instance), e.g. after a key is revoked here.
    pub fn clear(&self) {
        if let Some(inner) = &self.inner {
            let mut state = inner.state.write().unwrap_or_else(PoisonError::into_inner);
            state.entries.clear();
            state.order.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many entries and insertion records the cache holds.
    fn sizes<K, V>(cache: &TtlCache<K, V>) -> (usize, usize) {
        let state = cache.inner.as_ref().unwrap().state.read().unwrap();
        (state.entries.len(), state.order.len())
    }

    #[test]
    fn entries_expire() {
        let cache = TtlCache::new(Duration::from_millis(30), 10);
        cache.insert("k", 1);
        assert_eq!(cache.get(&"k"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&"k"), None);
    }

    #[test]
    fn a_full_cache_evicts_its_oldest_entries_one_at_a_time() {
        let cache = TtlCache::new(Duration::from_secs(60), 100);
        for i in 0..1000 {
            cache.insert(i, i);
            assert_eq!(sizes(&cache).0, (i + 1).min(100));
        }
        assert_eq!(cache.get(&899), None);
        for i in 900..1000 {
            assert_eq!(cache.get(&i), Some(i));
        }
    }

    #[test]
    fn a_key_inserted_again_is_as_young_as_its_last_insertion() {
        let cache = TtlCache::new(Duration::from_secs(60), 3);
        cache.insert("a", 1);
        cache.insert("b", 2);
        cache.insert("a", 3);
        cache.insert("c", 4);
        cache.insert("d", 5);
        // `b` was the oldest; `a`'s first record no longer stood for it.
        assert_eq!(cache.get(&"b"), None);
        assert_eq!(cache.get(&"a"), Some(3));
        assert_eq!(cache.get(&"c"), Some(4));
        assert_eq!(cache.get(&"d"), Some(5));
    }

    #[test]
    fn the_insertion_records_stay_bounded_when_the_same_keys_come_back() {
        let cache = TtlCache::new(Duration::from_secs(60), 1000);
        for i in 0..100_000 {
            cache.insert(i % 10, i);
            cache.remove(&((i + 5) % 10));
        }
        let (entries, records) = sizes(&cache);
        assert!(entries <= 10, "{entries}");
        // Stale records are dropped once they outnumber the entries: never more than
        // twice the ten keys and the slack.
        assert!(
            records <= 2 * 10 + 66,
            "{records} records for {entries} entries"
        );
    }

    #[test]
    fn removed_and_cleared_entries_are_gone() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        cache.insert("k".to_owned(), 1);
        cache.insert("j".to_owned(), 2);
        cache.remove("k");
        assert_eq!(cache.get("k"), None);
        assert_eq!(cache.get("j"), Some(2));
        cache.clear();
        assert_eq!(cache.get("j"), None);
        assert_eq!(sizes(&cache), (0, 0));
    }

    #[test]
    fn readers_and_writers_on_several_threads_see_whole_entries() {
        let cache = std::sync::Arc::new(TtlCache::new(Duration::from_secs(60), 64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let key = (i * 7 + t) % 200;
                        cache.insert(key, (key, key * 2));
                        if let Some((k, double)) = cache.get(&((i + t) % 200)) {
                            assert_eq!(double, k * 2);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(sizes(&cache).0 <= 64);
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let cache = TtlCache::new(Duration::ZERO, 10);
        cache.insert("k", 1);
        assert_eq!(cache.get(&"k"), None);
    }
}
