//! Start-up: rebuilding every core's index from the drives. Each core's snapshot is loaded
//! and only the log written after it is replayed (one thread per core); when the snapshots
//! cannot be trusted, every log is replayed from the start and the index is split between
//! the cores by partition. Records of a partition are applied in sequence order.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::buckets::{apply_bucket, apply_config};
use crate::error::{EngineError, Result};
use crate::meta::{BucketInfo, ObjectMeta, UploadMeta};
use crate::partition::{owner_of, partition_for};
use crate::snapshot;
use crate::types::{ObjectKey, UploadKey};
use crate::wal::{list_wals, replay, Record, Replayed, ReplayedLog};

/// One core's share of the index, as start-up rebuilt it.
#[derive(Default)]
pub(crate) struct CoreIndex {
    pub objects: BTreeMap<ObjectKey, ObjectMeta>,
    pub uploads: BTreeMap<UploadKey, UploadMeta>,
    /// Every bucket (core 0 only: bucket records are its own).
    pub buckets: BTreeMap<String, BucketInfo>,
    /// The last sequence number applied, per partition.
    pub seqs: HashMap<u16, u64>,
    /// Log offset covered by this core's snapshot (0: none was used).
    pub snapshot_off: u64,
}

impl CoreIndex {
    /// Applies one record; records of a partition must come in increasing sequence order
    /// (checked in debug builds: an older record applied after a newer one would undo it).
    fn apply(&mut self, r: Replayed) {
        let previous = self.seqs.insert(r.partition, r.seq);
        debug_assert!(
            previous.is_none_or(|p| p < r.seq),
            "partition {}: record {} replayed after record {previous:?}",
            r.partition,
            r.seq
        );
        match r.record {
            Record::Put { bucket, key, meta, completes_upload, .. } => {
                if let Some(id) = completes_upload {
                    self.uploads.remove(&UploadKey::new(bucket.clone(), key.clone(), id));
                }
                self.objects.insert(ObjectKey::new(bucket, key), meta);
            }
            Record::Delete { bucket, key } => {
                self.objects.remove(&ObjectKey::new(bucket, key));
            }
            Record::UploadCreate { bucket, key, upload_id, upload } => {
                self.uploads.insert(UploadKey::new(bucket, key, upload_id), upload);
            }
            Record::UploadPart { bucket, key, upload_id, part_number, part } => {
                if let Some(upload) = self.uploads.get_mut(&UploadKey::new(bucket, key, upload_id)) {
                    upload.parts.insert(part_number, part);
                }
            }
            Record::UploadAbort { bucket, key, upload_id } => {
                self.uploads.remove(&UploadKey::new(bucket, key, upload_id));
            }
            Record::BucketCreate { name, created_ms } => apply_bucket(&mut self.buckets, name, Some(created_ms)),
            Record::BucketConfig { name, item, value } => apply_config(&mut self.buckets, &name, item, value),
            Record::BucketDelete { name } => apply_bucket(&mut self.buckets, name, None),
            Record::Void => {}
        }
    }
}

/// What start-up rebuilt.
pub(crate) struct Startup {
    /// One index per core, in core order.
    pub indexes: Vec<CoreIndex>,
    /// Where each log ends: the next append goes there.
    pub wal_ends: HashMap<u16, u64>,
    /// How the index was rebuilt, for the start-up log.
    pub note: String,
    /// Every log was replayed from the start: the cores write fresh snapshots at once.
    pub snapshot_due: bool,
}

/// Rebuilds every core's index from the online drives: from the snapshots when they can be
/// trusted, else from every log.
pub(crate) fn load(online: &[PathBuf], cores: usize, partitions: u16) -> Result<Startup> {
    let wals = list_wals(online);
    if let Some(loaded) = from_snapshots(online, cores, &wals)? {
        return Ok(Startup {
            note: format!("index loaded from snapshots plus {} newer log records", loaded.records),
            indexes: loaded.indexes,
            wal_ends: loaded.wal_ends,
            snapshot_due: false,
        });
    }
    let replayed = full_replay(online, cores, partitions, &wals)?;
    Ok(Startup {
        note: format!("index rebuilt from {} log records (no usable snapshots)", replayed.records),
        indexes: replayed.indexes,
        wal_ends: replayed.wal_ends,
        snapshot_due: !wals.is_empty(),
    })
}

/// Per-core indexes, where each core's log ends, and how many records were replayed.
struct Replay {
    indexes: Vec<CoreIndex>,
    wal_ends: HashMap<u16, u64>,
    records: usize,
}

/// Replays every log from the start and splits the index between the cores.
fn full_replay(online: &[PathBuf], cores: usize, partitions: u16, wals: &[u16]) -> Result<Replay> {
    let mut replayed = Vec::new();
    let mut wal_ends = HashMap::new();
    for wal in wals {
        let log = replay(online, *wal, 0)?;
        wal_ends.insert(*wal, log.end);
        replayed.extend(log.records);
    }
    let records = replayed.len();
    replayed.sort_by_key(|r| (r.partition, r.seq));
    let mut all = CoreIndex::default();
    for r in replayed {
        all.apply(r);
    }
    let mut indexes: Vec<CoreIndex> = (0..cores).map(|_| CoreIndex::default()).collect();
    let owner = |bucket: &str, key: &str| owner_of(partition_for(bucket, key, partitions), cores);
    for (partition, seq) in all.seqs {
        indexes[owner_of(partition, cores)].seqs.insert(partition, seq);
    }
    for (key, meta) in all.objects {
        indexes[owner(&key.bucket, &key.key)].objects.insert(key, meta);
    }
    for (key, upload) in all.uploads {
        indexes[owner(&key.bucket, &key.key)].uploads.insert(key, upload);
    }
    indexes[0].buckets = all.buckets;
    Ok(Replay { indexes, wal_ends, records })
}

/// Loads every core's snapshot and replays only the log written after it. None when the
/// snapshots cannot be trusted (missing, written with another executor count, or a log
/// grew behind them); start-up then replays everything.
fn from_snapshots(online: &[PathBuf], cores: usize, wals: &[u16]) -> Result<Option<Replay>> {
    // One thread per core: each decodes its snapshot and replays its own log's tail.
    let loaded: Vec<Result<Option<CoreLoad>>> = std::thread::scope(|scope| {
        let loaders: Vec<_> = (0..cores).map(|core| scope.spawn(move || load_core(online, cores, core))).collect();
        loaders
            .into_iter()
            .map(|l| l.join().unwrap_or_else(|_| Err(EngineError::Corrupt("snapshot loader panicked".into()))))
            .collect()
    });
    let mut cores_loaded = Vec::new();
    for load in loaded {
        match load? {
            Some(load) => cores_loaded.push(load),
            None => return Ok(None),
        }
    }
    // Logs no current core appends to must not have grown since the snapshots.
    for (wal, len) in snapshot::wal_lengths(online, wals) {
        if wal as usize >= cores {
            let recorded = cores_loaded[0].wal_lens.get(&wal).copied().unwrap_or(0);
            if len > recorded {
                return Ok(None);
            }
        }
    }
    let mut indexes = Vec::new();
    let mut wal_ends = HashMap::new();
    let mut records = 0;
    for (core, load) in cores_loaded.into_iter().enumerate() {
        wal_ends.insert(core as u16, load.wal_end);
        records += load.tail;
        indexes.push(load.index);
    }
    Ok(Some(Replay { indexes, wal_ends, records }))
}

/// One core's index from its snapshot and the tail of its log.
struct CoreLoad {
    index: CoreIndex,
    wal_end: u64,
    /// Records replayed after the snapshot.
    tail: usize,
    /// Every log's length when the snapshot was taken.
    wal_lens: BTreeMap<u16, u64>,
}

/// None when this core's snapshot is missing, from another executor count, or its log
/// holds records of partitions it does not own (written by another executor count).
fn load_core(online: &[PathBuf], cores: usize, core: usize) -> Result<Option<CoreLoad>> {
    let Some(snap) = snapshot::read_latest(online, core as u16).filter(|s| s.cores as usize == cores) else {
        return Ok(None);
    };
    let ReplayedLog { records, end: wal_end } = replay(online, core as u16, snap.wal_off)?;
    let mut index = CoreIndex {
        objects: snap.objects,
        uploads: snap.uploads,
        buckets: if core == 0 { snap.buckets } else { BTreeMap::new() },
        seqs: snap.seqs,
        snapshot_off: snap.wal_off,
    };
    let tail = records.len();
    for r in records {
        if owner_of(r.partition, cores) != core {
            return Ok(None);
        }
        index.apply(r);
    }
    Ok(Some(CoreLoad { index, wal_end, tail, wal_lens: snap.wal_lens }))
}
