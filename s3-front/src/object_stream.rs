//! An object body on its way out (`ObjectStream`): the stored bytes as they are, or
//! decrypted as they go (`DecryptingReader`: per stored file, only the packages a range
//! touches are read and opened). Either way the stored bytes come from the tier mover's
//! `StoredReader`, from the local drives or from the object's tier.

use ferrite_engine::sse::{self as sealing, Cipher, Key};
use ferrite_engine::{DataLoc, EngineError, ObjectMeta};
use ferrite_tiering::stub::{remote_of, stored_parts};
use ferrite_tiering::{Mover, StoredReader};

use crate::encryption::{plain_len, Encryption};

/// One stored file of an encrypted object, in plaintext and ciphertext coordinates.
struct Segment {
    plain_start: u64,
    plain_len: u64,
    cipher_start: u64,
    key: Key,
}

/// The stored files of an encrypted object, each with its key: one for an inline object,
/// else one per part (a single-part object is one part).
fn segments(meta: &ObjectMeta, encryption: &Encryption) -> Vec<Segment> {
    if let (DataLoc::Inline { .. }, None) = (&meta.data, remote_of(meta)) {
        return vec![Segment { plain_start: 0, plain_len: meta.size, cipher_start: 0, key: encryption.key.clone() }];
    }
    let (mut plain, mut cipher) = (0, 0);
    let mut segments = Vec::new();
    for part in stored_parts(meta) {
        let len = plain_len(part.size);
        segments.push(Segment {
            plain_start: plain,
            plain_len: len,
            cipher_start: cipher,
            key: encryption.file_key(part.file_id),
        });
        plain += len;
        cipher += part.size;
    }
    segments
}

/// Reads plaintext [start, end) of an encrypted object: per stored file, only the packages
/// the range touches are read (through the engine's reader, with its read-ahead) and opened.
pub struct DecryptingReader {
    mover: Mover,
    bucket: String,
    key: String,
    meta: ObjectMeta,
    cipher: Cipher,
    segments: Vec<Segment>,
    pos: u64,
    end: u64,
    current: Option<Current>,
    primed: Option<Vec<u8>>,
}

struct Current {
    segment: usize,
    reader: StoredReader,
    next_package: u64,
    /// Ciphertext read but not yet opened: `pending[start..]`.
    pending: Vec<u8>,
    start: usize,
    skip: usize,
    left: u64,
    exhausted: bool,
}

/// Packages opened per chunk handed out (about 1 MiB of plaintext).
const PACKAGES_PER_CHUNK: usize = 16;

impl DecryptingReader {
    fn new(
        mover: &Mover,
        (bucket, key): (&str, &str),
        meta: &ObjectMeta,
        encryption: &Encryption,
        (start, end): (u64, u64),
    ) -> DecryptingReader {
        DecryptingReader {
            mover: mover.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            meta: meta.clone(),
            cipher: encryption.cipher,
            segments: segments(meta, encryption),
            pos: start,
            end,
            current: None,
            primed: None,
        }
    }

    pub async fn next_chunk(&mut self) -> ferrite_tiering::Result<Option<Vec<u8>>> {
        while self.pos < self.end {
            if self.current.is_none() {
                self.current = Some(self.open_segment()?);
            }
            let Some(cur) = self.current.as_mut() else { continue };
            if cur.chunk_ready() {
                let out = cur.open_chunk(&self.segments[cur.segment].key, self.cipher)?;
                self.pos += out.len() as u64;
                if cur.left == 0 {
                    self.current = None;
                }
                if !out.is_empty() {
                    return Ok(Some(out));
                }
                continue;
            }
            if cur.exhausted {
                return Err(EngineError::Corrupt("encrypted object ends early".into()).into());
            }
            match cur.reader.next_chunk().await? {
                Some(chunk) => cur.pending.extend_from_slice(&chunk),
                None => cur.exhausted = true,
            }
        }
        Ok(None)
    }

    fn open_segment(&self) -> ferrite_tiering::Result<Current> {
        let index = self
            .segments
            .iter()
            .position(|s| self.pos < s.plain_start + s.plain_len)
            .ok_or_else(|| EngineError::Corrupt("range beyond the encrypted object".into()))?;
        let segment = &self.segments[index];
        let rel_start = self.pos - segment.plain_start;
        let rel_end = self.end.min(segment.plain_start + segment.plain_len) - segment.plain_start;
        let (first, cs, ce) = sealing::package_span(rel_start, rel_end, segment.plain_len);
        let reader = self.mover.stored_reader(
            &self.bucket,
            &self.key,
            &self.meta,
            segment.cipher_start + cs,
            segment.cipher_start + ce,
        );
        Ok(Current {
            segment: index,
            reader,
            next_package: first,
            pending: Vec::new(),
            start: 0,
            skip: (rel_start - first * sealing::PACKAGE_BYTES as u64) as usize,
            left: rel_end - rel_start,
            exhausted: false,
        })
    }
}

impl Current {
    /// Enough ciphertext is buffered for a chunk: `PACKAGES_PER_CHUNK` packages, or what is
    /// left at the end of the range.
    fn chunk_ready(&self) -> bool {
        let buffered = self.pending.len() - self.start;
        buffered / sealing::SEALED_PACKAGE_BYTES >= PACKAGES_PER_CHUNK || (self.exhausted && buffered > 0)
    }

    /// Opens the next chunk's packages in place and copies their plaintext out once,
    /// leaving out the tags and what the range skips.
    fn open_chunk(&mut self, key: &Key, cipher: Cipher) -> ferrite_tiering::Result<Vec<u8>> {
        let package = sealing::SEALED_PACKAGE_BYTES;
        let buffered = self.pending.len() - self.start;
        let take = if self.exhausted { buffered } else { PACKAGES_PER_CHUNK * package };
        let sealed = &mut self.pending[self.start..self.start + take];
        sealing::open_in_place(key, cipher, self.next_package, sealed)?;
        self.next_package += take.div_ceil(package) as u64;
        let mut out = Vec::with_capacity((take as u64).min(self.left) as usize);
        for plain in sealing::plaintexts(sealed) {
            let from = self.skip.min(plain.len());
            self.skip -= from;
            let n = ((plain.len() - from) as u64).min(self.left) as usize;
            out.extend_from_slice(&plain[from..from + n]);
            self.left -= n as u64;
        }
        self.start += take;
        if self.start == self.pending.len() {
            self.pending.clear();
            self.start = 0;
        } else if self.start > self.pending.len() / 2 {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        Ok(out)
    }
}

/// An object body on its way out: plain, or decrypted as it goes.
pub enum ObjectStream {
    Plain(StoredReader),
    Decrypting(Box<DecryptingReader>),
}

impl ObjectStream {
    pub async fn next_chunk(&mut self) -> ferrite_tiering::Result<Option<ferrite_engine::Chunk>> {
        match self {
            ObjectStream::Plain(r) => r.next_chunk().await,
            ObjectStream::Decrypting(r) => match r.primed.take() {
                Some(chunk) => Ok(Some(chunk.into())),
                None => Ok(r.next_chunk().await?.map(Into::into)),
            },
        }
    }

    /// Reads (and for encrypted objects, opens) the first chunk before the response head
    /// goes out, so an unreadable or tampered object gets a clean error.
    pub async fn prime(&mut self) -> ferrite_tiering::Result<()> {
        match self {
            ObjectStream::Plain(r) => r.prime().await,
            ObjectStream::Decrypting(r) => {
                if r.primed.is_none() {
                    r.primed = r.next_chunk().await?;
                }
                Ok(())
            }
        }
    }

    /// The stream for bytes [start, end) of an object (plaintext coordinates), wherever its
    /// stored bytes are (local drives or a tier).
    pub fn open(
        mover: &Mover,
        (bucket, key): (&str, &str),
        meta: &ObjectMeta,
        encryption: Option<&Encryption>,
        (start, end): (u64, u64),
    ) -> ObjectStream {
        match encryption {
            None => ObjectStream::Plain(mover.stored_reader(bucket, key, meta, start, end)),
            Some(encryption) => ObjectStream::Decrypting(Box::new(DecryptingReader::new(
                mover,
                (bucket, key),
                meta,
                encryption,
                (start, end),
            ))),
        }
    }
}
