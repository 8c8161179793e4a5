//! Object, part and upload metadata, and the small binary codec used in the metadata log.

use crate::error::{EngineError, Result};

/// Where an object's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataLoc {
    /// Small object: its bytes sit inside a record of the metadata log `wal` (the same offset
    /// on every drive), replicated to every drive and covered by the record's checksum.
    Inline { wal: u16, rec_off: u64, rec_len: u32, data_off: u32, data_len: u32 },
    /// Large object: one erasure-coded shard file per part on each drive.
    Parts(Vec<PartLoc>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartLoc {
    pub file_id: u128,
    pub size: u64,
}

/// Everything the S3 layer stores with an object. The engine does not interpret headers (a
/// listing reports the value of one header when its caller names it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// The ETag without quotes: hex MD5, or hex MD5-of-MD5s followed by `-N` for multipart.
    pub etag: String,
    pub mtime_ms: i64,
    /// Standard headers (content-type, ...) and `x-amz-meta-*`, lower-case names.
    pub headers: Vec<(String, String)>,
    /// (algorithm, base64 value) of a full-object or composite S3 checksum.
    pub checksum: Option<(String, String)>,
    pub tags: Vec<(String, String)>,
    /// Per-part (size, etag) for multipart objects; empty for single PUTs.
    pub part_sizes: Vec<u64>,
    pub data: DataLoc,
}

/// A stored part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartMeta {
    pub file_id: u128,
    pub size: u64,
    pub etag: String,
    pub mtime_ms: i64,
    pub checksum: Option<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadMeta {
    pub initiated_ms: i64,
    pub headers: Vec<(String, String)>,
    pub checksum_algorithm: Option<String>,
    pub parts: std::collections::BTreeMap<u32, PartMeta>,
}

/// A bucket: when it was created, and its configuration documents by name (for example
/// "encryption": the S3 layer's canonical form of a PutBucketEncryption request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketInfo {
    pub created_ms: i64,
    pub config: std::collections::BTreeMap<String, String>,
}

impl BucketInfo {
    pub fn encode(&self, enc: &mut Enc) {
        enc.i64(self.created_ms);
        let pairs: Vec<(String, String)> = self.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        enc.pairs(&pairs);
    }
    pub fn decode(dec: &mut Dec) -> Result<BucketInfo> {
        Ok(BucketInfo { created_ms: dec.i64()?, config: dec.pairs()?.into_iter().collect() })
    }
}

/// Little-endian writer for log records.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    pub fn pairs(&mut self, v: &[(String, String)]) {
        self.u32(v.len() as u32);
        for (a, b) in v {
            self.str(a);
            self.str(b);
        }
    }
    pub fn opt_pair(&mut self, v: &Option<(String, String)>) {
        match v {
            None => self.u8(0),
            Some((a, b)) => {
                self.u8(1);
                self.str(a);
                self.str(b);
            }
        }
    }
}

/// Reader matching `Enc`; every read is bounds-checked and fails as `Corrupt`.
pub struct Dec<'a> {
    buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.buf.len());
        let Some(end) = end else {
            return Err(EngineError::Corrupt(format!("record truncated at byte {}", self.pos)));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn u128(&mut self) -> Result<u128> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    pub fn str(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| EngineError::Corrupt("invalid utf-8".into()))
    }
    pub fn pairs(&mut self) -> Result<Vec<(String, String)>> {
        let n = self.u32()? as usize;
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            out.push((self.str()?, self.str()?));
        }
        Ok(out)
    }
    pub fn opt_pair(&mut self) -> Result<Option<(String, String)>> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some((self.str()?, self.str()?)),
        })
    }
}

const LOC_INLINE_HERE: u8 = 0;
const LOC_INLINE_REF: u8 = 1;
const LOC_PARTS: u8 = 2;

impl ObjectMeta {
    /// An object of `size` bytes in no data file, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(size: u64) -> ObjectMeta {
        ObjectMeta {
            size,
            etag: "e".into(),
            mtime_ms: 0,
            headers: vec![],
            checksum: None,
            tags: vec![],
            part_sizes: vec![],
            data: DataLoc::Parts(vec![]),
        }
    }

    /// Encodes the metadata. For `inline_here` the caller appends the data bytes right after
    /// (as `Enc::bytes`) and the location is filled in when the record's place is known.
    pub fn encode(&self, enc: &mut Enc, inline_here: bool) {
        enc.u64(self.size);
        enc.str(&self.etag);
        enc.i64(self.mtime_ms);
        enc.pairs(&self.headers);
        enc.opt_pair(&self.checksum);
        enc.pairs(&self.tags);
        enc.u32(self.part_sizes.len() as u32);
        for size in &self.part_sizes {
            enc.u64(*size);
        }
        match (&self.data, inline_here) {
            (_, true) => enc.u8(LOC_INLINE_HERE),
            (DataLoc::Inline { wal, rec_off, rec_len, data_off, data_len }, false) => {
                enc.u8(LOC_INLINE_REF);
                enc.u16(*wal);
                enc.u64(*rec_off);
                enc.u32(*rec_len);
                enc.u32(*data_off);
                enc.u32(*data_len);
            }
            (DataLoc::Parts(parts), false) => {
                enc.u8(LOC_PARTS);
                enc.u32(parts.len() as u32);
                for part in parts {
                    enc.u128(part.file_id);
                    enc.u64(part.size);
                }
            }
        }
    }

    /// Decodes metadata; an inline-here location reads the data length and skips the data,
    /// returning its offset within the payload so the caller can build the location.
    pub fn decode(dec: &mut Dec) -> Result<(ObjectMeta, Option<(usize, usize)>)> {
        let size = dec.u64()?;
        let etag = dec.str()?;
        let mtime_ms = dec.i64()?;
        let headers = dec.pairs()?;
        let checksum = dec.opt_pair()?;
        let tags = dec.pairs()?;
        let nparts = dec.u32()? as usize;
        let mut part_sizes = Vec::with_capacity(nparts.min(10_000));
        for _ in 0..nparts {
            part_sizes.push(dec.u64()?);
        }
        let mut inline = None;
        let data = match dec.u8()? {
            LOC_INLINE_HERE => {
                let len = dec.u32()? as usize;
                let off = dec.pos;
                dec.take(len)?;
                inline = Some((off, len));
                DataLoc::Inline { wal: 0, rec_off: 0, rec_len: 0, data_off: off as u32, data_len: len as u32 }
            }
            LOC_INLINE_REF => DataLoc::Inline {
                wal: dec.u16()?,
                rec_off: dec.u64()?,
                rec_len: dec.u32()?,
                data_off: dec.u32()?,
                data_len: dec.u32()?,
            },
            LOC_PARTS => {
                let n = dec.u32()? as usize;
                let mut parts = Vec::with_capacity(n.min(10_000));
                for _ in 0..n {
                    parts.push(PartLoc { file_id: dec.u128()?, size: dec.u64()? });
                }
                DataLoc::Parts(parts)
            }
            other => return Err(EngineError::Corrupt(format!("unknown data location kind {other}"))),
        };
        Ok((ObjectMeta { size, etag, mtime_ms, headers, checksum, tags, part_sizes, data }, inline))
    }

    /// Part files this object references (empty for inline objects).
    pub fn file_ids(&self) -> Vec<u128> {
        match &self.data {
            DataLoc::Parts(parts) => parts.iter().map(|p| p.file_id).collect(),
            DataLoc::Inline { .. } => Vec::new(),
        }
    }
}

impl UploadMeta {
    /// Encodes everything but the parts (the log records parts one by one).
    pub fn encode_head(&self, enc: &mut Enc) {
        enc.i64(self.initiated_ms);
        enc.pairs(&self.headers);
        enc.str(self.checksum_algorithm.as_deref().unwrap_or(""));
    }

    /// Decodes what `encode_head` wrote; the upload has no parts yet.
    pub fn decode_head(dec: &mut Dec) -> Result<UploadMeta> {
        let initiated_ms = dec.i64()?;
        let headers = dec.pairs()?;
        let algo = dec.str()?;
        Ok(UploadMeta {
            initiated_ms,
            headers,
            checksum_algorithm: (!algo.is_empty()).then_some(algo),
            parts: Default::default(),
        })
    }
}

impl PartMeta {
    pub fn encode(&self, enc: &mut Enc) {
        enc.u128(self.file_id);
        enc.u64(self.size);
        enc.str(&self.etag);
        enc.i64(self.mtime_ms);
        enc.opt_pair(&self.checksum);
    }
    pub fn decode(dec: &mut Dec) -> Result<PartMeta> {
        Ok(PartMeta {
            file_id: dec.u128()?,
            size: dec.u64()?,
            etag: dec.str()?,
            mtime_ms: dec.i64()?,
            checksum: dec.opt_pair()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ObjectMeta {
        ObjectMeta {
            size: 5,
            etag: "0123456789abcdef0123456789abcdef".into(),
            mtime_ms: 1,
            headers: vec![("content-type".into(), "binary/octet-stream".into())],
            checksum: Some(("CRC32".into(), "AAAAAA==".into())),
            tags: vec![],
            part_sizes: vec![],
            data: DataLoc::Inline { wal: 0, rec_off: 9, rec_len: 100, data_off: 50, data_len: 5 },
        }
    }

    #[test]
    fn meta_round_trips_through_the_codec() {
        let meta = ObjectMeta { data: DataLoc::Parts(vec![PartLoc { file_id: u128::MAX, size: 3 }]), ..sample() };
        let mut enc = Enc::default();
        meta.encode(&mut enc, false);
        let (back, inline) = ObjectMeta::decode(&mut Dec::new(&enc.0)).unwrap();
        assert_eq!(back, meta);
        assert!(inline.is_none());
        // Every truncation is an error, never a panic.
        for cut in 0..enc.0.len() {
            assert!(ObjectMeta::decode(&mut Dec::new(&enc.0[..cut])).is_err());
        }
    }

    /// The fixed part of one index entry, for ARCHITECTURE.md's RAM-per-object figure.
    #[test]
    fn index_entry_size() {
        let fixed = std::mem::size_of::<ObjectMeta>() + std::mem::size_of::<(String, String)>();
        let m = sample();
        let heap = m.etag.capacity()
            + m.headers.iter().map(|(a, b)| 48 + a.capacity() + b.capacity()).sum::<usize>()
            + m.checksum.as_ref().map(|(a, b)| a.capacity() + b.capacity()).unwrap_or(0);
        println!("ObjectMeta + key tuple: {fixed} bytes fixed, {heap} bytes heap for a typical small object");
        assert!(fixed <= 256, "index entry grew to {fixed} bytes");
    }
}
