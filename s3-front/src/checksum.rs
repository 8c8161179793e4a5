//! S3 object checksums (CRC32, CRC32C, CRC64NVME, SHA1, SHA256) and the MD5 ETag.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crc_fast::{CrcAlgorithm, Digest as CrcDigest};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] =
        [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme, Algorithm::Sha1, Algorithm::Sha256];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The header carrying this checksum: x-amz-checksum-crc32 etc.
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }
}

pub enum Hasher {
    Crc(CrcDigest, usize),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Crc32 => Hasher::Crc(CrcDigest::new(CrcAlgorithm::Crc32IsoHdlc), 4),
            Algorithm::Crc32c => Hasher::Crc(CrcDigest::new(CrcAlgorithm::Crc32Iscsi), 4),
            Algorithm::Crc64Nvme => Hasher::Crc(CrcDigest::new(CrcAlgorithm::Crc64Nvme), 8),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc(d, _) => d.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// The raw digest bytes (big-endian for CRCs, as S3 encodes them).
    pub fn finish_bytes(self) -> Vec<u8> {
        match self {
            Hasher::Crc(d, width) => {
                let v = d.finalize();
                v.to_be_bytes()[8 - width..].to_vec()
            }
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }

    pub fn finish_base64(self) -> String {
        B64.encode(self.finish_bytes())
    }
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim()).ok()
}

pub fn md5_new() -> Md5 {
    Md5::new()
}

pub fn md5_finish(h: Md5) -> [u8; 16] {
    h.finalize().into()
}

/// Decodes a hex string (ETag of a part) into bytes.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: Algorithm, data: &[u8]) -> String {
        let mut h = Hasher::new(a);
        h.update(data);
        h.finish_base64()
    }

    #[test]
    fn known_vectors() {
        // "123456789" check values of each CRC, base64 of the big-endian bytes.
        assert_eq!(check(Algorithm::Crc32, b"123456789"), b64(&0xCBF4_3926u32.to_be_bytes()));
        assert_eq!(check(Algorithm::Crc32c, b"123456789"), b64(&0xE306_9283u32.to_be_bytes()));
        assert_eq!(check(Algorithm::Crc64Nvme, b"123456789"), b64(&0xAE8B_1486_0A79_9888u64.to_be_bytes()));
        assert_eq!(check(Algorithm::Sha256, b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
        assert_eq!(check(Algorithm::Sha1, b""), "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
        assert_eq!(Algorithm::parse("crc64nvme"), Some(Algorithm::Crc64Nvme));
        assert_eq!(unhex("0aff"), Some(vec![10, 255]));
        assert_eq!(unhex("0g"), None);
    }
}
