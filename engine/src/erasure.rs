//! Reed-Solomon erasure coding of one block into k data + m parity shards, and the on-disk
//! frame of a shard: `[shard bytes][xxh3-64 of the shard][zero padding to 4 KiB]`.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use xxhash_rust::xxh3::xxh3_64;

use crate::aligned::{self, round_up, AlignedBuf, IO_ALIGN_BYTES};
use crate::error::{EngineError, Result};

/// reed-solomon-simd needs shard sizes that are a multiple of 2; 64 keeps its SIMD paths fast.
const SHARD_ALIGN_BYTES: usize = 64;
const FRAME_CHECKSUM_BYTES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub data: usize,
    pub parity: usize,
}

impl Layout {
    pub fn total(&self) -> usize {
        self.data + self.parity
    }

    /// Bytes of each shard for a block of `block_len` bytes.
    pub fn shard_size(&self, block_len: usize) -> usize {
        round_up(block_len.div_ceil(self.data).max(1), SHARD_ALIGN_BYTES)
    }

    /// Bytes one shard occupies on disk, including its checksum and alignment padding.
    pub fn frame_size(&self, block_len: usize) -> usize {
        round_up(self.shard_size(block_len) + FRAME_CHECKSUM_BYTES, IO_ALIGN_BYTES)
    }

    /// The drive that stores shard `shard` of the object with this rotation.
    pub fn drive_of(&self, shard: usize, rotation: usize) -> usize {
        (shard + rotation) % self.total()
    }
}

/// Writes a shard's checksum right after it, then zeroes the padding (pooled frames hold
/// stale bytes; nothing stale may reach the disk).
fn seal_frame(frame: &mut [u8], shard_size: usize) {
    let sum = xxh3_64(&frame[..shard_size]);
    frame[shard_size..shard_size + FRAME_CHECKSUM_BYTES].copy_from_slice(&sum.to_le_bytes());
    frame[shard_size + FRAME_CHECKSUM_BYTES..].fill(0);
}

/// Checks a frame read from disk; false means the shard must not be used.
pub fn frame_is_valid(frame: &[u8], shard_size: usize) -> bool {
    if frame.len() < shard_size + FRAME_CHECKSUM_BYTES {
        return false;
    }
    let stored = &frame[shard_size..shard_size + FRAME_CHECKSUM_BYTES];
    xxh3_64(&frame[..shard_size]).to_le_bytes() == stored
}

/// Per-core erasure coder; keeps the codec's work buffers between blocks.
pub struct Coder {
    layout: Layout,
    encoder: Option<ReedSolomonEncoder>,
    decoder: Option<ReedSolomonDecoder>,
}

impl Coder {
    pub fn new(layout: Layout) -> Self {
        Self { layout, encoder: None, decoder: None }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Encodes `block` into `layout.total()` sealed frames (index = shard number).
    pub fn encode(&mut self, block: &[u8]) -> Result<Vec<AlignedBuf>> {
        let shard_size = self.layout.shard_size(block.len());
        let frame_size = self.layout.frame_size(block.len());
        let mut frames: Vec<AlignedBuf> = (0..self.layout.data).map(|_| aligned::take(frame_size)).collect();
        for (i, frame) in frames.iter_mut().enumerate() {
            let start = (i * shard_size).min(block.len());
            let end = ((i + 1) * shard_size).min(block.len());
            frame.as_mut_slice()[..end - start].copy_from_slice(&block[start..end]);
        }
        self.encode_frames(frames, block.len())
    }

    /// Completes the data frames of a block of `block_len` bytes, which already hold it (data
    /// shard i holds bytes `i * shard_size..` of the block, `shard_size` being
    /// `layout.shard_size(block_len)`, in frames of `layout.frame_size(block_len)`), with
    /// the parity frames, and seals every frame. A writer that fills the data frames as bytes
    /// arrive saves `encode`'s copy of the block.
    pub fn encode_frames(&mut self, mut frames: Vec<AlignedBuf>, block_len: usize) -> Result<Vec<AlignedBuf>> {
        let Layout { data: k, parity: m } = self.layout;
        let shard_size = self.layout.shard_size(block_len);
        let frame_size = self.layout.frame_size(block_len);
        assert_eq!(frames.len(), k, "encode_frames takes the k data frames");
        for (i, frame) in frames.iter_mut().enumerate() {
            // The last shard of a short block is zero-padded (parity covers the padding).
            let used = block_len.saturating_sub(i * shard_size).min(shard_size);
            frame.as_mut_slice()[used..shard_size].fill(0);
        }
        frames.extend((0..m).map(|_| aligned::take(frame_size)));
        if m > 0 {
            let encoder = match &mut self.encoder {
                Some(encoder) => {
                    encoder.reset(k, m, shard_size).map_err(rs_error)?;
                    encoder
                }
                None => self.encoder.insert(ReedSolomonEncoder::new(k, m, shard_size).map_err(rs_error)?),
            };
            for frame in frames.iter().take(k) {
                encoder.add_original_shard(&frame.as_slice()[..shard_size]).map_err(rs_error)?;
            }
            let result = encoder.encode().map_err(rs_error)?;
            for (frame, recovery) in frames[k..].iter_mut().zip(result.recovery_iter()) {
                frame.as_mut_slice()[..shard_size].copy_from_slice(recovery);
            }
        }
        for frame in &mut frames {
            seal_frame(frame.as_mut_slice(), shard_size);
        }
        Ok(frames)
    }

    /// Rebuilds a block of `block_len` bytes from shards (None = missing or failed checksum).
    /// At least `data` shards must be present.
    pub fn decode(&mut self, shards: &[Option<AlignedBuf>], block_len: usize, out: &mut Vec<u8>) -> Result<()> {
        let Layout { data: k, parity: m } = self.layout;
        let shard_size = self.layout.shard_size(block_len);
        let present = shards.iter().filter(|s| s.is_some()).count();
        if present < k {
            return Err(EngineError::ReadQuorum(format!("{present} of {k} needed shards readable")));
        }
        let data_complete = shards[..k].iter().all(Option::is_some);
        let mut restored: Vec<Option<Vec<u8>>> = vec![None; k];
        if !data_complete {
            let decoder = match &mut self.decoder {
                Some(decoder) => {
                    decoder.reset(k, m, shard_size).map_err(rs_error)?;
                    decoder
                }
                None => self.decoder.insert(ReedSolomonDecoder::new(k, m, shard_size).map_err(rs_error)?),
            };
            for (i, shard) in shards.iter().enumerate() {
                let Some(shard) = shard else { continue };
                let bytes = &shard.as_slice()[..shard_size];
                if i < k {
                    decoder.add_original_shard(i, bytes).map_err(rs_error)?;
                } else {
                    decoder.add_recovery_shard(i - k, bytes).map_err(rs_error)?;
                }
            }
            let result = decoder.decode().map_err(rs_error)?;
            for (i, shard) in result.restored_original_iter() {
                restored[i] = Some(shard.to_vec());
            }
        }
        out.clear();
        out.reserve(block_len);
        for i in 0..k {
            let take = shard_size.min(block_len - out.len());
            let bytes: &[u8] = match (&shards[i], &restored[i]) {
                (Some(frame), _) => &frame.as_slice()[..take],
                (None, Some(shard)) => &shard[..take],
                (None, None) => return Err(EngineError::ReadQuorum(format!("shard {i} not restored"))),
            };
            out.extend_from_slice(bytes);
            if out.len() == block_len {
                break;
            }
        }
        Ok(())
    }
}

fn rs_error(err: reed_solomon_simd::Error) -> EngineError {
    EngineError::Corrupt(format!("reed-solomon: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A writer fills the data frames itself (pooled frames holding stale bytes) and calls
    /// `encode_frames`: the frames must be byte for byte those `encode` makes of the block.
    #[test]
    fn frames_filled_in_place_encode_as_the_block_does() {
        for (k, m) in [(1, 0), (2, 2), (4, 2), (12, 4)] {
            let layout = Layout { data: k, parity: m };
            let mut coder = Coder::new(layout);
            for len in [1usize, 4096, 100_000, 1 << 20] {
                let block = pseudo_random(len, (k * 13 + len) as u64);
                let expected = coder.encode(&block).unwrap();
                let shard_size = layout.shard_size(len);
                let mut frames: Vec<AlignedBuf> = (0..k).map(|_| aligned::take(layout.frame_size(len))).collect();
                for (i, frame) in frames.iter_mut().enumerate() {
                    frame.as_mut_slice().fill(0xa5);
                    let part = &block[(i * shard_size).min(len)..((i + 1) * shard_size).min(len)];
                    frame.as_mut_slice()[..part.len()].copy_from_slice(part);
                }
                let got = coder.encode_frames(frames, len).unwrap();
                assert_eq!(got.len(), expected.len());
                for (shard, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert!(g.as_slice() == e.as_slice(), "{k}+{m}, {len} bytes: shard {shard} differs");
                }
            }
        }
    }

    #[test]
    fn every_loss_pattern_up_to_parity_recovers() {
        for (k, m) in [(1, 0), (1, 1), (2, 1), (2, 2), (4, 2), (3, 3), (8, 4)] {
            let layout = Layout { data: k, parity: m };
            let mut coder = Coder::new(layout);
            for len in [1usize, 63, 4096, 100_000, 1 << 20] {
                let block = pseudo_random(len, (k * 31 + m * 7 + len) as u64);
                let frames = coder.encode(&block).unwrap();
                let shard_size = layout.shard_size(len);
                assert!(frames.iter().all(|f| frame_is_valid(f.as_slice(), shard_size)));
                let n = k + m;
                for mask in 0u32..(1 << n) {
                    if mask.count_ones() as usize > m {
                        continue;
                    }
                    let shards: Vec<Option<AlignedBuf>> = frames
                        .iter()
                        .enumerate()
                        .map(|(i, f)| {
                            (mask & (1 << i) == 0).then(|| {
                                let mut copy = AlignedBuf::zeroed(f.len());
                                copy.as_mut_slice().copy_from_slice(f.as_slice());
                                copy
                            })
                        })
                        .collect();
                    let mut out = Vec::new();
                    coder.decode(&shards, len, &mut out).unwrap();
                    assert_eq!(out, block, "k={k} m={m} len={len} mask={mask:b}");
                }
            }
        }
    }

    #[test]
    fn flipped_bit_fails_checksum_and_too_many_losses_error() {
        let layout = Layout { data: 2, parity: 2 };
        let mut coder = Coder::new(layout);
        let block = pseudo_random(10_000, 5);
        let mut frames = coder.encode(&block).unwrap();
        frames[0].as_mut_slice()[17] ^= 1;
        assert!(!frame_is_valid(frames[0].as_slice(), layout.shard_size(block.len())));
        let shards = vec![None, None, None, Some(frames.pop().unwrap())];
        assert!(coder.decode(&shards, block.len(), &mut Vec::new()).is_err());
    }
}
