//! The engine handle: start-up (drives, log replay), and the operations the S3 layer calls.
//! Metadata operations are messages to the core that owns the key's partition; data is
//! written and read by the calling core itself (see data.rs), so object bytes never cross
//! cores. This is the top of the crate: it wires the modules below it together and none of
//! them imports it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::buckets::{Buckets, SYSTEM_BUCKET};
use crate::config::EngineConfig;
use crate::core::{CoreBoot, CoreEnv};
use crate::data::{DataWriter, Finished, ObjectReader, Written};
use crate::drives::DriveState;
use crate::erasure::Layout;
use crate::error::{EngineError, Result};
use crate::format::{open_drives, random_id, DriveSet};
use crate::heal_state::{HealState, HealStatus};
use crate::meta::{DataLoc, ObjectMeta, PartMeta, UploadMeta};
use crate::partition::{owner_of, BUCKET_PARTITION};
use crate::replay;
use crate::request::{MetaReq, ReadReq, Reply, WriteOp};
use crate::types::{now_ms, ListItem, ListPage, ListedObject, PutCondition, UploadSummary};

/// Each core's metadata channel holds at most this many requests (back-pressure beyond).
const META_QUEUE_DEPTH: usize = 4096;

/// See [`Engine::walk`].
pub struct ObjectWalk {
    engine: Engine,
    bucket: String,
    report_header: Option<&'static str>,
    after: String,
    page: std::vec::IntoIter<ListItem>,
    more: bool,
}

impl ObjectWalk {
    /// The next object; Ok(None) at the end. An error (the bucket went away, a core did not
    /// answer) ends the walk: the caller decides whether a partial walk will do.
    pub async fn next(&mut self) -> Result<Option<ListedObject>> {
        loop {
            if let Some(item) = self.page.next() {
                self.after = item.name().to_owned();
                if let ListItem::Object(object) = item {
                    return Ok(Some(object));
                }
                continue;
            }
            if !self.more {
                return Ok(None);
            }
            let page = self.engine.list(&self.bucket, "", None, &self.after, 1000, self.report_header).await?;
            self.more = page.truncated;
            self.page = page.items.into_iter();
        }
    }
}

struct Shared {
    drives: Arc<DriveState>,
    buckets: Arc<Buckets>,
    heal: Arc<HealState>,
    senders: Vec<flume::Sender<MetaReq>>,
    snapshot_every_bytes: u64,
    /// Each core's block cache budget.
    cache_bytes_per_core: usize,
    startup: String,
}

#[derive(Clone)]
pub struct Engine(Arc<Shared>);

async fn ask<T>(tx: &flume::Sender<MetaReq>, make: impl FnOnce(Reply<T>) -> MetaReq) -> Result<T> {
    let (reply, rx) = flume::bounded(1);
    tx.send_async(make(reply)).await.map_err(|_| EngineError::ShuttingDown)?;
    rx.recv_async().await.map_err(|_| EngineError::ShuttingDown)?
}

async fn read<T>(tx: &flume::Sender<MetaReq>, make: impl FnOnce(Reply<T>) -> ReadReq) -> Result<T> {
    ask(tx, |reply| MetaReq::Read(make(reply))).await
}

/// Runs the metadata service of the core `boot` is for, on this thread, until the engine's
/// senders are dropped. Start it on each core's runtime with that core's boot package.
pub async fn serve(engine: Engine, boot: CoreBoot) {
    let shared = &engine.0;
    let env = CoreEnv {
        drives: shared.drives.clone(),
        buckets: shared.buckets.clone(),
        heal: shared.heal.clone(),
        cores: shared.senders.len(),
        snapshot_every_bytes: shared.snapshot_every_bytes,
        cache_bytes: shared.cache_bytes_per_core,
    };
    drop(engine);
    crate::core::run(env, boot).await
}

impl Engine {
    /// Opens the drives, replays the metadata logs and returns the handle and one boot
    /// package per core (start each with [`serve`] on that core's runtime).
    pub fn open(config: EngineConfig) -> Result<(Engine, Vec<CoreBoot>)> {
        // Test builds only: the faults to inject (see fault.rs).
        #[cfg(feature = "fault-injection")]
        crate::fault::init(&config.faults);
        let drives = open_drives(&config.drives, config.parity)?;
        let cores = config.cores.max(1);
        let online: Vec<PathBuf> =
            drives.paths.iter().zip(&drives.online).filter(|(_, on)| **on).map(|(p, _)| p.clone()).collect();
        let startup = replay::load(&online, cores, drives.format.partition_count)?;
        let mut senders = Vec::new();
        let mut buckets = BTreeMap::new();
        let mut boots = Vec::new();
        for (core, index) in startup.indexes.into_iter().enumerate() {
            let (tx, rx) = flume::bounded(META_QUEUE_DEPTH);
            senders.push(tx);
            buckets.extend(index.buckets);
            boots.push(CoreBoot {
                core,
                rx,
                objects: index.objects,
                uploads: index.uploads,
                seqs: index.seqs,
                wal_end: startup.wal_ends.get(&(core as u16)).copied().unwrap_or(0),
                snapshot_off: index.snapshot_off,
                snapshot_due: startup.snapshot_due,
            });
        }
        let shared = Shared {
            drives: DriveState::new(drives),
            buckets: Arc::new(Buckets::new(buckets)),
            heal: Arc::new(HealState::new(cores, config.heal)),
            senders,
            snapshot_every_bytes: config.snapshot_every_bytes,
            cache_bytes_per_core: config.cache_bytes / cores,
            startup: startup.note,
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

    /// Starts the drive monitor thread (monitor.rs), and a heal at once when start-up
    /// formatted replacement drives.
    pub fn start_drive_monitor(&self) {
        crate::monitor::start(self.0.drives.clone(), self.0.heal.clone());
    }

    pub fn drives(&self) -> &DriveSet {
        self.0.drives.set()
    }
    pub fn drive_paths(&self) -> &[PathBuf] {
        self.0.drives.paths()
    }
    pub fn drive_online(&self, drive: usize) -> bool {
        self.0.drives.online(drive)
    }
    pub fn drive_inflight(&self, drive: usize) -> usize {
        self.0.drives.inflight(drive)
    }
    pub fn heal(&self) -> &HealState {
        &self.0.heal
    }
    /// The heal, scanner and drive status for the admin API.
    pub fn heal_status(&self) -> HealStatus {
        self.0.heal.status(&self.0.drives)
    }
    /// The drives online now.
    pub fn online_paths(&self) -> Vec<PathBuf> {
        self.0.drives.online_paths()
    }
    pub fn layout(&self) -> Layout {
        self.0.drives.layout()
    }
    pub fn block_size(&self) -> usize {
        self.0.drives.block_size()
    }
    pub fn write_quorum(&self) -> usize {
        self.0.drives.write_quorum()
    }
    pub fn partition_count(&self) -> u16 {
        self.0.drives.partition_count()
    }
    pub fn cores(&self) -> usize {
        self.0.senders.len()
    }

    pub fn partition_of(&self, bucket: &str, key: &str) -> u16 {
        self.0.drives.partition_of(bucket, key)
    }

    fn owner_tx(&self, bucket: &str, key: &str) -> (u16, &flume::Sender<MetaReq>) {
        let partition = self.partition_of(bucket, key);
        (partition, &self.0.senders[owner_of(partition, self.cores())])
    }

    /// The core that owns bucket records.
    fn bucket_tx(&self) -> &flume::Sender<MetaReq> {
        &self.0.senders[owner_of(BUCKET_PARTITION, self.cores())]
    }

    pub fn data_file_paths(&self, partition: u16, file_id: u128) -> Vec<PathBuf> {
        self.0.drives.data_file_paths(partition, file_id)
    }

    // ----- buckets -----

    pub fn bucket_created_ms(&self, name: &str) -> Option<i64> {
        self.0.buckets.created_ms(name)
    }

    /// One cluster-wide configuration document (remote tiers, ...): None when not set.
    pub fn cluster_config(&self, item: &str) -> Option<String> {
        self.0.buckets.cluster_config(item)
    }

    /// Every cluster-wide configuration document whose name starts with `prefix`.
    pub fn cluster_configs(&self, prefix: &str) -> Vec<(String, String)> {
        self.0.buckets.cluster_configs(prefix)
    }

    /// Sets (Some) or removes (None) a cluster-wide configuration document, durably (a
    /// bucket-configuration record of the hidden system bucket).
    pub async fn put_cluster_config(&self, item: &str, value: Option<String>) -> Result<()> {
        let op = WriteOp::BucketConfig { name: SYSTEM_BUCKET.to_owned(), item: item.to_owned(), value };
        ask(self.bucket_tx(), |reply| MetaReq::Write { partition: BUCKET_PARTITION, op, reply }).await
    }

    /// One configuration document of a bucket (None: not set). Err when there is no bucket.
    pub fn bucket_config(&self, name: &str, item: &str) -> Result<Option<String>> {
        self.0.buckets.config(name, item)
    }

    pub fn list_buckets(&self) -> Vec<(String, i64)> {
        self.0.buckets.list()
    }

    /// Sets (Some) or removes (None) a bucket configuration document, durably.
    pub async fn put_bucket_config(&self, name: &str, item: &str, value: Option<String>) -> Result<()> {
        self.require_bucket(name)?;
        let op = WriteOp::BucketConfig { name: name.to_owned(), item: item.to_owned(), value };
        ask(self.bucket_tx(), |reply| MetaReq::Write { partition: BUCKET_PARTITION, op, reply }).await
    }

    fn require_bucket(&self, bucket: &str) -> Result<()> {
        self.bucket_created_ms(bucket).map(|_| ()).ok_or(EngineError::NoSuchBucket)
    }

    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        if self.bucket_created_ms(name).is_some() || name == SYSTEM_BUCKET {
            return Err(EngineError::BucketExists);
        }
        let op = WriteOp::CreateBucket { name: name.to_owned(), created_ms: now_ms() };
        ask(self.bucket_tx(), |reply| MetaReq::Write { partition: BUCKET_PARTITION, op, reply }).await
    }

    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.require_bucket(name)?;
        for tx in &self.0.senders {
            if read(tx, |reply| ReadReq::HasData { bucket: name.to_owned(), reply }).await? {
                return Err(EngineError::BucketNotEmpty);
            }
        }
        let op = WriteOp::DeleteBucket { name: name.to_owned() };
        ask(self.bucket_tx(), |reply| MetaReq::Write { partition: BUCKET_PARTITION, op, reply }).await
    }

    // ----- objects -----

    /// Starts writing object data on the calling core. `inline_allowed`: small results may
    /// be kept in the metadata record instead of data files.
    pub fn writer(&self, bucket: &str, key: &str, inline_allowed: bool) -> Result<DataWriter> {
        self.require_bucket(bucket)?;
        let partition = self.partition_of(bucket, key);
        Ok(DataWriter::new(self.0.drives.clone(), partition, inline_allowed))
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
        let (inline, file) = match data.into_written() {
            Written::Inline(bytes) => (Some(bytes), None),
            Written::Part(part) => {
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
        read(tx, |reply| ReadReq::Get { bucket, key, reply }).await?.ok_or(EngineError::NoSuchKey)
    }

    /// Reads bytes [start, end) of an object, block by block, on the calling core.
    pub fn reader(&self, bucket: &str, key: &str, meta: &ObjectMeta, start: u64, end: u64) -> ObjectReader {
        ObjectReader::new(self.0.drives.clone(), self.partition_of(bucket, key), meta.data.clone(), start, end)
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
    /// what `meta` says (PreconditionFailed otherwise; NoSuchKey when it is gone). The old files
    /// are removed after the commit. For tiering: `data` is a freshly written copy coming back
    /// from a remote tier. Objects with inline data cannot be swapped, nor swapped to it.
    pub async fn swap_data(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        data: Finished,
        headers: Vec<(String, String)>,
    ) -> Result<()> {
        let new_data = match data.into_written() {
            Written::Part(part) => DataLoc::Parts(vec![part]),
            Written::Inline(_) => return Err(EngineError::PreconditionFailed),
        };
        self.replace_if_unchanged(bucket, key, meta, headers, Some(new_data)).await
    }

    /// Drops an object's local data files and replaces its headers, if its data and headers
    /// are still what `meta` says (PreconditionFailed otherwise; NoSuchKey when it is gone):
    /// the bytes live elsewhere now (a remote tier; the headers say where). The files are
    /// removed after the commit. Objects with inline data cannot drop it.
    pub async fn drop_data(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        headers: Vec<(String, String)>,
    ) -> Result<()> {
        self.replace_if_unchanged(bucket, key, meta, headers, Some(DataLoc::Parts(Vec::new()))).await
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
    /// Each object reports the value of `report_header` (when asked and present): the engine
    /// does not interpret headers, the caller names the one it wants.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: &str,
        limit: usize,
        report_header: Option<&'static str>,
    ) -> Result<ListPage> {
        self.require_bucket(bucket)?;
        let mut merged: Vec<ListItem> = Vec::new();
        let mut truncated = false;
        for tx in &self.0.senders {
            let page = read(tx, |reply| ReadReq::List {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                delimiter: delimiter.map(str::to_owned),
                start_after: start_after.to_owned(),
                limit,
                report_header,
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
    /// passes (objects written meanwhile may or may not be seen). Each object reports the
    /// value of `report_header`, as in [`Engine::list`].
    pub fn walk(&self, bucket: &str, report_header: Option<&'static str>) -> ObjectWalk {
        ObjectWalk {
            engine: self.clone(),
            bucket: bucket.to_owned(),
            report_header,
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
        read(tx, |reply| ReadReq::GetUpload { bucket: b, key: k, upload_id: u, reply })
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
                read(tx, |reply| ReadReq::ListUploads {
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
