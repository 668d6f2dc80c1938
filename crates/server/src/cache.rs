//! Short-lived, bounded caches that keep per-request round trips off the hot path (who an API
//! key belongs to, a project's destination settings, checked DNS answers, per-profile HTTP
//! clients). Entries live for the configured time; a revoked key or a changed allowlist takes
//! effect on every instance within it (`cache_ttl_ms`; 0 turns caching off). Past its size
//! bound a cache evicts the entries least likely to be used again, never all at once.

use std::hash::Hash;
use std::time::Duration;

/// A cache whose entries expire `ttl` after insertion, holding at most `capacity` of them.
pub struct TtlCache<K, V> {
    inner: Option<moka::sync::Cache<K, V>>,
}

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A zero `ttl` keeps nothing.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        let inner = (!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Self { inner }
    }

    /// Looks up by any borrowed form of the key (`&str` for a `String` key: no allocation).
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.as_ref()?.get(key)
    }

    pub fn insert(&self, key: K, value: V) {
        if let Some(inner) = &self.inner {
            inner.insert(key, value);
        }
    }

    /// Forgets one entry (on this instance), e.g. after its settings changed here.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(inner) = &self.inner {
            inner.invalidate(key);
        }
    }

    /// Forgets every entry (on this instance), e.g. after a key is revoked here.
    pub fn clear(&self) {
        if let Some(inner) = &self.inner {
            inner.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let cache = TtlCache::new(Duration::from_millis(30), 10);
        cache.insert("k", 1);
        assert_eq!(cache.get(&"k"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&"k"), None);
    }

    #[test]
    fn a_full_cache_evicts_some_entries_not_all() {
        let cache = TtlCache::new(Duration::from_secs(60), 100);
        for i in 0..1000 {
            cache.insert(i, i);
            // Reads make the first entries popular, so eviction keeps them.
            let _ = cache.get(&0);
        }
        if let Some(inner) = &cache.inner {
            inner.run_pending_tasks();
            assert!(inner.entry_count() <= 100, "{}", inner.entry_count());
            assert!(inner.entry_count() > 0);
        }
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let cache = TtlCache::new(Duration::ZERO, 10);
        cache.insert("k", 1);
        assert_eq!(cache.get(&"k"), None);
    }
}
