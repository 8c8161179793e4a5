//! The data path, run by the core that accepted the request. Writing: bytes are gathered
//! into blocks, each block is erasure coded into sealed frames (see erasure.rs) and the
//! frames are written with O_DIRECT to one file per drive, all drives at once; `finish`
//! fdatasyncs every file and its directory before the metadata commit. Reading: a block's
//! data shards are read and verified; a missing or corrupt shard is replaced by parity.

use std::cell::RefCell;
use std::rc::Rc;

use crate::aligned::{self, AlignedBuf};
use crate::engine::{Engine, INLINE_BYTES_MAX};
use crate::erasure::{frame_is_valid, Coder};
use crate::error::{EngineError, Result};
use crate::io::{sync_dir, DriveFile, OpenMode};
use crate::meta::{DataLoc, PartLoc};
use crate::quorum;
use crate::wal::{verify_record, wal_path};

thread_local! {
    static CODER: RefCell<Option<Coder>> = const { RefCell::new(None) };
}

fn with_coder<T>(engine: &Engine, job: impl FnOnce(&mut Coder) -> T) -> T {
    CODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let layout = engine.layout();
        let coder = match slot.as_mut() {
            Some(coder) if coder.layout() == layout => coder,
            _ => slot.insert(Coder::new(layout)),
        };
        job(coder)
    })
}

/// A random 128-bit id. Should the system's random source fail, the time, the process id
/// and a counter still make it unique (the block cache and SSE key derivation rely on that).
fn new_file_id() -> u128 {
    static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let n = FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let time = crate::engine::now_ms() as u128;
        return (time << 64) | (u128::from(std::process::id()) << 32) | u128::from(n as u32);
    }
    u128::from_le_bytes(bytes)
}

/// The result of writing an object's (or a part's) bytes.
pub enum Finished {
    Inline(Vec<u8>),
    Part(PartLoc),
}

pub struct DataWriter {
    engine: Engine,
    partition: u16,
    file_id: u128,
    inline_allowed: bool,
    /// The first block's bytes (an object that fits in one may be kept inline), and the last
    /// block's once `finish` gathered them.
    block: Vec<u8>,
    /// From the second block on, bytes go straight into the data frames of the block being
    /// filled (data shard i holds its bytes `i * shard_size..`), and `encode_frames` codes
    /// them where they are: no copy of the block into frames. Empty between blocks.
    frames: Vec<AlignedBuf>,
    /// Bytes in `frames`.
    filled: usize,
    /// A block failed to reach its drives: bytes are missing, so nothing may be finished.
    failed: bool,
    /// One slot per drive: None once the drive failed for this object (or is offline).
    files: Vec<Option<Rc<DriveFile>>>,
    created: bool,
    blocks_written: u64,
    size: u64,
    /// A drive refused a write for lack of space: a lost quorum is reported as a full store.
    out_of_space: bool,
}

impl DataWriter {
    pub(crate) fn new(engine: Engine, partition: u16, inline_allowed: bool) -> Self {
        let block_size = engine.block_size();
        Self {
            engine,
            partition,
            file_id: new_file_id(),
            inline_allowed,
            block: Vec::with_capacity(block_size),
            frames: Vec::new(),
            filled: 0,
            failed: false,
            files: Vec::new(),
            created: false,
            blocks_written: 0,
            size: 0,
            out_of_space: false,
        }
    }

    /// The id of the files this writer creates (it names them on every drive).
    pub fn file_id(&self) -> u128 {
        self.file_id
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.check_not_failed()?;
        let outcome = self.write_blocks(data).await;
        self.failed = outcome.is_err();
        outcome
    }

    fn check_not_failed(&self) -> Result<()> {
        if self.failed {
            return Err(EngineError::Io(std::io::Error::other("an earlier write of this object failed")));
        }
        Ok(())
    }

    async fn write_blocks(&mut self, mut data: &[u8]) -> Result<()> {
        let block_size = self.engine.block_size();
        while !data.is_empty() {
            let take = if self.blocks_written == 0 {
                let take = (block_size - self.block.len()).min(data.len());
                self.block.extend_from_slice(&data[..take]);
                take
            } else {
                self.fill_frames(data, block_size)
            };
            self.size += take as u64;
            data = &data[take..];
            if self.block.len() == block_size {
                self.flush_block().await?;
                // Later blocks fill frames; the first block's buffer is not needed again
                // unless a short last block is gathered into it.
                self.block = Vec::new();
            } else if self.filled == block_size {
                self.flush_frames(block_size).await?;
            }
        }
        Ok(())
    }

    /// Copies the start of `data` into the current block's data frames, up to the end of the
    /// shard it falls in; returns how many bytes it took.
    fn fill_frames(&mut self, data: &[u8], block_size: usize) -> usize {
        let layout = self.engine.layout();
        let shard_size = layout.shard_size(block_size);
        if self.frames.is_empty() {
            self.frames = (0..layout.data).map(|_| aligned::take(layout.frame_size(block_size))).collect();
        }
        let (shard, at) = (self.filled / shard_size, self.filled % shard_size);
        let take = (shard_size - at).min(block_size - self.filled).min(data.len());
        self.frames[shard].as_mut_slice()[at..at + take].copy_from_slice(&data[..take]);
        self.filled += take;
        take
    }

    /// Moves a short last block out of the frames into `block`, whose shards are cut
    /// for its own length (one copy of at most a block, once per object).
    fn gather_frames(&mut self, block_size: usize) {
        let shard_size = self.engine.layout().shard_size(block_size);
        self.block.clear();
        self.block.reserve_exact(self.filled);
        for (i, frame) in std::mem::take(&mut self.frames).into_iter().enumerate() {
            let used = self.filled.saturating_sub(i * shard_size).min(shard_size);
            self.block.extend_from_slice(&frame.as_slice()[..used]);
            aligned::give(frame);
        }
        self.filled = 0;
    }

    async fn create_files(&mut self) -> Result<()> {
        let paths = self.engine.data_file_paths(self.partition, self.file_id);
        for (drive, path) in paths.into_iter().enumerate() {
            let file = if self.engine.drive_online(drive) {
                match DriveFile::open(path, OpenMode::CreateDirect).await {
                    Ok(file) => Some(Rc::new(file)),
                    Err(err) => {
                        self.note_failure(drive, "create", &err);
                        None
                    }
                }
            } else {
                None
            };
            self.files.push(file);
        }
        self.created = true;
        self.check_quorum()
    }

    fn note_failure(&mut self, drive: usize, what: &str, err: &std::io::Error) {
        eprintln!("ferrite: drive {}: {what} failed: {err}", self.engine.drive_paths()[drive].display());
        self.out_of_space |= err.raw_os_error() == Some(libc::ENOSPC);
        if let Some(slot) = self.files.get_mut(drive) {
            *slot = None;
        }
    }

    /// Drops the drives whose operation failed or was abandoned from this object.
    fn apply_outcome(&mut self, outcome: quorum::Outcome, what: &str) -> Result<()> {
        for (drive, err) in &outcome.failed {
            self.note_failure(*drive, what, err);
        }
        self.check_quorum()
    }

    fn check_quorum(&self) -> Result<()> {
        let ok = self.files.iter().filter(|f| f.is_some()).count();
        let needed = self.engine.write_quorum();
        if ok < needed {
            if self.out_of_space {
                return Err(EngineError::StorageFull);
            }
            return Err(EngineError::WriteQuorum { ok, needed });
        }
        Ok(())
    }

    async fn flush_block(&mut self) -> Result<()> {
        if !self.created {
            self.create_files().await?;
        }
        let frames = with_coder(&self.engine, |coder| coder.encode(&self.block))?;
        self.write_frames(frames).await?;
        self.block.clear();
        Ok(())
    }

    /// Codes the full block in `frames` where it lies and writes it.
    async fn flush_frames(&mut self, block_size: usize) -> Result<()> {
        let data = std::mem::take(&mut self.frames);
        self.filled = 0;
        let frames = with_coder(&self.engine, |coder| coder.encode_frames(data, block_size))?;
        self.write_frames(frames).await
    }

    /// Writes one block's sealed frames, each to its drive, at the next block's offset.
    async fn write_frames(&mut self, frames: Vec<AlignedBuf>) -> Result<()> {
        let layout = self.engine.layout();
        let offset = self.blocks_written * layout.frame_size(self.engine.block_size()) as u64;
        let rotation = (self.file_id % layout.total() as u128) as usize;
        let mut ops = Vec::with_capacity(frames.len());
        for (shard, frame) in frames.into_iter().enumerate() {
            let drive = layout.drive_of(shard, rotation);
            let Some(file) = self.files[drive].clone() else {
                aligned::give(frame);
                continue;
            };
            ops.push((drive, async move { file.write_all_at(frame, offset).await.map(aligned::give) }));
        }
        let outcome = quorum::run(&self.engine, ops, self.engine.write_quorum()).await;
        self.apply_outcome(outcome, "write")?;
        self.blocks_written += 1;
        Ok(())
    }

    /// Makes the data durable on a write quorum of drives (or keeps it for inlining).
    pub async fn finish(mut self) -> Result<Finished> {
        self.check_not_failed()?;
        if !self.frames.is_empty() {
            self.gather_frames(self.engine.block_size());
        }
        if !self.created && self.inline_allowed && self.block.len() <= INLINE_BYTES_MAX {
            return Ok(Finished::Inline(std::mem::take(&mut self.block)));
        }
        if !self.block.is_empty() || !self.created {
            if self.block.is_empty() {
                self.create_files().await?;
            } else {
                self.flush_block().await?;
            }
        }
        let mut ops = Vec::new();
        for (drive, file) in self.files.iter().enumerate() {
            let Some(file) = file.clone() else { continue };
            let dir =
                self.engine.drive_paths()[drive].join("data").join(crate::format::partition_dir_name(self.partition));
            ops.push((drive, async move {
                file.sync_data().await?;
                sync_dir(dir).await
            }));
        }
        let outcome = quorum::run(&self.engine, ops, self.engine.write_quorum()).await;
        self.apply_outcome(outcome, "sync")?;
        Ok(Finished::Part(PartLoc { file_id: self.file_id, size: self.size }))
    }

    /// Removes what an abandoned write left (best effort; the start-up sweep catches the rest).
    pub async fn discard(self) {
        if self.created {
            for path in self.engine.data_file_paths(self.partition, self.file_id) {
                let _ = crate::io::remove_file(path).await;
            }
        }
    }
}

/// The shard files of one part on every drive (None: offline, missing or unopenable).
struct PartFiles {
    file_id: u128,
    files: Vec<Option<Rc<DriveFile>>>,
    /// Where the shard file is (or belongs) on each drive, for repairs.
    paths: Vec<std::path::PathBuf>,
}

impl PartFiles {
    async fn open(engine: &Engine, partition: u16, file_id: u128) -> PartFiles {
        let mut files = Vec::new();
        let paths = engine.data_file_paths(partition, file_id);
        for (drive, path) in paths.iter().enumerate() {
            let file = if engine.drive_online(drive) {
                DriveFile::open(path.clone(), OpenMode::ReadDirect).await.ok().map(Rc::new)
            } else {
                None
            };
            files.push(file);
        }
        PartFiles { file_id, files, paths }
    }
}

/// A piece of an object's bytes on its way out: a range of a block (shared with the block
/// cache: sent without a copy), or bytes of its own (inline data, decrypted packages, a
/// remote tier's answer).
pub enum Chunk {
    Shared(Rc<Vec<u8>>, std::ops::Range<usize>),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Shared(block, range) => &block[range.clone()],
            Chunk::Owned(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Chunk {
    fn from(bytes: Vec<u8>) -> Chunk {
        Chunk::Owned(bytes)
    }
}

/// A block read started ahead of need: (file id, block index, the read).
type Prefetch = (u128, u64, monoio::task::JoinHandle<Result<Vec<u8>>>);

/// Blocks of a part read ahead of the one being sent. Each costs a block of memory per
/// stream (accounted in the S3 layer's memory budget). Measured with the engine bench on
/// this machine (one run each): a single 64 MiB GET stream read 810 MiB/s with 1 block
/// ahead, 1,300 MiB/s with 2 (the disk's O_DIRECT read limit) and 883 MiB/s with 4.
pub const READ_AHEAD_BLOCKS: u64 = 2;

/// Reads an object's bytes [start, end) in chunks of at most one block. While a block is
/// being sent, the next `READ_AHEAD_BLOCKS` blocks of the same part are already being read
/// and verified.
pub struct ObjectReader {
    engine: Engine,
    partition: u16,
    data: DataLoc,
    pos: u64,
    end: u64,
    files: Option<Rc<PartFiles>>,
    prefetch: std::collections::VecDeque<Prefetch>,
    /// The first chunk, read before the response head is sent (see `prime`).
    primed: Option<Chunk>,
    /// Whether blocks read from the drives go into the block cache.
    fill_cache: bool,
}

impl ObjectReader {
    pub(crate) fn new(engine: Engine, partition: u16, data: DataLoc, start: u64, end: u64) -> Self {
        let prefetch = Default::default();
        Self { engine, partition, data, pos: start, end, files: None, prefetch, primed: None, fill_cache: true }
    }

    /// Reads that will not be repeated (a transition moving the object out) leave the block
    /// cache to the hot data.
    pub fn without_caching(mut self) -> Self {
        self.fill_cache = false;
        self
    }

    /// Reads the first chunk now, so that an object that cannot be read (too many drives
    /// lost) fails before any response byte is sent and the client gets a clean S3 error.
    pub async fn prime(&mut self) -> Result<()> {
        if self.primed.is_none() {
            self.primed = self.next_chunk().await?;
        }
        Ok(())
    }

    /// The next chunk, or None at the end of the range.
    pub async fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if let Some(chunk) = self.primed.take() {
            return Ok(Some(chunk));
        }
        if self.pos >= self.end {
            return Ok(None);
        }
        let chunk = match self.data.clone() {
            DataLoc::Inline { wal, rec_off, rec_len, data_off, data_len } => {
                let record = read_inline_record(&self.engine, wal, rec_off, rec_len).await?;
                // The record passed its checksum, but the index's offsets are checked too: a
                // stale drive could hold a different valid record at this place.
                let range = data_off as usize..data_off as usize + data_len as usize;
                let data = record.get(range).ok_or_else(|| {
                    EngineError::Corrupt(format!("inline data of record at {rec_off} is out of bounds"))
                })?;
                let end = self.end.min(data.len() as u64);
                let bytes = data
                    .get(self.pos as usize..end as usize)
                    .ok_or_else(|| EngineError::Corrupt("range beyond an inline object's data".into()))?;
                Chunk::Owned(bytes.to_vec())
            }
            DataLoc::Parts(parts) => self.next_part_chunk(&parts).await?,
        };
        if chunk.is_empty() {
            return Err(EngineError::Corrupt("empty read inside an object".into()));
        }
        self.pos += chunk.len() as u64;
        Ok(Some(chunk))
    }

    /// The part's shard files, opened on first need (a read served from the cache opens none).
    async fn files_of(&mut self, file_id: u128) -> Rc<PartFiles> {
        match &self.files {
            Some(files) if files.file_id == file_id => files.clone(),
            _ => {
                let files = Rc::new(PartFiles::open(&self.engine, self.partition, file_id).await);
                self.files = Some(files.clone());
                files
            }
        }
    }

    async fn next_part_chunk(&mut self, parts: &[PartLoc]) -> Result<Chunk> {
        let mut part_start = 0u64;
        let mut found = None;
        for part in parts {
            if self.pos < part_start + part.size {
                found = Some(part.clone());
                break;
            }
            part_start += part.size;
        }
        let Some(part) = found else {
            return Err(EngineError::Corrupt("range beyond the object's parts".into()));
        };
        let block_size = self.engine.block_size() as u64;
        let in_part = self.pos - part_start;
        let block_index = in_part / block_size;
        // Reads queued for other blocks (a new part, or a jump) are abandoned.
        while self.prefetch.front().is_some_and(|(id, index, _)| *id != part.file_id || *index < block_index) {
            self.prefetch.pop_front();
        }
        let block_len = (part.size - block_index * block_size).min(block_size) as usize;
        let cached = crate::cache::get(part.file_id, block_index).filter(|b| b.len() == block_len);
        // A read queued for this block is used; one for a later block stays queued (a block
        // skipped as cached was evicted since).
        let queued = match self.prefetch.front() {
            Some((_, index, _)) if *index == block_index => self.prefetch.pop_front(),
            _ => None,
        };
        let block = match (cached, queued) {
            (Some(block), _) => block,
            (None, queued) => {
                let block = match queued {
                    Some((_, _, read)) => read.await?,
                    None => {
                        let files = self.files_of(part.file_id).await;
                        read_block(self.engine.clone(), files, part.clone(), block_index).await?
                    }
                };
                let block = Rc::new(block);
                if self.fill_cache {
                    crate::cache::insert(part.file_id, block_index, block.clone());
                }
                block
            }
        };
        let mut next_index = self.prefetch.back().map(|(_, index, _)| index + 1).unwrap_or(block_index + 1);
        while next_index <= block_index + READ_AHEAD_BLOCKS
            && next_index * block_size < part.size
            && part_start + next_index * block_size < self.end
        {
            if !crate::cache::contains(part.file_id, next_index) {
                let files = self.files_of(part.file_id).await;
                let read = monoio::spawn(read_block(self.engine.clone(), files, part.clone(), next_index));
                self.prefetch.push_back((part.file_id, next_index, read));
            }
            next_index += 1;
        }
        let from = (in_part - block_index * block_size) as usize;
        let to = (block.len() as u64).min(self.end - part_start - block_index * block_size) as usize;
        if from >= to {
            // A block shorter than its part says: never a panic while slicing it.
            return Err(EngineError::Corrupt(format!("block {block_index} of file {:032x} is short", part.file_id)));
        }
        Ok(Chunk::Shared(block, from..to))
    }
}

thread_local! {
    /// This core's recent shard read latency (exponentially weighted, microseconds).
    static SHARD_READ_US: std::cell::Cell<f64> = const { std::cell::Cell::new(2_000.0) };
}

/// A shard read still out after this many times the recent average (and at least
/// `HEDGE_MIN`) is hedged: the next shard is read too, and the first k valid ones win.
const HEDGE_FACTOR: f64 = 8.0;
const HEDGE_MIN: std::time::Duration = std::time::Duration::from_millis(20);

fn hedge_delay() -> std::time::Duration {
    let us = SHARD_READ_US.with(|c| c.get()) * HEDGE_FACTOR;
    std::time::Duration::from_micros(us as u64).max(HEDGE_MIN)
}

fn note_read_latency(took: std::time::Duration) {
    SHARD_READ_US.with(|c| c.set(c.get() * 0.95 + took.as_micros() as f64 * 0.05));
}

/// Reads one block of a part: k shards at once (data shards first, a drive that looks
/// stalled last), each verified. A missing, short or corrupt shard pulls in the next one;
/// so does a read that is slow to answer (hedging), so one slow drive does not stall the
/// request. The first k valid shards rebuild the block.
async fn read_block(engine: Engine, files: Rc<PartFiles>, part: PartLoc, block_index: u64) -> Result<Vec<u8>> {
    let layout = engine.layout();
    let block_size = engine.block_size() as u64;
    let block_len = (part.size - block_index * block_size).min(block_size) as usize;
    let frame_size = layout.frame_size(block_len);
    let shard_size = layout.shard_size(block_len);
    let offset = block_index * layout.frame_size(block_size as usize) as u64;
    let rotation = (part.file_id % layout.total() as u128) as usize;
    let mut order: Vec<usize> = (0..layout.total()).collect();
    order.sort_by_key(|shard| engine.drive_inflight(layout.drive_of(*shard, rotation)) >= quorum::STALLED_INFLIGHT);
    let mut order = order.into_iter();
    let mut shards: Vec<Option<AlignedBuf>> = (0..layout.total()).map(|_| None).collect();
    let mut damaged = Vec::new();
    let (tx, rx) = flume::unbounded();
    // Starts the next candidate read; false when none is left.
    let mut launch = |damaged: &mut Vec<usize>| -> bool {
        for shard in order.by_ref() {
            let drive = layout.drive_of(shard, rotation);
            let Some(file) = files.files[drive].clone() else {
                damaged.push(shard);
                continue;
            };
            let tx = tx.clone();
            let guard = engine.inflight_guard(drive);
            monoio::spawn(async move {
                let start = std::time::Instant::now();
                let read = file.read_exact_at(aligned::take(frame_size), offset).await;
                drop(guard);
                let _ = tx.send((shard, drive, read, start.elapsed()));
            });
            return true;
        }
        false
    };
    let mut outstanding = 0;
    while outstanding < layout.data && launch(&mut damaged) {
        outstanding += 1;
    }
    let mut good = 0;
    let mut exhausted = outstanding < layout.data;
    while good < layout.data && outstanding > 0 {
        let wait = if exhausted { quorum::DRIVE_OP_TIMEOUT } else { hedge_delay() };
        let (shard, drive, read, took) = match monoio::time::timeout(wait, rx.recv_async()).await {
            Ok(Ok(done)) => done,
            Ok(Err(_)) => break,
            Err(_) if exhausted => break,
            Err(_) => {
                // Slow to answer: read one more shard beside it.
                if launch(&mut damaged) {
                    outstanding += 1;
                } else {
                    exhausted = true;
                }
                continue;
            }
        };
        outstanding -= 1;
        note_read_latency(took);
        match read {
            Ok(frame) if frame_is_valid(frame.as_slice(), shard_size) => {
                shards[shard] = Some(frame);
                good += 1;
                continue;
            }
            Ok(frame) => {
                eprintln!(
                    "ferrite: drive {}: block {block_index} of {:032x} failed its checksum; rebuilt from parity",
                    engine.drive_paths()[drive].display(),
                    part.file_id
                );
                aligned::give(frame);
                damaged.push(shard);
            }
            // A missing file, a short read or an I/O error: the shard is unavailable there.
            Err(_) => damaged.push(shard),
        }
        if good + outstanding < layout.data {
            if launch(&mut damaged) {
                outstanding += 1;
            } else {
                exhausted = true;
            }
        }
    }
    let mut out = Vec::new();
    let decoded = with_coder(&engine, |coder| coder.decode(&shards, block_len, &mut out));
    shards.into_iter().flatten().for_each(aligned::give);
    decoded?;
    damaged.retain(|shard| engine.drive_online(layout.drive_of(*shard, rotation)));
    if !damaged.is_empty() {
        repair_block(&engine, &files, block_index, &out, damaged);
    }
    Ok(out)
}

/// Rewrites the damaged shards of a block from its verified contents, in the background:
/// the read that found the damage is answered first.
fn repair_block(engine: &Engine, files: &PartFiles, block_index: u64, block: &[u8], damaged: Vec<usize>) {
    let engine = engine.clone();
    let paths = files.paths.clone();
    let file_id = files.file_id;
    let block = block.to_vec();
    monoio::spawn(async move { rewrite_shards(&engine, &paths, file_id, block_index, &block, &damaged).await });
}

/// Re-encodes a verified block and writes the listed shards to their drives, each
/// fdatasync'd (and its directory when the file had to be created). Returns how many
/// shards were rewritten.
async fn rewrite_shards(
    engine: &Engine,
    paths: &[std::path::PathBuf],
    file_id: u128,
    block_index: u64,
    block: &[u8],
    damaged: &[usize],
) -> u64 {
    let frames = match with_coder(engine, |coder| coder.encode(block)) {
        Ok(frames) => frames,
        Err(err) => {
            eprintln!("ferrite: cannot re-encode block {block_index} of {file_id:032x} for repair: {err}");
            return 0;
        }
    };
    let layout = engine.layout();
    let rotation = (file_id % layout.total() as u128) as usize;
    let offset = block_index * layout.frame_size(engine.block_size()) as u64;
    let mut frames: Vec<Option<AlignedBuf>> = frames.into_iter().map(Some).collect();
    let mut writes = Vec::new();
    for &shard in damaged {
        let drive = layout.drive_of(shard, rotation);
        let (Some(frame), Some(path)) = (frames[shard].take(), paths.get(drive).cloned()) else { continue };
        let name = engine.drive_paths()[drive].display().to_string();
        writes.push(monoio::spawn(async move {
            let result = async {
                let dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
                let existed = path.exists();
                // Formatting creates every partition directory: without it the drive was
                // wiped under us, and writing there would make it look used, not empty.
                if !dir.is_dir() {
                    return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "partition directory is gone"));
                }
                let file = DriveFile::open(path, OpenMode::WriteDirect).await?;
                let frame = file.write_all_at(frame, offset).await?;
                aligned::give(frame);
                file.sync_data().await?;
                if !existed {
                    sync_dir(dir).await?;
                }
                Ok::<(), std::io::Error>(())
            }
            .await;
            match result {
                Ok(()) => {
                    eprintln!("ferrite: drive {name}: repaired block {block_index} of {file_id:032x}");
                    1
                }
                Err(err) => {
                    eprintln!("ferrite: drive {name}: repair of block {block_index} of {file_id:032x} failed: {err}");
                    0
                }
            }
        }));
    }
    frames.into_iter().flatten().for_each(aligned::give);
    let mut repaired = 0;
    for write in writes {
        repaired += write.await;
    }
    repaired
}

/// What healing one part found.
#[derive(Default)]
pub(crate) struct PartCheck {
    pub repaired: u64,
    pub lost_blocks: u64,
}

/// Verifies every shard of every block of a part on every online drive (not only the k a
/// read needs) and rewrites the missing or corrupt ones from the others. `still_current`
/// is asked before each repair, so a part deleted meanwhile is not written back.
pub(crate) async fn heal_part(
    engine: &Engine,
    partition: u16,
    part: &PartLoc,
    still_current: &dyn Fn() -> bool,
    pacer: &mut crate::heal::Pacer,
    kind: crate::heal::PassKind,
) -> PartCheck {
    let mut found = PartCheck::default();
    if part.size == 0 {
        return found;
    }
    let files = PartFiles::open(engine, partition, part.file_id).await;
    let layout = engine.layout();
    let block_size = engine.block_size() as u64;
    let rotation = (part.file_id % layout.total() as u128) as usize;
    let blocks = part.size.div_ceil(block_size).max(1);
    for block_index in 0..blocks {
        let block_len = (part.size - block_index * block_size).min(block_size) as usize;
        let frame_size = layout.frame_size(block_len);
        let shard_size = layout.shard_size(block_len);
        let offset = block_index * layout.frame_size(block_size as usize) as u64;
        let mut reads = Vec::new();
        for shard in 0..layout.total() {
            let drive = layout.drive_of(shard, rotation);
            let file = files.files[drive].clone();
            reads.push(monoio::spawn(async move {
                match file {
                    Some(file) => file.read_exact_at(aligned::take(frame_size), offset).await.ok(),
                    None => None,
                }
            }));
        }
        let mut shards: Vec<Option<AlignedBuf>> = Vec::with_capacity(layout.total());
        let mut damaged = Vec::new();
        for (shard, read) in reads.into_iter().enumerate() {
            match read.await {
                Some(frame) if frame_is_valid(frame.as_slice(), shard_size) => shards.push(Some(frame)),
                other => {
                    other.into_iter().for_each(aligned::give);
                    shards.push(None);
                    if engine.drive_online(layout.drive_of(shard, rotation)) {
                        damaged.push(shard);
                    }
                }
            }
        }
        let valid = shards.iter().filter(|s| s.is_some()).count();
        if !damaged.is_empty() && valid >= layout.data {
            let mut block = Vec::new();
            let decoded = with_coder(engine, |coder| coder.decode(&shards, block_len, &mut block));
            if decoded.is_ok() && still_current() {
                found.repaired +=
                    rewrite_shards(engine, &files.paths, part.file_id, block_index, &block, &damaged).await;
            }
        } else if valid < layout.data {
            eprintln!(
                "ferrite: block {block_index} of {:032x} has {valid} intact shards of the {} needed: unrecoverable",
                part.file_id, layout.data
            );
            found.lost_blocks += 1;
        }
        shards.into_iter().flatten().for_each(aligned::give);
        pacer.account(engine, kind, block_len as u64).await;
    }
    found
}

/// Reads and verifies an inline object's log record from the first drive that has it
/// intact. A drive slow to answer is hedged: the next drive is asked beside it.
async fn read_inline_record(engine: &Engine, wal: u16, rec_off: u64, rec_len: u32) -> Result<Vec<u8>> {
    use monoio::buf::IoBufMut;
    let mut drives: Vec<usize> = (0..engine.drive_paths().len()).filter(|d| engine.drive_online(*d)).collect();
    drives.sort_by_key(|d| engine.drive_inflight(*d) >= quorum::STALLED_INFLIGHT);
    let mut drives = drives.into_iter();
    let (tx, rx) = flume::unbounded();
    let launch = |drive: usize| {
        let path = wal_path(&engine.drive_paths()[drive], wal);
        let guard = engine.inflight_guard(drive);
        let tx = tx.clone();
        monoio::spawn(async move {
            let read = async {
                let file = DriveFile::open(path, OpenMode::ReadBuffered).await?;
                let buf = Vec::with_capacity(rec_len as usize).slice_mut(0..rec_len as usize);
                Ok::<Vec<u8>, std::io::Error>(file.read_exact_at(buf, rec_off).await?.into_inner())
            };
            let result = read.await;
            drop(guard);
            let _ = tx.send((drive, result));
        });
    };
    let mut outstanding = 0;
    if let Some(drive) = drives.next() {
        launch(drive);
        outstanding += 1;
    }
    while outstanding > 0 {
        let (drive, result) = match monoio::time::timeout(hedge_delay(), rx.recv_async()).await {
            Ok(Ok(done)) => done,
            Ok(Err(_)) => break,
            Err(_) => {
                // Slow to answer: ask the next drive too (or keep waiting if none is left).
                if let Some(next) = drives.next() {
                    launch(next);
                    outstanding += 1;
                }
                continue;
            }
        };
        outstanding -= 1;
        if let Ok(record) = result {
            if verify_record(&record).is_some() {
                return Ok(record);
            }
            eprintln!(
                "ferrite: drive {}: metadata record at {rec_off} failed its checksum",
                engine.drive_paths()[drive].display()
            );
        }
        if let Some(next) = drives.next() {
            launch(next);
            outstanding += 1;
        }
    }
    Err(EngineError::ReadQuorum("no drive has an intact copy of the inline object".into()))
}
