//! S3 server-side encryption: which mode a request asks for (SSE-S3, SSE-KMS, SSE-C, or
//! the bucket's or the server's default), the object key it gets, how that is kept with the
//! object, and the reader that decrypts just the packages a range needs. The format itself
//! (packages, sealing) is `ferrite_engine::sse`.
//!
//! What is stored, as internal headers that never reach a client (`x-ferrite-sse*`): the
//! mode, the cipher, the KMS key id, the sealed object key, the SSE-KMS context, the MD5
//! of an SSE-C key, and whether the object is multipart (each part's key is derived from
//! the object key and the part's file id). The object's size and ETag stay those of the
//! plaintext; the engine stores the ciphertext, whose part sizes are the stored sizes.

use ferrite_engine::sse::{self as format, open_key, seal_key, Cipher, Key, Sealer};
use ferrite_engine::{DataLoc, EngineError, ObjectMeta};
use ferrite_tiering::stub::{remote_of, stored_parts};
use ferrite_tiering::{Mover, StoredReader};

use crate::checksum::{b64, b64_decode};
use crate::error::{err, Code, S3Error, S3Result};
use crate::server::{Call, Ctx, Response};

/// Internal header names (the prefix is never sent to clients).
pub const INTERNAL_PREFIX: &str = "x-ferrite-";
const H_MODE: &str = "x-ferrite-sse";
const H_CIPHER: &str = "x-ferrite-sse-cipher";
const H_KEY_ID: &str = "x-ferrite-sse-key-id";
const H_SEALED: &str = "x-ferrite-sse-sealed-key";
const H_CONTEXT: &str = "x-ferrite-sse-context";
const H_CUSTOMER_MD5: &str = "x-ferrite-sse-customer-key-md5";
const H_MULTIPART: &str = "x-ferrite-sse-multipart";

/// The bucket configuration item that holds default encryption ("AES256" or "aws:kms:ID").
pub const BUCKET_CONFIG: &str = "encryption";

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
    sealed: Vec<u8>,
    context: String,
    customer_md5: String,
    pub multipart: bool,
    pub key: Key,
}

/// An SSE-C key from request headers: `x-amz-server-side-encryption-customer-*`, or for a
/// copy source `x-amz-copy-source-server-side-encryption-customer-*`.
struct CustomerKey {
    key: Key,
    md5_b64: String,
}

fn customer_key(call: &Call, copy_source: bool) -> S3Result<Option<CustomerKey>> {
    let prefix = if copy_source { "x-amz-copy-source-" } else { "x-amz-" };
    let h = |name: &str| call.header(&format!("{prefix}server-side-encryption-customer-{name}"));
    let (algorithm, key, md5) = (h("algorithm"), h("key"), h("key-md5"));
    if algorithm.is_none() && key.is_none() && md5.is_none() {
        return Ok(None);
    }
    if algorithm != Some("AES256") {
        return err(
            Code::InvalidEncryptionAlgorithmError,
            "The encryption request you specified is not valid. The valid value is AES256.",
        );
    }
    let (Some(key), Some(md5)) = (key, md5) else {
        return err(
            Code::InvalidArgument,
            "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key and its MD5.",
        );
    };
    let bytes = b64_decode(key).filter(|k| k.len() == 32).ok_or_else(|| {
        S3Error::new(Code::InvalidArgument, "The secret key was invalid for the specified algorithm.")
    })?;
    let digest = md5::Digest::finalize(<md5::Md5 as md5::Digest>::new_with_prefix(&bytes));
    if b64(&digest) != md5.trim() {
        return err(
            Code::InvalidArgument,
            "The calculated MD5 hash of the key did not match the hash that was provided.",
        );
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(&bytes);
    Ok(Some(CustomerKey { key: Key(k), md5_b64: b64(&digest) }))
}

fn require_secure(ctx: &Ctx, call: &Call) -> S3Result<()> {
    if call.req.secure || ctx.config.sse_c_allow_http {
        return Ok(());
    }
    err(
        Code::InvalidRequest,
        "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.",
    )
}

/// What binds a sealed key to its object: the bucket and key, and for SSE-KMS the context.
fn binding(bucket: &str, key: &str, context: &str) -> Vec<u8> {
    format!("{bucket}/{key}\0{context}").into_bytes()
}

fn kms(ctx: &Ctx) -> S3Result<&crate::kms::Kms> {
    ctx.kms.as_deref().ok_or_else(|| {
        S3Error::new(
            Code::NotImplemented,
            "Server-side encryption was requested but no KMS is configured (set FERRITE_KMS_SECRET_KEY).",
        )
    })
}

/// Decides how a new object (or upload) is encrypted: the request's SSE headers, else the
/// bucket's default, else the server-wide setting; None for plaintext.
pub async fn for_new_object(ctx: &Ctx, call: &Call<'_>, bucket: &str, key: &str) -> S3Result<Option<Encryption>> {
    let requested = call.header("x-amz-server-side-encryption");
    let customer = customer_key(call, false)?;
    if let Some(customer) = customer {
        if requested.is_some() {
            return err(Code::InvalidArgument, "Server Side Encryption with Customer provided key is incompatible with the encryption method specified");
        }
        require_secure(ctx, call)?;
        let data_key = Key::random()?;
        let sealed = seal_key(&customer.key, &data_key, &binding(bucket, key, ""))?;
        return Ok(Some(Encryption {
            mode: Mode::Customer,
            cipher: Cipher::preferred(),
            key_id: String::new(),
            sealed,
            context: String::new(),
            customer_md5: customer.md5_b64,
            multipart: false,
            key: data_key,
        }));
    }
    if call.header("x-amz-server-side-encryption-aws-kms-key-id").is_some() && requested != Some("aws:kms") {
        return err(
            Code::InvalidArgument,
            "Server Side Encryption with KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
        );
    }
    let (mode, key_id) = match requested {
        Some("AES256") => (Mode::S3, None),
        Some("aws:kms") | Some("aws:kms:dsse") => {
            (Mode::Kms, call.header("x-amz-server-side-encryption-aws-kms-key-id").map(str::to_owned))
        }
        Some(other) => {
            return err(Code::InvalidArgument, format!("The encryption method specified is not supported: {other}"))
        }
        None => match ctx.engine.bucket_config(bucket, BUCKET_CONFIG)? {
            Some(default) if default == "AES256" => (Mode::S3, None),
            Some(default) => match default.strip_prefix("aws:kms:") {
                Some(id) => (Mode::Kms, (!id.is_empty()).then(|| id.to_owned())),
                None => (Mode::S3, None),
            },
            None if ctx.config.encrypt_everything => (Mode::S3, None),
            None => return Ok(None),
        },
    };
    let kms = kms(ctx)?;
    let key_id = key_id.unwrap_or_else(|| kms.default_key_id().to_owned());
    check_key_id(&key_id)?;
    let context = match (mode, call.header("x-amz-server-side-encryption-context")) {
        (Mode::Kms, Some(c)) => {
            let json = b64_decode(c).and_then(|j| String::from_utf8(j).ok()).ok_or_else(|| {
                S3Error::new(Code::InvalidArgument, "x-amz-server-side-encryption-context must be base64-encoded JSON")
            })?;
            if !json.trim_start().starts_with('{') {
                return err(Code::InvalidArgument, "x-amz-server-side-encryption-context must be a JSON object");
            }
            c.trim().to_owned()
        }
        _ => String::new(),
    };
    let data = kms.generate(&key_id, &binding(bucket, key, &context)).await?;
    Ok(Some(Encryption {
        mode,
        cipher: Cipher::preferred(),
        key_id,
        sealed: data.sealed,
        context,
        customer_md5: String::new(),
        multipart: false,
        key: data.key,
    }))
}

/// Whether stored headers describe an encrypted object or upload.
pub fn is_encrypted(headers: &[(String, String)]) -> bool {
    header(headers, H_MODE).is_some()
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Opens the key of a stored object or upload from its headers. `copy_source`: the object
/// is the source of a copy (its SSE-C key comes in the copy-source headers).
pub async fn open_stored(
    ctx: &Ctx,
    call: &Call<'_>,
    bucket: &str,
    key: &str,
    headers: &[(String, String)],
    copy_source: bool,
) -> S3Result<Option<Encryption>> {
    let Some(mode) = header(headers, H_MODE) else {
        if customer_key(call, copy_source)?.is_some() {
            return err(Code::InvalidRequest, "The encryption parameters are not applicable to this object.");
        }
        return Ok(None);
    };
    let damaged = || S3Error::new(Code::InternalError, "The object's encryption metadata is damaged");
    let mode = Mode::parse(mode).ok_or_else(damaged)?;
    let cipher = header(headers, H_CIPHER).and_then(|c| c.parse().ok()).ok_or_else(damaged)?;
    let cipher = Cipher::from_code(cipher).map_err(|_| damaged())?;
    let sealed = header(headers, H_SEALED).and_then(b64_decode).ok_or_else(damaged)?;
    let key_id = header(headers, H_KEY_ID).unwrap_or("").to_owned();
    let context = header(headers, H_CONTEXT).unwrap_or("").to_owned();
    let customer_md5 = header(headers, H_CUSTOMER_MD5).unwrap_or("").to_owned();
    let multipart = header(headers, H_MULTIPART) == Some("1");
    let bind = binding(bucket, key, &context);
    let data_key = match mode {
        Mode::Customer => {
            let Some(customer) = customer_key(call, copy_source)? else {
                return err(
                    Code::InvalidRequest,
                    "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
                );
            };
            require_secure(ctx, call)?;
            if customer.md5_b64 != customer_md5 {
                return err(Code::AccessDenied, "Access Denied");
            }
            open_key(&customer.key, &sealed, &bind).map_err(|_| S3Error::new(Code::AccessDenied, "Access Denied"))?
        }
        Mode::S3 | Mode::Kms => kms(ctx)?.decrypt(&key_id, &sealed, &bind).await?,
    };
    Ok(Some(Encryption { mode, cipher, key_id, sealed, context, customer_md5, multipart, key: data_key }))
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

    /// The SSE response headers AWS sends for such an object.
    pub fn response_headers(&self, resp: Response) -> Response {
        match self.mode {
            Mode::S3 => resp.header("x-amz-server-side-encryption", "AES256"),
            Mode::Kms => resp
                .header("x-amz-server-side-encryption", "aws:kms")
                .header("x-amz-server-side-encryption-aws-kms-key-id", self.key_id.clone()),
            Mode::Customer => resp
                .header("x-amz-server-side-encryption-customer-algorithm", "AES256")
                .header("x-amz-server-side-encryption-customer-key-MD5", self.customer_md5.clone()),
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
            Mode::S3 => crate::sigv4::hex(plain_md5),
            Mode::Kms | Mode::Customer => {
                let mut h = <md5::Md5 as md5::Digest>::new();
                md5::Digest::update(&mut h, plain_md5);
                md5::Digest::update(&mut h, &self.key.0);
                crate::sigv4::hex(&md5::Digest::finalize(h))
            }
        }
    }
}

/// What a key rotation did (the admin API answers it as JSON).
#[derive(Default, serde::Serialize)]
pub struct RewrapReport {
    pub objects: u64,
    pub encrypted: u64,
    pub rewrapped: u64,
    pub failed: u64,
}

/// Re-seals the object key of every SSE-S3 / SSE-KMS object under the newest version of
/// its KMS key (`Kms::rewrap`); the data is not rewritten. An object overwritten meanwhile
/// is left to its new key. SSE-C objects are the customer's business; uploads in progress
/// keep their key until they complete.
pub async fn rewrap_all(ctx: &Ctx) -> S3Result<RewrapReport> {
    let kms = kms(ctx)?;
    let mut report = RewrapReport::default();
    for (bucket, _) in ctx.engine.list_buckets() {
        let mut walk = ctx.engine.walk(&bucket, None);
        loop {
            let key = match walk.next().await {
                Ok(Some(object)) => object.key,
                // Deleted meanwhile: nothing left to re-seal there.
                Ok(None) | Err(ferrite_engine::EngineError::NoSuchBucket) => break,
                Err(e) => return Err(e.into()),
            };
            report.objects += 1;
            match rewrap_one(ctx, kms, &bucket, &key).await {
                Rewrapped::NotEncrypted => {}
                Rewrapped::Unchanged => report.encrypted += 1,
                Rewrapped::Done => {
                    report.encrypted += 1;
                    report.rewrapped += 1;
                }
                Rewrapped::Failed(why) => {
                    tracing::warn!("rewrap {bucket}/{key}: {why}");
                    report.encrypted += 1;
                    report.failed += 1;
                }
            }
        }
    }
    Ok(report)
}

enum Rewrapped {
    NotEncrypted,
    /// Already under the newest key version, or overwritten/deleted meanwhile (its new
    /// version has a new key).
    Unchanged,
    Done,
    Failed(String),
}

/// Re-seals one object's key. A concurrent change of its headers alone (a transition to a
/// tier, a restore) makes the engine refuse the write; the object is then read again and the
/// re-seal retried, so the new sealed key is never lost to such a race.
async fn rewrap_one(ctx: &Ctx, kms: &crate::kms::Kms, bucket: &str, key: &str) -> Rewrapped {
    for _ in 0..5 {
        let Ok(meta) = ctx.engine.head_object(bucket, key).await else { return Rewrapped::Unchanged };
        let mode = header(&meta.headers, H_MODE).and_then(Mode::parse);
        if !matches!(mode, Some(Mode::S3) | Some(Mode::Kms)) {
            return Rewrapped::NotEncrypted;
        }
        let sealed = header(&meta.headers, H_SEALED).and_then(b64_decode).unwrap_or_default();
        let key_id = header(&meta.headers, H_KEY_ID).unwrap_or("");
        let context = header(&meta.headers, H_CONTEXT).unwrap_or("");
        let fresh = match kms.rewrap(key_id, &sealed, &binding(bucket, key, context)).await {
            Ok(Some(fresh)) => fresh,
            Ok(None) => return Rewrapped::Unchanged,
            Err(e) => return Rewrapped::Failed(e.message),
        };
        let mut headers = meta.headers.clone();
        for (name, value) in headers.iter_mut() {
            if name == H_SEALED {
                *value = b64(&fresh);
            }
        }
        match ctx.engine.set_headers(bucket, key, &meta, headers).await {
            Ok(()) => return Rewrapped::Done,
            Err(ferrite_engine::EngineError::NoSuchKey) => return Rewrapped::Unchanged,
            Err(ferrite_engine::EngineError::PreconditionFailed) => {
                let same_version = ctx
                    .engine
                    .head_object(bucket, key)
                    .await
                    .is_ok_and(|now| now.etag == meta.etag && now.mtime_ms == meta.mtime_ms);
                if !same_version {
                    return Rewrapped::Unchanged;
                }
            }
            Err(e) => return Rewrapped::Failed(e.to_string()),
        }
    }
    Rewrapped::Failed("its headers kept changing".into())
}

/// Plaintext size of `stored` ciphertext bytes (the inverse of `sealed_len`).
pub fn plain_len(stored: u64) -> u64 {
    let packages = stored.div_ceil((format::PACKAGE_BYTES + format::TAG_BYTES) as u64);
    // Saturating: a stored size no sealer produced is an error elsewhere, never a panic.
    stored.saturating_sub(packages * format::TAG_BYTES as u64)
}

/// One stored file of an encrypted object, in plaintext and ciphertext coordinates.
struct Segment {
    plain_start: u64,
    plain_len: u64,
    cipher_start: u64,
    key: Key,
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
    pub fn new(
        mover: &Mover,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        enc: &Encryption,
        start: u64,
        end: u64,
    ) -> DecryptingReader {
        let mut segments = Vec::new();
        match (&meta.data, remote_of(meta)) {
            (DataLoc::Inline { .. }, None) => {
                segments.push(Segment { plain_start: 0, plain_len: meta.size, cipher_start: 0, key: enc.key.clone() })
            }
            _ => {
                let (mut plain, mut cipher) = (0, 0);
                for part in stored_parts(meta) {
                    let len = plain_len(part.size);
                    segments.push(Segment {
                        plain_start: plain,
                        plain_len: len,
                        cipher_start: cipher,
                        key: enc.file_key(part.file_id),
                    });
                    plain += len;
                    cipher += part.size;
                }
            }
        }
        DecryptingReader {
            mover: mover.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            meta: meta.clone(),
            cipher: enc.cipher,
            segments,
            pos: start,
            end,
            current: None,
            primed: None,
        }
    }

    pub async fn next_chunk(&mut self) -> ferrite_tiering::Result<Option<Vec<u8>>> {
        loop {
            if self.pos >= self.end {
                return Ok(None);
            }
            if self.current.is_none() {
                self.current = Some(self.open_segment()?);
            }
            let Some(cur) = self.current.as_mut() else { continue };
            let package = format::SEALED_PACKAGE_BYTES;
            let buffered = cur.pending.len() - cur.start;
            let whole = buffered / package;
            if whole >= PACKAGES_PER_CHUNK || (cur.exhausted && buffered > 0) {
                let take = if cur.exhausted { buffered } else { PACKAGES_PER_CHUNK * package };
                let segment = &self.segments[cur.segment];
                let sealed = &mut cur.pending[cur.start..cur.start + take];
                format::open_in_place(&segment.key, self.cipher, cur.next_package, sealed)?;
                cur.next_package += take.div_ceil(package) as u64;
                // One copy out of the buffer, leaving out the tags and what the range skips.
                let mut out = Vec::with_capacity((take as u64).min(cur.left) as usize);
                for plain in format::plaintexts(sealed) {
                    let from = cur.skip.min(plain.len());
                    cur.skip -= from;
                    let n = ((plain.len() - from) as u64).min(cur.left) as usize;
                    out.extend_from_slice(&plain[from..from + n]);
                    cur.left -= n as u64;
                }
                cur.start += take;
                if cur.start == cur.pending.len() {
                    cur.pending.clear();
                    cur.start = 0;
                } else if cur.start > cur.pending.len() / 2 {
                    cur.pending.drain(..cur.start);
                    cur.start = 0;
                }
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
        let (first, cs, ce) = format::package_span(rel_start, rel_end, segment.plain_len);
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
            skip: (rel_start - first * format::PACKAGE_BYTES as u64) as usize,
            left: rel_end - rel_start,
            exhausted: false,
        })
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
}

/// The stream for bytes [start, end) of an object (plaintext coordinates), wherever its
/// stored bytes are (local drives or a tier).
pub fn object_stream(
    mover: &Mover,
    bucket: &str,
    key: &str,
    meta: &ObjectMeta,
    enc: Option<&Encryption>,
    start: u64,
    end: u64,
) -> ObjectStream {
    match enc {
        None => ObjectStream::Plain(mover.stored_reader(bucket, key, meta, start, end)),
        Some(enc) => {
            ObjectStream::Decrypting(Box::new(DecryptingReader::new(mover, bucket, key, meta, enc, start, end)))
        }
    }
}

/// A KMS key id is a name, never a path: it goes into KMS request paths (Vault transit).
fn check_key_id(id: &str) -> S3Result<()> {
    let fine = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.');
    if fine {
        Ok(())
    } else {
        err(Code::KmsNotFound, format!("Invalid keyId {id:?}: a key id is 1-128 of A-Z a-z 0-9 - _ ."))
    }
}

/// Parses a PutBucketEncryption document into the stored form ("AES256" or "aws:kms:ID").
pub fn parse_bucket_config(doc: &[u8]) -> S3Result<String> {
    let root = crate::xml::parse(doc)?;
    if root.name != "ServerSideEncryptionConfiguration" {
        return err(
            Code::MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema.",
        );
    }
    let by_default = root
        .child("Rule")
        .and_then(|r| r.child("ApplyServerSideEncryptionByDefault"))
        .ok_or_else(|| S3Error::new(Code::MalformedXML, "ApplyServerSideEncryptionByDefault is missing"))?;
    let algorithm = by_default.child("SSEAlgorithm").map(|a| a.text.trim().to_owned()).unwrap_or_default();
    let key_id = by_default.child("KMSMasterKeyID").map(|k| k.text.trim().to_owned()).unwrap_or_default();
    match algorithm.as_str() {
        "AES256" if key_id.is_empty() => Ok("AES256".into()),
        "AES256" => err(Code::InvalidArgument, "a KMS key id is not allowed with SSEAlgorithm AES256"),
        "aws:kms" | "aws:kms:dsse" => {
            if !key_id.is_empty() {
                check_key_id(&key_id)?;
            }
            Ok(format!("aws:kms:{key_id}"))
        }
        _ => err(Code::MalformedXML, format!("unsupported SSEAlgorithm {algorithm:?}")),
    }
}

/// The GetBucketEncryption document for a stored configuration.
pub fn bucket_config_xml(stored: &str) -> Vec<u8> {
    let mut x = crate::xml::Xml::new("ServerSideEncryptionConfiguration");
    x.start("Rule").start("ApplyServerSideEncryptionByDefault");
    match stored.strip_prefix("aws:kms:") {
        Some(id) => {
            x.elem("SSEAlgorithm", "aws:kms");
            if !id.is_empty() {
                x.elem("KMSMasterKeyID", id);
            }
        }
        None => {
            x.elem("SSEAlgorithm", "AES256");
        }
    }
    x.end().elem("BucketKeyEnabled", "false").end();
    x.finish()
}
