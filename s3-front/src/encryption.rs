//! An object's server-side encryption as it is kept: the mode (SSE-S3, SSE-KMS, SSE-C), the
//! cipher, the sealed object key and what binds it, stored as internal headers that never
//! reach a client (`x-ferrite-sse*`); with the key open, the per-file keys, the ETag and
//! the response headers. Which encryption a request asks for, and opening a stored key, is
//! `sse.rs`; the format itself (packages, sealing) is `ferrite_engine::sse`.
//!
//! The object's size and ETag stay those of the plaintext; the engine stores the
//! ciphertext, whose part sizes are the stored sizes.

use ferrite_engine::sse::{Cipher, Key, Sealer, PACKAGE_BYTES, TAG_BYTES};

use crate::checksum::{b64, b64_decode};
use crate::error::S3Result;
use crate::sigv4::hex;

/// Internal header names (their prefix, `x-ferrite-`, is never sent to clients).
const H_MODE: &str = "x-ferrite-sse";
const H_CIPHER: &str = "x-ferrite-sse-cipher";
const H_KEY_ID: &str = "x-ferrite-sse-key-id";
const H_SEALED: &str = "x-ferrite-sse-sealed-key";
const H_CONTEXT: &str = "x-ferrite-sse-context";
const H_CUSTOMER_MD5: &str = "x-ferrite-sse-customer-key-md5";
const H_MULTIPART: &str = "x-ferrite-sse-multipart";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    S3,
    Kms,
    Customer,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::S3 => "S3",
            Mode::Kms => "KMS",
            Mode::Customer => "C",
        }
    }
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "S3" => Mode::S3,
            "KMS" => Mode::Kms,
            "C" => Mode::Customer,
            _ => return None,
        })
    }
}

/// How one object (or multipart upload) is encrypted, with its open object key.
pub struct Encryption {
    pub mode: Mode,
    pub cipher: Cipher,
    pub key_id: String,
    pub sealed: Vec<u8>,
    /// The SSE-KMS encryption context (base64 JSON), or empty.
    pub context: String,
    /// The base64 MD5 of an SSE-C key, or empty.
    pub customer_md5: String,
    pub multipart: bool,
    pub key: Key,
}

/// The encryption headers of a stored object or upload, its key still sealed.
pub struct Stored {
    pub mode: Mode,
    pub cipher: Cipher,
    pub key_id: String,
    pub sealed: Vec<u8>,
    pub context: String,
    pub customer_md5: String,
    pub multipart: bool,
}

/// A stored object's encryption headers are damaged (not a client's fault).
pub struct Damaged;

impl Stored {
    /// Reads the encryption headers: Ok(None) for a plaintext object.
    pub fn parse(headers: &[(String, String)]) -> Result<Option<Stored>, Damaged> {
        let Some(mode) = stored_header(headers, H_MODE) else { return Ok(None) };
        let mode = Mode::parse(mode).ok_or(Damaged)?;
        let cipher = stored_header(headers, H_CIPHER).and_then(|c| c.parse().ok()).ok_or(Damaged)?;
        let cipher = Cipher::from_code(cipher).map_err(|_| Damaged)?;
        let sealed = stored_header(headers, H_SEALED).and_then(b64_decode).ok_or(Damaged)?;
        Ok(Some(Stored {
            mode,
            cipher,
            key_id: stored_header(headers, H_KEY_ID).unwrap_or("").to_owned(),
            sealed,
            context: stored_header(headers, H_CONTEXT).unwrap_or("").to_owned(),
            customer_md5: stored_header(headers, H_CUSTOMER_MD5).unwrap_or("").to_owned(),
            multipart: stored_header(headers, H_MULTIPART) == Some("1"),
        }))
    }

    /// The stored object with its key opened.
    pub fn opened(self, key: Key) -> Encryption {
        let Stored { mode, cipher, key_id, sealed, context, customer_md5, multipart } = self;
        Encryption { mode, cipher, key_id, sealed, context, customer_md5, multipart, key }
    }

    /// The headers with the sealed key replaced (after a re-seal under a newer KMS key
    /// version).
    pub fn with_sealed(headers: &[(String, String)], sealed: &[u8]) -> Vec<(String, String)> {
        let mut out = headers.to_vec();
        for (name, value) in out.iter_mut() {
            if name == H_SEALED {
                *value = b64(sealed);
            }
        }
        out
    }
}

/// What re-sealing the key of an SSE-S3 or SSE-KMS object needs from its headers.
pub struct KmsSealed<'h> {
    pub sealed: Vec<u8>,
    pub key_id: &'h str,
    pub context: &'h str,
}

/// The sealed key of an SSE-S3 or SSE-KMS object (None for any other object).
pub fn kms_sealed(headers: &[(String, String)]) -> Option<KmsSealed<'_>> {
    let mode = stored_header(headers, H_MODE).and_then(Mode::parse);
    if !matches!(mode, Some(Mode::S3) | Some(Mode::Kms)) {
        return None;
    }
    Some(KmsSealed {
        sealed: stored_header(headers, H_SEALED).and_then(b64_decode).unwrap_or_default(),
        key_id: stored_header(headers, H_KEY_ID).unwrap_or(""),
        context: stored_header(headers, H_CONTEXT).unwrap_or(""),
    })
}

/// Whether stored headers describe an encrypted object or upload.
pub fn is_encrypted(headers: &[(String, String)]) -> bool {
    stored_header(headers, H_MODE).is_some()
}

fn stored_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

impl Encryption {
    /// The internal headers stored with the object.
    pub fn stored_headers(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (H_MODE.to_owned(), self.mode.name().to_owned()),
            (H_CIPHER.to_owned(), self.cipher.code().to_string()),
            (H_SEALED.to_owned(), b64(&self.sealed)),
        ];
        if !self.key_id.is_empty() {
            out.push((H_KEY_ID.to_owned(), self.key_id.clone()));
        }
        if !self.context.is_empty() {
            out.push((H_CONTEXT.to_owned(), self.context.clone()));
        }
        if !self.customer_md5.is_empty() {
            out.push((H_CUSTOMER_MD5.to_owned(), self.customer_md5.clone()));
        }
        if self.multipart {
            out.push((H_MULTIPART.to_owned(), "1".to_owned()));
        }
        out
    }

    /// Adds the SSE response headers AWS sends for such an object.
    pub fn add_response_headers(&self, headers: &mut Vec<(String, String)>) {
        let mut add = |name: &str, value: &str| headers.push((name.to_owned(), value.to_owned()));
        match self.mode {
            Mode::S3 => add("x-amz-server-side-encryption", "AES256"),
            Mode::Kms => {
                add("x-amz-server-side-encryption", "aws:kms");
                add("x-amz-server-side-encryption-aws-kms-key-id", &self.key_id);
            }
            Mode::Customer => {
                add("x-amz-server-side-encryption-customer-algorithm", "AES256");
                add("x-amz-server-side-encryption-customer-key-MD5", &self.customer_md5);
            }
        }
    }

    /// The key that seals one stored file of the object: the object key itself, or for a
    /// multipart object a key derived for that part.
    pub fn file_key(&self, file_id: u128) -> Key {
        if self.multipart {
            self.key.for_part(file_id)
        } else {
            self.key.clone()
        }
    }

    pub fn sealer(&self, file_id: u128) -> S3Result<Sealer> {
        Ok(Sealer::new(&self.file_key(file_id), self.cipher)?)
    }

    /// The ETag of an encrypted single-part object: the plaintext MD5 for SSE-S3 (as AWS);
    /// for SSE-KMS and SSE-C an opaque value that reveals nothing about the plaintext.
    pub fn etag(&self, plain_md5: &[u8; 16]) -> String {
        match self.mode {
            Mode::S3 => hex(plain_md5),
            Mode::Kms | Mode::Customer => {
                let mut h = <md5::Md5 as md5::Digest>::new();
                md5::Digest::update(&mut h, plain_md5);
                md5::Digest::update(&mut h, &self.key.0);
                hex(&md5::Digest::finalize(h))
            }
        }
    }
}

/// Plaintext size of `stored` ciphertext bytes (the inverse of `sealed_len`).
pub fn plain_len(stored: u64) -> u64 {
    let packages = stored.div_ceil((PACKAGE_BYTES + TAG_BYTES) as u64);
    // Saturating: a stored size no sealer produced is an error elsewhere, never a panic.
    stored.saturating_sub(packages * TAG_BYTES as u64)
}
