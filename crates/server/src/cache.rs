//! Short-lived, bounded caches that keep per-request round trips off the hot path (who an API
//! key belongs to, a project's destination settings, checked DNS answers, per-profile HTTP
//! clients). Entries live for the configured time; a revoked key or a changed allowlist takes
//! effect on every instance within it (`cache_ttl_ms`; 0 turns caching off). Past its size
//! bound a cache evicts its oldest entry for each one added (every entry lives the same time,
//! so the oldest is the nearest to expiring anyway), never all at once; expired entries are
//! dropped as new ones arrive.
//!
//! An insertion-ordered map behind a read-write lock: a proxy call looks up three of these
//! caches, and a general-purpose concurrent cache (moka's, with its access buffers, frequency
//! sketch and clock) cost 3,030 instructions a call for those three lookups
//! (docs/benchmarks.md, issue 17). A lookup here takes the read lock, hashes the key
//! (SipHash, randomly keyed: some keys come from callers) and reads the clock once. Every
//! change holds the write lock for a bounded amount of work, and what it removes is dropped
//! after the lock is released.

use std::collections::hash_map::RandomState;
use std::hash::Hash;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use hashlink::LinkedHashMap;

/// Expired entries an insertion drops at most, besides the one a full cache evicts: expired
/// entries go at twice the rate new ones come, without one insertion clearing a backlog.
const EXPIRED_DROPPED_PER_INSERT: usize = 2;

/// A cache whose entries expire `ttl` after insertion, holding at most `capacity` of them.
pub struct TtlCache<K, V> {
    inner: Option<Inner<K, V>>,
}

struct Inner<K, V> {
    ttl: Duration,
    capacity: usize,
    /// Oldest insertion first; all entries live the same time, so also soonest to expire.
    entries: RwLock<LinkedHashMap<K, Stored<V>, RandomState>>,
}

struct Stored<V> {
    value: V,
    expires: Instant,
}

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A zero `ttl` or `capacity` keeps nothing.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        let inner = (!ttl.is_zero() && capacity > 0).then(|| Inner {
            ttl,
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            entries: RwLock::new(LinkedHashMap::with_hasher(RandomState::new())),
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
        let entries = inner.entries.read().unwrap_or_else(PoisonError::into_inner);
        let stored = entries.get(key)?;
        (stored.expires > Instant::now()).then(|| stored.value.clone())
    }

    /// Adds or replaces `key` (a replaced key counts as the newest).
    pub fn insert(&self, key: K, value: V) {
        let Some(inner) = &self.inner else {
            return;
        };
        let now = Instant::now();
        let stored = Stored {
            value,
            expires: now + inner.ttl,
        };
        let mut dropped = Vec::new();
        {
            let mut entries = inner
                .entries
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(old) = entries.insert(key, stored) {
                dropped.push(old);
            }
            if entries.len() > inner.capacity {
                dropped.extend(entries.pop_front().map(|(_, stored)| stored));
            }
            for _ in 0..EXPIRED_DROPPED_PER_INSERT {
                if entries
                    .front()
                    .is_none_or(|(_, stored)| stored.expires > now)
                {
                    break;
                }
                dropped.extend(entries.pop_front().map(|(_, stored)| stored));
            }
        }
        drop(dropped);
    }

    /// Forgets one entry (on this instance), e.g. after its settings changed here.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(inner) = &self.inner {
            let removed = inner
                .entries
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(key);
            drop(removed);
        }
    }

    /// Forgets every entry (on this instance), e.g. after a key is revoked here.
    pub fn clear(&self) {
        if let Some(inner) = &self.inner {
            let emptied = std::mem::replace(
                &mut *inner
                    .entries
                    .write()
                    .unwrap_or_else(PoisonError::into_inner),
                LinkedHashMap::with_hasher(RandomState::new()),
            );
            drop(emptied);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len<K, V>(cache: &TtlCache<K, V>) -> usize {
        cache.inner.as_ref().unwrap().entries.read().unwrap().len()
    }

    #[test]
    fn entries_expire() {
        let cache = TtlCache::new(Duration::from_millis(500), 10);
        cache.insert("k", 1);
        assert_eq!(cache.get(&"k"), Some(1));
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(cache.get(&"k"), None);
    }

    #[test]
    fn expired_entries_are_dropped_as_new_ones_arrive() {
        let cache = TtlCache::new(Duration::from_millis(300), 100);
        for i in 0..10 {
            cache.insert(i, i);
        }
        std::thread::sleep(Duration::from_millis(400));
        for i in 100..106 {
            cache.insert(i, i);
        }
        // Two expired entries go with each insertion: all ten after five.
        assert_eq!(len(&cache), 6);
        assert_eq!(cache.get(&105), Some(105));
    }

    #[test]
    fn a_full_cache_evicts_its_oldest_entries_one_at_a_time() {
        let cache = TtlCache::new(Duration::from_secs(60), 100);
        for i in 0..1000 {
            cache.insert(i, i);
            assert_eq!(len(&cache), (i + 1).min(100));
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
        // `b` was the oldest once `a` came again.
        assert_eq!(cache.get(&"b"), None);
        assert_eq!(cache.get(&"a"), Some(3));
        assert_eq!(cache.get(&"c"), Some(4));
        assert_eq!(cache.get(&"d"), Some(5));
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
        assert_eq!(len(&cache), 0);
    }

    #[test]
    fn readers_and_writers_on_several_threads_keep_the_bound() {
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
        assert!(len(&cache) <= 64);
    }

    #[test]
    fn a_zero_ttl_or_capacity_keeps_nothing() {
        for cache in [
            TtlCache::new(Duration::ZERO, 10),
            TtlCache::new(Duration::from_secs(60), 0),
        ] {
            cache.insert("k", 1);
            assert_eq!(cache.get(&"k"), None);
        }
    }
}
