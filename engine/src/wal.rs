//! The metadata log. Each executor appends to its own `meta/wal-<core>.log`, the same bytes
//! at the same offset on every online drive, in group-committed batches (one write and one
//! fdatasync per drive per batch). Every record is framed as
//! `[magic u32][payload length u32][xxh3-64 of payload][payload]`, and carries the
//! partition it belongs to and that partition's sequence number, so start-up can rebuild
//! every partition's index whichever executor wrote it.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{EngineError, Result};
use crate::meta::{DataLoc, Dec, Enc, ObjectMeta, PartMeta, UploadMeta};

const RECORD_MAGIC: u32 = 0x4C57_4546; // "FEWL"
pub const RECORD_HEADER_BYTES: usize = 16;
/// No record is larger than this: inline objects are capped far below it.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 8 << 20;
const REPLAY_WINDOW_BYTES: usize = 4 << 20;

#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Put {
        bucket: String,
        key: String,
        meta: ObjectMeta,
        inline: Option<Vec<u8>>,
        completes_upload: Option<String>,
    },
    Delete {
        bucket: String,
        key: String,
    },
    UploadCreate {
        bucket: String,
        key: String,
        upload_id: String,
        upload: UploadMeta,
    },
    UploadPart {
        bucket: String,
        key: String,
        upload_id: String,
        part_number: u32,
        part: PartMeta,
    },
    UploadAbort {
        bucket: String,
        key: String,
        upload_id: String,
    },
    BucketCreate {
        name: String,
        created_ms: i64,
    },
    BucketDelete {
        name: String,
    },
    /// Sets (Some) or removes (None) one configuration document of a bucket.
    BucketConfig {
        name: String,
        item: String,
        value: Option<String>,
    },
    /// Covers the bytes of a batch that failed to reach a write quorum (see `encode_void`).
    Void,
}

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_UPLOAD_CREATE: u8 = 3;
const KIND_UPLOAD_PART: u8 = 4;
const KIND_UPLOAD_ABORT: u8 = 5;
const KIND_BUCKET_CREATE: u8 = 6;
const KIND_BUCKET_DELETE: u8 = 7;
const KIND_VOID: u8 = 8;
const KIND_BUCKET_CONFIG: u8 = 9;
/// The smallest framed record: header, kind, partition and sequence number.
pub const RECORD_BYTES_MIN: usize = RECORD_HEADER_BYTES + 1 + 2 + 8;

pub fn wal_file_name(wal: u16) -> String {
    format!("wal-{wal}.log")
}

pub fn wal_path(drive: &Path, wal: u16) -> PathBuf {
    drive.join("meta").join(wal_file_name(wal))
}

/// Appends the framed record to `out` (which starts at file offset `base`). For a Put with
/// inline data, returns the data's location in the log.
pub fn encode_record(
    out: &mut Vec<u8>,
    base: u64,
    wal: u16,
    partition: u16,
    seq: u64,
    record: &Record,
) -> Option<DataLoc> {
    let rec_start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    let mut enc = Enc(std::mem::take(out));
    let payload_start = enc.0.len();
    enc.u8(record_kind(record));
    enc.u16(partition);
    enc.u64(seq);
    let inline_data_off = encode_body(&mut enc, record).map(|(off, len)| (off - payload_start, len));
    *out = enc.0;
    let payload_len = seal_record(out, rec_start);
    inline_data_off.map(|(off, len)| DataLoc::Inline {
        wal,
        rec_off: base + rec_start as u64,
        rec_len: (RECORD_HEADER_BYTES + payload_len) as u32,
        data_off: (RECORD_HEADER_BYTES + off) as u32,
        data_len: len as u32,
    })
}

fn record_kind(record: &Record) -> u8 {
    match record {
        Record::Put { .. } => KIND_PUT,
        Record::Delete { .. } => KIND_DELETE,
        Record::UploadCreate { .. } => KIND_UPLOAD_CREATE,
        Record::UploadPart { .. } => KIND_UPLOAD_PART,
        Record::UploadAbort { .. } => KIND_UPLOAD_ABORT,
        Record::BucketCreate { .. } => KIND_BUCKET_CREATE,
        Record::BucketDelete { .. } => KIND_BUCKET_DELETE,
        Record::BucketConfig { .. } => KIND_BUCKET_CONFIG,
        Record::Void => KIND_VOID,
    }
}

/// Encodes what follows a record's kind, partition and sequence number. For a Put with
/// inline data, returns where the data starts in `enc` and its length.
fn encode_body(enc: &mut Enc, record: &Record) -> Option<(usize, usize)> {
    match record {
        Record::Put { bucket, key, meta, inline, completes_upload } => {
            enc.str(bucket);
            enc.str(key);
            encode_opt_str(enc, completes_upload.as_deref());
            meta.encode(enc, inline.is_some());
            if let Some(data) = inline {
                enc.u32(data.len() as u32);
                let off = enc.0.len();
                enc.0.extend_from_slice(data);
                return Some((off, data.len()));
            }
        }
        Record::Delete { bucket, key } => {
            enc.str(bucket);
            enc.str(key);
        }
        Record::UploadCreate { bucket, key, upload_id, upload } => {
            enc.str(bucket);
            enc.str(key);
            enc.str(upload_id);
            upload.encode_head(enc);
        }
        Record::UploadPart { bucket, key, upload_id, part_number, part } => {
            enc.str(bucket);
            enc.str(key);
            enc.str(upload_id);
            enc.u32(*part_number);
            part.encode(enc);
        }
        Record::UploadAbort { bucket, key, upload_id } => {
            enc.str(bucket);
            enc.str(key);
            enc.str(upload_id);
        }
        Record::BucketCreate { name, created_ms } => {
            enc.str(name);
            enc.i64(*created_ms);
        }
        Record::BucketDelete { name } => enc.str(name),
        Record::BucketConfig { name, item, value } => {
            enc.str(name);
            enc.str(item);
            encode_opt_str(enc, value.as_deref());
        }
        Record::Void => {}
    }
    None
}

fn encode_opt_str(enc: &mut Enc, value: Option<&str>) {
    match value {
        Some(v) => {
            enc.u8(1);
            enc.str(v);
        }
        None => enc.u8(0),
    }
}

/// Fills in the header of the record that starts at `rec_start` and runs to the end of
/// `out`: magic, payload length, checksum. Returns the payload length.
fn seal_record(out: &mut [u8], rec_start: usize) -> usize {
    let payload_start = rec_start + RECORD_HEADER_BYTES;
    let payload_len = out.len() - payload_start;
    assert!(payload_len <= RECORD_PAYLOAD_BYTES_MAX, "record of {payload_len} bytes exceeds the limit");
    let sum = xxh3_64(&out[payload_start..]);
    out[rec_start..rec_start + 4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    out[rec_start + 4..rec_start + 8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[rec_start + 8..payload_start].copy_from_slice(&sum.to_le_bytes());
    payload_len
}

/// Appends void records covering exactly `len` bytes (at least `RECORD_BYTES_MIN`). A batch
/// that failed to reach a write quorum may sit, whole or in part, on some drives, or on none
/// (a hole of zeros would end replay there). The next batch starts by overwriting its place
/// with void records, which replay skips, so the log stays contiguous and the failed writes
/// stay unapplied on every drive that took the overwrite.
pub fn encode_void(out: &mut Vec<u8>, len: usize) {
    assert!(len >= RECORD_BYTES_MIN, "a void of {len} bytes cannot hold a record");
    let mut left = len;
    while left > 0 {
        // Leave room for at least one more minimal record after this one, or take all.
        let take = if left <= RECORD_PAYLOAD_BYTES_MAX {
            left
        } else {
            (RECORD_PAYLOAD_BYTES_MAX).min(left - RECORD_BYTES_MIN)
        };
        let start = out.len();
        encode_record(out, 0, 0, 0, 0, &Record::Void);
        let pad = take - (out.len() - start);
        out.resize(out.len() + pad, 0);
        seal_record(out, start);
        left -= take;
    }
}

/// Checks a framed record; returns its payload.
pub fn verify_record(framed: &[u8]) -> Option<&[u8]> {
    if framed.len() < RECORD_HEADER_BYTES {
        return None;
    }
    let magic = u32::from_le_bytes(framed[0..4].try_into().ok()?);
    let len = u32::from_le_bytes(framed[4..8].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(framed[8..16].try_into().ok()?);
    if magic != RECORD_MAGIC || len > RECORD_PAYLOAD_BYTES_MAX || framed.len() < RECORD_HEADER_BYTES + len {
        return None;
    }
    let payload = &framed[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len];
    (xxh3_64(payload) == sum).then_some(payload)
}

/// True when `batch` is a run of valid framed records and nothing else: debug builds check
/// every batch with it right before it is written.
pub fn batch_is_valid(batch: &[u8]) -> bool {
    let mut off = 0;
    while off < batch.len() {
        let Some(payload) = verify_record(&batch[off..]) else { return false };
        off += RECORD_HEADER_BYTES + payload.len();
    }
    off == batch.len()
}

/// A record read back at start-up, with its partition and sequence number.
pub struct Replayed {
    pub partition: u16,
    pub seq: u64,
    pub record: Record,
}

/// Decodes a payload. Inline data is not copied: the Put's meta gets its log location.
pub fn decode_payload(payload: &[u8], wal: u16, rec_off: u64) -> Result<Replayed> {
    let mut dec = Dec::new(payload);
    let kind = dec.u8()?;
    let partition = dec.u16()?;
    let seq = dec.u64()?;
    let record = match kind {
        KIND_PUT => {
            let bucket = dec.str()?;
            let key = dec.str()?;
            let completes_upload = match dec.u8()? {
                0 => None,
                _ => Some(dec.str()?),
            };
            let (mut meta, inline) = ObjectMeta::decode(&mut dec)?;
            if let Some((off, len)) = inline {
                meta.data = DataLoc::Inline {
                    wal,
                    rec_off,
                    rec_len: (RECORD_HEADER_BYTES + payload.len()) as u32,
                    data_off: (RECORD_HEADER_BYTES + off) as u32,
                    data_len: len as u32,
                };
            }
            Record::Put { bucket, key, meta, inline: None, completes_upload }
        }
        KIND_DELETE => Record::Delete { bucket: dec.str()?, key: dec.str()? },
        KIND_UPLOAD_CREATE => {
            let bucket = dec.str()?;
            let key = dec.str()?;
            let upload_id = dec.str()?;
            let upload = UploadMeta::decode_head(&mut dec)?;
            Record::UploadCreate { bucket, key, upload_id, upload }
        }
        KIND_UPLOAD_PART => Record::UploadPart {
            bucket: dec.str()?,
            key: dec.str()?,
            upload_id: dec.str()?,
            part_number: dec.u32()?,
            part: PartMeta::decode(&mut dec)?,
        },
        KIND_UPLOAD_ABORT => Record::UploadAbort { bucket: dec.str()?, key: dec.str()?, upload_id: dec.str()? },
        KIND_BUCKET_CREATE => Record::BucketCreate { name: dec.str()?, created_ms: dec.i64()? },
        KIND_BUCKET_DELETE => Record::BucketDelete { name: dec.str()? },
        KIND_VOID => Record::Void,
        KIND_BUCKET_CONFIG => {
            let name = dec.str()?;
            let item = dec.str()?;
            let value = match dec.u8()? {
                0 => None,
                _ => Some(dec.str()?),
            };
            Record::BucketConfig { name, item, value }
        }
        other => return Err(EngineError::Corrupt(format!("unknown record kind {other}"))),
    };
    Ok(Replayed { partition, seq, record })
}

/// A windowed reader over one drive's copy of a log.
struct DriveLog {
    file: fs::File,
    len: u64,
    window: Vec<u8>,
    window_off: u64,
}

impl DriveLog {
    fn get(&mut self, off: u64, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len as u64)?;
        if end > self.len {
            return None;
        }
        let inside = off >= self.window_off && end <= self.window_off + self.window.len() as u64;
        if !inside {
            let want = len.max(REPLAY_WINDOW_BYTES).min((self.len - off) as usize);
            self.window.resize(want, 0);
            self.file.read_exact_at(&mut self.window, off).ok()?;
            self.window_off = off;
        }
        let start = (off - self.window_off) as usize;
        Some(&self.window[start..start + len])
    }

    /// The framed record at `off` when this copy holds a valid one there.
    fn record_at(&mut self, off: u64) -> Option<&[u8]> {
        let header = self.get(off, RECORD_HEADER_BYTES)?;
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > RECORD_PAYLOAD_BYTES_MAX {
            return None;
        }
        let framed = self.get(off, RECORD_HEADER_BYTES + len)?;
        verify_record(framed)?;
        Some(framed)
    }
}

/// The record the merged log holds at `off`: a valid record from the first copy that has
/// one, except that a void beats any other record (the copies may disagree only where a
/// batch failed and was voided: a drive that took the failed batch but missed the void
/// must not bring it back), and the void reaching furthest beats a shorter one (a void
/// that failed itself is covered again by a longer one).
fn merged_record_at<L: std::borrow::BorrowMut<DriveLog>>(logs: &mut [L], off: u64) -> Option<Vec<u8>> {
    let mut chosen: Option<Vec<u8>> = None;
    for log in logs.iter_mut() {
        let Some(framed) = log.borrow_mut().record_at(off) else { continue };
        let void = is_void(framed);
        let better = match &chosen {
            None => true,
            Some(current) => void && (!is_void(current) || framed.len() > current.len()),
        };
        if better {
            chosen = Some(framed.to_vec());
        }
    }
    chosen
}

fn is_void(framed: &[u8]) -> bool {
    framed.get(RECORD_HEADER_BYTES) == Some(&KIND_VOID)
}

/// What replay read of one log.
pub struct ReplayedLog {
    /// The records in log order (voids left out).
    pub records: Vec<Replayed>,
    /// Where the merged log ends: the next append goes there.
    pub end: u64,
}

/// Reads log `wal` from `start` on every drive that has it, merging: at each offset the
/// first drive with a valid record wins (drives that missed a batch have a hole there).
pub fn replay(drives: &[PathBuf], wal: u16, start: u64) -> Result<ReplayedLog> {
    let mut logs: Vec<DriveLog> = drives
        .iter()
        .filter_map(|drive| {
            let file = fs::File::open(wal_path(drive, wal)).ok()?;
            let len = file.metadata().ok()?.len();
            Some(DriveLog { file, len, window: Vec::new(), window_off: 0 })
        })
        .collect();
    // Longest copy first: it is the most likely to have every record.
    logs.sort_by_key(|log| std::cmp::Reverse(log.len));
    let mut out = Vec::new();
    let mut off = start;
    while let Some(framed) = merged_record_at(&mut logs, off) {
        let replayed = decode_payload(&framed[RECORD_HEADER_BYTES..], wal, off)?;
        if replayed.record != Record::Void {
            out.push(replayed);
        }
        off += framed.len() as u64;
    }
    Ok(ReplayedLog { records: out, end: off })
}

/// Makes every online drive's copy of log `wal` hold the records replay would read, up to
/// `end`: where a drive's bytes differ from the merged log (a hole from a missed batch, a
/// corrupt or torn record, a replaced drive's empty file), the merged record is written
/// there and the file fdatasync'd. Returns how many records were rewritten (summed over
/// drives). Blocking: run it on the blocking pool.
pub fn heal_copies(drives: &[PathBuf], online: &[bool], wal: u16, end: u64) -> Result<u64> {
    let mut logs = Vec::new();
    for (drive, path) in drives.iter().enumerate() {
        if !online.get(drive).copied().unwrap_or(false) {
            continue;
        }
        let file_path = wal_path(path, wal);
        let file = match fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&file_path) {
            Ok(file) => file,
            Err(err) => {
                tracing::warn!(file = %file_path.display(), error = %err, "cannot open a metadata log copy for healing");
                continue;
            }
        };
        let len = file.metadata()?.len();
        logs.push((DriveLog { file, len, window: Vec::new(), window_off: 0 }, Fixes::default()));
    }
    logs.sort_by_key(|(log, _)| std::cmp::Reverse(log.len));
    let mut repaired = 0;
    let mut off = 0u64;
    while off < end {
        let record = {
            let mut copies: Vec<&mut DriveLog> = logs.iter_mut().map(|(log, _)| log).collect();
            merged_record_at(&mut copies, off)
        };
        let Some(record) = record else { break };
        for (log, fixes) in logs.iter_mut() {
            if log.get(off, record.len()) == Some(&record[..]) {
                continue;
            }
            repaired += 1;
            fixes.add(&log.file, off, &record)?;
        }
        off += record.len() as u64;
    }
    for (log, fixes) in &mut logs {
        fixes.flush(&log.file)?;
        if fixes.dirty {
            log.file.sync_data()?;
        }
    }
    Ok(repaired)
}

/// Records to rewrite on one drive, gathered into runs and written a few MiB at a time.
#[derive(Default)]
struct Fixes {
    start: u64,
    run: Vec<u8>,
    dirty: bool,
}

impl Fixes {
    fn add(&mut self, file: &fs::File, off: u64, record: &[u8]) -> std::io::Result<()> {
        if !self.run.is_empty() && (self.start + self.run.len() as u64 != off || self.run.len() >= REPLAY_WINDOW_BYTES)
        {
            self.flush(file)?;
        }
        if self.run.is_empty() {
            self.start = off;
        }
        self.run.extend_from_slice(record);
        Ok(())
    }

    fn flush(&mut self, file: &fs::File) -> std::io::Result<()> {
        if !self.run.is_empty() {
            file.write_all_at(&self.run, self.start)?;
            self.run.clear();
            self.dirty = true;
        }
        Ok(())
    }
}

/// The log numbers present on any drive.
pub fn list_wals(drives: &[PathBuf]) -> Vec<u16> {
    let mut found = std::collections::BTreeSet::new();
    for drive in drives {
        let Ok(entries) = fs::read_dir(drive.join("meta")) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_prefix("wal-").and_then(|r| r.strip_suffix(".log")) {
                if let Ok(n) = n.parse::<u16>() {
                    found.insert(n);
                }
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::PartLoc;

    fn meta(data: DataLoc) -> ObjectMeta {
        ObjectMeta {
            size: 3,
            etag: "abc".into(),
            mtime_ms: 42,
            headers: vec![("content-type".into(), "text/plain".into())],
            checksum: Some(("CRC32".into(), "AAAAAA==".into())),
            tags: vec![("a".into(), "b".into())],
            part_sizes: vec![],
            data,
        }
    }

    #[test]
    fn records_round_trip_and_replay_merges_holes() {
        let root = std::env::temp_dir().join(format!("ferrite-wal-{}", crate::format::random_id()));
        let drives: Vec<PathBuf> = (0..3).map(|i| root.join(format!("d{i}"))).collect();
        for d in &drives {
            fs::create_dir_all(d.join("meta")).unwrap();
        }
        let records = [
            Record::BucketCreate { name: "b".into(), created_ms: 1 },
            Record::Put {
                bucket: "b".into(),
                key: "small".into(),
                meta: meta(DataLoc::Parts(vec![])),
                inline: Some(b"xyz".to_vec()),
                completes_upload: None,
            },
            Record::Put {
                bucket: "b".into(),
                key: "big".into(),
                meta: meta(DataLoc::Parts(vec![PartLoc { file_id: 7, size: 3 }])),
                inline: None,
                completes_upload: Some("u1".into()),
            },
            Record::Delete { bucket: "b".into(), key: "small".into() },
        ];
        let mut bytes = Vec::new();
        let mut inline_loc = None;
        for (seq, r) in records.iter().enumerate() {
            let start = bytes.len();
            if let Some(loc) = encode_record(&mut bytes, 0, 0, 5, seq as u64, r) {
                inline_loc = Some((start, loc));
            }
        }
        // Drive 0 has everything; drive 1 has a hole over record 2; drive 2 has a torn tail.
        fs::write(wal_path(&drives[0], 0), &bytes[..]).unwrap();
        let mut holed = bytes.clone();
        let (start, _) = inline_loc.clone().unwrap();
        holed[start + 20] ^= 0xFF;
        fs::write(wal_path(&drives[1], 0), &holed).unwrap();
        fs::write(wal_path(&drives[2], 0), &bytes[..bytes.len() - 3]).unwrap();
        let ReplayedLog { records: got, end } = replay(&drives[1..], 0, 0).unwrap();
        // Drive 2 is torn at the tail and drive 1 corrupt at record 1: merged still has all.
        assert_eq!(got.len(), 4);
        assert_eq!(end, bytes.len() as u64);
        let (_, loc) = inline_loc.unwrap();
        match &got[1].record {
            Record::Put { meta, .. } => assert_eq!(meta.data, loc),
            other => panic!("unexpected {other:?}"),
        }
        match &got[2].record {
            Record::Put { meta, completes_upload, .. } => {
                assert_eq!(meta, &self::meta(DataLoc::Parts(vec![PartLoc { file_id: 7, size: 3 }])));
                assert_eq!(completes_upload.as_deref(), Some("u1"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(list_wals(&drives), vec![0]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_void_beats_the_failed_batch_it_covers_in_replay_and_healing() {
        let root = std::env::temp_dir().join(format!("ferrite-void-{}", crate::format::random_id()));
        let drives: Vec<PathBuf> = (0..3).map(|i| root.join(format!("d{i}"))).collect();
        for d in &drives {
            fs::create_dir_all(d.join("meta")).unwrap();
        }
        let put = |key: &str| Record::Put {
            bucket: "b".into(),
            key: key.into(),
            meta: meta(DataLoc::Parts(vec![])),
            inline: None,
            completes_upload: None,
        };
        let mut before = Vec::new();
        encode_record(&mut before, 0, 0, 5, 1, &put("acked-1"));
        // The batch that failed: it reached drive 0 only.
        let mut failed = Vec::new();
        encode_record(&mut failed, before.len() as u64, 0, 5, 2, &put("refused"));
        // What the next batch wrote on drives 1 and 2: a void over it, then an acked record.
        let mut next = Vec::new();
        encode_void(&mut next, failed.len());
        encode_record(&mut next, (before.len() + failed.len()) as u64, 0, 5, 3, &put("acked-2"));
        // Drive 0 (the longest copy, listed first) missed the void and the next batch.
        fs::write(wal_path(&drives[0], 0), [&before[..], &failed[..], &[0u8; 4096][..]].concat()).unwrap();
        for d in &drives[1..] {
            fs::write(wal_path(d, 0), [&before[..], &next[..]].concat()).unwrap();
        }
        let keys = |records: &[Replayed]| -> Vec<String> {
            records
                .iter()
                .map(|r| match &r.record {
                    Record::Put { key, .. } => key.clone(),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        let ReplayedLog { records: got, end } = replay(&drives, 0, 0).unwrap();
        assert_eq!(keys(&got), vec!["acked-1", "acked-2"], "the refused write stays refused");
        assert_eq!(end, (before.len() + next.len()) as u64, "replay reads past the void");
        // Healing copies the void (and what follows) onto drive 0, never the failed batch.
        assert!(heal_copies(&drives, &[true, true, true], 0, end).unwrap() >= 2);
        let alone = replay(&drives[..1], 0, 0).unwrap().records;
        assert_eq!(keys(&alone), vec!["acked-1", "acked-2"]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_batch_is_valid_only_as_whole_records() {
        let put = Record::Delete { bucket: "b".into(), key: "k".into() };
        let mut batch = Vec::new();
        encode_void(&mut batch, 100);
        encode_record(&mut batch, 100, 0, 1, 2, &put);
        assert!(batch_is_valid(&batch));
        assert!(batch_is_valid(&[]));
        assert!(!batch_is_valid(&batch[..batch.len() - 1]), "a torn record");
        let mut flipped = batch.clone();
        flipped[120] ^= 1;
        assert!(!batch_is_valid(&flipped), "a flipped bit");
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(verify_record(&[0u8; 64]).is_none());
        assert!(decode_payload(&[9, 0, 0], 0, 0).is_err());
        assert!(decode_payload(&[], 0, 0).is_err());
    }
}
