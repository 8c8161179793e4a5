//! The drive state every core shares: where the drives are and how they were formatted
//! (erasure layout, block size, partition count, write quorum), which are online now, how
//! many operations run on each, and the epoch that tells cores to reopen their logs after a
//! drive was formatted anew. The data path, the quorum runner and the healer use it instead
//! of the `Engine` handle, which sits above them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::erasure::Layout;
use crate::format::{partition_dir_name, DriveSet};
use crate::partition::partition_for;

pub struct DriveState {
    set: DriveSet,
    layout: Layout,
    block_size: usize,
    /// Per drive: online (true) or not. Starts as found at start-up; the drive monitor
    /// (monitor.rs) takes a failing drive offline and brings a replaced one back.
    online: Vec<AtomicBool>,
    /// Per drive: operations running on it now (quorum.rs skips a stalled drive).
    inflight: Vec<AtomicUsize>,
    /// Bumped whenever a drive is formatted anew while serving: cores reopen their logs.
    epoch: AtomicU64,
}

/// Counts one running operation on a drive for as long as it lives.
pub struct InflightGuard {
    drives: Arc<DriveState>,
    drive: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.drives.inflight[self.drive].fetch_sub(1, Ordering::Relaxed);
    }
}

impl DriveState {
    pub(crate) fn new(set: DriveSet) -> Arc<DriveState> {
        let layout = Layout { data: set.format.data_shards, parity: set.format.parity_shards };
        Arc::new(DriveState {
            layout,
            block_size: set.format.block_size as usize,
            online: set.online.iter().map(|o| AtomicBool::new(*o)).collect(),
            inflight: set.online.iter().map(|_| AtomicUsize::new(0)).collect(),
            epoch: AtomicU64::new(0),
            set,
        })
    }

    /// What start-up found on the drives (paths, format, notes).
    pub fn set(&self) -> &DriveSet {
        &self.set
    }
    pub fn paths(&self) -> &[PathBuf] {
        &self.set.paths
    }
    pub fn online(&self, drive: usize) -> bool {
        self.online[drive].load(Ordering::Relaxed)
    }
    pub(crate) fn set_online(&self, drive: usize, online: bool) {
        self.online[drive].store(online, Ordering::Relaxed);
    }
    /// The drives online now.
    pub fn online_paths(&self) -> Vec<PathBuf> {
        (0..self.paths().len()).filter(|d| self.online(*d)).map(|d| self.paths()[d].clone()).collect()
    }
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }
    pub(crate) fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }
    pub fn inflight(&self, drive: usize) -> usize {
        self.inflight[drive].load(Ordering::Relaxed)
    }
    pub fn inflight_guard(self: &Arc<Self>, drive: usize) -> InflightGuard {
        self.inflight[drive].fetch_add(1, Ordering::Relaxed);
        InflightGuard { drives: self.clone(), drive }
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn write_quorum(&self) -> usize {
        self.set.write_quorum()
    }
    pub fn partition_count(&self) -> u16 {
        self.set.format.partition_count
    }
    pub fn partition_of(&self, bucket: &str, key: &str) -> u16 {
        partition_for(bucket, key, self.partition_count())
    }

    /// Where a data file is (or belongs) on every drive, in drive order.
    pub fn data_file_paths(&self, partition: u16, file_id: u128) -> Vec<PathBuf> {
        let dir = partition_dir_name(partition);
        let name = format!("{file_id:032x}");
        self.paths().iter().map(|p| p.join("data").join(&dir).join(&name)).collect()
    }

    /// A partition's data directory on one drive.
    pub fn partition_dir(&self, drive: usize, partition: u16) -> PathBuf {
        self.paths()[drive].join("data").join(partition_dir_name(partition))
    }
}
