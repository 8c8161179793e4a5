//! The metadata service of one executor. It owns the index of the partitions assigned to its
//! core and the core's metadata log. Requests arrive over a bounded channel; writes are
//! validated in arrival order, appended to the log in group-committed batches, and applied
//! to the index (and answered) only after the batch is on stable storage on a write quorum.
//!
//! It sits below the `Engine` handle: what it needs of the engine comes in a [`CoreEnv`]
//! (drive state, bucket map, heal state, settings), and its requests are request.rs's.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::buckets::Buckets;
use crate::cache;
use crate::drives::DriveState;
use crate::error::{is_process_error, EngineError, Result};
use crate::heal::{self, IndexView};
use crate::heal_state::HealState;
use crate::index::{Index, IndexTotals};
use crate::io::{remove_file, DriveFile, OpenMode};
use crate::limits::BATCH_BYTES_MAX;
use crate::meta::{DataLoc, ObjectMeta, PartLoc, PartMeta, UploadMeta};
use crate::partition::{debug_assert_key_owner, debug_assert_owner, enter_core, BUCKET_PARTITION};
use crate::quorum;
use crate::request::{MetaReq, ReadReq, Reply, WriteOp};
use crate::snapshot;
use crate::types::{ObjectKey, PutCondition, UploadKey};
use crate::wal::{self, encode_record, wal_path, Record};

/// Data files replaced or deleted are removed after this delay, so that readers that already
/// hold the old metadata can finish. A crash before removal leaves them to the start-up sweep.
const DATA_GC_DELAY: Duration = Duration::from_secs(5);
/// The sweep starts this long after start-up, so that it never competes with recovery.
const SWEEP_DELAY: Duration = Duration::from_secs(2);

/// What a core's metadata service uses of the engine.
pub(crate) struct CoreEnv {
    pub drives: Arc<DriveState>,
    pub buckets: Arc<Buckets>,
    pub heal: Arc<HealState>,
    /// Executors in this process.
    pub cores: usize,
    /// Snapshot the index after appending this many log bytes.
    pub snapshot_every_bytes: u64,
    /// This core's block cache budget.
    pub cache_bytes: usize,
}

/// What start-up hands to each core.
pub struct CoreBoot {
    pub core: usize,
    pub(crate) rx: flume::Receiver<MetaReq>,
    pub(crate) objects: BTreeMap<ObjectKey, ObjectMeta>,
    pub(crate) uploads: BTreeMap<UploadKey, UploadMeta>,
    pub(crate) seqs: HashMap<u16, u64>,
    pub(crate) wal_end: u64,
    /// Log offset covered by this core's newest snapshot.
    pub(crate) snapshot_off: u64,
    /// Write a snapshot right away (start-up had to replay everything).
    pub(crate) snapshot_due: bool,
}

/// A write waiting for the next batch.
struct PendingWrite {
    partition: u16,
    op: WriteOp,
    reply: Reply<()>,
}

/// A range of the log: where a batch starts and how long it is.
#[derive(Clone, Copy)]
struct LogRange {
    base: u64,
    len: usize,
}

struct CoreState {
    index: Index,
    seqs: HashMap<u16, u64>,
    wal_end: u64,
    pending: Vec<PendingWrite>,
    snapshot_off: u64,
    snapshot_writing: bool,
    /// The last batch that failed to reach a write quorum: the next batch starts by voiding
    /// it (wal::encode_void).
    failed_batch: Option<LogRange>,
    /// From a failed batch until a batch carrying its void is acknowledged (`failed_batch`
    /// is already taken while that batch is being written).
    void_pending: bool,
    /// A retry of the void is scheduled: failures while it waits schedule no other.
    retry_armed: bool,
    /// Where the last acknowledged batch ends: below it the log is settled (the healer
    /// copies nothing beyond it, so it never spreads a batch that is about to be voided).
    committed_end: u64,
}

/// The effect of one validated write, applied after its batch is durable.
enum Effect {
    None,
    SetObject(ObjectKey, ObjectMeta),
    RemoveObject(ObjectKey),
    SetUpload(UploadKey, UploadMeta),
    RemoveUpload(UploadKey),
    CompleteUpload { upload: UploadKey, object: ObjectKey, meta: ObjectMeta },
    Bucket { name: String, created_ms: Option<i64> },
    BucketConfig { name: String, item: String, value: Option<String> },
}

/// A validated write: its log record (none for a write that changes nothing), its effect,
/// and the data files it makes garbage.
struct Prepared {
    record: Option<Record>,
    effect: Effect,
    garbage: Vec<u128>,
}

impl Prepared {
    fn new(record: Record, effect: Effect, garbage: Vec<u128>) -> Prepared {
        Prepared { record: Some(record), effect, garbage }
    }
}

/// Validation sees the index as it will be after the writes queued before it in the batch.
#[derive(Default)]
struct Overlay {
    objects: HashMap<ObjectKey, Option<ObjectMeta>>,
    uploads: HashMap<UploadKey, Option<UploadMeta>>,
}

impl CoreState {
    fn new(
        objects: BTreeMap<ObjectKey, ObjectMeta>,
        uploads: BTreeMap<UploadKey, UploadMeta>,
        seqs: HashMap<u16, u64>,
        wal_end: u64,
        snapshot_off: u64,
    ) -> CoreState {
        CoreState {
            index: Index::new(objects, uploads),
            seqs,
            wal_end,
            pending: Vec::new(),
            snapshot_off,
            snapshot_writing: false,
            failed_batch: None,
            void_pending: false,
            retry_armed: false,
            committed_end: wal_end,
        }
    }

    fn object(&self, overlay: &Overlay, key: &ObjectKey) -> Option<ObjectMeta> {
        match overlay.objects.get(key) {
            Some(v) => v.clone(),
            None => self.index.object(key).cloned(),
        }
    }
    fn upload(&self, overlay: &Overlay, key: &UploadKey) -> Option<UploadMeta> {
        match overlay.uploads.get(key) {
            Some(v) => v.clone(),
            None => self.index.upload(key).cloned(),
        }
    }

    /// Checks one write against the current state (and the writes before it in the batch).
    fn prepare(&self, overlay: &mut Overlay, op: WriteOp) -> Result<Prepared> {
        match op {
            WriteOp::Put { bucket, key, meta, inline, cond } => {
                self.prepare_put(overlay, bucket, key, meta, inline, cond)
            }
            WriteOp::Delete { bucket, key } => Ok(self.prepare_delete(overlay, bucket, key)),
            WriteOp::SetTags { bucket, key, tags } => self.prepare_set_tags(overlay, bucket, key, tags),
            WriteOp::SetHeaders { bucket, key, data, headers_before, headers, new_data } => {
                let change = HeaderChange { data, headers_before, headers, new_data };
                self.prepare_set_headers(overlay, bucket, key, change)
            }
            WriteOp::CreateUpload { bucket, key, upload_id, upload } => {
                let ukey = UploadKey::new(bucket.clone(), key.clone(), upload_id.clone());
                overlay.uploads.insert(ukey.clone(), Some(upload.clone()));
                let record = Record::UploadCreate { bucket, key, upload_id, upload: upload.clone() };
                Ok(Prepared::new(record, Effect::SetUpload(ukey, upload), Vec::new()))
            }
            WriteOp::PutPart { bucket, key, upload_id, part_number, part } => {
                self.prepare_part(overlay, UploadKey::new(bucket, key, upload_id), part_number, part)
            }
            WriteOp::Complete { bucket, key, upload_id, meta, parts_used, cond } => {
                self.prepare_complete(overlay, UploadKey::new(bucket, key, upload_id), meta, parts_used, cond)
            }
            WriteOp::Abort { bucket, key, upload_id } => {
                self.prepare_abort(overlay, UploadKey::new(bucket, key, upload_id))
            }
            WriteOp::CreateBucket { name, created_ms } => Ok(Prepared::new(
                Record::BucketCreate { name: name.clone(), created_ms },
                Effect::Bucket { name, created_ms: Some(created_ms) },
                Vec::new(),
            )),
            WriteOp::DeleteBucket { name } => Ok(Prepared::new(
                Record::BucketDelete { name: name.clone() },
                Effect::Bucket { name, created_ms: None },
                Vec::new(),
            )),
            WriteOp::BucketConfig { name, item, value } => {
                let record = Record::BucketConfig { name: name.clone(), item: item.clone(), value: value.clone() };
                Ok(Prepared::new(record, Effect::BucketConfig { name, item, value }, Vec::new()))
            }
        }
    }

    fn prepare_put(
        &self,
        overlay: &mut Overlay,
        bucket: String,
        key: String,
        meta: ObjectMeta,
        inline: Option<Vec<u8>>,
        cond: Option<PutCondition>,
    ) -> Result<Prepared> {
        let okey = ObjectKey::new(bucket.clone(), key.clone());
        let old = self.object(overlay, &okey);
        check_condition(cond.as_ref(), old.as_ref())?;
        let garbage = old.map(|o| o.file_ids()).unwrap_or_default();
        overlay.objects.insert(okey.clone(), Some(meta.clone()));
        let record = Record::Put { bucket, key, meta: meta.clone(), inline, completes_upload: None };
        Ok(Prepared::new(record, Effect::SetObject(okey, meta), garbage))
    }

    /// Deleting a key that does not exist writes nothing and succeeds (as S3 does).
    fn prepare_delete(&self, overlay: &mut Overlay, bucket: String, key: String) -> Prepared {
        let okey = ObjectKey::new(bucket.clone(), key.clone());
        let Some(old) = self.object(overlay, &okey) else {
            return Prepared { record: None, effect: Effect::None, garbage: Vec::new() };
        };
        overlay.objects.insert(okey.clone(), None);
        Prepared::new(Record::Delete { bucket, key }, Effect::RemoveObject(okey), old.file_ids())
    }

    fn prepare_set_tags(
        &self,
        overlay: &mut Overlay,
        bucket: String,
        key: String,
        tags: Vec<(String, String)>,
    ) -> Result<Prepared> {
        let okey = ObjectKey::new(bucket.clone(), key.clone());
        let Some(mut meta) = self.object(overlay, &okey) else {
            return Err(EngineError::NoSuchKey);
        };
        meta.tags = tags;
        overlay.objects.insert(okey.clone(), Some(meta.clone()));
        let record = Record::Put { bucket, key, meta: meta.clone(), inline: None, completes_upload: None };
        Ok(Prepared::new(record, Effect::SetObject(okey, meta), Vec::new()))
    }

    fn prepare_set_headers(
        &self,
        overlay: &mut Overlay,
        bucket: String,
        key: String,
        change: HeaderChange,
    ) -> Result<Prepared> {
        let okey = ObjectKey::new(bucket.clone(), key.clone());
        let Some(mut meta) = self.object(overlay, &okey) else {
            return Err(EngineError::NoSuchKey);
        };
        if meta.data != change.data || meta.headers != change.headers_before {
            return Err(EngineError::PreconditionFailed);
        }
        let mut garbage = Vec::new();
        if let Some(new_data) = change.new_data {
            // Only data in files can be swapped.
            if matches!(new_data, DataLoc::Inline { .. }) || matches!(change.data, DataLoc::Inline { .. }) {
                return Err(EngineError::PreconditionFailed);
            }
            garbage = meta.file_ids();
            meta.data = new_data;
            garbage.retain(|id| !meta.file_ids().contains(id));
        }
        meta.headers = change.headers;
        overlay.objects.insert(okey.clone(), Some(meta.clone()));
        let record = Record::Put { bucket, key, meta: meta.clone(), inline: None, completes_upload: None };
        Ok(Prepared::new(record, Effect::SetObject(okey, meta), garbage))
    }

    fn prepare_part(
        &self,
        overlay: &mut Overlay,
        ukey: UploadKey,
        part_number: u32,
        part: PartMeta,
    ) -> Result<Prepared> {
        let Some(mut upload) = self.upload(overlay, &ukey) else {
            return Err(EngineError::NoSuchUpload);
        };
        let garbage = upload.parts.insert(part_number, part.clone()).map(|p| vec![p.file_id]).unwrap_or_default();
        overlay.uploads.insert(ukey.clone(), Some(upload.clone()));
        let record = Record::UploadPart {
            bucket: ukey.bucket.clone(),
            key: ukey.key.clone(),
            upload_id: ukey.upload_id.clone(),
            part_number,
            part,
        };
        Ok(Prepared::new(record, Effect::SetUpload(ukey, upload), garbage))
    }

    fn prepare_complete(
        &self,
        overlay: &mut Overlay,
        ukey: UploadKey,
        meta: ObjectMeta,
        parts_used: Vec<(u32, u128)>,
        cond: Option<PutCondition>,
    ) -> Result<Prepared> {
        let okey = ukey.object();
        let Some(upload) = self.upload(overlay, &ukey) else {
            return Err(EngineError::NoSuchUpload);
        };
        for (number, file_id) in &parts_used {
            if upload.parts.get(number).map(|p| p.file_id) != Some(*file_id) {
                return Err(EngineError::InvalidPart(format!("part {number} changed while completing")));
            }
        }
        let old = self.object(overlay, &okey);
        check_condition(cond.as_ref(), old.as_ref())?;
        let mut garbage = old.map(|o| o.file_ids()).unwrap_or_default();
        let used: Vec<u128> = parts_used.iter().map(|(_, id)| *id).collect();
        garbage.extend(upload.parts.values().map(|p| p.file_id).filter(|id| !used.contains(id)));
        overlay.uploads.insert(ukey.clone(), None);
        overlay.objects.insert(okey.clone(), Some(meta.clone()));
        let record = Record::Put {
            bucket: okey.bucket.clone(),
            key: okey.key.clone(),
            meta: meta.clone(),
            inline: None,
            completes_upload: Some(ukey.upload_id.clone()),
        };
        Ok(Prepared::new(record, Effect::CompleteUpload { upload: ukey, object: okey, meta }, garbage))
    }

    fn prepare_abort(&self, overlay: &mut Overlay, ukey: UploadKey) -> Result<Prepared> {
        let Some(upload) = self.upload(overlay, &ukey) else {
            return Err(EngineError::NoSuchUpload);
        };
        overlay.uploads.insert(ukey.clone(), None);
        let garbage = upload.parts.values().map(|p| p.file_id).collect();
        let record = Record::UploadAbort {
            bucket: ukey.bucket.clone(),
            key: ukey.key.clone(),
            upload_id: ukey.upload_id.clone(),
        };
        Ok(Prepared::new(record, Effect::RemoveUpload(ukey), garbage))
    }

    fn apply(&mut self, buckets: &Buckets, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::SetObject(k, m) => self.index.set_object(k, m),
            Effect::RemoveObject(k) => self.index.remove_object(&k),
            Effect::SetUpload(k, u) => self.index.set_upload(k, u),
            Effect::RemoveUpload(k) => self.index.remove_upload(&k),
            Effect::CompleteUpload { upload, object, meta } => {
                self.index.remove_upload(&upload);
                self.index.set_object(object, meta);
            }
            Effect::Bucket { name, created_ms } => buckets.set(name, created_ms),
            Effect::BucketConfig { name, item, value } => buckets.set_config(&name, item, value),
        }
    }
}

/// The data and headers a header change expects to find, and what it sets.
struct HeaderChange {
    data: DataLoc,
    headers_before: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    new_data: Option<DataLoc>,
}

fn check_condition(cond: Option<&PutCondition>, current: Option<&ObjectMeta>) -> Result<()> {
    match (cond, current) {
        (None, _) => Ok(()),
        (Some(PutCondition::IfNoneMatchAny), None) => Ok(()),
        (Some(PutCondition::IfNoneMatchAny), Some(_)) => Err(EngineError::PreconditionFailed),
        (Some(PutCondition::IfMatch(etag)), Some(meta)) if meta.etag == *etag => Ok(()),
        (Some(PutCondition::IfMatch(_)), Some(_)) => Err(EngineError::PreconditionFailed),
        (Some(PutCondition::IfMatch(_)), None) => Err(EngineError::NoSuchKey),
    }
}

/// Runs the metadata service of core `boot.core` on this thread until the engine's senders
/// are dropped. One core per thread: the thread is marked as this core's (partition.rs).
pub(crate) async fn run(env: CoreEnv, boot: CoreBoot) {
    let CoreBoot { core, rx, objects, uploads, seqs, wal_end, snapshot_off, snapshot_due } = boot;
    enter_core(core);
    cache::set_budget(env.cache_bytes);
    let env = Rc::new(env);
    let snapshot_off = if snapshot_due { u64::MAX } else { snapshot_off };
    let state = Rc::new(RefCell::new(CoreState::new(objects, uploads, seqs, wal_end, snapshot_off)));
    maybe_snapshot(&env, core, &state);
    let wal_files = open_wal_files(&env.drives, core, None).await;
    monoio::spawn(sweep_leftovers(env.clone(), core, state.clone(), SystemTime::now()));
    let (kick_tx, kick_rx) = flume::bounded::<()>(1);
    let view = CoreView { state: state.clone(), kick: kick_tx.clone() };
    monoio::spawn(heal::run_core(env.drives.clone(), env.heal.clone(), env.cores, core, Rc::new(view)));
    let commits = CommitLoop { env: env.clone(), core, state: state.clone(), kick_again: kick_tx.clone() };
    monoio::spawn(commits.run(wal_files, kick_rx));
    while let Ok(req) = rx.recv_async().await {
        match req {
            MetaReq::Read(read) => answer(&env, &state.borrow(), read),
            MetaReq::Write { partition, op, reply } => {
                state.borrow_mut().pending.push(PendingWrite { partition, op, reply });
                let _ = kick_tx.try_send(());
            }
        }
    }
}

/// Answers a read from the index as it is now.
fn answer(env: &CoreEnv, st: &CoreState, req: ReadReq) {
    match req {
        ReadReq::Get { bucket, key, reply } => {
            debug_assert_key_owner(&bucket, &key, env.drives.partition_count(), env.cores);
            let _ = reply.send(Ok(st.index.object(&ObjectKey { bucket, key }).cloned()));
        }
        ReadReq::GetUpload { bucket, key, upload_id, reply } => {
            debug_assert_key_owner(&bucket, &key, env.drives.partition_count(), env.cores);
            let _ = reply.send(Ok(st.index.upload(&UploadKey { bucket, key, upload_id }).cloned()));
        }
        ReadReq::List { bucket, prefix, delimiter, start_after, limit, report_header, reply } => {
            let page = st.index.list(&bucket, &prefix, delimiter.as_deref(), &start_after, limit, report_header);
            let _ = reply.send(Ok(page));
        }
        ReadReq::ListUploads { bucket, prefix, key_marker, upload_id_marker, limit, reply } => {
            let _ = reply.send(Ok(st.index.list_uploads(&bucket, &prefix, &key_marker, &upload_id_marker, limit)));
        }
        ReadReq::HasData { bucket, reply } => {
            let _ = reply.send(Ok(st.index.has_data(&bucket)));
        }
    }
}

/// The healer's window on this core's index, and its way to wake the commit loop.
struct CoreView {
    state: Rc<RefCell<CoreState>>,
    kick: flume::Sender<()>,
}

impl IndexView for CoreView {
    fn objects_after(&self, after: Option<&ObjectKey>, limit: usize) -> Vec<(ObjectKey, ObjectMeta)> {
        self.state.borrow().index.objects_after(after, limit)
    }

    fn upload_parts(&self) -> Vec<(ObjectKey, PartLoc)> {
        let st = self.state.borrow();
        let parts = st.index.uploads().flat_map(|(key, upload)| {
            upload.parts.values().map(move |p| (key.clone(), PartLoc { file_id: p.file_id, size: p.size }))
        });
        parts.collect()
    }

    fn object(&self, key: &ObjectKey) -> Option<ObjectMeta> {
        self.state.borrow().index.object(key).cloned()
    }

    fn totals(&self) -> IndexTotals {
        self.state.borrow().index.totals()
    }

    fn settled_wal_end(&self) -> u64 {
        self.state.borrow().committed_end
    }

    fn void_pending(&self) -> bool {
        self.state.borrow().void_pending
    }

    fn retry_void(&self) {
        let _ = self.kick.try_send(());
    }

    fn is_referenced(&self, file_id: u128) -> bool {
        self.state.borrow().index.is_referenced(file_id)
    }
}

/// This core's log file on every online drive (None: offline or cannot be opened).
struct WalFiles {
    files: Rc<Vec<Option<Rc<DriveFile>>>>,
    /// A file could not be opened for a reason of the process (out of file descriptors):
    /// the next batch tries again, so the drive is not left out of the log for good.
    retry: bool,
}

/// Opens this core's log on every online drive, keeping the files of `keep` that are open.
async fn open_wal_files(drives: &DriveState, core: usize, keep: Option<&WalFiles>) -> WalFiles {
    let mut files = Vec::new();
    let mut retry = false;
    for (drive, path) in drives.paths().iter().enumerate() {
        if !drives.online(drive) {
            files.push(None);
            continue;
        }
        if let Some(file) = keep.and_then(|k| k.files.get(drive).cloned().flatten()) {
            files.push(Some(file));
            continue;
        }
        match DriveFile::open(wal_path(path, core as u16), OpenMode::ReadWriteBuffered).await {
            Ok(file) => files.push(Some(Rc::new(file))),
            Err(err) => {
                retry |= is_process_error(&err);
                tracing::warn!(drive = %path.display(), error = %err, "cannot open metadata log; writing without it");
                files.push(None);
            }
        }
    }
    WalFiles { files: Rc::new(files), retry }
}

/// One log batch: its bytes, where they go in the log, and the writes they carry.
struct Batch {
    bytes: Vec<u8>,
    base: u64,
    entries: Vec<BatchEntry>,
}

/// A write in a batch, answered when the batch is durable (or failed).
struct BatchEntry {
    effect: Effect,
    garbage: Vec<u128>,
    partition: u16,
    reply: Reply<()>,
}

/// Takes the queued writes in batches, appends each durably, then applies and answers them.
struct CommitLoop {
    env: Rc<CoreEnv>,
    core: usize,
    state: Rc<RefCell<CoreState>>,
    /// Wakes this loop again (the void retry timer uses it).
    kick_again: flume::Sender<()>,
}

impl CommitLoop {
    async fn run(self, wal_files: WalFiles, kick: flume::Receiver<()>) {
        let mut wal_files = wal_files;
        let mut epoch = self.env.drives.epoch();
        while kick.recv_async().await.is_ok() {
            loop {
                if self.env.drives.epoch() != epoch {
                    // A drive was formatted as a replacement: its old log file is gone.
                    epoch = self.env.drives.epoch();
                    wal_files = open_wal_files(&self.env.drives, self.core, None).await;
                } else if wal_files.retry {
                    // A log file could not be opened for want of descriptors: try it again.
                    wal_files = open_wal_files(&self.env.drives, self.core, Some(&wal_files)).await;
                }
                let Some(Batch { bytes, base, entries }) = take_batch(&self.env, self.core, &self.state) else { break };
                let range = LogRange { base, len: bytes.len() };
                let result = if bytes.is_empty() {
                    Ok(())
                } else {
                    append_durably(&self.env.drives, &wal_files.files, bytes, base).await
                };
                let applied = result.is_ok();
                self.settle(range, entries, result);
                if !applied {
                    // Wait for the retry (or the next write) rather than spin on failing drives.
                    break;
                }
                maybe_snapshot(&self.env, self.core, &self.state);
            }
        }
    }

    /// Applies and answers a batch's writes once it is durable, or answers them with the
    /// error and arranges for the batch to be voided.
    fn settle(&self, range: LogRange, entries: Vec<BatchEntry>, result: Result<(), AppendError>) {
        let mut st = self.state.borrow_mut();
        match &result {
            Ok(()) => {
                st.committed_end = range.base + range.len as u64;
                st.void_pending = false;
            }
            Err(_) => {
                st.failed_batch = Some(range);
                st.void_pending = true;
                if !st.retry_armed {
                    st.retry_armed = true;
                    self.arm_void_retry();
                }
            }
        }
        for entry in entries {
            match &result {
                Ok(()) => {
                    debug_assert_owner(entry.partition, self.env.cores);
                    st.apply(&self.env.buckets, entry.effect);
                    schedule_gc(&self.env.drives, entry.partition, entry.garbage);
                    let _ = entry.reply.send(Ok(()));
                }
                Err(full_or_quorum) => {
                    let _ = entry.reply.send(Err(full_or_quorum.to_error()));
                }
            }
        }
    }

    /// The next attempt (with the void, wal::encode_void) comes this soon even if no write
    /// arrives, so a failed batch does not linger on the drives that took it. One timer at
    /// a time, however often attempts fail.
    fn arm_void_retry(&self) {
        let (kick, state, wait) = (self.kick_again.clone(), self.state.clone(), self.env.heal.config.void_retry);
        monoio::spawn(async move {
            monoio::time::sleep(wait).await;
            state.borrow_mut().retry_armed = false;
            let _ = kick.try_send(());
        });
    }
}

/// Validates the queued writes in order and encodes their records into one log batch (a
/// failed batch's void first).
fn take_batch(env: &CoreEnv, core: usize, state: &RefCell<CoreState>) -> Option<Batch> {
    let mut st = state.borrow_mut();
    if st.pending.is_empty() && st.failed_batch.is_none() {
        return None;
    }
    let mut batch = Batch { bytes: Vec::new(), base: st.wal_end, entries: Vec::new() };
    if let Some(failed) = st.failed_batch.take() {
        debug_assert_eq!(failed.base + failed.len as u64, batch.base);
        wal::encode_void(&mut batch.bytes, failed.len);
        batch.base = failed.base;
        st.wal_end = failed.base;
    }
    let mut overlay = Overlay::default();
    let mut pending = std::mem::take(&mut st.pending).into_iter();
    for write in pending.by_ref() {
        st.add_to_batch(env, core, &mut overlay, &mut batch, write);
        if batch.bytes.len() >= BATCH_BYTES_MAX {
            break;
        }
    }
    st.pending = pending.collect();
    st.wal_end += batch.bytes.len() as u64;
    Some(batch)
}

impl CoreState {
    /// Validates one write; a valid one gets the partition's next sequence number and its
    /// record in the batch, a refused one its answer at once.
    fn add_to_batch(
        &mut self,
        env: &CoreEnv,
        core: usize,
        overlay: &mut Overlay,
        batch: &mut Batch,
        write: PendingWrite,
    ) {
        let PendingWrite { partition, op, reply } = write;
        debug_assert_owner(partition, env.cores);
        debug_assert!(
            match op.object_key() {
                Some((bucket, key)) => env.drives.partition_of(bucket, key) == partition,
                None => partition == BUCKET_PARTITION,
            },
            "a write sent for partition {partition} is about another partition"
        );
        match self.prepare(overlay, op) {
            Err(err) => {
                let _ = reply.send(Err(err));
            }
            Ok(Prepared { record, mut effect, garbage }) => {
                if let Some(record) = record {
                    let seq = self.seqs.entry(partition).or_insert(0);
                    *seq += 1;
                    let loc = encode_record(&mut batch.bytes, batch.base, core as u16, partition, *seq, &record);
                    if let (Some(loc), Effect::SetObject(_, meta)) = (loc, &mut effect) {
                        meta.data = loc;
                    }
                }
                batch.entries.push(BatchEntry { effect, garbage, partition, reply });
            }
        }
    }
}

/// Why a batch was not acknowledged.
enum AppendError {
    Full,
    Quorum {
        ok: usize,
        needed: usize,
    },
    /// The quorum was missed because the process is short of resources, not the drives.
    Busy(String),
}

impl AppendError {
    fn to_error(&self) -> EngineError {
        match self {
            AppendError::Full => EngineError::StorageFull,
            AppendError::Quorum { ok, needed } => EngineError::WriteQuorum { ok: *ok, needed: *needed },
            AppendError::Busy(why) => EngineError::Busy(why.clone()),
        }
    }
}

/// Writes the batch at `base` on every drive with an open log, fdatasyncs, and succeeds when
/// a write quorum of drives has it. A drive that fails or lags leaves a hole in its copy,
/// which replay fills from the others and the healer repairs.
async fn append_durably(
    drives: &Arc<DriveState>,
    files: &Rc<Vec<Option<Rc<DriveFile>>>>,
    bytes: Vec<u8>,
    base: u64,
) -> Result<(), AppendError> {
    // Debug builds check every record right before the batch is written.
    debug_assert!(wal::batch_is_valid(&bytes), "a log batch that does not verify");
    let bytes = Rc::new(bytes);
    let mut ops = Vec::new();
    for (drive, file) in files.iter().enumerate() {
        let Some(file) = file.clone() else { continue };
        let bytes = bytes.clone();
        ops.push((drive, async move {
            file.write_all_at(bytes.to_vec(), base).await?;
            file.sync_data().await
        }));
    }
    let needed = drives.write_quorum();
    let outcome = quorum::run(drives, ops, needed).await;
    for failure in &outcome.failed {
        let drive = drives.paths()[failure.drive].display();
        tracing::warn!(%drive, error = %failure.error, "metadata log write failed");
    }
    if outcome.ok.len() >= needed {
        Ok(())
    } else if let Some(failure) = outcome.failed.iter().find(|f| is_process_error(&f.error)) {
        Err(AppendError::Busy(failure.error.to_string()))
    } else if outcome.all_failures_are_enospc() {
        Err(AppendError::Full)
    } else {
        Err(AppendError::Quorum { ok: outcome.ok.len(), needed })
    }
}

/// Removes the data files a committed write made garbage, after `DATA_GC_DELAY`.
fn schedule_gc(drives: &Arc<DriveState>, partition: u16, garbage: Vec<u128>) {
    if garbage.is_empty() || partition == BUCKET_PARTITION {
        return;
    }
    let drives = drives.clone();
    monoio::spawn(async move {
        monoio::time::sleep(DATA_GC_DELAY).await;
        for file_id in garbage {
            for path in drives.data_file_paths(partition, file_id) {
                let _ = remove_file(path).await;
            }
        }
    });
}

/// Removes data files of this core's partitions that no object or upload references and
/// that predate this start: what writes interrupted by a crash (or deletions interrupted
/// before their GC delay ran out) left behind. Files written since start-up are never
/// touched, so in-flight writes are safe.
async fn sweep_leftovers(env: Rc<CoreEnv>, core: usize, state: Rc<RefCell<CoreState>>, started: SystemTime) {
    monoio::time::sleep(SWEEP_DELAY).await;
    let drives = &env.drives;
    let mut removed = 0usize;
    // Files referenced later are newer than `started`, so never swept.
    for partition in (0..drives.partition_count()).filter(|p| *p as usize % env.cores == core) {
        for drive in 0..drives.paths().len() {
            if !drives.online(drive) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(drives.partition_dir(drive, partition)) else { continue };
            for entry in entries.flatten() {
                let Some(id) = entry.file_name().to_str().and_then(|n| u128::from_str_radix(n, 16).ok()) else {
                    continue;
                };
                let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < started);
                let referenced = state.borrow().index.is_referenced(id);
                if old && !referenced && remove_file(entry.path()).await.is_ok() {
                    removed += 1;
                }
            }
        }
        // Yield between partitions so the sweep never holds the core for long.
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    if removed > 0 {
        tracing::info!(core, files = removed, "reclaimed leftover data files of interrupted writes");
    }
}

/// Writes a snapshot of this core's index when enough log was appended since the last one
/// (or when start-up asked for one). The index is encoded at once, at a batch boundary,
/// so it matches the log offset exactly; the files are written by the blocking pool.
fn maybe_snapshot(env: &CoreEnv, core: usize, state: &Rc<RefCell<CoreState>>) {
    let mut st = state.borrow_mut();
    let due = st.snapshot_off == u64::MAX || st.wal_end.saturating_sub(st.snapshot_off) >= env.snapshot_every_bytes;
    if !due || st.snapshot_writing {
        return;
    }
    // The snapshot walks the whole index anyway: check its counts against a recount.
    #[cfg(debug_assertions)]
    st.index.debug_check();
    let online: Vec<PathBuf> = env.drives.online_paths();
    let wals = wal::list_wals(&online);
    let view = snapshot::SnapshotView {
        cores: env.cores as u16,
        core: core as u16,
        wal_off: st.wal_end,
        wal_lens: snapshot::wal_lengths(&online, &wals),
        seqs: &st.seqs,
        buckets: if core == 0 { env.buckets.infos() } else { Vec::new() },
        objects: st.index.maps().0,
        uploads: st.index.maps().1,
    };
    let bytes = snapshot::encode(&view);
    st.snapshot_off = st.wal_end;
    st.snapshot_writing = true;
    drop(st);
    let state = state.clone();
    monoio::spawn(async move {
        let job = move || snapshot::write_everywhere(&online, core as u16, &bytes);
        if monoio::spawn_blocking(job).await.is_err() {
            tracing::error!(core, "index snapshot task was lost");
        }
        state.borrow_mut().snapshot_writing = false;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        let meta = ObjectMeta::for_tests(1);
        let meta = Some(&meta);
        assert!(check_condition(Some(&PutCondition::IfNoneMatchAny), None).is_ok());
        assert!(check_condition(Some(&PutCondition::IfNoneMatchAny), meta).is_err());
        assert!(check_condition(Some(&PutCondition::IfMatch("e".into())), meta).is_ok());
        assert!(check_condition(Some(&PutCondition::IfMatch("x".into())), meta).is_err());
        assert!(matches!(check_condition(Some(&PutCondition::IfMatch("e".into())), None), Err(EngineError::NoSuchKey)));
    }
}
