//! The data path, run by the core that accepted the request. Writing: bytes are gathered
//! into blocks, each block is erasure coded into sealed frames (see erasure.rs) and the
//! frames are written with O_DIRECT to one file per drive, all drives at once; `finish`
//! fdatasyncs every file and its directory before the metadata commit. Reading: a block's
//! data shards are read and verified; a missing or corrupt shard is replaced by parity,
//! and the damaged shards are rewritten. The healer's block check lives here too.
//!
//! It works on the drive state (drives.rs), never on the `Engine` handle.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aligned::{self, AlignedBuf};
use crate::cache;
use crate::drives::DriveState;
use crate::erasure::{frame_is_valid, Coder, Layout};
use crate::error::{busy, is_process_error, EngineError, Result};
use crate::io::{remove_file, sync_dir, DriveFile, OpenMode};
use crate::limits::INLINE_BYTES_MAX;
use crate::meta::{DataLoc, PartLoc};
use crate::quorum;
use crate::types::now_ms;
use crate::wal::{verify_record, wal_path};

thread_local! {
    static CODER: RefCell<Option<Coder>> = const { RefCell::new(None) };
}

fn with_coder<T>(layout: Layout, job: impl FnOnce(&mut Coder) -> T) -> T {
    CODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let coder = match slot.as_mut() {
            Some(coder) if coder.layout() == layout => coder,
            _ => slot.insert(Coder::new(layout)),
        };
        job(coder)
    })
}

/// Debug builds check every frame right before it is written: a frame that does not verify
/// would be refused by every read.
fn frames_are_valid(frames: &[AlignedBuf], shard_size: usize) -> bool {
    frames.iter().all(|frame| frame_is_valid(frame.as_slice(), shard_size))
}

/// A random 128-bit id. Should the system's random source fail, the time, the process id
/// and a counter still make it unique (the block cache and SSE key derivation rely on that).
fn new_file_id() -> u128 {
    static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let n = FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let time = now_ms() as u128;
        return (time << 64) | (u128::from(std::process::id()) << 32) | u128::from(n as u32);
    }
    u128::from_le_bytes(bytes)
}

/// A data file's id as it names the file (32 hex digits), for log events.
struct FileName(u128);

impl std::fmt::Display for FileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Shard i of a file's blocks lives on drive `layout.drive_of(i, rotation)`.
fn rotation_of(file_id: u128, layout: Layout) -> usize {
    (file_id % layout.total() as u128) as usize
}

/// Where one block of a part lies in the part's shard files.
#[derive(Clone, Copy)]
struct BlockGeometry {
    /// Bytes of the block (the last block of a part may be short).
    len: usize,
    shard_size: usize,
    frame_size: usize,
    /// Where the block's frame starts in every shard file.
    offset: u64,
    rotation: usize,
}

impl BlockGeometry {
    fn of(drives: &DriveState, part: &PartLoc, block_index: u64) -> BlockGeometry {
        let layout = drives.layout();
        let block_size = drives.block_size() as u64;
        let len = (part.size - block_index * block_size).min(block_size) as usize;
        BlockGeometry {
            len,
            shard_size: layout.shard_size(len),
            frame_size: layout.frame_size(len),
            offset: block_index * layout.frame_size(block_size as usize) as u64,
            rotation: rotation_of(part.file_id, layout),
        }
    }
}

/// What a finished write holds inside the engine.
pub(crate) enum Written {
    /// Bytes small enough to live in the metadata record.
    Inline(Vec<u8>),
    /// A part file, durable on a write quorum of drives.
    Part(PartLoc),
}

/// The result of writing an object's (or a part's) bytes. Only [`DataWriter::finish`] makes
/// one, so a commit (`Engine::put_object`, `Engine::swap_data`) can only name data that is
/// durable on a write quorum of drives.
#[must_use = "a write's data is referenced by nothing until it is committed"]
pub struct Finished(Written);

impl Finished {
    /// The part file written, or None when the bytes were kept for inlining.
    pub fn part(&self) -> Option<&PartLoc> {
        match &self.0 {
            Written::Part(part) => Some(part),
            Written::Inline(_) => None,
        }
    }

    pub fn is_inline(&self) -> bool {
        matches!(self.0, Written::Inline(_))
    }

    pub(crate) fn into_written(self) -> Written {
        self.0
    }
}

pub struct DataWriter {
    drives: Arc<DriveState>,
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
    /// An operation failed for a reason of the process (out of file descriptors or memory):
    /// the write fails as `Busy` rather than leave a healthy drive without its shards.
    process_error: Option<std::io::Error>,
}

impl DataWriter {
    pub(crate) fn new(drives: Arc<DriveState>, partition: u16, inline_allowed: bool) -> Self {
        let block_size = drives.block_size();
        Self {
            drives,
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
            process_error: None,
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
        let block_size = self.drives.block_size();
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
        let layout = self.drives.layout();
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
        let shard_size = self.drives.layout().shard_size(block_size);
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
        let paths = self.drives.data_file_paths(self.partition, self.file_id);
        for (drive, path) in paths.into_iter().enumerate() {
            let file = if self.drives.online(drive) {
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
        if is_process_error(err) {
            // Not the drive's fault: the whole write fails and is retried by the client.
            if self.process_error.is_none() {
                self.process_error = Some(std::io::Error::new(err.kind(), err.to_string()));
            }
            return;
        }
        let path = self.drives.paths()[drive].display();
        tracing::warn!(drive = %path, op = what, error = %err, "data file operation failed; the drive misses this object");
        self.out_of_space |= err.raw_os_error() == Some(libc::ENOSPC);
        if let Some(slot) = self.files.get_mut(drive) {
            *slot = None;
        }
    }

    /// Drops the drives whose operation failed or was abandoned from this object.
    fn apply_outcome(&mut self, outcome: quorum::Outcome, what: &str) -> Result<()> {
        for failure in &outcome.failed {
            self.note_failure(failure.drive, what, &failure.error);
        }
        self.check_quorum()
    }

    fn check_quorum(&self) -> Result<()> {
        if let Some(err) = &self.process_error {
            return Err(busy(err));
        }
        let ok = self.files.iter().filter(|f| f.is_some()).count();
        let needed = self.drives.write_quorum();
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
        let frames = with_coder(self.drives.layout(), |coder| coder.encode(&self.block))?;
        self.write_frames(frames, self.block.len()).await?;
        self.block.clear();
        Ok(())
    }

    /// Codes the full block in `frames` where it lies and writes it.
    async fn flush_frames(&mut self, block_size: usize) -> Result<()> {
        let data = std::mem::take(&mut self.frames);
        self.filled = 0;
        let frames = with_coder(self.drives.layout(), |coder| coder.encode_frames(data, block_size))?;
        self.write_frames(frames, block_size).await
    }

    /// Writes the sealed frames of a block of `block_len` bytes, each to its drive, at the
    /// next block's offset.
    async fn write_frames(&mut self, frames: Vec<AlignedBuf>, block_len: usize) -> Result<()> {
        let layout = self.drives.layout();
        debug_assert!(frames_are_valid(&frames, layout.shard_size(block_len)), "a frame fails its own checksum");
        let offset = self.blocks_written * layout.frame_size(self.drives.block_size()) as u64;
        let rotation = rotation_of(self.file_id, layout);
        let mut ops = Vec::with_capacity(frames.len());
        for (shard, frame) in frames.into_iter().enumerate() {
            let drive = layout.drive_of(shard, rotation);
            let Some(file) = self.files[drive].clone() else {
                aligned::give(frame);
                continue;
            };
            ops.push((drive, async move { file.write_all_at(frame, offset).await.map(aligned::give) }));
        }
        let outcome = quorum::run(&self.drives, ops, self.drives.write_quorum()).await;
        self.apply_outcome(outcome, "write")?;
        self.blocks_written += 1;
        Ok(())
    }

    /// Makes the data durable on a write quorum of drives (or keeps it for inlining).
    pub async fn finish(mut self) -> Result<Finished> {
        self.check_not_failed()?;
        if !self.frames.is_empty() {
            self.gather_frames(self.drives.block_size());
        }
        if !self.created && self.inline_allowed && self.block.len() <= INLINE_BYTES_MAX {
            return Ok(Finished(Written::Inline(std::mem::take(&mut self.block))));
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
            let dir = self.drives.partition_dir(drive, self.partition);
            ops.push((drive, async move {
                file.sync_data().await?;
                sync_dir(dir).await
            }));
        }
        let outcome = quorum::run(&self.drives, ops, self.drives.write_quorum()).await;
        self.apply_outcome(outcome, "sync")?;
        Ok(Finished(Written::Part(PartLoc { file_id: self.file_id, size: self.size })))
    }

    /// Removes what an abandoned write left (best effort; the start-up sweep catches the rest).
    pub async fn discard(self) {
        if self.created {
            for path in self.drives.data_file_paths(self.partition, self.file_id) {
                let _ = remove_file(path).await;
            }
        }
    }
}

/// The shard files of one part on every drive (None: offline, missing or unopenable).
pub(crate) struct PartFiles {
    file_id: u128,
    files: Vec<Option<Rc<DriveFile>>>,
    /// Per drive: the file could not be opened for a reason of the process (out of file
    /// descriptors, say): its shard is unavailable now, but not damaged.
    busy: Vec<bool>,
    /// Where the shard file is (or belongs) on each drive, for repairs.
    paths: Vec<PathBuf>,
}

impl PartFiles {
    pub(crate) async fn open(drives: &DriveState, partition: u16, file_id: u128) -> PartFiles {
        let mut files = Vec::new();
        let mut busy = Vec::new();
        let paths = drives.data_file_paths(partition, file_id);
        for (drive, path) in paths.iter().enumerate() {
            let opened = match drives.online(drive) {
                true => Some(DriveFile::open(path.clone(), OpenMode::ReadDirect).await),
                false => None,
            };
            busy.push(matches!(&opened, Some(Err(err)) if is_process_error(err)));
            files.push(opened.and_then(|o| o.ok()).map(Rc::new));
        }
        PartFiles { file_id, files, busy, paths }
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

/// A block read started ahead of need.
struct Prefetch {
    file_id: u128,
    block_index: u64,
    read: monoio::task::JoinHandle<Result<Vec<u8>>>,
}

/// Blocks of a part read ahead of the one being sent. Each costs a block of memory per
/// stream (accounted in the S3 layer's memory budget). Measured with the engine bench on
/// this machine (one run each): a single 64 MiB GET stream read 810 MiB/s with 1 block
/// ahead, 1,300 MiB/s with 2 (the disk's O_DIRECT read limit) and 883 MiB/s with 4.
pub const READ_AHEAD_BLOCKS: u64 = 2;

/// Reads an object's bytes [start, end) in chunks of at most one block. While a block is
/// being sent, the next `READ_AHEAD_BLOCKS` blocks of the same part are already being read
/// and verified.
pub struct ObjectReader {
    drives: Arc<DriveState>,
    partition: u16,
    data: DataLoc,
    pos: u64,
    end: u64,
    files: Option<Rc<PartFiles>>,
    prefetch: VecDeque<Prefetch>,
    /// The first chunk, read before the response head is sent (see `prime`).
    primed: Option<Chunk>,
    /// Whether blocks read from the drives go into the block cache.
    fill_cache: bool,
}

impl ObjectReader {
    pub(crate) fn new(drives: Arc<DriveState>, partition: u16, data: DataLoc, start: u64, end: u64) -> Self {
        let prefetch = VecDeque::new();
        Self { drives, partition, data, pos: start, end, files: None, prefetch, primed: None, fill_cache: true }
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
                let record = read_inline_record(&self.drives, wal, rec_off, rec_len).await?;
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
                let files = Rc::new(PartFiles::open(&self.drives, self.partition, file_id).await);
                self.files = Some(files.clone());
                files
            }
        }
    }

    async fn next_part_chunk(&mut self, parts: &[PartLoc]) -> Result<Chunk> {
        let (part, part_start) = part_at(parts, self.pos)?;
        let block_size = self.drives.block_size() as u64;
        let block_index = (self.pos - part_start) / block_size;
        let block = self.block(&part, block_index).await?;
        self.read_ahead(&part, part_start, block_index).await;
        let from = (self.pos - part_start - block_index * block_size) as usize;
        let to = (block.len() as u64).min(self.end - part_start - block_index * block_size) as usize;
        if from >= to {
            // A block shorter than its part says: never a panic while slicing it.
            return Err(EngineError::Corrupt(format!("block {block_index} of file {:032x} is short", part.file_id)));
        }
        Ok(Chunk::Shared(block, from..to))
    }

    /// One block of a part: from the cache, from a read started ahead, or read now (and
    /// then cached).
    async fn block(&mut self, part: &PartLoc, block_index: u64) -> Result<Rc<Vec<u8>>> {
        // Reads queued for other blocks (a new part, or a jump) are abandoned.
        while self.prefetch.front().is_some_and(|p| p.file_id != part.file_id || p.block_index < block_index) {
            self.prefetch.pop_front();
        }
        let block_size = self.drives.block_size() as u64;
        let block_len = (part.size - block_index * block_size).min(block_size) as usize;
        let cached = cache::get(part.file_id, block_index).filter(|b| b.len() == block_len);
        // A read queued for this block is used; one for a later block stays queued (a block
        // skipped as cached was evicted since).
        let queued = match self.prefetch.front() {
            Some(p) if p.block_index == block_index => self.prefetch.pop_front(),
            _ => None,
        };
        if let Some(block) = cached {
            return Ok(block);
        }
        let block = match queued {
            Some(prefetch) => prefetch.read.await?,
            None => {
                let files = self.files_of(part.file_id).await;
                read_block(self.drives.clone(), files, part.clone(), block_index).await?
            }
        };
        let block = Rc::new(block);
        if self.fill_cache {
            cache::insert(part.file_id, block_index, block.clone());
        }
        Ok(block)
    }

    /// Starts reading the blocks after `block_index` (up to `READ_AHEAD_BLOCKS` ahead, within
    /// the part and the range) that are neither cached nor already being read.
    async fn read_ahead(&mut self, part: &PartLoc, part_start: u64, block_index: u64) {
        let block_size = self.drives.block_size() as u64;
        let mut next_index = self.prefetch.back().map(|p| p.block_index + 1).unwrap_or(block_index + 1);
        while next_index <= block_index + READ_AHEAD_BLOCKS
            && next_index * block_size < part.size
            && part_start + next_index * block_size < self.end
        {
            if !cache::contains(part.file_id, next_index) {
                let files = self.files_of(part.file_id).await;
                let read = monoio::spawn(read_block(self.drives.clone(), files, part.clone(), next_index));
                self.prefetch.push_back(Prefetch { file_id: part.file_id, block_index: next_index, read });
            }
            next_index += 1;
        }
    }
}

/// The part holding byte `pos` of an object, and where that part starts in the object.
fn part_at(parts: &[PartLoc], pos: u64) -> Result<(PartLoc, u64)> {
    let mut part_start = 0u64;
    for part in parts {
        if pos < part_start + part.size {
            return Ok((part.clone(), part_start));
        }
        part_start += part.size;
    }
    Err(EngineError::Corrupt("range beyond the object's parts".into()))
}

thread_local! {
    /// This core's recent shard read latency (exponentially weighted, microseconds).
    static SHARD_READ_US: std::cell::Cell<f64> = const { std::cell::Cell::new(2_000.0) };
}

/// A shard read still out after this many times the recent average (and at least
/// `HEDGE_MIN`) is hedged: the next shard is read too, and the first k valid ones win.
const HEDGE_FACTOR: f64 = 8.0;
const HEDGE_MIN: Duration = Duration::from_millis(20);

fn hedge_delay() -> Duration {
    let us = SHARD_READ_US.with(|c| c.get()) * HEDGE_FACTOR;
    Duration::from_micros(us as u64).max(HEDGE_MIN)
}

fn note_read_latency(took: Duration) {
    SHARD_READ_US.with(|c| c.set(c.get() * 0.95 + took.as_micros() as f64 * 0.05));
}

/// Reads one block of a part: k shards at once (data shards first, a drive that looks
/// stalled last), each verified. A missing, short or corrupt shard pulls in the next one;
/// so does a read that is slow to answer (hedging), so one slow drive does not stall the
/// request. The first k valid shards rebuild the block; the damaged shards found on the
/// way are rewritten in the background.
async fn read_block(drives: Arc<DriveState>, files: Rc<PartFiles>, part: PartLoc, block_index: u64) -> Result<Vec<u8>> {
    let layout = drives.layout();
    let geometry = BlockGeometry::of(&drives, &part, block_index);
    let gathered = ShardReads::new(&drives, &files, geometry).gather(part.file_id, block_index).await;
    let Gathered { shards, mut damaged, process_error } = gathered;
    let mut out = Vec::new();
    let decoded = with_coder(layout, |coder| coder.decode(&shards, geometry.len, &mut out));
    shards.into_iter().flatten().for_each(aligned::give);
    match (decoded, process_error) {
        // Too few shards because the process is short of resources: not a lost read quorum.
        (Err(_), Some(err)) => return Err(busy(&err)),
        (decoded, _) => decoded?,
    }
    damaged.retain(|shard| drives.online(layout.drive_of(*shard, geometry.rotation)));
    if !damaged.is_empty() {
        repair_block(&drives, &files, block_index, &out, damaged);
    }
    Ok(out)
}

/// What the shard reads of a block found: the shards (None: unavailable), the damaged ones
/// (to rewrite), and a process error that kept some shard from being read.
struct Gathered {
    shards: Vec<Option<AlignedBuf>>,
    damaged: Vec<usize>,
    process_error: Option<std::io::Error>,
}

/// One shard read's result, sent back by its task.
struct ShardRead {
    shard: usize,
    drive: usize,
    read: std::io::Result<AlignedBuf>,
    took: Duration,
}

/// The shard reads of one block: k at once, one more for each that fails or is slow.
struct ShardReads<'a> {
    drives: &'a Arc<DriveState>,
    files: &'a PartFiles,
    geometry: BlockGeometry,
    /// Shards not asked for yet, in the order to ask.
    order: std::vec::IntoIter<usize>,
    tx: flume::Sender<ShardRead>,
    rx: flume::Receiver<ShardRead>,
    shards: Vec<Option<AlignedBuf>>,
    /// Shards found missing or corrupt.
    damaged: Vec<usize>,
    /// A shard unavailable for a reason of the process (never counted as damaged).
    process_error: Option<std::io::Error>,
    outstanding: usize,
    /// No shard is left to ask for.
    exhausted: bool,
}

impl<'a> ShardReads<'a> {
    fn new(drives: &'a Arc<DriveState>, files: &'a PartFiles, geometry: BlockGeometry) -> Self {
        let layout = drives.layout();
        let mut order: Vec<usize> = (0..layout.total()).collect();
        order.sort_by_key(|shard| {
            drives.inflight(layout.drive_of(*shard, geometry.rotation)) >= quorum::STALLED_INFLIGHT
        });
        let (tx, rx) = flume::unbounded();
        ShardReads {
            drives,
            files,
            geometry,
            order: order.into_iter(),
            tx,
            rx,
            shards: (0..layout.total()).map(|_| None).collect(),
            damaged: Vec::new(),
            process_error: None,
            outstanding: 0,
            exhausted: false,
        }
    }

    /// Starts the next candidate read; false when none is left.
    fn launch(&mut self) -> bool {
        let layout = self.drives.layout();
        let BlockGeometry { frame_size, offset, rotation, .. } = self.geometry;
        for shard in self.order.by_ref() {
            let drive = layout.drive_of(shard, rotation);
            let Some(file) = self.files.files[drive].clone() else {
                if self.files.busy[drive] {
                    self.process_error.get_or_insert_with(|| std::io::Error::other("cannot open a shard file"));
                } else {
                    self.damaged.push(shard);
                }
                continue;
            };
            let tx = self.tx.clone();
            let guard = self.drives.inflight_guard(drive);
            monoio::spawn(async move {
                let start = Instant::now();
                let read = file.read_exact_at(aligned::take(frame_size), offset).await;
                drop(guard);
                let _ = tx.send(ShardRead { shard, drive, read, took: start.elapsed() });
            });
            self.outstanding += 1;
            return true;
        }
        self.exhausted = true;
        false
    }

    /// Reads until k valid shards are in, or no read is left to wait for. Returns the shards
    /// (None: missing or corrupt) and the damaged ones.
    async fn gather(mut self, file_id: u128, block_index: u64) -> Gathered {
        let k = self.drives.layout().data;
        while self.outstanding < k && self.launch() {}
        self.exhausted = self.outstanding < k;
        let mut good = 0;
        while good < k && self.outstanding > 0 {
            let wait = if self.exhausted { quorum::DRIVE_OP_TIMEOUT } else { hedge_delay() };
            let done = match monoio::time::timeout(wait, self.rx.recv_async()).await {
                Ok(Ok(done)) => done,
                Ok(Err(_)) => break,
                Err(_) if self.exhausted => break,
                Err(_) => {
                    // Slow to answer: read one more shard beside it.
                    self.launch();
                    continue;
                }
            };
            self.outstanding -= 1;
            note_read_latency(done.took);
            if self.accept(done, file_id, block_index) {
                good += 1;
                continue;
            }
            if good + self.outstanding < k {
                self.launch();
            }
        }
        Gathered { shards: self.shards, damaged: self.damaged, process_error: self.process_error }
    }

    /// Keeps a shard that verifies (true); notes a missing or corrupt one as damaged.
    fn accept(&mut self, done: ShardRead, file_id: u128, block_index: u64) -> bool {
        match done.read {
            Ok(frame) if frame_is_valid(frame.as_slice(), self.geometry.shard_size) => {
                self.shards[done.shard] = Some(frame);
                return true;
            }
            Ok(frame) => {
                tracing::warn!(
                    drive = %self.drives.paths()[done.drive].display(),
                    file = %FileName(file_id),
                    block = block_index,
                    "shard failed its checksum; rebuilt from parity"
                );
                aligned::give(frame);
            }
            Err(err) if is_process_error(&err) => {
                // The process, not the drive, failed: unavailable now, not damaged.
                self.process_error.get_or_insert(err);
                return false;
            }
            // A missing file, a short read or an I/O error: the shard is unavailable there.
            Err(_) => {}
        }
        self.damaged.push(done.shard);
        false
    }
}

/// Rewrites the damaged shards of a block from its verified contents, in the background:
/// the read that found the damage is answered first.
fn repair_block(drives: &Arc<DriveState>, files: &PartFiles, block_index: u64, block: &[u8], damaged: Vec<usize>) {
    let drives = drives.clone();
    let paths = files.paths.clone();
    let file_id = files.file_id;
    let block = block.to_vec();
    monoio::spawn(async move { rewrite_shards(&drives, &paths, file_id, block_index, &block, &damaged).await });
}

/// Re-encodes a verified block and writes the listed shards to their drives, each
/// fdatasync'd (and its directory when the file had to be created). Returns how many
/// shards were rewritten.
async fn rewrite_shards(
    drives: &DriveState,
    paths: &[PathBuf],
    file_id: u128,
    block_index: u64,
    block: &[u8],
    damaged: &[usize],
) -> u64 {
    let layout = drives.layout();
    let frames = match with_coder(layout, |coder| coder.encode(block)) {
        Ok(frames) => frames,
        Err(err) => {
            let file = FileName(file_id);
            tracing::error!(%file, block = block_index, error = %err, "cannot re-encode a block for repair");
            return 0;
        }
    };
    debug_assert!(frames_are_valid(&frames, layout.shard_size(block.len())), "a repair frame fails its checksum");
    let rotation = rotation_of(file_id, layout);
    let offset = block_index * layout.frame_size(drives.block_size()) as u64;
    let mut frames: Vec<Option<AlignedBuf>> = frames.into_iter().map(Some).collect();
    let mut writes = Vec::new();
    for &shard in damaged {
        let drive = layout.drive_of(shard, rotation);
        let (Some(frame), Some(path)) = (frames[shard].take(), paths.get(drive).cloned()) else { continue };
        let name = drives.paths()[drive].display().to_string();
        writes.push(monoio::spawn(async move {
            let file = FileName(file_id);
            match rewrite_shard(path, frame, offset).await {
                Ok(()) => {
                    tracing::info!(drive = %name, %file, block = block_index, "repaired block");
                    1
                }
                Err(err) => {
                    tracing::warn!(drive = %name, %file, block = block_index, error = %err, "block repair failed");
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

/// Writes one shard's frame into its file (creating it if needed), fdatasync'd, and its
/// directory too when the file is new.
async fn rewrite_shard(path: PathBuf, frame: AlignedBuf, offset: u64) -> std::io::Result<()> {
    let dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let existed = path.exists();
    // Formatting creates every partition directory: without it the drive was wiped under
    // us, and writing there would make it look used, not empty.
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
    Ok(())
}

/// What the healer's check of one block found.
pub(crate) struct BlockCheck {
    /// Bytes of the block (what the pass accounts for its rate).
    pub len: u64,
    /// Shards rewritten.
    pub repaired: u64,
    /// Fewer than k intact shards: the block cannot be rebuilt.
    pub lost: bool,
}

/// Verifies every shard of one block on every online drive (not only the k a read needs)
/// and rewrites the missing or corrupt ones from the others. `still_current` is asked
/// before the repair, so a part deleted meanwhile is not written back.
pub(crate) async fn heal_block(
    drives: &Arc<DriveState>,
    files: &PartFiles,
    part: &PartLoc,
    block_index: u64,
    still_current: &dyn Fn() -> bool,
) -> BlockCheck {
    let layout = drives.layout();
    let geometry = BlockGeometry::of(drives, part, block_index);
    // A shard file that could not be opened for a reason of the process leaves the block
    // unknown, not damaged.
    let mut process_error = files.busy.iter().any(|b| *b);
    let mut reads = Vec::new();
    for shard in 0..layout.total() {
        let file = files.files[layout.drive_of(shard, geometry.rotation)].clone();
        reads.push(monoio::spawn(async move {
            match file {
                Some(file) => Some(file.read_exact_at(aligned::take(geometry.frame_size), geometry.offset).await),
                None => None,
            }
        }));
    }
    let mut shards: Vec<Option<AlignedBuf>> = Vec::with_capacity(layout.total());
    let mut damaged = Vec::new();
    for (shard, read) in reads.into_iter().enumerate() {
        match read.await {
            Some(Ok(frame)) if frame_is_valid(frame.as_slice(), geometry.shard_size) => shards.push(Some(frame)),
            other => {
                process_error |= matches!(&other, Some(Err(err)) if is_process_error(err));
                if let Some(Ok(frame)) = other {
                    aligned::give(frame);
                }
                shards.push(None);
                if drives.online(layout.drive_of(shard, geometry.rotation)) {
                    damaged.push(shard);
                }
            }
        }
    }
    let valid = shards.iter().filter(|s| s.is_some()).count();
    let mut check = BlockCheck { len: geometry.len as u64, repaired: 0, lost: false };
    if process_error {
        // Some shard could not be read for a reason of the process: nothing is known about
        // it, so nothing is rewritten or counted lost; the next pass looks again.
        let file = FileName(part.file_id);
        tracing::warn!(%file, block = block_index, "block check skipped: the server is short of resources");
    } else if !damaged.is_empty() && valid >= layout.data {
        let mut block = Vec::new();
        let decoded = with_coder(layout, |coder| coder.decode(&shards, geometry.len, &mut block));
        if decoded.is_ok() && still_current() {
            check.repaired = rewrite_shards(drives, &files.paths, part.file_id, block_index, &block, &damaged).await;
        }
    } else if valid < layout.data {
        let file = FileName(part.file_id);
        tracing::error!(%file, block = block_index, valid, needed = layout.data, "block is unrecoverable");
        check.lost = true;
    }
    shards.into_iter().flatten().for_each(aligned::give);
    check
}

/// Reads and verifies an inline object's log record from the first drive that has it
/// intact. A drive slow to answer is hedged: the next drive is asked beside it.
async fn read_inline_record(drives: &Arc<DriveState>, wal: u16, rec_off: u64, rec_len: u32) -> Result<Vec<u8>> {
    use monoio::buf::IoBufMut;
    let mut order: Vec<usize> = (0..drives.paths().len()).filter(|d| drives.online(*d)).collect();
    order.sort_by_key(|d| drives.inflight(*d) >= quorum::STALLED_INFLIGHT);
    let mut order = order.into_iter();
    let (tx, rx) = flume::unbounded();
    let launch = |drive: usize| {
        let path = wal_path(&drives.paths()[drive], wal);
        let guard = drives.inflight_guard(drive);
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
    let mut process_error = None;
    if let Some(drive) = order.next() {
        launch(drive);
        outstanding += 1;
    }
    while outstanding > 0 {
        let (drive, result) = match monoio::time::timeout(hedge_delay(), rx.recv_async()).await {
            Ok(Ok(done)) => done,
            Ok(Err(_)) => break,
            Err(_) => {
                // Slow to answer: ask the next drive too (or keep waiting if none is left).
                if let Some(next) = order.next() {
                    launch(next);
                    outstanding += 1;
                }
                continue;
            }
        };
        outstanding -= 1;
        match result {
            Ok(record) if verify_record(&record).is_some() => return Ok(record),
            Ok(_) => {
                let drive = drives.paths()[drive].display();
                tracing::warn!(%drive, offset = rec_off, "inline object's metadata record failed its checksum");
            }
            Err(err) if is_process_error(&err) => {
                process_error.get_or_insert(err);
            }
            Err(_) => {}
        }
        if let Some(next) = order.next() {
            launch(next);
            outstanding += 1;
        }
    }
    match process_error {
        Some(err) => Err(busy(&err)),
        None => Err(EngineError::ReadQuorum("no drive has an intact copy of the inline object".into())),
    }
}
