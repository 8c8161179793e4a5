//! MD5 for ETags, many streams at once.
//!
//! One stream's MD5 is a serial chain: each 64-byte block needs the state the one before left.
//! A core serving several PUTs has several independent chains, so it hashes them together, one
//! stream per lane of a vector register (16 lanes with AVX-512, two groups of 8 with AVX2;
//! lane by lane without either).
//!
//! Each PUT hands its body chunks to an [`Md5Stream`] after writing them; the chunk waits in
//! the stream. When a stream holds [`HOLD_BYTES`], or is finished, its core's [`Batcher`]
//! hashes it, and the other streams of the core that hold whole blocks in the remaining lanes.
//! Without AVX2 there are no lanes to share, so each chunk is hashed as it comes. No await,
//! no task, no thread: the batch runs inside the call that needed it, on the core that owns
//! every stream in it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[macro_use]
mod steps;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Lanes hashed together.
pub const LANES: usize = 16;

/// Bytes a stream holds before it asks for a batch. Larger batches keep more lanes busy;
/// this bounds the memory: a stream holds at most this plus one chunk of data, in buffers
/// of at least `SMALL_CHUNK_BYTES` (small chunks are gathered), so at most twice that in
/// allocations.
pub const HOLD_BYTES: usize = 1 << 20;

/// Chunks under this size are copied together into buffers of this size, so a body sent in
/// tiny chunks does not become a million tiny allocations while it waits.
const SMALL_CHUNK_BYTES: usize = 16 << 10;

/// Blocks hashed in lanes, and the kernel steps that did it, by every core (for metrics).
pub static BLOCKS: AtomicU64 = AtomicU64::new(0);
pub static STEPS: AtomicU64 = AtomicU64::new(0);

/// The state words a, b, c, d of every lane: `state[w][lane]`.
type LaneState = [[u32; LANES]; 4];

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The ways to advance the lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Avx512,
    Avx2,
    Scalar,
}

impl Kernel {
    pub const ALL: [Kernel; 3] = [Kernel::Avx512, Kernel::Avx2, Kernel::Scalar];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512 x16",
            Kernel::Avx2 => "avx2 2x8",
            Kernel::Scalar => "scalar",
        }
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Kernel::Avx512 => avx512::available(),
                Kernel::Avx2 => avx2::available(),
                Kernel::Scalar => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Scalar
        }
    }
}

/// Which kernel to run, as asked (the binary reads `FERRITE_MD5_SIMD`: `0` for scalar,
/// `avx2` for AVX2 even where AVX-512 exists). Both are for measuring the difference, and
/// for CPUs that slow down under wide vectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelChoice {
    /// The widest this CPU can run.
    #[default]
    Widest,
    Avx2,
    Scalar,
}

impl Kernel {
    /// The kernel `choice` asks for, or the next narrower one this CPU can run.
    pub fn chosen(choice: KernelChoice) -> Kernel {
        let candidates: &[Kernel] = match choice {
            KernelChoice::Widest => &Kernel::ALL,
            KernelChoice::Avx2 => &[Kernel::Avx2, Kernel::Scalar],
            KernelChoice::Scalar => &[Kernel::Scalar],
        };
        candidates.iter().copied().find(|k| k.available()).unwrap_or(Kernel::Scalar)
    }
}

/// One block, one stream.
pub fn compress_block(state: &mut [u32; 4], block: &[u8; 64]) {
    macro_rules! scalar_fn {
        (f, $b:ident, $c:ident, $d:ident) => {
            ($b & $c) | (!$b & $d)
        };
        (g, $b:ident, $c:ident, $d:ident) => {
            ($d & $b) | (!$d & $c)
        };
        (h, $b:ident, $c:ident, $d:ident) => {
            $b ^ $c ^ $d
        };
        (i, $b:ident, $c:ident, $d:ident) => {
            $c ^ ($b | !$d)
        };
    }
    macro_rules! scalar_step {
        ($f:ident, $m:ident, $a:ident, $b:ident, $c:ident, $d:ident, $g:literal, $k:literal, $s:literal) => {
            $a = $b.wrapping_add(
                $a.wrapping_add(scalar_fn!($f, $b, $c, $d)).wrapping_add($k).wrapping_add($m[$g]).rotate_left($s),
            );
        };
    }
    let mut m = [0u32; 16];
    for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    md5_steps!(scalar_step, m, a, b, c, d);
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// Advances every busy lane by `blocks` blocks (see `avx512::compress` for the contract)
/// with `kernel`, or the scalar kernel where this CPU cannot run that one.
pub fn compress_lanes(kernel: Kernel, state: &mut LaneState, lanes: &[&[u8]; LANES], blocks: usize) {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        Kernel::Avx512 if avx512::available() => {
            // SAFETY: the CPU has AVX-512F (just checked), the only target feature
            // `avx512::compress` is built with.
            unsafe { avx512::compress(state, lanes, blocks) };
            return;
        }
        Kernel::Avx2 if avx2::available() => {
            // SAFETY: the CPU has AVX2 (just checked), the only target feature
            // `avx2::compress` is built with.
            unsafe { avx2::compress(state, lanes, blocks) };
            return;
        }
        _ => {}
    }
    compress_lanes_scalar(state, lanes, blocks);
}

/// `compress_lanes` one lane at a time, for CPUs without AVX2 and for comparison.
pub fn compress_lanes_scalar(state: &mut [[u32; LANES]; 4], lanes: &[&[u8]; LANES], blocks: usize) {
    for (l, lane) in lanes.iter().enumerate().filter(|(_, lane)| !lane.is_empty()) {
        let mut s = [state[0][l], state[1][l], state[2][l], state[3][l]];
        for block in lane[..blocks * 64].chunks_exact(64) {
            compress_block(&mut s, block.try_into().expect("chunks_exact(64) gives 64 bytes"));
        }
        for (w, word) in s.into_iter().enumerate() {
            state[w][l] = word;
        }
    }
}

/// The digest of a stream whose whole blocks are hashed: `tail` is what is left (under 64
/// bytes) and `total` the stream's length in bytes.
fn finish_digest(mut state: [u32; 4], tail: &[u8], total: u64) -> [u8; 16] {
    let mut block = [0u8; 64];
    block[..tail.len()].copy_from_slice(tail);
    block[tail.len()] = 0x80;
    if tail.len() >= 56 {
        compress_block(&mut state, &block);
        block = [0u8; 64];
    }
    block[56..].copy_from_slice(&(total.wrapping_mul(8)).to_le_bytes());
    compress_block(&mut state, &block);
    let mut out = [0u8; 16];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// One stream's place in its batcher.
#[derive(Default)]
struct Stream {
    state: [u32; 4],
    /// Data not hashed yet; the first chunk from `offset` on.
    chunks: VecDeque<Vec<u8>>,
    offset: usize,
    pending: usize,
    total: u64,
}

impl Stream {
    /// Whole blocks at the front that are contiguous in one chunk, or None when the next
    /// block spans chunks.
    fn contiguous(&self) -> Option<&[u8]> {
        let head = &self.chunks.front()?[self.offset..];
        let whole = head.len() / 64 * 64;
        (whole > 0).then(|| &head[..whole])
    }

    /// Copies the next block, which spans chunks, into `block`.
    fn gather_block(&self, block: &mut [u8; 64]) {
        let mut filled = 0;
        let mut skip = self.offset;
        for chunk in &self.chunks {
            let take = (chunk.len() - skip).min(64 - filled);
            block[filled..filled + take].copy_from_slice(&chunk[skip..skip + take]);
            filled += take;
            skip = 0;
            if filled == 64 {
                return;
            }
        }
    }

    /// Drops `bytes` hashed bytes from the front.
    fn consume(&mut self, mut bytes: usize) {
        self.pending -= bytes;
        while bytes > 0 {
            let Some(front) = self.chunks.front() else { return };
            let left = front.len() - self.offset;
            if bytes >= left {
                bytes -= left;
                self.chunks.pop_front();
                self.offset = 0;
            } else {
                self.offset += bytes;
                bytes = 0;
            }
        }
    }

    /// The bytes left after the whole blocks (under 64), in order.
    fn tail(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pending);
        let mut skip = self.offset;
        for chunk in &self.chunks {
            out.extend_from_slice(&chunk[skip..]);
            skip = 0;
        }
        out
    }
}

/// The streams of one core, hashed in lanes.
pub struct Batcher {
    streams: Vec<Option<Stream>>,
    free: Vec<usize>,
    /// With a lane kernel, streams wait for each other to share the lanes; with the scalar
    /// one, each chunk is hashed as it comes (it gains nothing from company).
    kernel: Kernel,
    /// Lane-steps run and lanes busy in them, for the batching ratio in tests and benches.
    pub steps: u64,
    pub busy_lane_steps: u64,
}

impl Default for Batcher {
    /// With the widest kernel this CPU can run.
    fn default() -> Self {
        Self::new(Kernel::chosen(KernelChoice::Widest))
    }
}

impl Batcher {
    /// With a lane kernel, streams wait for each other to fill the lanes; with the scalar
    /// one, each chunk is hashed as it comes.
    pub fn new(kernel: Kernel) -> Self {
        Self { streams: Vec::new(), free: Vec::new(), kernel, steps: 0, busy_lane_steps: 0 }
    }

    pub fn open(&mut self) -> usize {
        let stream = Stream { state: INIT, ..Stream::default() };
        match self.free.pop() {
            Some(id) => {
                self.streams[id] = Some(stream);
                id
            }
            None => {
                self.streams.push(Some(stream));
                self.streams.len() - 1
            }
        }
    }

    /// Adds `chunk` to stream `id`; hashes (in a batch) once the stream holds `HOLD_BYTES`.
    pub fn append(&mut self, id: usize, chunk: Vec<u8>) {
        let Some(stream) = self.streams.get_mut(id).and_then(Option::as_mut) else { return };
        if chunk.is_empty() {
            return;
        }
        stream.pending += chunk.len();
        stream.total += chunk.len() as u64;
        match stream.chunks.back_mut() {
            Some(back) if chunk.len() < SMALL_CHUNK_BYTES && back.capacity() - back.len() >= chunk.len() => {
                back.extend_from_slice(&chunk);
            }
            _ if chunk.len() < SMALL_CHUNK_BYTES => {
                let mut gathered = Vec::with_capacity(SMALL_CHUNK_BYTES);
                gathered.extend_from_slice(&chunk);
                stream.chunks.push_back(gathered);
            }
            _ => stream.chunks.push_back(chunk),
        }
        if self.kernel == Kernel::Scalar {
            self.run(id, 0);
        } else if stream.pending >= HOLD_BYTES {
            // Only half: the other streams hold up to HOLD_BYTES too, so lanes stay busy
            // through most of the run if each one leaves the rest for the next.
            self.run(id, HOLD_BYTES / 2);
        }
    }

    /// Hashes what stream `id` holds and returns its digest; the stream is gone after.
    pub fn finish(&mut self, id: usize) -> [u8; 16] {
        self.run(id, 0);
        let stream = self.take(id).unwrap_or(Stream { state: INIT, ..Stream::default() });
        finish_digest(stream.state, &stream.tail(), stream.total)
    }

    /// Forgets stream `id` and the data it holds.
    pub fn close(&mut self, id: usize) -> bool {
        self.take(id).is_some()
    }

    fn take(&mut self, id: usize) -> Option<Stream> {
        let stream = self.streams.get_mut(id)?.take()?;
        self.free.push(id);
        Some(stream)
    }

    /// Hashes whole blocks of stream `target` until it holds at most `keep` bytes (or under one
    /// block), with other streams' whole blocks in the lanes it leaves free: first those that
    /// hold the most.
    fn run(&mut self, target: usize, keep: usize) {
        let more = |b: &Self| b.pending(target) >= 64 && b.pending(target) > keep;
        if !more(self) {
            return;
        }
        let mut waiting: Vec<usize> = match self.kernel != Kernel::Scalar {
            true => (0..self.streams.len()).filter(|&id| id != target && self.pending(id) >= 64).collect(),
            false => Vec::new(),
        };
        waiting.sort_by_key(|&id| std::cmp::Reverse(self.pending(id)));
        let mut waiting = waiting.into_iter();

        let mut state: LaneState = [[0; LANES]; 4];
        let mut lanes: [Option<usize>; LANES] = [None; LANES];
        lanes[0] = Some(target);
        for slot in lanes.iter_mut().skip(1) {
            *slot = waiting.next();
        }
        for (l, id) in lanes.iter().enumerate() {
            if let Some(id) = id {
                self.load_lane(&mut state, l, *id);
            }
        }
        let mut spans = [[0u8; 64]; LANES];
        while more(self) {
            let blocks = self.step(&mut state, &lanes, &mut spans, (self.pending(target) - keep).div_ceil(64));
            if blocks == 0 {
                break;
            }
            self.rotate_lanes(&mut state, &mut lanes, &mut waiting, blocks * 64, target);
        }
        for (l, id) in lanes.iter().enumerate() {
            if let Some(id) = id {
                self.store_lane(&state, l, *id);
            }
        }
    }

    /// Hashes as many whole blocks as every busy lane holds (at most `target_blocks`), each
    /// lane reading its stream in place or, when its next block spans two chunks, from a copy
    /// in `spans`. Returns how many blocks each busy lane hashed.
    fn step(
        &mut self,
        state: &mut LaneState,
        lanes: &[Option<usize>; LANES],
        spans: &mut [[u8; 64]; LANES],
        target_blocks: usize,
    ) -> usize {
        for (l, id) in lanes.iter().enumerate() {
            if let Some(stream) = id.and_then(|id| self.streams[id].as_ref()) {
                if stream.contiguous().is_none() {
                    stream.gather_block(&mut spans[l]);
                }
            }
        }
        let mut inputs: [&[u8]; LANES] = [&[]; LANES];
        for (l, id) in lanes.iter().enumerate() {
            if let Some(stream) = id.and_then(|id| self.streams[id].as_ref()) {
                inputs[l] = stream.contiguous().unwrap_or(&spans[l]);
            }
        }
        let blocks =
            inputs.iter().filter(|i| !i.is_empty()).map(|i| i.len() / 64).min().unwrap_or(0).min(target_blocks);
        if blocks == 0 {
            return 0;
        }
        for input in inputs.iter_mut().filter(|i| !i.is_empty()) {
            *input = &input[..blocks * 64];
        }
        compress_lanes(self.kernel, state, &inputs, blocks);
        let busy = inputs.iter().filter(|i| !i.is_empty()).count() as u64;
        self.steps += blocks as u64;
        self.busy_lane_steps += busy * blocks as u64;
        STEPS.fetch_add(blocks as u64, Relaxed);
        BLOCKS.fetch_add(busy * blocks as u64, Relaxed);
        blocks
    }

    /// Consumes what each lane hashed; a lane whose stream (other than `target`) has less
    /// than a block left is stored and handed to the next waiting stream.
    fn rotate_lanes(
        &mut self,
        state: &mut LaneState,
        lanes: &mut [Option<usize>; LANES],
        waiting: &mut impl Iterator<Item = usize>,
        hashed: usize,
        target: usize,
    ) {
        for (l, slot) in lanes.iter_mut().enumerate() {
            let Some(id) = *slot else { continue };
            let Some(stream) = self.streams[id].as_mut() else { continue };
            stream.consume(hashed);
            if stream.pending < 64 && id != target {
                self.store_lane(state, l, id);
                *slot = waiting.next();
                if let Some(next) = *slot {
                    self.load_lane(state, l, next);
                }
            }
        }
    }

    fn pending(&self, id: usize) -> usize {
        self.streams.get(id).and_then(Option::as_ref).map_or(0, |s| s.pending)
    }

    fn load_lane(&self, state: &mut LaneState, lane: usize, id: usize) {
        if let Some(stream) = self.streams[id].as_ref() {
            for (w, word) in stream.state.iter().enumerate() {
                state[w][lane] = *word;
            }
        }
    }

    fn store_lane(&mut self, state: &LaneState, lane: usize, id: usize) {
        if let Some(stream) = self.streams[id].as_mut() {
            for (w, word) in stream.state.iter_mut().enumerate() {
                *word = state[w][lane];
            }
        }
    }
}

/// A core's batcher, shared by the bodies of that core (one per executor, in its context).
pub type CoreBatcher = Rc<RefCell<Batcher>>;

/// A batcher for one core's bodies, hashing with `kernel`.
pub fn core_batcher(kernel: Kernel) -> CoreBatcher {
    Rc::new(RefCell::new(Batcher::new(kernel)))
}

/// The MD5 of one body, hashed with the other bodies of its core. Not `Send`: it lives in
/// its core's batcher.
pub struct Md5Stream {
    id: usize,
    batcher: CoreBatcher,
}

impl Md5Stream {
    pub fn new(batcher: &CoreBatcher) -> Self {
        Self { id: batcher.borrow_mut().open(), batcher: batcher.clone() }
    }

    /// Adds the next piece of the body. The chunk is held until it is hashed.
    pub fn update(&mut self, chunk: Vec<u8>) {
        self.batcher.borrow_mut().append(self.id, chunk);
    }

    pub fn finish(self) -> [u8; 16] {
        // The stream is gone from the batcher after this: the `close` of `drop` finds nothing.
        self.batcher.borrow_mut().finish(self.id)
    }
}

impl Drop for Md5Stream {
    fn drop(&mut self) {
        self.batcher.borrow_mut().close(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};
    use proptest::prelude::*;

    fn reference(data: &[u8]) -> [u8; 16] {
        Md5::digest(data).into()
    }

    /// Bytes that differ with the position and the seed (multiplicative hashing of both).
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        (0..len as u64).map(|i| ((i ^ seed << 32).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect()
    }

    #[test]
    fn rfc_1321_test_suite() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        let batcher = CoreBatcher::default();
        for (input, hex) in cases {
            let mut s = Md5Stream::new(&batcher);
            s.update(input.to_vec());
            let got: String = s.finish().iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, hex, "{:?}", String::from_utf8_lossy(input));
        }
    }

    /// Every lane kernel this CPU can run, against the scalar one. Where the CPU has neither
    /// AVX2 nor AVX-512 nothing is compared; CI's machines have both.
    #[test]
    fn the_lane_kernels_match_one_lane_at_a_time() {
        let data: Vec<Vec<u8>> = (0..LANES).map(|l| bytes(64 * 5, l as u64)).collect();
        let mut start: LaneState = [[0; LANES]; 4];
        for (w, row) in start.iter_mut().enumerate() {
            for (l, word) in row.iter_mut().enumerate() {
                *word = INIT[w] ^ (l as u32 * 0x0101_0101);
            }
        }
        // Which lanes are busy: idle lanes must leave the busy ones alone, and a group of
        // eight idle lanes may be skipped (AVX2) without touching the other group.
        type Busy = fn(usize) -> bool;
        let patterns: [(&str, Busy); 4] = [
            ("every third lane idle", |l| l % 3 != 1),
            ("lanes 0..8 only, some idle", |l| l < 8 && l != 5),
            ("lanes 8..16 only", |l| l >= 8),
            ("lane 11 alone", |l| l == 11),
        ];
        for (pattern, busy) in patterns {
            let mut lanes: [&[u8]; LANES] = [&[]; LANES];
            for (l, d) in data.iter().enumerate().filter(|(l, _)| busy(*l)) {
                lanes[l] = d;
            }
            let mut scalar = start;
            compress_lanes_scalar(&mut scalar, &lanes, 5);
            for kernel in Kernel::ALL.into_iter().filter(|k| *k != Kernel::Scalar && k.available()) {
                let mut simd = start;
                compress_lanes(kernel, &mut simd, &lanes, 5);
                for l in (0..LANES).filter(|l| busy(*l)) {
                    for w in 0..4 {
                        assert_eq!(simd[w][l], scalar[w][l], "{pattern}: lane {l} word {w} ({})", kernel.name());
                    }
                }
            }
        }
    }

    #[test]
    fn streams_finished_in_any_order_keep_their_own_digest() {
        // A lane kernel batches streams even where the CPU cannot run it (scalar lanes then).
        let mut b = Batcher::new(Kernel::Avx2);
        let bodies: Vec<Vec<u8>> = (0..20).map(|i| bytes(HOLD_BYTES + 1000 * i + i, i as u64)).collect();
        let ids: Vec<usize> = bodies.iter().map(|_| b.open()).collect();
        // Round robin, as concurrent PUTs arrive.
        let mut pieces: Vec<_> = bodies.iter().enumerate().map(|(i, body)| body.chunks(70_001 + i)).collect();
        let mut more = true;
        while more {
            more = false;
            for (i, p) in pieces.iter_mut().enumerate() {
                if let Some(piece) = p.next() {
                    b.append(ids[i], piece.to_vec());
                    more = true;
                }
            }
        }
        assert!(b.busy_lane_steps > b.steps, "batches had one lane busy: nothing ran together");
        for i in (0..bodies.len()).rev() {
            assert_eq!(b.finish(ids[i]), reference(&bodies[i]), "body {i}");
        }
        assert!(b.streams.iter().all(Option::is_none));
    }

    #[test]
    fn a_dropped_stream_frees_its_slot_and_data() {
        let mut b = Batcher::default();
        let id = b.open();
        b.append(id, vec![1; 1000]);
        assert!(b.close(id));
        assert_eq!(b.open(), id);
        assert_eq!(b.finish(id), reference(b""));
    }

    #[test]
    fn a_body_in_tiny_chunks_is_gathered_while_it_waits() {
        let mut b = Batcher::new(Kernel::Avx2);
        let id = b.open();
        let body = bytes(300_000, 7);
        for piece in body.chunks(3) {
            b.append(id, piece.to_vec());
        }
        let held = b.streams[id].as_ref().map_or(0, |s| s.chunks.len());
        assert!(held <= 300_000 / SMALL_CHUNK_BYTES + 1, "{held} buffers for 300,000 bytes");
        assert_eq!(b.finish(id), reference(&body));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any interleaving of any chunking of several bodies gives each body's MD5.
        #[test]
        fn interleaved_chunked_bodies_match_md5(
            bodies in prop::collection::vec((0usize..300_000, any::<u64>()), 1..24),
            cuts in prop::collection::vec(1usize..100_000, 1..40),
            order in prop::collection::vec(any::<prop::sample::Index>(), 1..400),
            kernel in prop::sample::select(Kernel::ALL.to_vec()),
        ) {
            let data: Vec<Vec<u8>> = bodies.iter().map(|&(len, seed)| bytes(len, seed)).collect();
            let mut b = Batcher::new(kernel);
            let ids: Vec<usize> = data.iter().map(|_| b.open()).collect();
            let mut pos = vec![0usize; data.len()];
            let mut turn = 0;
            for pick in order.iter().cycle().take(10_000) {
                let i = pick.index(data.len());
                if pos[i] < data[i].len() {
                    let len = cuts[turn % cuts.len()].min(data[i].len() - pos[i]);
                    b.append(ids[i], data[i][pos[i]..pos[i] + len].to_vec());
                    pos[i] += len;
                    turn += 1;
                }
            }
            for (i, d) in data.iter().enumerate() {
                if pos[i] < d.len() {
                    b.append(ids[i], d[pos[i]..].to_vec());
                }
                prop_assert_eq!(b.finish(ids[i]), reference(d));
            }
        }
    }
}
