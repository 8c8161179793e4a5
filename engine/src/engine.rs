//! The engine handle: start-up (drives, log replay), and the operations the S3 layer calls.
//! Metadata operations are messages to the core that owns the key's partition; data is
//! written and read by the calling core itself (see data.rs), so object bytes never cross
//! cores.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use xxhash_rust::xxh3::xxh3_64;

use crate::core::{CoreBoot, MetaReq, ObjectKey, Reply, UploadKey, WriteOp};
use crate::data::{DataWriter, Finished, ObjectReader};
use crate::erasure::Layout;
use crate::error::{EngineError, Result};
use crate::format::{open_drives, partition_dir_name, random_id, DriveSet};
use crate::meta::{BucketInfo, DataLoc, ObjectMeta, PartMeta, UploadMeta};
use crate::snapshot;
use crate::wal::{list_wals, replay, Record, Replayed, BUCKET_PARTITION};

/// Objects up to this size are stored inside their metadata record (no data files).
pub const INLINE_BYTES_MAX: usize = 128 << 10;
/// Each core's metadata channel holds at most this many requests (back-pressure beyond).
const META_QUEUE_DEPTH: usize = 4096;

pub struct EngineConfig {
    pub drives: Vec<PathBuf>,
    pub parity: Option<usize>,
    pub cores: usize,
    /// Each core snapshots its index after appending this many log bytes.
    pub snapshot_every_bytes: u64,
    pub heal: crate::heal::HealConfig,
}

/// Default for `EngineConfig::snapshot_every_bytes`: start-up replays at most about this
/// much log per core.
pub const SNAPSHOT_EVERY_BYTES_DEFAULT: u64 = 64 << 20;

/// The core that owns a partition (bucket records belong to core 0).
pub fn owner_of(partition: u16, cores: usize) -> usize {
    if partition == BUCKET_PARTITION {
        0
    } else {
        partition as usize % cores
    }
}

/// Per-core indexes, where each core's log ends, and how many records were replayed.
type StartupIndex = (Vec<IndexBuild>, HashMap<u16, u64>, usize);

/// One core's share of the index while start-up builds it.
#[derive(Default)]
struct IndexBuild {
    objects: BTreeMap<ObjectKey, ObjectMeta>,
    uploads: BTreeMap<UploadKey, UploadMeta>,
    buckets: BTreeMap<String, BucketInfo>,
    seqs: HashMap<u16, u64>,
    snapshot_off: u64,
}

impl IndexBuild {
    /// Applies one record; records of a partition must come in sequence order.
    fn apply(&mut self, r: Replayed) {
        self.seqs.insert(r.partition, r.seq);
        match r.record {
            Record::Put { bucket, key, meta, completes_upload, .. } => {
                if let Some(id) = completes_upload {
                    self.uploads.remove(&(bucket.clone(), key.clone(), id));
                }
                self.objects.insert((bucket, key), meta);
            }
            Record::Delete { bucket, key } => {
                self.objects.remove(&(bucket, key));
            }
            Record::UploadCreate { bucket, key, upload_id, upload } => {
                self.uploads.insert((bucket, key, upload_id), upload);
            }
            Record::UploadPart { bucket, key, upload_id, part_number, part } => {
                if let Some(upload) = self.uploads.get_mut(&(bucket, key, upload_id)) {
                    upload.parts.insert(part_number, part);
                }
            }
            Record::UploadAbort { bucket, key, upload_id } => {
                self.uploads.remove(&(bucket, key, upload_id));
            }
            Record::BucketCreate { name, created_ms } => {
                self.buckets.insert(name, BucketInfo { created_ms, config: BTreeMap::new() });
            }
            Record::BucketConfig { name, item, value } => {
                if name == SYSTEM_BUCKET {
                    self.buckets.entry(name.clone()).or_default();
                }
                if let Some(bucket) = self.buckets.get_mut(&name) {
                    match value {
                        Some(value) => bucket.config.insert(item, value),
                        None => bucket.config.remove(&item),
                    };
                }
            }
            Record::BucketDelete { name } => {
                self.buckets.remove(&name);
            }
            Record::Void => {}
        }
    }
}

/// Replays every log from the start and splits the index between the cores.
fn full_replay(online: &[PathBuf], cores: usize, partitions: u16, wals: &[u16]) -> Result<StartupIndex> {
    let mut replayed = Vec::new();
    let mut wal_ends = HashMap::new();
    for wal in wals {
        let (records, end) = replay(online, *wal, 0)?;
        wal_ends.insert(*wal, end);
        replayed.extend(records);
    }
    let count = replayed.len();
    replayed.sort_by_key(|r| (r.partition, r.seq));
    let mut all = IndexBuild::default();
    for r in replayed {
        all.apply(r);
    }
    let mut indexes: Vec<IndexBuild> = (0..cores).map(|_| IndexBuild::default()).collect();
    let partitions_of = |bucket: &str, key: &str| partition_for(bucket, key, partitions);
    for (partition, seq) in all.seqs {
        indexes[owner_of(partition, cores)].seqs.insert(partition, seq);
    }
    for (key, meta) in all.objects {
        indexes[owner_of(partitions_of(&key.0, &key.1), cores)].objects.insert(key, meta);
    }
    for (key, upload) in all.uploads {
        indexes[owner_of(partitions_of(&key.0, &key.1), cores)].uploads.insert(key, upload);
    }
    indexes[0].buckets = all.buckets;
    Ok((indexes, wal_ends, count))
}

/// Loads every core's snapshot and replays only the log written after it. None when the
/// snapshots cannot be trusted (missing, written with another executor count, or a log
/// grew behind them); start-up then replays everything.
fn from_snapshots(online: &[PathBuf], cores: usize, wals: &[u16]) -> Result<Option<StartupIndex>> {
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
            let recorded = cores_loaded[0].wal_lens.iter().find(|(w, _)| *w == wal).map(|(_, l)| *l).unwrap_or(0);
            if len > recorded {
                return Ok(None);
            }
        }
    }
    let mut indexes = Vec::new();
    let mut wal_ends = HashMap::new();
    let mut tail = 0;
    for (core, load) in cores_loaded.into_iter().enumerate() {
        wal_ends.insert(core as u16, load.wal_end);
        tail += load.tail;
        indexes.push(load.index);
    }
    Ok(Some((indexes, wal_ends, tail)))
}

/// One core's index from its snapshot and the tail of its log.
struct CoreLoad {
    index: IndexBuild,
    wal_end: u64,
    tail: usize,
    wal_lens: Vec<(u16, u64)>,
}

/// None when this core's snapshot is missing, from another executor count, or its log
/// holds records of partitions it does not own (written by another executor count).
fn load_core(online: &[PathBuf], cores: usize, core: usize) -> Result<Option<CoreLoad>> {
    let Some(snap) = snapshot::read_latest(online, core as u16).filter(|s| s.cores as usize == cores) else {
        return Ok(None);
    };
    let (records, wal_end) = replay(online, core as u16, snap.wal_off)?;
    let mut index = IndexBuild {
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

#[derive(Clone, Debug)]
pub enum PutCondition {
    /// `If-None-Match: *`: only create.
    IfNoneMatchAny,
    /// `If-Match: etag` (unquoted).
    IfMatch(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListItem {
    /// key, size, etag, mtime_ms, storage class (None: STANDARD)
    Object(String, u64, String, i64, Option<String>),
    Prefix(String),
}

impl ListItem {
    pub fn name(&self) -> &str {
        match self {
            ListItem::Object(key, ..) => key,
            ListItem::Prefix(prefix) => prefix,
        }
    }
}

/// See [`Engine::walk`].
pub struct ObjectWalk {
    engine: Engine,
    bucket: String,
    after: String,
    page: std::vec::IntoIter<ListItem>,
    more: bool,
}

impl ObjectWalk {
    /// The next object's key and storage class (None: STANDARD); Ok(None) at the end. An
    /// error (the bucket went away, a core did not answer) ends the walk: the caller decides
    /// whether a partial walk will do.
    pub async fn next(&mut self) -> Result<Option<(String, Option<String>)>> {
        loop {
            if let Some(item) = self.page.next() {
                self.after = item.name().to_owned();
                if let ListItem::Object(key, .., class) = item {
                    return Ok(Some((key, class)));
                }
                continue;
            }
            if !self.more {
                return Ok(None);
            }
            let page = self.engine.list(&self.bucket, "", None, &self.after, 1000).await?;
            self.more = page.truncated;
            self.page = page.items.into_iter();
        }
    }
}

#[derive(Debug, Default)]
pub struct ListPage {
    pub items: Vec<ListItem>,
    pub truncated: bool,
}

#[derive(Clone, Debug)]
pub struct UploadSummary {
    pub key: String,
    pub upload_id: String,
    pub initiated_ms: i64,
}

struct Shared {
    drives: DriveSet,
    layout: Layout,
    block_size: usize,
    partitions: u16,
    senders: Vec<flume::Sender<MetaReq>>,
    /// Bucket name -> creation time. Written only by bucket create/delete (rare); read on
    /// every request. A known exception to "no locks on the hot path" (ARCHITECTURE.md).
    buckets: RwLock<BTreeMap<String, BucketInfo>>,
    snapshot_every_bytes: u64,
    startup: String,
    /// Per drive: online (true) or not. Starts as found at start-up; the drive monitor
    /// (heal.rs) brings a replaced drive back online.
    online: Vec<AtomicBool>,
    /// Per drive: operations running on it now (quorum.rs skips a stalled drive).
    inflight: Vec<AtomicUsize>,
    /// Bumped whenever a drive is formatted anew while serving: cores reopen their logs.
    drive_epoch: AtomicU64,
    heal: crate::heal::HealState,
}

/// Counts one running operation on a drive for as long as it lives.
pub struct InflightGuard {
    engine: Engine,
    drive: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.engine.0.inflight[self.drive].fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct Engine(Arc<Shared>);

/// Holds cluster-wide configuration; not a valid S3 bucket name, never listed, never holds
/// objects (every bucket check treats it as missing).
const SYSTEM_BUCKET: &str = ".ferrite";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The partition of a key: fixed at format time, never re-hashed.
pub fn partition_for(bucket: &str, key: &str, partitions: u16) -> u16 {
    let mut buf = Vec::with_capacity(bucket.len() + key.len() + 1);
    buf.extend_from_slice(bucket.as_bytes());
    buf.push(b'/');
    buf.extend_from_slice(key.as_bytes());
    (xxh3_64(&buf) % partitions as u64) as u16
}

async fn ask<T>(tx: &flume::Sender<MetaReq>, make: impl FnOnce(Reply<T>) -> MetaReq) -> Result<T> {
    let (reply, rx) = flume::bounded(1);
    tx.send_async(make(reply)).await.map_err(|_| EngineError::ShuttingDown)?;
    rx.recv_async().await.map_err(|_| EngineError::ShuttingDown)?
}

impl Engine {
    /// Opens the drives, replays the metadata logs and returns the handle and one boot
    /// package per core (start each with `core::serve` on that core's runtime).
    pub fn open(config: EngineConfig) -> Result<(Engine, Vec<CoreBoot>)> {
        // Test builds only: faults to inject, from the environment (see fault.rs).
        #[cfg(feature = "fault-injection")]
        crate::fault::init_from_env();
        let drives = open_drives(&config.drives, config.parity)?;
        let cores = config.cores.max(1);
        let online: Vec<PathBuf> =
            drives.paths.iter().zip(&drives.online).filter(|(_, on)| **on).map(|(p, _)| p.clone()).collect();
        let wals = list_wals(&online);
        let (indexes, wal_ends, startup, snapshot_due) = match from_snapshots(&online, cores, &wals)? {
            Some((indexes, wal_ends, tail)) => {
                (indexes, wal_ends, format!("index loaded from snapshots plus {tail} newer log records"), false)
            }
            None => {
                let (indexes, wal_ends, count) = full_replay(&online, cores, drives.format.partition_count, &wals)?;
                (
                    indexes,
                    wal_ends,
                    format!("index rebuilt from {count} log records (no usable snapshots)"),
                    !wals.is_empty(),
                )
            }
        };
        let partitions = drives.format.partition_count;
        let layout = Layout { data: drives.format.data_shards, parity: drives.format.parity_shards };
        let block_size = drives.format.block_size as usize;
        let mut senders = Vec::new();
        let mut buckets = BTreeMap::new();
        let mut boots = Vec::new();
        for (core, index) in indexes.into_iter().enumerate() {
            let (tx, rx) = flume::bounded(META_QUEUE_DEPTH);
            senders.push(tx);
            buckets.extend(index.buckets);
            boots.push(CoreBoot {
                core,
                rx,
                objects: index.objects,
                uploads: index.uploads,
                seqs: index.seqs,
                wal_end: wal_ends.get(&(core as u16)).copied().unwrap_or(0),
                snapshot_off: index.snapshot_off,
                snapshot_due,
            });
        }
        let online = drives.online.iter().map(|o| AtomicBool::new(*o)).collect();
        let inflight = drives.online.iter().map(|_| AtomicUsize::new(0)).collect();
        let shared = Shared {
            online,
            inflight,
            drive_epoch: AtomicU64::new(0),
            heal: crate::heal::HealState::new(cores, config.heal),
            drives,
            layout,
            block_size,
            partitions,
            senders,
            buckets: RwLock::new(buckets),
            snapshot_every_bytes: config.snapshot_every_bytes,
            startup,
        };
        Ok((Engine(Arc::new(shared)), boots))
    }

    /// How start-up rebuilt the index, for the start-up log.
    pub fn startup_note(&self) -> &str {
        &self.0.startup
    }

    pub fn snapshot_every_bytes(&self) -> u64 {
        self.0.snapshot_every_bytes
    }

    pub fn drives(&self) -> &DriveSet {
        &self.0.drives
    }
    pub fn drive_paths(&self) -> &[PathBuf] {
        &self.0.drives.paths
    }
    pub fn drive_online(&self, drive: usize) -> bool {
        self.0.online[drive].load(Ordering::Relaxed)
    }
    pub(crate) fn set_drive_online(&self, drive: usize, online: bool) {
        self.0.online[drive].store(online, Ordering::Relaxed);
    }
    pub fn drive_epoch(&self) -> u64 {
        self.0.drive_epoch.load(Ordering::Relaxed)
    }
    pub(crate) fn bump_drive_epoch(&self) {
        self.0.drive_epoch.fetch_add(1, Ordering::Relaxed);
    }
    pub fn drive_inflight(&self, drive: usize) -> usize {
        self.0.inflight[drive].load(Ordering::Relaxed)
    }
    pub fn inflight_guard(&self, drive: usize) -> InflightGuard {
        self.0.inflight[drive].fetch_add(1, Ordering::Relaxed);
        InflightGuard { engine: self.clone(), drive }
    }
    pub fn heal(&self) -> &crate::heal::HealState {
        &self.0.heal
    }
    /// The drives online now.
    pub fn online_paths(&self) -> Vec<PathBuf> {
        (0..self.drive_paths().len()).filter(|d| self.drive_online(*d)).map(|d| self.drive_paths()[d].clone()).collect()
    }
    pub fn layout(&self) -> Layout {
        self.0.layout
    }
    pub fn block_size(&self) -> usize {
        self.0.block_size
    }
    pub fn write_quorum(&self) -> usize {
        self.0.drives.write_quorum()
    }
    pub fn partition_count(&self) -> u16 {
        self.0.partitions
    }
    pub fn cores(&self) -> usize {
        self.0.senders.len()
    }

    pub fn partition_of(&self, bucket: &str, key: &str) -> u16 {
        partition_for(bucket, key, self.0.partitions)
    }

    fn owner_of(&self, partition: u16) -> usize {
        owner_of(partition, self.0.senders.len())
    }

    fn owner_tx(&self, bucket: &str, key: &str) -> (u16, &flume::Sender<MetaReq>) {
        let partition = self.partition_of(bucket, key);
        (partition, &self.0.senders[self.owner_of(partition)])
    }

    pub fn data_file_paths(&self, partition: u16, file_id: u128) -> Vec<PathBuf> {
        let dir = partition_dir_name(partition);
        let name = format!("{file_id:032x}");
        self.0.drives.paths.iter().map(|p| p.join("data").join(&dir).join(&name)).collect()
    }

    // ----- buckets -----

    fn buckets_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, BucketInfo>> {
        match self.0.buckets.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn buckets_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, BucketInfo>> {
        match self.0.buckets.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn set_bucket(&self, name: String, created_ms: Option<i64>) {
        let mut buckets = self.buckets_write();
        match created_ms {
            Some(created_ms) => buckets.insert(name, BucketInfo { created_ms, config: BTreeMap::new() }),
            None => buckets.remove(&name),
        };
    }

    pub(crate) fn set_bucket_config(&self, name: &str, item: String, value: Option<String>) {
        let mut buckets = self.buckets_write();
        if name == SYSTEM_BUCKET {
            buckets.entry(name.to_owned()).or_default();
        }
        if let Some(bucket) = buckets.get_mut(name) {
            match value {
                Some(value) => bucket.config.insert(item, value),
                None => bucket.config.remove(&item),
            };
        }
    }

    pub fn bucket_created_ms(&self, name: &str) -> Option<i64> {
        if name == SYSTEM_BUCKET {
            return None;
        }
        self.buckets_read().get(name).map(|b| b.created_ms)
    }

    /// One cluster-wide configuration document (remote tiers, ...): None when not set.
    pub fn cluster_config(&self, item: &str) -> Option<String> {
        self.buckets_read().get(SYSTEM_BUCKET).and_then(|b| b.config.get(item).cloned())
    }

    /// Every cluster-wide configuration document whose name starts with `prefix`.
    pub fn cluster_configs(&self, prefix: &str) -> Vec<(String, String)> {
        let buckets = self.buckets_read();
        let Some(system) = buckets.get(SYSTEM_BUCKET) else { return Vec::new() };
        system.config.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Sets (Some) or removes (None) a cluster-wide configuration document, durably (a
    /// bucket-configuration record of the hidden system bucket).
    pub async fn put_cluster_config(&self, item: &str, value: Option<String>) -> Result<()> {
        let op = WriteOp::BucketConfig { name: SYSTEM_BUCKET.to_owned(), item: item.to_owned(), value };
        ask(&self.0.senders[0], |reply| MetaReq::Write { partition: BUCKET_PARTITION, op, reply }).await
    }

    /// One configuration document of a bucket (None: not set). Err when there is no bucket.
    pub fn bucket_config(&self, name: &str, item: &str) -> Result<Option<String>> {
        match self.buckets_read().get(name).filter(|_| name != SYSTEM_BUCKET) {
            Some(bucket) => Ok(bucket.config.get(item).cloned()),
            None => Err(EngineError::NoSuchBucket),
        }
    }

    pub fn list_buckets(&self) -> Vec<(String, i64)> {
        self.buckets_read()
            .iter()
            .filter(|(n, _)| *n != SYSTEM_BUCKET)
            .map(|(n, b)| (n.clone(), b.created_ms))
            .collect()
    }

    /// Every bucket with its configuration, for snapshots.
    pub(crate) fn bucket_infos(&self) -> Vec<(String, BucketInfo)> {
        self.buckets_read().iter().map(|(n, b)| (n.clone(), b.clone())).collect()
    }

    /// Sets (Some) or removes (None) a bucket configuration document, durably.
    pub async fn put_bucket_config(&self, name: &str, item: &str, value: Option<String>) -> Result<()> {
        self.require_bucket(name)?;
        let op = WriteOp::BucketConfig { name: name.to_owned(), item: item.to_owned(), value };
        ask(&self.0.senders[0], |reply| MetaReq::Write { partition: BUCKET_PARTITION, op, reply }).await
    }

    fn require_bucket(&self, bucket: &str) -> Result<()> {
        self.bucket_created_ms(bucket).map(|_| ()).ok_or(EngineError::NoSuchBucket)
    }

    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        if self.bucket_created_ms(name).is_some() || name == SYSTEM_BUCKET {
            return Err(EngineError::BucketExists);
        }
        let op = WriteOp::CreateBucket { name: name.to_owned(), created_ms: now_ms() };
        ask(&self.0.senders[0], |reply| MetaReq::Write { partition: BUCKET_PARTITION, op, reply }).await
    }

    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.require_bucket(name)?;
        for tx in &self.0.senders {
            if ask(tx, |reply| MetaReq::HasData { bucket: name.to_owned(), reply }).await? {
                return Err(EngineError::BucketNotEmpty);
            }
        }
        let op = WriteOp::DeleteBucket { name: name.to_owned() };
        ask(&self.0.senders[0], |reply| MetaReq::Write { partition: BUCKET_PARTITION, op, reply }).await
    }

    // ----- objects -----

    /// Starts writing object data on the calling core. `inline_allowed`: small results may
    /// be kept in the metadata record instead of data files.
    pub fn writer(&self, bucket: &str, key: &str, inline_allowed: bool) -> Result<DataWriter> {
        self.require_bucket(bucket)?;
        let partition = self.partition_of(bucket, key);
        Ok(DataWriter::new(self.clone(), partition, inline_allowed))
    }

    /// Commits an object whose data was written with `writer`. `meta.data` is replaced.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        mut meta: ObjectMeta,
        data: Finished,
        cond: Option<PutCondition>,
    ) -> Result<()> {
        let (partition, tx) = self.owner_tx(bucket, key);
        let (inline, file) = match data {
            Finished::Inline(bytes) => (Some(bytes), None),
            Finished::Part(part) => {
                let file = part.file_id;
                meta.data = DataLoc::Parts(vec![part]);
                (None, Some(file))
            }
        };
        if let Err(err) = self.require_bucket(bucket) {
            self.discard_refused(partition, file, &err).await;
            return Err(err);
        }
        let op = WriteOp::Put { bucket: bucket.to_owned(), key: key.to_owned(), meta, inline, cond };
        let result = ask(tx, |reply| MetaReq::Write { partition, op, reply }).await;
        if let Err(err) = &result {
            self.discard_refused(partition, file, err).await;
        }
        result
    }

    /// Removes the data files of a write the owning core refused (a failed condition, an
    /// upload gone meanwhile): no record names them, so they would only wait for the
    /// scanner. After a lost quorum the outcome is unknown (the record may be on some
    /// drives), so those files are left to the start-up sweep and the scanner.
    async fn discard_refused(&self, partition: u16, file: Option<u128>, err: &EngineError) {
        let refused =
            !matches!(err, EngineError::WriteQuorum { .. } | EngineError::StorageFull | EngineError::ShuttingDown);
        if let (true, Some(file_id)) = (refused, file) {
            for path in self.data_file_paths(partition, file_id) {
                let _ = crate::io::remove_file(path).await;
            }
        }
    }

    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectMeta> {
        self.require_bucket(bucket)?;
        let (_, tx) = self.owner_tx(bucket, key);
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        ask(tx, |reply| MetaReq::Get { bucket, key, reply }).await?.ok_or(EngineError::NoSuchKey)
    }

    /// Reads bytes [start, end) of an object, block by block, on the calling core.
    pub fn reader(&self, bucket: &str, key: &str, meta: &ObjectMeta, start: u64, end: u64) -> ObjectReader {
        ObjectReader::new(self.clone(), self.partition_of(bucket, key), meta.data.clone(), start, end)
    }

    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        self.require_bucket(bucket)?;
        let (partition, tx) = self.owner_tx(bucket, key);
        let op = WriteOp::Delete { bucket: bucket.to_owned(), key: key.to_owned() };
        ask(tx, |reply| MetaReq::Write { partition, op, reply }).await
    }

    pub async fn set_tags(&self, bucket: &str, key: &str, tags: Vec<(String, String)>) -> Result<()> {
        self.require_bucket(bucket)?;
        let (partition, tx) = self.owner_tx(bucket, key);
        let op = WriteOp::SetTags { bucket: bucket.to_owned(), key: key.to_owned(), tags };
        ask(tx, |reply| MetaReq::Write { partition, op, reply }).await
    }

    /// Replaces an object's stored headers, only if its data and headers are still those of
    /// `meta` (nothing overwrote or re-sealed it meanwhile). The data is not touched.
    pub async fn set_headers(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        headers: Vec<(String, String)>,
    ) -> Result<()> {
        self.replace_if_unchanged(bucket, key, meta, headers, None).await
    }

    /// Replaces an object's data files and headers at once, if its data and headers are still
    /// what `meta` says (PreconditionFailed otherwise; NoSuchKey when it is gone). The old files are
    /// removed after the commit. For tiering: `new_data` is `Parts(vec![])` when the bytes
    /// moved to a remote tier (the headers say where), or freshly written parts when they
    /// come back. Objects with inline data cannot be swapped.
    pub async fn swap_data(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        new_data: DataLoc,
        headers: Vec<(String, String)>,
    ) -> Result<()> {
        self.replace_if_unchanged(bucket, key, meta, headers, Some(new_data)).await
    }

    async fn replace_if_unchanged(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        headers: Vec<(String, String)>,
        new_data: Option<DataLoc>,
    ) -> Result<()> {
        self.require_bucket(bucket)?;
        let (partition, tx) = self.owner_tx(bucket, key);
        let op = WriteOp::SetHeaders {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            data: meta.data.clone(),
            headers_before: meta.headers.clone(),
            headers,
            new_data,
        };
        ask(tx, |reply| MetaReq::Write { partition, op, reply }).await
    }

    /// Lists keys and common prefixes in key order after `start_after`, merging every core.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: &str,
        limit: usize,
    ) -> Result<ListPage> {
        self.require_bucket(bucket)?;
        let mut merged: Vec<ListItem> = Vec::new();
        let mut truncated = false;
        for tx in &self.0.senders {
            let page = ask(tx, |reply| MetaReq::List {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                delimiter: delimiter.map(str::to_owned),
                start_after: start_after.to_owned(),
                limit,
                reply,
            })
            .await?;
            truncated |= page.truncated;
            merged.extend(page.items);
        }
        merged.sort_by(|a, b| a.name().cmp(b.name()));
        merged.dedup_by(|a, b| matches!((&*a, &*b), (ListItem::Prefix(x), ListItem::Prefix(y)) if x == y));
        if merged.len() > limit {
            merged.truncate(limit);
            truncated = true;
        }
        Ok(ListPage { items: merged, truncated })
    }

    /// A cursor over every object of `bucket`, a listing page at a time, for background
    /// passes (objects written meanwhile may or may not be seen).
    pub fn walk(&self, bucket: &str) -> ObjectWalk {
        ObjectWalk {
            engine: self.clone(),
            bucket: bucket.to_owned(),
            after: String::new(),
            page: Vec::new().into_iter(),
            more: true,
        }
    }

    // ----- multipart -----

    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        headers: Vec<(String, String)>,
        checksum_algorithm: Option<String>,
    ) -> Result<String> {
        self.require_bucket(bucket)?;
        let upload_id = random_id();
        let upload = UploadMeta { initiated_ms: now_ms(), headers, checksum_algorithm, parts: BTreeMap::new() };
        let (partition, tx) = self.owner_tx(bucket, key);
        let op = WriteOp::CreateUpload {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id: upload_id.clone(),
            upload,
        };
        ask(tx, |reply| MetaReq::Write { partition, op, reply }).await?;
        Ok(upload_id)
    }

    pub async fn get_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadMeta> {
        self.require_bucket(bucket)?;
        let (_, tx) = self.owner_tx(bucket, key);
        let (b, k, u) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        ask(tx, |reply| MetaReq::GetUpload { bucket: b, key: k, upload_id: u, reply })
            .await?
            .ok_or(EngineError::NoSuchUpload)
    }

    pub async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        part: PartMeta,
    ) -> Result<()> {
        let (partition, tx) = self.owner_tx(bucket, key);
        let file = Some(part.file_id);
        let op = WriteOp::PutPart {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            part_number,
            part,
        };
        let result = ask(tx, |reply| MetaReq::Write { partition, op, reply }).await;
        if let Err(err) = &result {
            self.discard_refused(partition, file, err).await;
        }
        result
    }

    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        meta: ObjectMeta,
        parts_used: Vec<(u32, u128)>,
        cond: Option<PutCondition>,
    ) -> Result<()> {
        let (partition, tx) = self.owner_tx(bucket, key);
        let op = WriteOp::Complete {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            meta,
            parts_used,
            cond,
        };
        ask(tx, |reply| MetaReq::Write { partition, op, reply }).await
    }

    pub async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        self.require_bucket(bucket)?;
        let (partition, tx) = self.owner_tx(bucket, key);
        let op = WriteOp::Abort { bucket: bucket.to_owned(), key: key.to_owned(), upload_id: upload_id.to_owned() };
        ask(tx, |reply| MetaReq::Write { partition, op, reply }).await
    }

    /// Uploads in (key, upload id) order after the markers, merged from every core.
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        upload_id_marker: &str,
        limit: usize,
    ) -> Result<Vec<UploadSummary>> {
        self.require_bucket(bucket)?;
        let mut all = Vec::new();
        for tx in &self.0.senders {
            all.extend(
                ask(tx, |reply| MetaReq::ListUploads {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                    key_marker: key_marker.to_owned(),
                    upload_id_marker: upload_id_marker.to_owned(),
                    limit,
                    reply,
                })
                .await?,
            );
        }
        all.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        all.truncate(limit.saturating_add(1));
        Ok(all)
    }
}
