//! The metadata service of one executor. It owns the index of the partitions assigned to its
//! core and the core's metadata log. Requests arrive over a bounded channel; writes are
//! validated in arrival order, appended to the log in group-committed batches, and applied
//! to the index (and answered) only after the batch is on stable storage on a write quorum.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::rc::Rc;
use std::time::Duration;

use crate::engine::{Engine, ListItem, ListPage, PutCondition, UploadSummary};
use crate::error::{EngineError, Result};
use crate::io::{remove_file, DriveFile, OpenMode};
use crate::meta::{DataLoc, ObjectMeta, PartMeta, UploadMeta, STORAGE_CLASS_HEADER};
use crate::quorum;
use crate::wal::{encode_record, wal_path, Record, BUCKET_PARTITION};

/// Data files replaced or deleted are removed after this delay, so that readers that already
/// hold the old metadata can finish. A crash before removal leaves them to the start-up sweep.
const DATA_GC_DELAY: Duration = Duration::from_secs(5);
/// At most this many log bytes go into one group commit.
const BATCH_BYTES_MAX: usize = 16 << 20;

pub type Reply<T> = flume::Sender<Result<T>>;
pub type ObjectKey = (String, String);
pub type UploadKey = (String, String, String);

// A request is moved once through a channel; boxing the large write variant would add an
// allocation per write to save a few hundred bytes of channel slot.
#[allow(clippy::large_enum_variant)]
pub enum MetaReq {
    Get {
        bucket: String,
        key: String,
        reply: Reply<Option<ObjectMeta>>,
    },
    GetUpload {
        bucket: String,
        key: String,
        upload_id: String,
        reply: Reply<Option<UploadMeta>>,
    },
    List {
        bucket: String,
        prefix: String,
        delimiter: Option<String>,
        start_after: String,
        limit: usize,
        reply: Reply<ListPage>,
    },
    ListUploads {
        bucket: String,
        prefix: String,
        key_marker: String,
        upload_id_marker: String,
        limit: usize,
        reply: Reply<Vec<UploadSummary>>,
    },
    HasData {
        bucket: String,
        reply: Reply<bool>,
    },
    Write {
        partition: u16,
        op: WriteOp,
        reply: Reply<()>,
    },
}

pub enum WriteOp {
    Put {
        bucket: String,
        key: String,
        meta: ObjectMeta,
        inline: Option<Vec<u8>>,
        cond: Option<PutCondition>,
    },
    Delete {
        bucket: String,
        key: String,
    },
    SetTags {
        bucket: String,
        key: String,
        tags: Vec<(String, String)>,
    },
    /// Replaces the stored headers of an object whose data is still `data` (a key
    /// rotation re-sealing the object key), and with `new_data` its data too (the old data
    /// files become garbage: a transition to a remote tier, a restore, the expiry of a
    /// restored copy); NoSuchKey / PreconditionFailed otherwise.
    SetHeaders {
        bucket: String,
        key: String,
        data: crate::meta::DataLoc,
        /// The headers the caller read: a change by anyone else in between (a key re-seal
        /// racing a transition) refuses this one instead of being overwritten.
        headers_before: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        new_data: Option<crate::meta::DataLoc>,
    },
    CreateUpload {
        bucket: String,
        key: String,
        upload_id: String,
        upload: UploadMeta,
    },
    PutPart {
        bucket: String,
        key: String,
        upload_id: String,
        part_number: u32,
        part: PartMeta,
    },
    Complete {
        bucket: String,
        key: String,
        upload_id: String,
        meta: ObjectMeta,
        parts_used: Vec<(u32, u128)>,
        cond: Option<PutCondition>,
    },
    Abort {
        bucket: String,
        key: String,
        upload_id: String,
    },
    CreateBucket {
        name: String,
        created_ms: i64,
    },
    DeleteBucket {
        name: String,
    },
    BucketConfig {
        name: String,
        item: String,
        value: Option<String>,
    },
}

/// What start-up hands to each core.
pub struct CoreBoot {
    pub core: usize,
    pub rx: flume::Receiver<MetaReq>,
    pub objects: BTreeMap<ObjectKey, ObjectMeta>,
    pub uploads: BTreeMap<UploadKey, UploadMeta>,
    pub seqs: HashMap<u16, u64>,
    pub wal_end: u64,
    /// Log offset covered by this core's newest snapshot.
    pub snapshot_off: u64,
    /// Write a snapshot right away (start-up had to replay everything).
    pub snapshot_due: bool,
}

struct CoreState {
    objects: BTreeMap<ObjectKey, ObjectMeta>,
    uploads: BTreeMap<UploadKey, UploadMeta>,
    seqs: HashMap<u16, u64>,
    wal_end: u64,
    pending: Vec<(u16, WriteOp, Reply<()>)>,
    snapshot_off: u64,
    snapshot_writing: bool,
    /// The log range of the last batch that failed to reach a write quorum: the next batch
    /// starts by voiding it (wal::encode_void).
    failed_batch: Option<(u64, usize)>,
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
    CompleteUpload(UploadKey, ObjectKey, ObjectMeta),
    Bucket(String, Option<i64>),
    BucketConfig(String, String, Option<String>),
}

/// Validation sees the index as it will be after the writes queued before it in the batch.
#[derive(Default)]
struct Overlay {
    objects: HashMap<ObjectKey, Option<ObjectMeta>>,
    uploads: HashMap<UploadKey, Option<UploadMeta>>,
}

impl CoreState {
    fn object(&self, overlay: &Overlay, key: &ObjectKey) -> Option<ObjectMeta> {
        match overlay.objects.get(key) {
            Some(v) => v.clone(),
            None => self.objects.get(key).cloned(),
        }
    }
    fn upload(&self, overlay: &Overlay, key: &UploadKey) -> Option<UploadMeta> {
        match overlay.uploads.get(key) {
            Some(v) => v.clone(),
            None => self.uploads.get(key).cloned(),
        }
    }

    /// Checks one write against the current state; returns its log record (if any), its
    /// effect and the data files it makes garbage.
    fn prepare(&self, overlay: &mut Overlay, op: WriteOp) -> Result<(Option<Record>, Effect, Vec<u128>)> {
        match op {
            WriteOp::Put { bucket, key, meta, inline, cond } => {
                let okey = (bucket.clone(), key.clone());
                let old = self.object(overlay, &okey);
                check_condition(cond.as_ref(), old.as_ref())?;
                let garbage = old.map(|o| o.file_ids()).unwrap_or_default();
                overlay.objects.insert(okey.clone(), Some(meta.clone()));
                let record = Record::Put { bucket, key, meta: meta.clone(), inline, completes_upload: None };
                Ok((Some(record), Effect::SetObject(okey, meta), garbage))
            }
            WriteOp::Delete { bucket, key } => {
                let okey = (bucket.clone(), key.clone());
                let Some(old) = self.object(overlay, &okey) else {
                    return Ok((None, Effect::None, Vec::new()));
                };
                overlay.objects.insert(okey.clone(), None);
                Ok((Some(Record::Delete { bucket, key }), Effect::RemoveObject(okey), old.file_ids()))
            }
            WriteOp::SetTags { bucket, key, tags } => {
                let okey = (bucket.clone(), key.clone());
                let Some(mut meta) = self.object(overlay, &okey) else {
                    return Err(EngineError::NoSuchKey);
                };
                meta.tags = tags;
                overlay.objects.insert(okey.clone(), Some(meta.clone()));
                let record = Record::Put { bucket, key, meta: meta.clone(), inline: None, completes_upload: None };
                Ok((Some(record), Effect::SetObject(okey, meta), Vec::new()))
            }
            WriteOp::SetHeaders { bucket, key, data, headers_before, headers, new_data } => {
                let okey = (bucket.clone(), key.clone());
                let Some(mut meta) = self.object(overlay, &okey) else {
                    return Err(EngineError::NoSuchKey);
                };
                if meta.data != data || meta.headers != headers_before {
                    return Err(EngineError::PreconditionFailed);
                }
                let mut garbage = Vec::new();
                if let Some(new_data) = new_data {
                    // Only data in files can be swapped.
                    if matches!(new_data, DataLoc::Inline { .. }) || matches!(data, DataLoc::Inline { .. }) {
                        return Err(EngineError::PreconditionFailed);
                    }
                    garbage = meta.file_ids();
                    meta.data = new_data;
                    garbage.retain(|id| !meta.file_ids().contains(id));
                }
                meta.headers = headers;
                overlay.objects.insert(okey.clone(), Some(meta.clone()));
                let record = Record::Put { bucket, key, meta: meta.clone(), inline: None, completes_upload: None };
                Ok((Some(record), Effect::SetObject(okey, meta), garbage))
            }
            WriteOp::CreateUpload { bucket, key, upload_id, upload } => {
                let ukey = (bucket.clone(), key.clone(), upload_id.clone());
                overlay.uploads.insert(ukey.clone(), Some(upload.clone()));
                let record = Record::UploadCreate { bucket, key, upload_id, upload: upload.clone() };
                Ok((Some(record), Effect::SetUpload(ukey, upload), Vec::new()))
            }
            WriteOp::PutPart { bucket, key, upload_id, part_number, part } => {
                let ukey = (bucket.clone(), key.clone(), upload_id.clone());
                let Some(mut upload) = self.upload(overlay, &ukey) else {
                    return Err(EngineError::NoSuchUpload);
                };
                let garbage =
                    upload.parts.insert(part_number, part.clone()).map(|p| vec![p.file_id]).unwrap_or_default();
                overlay.uploads.insert(ukey.clone(), Some(upload.clone()));
                let record = Record::UploadPart { bucket, key, upload_id, part_number, part };
                Ok((Some(record), Effect::SetUpload(ukey, upload), garbage))
            }
            WriteOp::Complete { bucket, key, upload_id, meta, parts_used, cond } => {
                let ukey = (bucket.clone(), key.clone(), upload_id.clone());
                let okey = (bucket.clone(), key.clone());
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
                let record =
                    Record::Put { bucket, key, meta: meta.clone(), inline: None, completes_upload: Some(upload_id) };
                Ok((Some(record), Effect::CompleteUpload(ukey, okey, meta), garbage))
            }
            WriteOp::Abort { bucket, key, upload_id } => {
                let ukey = (bucket.clone(), key.clone(), upload_id.clone());
                let Some(upload) = self.upload(overlay, &ukey) else {
                    return Err(EngineError::NoSuchUpload);
                };
                overlay.uploads.insert(ukey.clone(), None);
                let garbage = upload.parts.values().map(|p| p.file_id).collect();
                Ok((Some(Record::UploadAbort { bucket, key, upload_id }), Effect::RemoveUpload(ukey), garbage))
            }
            WriteOp::CreateBucket { name, created_ms } => Ok((
                Some(Record::BucketCreate { name: name.clone(), created_ms }),
                Effect::Bucket(name, Some(created_ms)),
                Vec::new(),
            )),
            WriteOp::DeleteBucket { name } => {
                Ok((Some(Record::BucketDelete { name: name.clone() }), Effect::Bucket(name, None), Vec::new()))
            }
            WriteOp::BucketConfig { name, item, value } => {
                let record = Record::BucketConfig { name: name.clone(), item: item.clone(), value: value.clone() };
                Ok((Some(record), Effect::BucketConfig(name, item, value), Vec::new()))
            }
        }
    }

    fn apply(&mut self, engine: &Engine, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::SetObject(k, m) => {
                self.objects.insert(k, m);
            }
            Effect::RemoveObject(k) => {
                self.objects.remove(&k);
            }
            Effect::SetUpload(k, u) => {
                self.uploads.insert(k, u);
            }
            Effect::RemoveUpload(k) => {
                self.uploads.remove(&k);
            }
            Effect::CompleteUpload(u, k, m) => {
                self.uploads.remove(&u);
                self.objects.insert(k, m);
            }
            Effect::Bucket(name, created) => engine.set_bucket(name, created),
            Effect::BucketConfig(name, item, value) => engine.set_bucket_config(&name, item, value),
        }
    }

    fn list(&self, bucket: &str, prefix: &str, delimiter: Option<&str>, start_after: &str, limit: usize) -> ListPage {
        let mut items = Vec::new();
        let mut start: String = if start_after > prefix { start_after.to_owned() } else { prefix.to_owned() };
        let mut inclusive = start_after < prefix;
        // A marker that is itself a rolled-up prefix skips every key under it.
        if let Some(d) = delimiter {
            if !start_after.is_empty()
                && start_after.ends_with(d)
                && start_after.starts_with(prefix)
                && start_after.len() > prefix.len()
            {
                start = format!("{start_after}\u{10FFFF}");
                inclusive = false;
            }
        }
        loop {
            let lower = (bucket.to_owned(), start.clone());
            let lower = if inclusive { Bound::Included(lower) } else { Bound::Excluded(lower) };
            let mut jumped = false;
            for ((b, key), meta) in self.objects.range((lower, Bound::Unbounded)) {
                if b != bucket || !key.starts_with(prefix) {
                    return ListPage { items, truncated: false };
                }
                if items.len() == limit {
                    return ListPage { items, truncated: true };
                }
                let rest = &key[prefix.len()..];
                if let Some(pos) = delimiter.filter(|d| !d.is_empty()).and_then(|d| rest.find(d).map(|p| p + d.len())) {
                    let common = key[..prefix.len() + pos].to_owned();
                    start = format!("{common}\u{10FFFF}");
                    inclusive = false;
                    items.push(ListItem::Prefix(common));
                    jumped = true;
                    break;
                }
                let class = meta.headers.iter().find(|(n, _)| n == STORAGE_CLASS_HEADER).map(|(_, v)| v.clone());
                items.push(ListItem::Object(key.clone(), meta.size, meta.etag.clone(), meta.mtime_ms, class));
            }
            if !jumped {
                return ListPage { items, truncated: false };
            }
        }
    }
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

/// Runs the metadata service of this core until the engine's senders are dropped.
pub async fn serve(engine: Engine, boot: CoreBoot) {
    let core = boot.core;
    let state = Rc::new(RefCell::new(CoreState {
        objects: boot.objects,
        uploads: boot.uploads,
        seqs: boot.seqs,
        wal_end: boot.wal_end,
        pending: Vec::new(),
        snapshot_off: if boot.snapshot_due { u64::MAX } else { boot.snapshot_off },
        snapshot_writing: false,
        failed_batch: None,
        void_pending: false,
        retry_armed: false,
        committed_end: boot.wal_end,
    }));
    maybe_snapshot(&engine, core, &state);
    let wal_files = Rc::new(open_wal_files(&engine, core).await);
    monoio::spawn(sweep_leftovers(engine.clone(), core, state.clone(), std::time::SystemTime::now()));
    let (kick_tx, kick_rx) = flume::bounded::<()>(1);
    let view = CoreView { state: state.clone(), kick: kick_tx.clone() };
    monoio::spawn(crate::heal::run_core(engine.clone(), core, Rc::new(view)));
    monoio::spawn(commit_loop(engine.clone(), core, state.clone(), wal_files, kick_rx, kick_tx.clone()));
    while let Ok(req) = boot.rx.recv_async().await {
        let st = state.borrow();
        match req {
            MetaReq::Get { bucket, key, reply } => {
                let _ = reply.send(Ok(st.objects.get(&(bucket, key)).cloned()));
            }
            MetaReq::GetUpload { bucket, key, upload_id, reply } => {
                let _ = reply.send(Ok(st.uploads.get(&(bucket, key, upload_id)).cloned()));
            }
            MetaReq::List { bucket, prefix, delimiter, start_after, limit, reply } => {
                let _ = reply.send(Ok(st.list(&bucket, &prefix, delimiter.as_deref(), &start_after, limit)));
            }
            MetaReq::ListUploads { bucket, prefix, key_marker, upload_id_marker, limit, reply } => {
                let lower = (bucket.clone(), key_marker.clone(), upload_id_marker.clone());
                let items = st
                    .uploads
                    .range((Bound::Excluded(lower), Bound::Unbounded))
                    .take_while(|((b, _, _), _)| *b == bucket)
                    .filter(|((_, k, _), _)| k.starts_with(&prefix))
                    .take(limit)
                    .map(|((_, k, id), u)| UploadSummary {
                        key: k.clone(),
                        upload_id: id.clone(),
                        initiated_ms: u.initiated_ms,
                    })
                    .collect();
                let _ = reply.send(Ok(items));
            }
            MetaReq::HasData { bucket, reply } => {
                let lower = (bucket.clone(), String::new());
                let objects = st.objects.range(lower..).next().is_some_and(|((b, _), _)| *b == bucket);
                let uploads = st
                    .uploads
                    .range((bucket.clone(), String::new(), String::new())..)
                    .next()
                    .is_some_and(|((b, _, _), _)| *b == bucket);
                let _ = reply.send(Ok(objects || uploads));
            }
            MetaReq::Write { partition, op, reply } => {
                drop(st);
                state.borrow_mut().pending.push((partition, op, reply));
                let _ = kick_tx.try_send(());
            }
        }
    }
}

/// The healer's window on this core's index, and its way to wake the commit loop.
struct CoreView {
    state: Rc<RefCell<CoreState>>,
    kick: flume::Sender<()>,
}

impl crate::heal::IndexView for CoreView {
    fn objects_after(&self, after: Option<&ObjectKey>, limit: usize) -> Vec<(ObjectKey, ObjectMeta)> {
        let st = self.state.borrow();
        let lower = match after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Unbounded,
        };
        st.objects.range((lower, Bound::Unbounded)).take(limit).map(|(k, m)| (k.clone(), m.clone())).collect()
    }

    fn upload_parts(&self) -> Vec<(ObjectKey, crate::meta::PartLoc)> {
        let st = self.state.borrow();
        let mut out = Vec::new();
        for ((bucket, key, _), upload) in &st.uploads {
            for part in upload.parts.values() {
                let loc = crate::meta::PartLoc { file_id: part.file_id, size: part.size };
                out.push(((bucket.clone(), key.clone()), loc));
            }
        }
        out
    }

    fn object(&self, key: &ObjectKey) -> Option<ObjectMeta> {
        self.state.borrow().objects.get(key).cloned()
    }

    fn totals(&self) -> (u64, u64) {
        let st = self.state.borrow();
        (st.objects.len() as u64, st.objects.values().map(|m| m.size).sum())
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

    fn referenced_files(&self) -> std::collections::HashSet<u128> {
        let st = self.state.borrow();
        let objects = st.objects.values().flat_map(|m| m.file_ids());
        let parts = st.uploads.values().flat_map(|u| u.parts.values().map(|p| p.file_id));
        objects.chain(parts).collect()
    }
}

async fn open_wal_files(engine: &Engine, core: usize) -> Vec<Option<Rc<DriveFile>>> {
    let mut files = Vec::new();
    for (drive, path) in engine.drive_paths().iter().enumerate() {
        if !engine.drive_online(drive) {
            files.push(None);
            continue;
        }
        match DriveFile::open(wal_path(path, core as u16), OpenMode::ReadWriteBuffered).await {
            Ok(file) => files.push(Some(Rc::new(file))),
            Err(err) => {
                eprintln!("ferrite: drive {}: cannot open metadata log: {err}; writing without it", path.display());
                files.push(None);
            }
        }
    }
    files
}

async fn commit_loop(
    engine: Engine,
    core: usize,
    state: Rc<RefCell<CoreState>>,
    wal_files: Rc<Vec<Option<Rc<DriveFile>>>>,
    kick: flume::Receiver<()>,
    kick_again: flume::Sender<()>,
) {
    let mut wal_files = wal_files;
    let mut epoch = engine.drive_epoch();
    while kick.recv_async().await.is_ok() {
        loop {
            if engine.drive_epoch() != epoch {
                // A drive was formatted as a replacement: its old log file is gone.
                epoch = engine.drive_epoch();
                wal_files = Rc::new(open_wal_files(&engine, core).await);
            }
            let batch = take_batch(core, &state);
            let Some((bytes, base, entries)) = batch else { break };
            let len = bytes.len();
            let result = if bytes.is_empty() { Ok(()) } else { append_durably(&engine, &wal_files, bytes, base).await };
            let mut st = state.borrow_mut();
            let applied = result.is_ok();
            if applied {
                st.committed_end = base + len as u64;
                st.void_pending = false;
            } else {
                st.failed_batch = Some((base, len));
                st.void_pending = true;
                if !st.retry_armed {
                    // The next attempt (with the void, wal::encode_void) comes this soon even
                    // if no write arrives, so a failed batch does not linger on the drives
                    // that took it. One timer at a time, however often attempts fail.
                    st.retry_armed = true;
                    let (kick, state, wait) = (kick_again.clone(), state.clone(), engine.heal().config.void_retry);
                    monoio::spawn(async move {
                        monoio::time::sleep(wait).await;
                        state.borrow_mut().retry_armed = false;
                        let _ = kick.try_send(());
                    });
                }
            }
            for (effect, garbage, partition, reply) in entries {
                match &result {
                    Ok(()) => {
                        st.apply(&engine, effect);
                        schedule_gc(&engine, partition, garbage);
                        let _ = reply.send(Ok(()));
                    }
                    Err(full_or_quorum) => {
                        let _ = reply.send(Err(full_or_quorum.to_error()));
                    }
                }
            }
            drop(st);
            if !applied {
                // Wait for the retry (or the next write) rather than spin on failing drives.
                break;
            }
            maybe_snapshot(&engine, core, &state);
        }
    }
}

type BatchEntry = (Effect, Vec<u128>, u16, Reply<()>);

/// Validates the queued writes in order and encodes their records into one log batch.
fn take_batch(core: usize, state: &Rc<RefCell<CoreState>>) -> Option<(Vec<u8>, u64, Vec<BatchEntry>)> {
    let mut st = state.borrow_mut();
    if st.pending.is_empty() && st.failed_batch.is_none() {
        return None;
    }
    let mut overlay = Overlay::default();
    let mut bytes = Vec::new();
    let mut entries = Vec::new();
    let mut base = st.wal_end;
    if let Some((failed_base, failed_len)) = st.failed_batch.take() {
        debug_assert_eq!(failed_base + failed_len as u64, base);
        crate::wal::encode_void(&mut bytes, failed_len);
        base = failed_base;
        st.wal_end = failed_base;
    }
    let mut pending = std::mem::take(&mut st.pending).into_iter();
    for (partition, op, reply) in pending.by_ref() {
        match st.prepare(&mut overlay, op) {
            Err(err) => {
                let _ = reply.send(Err(err));
            }
            Ok((record, mut effect, garbage)) => {
                if let Some(record) = record {
                    let seq = {
                        let seq = st.seqs.entry(partition).or_insert(0);
                        *seq += 1;
                        *seq
                    };
                    let loc = encode_record(&mut bytes, base, core as u16, partition, seq, &record);
                    if let (Some(loc), Effect::SetObject(_, meta)) = (loc, &mut effect) {
                        meta.data = loc;
                    }
                }
                entries.push((effect, garbage, partition, reply));
            }
        }
        if bytes.len() >= BATCH_BYTES_MAX {
            break;
        }
    }
    st.pending = pending.collect();
    st.wal_end += bytes.len() as u64;
    Some((bytes, base, entries))
}

/// Why a batch was not acknowledged.
enum AppendError {
    Full,
    Quorum { ok: usize, needed: usize },
}

impl AppendError {
    fn to_error(&self) -> EngineError {
        match self {
            AppendError::Full => EngineError::StorageFull,
            AppendError::Quorum { ok, needed } => EngineError::WriteQuorum { ok: *ok, needed: *needed },
        }
    }
}

/// Writes the batch at `base` on every drive with an open log, fdatasyncs, and succeeds when
/// a write quorum of drives has it. A drive that fails or lags leaves a hole in its copy,
/// which replay fills from the others and the healer repairs.
async fn append_durably(
    engine: &Engine,
    files: &Rc<Vec<Option<Rc<DriveFile>>>>,
    bytes: Vec<u8>,
    base: u64,
) -> Result<(), AppendError> {
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
    let needed = engine.write_quorum();
    let outcome = quorum::run(engine, ops, needed).await;
    for (drive, err) in &outcome.failed {
        eprintln!("ferrite: drive {}: metadata log write failed: {err}", engine.drive_paths()[*drive].display());
    }
    if outcome.ok.len() >= needed {
        Ok(())
    } else if outcome.all_failures_are_enospc() {
        Err(AppendError::Full)
    } else {
        Err(AppendError::Quorum { ok: outcome.ok.len(), needed })
    }
}

fn schedule_gc(engine: &Engine, partition: u16, garbage: Vec<u128>) {
    if garbage.is_empty() || partition == BUCKET_PARTITION {
        return;
    }
    let engine = engine.clone();
    monoio::spawn(async move {
        monoio::time::sleep(DATA_GC_DELAY).await;
        for file_id in garbage {
            for path in engine.data_file_paths(partition, file_id) {
                let _ = remove_file(path).await;
            }
        }
    });
}

/// The sweep starts this long after start-up, so that it never competes with recovery.
const SWEEP_DELAY: Duration = Duration::from_secs(2);

/// Removes data files of this core's partitions that no object or upload references and
/// that predate this start: what writes interrupted by a crash (or deletions interrupted
/// before their GC delay ran out) left behind. Files written since start-up are never
/// touched, so in-flight writes are safe.
async fn sweep_leftovers(engine: Engine, core: usize, state: Rc<RefCell<CoreState>>, started: std::time::SystemTime) {
    monoio::time::sleep(SWEEP_DELAY).await;
    let cores = engine.cores();
    let mut removed = 0usize;
    // Files referenced now or later: later ones are newer than `started`, so never swept.
    let referenced: std::collections::HashSet<u128> = {
        let st = state.borrow();
        let objects = st.objects.values().flat_map(|m| m.file_ids());
        let parts = st.uploads.values().flat_map(|u| u.parts.values().map(|p| p.file_id));
        objects.chain(parts).collect()
    };
    for partition in (0..engine.partition_count()).filter(|p| *p as usize % cores == core) {
        for (drive, path) in engine.drive_paths().iter().enumerate() {
            if !engine.drive_online(drive) {
                continue;
            }
            let dir = path.join("data").join(crate::format::partition_dir_name(partition));
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Some(id) = entry.file_name().to_str().and_then(|n| u128::from_str_radix(n, 16).ok()) else {
                    continue;
                };
                let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < started);
                if old && !referenced.contains(&id) && remove_file(entry.path()).await.is_ok() {
                    removed += 1;
                }
            }
        }
        // Yield between partitions so the sweep never holds the core for long.
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    if removed > 0 {
        println!("ferrite: core {core}: reclaimed {removed} leftover data files of interrupted writes");
    }
}

/// Writes a snapshot of this core's index when enough log was appended since the last one
/// (or when start-up asked for one). The index is encoded at once, at a batch boundary,
/// so it matches the log offset exactly; the files are written by the blocking pool.
fn maybe_snapshot(engine: &Engine, core: usize, state: &Rc<RefCell<CoreState>>) {
    let mut st = state.borrow_mut();
    let due =
        st.snapshot_off == u64::MAX || st.wal_end.saturating_sub(st.snapshot_off) >= engine.snapshot_every_bytes();
    if !due || st.snapshot_writing {
        return;
    }
    let online: Vec<std::path::PathBuf> = engine
        .drive_paths()
        .iter()
        .enumerate()
        .filter(|(i, _)| engine.drive_online(*i))
        .map(|(_, p)| p.clone())
        .collect();
    let wals = crate::wal::list_wals(&online);
    let view = crate::snapshot::SnapshotView {
        cores: engine.cores() as u16,
        core: core as u16,
        wal_off: st.wal_end,
        wal_lens: crate::snapshot::wal_lengths(&online, &wals),
        seqs: &st.seqs,
        buckets: if core == 0 { engine.bucket_infos() } else { Vec::new() },
        objects: &st.objects,
        uploads: &st.uploads,
    };
    let bytes = crate::snapshot::encode(&view);
    st.snapshot_off = st.wal_end;
    st.snapshot_writing = true;
    drop(st);
    let state = state.clone();
    monoio::spawn(async move {
        let job = move || {
            for drive in &online {
                if let Err(err) = crate::snapshot::write(drive, core as u16, &bytes) {
                    eprintln!("ferrite: drive {}: cannot write index snapshot: {err}", drive.display());
                }
            }
        };
        if monoio::spawn_blocking(job).await.is_err() {
            eprintln!("ferrite: core {core}: index snapshot task was lost");
        }
        state.borrow_mut().snapshot_writing = false;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DataLoc;
    use proptest::prelude::*;

    fn state_with(keys: &[String]) -> CoreState {
        let meta = ObjectMeta {
            size: 1,
            etag: "e".into(),
            mtime_ms: 0,
            headers: vec![],
            checksum: None,
            tags: vec![],
            part_sizes: vec![],
            data: DataLoc::Parts(vec![]),
        };
        let mut objects = BTreeMap::new();
        for k in keys {
            objects.insert(("b".to_owned(), k.clone()), meta.clone());
        }
        // A neighbouring bucket must never leak into listings of "b".
        objects.insert(("c".to_owned(), "a".to_owned()), meta.clone());
        CoreState {
            objects,
            uploads: BTreeMap::new(),
            seqs: HashMap::new(),
            wal_end: 0,
            pending: Vec::new(),
            snapshot_off: 0,
            snapshot_writing: false,
            failed_batch: None,
            void_pending: false,
            retry_armed: false,
            committed_end: 0,
        }
    }

    /// The S3 listing semantics, written the obvious way.
    fn model(keys: &[String], prefix: &str, delimiter: Option<&str>, start_after: &str) -> Vec<String> {
        let mut sorted: Vec<&String> = keys.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut out: Vec<String> = Vec::new();
        for key in sorted {
            if !key.starts_with(prefix) {
                continue;
            }
            let name = match delimiter.and_then(|d| key[prefix.len()..].find(d).map(|i| (i, d))) {
                Some((i, d)) => key[..prefix.len() + i + d.len()].to_owned(),
                None => key.clone(),
            };
            if name.as_str() <= start_after || out.last() == Some(&name) {
                continue;
            }
            out.push(name);
        }
        out
    }

    fn names(page: &ListPage) -> Vec<String> {
        page.items.iter().map(|i| i.name().to_owned()).collect()
    }

    proptest! {
        #[test]
        fn listing_pages_match_the_model(
            keys in proptest::collection::vec("[ab/]{1,5}", 0..40),
            prefix in "[ab/]{0,2}",
            use_delimiter in any::<bool>(),
            limit in 1usize..6,
        ) {
            let delimiter = use_delimiter.then_some("/");
            let state = state_with(&keys);
            let expected = model(&keys, &prefix, delimiter, "");
            // Page through with the last name as the marker, as the S3 layer does.
            let mut got = Vec::new();
            let mut marker = String::new();
            for _ in 0..100 {
                let page = state.list("b", &prefix, delimiter, &marker, limit);
                prop_assert!(page.items.len() <= limit);
                got.extend(names(&page));
                if !page.truncated {
                    break;
                }
                marker = got.last().cloned().unwrap_or_default();
            }
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn conditions() {
        let meta = state_with(&["k".into()]).objects.values().next().cloned();
        assert!(check_condition(Some(&PutCondition::IfNoneMatchAny), None).is_ok());
        assert!(check_condition(Some(&PutCondition::IfNoneMatchAny), meta.as_ref()).is_err());
        assert!(check_condition(Some(&PutCondition::IfMatch("e".into())), meta.as_ref()).is_ok());
        assert!(check_condition(Some(&PutCondition::IfMatch("x".into())), meta.as_ref()).is_err());
        assert!(matches!(check_condition(Some(&PutCondition::IfMatch("e".into())), None), Err(EngineError::NoSuchKey)));
    }
}
