//! Healing passes: the background scanner and requested heals.
//!
//! Each core heals what it owns: the copies of its metadata log on every drive, the shards
//! of every object and multipart part in its partitions, and the leftovers of interrupted
//! writes in its partition directories. One pass walks all of that at a bounded rate:
//! - **scan** passes run in the background every `scan_interval`, at `scan_rate`;
//! - **heal** passes run when asked (`ferrite admin heal`, or a drive formatted as a
//!   replacement while serving), at `heal_rate` (0: as fast as the drives go).
//!
//! A heal request interrupts a running scan. Requests and progress are shared in
//! `HealState` (heal_state.rs); the drive monitor that asks for heals is monitor.rs. A pass
//! reads its core's index through [`IndexView`] (implemented by core.rs) and never touches
//! another core's partitions.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::data::{heal_block, PartFiles};
use crate::drives::DriveState;
use crate::format::HEAL_PENDING_FILE;
use crate::heal_state::{HealState, PassKind, PassStats};
use crate::index::IndexTotals;
use crate::meta::{DataLoc, ObjectMeta, PartLoc};
use crate::types::{now_ms, ObjectKey};

/// What a pass needs from its core's index (implemented by core.rs over the core's state).
pub(crate) trait IndexView {
    /// Up to `limit` objects after `after`, in key order.
    fn objects_after(&self, after: Option<&ObjectKey>, limit: usize) -> Vec<(ObjectKey, ObjectMeta)>;
    /// The parts of uploads in progress, with the object key they belong to.
    fn upload_parts(&self) -> Vec<(ObjectKey, PartLoc)>;
    fn object(&self, key: &ObjectKey) -> Option<ObjectMeta>;
    fn totals(&self) -> IndexTotals;
    /// The log offset below which every record is settled (no failed batch is pending).
    fn settled_wal_end(&self) -> u64;
    /// True from a batch that missed the write quorum until a batch carrying its void is
    /// acknowledged (a void being written still counts as pending).
    fn void_pending(&self) -> bool;
    /// Asks the commit loop to write the pending void now.
    fn retry_void(&self);
    /// Whether an object or an upload part references data file `file_id`.
    fn is_referenced(&self, file_id: u128) -> bool;
}

/// How long a pass waits for a failed log batch to be voided before it goes on without.
const SETTLE_WAIT: Duration = Duration::from_secs(3);
/// Objects read from the index at a time.
const OBJECTS_PER_LOOK: usize = 64;

/// Keeps a pass at its rate: after each unit of work, sleeps until the bytes read so far
/// fit the budget. Reads the rate anew each time, so a changed heal rate applies at once.
struct Pacer {
    start: Instant,
    bytes: u64,
}

impl Pacer {
    async fn account(&mut self, state: &HealState, kind: PassKind, bytes: u64) {
        self.bytes += bytes;
        let rate = state.rate(kind);
        if rate == 0 {
            // Unlimited: still let the core serve requests between blocks.
            monoio::time::sleep(Duration::ZERO).await;
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            monoio::time::sleep(due - elapsed).await;
        }
    }
}

/// What healing one part found.
#[derive(Default)]
struct PartCheck {
    repaired: u64,
    lost_blocks: u64,
}

/// The per-core loop: background scans on their interval, heals when requested.
pub(crate) async fn run_core(
    drives: Arc<DriveState>,
    state: Arc<HealState>,
    cores: usize,
    core: usize,
    view: Rc<dyn IndexView>,
) {
    let interval = state.config.scan_interval;
    let mut seen = 0;
    let mut next_scan = Instant::now() + interval;
    let mut leftovers: HashMap<u16, HashSet<u128>> = HashMap::new();
    loop {
        let requests = state.requests();
        let kind = if requests != seen {
            seen = requests;
            PassKind::Heal
        } else if Instant::now() >= next_scan {
            PassKind::Scan
        } else {
            monoio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let pass = Pass { drives: &drives, state: &state, cores, core, view: view.as_ref(), kind, request: seen };
        let interrupted = pass.run(&mut leftovers).await;
        if kind == PassKind::Scan {
            next_scan = Instant::now() + interval;
        }
        if !interrupted {
            finish_pass(&drives, &state, cores, kind);
        }
    }
}

/// Counts this core's pass as done; the last core to finish a heal clears the replaced
/// drives' heal markers (they are whole again).
fn finish_pass(drives: &DriveState, state: &HealState, cores: usize, kind: PassKind) {
    let stats = state.stats(kind);
    if stats.cores_done.fetch_add(1, Ordering::Relaxed) + 1 == cores {
        stats.finished_ms.store(now_ms(), Ordering::Relaxed);
        PassStats::add(&stats.passes, 1);
        if kind == PassKind::Heal {
            for path in drives.online_paths() {
                let _ = std::fs::remove_file(path.join(HEAL_PENDING_FILE));
            }
        }
    }
}

/// One pass over one core's share.
struct Pass<'a> {
    drives: &'a Arc<DriveState>,
    state: &'a HealState,
    cores: usize,
    core: usize,
    view: &'a dyn IndexView,
    kind: PassKind,
    /// The heal request this pass belongs to: a newer one cuts it short.
    request: u64,
}

impl Pass<'_> {
    fn stats(&self) -> &PassStats {
        self.state.stats(self.kind)
    }

    fn cut_short(&self) -> bool {
        self.state.requests() != self.request
    }

    /// Runs the pass. Returns true when a newer heal request cut it short.
    async fn run(&self, leftovers: &mut HashMap<u16, HashSet<u128>>) -> bool {
        if self.kind == PassKind::Scan && self.core == 0 {
            self.stats().reset_for_scan();
        }
        let totals = self.view.totals();
        PassStats::add(&self.stats().objects_total, totals.objects);
        PassStats::add(&self.stats().bytes_total, totals.bytes);
        if !self.settle_void().await {
            return true;
        }
        // The metadata logs first: every object's record must be whole on every drive.
        self.heal_logs().await;
        let mut pacer = Pacer { start: Instant::now(), bytes: 0 };
        if !self.heal_objects(&mut pacer).await || !self.heal_upload_parts(&mut pacer).await {
            return true;
        }
        let removed = reclaim_leftovers(self.drives, self.state, self.cores, self.core, self.view, leftovers).await;
        PassStats::add(&self.stats().leftovers_removed, removed);
        false
    }

    /// A batch that missed the write quorum stays on the drives that took it until it is
    /// voided (by the next write, or the commit loop's retry). Void it first, so that a heal
    /// leaves no copy of a refused write for a restart to bring back. Drives that still fail
    /// keep the void from landing: then the pass goes on after SETTLE_WAIT, healing only the
    /// settled part, and the commit loop's retry keeps trying. False when cut short.
    async fn settle_void(&self) -> bool {
        if !self.view.void_pending() {
            return true;
        }
        self.view.retry_void();
        let deadline = Instant::now() + SETTLE_WAIT;
        while self.view.void_pending() && Instant::now() < deadline {
            if self.cut_short() {
                return false;
            }
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Rewrites every online drive's copy of this core's log (core 0: also the logs of
    /// executors that no longer exist) where it differs from the merged log, on the
    /// blocking pool.
    async fn heal_logs(&self) {
        let mut wals = vec![(self.core as u16, self.view.settled_wal_end())];
        if self.core == 0 {
            // Logs of executors that no longer exist (the core count shrank) are read by all.
            let online = self.drives.online_paths();
            let gone = crate::wal::list_wals(&online).into_iter().filter(|w| *w as usize >= self.cores);
            wals.extend(gone.map(|w| (w, u64::MAX)));
        }
        for (wal, end) in wals {
            let paths = self.drives.paths().to_vec();
            let online: Vec<bool> = (0..paths.len()).map(|d| self.drives.online(d)).collect();
            let job = move || crate::wal::heal_copies(&paths, &online, wal, end);
            match monoio::spawn_blocking(job).await {
                Ok(Ok(repaired)) => PassStats::add(&self.stats().records_repaired, repaired),
                Ok(Err(err)) => tracing::error!(core = self.core, wal, error = %err, "healing a metadata log failed"),
                Err(_) => tracing::warn!(core = self.core, wal, "healing a metadata log was cancelled"),
            }
        }
    }

    /// Checks every shard of every object of this core. False when cut short.
    async fn heal_objects(&self, pacer: &mut Pacer) -> bool {
        let stats = self.stats();
        let mut after: Option<ObjectKey> = None;
        loop {
            let batch = self.view.objects_after(after.as_ref(), OBJECTS_PER_LOOK);
            let Some((last, _)) = batch.last() else { return true };
            after = Some(last.clone());
            for (key, meta) in batch {
                if self.cut_short() {
                    return false;
                }
                if let DataLoc::Parts(parts) = &meta.data {
                    let partition = self.drives.partition_of(&key.bucket, &key.key);
                    let current = || self.view.object(&key).is_some_and(|m| m.data == meta.data);
                    for part in parts {
                        let found = self.heal_part(partition, part, &current, pacer).await;
                        PassStats::add(&stats.shards_repaired, found.repaired);
                        if found.repaired > 0 {
                            stats.note_repaired(&key);
                        }
                        if found.lost_blocks > 0 && current() {
                            PassStats::add(&stats.blocks_lost, found.lost_blocks);
                            stats.note_lost(&key);
                        }
                    }
                }
                PassStats::add(&stats.objects_done, 1);
                PassStats::add(&stats.bytes_done, meta.size);
            }
        }
    }

    /// Checks every shard of every part of the uploads in progress. False when cut short.
    async fn heal_upload_parts(&self, pacer: &mut Pacer) -> bool {
        for (key, part) in self.view.upload_parts() {
            if self.cut_short() {
                return false;
            }
            // A part replaced or completed meanwhile is left alone (its files may be going).
            let partition = self.drives.partition_of(&key.bucket, &key.key);
            let referenced = || self.view.is_referenced(part.file_id);
            let found = self.heal_part(partition, &part, &referenced, pacer).await;
            PassStats::add(&self.stats().shards_repaired, found.repaired);
            if found.repaired > 0 {
                self.stats().note_repaired(&key);
            }
        }
        true
    }

    /// Verifies every shard of every block of a part on every online drive, rewriting the
    /// missing or corrupt ones, at the pass's rate.
    async fn heal_part(
        &self,
        partition: u16,
        part: &PartLoc,
        still_current: &dyn Fn() -> bool,
        pacer: &mut Pacer,
    ) -> PartCheck {
        let mut found = PartCheck::default();
        if part.size == 0 {
            return found;
        }
        let files = PartFiles::open(self.drives, partition, part.file_id).await;
        let blocks = part.size.div_ceil(self.drives.block_size() as u64).max(1);
        for block_index in 0..blocks {
            let block = heal_block(self.drives, &files, part, block_index, still_current).await;
            found.repaired += block.repaired;
            found.lost_blocks += u64::from(block.lost);
            pacer.account(self.state, self.kind, block.len).await;
        }
        found
    }
}

/// Removes data files of this core's partitions that no object or upload references and
/// that have not been written for `leftover_age`. A file is removed only when it was such
/// a candidate on the previous pass too, so a file is never removed on one look.
async fn reclaim_leftovers(
    drives: &DriveState,
    state: &HealState,
    cores: usize,
    core: usize,
    view: &dyn IndexView,
    candidates: &mut HashMap<u16, HashSet<u128>>,
) -> u64 {
    let age = state.config.leftover_age;
    let mut removed = 0;
    for partition in (0..drives.partition_count()).filter(|p| *p as usize % cores == core) {
        let before = candidates.remove(&partition).unwrap_or_default();
        let mut now_found = HashSet::new();
        for drive in (0..drives.paths().len()).filter(|d| drives.online(*d)) {
            let Ok(entries) = std::fs::read_dir(drives.partition_dir(drive, partition)) else { continue };
            for entry in entries.flatten() {
                let Some(id) = entry.file_name().to_str().and_then(|n| u128::from_str_radix(n, 16).ok()) else {
                    continue;
                };
                let idle = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|d| d >= age);
                if !idle || view.is_referenced(id) {
                    continue;
                }
                if !before.contains(&id) {
                    now_found.insert(id);
                } else if crate::io::remove_file(entry.path()).await.is_ok() {
                    removed += 1;
                }
            }
        }
        if !now_found.is_empty() {
            candidates.insert(partition, now_found);
        }
        monoio::time::sleep(Duration::ZERO).await;
    }
    removed
}
