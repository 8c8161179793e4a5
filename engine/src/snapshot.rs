//! Index snapshots. Each core writes `meta/snap-<core>.bin` on every drive every
//! `snapshot_every_bytes` of log it appends: its whole index (objects, uploads, per-partition
//! sequence numbers; core 0 adds the buckets) as of an offset of its log. Start-up loads the
//! snapshots and replays only the log written after them, instead of every record ever
//! written. The log stays the source of truth: a snapshot is written to a temporary file,
//! synced and renamed into place, carries a checksum, and is only trusted when the
//! executor count is unchanged and no log grew behind it (see `Engine::open`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{EngineError, Result};
use crate::meta::{BucketInfo, Dec, Enc, ObjectMeta, PartMeta, UploadMeta};
use crate::types::{ObjectKey, UploadKey};

const SNAPSHOT_MAGIC: u32 = 0x504E_5346; // "FSNP"
/// Version 2: buckets carry their configuration documents.
const SNAPSHOT_VERSION: u32 = 2;

pub struct Snapshot {
    /// Executor count of the process that wrote it.
    pub cores: u16,
    pub core: u16,
    /// The snapshot reflects every record of this core's log below this offset.
    pub wal_off: u64,
    /// Byte length of every log file (by log number) when the snapshot was taken.
    pub wal_lens: BTreeMap<u16, u64>,
    pub seqs: HashMap<u16, u64>,
    pub buckets: BTreeMap<String, BucketInfo>,
    pub objects: BTreeMap<ObjectKey, ObjectMeta>,
    pub uploads: BTreeMap<UploadKey, UploadMeta>,
}

pub fn snapshot_path(drive: &Path, core: u16) -> PathBuf {
    drive.join("meta").join(format!("snap-{core}.bin"))
}

/// What a snapshot is made of, borrowed from the live state.
pub struct SnapshotView<'a> {
    pub cores: u16,
    pub core: u16,
    pub wal_off: u64,
    pub wal_lens: BTreeMap<u16, u64>,
    pub seqs: &'a HashMap<u16, u64>,
    pub buckets: Vec<(String, BucketInfo)>,
    pub objects: &'a BTreeMap<ObjectKey, ObjectMeta>,
    pub uploads: &'a BTreeMap<UploadKey, UploadMeta>,
}

pub fn encode(view: &SnapshotView) -> Vec<u8> {
    let mut enc = Enc::default();
    enc.u32(SNAPSHOT_MAGIC);
    enc.u32(SNAPSHOT_VERSION);
    enc.u16(view.cores);
    enc.u16(view.core);
    enc.u64(view.wal_off);
    enc.u32(view.wal_lens.len() as u32);
    for (wal, len) in &view.wal_lens {
        enc.u16(*wal);
        enc.u64(*len);
    }
    enc.u32(view.seqs.len() as u32);
    for (partition, seq) in view.seqs {
        enc.u16(*partition);
        enc.u64(*seq);
    }
    enc.u32(view.buckets.len() as u32);
    for (name, info) in &view.buckets {
        enc.str(name);
        info.encode(&mut enc);
    }
    enc.u64(view.objects.len() as u64);
    for (object, meta) in view.objects {
        enc.str(&object.bucket);
        enc.str(&object.key);
        meta.encode(&mut enc, false);
    }
    enc.u64(view.uploads.len() as u64);
    for (upload_key, upload) in view.uploads {
        enc.str(&upload_key.bucket);
        enc.str(&upload_key.key);
        enc.str(&upload_key.upload_id);
        upload.encode_head(&mut enc);
        enc.u32(upload.parts.len() as u32);
        for (number, part) in &upload.parts {
            enc.u32(*number);
            part.encode(&mut enc);
        }
    }
    let sum = xxh3_64(&enc.0);
    enc.u64(sum);
    enc.0
}

pub fn decode(bytes: &[u8]) -> Result<Snapshot> {
    let corrupt = |what: &str| EngineError::Corrupt(format!("snapshot: {what}"));
    if bytes.len() < 8 {
        return Err(corrupt("too short"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if xxh3_64(body).to_le_bytes() != sum {
        return Err(corrupt("checksum mismatch"));
    }
    let mut dec = Dec::new(body);
    if dec.u32()? != SNAPSHOT_MAGIC || dec.u32()? != SNAPSHOT_VERSION {
        return Err(corrupt("unknown magic or version"));
    }
    let cores = dec.u16()?;
    let core = dec.u16()?;
    let wal_off = dec.u64()?;
    let n = dec.u32()? as usize;
    let mut wal_lens = BTreeMap::new();
    for _ in 0..n {
        wal_lens.insert(dec.u16()?, dec.u64()?);
    }
    let n = dec.u32()? as usize;
    let mut seqs = HashMap::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        seqs.insert(dec.u16()?, dec.u64()?);
    }
    let n = dec.u32()? as usize;
    let mut buckets = BTreeMap::new();
    for _ in 0..n {
        buckets.insert(dec.str()?, BucketInfo::decode(&mut dec)?);
    }
    let n = dec.u64()?;
    let mut objects = BTreeMap::new();
    for _ in 0..n {
        let key = ObjectKey { bucket: dec.str()?, key: dec.str()? };
        let (meta, _) = ObjectMeta::decode(&mut dec)?;
        objects.insert(key, meta);
    }
    let n = dec.u64()?;
    let mut uploads = BTreeMap::new();
    for _ in 0..n {
        let key = UploadKey { bucket: dec.str()?, key: dec.str()?, upload_id: dec.str()? };
        let mut upload = UploadMeta::decode_head(&mut dec)?;
        for _ in 0..dec.u32()? {
            upload.parts.insert(dec.u32()?, PartMeta::decode(&mut dec)?);
        }
        uploads.insert(key, upload);
    }
    Ok(Snapshot { cores, core, wal_off, wal_lens, seqs, buckets, objects, uploads })
}

/// The log offset a snapshot file covers, from its header alone (no checksum check).
fn header_wal_off(bytes: &[u8]) -> Option<(u16, u64)> {
    let mut dec = Dec::new(bytes);
    if dec.u32().ok()? != SNAPSHOT_MAGIC || dec.u32().ok()? != SNAPSHOT_VERSION {
        return None;
    }
    let _cores = dec.u16().ok()?;
    Some((dec.u16().ok()?, dec.u64().ok()?))
}

/// The newest valid snapshot of `core` on any of the drives. Candidates are ranked by
/// their header, and only the best is fully decoded and verified (the next on failure):
/// every drive holds a copy, and decoding them all would multiply start-up time.
pub fn read_latest(drives: &[PathBuf], core: u16) -> Option<Snapshot> {
    let mut candidates: Vec<(u64, PathBuf)> = drives
        .iter()
        .filter_map(|drive| {
            let path = snapshot_path(drive, core);
            let mut head = [0u8; 32];
            let mut file = fs::File::open(&path).ok()?;
            std::io::Read::read_exact(&mut file, &mut head[..20]).ok()?;
            let (snap_core, off) = header_wal_off(&head)?;
            (snap_core == core).then_some((off, path))
        })
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    candidates.into_iter().find_map(|(_, path)| decode(&fs::read(path).ok()?).ok())
}

/// Writes the snapshot on one drive: temporary file, fdatasync, rename, directory fsync.
pub fn write(drive: &Path, core: u16, bytes: &[u8]) -> std::io::Result<()> {
    let path = snapshot_path(drive, core);
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    fs::rename(&tmp, &path)?;
    fs::File::open(drive.join("meta"))?.sync_all()
}

/// Writes the snapshot on every drive in `drives` (blocking: run it on the blocking pool).
/// A drive that fails keeps its older snapshot; start-up picks the newest valid one.
pub fn write_everywhere(drives: &[PathBuf], core: u16, bytes: &[u8]) {
    // Debug builds check the encoding right before it is written.
    debug_assert!(decode(bytes).is_ok(), "an index snapshot that does not decode");
    for drive in drives {
        if let Err(err) = write(drive, core, bytes) {
            tracing::warn!(drive = %drive.display(), core, error = %err, "cannot write index snapshot");
        }
    }
}

/// Current byte length of each log file (the longest copy), by log number.
pub fn wal_lengths(drives: &[PathBuf], wals: &[u16]) -> BTreeMap<u16, u64> {
    wals.iter()
        .map(|wal| {
            let len = drives
                .iter()
                .filter_map(|d| fs::metadata(crate::wal::wal_path(d, *wal)).ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0);
            (*wal, len)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{DataLoc, PartLoc};

    #[test]
    fn round_trip_and_corruption_is_detected() {
        let meta = ObjectMeta {
            size: 9,
            etag: "e".into(),
            mtime_ms: 3,
            headers: vec![("content-type".into(), "x/y".into())],
            checksum: None,
            tags: vec![("t".into(), "v".into())],
            part_sizes: vec![4, 5],
            data: DataLoc::Parts(vec![PartLoc { file_id: 1, size: 4 }, PartLoc { file_id: 2, size: 5 }]),
        };
        let mut objects = BTreeMap::new();
        objects.insert(ObjectKey::new("b", "k"), meta.clone());
        let mut uploads = BTreeMap::new();
        let mut parts = BTreeMap::new();
        parts.insert(2, PartMeta { file_id: 7, size: 1, etag: "p".into(), mtime_ms: 1, checksum: None });
        uploads.insert(
            UploadKey::new("b", "u", "id"),
            UploadMeta { initiated_ms: 1, headers: vec![], checksum_algorithm: Some("CRC32".into()), parts },
        );
        let seqs: HashMap<u16, u64> = [(3u16, 10u64)].into_iter().collect();
        let view = SnapshotView {
            cores: 2,
            core: 1,
            wal_off: 4096,
            wal_lens: [(0, 10), (1, 4096)].into(),
            seqs: &seqs,
            buckets: vec![(
                "b".into(),
                BucketInfo { created_ms: 5, config: [("encryption".to_owned(), "AES256".to_owned())].into() },
            )],
            objects: &objects,
            uploads: &uploads,
        };
        let bytes = encode(&view);
        let snap = decode(&bytes).unwrap();
        assert_eq!((snap.cores, snap.core, snap.wal_off), (2, 1, 4096));
        assert_eq!(snap.wal_lens, [(0, 10), (1, 4096)].into());
        assert_eq!(snap.objects, objects);
        assert_eq!(snap.uploads, uploads);
        assert_eq!(snap.seqs, seqs);
        assert_eq!(snap.buckets.get("b").map(|b| b.created_ms), Some(5));
        assert_eq!(snap.buckets["b"].config.get("encryption").map(String::as_str), Some("AES256"));
        for i in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
