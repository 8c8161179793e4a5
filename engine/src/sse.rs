//! Server-side encryption of object data: the on-disk format (issue 5).
//!
//! Every object (every part of a multipart object) is encrypted with its own 256-bit data
//! key. The plaintext is cut into packages of `PACKAGE_BYTES`; package i is sealed with the
//! AEAD (AES-256-GCM, or ChaCha20-Poly1305 where the CPU lacks AES instructions) under the
//! data key, with nonce = i (96-bit, big-endian) and associated data = "ferrite-sse-v1" and
//! i. The ciphertext of the packages, each followed by its 16-byte tag, is what the data
//! path stores and erasure codes. So:
//! - a package cannot be moved to another position (its index is in the nonce and the AAD),
//! - nor to another object (another key), and
//! - dropping packages at the end is caught by the size kept in the metadata.
//!
//! The data key itself is sealed by a key-encryption key (the KMS's, or the customer's for
//! SSE-C) with the bucket and object name as associated data: a sealed key copied into
//! another object's metadata does not open there. A multipart upload draws one key when
//! it is created; each part's data key is derived from it and the part's file id
//! (HMAC-SHA-256), so parts never share a key.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use aws_lc_rs::hmac;

use zeroize::{Zeroize, Zeroizing};

use crate::error::{EngineError, Result};

/// Plaintext bytes per sealed package.
pub const PACKAGE_BYTES: usize = 64 << 10;
pub const TAG_BYTES: usize = 16;
const PACKAGE_AAD: &[u8] = b"ferrite-sse-v1";
const KEY_AAD: &[u8] = b"ferrite-sse-key-v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    AesGcm,
    ChaCha20Poly1305,
}

impl Cipher {
    pub fn code(self) -> u8 {
        match self {
            Cipher::AesGcm => 1,
            Cipher::ChaCha20Poly1305 => 2,
        }
    }

    pub fn from_code(code: u8) -> Result<Cipher> {
        match code {
            1 => Ok(Cipher::AesGcm),
            2 => Ok(Cipher::ChaCha20Poly1305),
            other => Err(EngineError::Corrupt(format!("unknown cipher {other}"))),
        }
    }

    /// AES-GCM where the CPU has AES and carry-less multiply instructions, else ChaCha20.
    pub fn preferred() -> Cipher {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq") {
                return Cipher::AesGcm;
            }
            Cipher::ChaCha20Poly1305
        }
        #[cfg(not(target_arch = "x86_64"))]
        Cipher::AesGcm
    }

    fn algorithm(self) -> &'static aws_lc_rs::aead::Algorithm {
        match self {
            Cipher::AesGcm => &AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        }
    }
}

/// A 256-bit key, wiped when dropped.
#[derive(Clone)]
pub struct Key(pub [u8; 32]);

impl Drop for Key {
    fn drop(&mut self) {
        // zeroize's volatile writes and fence keep the wipe from being optimised away as a
        // dead store (a plain loop may be).
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn random() -> Result<Key> {
        let mut key = Key([0u8; 32]);
        getrandom::fill(&mut key.0).map_err(|e| EngineError::Crypto(format!("no randomness: {e}")))?;
        Ok(key)
    }

    /// The data key of one part of a multipart object.
    pub fn for_part(&self, file_id: u128) -> Key {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), &file_id.to_be_bytes());
        // Copied straight into the Key (wiped on drop), not through a stack array.
        let mut key = Key([0u8; 32]);
        key.0.copy_from_slice(tag.as_ref());
        key
    }

    fn aead(&self, cipher: Cipher) -> Result<LessSafeKey> {
        let unbound =
            UnboundKey::new(cipher.algorithm(), &self.0).map_err(|_| EngineError::Crypto("bad key".into()))?;
        Ok(LessSafeKey::new(unbound))
    }
}

/// Ciphertext bytes for `plain` plaintext bytes.
pub fn sealed_len(plain: u64) -> u64 {
    let packages = plain.div_ceil(PACKAGE_BYTES as u64);
    plain + packages * TAG_BYTES as u64
}

/// The packages holding plaintext bytes [start, end): (first package, ciphertext start,
/// ciphertext end). `end` > `start`.
pub fn package_span(start: u64, end: u64, plain_len: u64) -> (u64, u64, u64) {
    let package = PACKAGE_BYTES as u64;
    let sealed = package + TAG_BYTES as u64;
    let first = start / package;
    let last = (end - 1) / package;
    let cipher_end = ((last + 1) * sealed).min(sealed_len(plain_len));
    (first, first * sealed, cipher_end)
}

fn package_nonce(index: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

fn package_aad(index: u64) -> [u8; 22] {
    let mut aad = [0u8; 22];
    aad[..14].copy_from_slice(PACKAGE_AAD);
    aad[14..].copy_from_slice(&index.to_be_bytes());
    aad
}

/// Encrypts a stream of plaintext into sealed packages.
pub struct Sealer {
    key: LessSafeKey,
    index: u64,
    pending: Vec<u8>,
    /// Whether a package split across two writes is sealed from its two pieces (AES-GCM),
    /// or copied together first (ChaCha20-Poly1305, whose two-piece seal measured at a third
    /// of its speed: `vs_fastest_crate_1MiB` in benches/benches/hot_path.rs).
    two_pieces: bool,
}

impl Sealer {
    pub fn new(key: &Key, cipher: Cipher) -> Result<Sealer> {
        Ok(Sealer {
            key: key.aead(cipher)?,
            index: 0,
            pending: Vec::with_capacity(PACKAGE_BYTES),
            two_pieces: cipher == Cipher::AesGcm,
        })
    }

    /// Takes plaintext; appends to `out` the ciphertext of every package completed.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.resize(start + self.push_bound(data.len()), 0);
        let written = self.push_into(data, &mut out[start..])?;
        out.truncate(start + written);
        Ok(())
    }

    /// Seals the last, partial package (if any), appending it to `out`.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.resize(start + self.finish_bound(), 0);
        let written = self.finish_into(&mut out[start..])?;
        out.truncate(start + written);
        Ok(())
    }

    /// The most bytes `push_into` writes for `more` bytes of plaintext.
    pub fn push_bound(&self, more: usize) -> usize {
        (self.pending.len() + more) / PACKAGE_BYTES * SEALED_PACKAGE_BYTES
    }

    /// The bytes `finish_into` writes.
    pub fn finish_bound(&self) -> usize {
        if self.pending.is_empty() {
            0
        } else {
            self.pending.len() + TAG_BYTES
        }
    }

    /// Takes plaintext; writes the ciphertext of every package completed to the start of
    /// `out` (at least `push_bound` bytes long) and returns how many bytes that is. A caller
    /// that reuses `out` pays for no zeroing or copying: each package is sealed straight from
    /// the input into `out`.
    pub fn push_into(&mut self, mut data: &[u8], out: &mut [u8]) -> Result<usize> {
        // Checked before anything changes, so a refused call leaves the stream as it was.
        no_room(self.push_bound(data.len()), out)?;
        let mut written = 0;
        while !data.is_empty() {
            let take = (PACKAGE_BYTES - self.pending.len()).min(data.len());
            if self.pending.len() + take < PACKAGE_BYTES {
                // The end of this write: kept until the next one completes its package.
                self.pending.extend_from_slice(&data[..take]);
                break;
            }
            // A whole package: straight from this write, or what is pending followed by the
            // next `take` bytes of it, sealed as one message without copying them together.
            if self.pending.is_empty() {
                written += self.seal(&data[..take], &[], &mut out[written..])?;
            } else {
                let mut pending = std::mem::take(&mut self.pending);
                let tail = match self.two_pieces {
                    true => &data[..take],
                    false => {
                        pending.extend_from_slice(&data[..take]);
                        &[]
                    }
                };
                let sealed = self.seal(&pending, tail, &mut out[written..]);
                self.pending = pending;
                self.pending.clear();
                written += sealed?;
            }
            data = &data[take..];
        }
        Ok(written)
    }

    /// Seals the last, partial package (if any) into the start of `out` (at least
    /// `finish_bound` bytes long); returns its length.
    pub fn finish_into(mut self, out: &mut [u8]) -> Result<usize> {
        no_room(self.finish_bound(), out)?;
        if self.pending.is_empty() {
            return Ok(0);
        }
        let pending = std::mem::take(&mut self.pending);
        self.seal(&pending, &[], out)
    }

    /// Seals the package `head` followed by `tail` straight into the start of `out`, reading
    /// the plaintext once (copying it into `out` and sealing it there cost a third of the
    /// crate's speed). The AEAD takes the two pieces as one message: `tail` is its "extra
    /// input", encrypted into the bytes before the tag. Returns the sealed length.
    fn seal(&mut self, head: &[u8], tail: &[u8], out: &mut [u8]) -> Result<usize> {
        let len = head.len() + tail.len() + TAG_BYTES;
        no_room(len, out)?;
        let (ciphertext, tail_and_tag) = out[..len].split_at_mut(head.len());
        self.key
            .seal_out_of_place_scatter(
                package_nonce(self.index),
                Aad::from(package_aad(self.index)),
                head,
                ciphertext,
                tail,
                tail_and_tag,
            )
            .map_err(|_| EngineError::Crypto("sealing failed".into()))?;
        self.index += 1;
        Ok(len)
    }
}

fn no_room(needed: usize, out: &[u8]) -> Result<()> {
    match out.len() < needed {
        true => Err(EngineError::Crypto(format!("no room to seal: {needed} bytes needed, {} given", out.len()))),
        false => Ok(()),
    }
}

/// Bytes one package takes on disk.
pub const SEALED_PACKAGE_BYTES: usize = PACKAGE_BYTES + TAG_BYTES;

/// Opens packages in place (`first` is the index of the first one in `sealed`): afterwards
/// each package's plaintext is at the front of its slot; `plaintexts` walks them.
pub fn open_in_place(key: &Key, cipher: Cipher, first: u64, sealed: &mut [u8]) -> Result<()> {
    let aead = key.aead(cipher)?;
    for (i, package) in sealed.chunks_mut(SEALED_PACKAGE_BYTES).enumerate() {
        let index = first + i as u64;
        if package.len() <= TAG_BYTES {
            return Err(EngineError::Corrupt(format!("encrypted package {index} is truncated")));
        }
        aead.open_in_place(package_nonce(index), Aad::from(package_aad(index)), package)
            .map_err(|_| EngineError::Crypto(format!("encrypted package {index} failed authentication")))?;
    }
    Ok(())
}

/// The plaintexts of packages opened by `open_in_place`.
pub fn plaintexts(opened: &[u8]) -> impl Iterator<Item = &[u8]> {
    opened.chunks(SEALED_PACKAGE_BYTES).map(|p| &p[..p.len().saturating_sub(TAG_BYTES)])
}

/// Decrypts packages read back: `first` is the index of the first package in `sealed`.
pub fn open_packages(key: &Key, cipher: Cipher, first: u64, sealed: &[u8]) -> Result<Vec<u8>> {
    let mut work = sealed.to_vec();
    open_in_place(key, cipher, first, &mut work)?;
    Ok(plaintexts(&work).flatten().copied().collect())
}

/// Seals a data key under a key-encryption key, bound to `context` (bucket "/" key, and
/// whatever else must match when it is opened). Output: nonce (12) || ciphertext || tag.
pub fn seal_key(kek: &Key, data_key: &Key, context: &[u8]) -> Result<Vec<u8>> {
    seal_secret(kek, &data_key.0, context)
}

/// Opens a key sealed by `seal_key` with the same key-encryption key and context.
pub fn open_key(kek: &Key, sealed: &[u8], context: &[u8]) -> Result<Key> {
    if sealed.len() != 12 + 32 + TAG_BYTES {
        return Err(EngineError::Crypto("sealed key has the wrong length".into()));
    }
    let plain = Zeroizing::new(
        open_secret(kek, sealed, context)
            .map_err(|_| EngineError::Crypto("the object key does not open with this key and object name".into()))?,
    );
    let mut key = Key([0u8; 32]);
    key.0.copy_from_slice(&plain);
    Ok(key)
}

/// Seals any short secret (a key, a remote tier's credentials) under `kek`, bound to
/// `context`, with AES-256-GCM and a random nonce: nonce (12) || ciphertext || tag.
pub fn seal_secret(kek: &Key, secret: &[u8], context: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| EngineError::Crypto(format!("no randomness: {e}")))?;
    let aead = kek.aead(Cipher::AesGcm)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(secret);
    let aad = [KEY_AAD, context].concat();
    let tag = aead
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad[..]), &mut out[12..])
        .map_err(|_| EngineError::Crypto("sealing failed".into()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens what `seal_secret` sealed with the same key and context.
pub fn open_secret(kek: &Key, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < 12 + TAG_BYTES {
        return Err(EngineError::Crypto("sealed secret is too short".into()));
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&sealed[..12]);
    let mut body = sealed[12..].to_vec();
    let aad = [KEY_AAD, context].concat();
    let aead = kek.aead(Cipher::AesGcm)?;
    let len = aead
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad[..]), &mut body)
        .map_err(|_| EngineError::Crypto("the secret does not open with this key and context".into()))?
        .len();
    body.truncate(len);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn packages_round_trip_at_every_boundary_and_with_either_cipher() {
        for cipher in [Cipher::AesGcm, Cipher::ChaCha20Poly1305] {
            let key = Key::random().unwrap();
            for len in [0, 1, PACKAGE_BYTES - 1, PACKAGE_BYTES, PACKAGE_BYTES + 1, 3 * PACKAGE_BYTES + 17] {
                let plain = data(len);
                let mut sealer = Sealer::new(&key, cipher).unwrap();
                let mut sealed = Vec::new();
                // Odd push sizes exercise the pending buffer and the direct path.
                for chunk in plain.chunks(7_777) {
                    sealer.push(chunk, &mut sealed).unwrap();
                }
                sealer.finish(&mut sealed).unwrap();
                assert_eq!(sealed.len() as u64, sealed_len(len as u64));
                assert_eq!(open_packages(&key, cipher, 0, &sealed).unwrap(), plain);
                // Every range opens from just its packages.
                for (start, end) in [(0, len), (len / 3, len / 2 + 1), (len.saturating_sub(1), len)] {
                    if end <= start || end > len {
                        continue;
                    }
                    let (first, cs, ce) = package_span(start as u64, end as u64, len as u64);
                    let opened = open_packages(&key, cipher, first, &sealed[cs as usize..ce as usize]).unwrap();
                    let offset = start - first as usize * PACKAGE_BYTES;
                    assert_eq!(&opened[offset..offset + (end - start)], &plain[start..end]);
                }
            }
        }
    }

    #[test]
    fn sealing_into_a_reused_buffer_matches_appending_and_in_place_and_a_short_one_changes_nothing() {
        let key = Key::random().unwrap();
        let plain = data(5 * PACKAGE_BYTES + 1_000);
        let mut appended = Vec::new();
        let mut sealer = Sealer::new(&key, Cipher::AesGcm).unwrap();
        sealer.push(&plain, &mut appended).unwrap();
        sealer.finish(&mut appended).unwrap();

        // Stale bytes in the buffer, pushes of several packages that end mid-package.
        let mut buf = vec![0xA5u8; SEALED_PACKAGE_BYTES];
        let mut into = Vec::new();
        let mut sealer = Sealer::new(&key, Cipher::AesGcm).unwrap();
        for chunk in plain.chunks(150_000) {
            let need = sealer.push_bound(chunk.len());
            if buf.len() < need {
                buf.resize(need, 0xA5);
            }
            let n = sealer.push_into(chunk, &mut buf).unwrap();
            into.extend_from_slice(&buf[..n]);
        }
        let n = sealer.finish_into(&mut buf).unwrap();
        into.extend_from_slice(&buf[..n]);
        assert_eq!(into, appended);

        // The format is what in-place sealing wrote before: each package's ciphertext, then
        // its tag, under the package's nonce and AAD.
        let aead = key.aead(Cipher::AesGcm).unwrap();
        let mut in_place = Vec::new();
        for (index, package) in plain.chunks(PACKAGE_BYTES).enumerate() {
            let mut sealed = package.to_vec();
            let index = index as u64;
            let tag = aead
                .seal_in_place_separate_tag(package_nonce(index), Aad::from(package_aad(index)), &mut sealed)
                .unwrap();
            in_place.extend_from_slice(&sealed);
            in_place.extend_from_slice(tag.as_ref());
        }
        assert_eq!(appended, in_place);

        // Too little room is refused before anything changes: the same sealer then goes on.
        let mut sealer = Sealer::new(&key, Cipher::AesGcm).unwrap();
        sealer.push(&plain[..1_000], &mut Vec::new()).unwrap();
        let mut short = vec![0u8; sealer.push_bound(plain.len() - 1_000) - 1];
        assert!(matches!(sealer.push_into(&plain[1_000..], &mut short), Err(EngineError::Crypto(_))));
        let mut rest = Vec::new();
        sealer.push(&plain[1_000..], &mut rest).unwrap();
        sealer.finish(&mut rest).unwrap();
        assert_eq!(rest, appended);
    }

    /// The bytes on disk for a fixed key and plaintext, both ciphers, and a part's key: a
    /// change to nonces, AAD, key derivation or layout changes these digests and fails here.
    #[test]
    fn the_sealed_format_is_pinned() {
        use aws_lc_rs::digest::{digest, SHA256};
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let key = Key([7u8; 32]);
        let plain = data(2 * PACKAGE_BYTES + 5);
        let mut got = Vec::new();
        for (cipher, key) in
            [(Cipher::AesGcm, key.clone()), (Cipher::ChaCha20Poly1305, key.clone()), (Cipher::AesGcm, key.for_part(42))]
        {
            let mut sealed = Vec::new();
            let mut sealer = Sealer::new(&key, cipher).unwrap();
            for chunk in plain.chunks(50_000) {
                sealer.push(chunk, &mut sealed).unwrap();
            }
            sealer.finish(&mut sealed).unwrap();
            got.push(hex(digest(&SHA256, &sealed).as_ref()));
        }
        assert_eq!(
            got,
            [
                "e0d29fe8a3e2a34906f164b219dd792c543736133c1070e89ce4feea9b4bfa45",
                "d6406258c95246bfdb4b17922e41ed1162a1236692fcf85ef02dc2fdcf2fc531",
                "751001cecad9b20e19238ea7172e7b81b18adf3ac3fee2d33261f0e96bd11637",
            ]
        );
    }

    #[test]
    fn tampering_reordering_and_other_keys_are_refused() {
        let key = Key::random().unwrap();
        let plain = data(2 * PACKAGE_BYTES + 5);
        let mut sealer = Sealer::new(&key, Cipher::AesGcm).unwrap();
        let mut sealed = Vec::new();
        sealer.push(&plain, &mut sealed).unwrap();
        sealer.finish(&mut sealed).unwrap();
        let mut flipped = sealed.clone();
        flipped[100] ^= 1;
        assert!(open_packages(&key, Cipher::AesGcm, 0, &flipped).is_err());
        // Package 1 presented as package 0.
        let p = PACKAGE_BYTES + TAG_BYTES;
        assert!(open_packages(&key, Cipher::AesGcm, 0, &sealed[p..2 * p]).is_err());
        assert!(open_packages(&Key::random().unwrap(), Cipher::AesGcm, 0, &sealed).is_err());
        assert!(open_packages(&key, Cipher::ChaCha20Poly1305, 0, &sealed).is_err());
        // Part keys differ per part and from the upload key.
        assert_ne!(key.for_part(1).0, key.for_part(2).0);
        assert_ne!(key.for_part(1).0, key.0);
    }

    #[test]
    fn a_sealed_key_opens_only_for_its_object() {
        let kek = Key::random().unwrap();
        let data_key = Key::random().unwrap();
        let sealed = seal_key(&kek, &data_key, b"bucket/a").unwrap();
        assert_eq!(open_key(&kek, &sealed, b"bucket/a").unwrap().0, data_key.0);
        assert!(open_key(&kek, &sealed, b"bucket/b").is_err());
        assert!(open_key(&Key::random().unwrap(), &sealed, b"bucket/a").is_err());
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(open_key(&kek, &bad, b"bucket/a").is_err());
    }
}
