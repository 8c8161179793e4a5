//! A bounded cache of verified data blocks, one per core (each executor owns its own, so
//! no locks): the engine reads with O_DIRECT, so without it every GET goes to the drives and
//! pays for the erasure read, even for an object read a thousand times a second.
//!
//! Keyed by (data file id, block index). Data files are written once and never changed (an
//! overwrite writes a new file), and file ids are random 128-bit numbers, so an entry never
//! goes stale; blocks of deleted files age out. A block holds the stored bytes, so an
//! encrypted object's blocks stay ciphertext here. Only reads fill it (a PUT-heavy load does
//! not grow it). Eviction is least recently used, by bytes.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

type BlockKey = (u128, u64);

struct BlockCache {
    budget: usize,
    used: usize,
    tick: u64,
    blocks: HashMap<BlockKey, (Rc<Vec<u8>>, u64)>,
    /// Last use -> block, oldest first.
    order: BTreeMap<u64, BlockKey>,
}

thread_local! {
    static CACHE: RefCell<BlockCache> = RefCell::new(BlockCache {
        budget: 0,
        used: 0,
        tick: 0,
        blocks: HashMap::new(),
        order: BTreeMap::new(),
    });
}

/// Process-wide counters (every core's cache), for metrics. Counters, not settings: each
/// core's budget and blocks are its own (thread-local).
pub static HITS: AtomicU64 = AtomicU64::new(0);
pub static MISSES: AtomicU64 = AtomicU64::new(0);
pub static BYTES: AtomicU64 = AtomicU64::new(0);

/// Sets this core's budget in bytes (0 turns the cache off), evicting what no longer fits.
/// The core's metadata service sets it when it starts (`EngineConfig::cache_bytes`).
pub(crate) fn set_budget(bytes: usize) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.budget = bytes;
        c.evict_to(bytes);
    });
}

/// A cached block, marked as just used.
pub fn get(file_id: u128, index: u64) -> Option<Rc<Vec<u8>>> {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.budget == 0 {
            return None;
        }
        c.tick += 1;
        let tick = c.tick;
        let Some((block, last)) = c.blocks.get_mut(&(file_id, index)) else {
            MISSES.fetch_add(1, Relaxed);
            return None;
        };
        let (block, old) = (block.clone(), std::mem::replace(last, tick));
        c.order.remove(&old);
        c.order.insert(tick, (file_id, index));
        HITS.fetch_add(1, Relaxed);
        Some(block)
    })
}

pub fn contains(file_id: u128, index: u64) -> bool {
    CACHE.with(|c| c.borrow().blocks.contains_key(&(file_id, index)))
}

/// Keeps a block just read and verified, evicting the least recently used ones to fit it. A
/// block larger than a quarter of the budget is not kept (it would flush the cache).
pub fn insert(file_id: u128, index: u64, block: Rc<Vec<u8>>) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let len = block.len();
        if len == 0 || len > c.budget / 4 || c.blocks.contains_key(&(file_id, index)) {
            return;
        }
        let room = c.budget - len;
        c.evict_to(room);
        c.tick += 1;
        let tick = c.tick;
        c.blocks.insert((file_id, index), (block, tick));
        c.order.insert(tick, (file_id, index));
        c.used += len;
        BYTES.fetch_add(len as u64, Relaxed);
    });
}

impl BlockCache {
    fn evict_to(&mut self, limit: usize) {
        while self.used > limit {
            let Some((_, key)) = self.order.pop_first() else { break };
            if let Some((block, _)) = self.blocks.remove(&key) {
                self.used -= block.len();
                BYTES.fetch_sub(block.len() as u64, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_recently_used_blocks_within_the_budget() {
        set_budget(4096);
        let block = |n: u8| Rc::new(vec![n; 1000]);
        for i in 0..4 {
            insert(1, i, block(i as u8));
        }
        assert!(get(1, 0).is_some(), "block 0 is used again: now the newest");
        insert(1, 4, block(4)); // 5000 bytes > 4096: the least recently used (1) goes
        assert!(!contains(1, 1));
        assert_eq!(get(1, 0).unwrap()[0], 0);
        assert!(contains(1, 2) && contains(1, 3) && contains(1, 4));
        assert!(get(2, 0).is_none(), "another file's block");
        insert(1, 9, Rc::new(vec![0; 1025])); // over a quarter of the budget: not kept
        assert!(!contains(1, 9));
        set_budget(2000);
        let kept = (0..5).filter(|i| contains(1, *i)).count();
        assert_eq!(kept, 2, "a smaller budget evicts down to it");
        set_budget(0);
        assert!(get(1, 4).is_none(), "off");
        assert_eq!((0..5).filter(|i| contains(1, *i)).count(), 0);
    }
}
