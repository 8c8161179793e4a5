//! The manifest of one core's segmented log (format 2; docs/design/metadata-at-scale.md §2):
//! which segments are live, which one takes new records, and the generation that orders
//! manifests. Each drive keeps two preallocated slots, `MANIFEST.a` and `MANIFEST.b`;
//! generation g is written to slot g % 2, so a write always replaces the older slot and a
//! torn write leaves the newer one intact. Start-up reads both slots on every drive and
//! takes the valid one with the highest generation: writes reach a quorum and start-up
//! reads at least n − m drives, so it always sees the newest acknowledged manifest.
//!
//! A slot is `[magic u32][body length u32][xxh3-64 of body][body][zeros]`, always
//! `SLOT_BYTES` long, so rewriting it never allocates space: an update works on a full
//! drive, which is when compaction most needs it.
//!
//! This file is the codec and the choice of the newest manifest; the commit loop's writes
//! and start-up's reads come with the segments (stage 1a).

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{EngineError, Result};
use crate::meta::{Dec, Enc};

const MAGIC: u32 = 0x464D_4546; // "FEMF"
const HEADER_BYTES: usize = 16;
/// Every slot is this long (preallocated, rewritten in place).
pub const SLOT_BYTES: usize = 256 << 10;
/// Bytes one segment takes in the body.
const ENTRY_BYTES: usize = 8 + 1 + 8 + 8;
/// Bytes of the body before the entries.
const BODY_HEAD_BYTES: usize = 2 + 8 + 8 + 8 + 4;
/// The most segments one manifest can list (about 10,000).
pub const SEGMENTS_MAX: usize = (SLOT_BYTES - HEADER_BYTES - BODY_HEAD_BYTES) / ENTRY_BYTES;
// With compacted segments of up to 256 MiB, 10,000 is a log of about 2.5 TB per core.
const _: () = assert!(SEGMENTS_MAX >= 10_000);

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// Appended by the commit loop, batch by batch.
    Wal,
    /// Written whole by the compactor, records clustered by partition.
    Compacted,
}

/// One live segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentEntry {
    pub id: u64,
    pub kind: SegmentKind,
    /// The lowest original log position (`birth`) of any record in it: the tombstone rule
    /// of compaction compares these.
    pub birth_min: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The core's log this manifest belongs to.
    pub log: u16,
    pub generation: u64,
    /// The cluster's fencing token of the owner that wrote it (0 on a single node): a drive
    /// refuses a manifest older owners write.
    pub fence: u64,
    /// The WAL segment that takes new records.
    pub active: u64,
    pub segments: Vec<SegmentEntry>,
}

/// Which of the two slot files generation `generation` is written to.
pub fn slot_name(generation: u64) -> &'static str {
    if generation.is_multiple_of(2) {
        "MANIFEST.a"
    } else {
        "MANIFEST.b"
    }
}

impl Manifest {
    /// The slot's bytes, `SLOT_BYTES` long. Refuses more segments than a slot holds.
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.segments.len() > SEGMENTS_MAX {
            let n = self.segments.len();
            return Err(EngineError::Corrupt(format!("{n} segments do not fit a manifest ({SEGMENTS_MAX} at most)")));
        }
        assert!(self.segments.iter().any(|s| s.id == self.active), "the active segment is listed");
        let mut body = Enc::default();
        body.u16(self.log);
        body.u64(self.generation);
        body.u64(self.fence);
        body.u64(self.active);
        body.u32(self.segments.len() as u32);
        for s in &self.segments {
            body.u64(s.id);
            body.u8(match s.kind {
                SegmentKind::Wal => 1,
                SegmentKind::Compacted => 2,
            });
            body.u64(s.birth_min);
            body.u64(s.bytes);
        }
        let body = body.0;
        let mut slot = Vec::with_capacity(SLOT_BYTES);
        slot.extend_from_slice(&MAGIC.to_le_bytes());
        slot.extend_from_slice(&(body.len() as u32).to_le_bytes());
        slot.extend_from_slice(&xxh3_64(&body).to_le_bytes());
        slot.extend_from_slice(&body);
        slot.resize(SLOT_BYTES, 0);
        debug_assert_eq!(Manifest::decode(&slot).as_ref(), Some(self), "a manifest that does not read back");
        Ok(slot)
    }

    /// The manifest in a slot; None when the slot is empty, torn or corrupt.
    pub fn decode(slot: &[u8]) -> Option<Manifest> {
        let header = slot.get(..HEADER_BYTES)?;
        let magic = u32::from_le_bytes(header[0..4].try_into().ok()?);
        let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
        let sum = u64::from_le_bytes(header[8..16].try_into().ok()?);
        let body = slot.get(HEADER_BYTES..HEADER_BYTES.checked_add(len)?)?;
        if magic != MAGIC || xxh3_64(body) != sum {
            return None;
        }
        decode_body(body).ok()
    }
}

fn decode_body(body: &[u8]) -> Result<Manifest> {
    let mut dec = Dec::new(body);
    let (log, generation, fence, active) = (dec.u16()?, dec.u64()?, dec.u64()?, dec.u64()?);
    let count = dec.u32()? as usize;
    if count > SEGMENTS_MAX {
        return Err(EngineError::Corrupt(format!("a manifest lists {count} segments")));
    }
    let mut segments = Vec::with_capacity(count);
    for _ in 0..count {
        let id = dec.u64()?;
        let kind = match dec.u8()? {
            1 => SegmentKind::Wal,
            2 => SegmentKind::Compacted,
            other => return Err(EngineError::Corrupt(format!("segment kind {other}"))),
        };
        segments.push(SegmentEntry { id, kind, birth_min: dec.u64()?, bytes: dec.u64()? });
    }
    Ok(Manifest { log, generation, fence, active, segments })
}

/// The newest valid manifest of log `log` among `slots` (both slots of every drive read):
/// the highest generation wins. Slots of another log are ignored. Two valid slots with the
/// same generation must be the same manifest; if not, the log is corrupt.
pub fn newest<'a>(log: u16, slots: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<Manifest>> {
    let mut best: Option<Manifest> = None;
    for m in slots.into_iter().filter_map(Manifest::decode).filter(|m| m.log == log) {
        match &best {
            Some(b) if b.generation > m.generation => {}
            Some(b) if b.generation == m.generation && *b != m => {
                let g = m.generation;
                return Err(EngineError::Corrupt(format!("log {log}: two different manifests of generation {g}")));
            }
            _ => best = Some(m),
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(generation: u64, segments: u64) -> Manifest {
        let entry = |id| SegmentEntry { id, kind: SegmentKind::Wal, birth_min: id << 32, bytes: 4096 };
        Manifest { log: 1, generation, fence: 0, active: segments, segments: (1..=segments).map(entry).collect() }
    }

    #[test]
    fn a_manifest_reads_back_and_fills_its_slot() {
        let mut m = manifest(7, 3);
        m.segments[0].kind = SegmentKind::Compacted;
        let slot = m.encode().unwrap();
        assert_eq!(slot.len(), SLOT_BYTES);
        assert_eq!(Manifest::decode(&slot), Some(m));
        assert_eq!((slot_name(6), slot_name(7)), ("MANIFEST.a", "MANIFEST.b"));
    }

    #[test]
    fn empty_corrupt_and_torn_slots_read_as_none() {
        let old = manifest(4, 2).encode().unwrap();
        let new = manifest(6, 40).encode().unwrap();
        assert_eq!(Manifest::decode(&vec![0u8; SLOT_BYTES]), None);
        assert_eq!(Manifest::decode(&new[..10]), None);
        for at in [0, 5, 9, HEADER_BYTES + 3, HEADER_BYTES + 200] {
            let mut flipped = new.clone();
            flipped[at] ^= 0x40;
            assert_eq!(Manifest::decode(&flipped), None, "a flipped bit at {at}");
        }
        // A write torn after 4 KiB: the new manifest's start over the old one's rest.
        let torn = [&new[..4096], &old[4096..]].concat();
        assert_eq!(Manifest::decode(&torn), Some(manifest(6, 40)), "the body fits in the first 4 KiB");
        let long = manifest(8, 400).encode().unwrap();
        let torn = [&long[..4096], &old[4096..]].concat();
        assert_eq!(Manifest::decode(&torn), None, "a body cut by the tear");
    }

    #[test]
    fn the_highest_valid_generation_wins_across_drives() {
        let (g4, g5, g6) = (manifest(4, 1).encode().unwrap(), manifest(5, 2).encode().unwrap(), manifest(6, 3));
        let g6_bytes = g6.encode().unwrap();
        let mut torn = g6_bytes.clone();
        torn[HEADER_BYTES] ^= 1;
        // Drive 1 wrote g6 and has g5 in its other slot; drive 2 was offline (g4, g5); on
        // drive 3 the write of g6 was torn.
        let slots: Vec<&[u8]> = vec![&g6_bytes, &g5, &g4, &g5, &torn, &g5];
        assert_eq!(newest(1, slots).unwrap(), Some(g6));
        let stale_only: Vec<&[u8]> = vec![&g4, &g5];
        assert_eq!(newest(1, stale_only).unwrap().map(|m| m.generation), Some(5));
        let other_log = Manifest { log: 2, ..manifest(9, 1) }.encode().unwrap();
        assert_eq!(newest(1, [&other_log[..], &g4[..]]).unwrap().map(|m| m.generation), Some(4));
        assert_eq!(newest(1, std::iter::empty()).unwrap(), None);
    }

    #[test]
    fn two_different_manifests_of_one_generation_are_corruption() {
        let a = manifest(3, 1).encode().unwrap();
        let b = manifest(3, 2).encode().unwrap();
        assert!(newest(1, [&a[..], &b[..]]).is_err());
        assert!(newest(1, [&a[..], &a[..]]).is_ok());
    }

    #[test]
    fn a_manifest_holds_ten_thousand_segments_and_refuses_more() {
        let full = manifest(1, SEGMENTS_MAX as u64);
        assert_eq!(Manifest::decode(&full.encode().unwrap()), Some(full));
        assert!(manifest(1, SEGMENTS_MAX as u64 + 1).encode().is_err());
    }
}
