//! `HostCache`: which CA SKIDs validated a host, kept for a TTL (default
//! one hour) under a byte footprint bound with least-recently-used
//! eviction, as upstream's JIT trust cache. The clock is passed in, so
//! tests drive it (tokio's paused time or hand-made instants).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// How long a host's entry lives unless configured otherwise.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(3600);
/// The footprint bound unless configured otherwise: about 200 hosts with
/// 20-byte SKIDs and 30-character names.
pub const DEFAULT_CACHE_MAX_BYTES: usize = 32 * 1024;
/// The bookkeeping an entry costs on top of its host name and SKIDs (map
/// slot, vectors, timestamps), counted so the bound reflects real memory.
pub const ENTRY_OVERHEAD: usize = 96;

#[derive(Debug)]
struct CacheEntry {
    skids: Vec<Vec<u8>>,
    expires: Instant,
    /// Logical time of last use; the smallest is the LRU entry.
    used: u64,
    cost: usize,
}

/// Host name -> SKIDs of the CAs that validated it. See the module docs.
#[derive(Debug)]
pub struct HostCache {
    ttl: Duration,
    max_bytes: usize,
    entries: HashMap<String, CacheEntry>,
    bytes: usize,
    tick: u64,
    evictions: u64,
}

impl HostCache {
    /// An empty cache whose entries live `ttl` and whose footprint stays
    /// at or under `max_bytes` (0 disables caching).
    pub fn new(ttl: Duration, max_bytes: usize) -> Self {
        Self { ttl, max_bytes, entries: HashMap::new(), bytes: 0, tick: 0, evictions: 0 }
    }

    /// What an entry for `host` with `skids` costs against the bound.
    pub fn cost(host: &str, skids: &[Vec<u8>]) -> usize {
        ENTRY_OVERHEAD + host.len() + skids.iter().map(|s| s.len() + 24).sum::<usize>()
    }

    /// The SKIDs cached for `host`, if any and not expired at `now`; a hit
    /// makes the entry the most recently used.
    pub fn get(&mut self, host: &str, now: Instant) -> Option<Vec<Vec<u8>>> {
        let expired = self.entries.get(host)?.expires <= now;
        if expired {
            self.remove(host);
            return None;
        }
        self.tick += 1;
        let e = self.entries.get_mut(host)?;
        e.used = self.tick;
        Some(e.skids.clone())
    }

    /// Caches `skids` for `host` from `now`, evicting expired entries, then
    /// least-recently-used ones, until it fits. Returns false (and caches
    /// nothing) if the entry alone is over the bound.
    pub fn insert(&mut self, host: &str, skids: Vec<Vec<u8>>, now: Instant) -> bool {
        self.remove(host);
        let cost = Self::cost(host, &skids);
        if cost > self.max_bytes {
            return false;
        }
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expires > now);
        if self.entries.len() != before {
            self.bytes = self.entries.values().map(|e| e.cost).sum();
        }
        while self.bytes + cost > self.max_bytes {
            let Some(lru) = self.entries.iter().min_by_key(|(_, e)| e.used).map(|(h, _)| h.clone())
            else {
                break;
            };
            self.remove(&lru);
            self.evictions += 1;
        }
        self.tick += 1;
        let entry = CacheEntry { skids, expires: now + self.ttl, used: self.tick, cost };
        self.entries.insert(host.to_owned(), entry);
        self.bytes += cost;
        true
    }

    /// Forgets `host` (its cached CAs stopped validating it).
    pub fn remove(&mut self, host: &str) {
        if let Some(e) = self.entries.remove(host) {
            self.bytes -= e.cost;
        }
    }

    /// Whether `host` has an entry (expired or not); for tests and stats.
    pub fn contains(&self, host: &str) -> bool {
        self.entries.contains_key(host)
    }

    /// Hosts held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no host is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The footprint now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The footprint bound.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// How long entries live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Entries evicted to stay under the bound since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skid(b: u8) -> Vec<Vec<u8>> {
        vec![vec![b; 20]]
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let t0 = Instant::now();
        let mut c = HostCache::new(Duration::from_secs(3600), 4096);
        assert!(c.insert("a.example", skid(1), t0));
        assert_eq!(c.get("a.example", t0 + Duration::from_secs(3599)), Some(skid(1)));
        assert_eq!(c.get("a.example", t0 + Duration::from_secs(3600)), None);
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_under_paused_tokio_time() {
        let mut c = HostCache::new(DEFAULT_CACHE_TTL, DEFAULT_CACHE_MAX_BYTES);
        c.insert("a.example", skid(1), Instant::now());
        tokio::time::advance(Duration::from_secs(1800)).await;
        assert!(c.get("a.example", Instant::now()).is_some());
        tokio::time::advance(Duration::from_secs(1800)).await;
        assert!(c.get("a.example", Instant::now()).is_none());
    }

    #[test]
    fn footprint_bound_evicts_the_least_recently_used_host() {
        let t0 = Instant::now();
        let per = HostCache::cost("a.example", &skid(0));
        let mut c = HostCache::new(Duration::from_secs(60), per * 2);
        c.insert("a.example", skid(1), t0);
        c.insert("b.example", skid(2), t0);
        // Touch a: b becomes the least recently used.
        assert!(c.get("a.example", t0).is_some());
        c.insert("c.example", skid(3), t0);
        assert!(c.contains("a.example"));
        assert!(!c.contains("b.example"));
        assert!(c.contains("c.example"));
        assert_eq!(c.evictions(), 1);
        assert!(c.bytes() <= c.max_bytes());
    }

    #[test]
    fn an_entry_over_the_bound_is_not_cached_and_evicts_nothing() {
        let t0 = Instant::now();
        let mut c = HostCache::new(Duration::from_secs(60), 200);
        assert!(c.insert("a", skid(1), t0));
        assert!(!c.insert("b", vec![vec![0; 300]], t0));
        assert!(c.contains("a"));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn reinserting_a_host_replaces_its_entry_and_cost() {
        let t0 = Instant::now();
        let mut c = HostCache::new(Duration::from_secs(60), 4096);
        c.insert("a", skid(1), t0);
        c.insert("a", vec![vec![2; 20], vec![3; 20]], t0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), HostCache::cost("a", &[vec![2; 20], vec![3; 20]]));
    }
}
