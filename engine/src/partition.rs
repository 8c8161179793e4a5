//! Partitions: which partition a key hashes to, which core owns a partition, and (in debug
//! builds) the check that only the owning core touches a partition's index and log. Imports
//! no sibling.

use std::cell::Cell;

use xxhash_rust::xxh3::xxh3_64;

/// Partition number reserved for bucket records (owned by core 0).
pub const BUCKET_PARTITION: u16 = u16::MAX;

/// The partition of a key: fixed at format time, never re-hashed.
pub fn partition_for(bucket: &str, key: &str, partitions: u16) -> u16 {
    let mut buf = Vec::with_capacity(bucket.len() + key.len() + 1);
    buf.extend_from_slice(bucket.as_bytes());
    buf.push(b'/');
    buf.extend_from_slice(key.as_bytes());
    (xxh3_64(&buf) % partitions as u64) as u16
}

/// The core that owns a partition (bucket records belong to core 0).
pub fn owner_of(partition: u16, cores: usize) -> usize {
    if partition == BUCKET_PARTITION {
        0
    } else {
        partition as usize % cores
    }
}

thread_local! {
    /// The core whose metadata service runs on this thread (one per executor thread).
    static CURRENT_CORE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks this thread as the one running core `core`'s metadata service.
pub(crate) fn enter_core(core: usize) {
    CURRENT_CORE.with(|c| c.set(Some(core)));
}

/// Debug builds: panics unless this thread runs the core that owns `partition`. The index
/// and log of a partition are touched only by their core; that is what makes them safe
/// without locks (ARCHITECTURE.md, invariant 7).
#[inline]
pub(crate) fn debug_assert_owner(partition: u16, cores: usize) {
    if cfg!(debug_assertions) {
        let owner = owner_of(partition, cores);
        let current = CURRENT_CORE.with(Cell::get);
        assert_eq!(current, Some(owner), "partition {partition} belongs to core {owner}, touched by core {current:?}");
    }
}

/// Debug builds: panics unless this thread runs the core that owns the key's partition.
/// Release builds compute nothing (not even the hash).
#[inline]
pub(crate) fn debug_assert_key_owner(bucket: &str, key: &str, partitions: u16, cores: usize) {
    if cfg!(debug_assertions) {
        debug_assert_owner(partition_for(bucket, key, partitions), cores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_records_belong_to_core_0_and_partitions_spread() {
        assert_eq!(owner_of(BUCKET_PARTITION, 3), 0);
        assert_eq!(owner_of(7, 3), 1);
        let p = partition_for("b", "k", 256);
        assert!(p < 256);
        assert_eq!(p, partition_for("b", "k", 256), "stable");
    }

    #[test]
    fn the_owner_check_follows_the_thread() {
        std::thread::spawn(|| {
            enter_core(1);
            debug_assert_owner(1, 2);
            debug_assert_owner(3, 2);
        })
        .join()
        .unwrap();
        let wrong = std::thread::spawn(|| {
            enter_core(0);
            debug_assert_owner(1, 2);
        })
        .join();
        assert_eq!(wrong.is_err(), cfg!(debug_assertions));
    }
}
