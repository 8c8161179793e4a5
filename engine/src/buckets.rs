//! The bucket map every core reads: bucket name -> creation time and configuration
//! documents, plus the hidden system bucket that holds cluster-wide configuration. Core 0
//! owns bucket records (they go through its log); it updates this map after they are
//! durable, and every core reads it.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{EngineError, Result};
use crate::meta::BucketInfo;

/// Holds cluster-wide configuration; not a valid S3 bucket name, never listed, never holds
/// objects (every bucket check treats it as missing).
pub(crate) const SYSTEM_BUCKET: &str = ".ferrite";

/// Creates (Some) or removes (None) a bucket in a map: the one rule for start-up's replay
/// and for the live map.
pub(crate) fn apply_bucket(map: &mut BTreeMap<String, BucketInfo>, name: String, created_ms: Option<i64>) {
    match created_ms {
        Some(created_ms) => map.insert(name, BucketInfo { created_ms, config: BTreeMap::new() }),
        None => map.remove(&name),
    };
}

/// Sets (Some) or removes (None) one configuration document of a bucket in a map. The
/// system bucket exists as soon as it holds a document.
pub(crate) fn apply_config(map: &mut BTreeMap<String, BucketInfo>, name: &str, item: String, value: Option<String>) {
    if name == SYSTEM_BUCKET {
        map.entry(name.to_owned()).or_default();
    }
    if let Some(bucket) = map.get_mut(name) {
        match value {
            Some(value) => bucket.config.insert(item, value),
            None => bucket.config.remove(&item),
        };
    }
}

/// Written only by bucket create/delete/configuration (rare); read on every request. A
/// known exception to "no locks on the hot path" (ARCHITECTURE.md).
pub(crate) struct Buckets {
    map: RwLock<BTreeMap<String, BucketInfo>>,
}

impl Buckets {
    pub(crate) fn new(map: BTreeMap<String, BucketInfo>) -> Buckets {
        Buckets { map: RwLock::new(map) }
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, BucketInfo>> {
        match self.map.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, BucketInfo>> {
        match self.map.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn set(&self, name: String, created_ms: Option<i64>) {
        apply_bucket(&mut self.write(), name, created_ms);
    }

    pub(crate) fn set_config(&self, name: &str, item: String, value: Option<String>) {
        apply_config(&mut self.write(), name, item, value);
    }

    /// When a bucket was created; None when there is no such bucket.
    pub(crate) fn created_ms(&self, name: &str) -> Option<i64> {
        if name == SYSTEM_BUCKET {
            return None;
        }
        self.read().get(name).map(|b| b.created_ms)
    }

    /// One configuration document of a bucket (None: not set). Err when there is no bucket.
    pub(crate) fn config(&self, name: &str, item: &str) -> Result<Option<String>> {
        match self.read().get(name).filter(|_| name != SYSTEM_BUCKET) {
            Some(bucket) => Ok(bucket.config.get(item).cloned()),
            None => Err(EngineError::NoSuchBucket),
        }
    }

    /// One cluster-wide configuration document: None when not set.
    pub(crate) fn cluster_config(&self, item: &str) -> Option<String> {
        self.read().get(SYSTEM_BUCKET).and_then(|b| b.config.get(item).cloned())
    }

    /// Every cluster-wide configuration document whose name starts with `prefix`.
    pub(crate) fn cluster_configs(&self, prefix: &str) -> Vec<(String, String)> {
        let buckets = self.read();
        let Some(system) = buckets.get(SYSTEM_BUCKET) else { return Vec::new() };
        system.config.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Every visible bucket with its creation time, in name order.
    pub(crate) fn list(&self) -> Vec<(String, i64)> {
        self.read().iter().filter(|(n, _)| *n != SYSTEM_BUCKET).map(|(n, b)| (n.clone(), b.created_ms)).collect()
    }

    /// Every bucket with its configuration (the system bucket too), for snapshots.
    pub(crate) fn infos(&self) -> Vec<(String, BucketInfo)> {
        self.read().iter().map(|(n, b)| (n.clone(), b.clone())).collect()
    }
}
