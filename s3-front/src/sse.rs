//! S3 server-side encryption, per request: which encryption a request asks for (SSE-S3,
//! SSE-KMS, SSE-C, or the bucket's or the server's default) and the object key it gets;
//! opening the key of a stored object for a request; re-sealing every object key after a
//! KMS key rotation; bucket default encryption. How an object's encryption is kept is
//! `encryption.rs`; reading it back decrypted, `object_stream.rs`.

use ferrite_engine::sse::{open_key, seal_key, Cipher, Key};
use zeroize::Zeroizing;

use crate::checksum::{b64, b64_decode};
use crate::encryption::{kms_sealed, Encryption, Mode, Stored};
use crate::error::{err, Code, S3Error, S3Result};
use crate::kms::Kms;
use crate::request::{Call, Ctx};
use crate::sigv4::constant_time_eq;
use crate::xml::{parse, Xml};

/// The bucket configuration item that holds default encryption ("AES256" or "aws:kms:ID").
pub const BUCKET_CONFIG: &str = "encryption";

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
    // The decoded key is wiped when this returns, whatever the outcome; from here on it lives
    // only in `Key`, which wipes itself when dropped (as do the object keys it opens).
    let bytes = Zeroizing::new(b64_decode(key).unwrap_or_default());
    if bytes.len() != 32 {
        return err(Code::InvalidArgument, "The secret key was invalid for the specified algorithm.");
    }
    let digest = md5::Digest::finalize(<md5::Md5 as md5::Digest>::new_with_prefix(&bytes[..]));
    if !constant_time_eq(b64(&digest).as_bytes(), md5.trim().as_bytes()) {
        return err(
            Code::InvalidArgument,
            "The calculated MD5 hash of the key did not match the hash that was provided.",
        );
    }
    let mut customer = CustomerKey { key: Key([0u8; 32]), md5_b64: b64(&digest) };
    customer.key.0.copy_from_slice(&bytes);
    Ok(Some(customer))
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

fn kms(ctx: &Ctx) -> S3Result<&Kms> {
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
    if let Some(customer) = customer_key(call, false)? {
        if call.header("x-amz-server-side-encryption").is_some() {
            return err(Code::InvalidArgument, "Server Side Encryption with Customer provided key is incompatible with the encryption method specified");
        }
        require_secure(ctx, call)?;
        return Ok(Some(with_customer_key(&customer, bucket, key)?));
    }
    let Some((mode, key_id)) = requested_kms_mode(ctx, call, bucket)? else { return Ok(None) };
    let kms = kms(ctx)?;
    let key_id = key_id.unwrap_or_else(|| kms.default_key_id().to_owned());
    check_key_id(&key_id)?;
    let context = match mode {
        Mode::Kms => kms_context(call)?,
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

/// A new object's key, sealed under the customer's key (SSE-C).
fn with_customer_key(customer: &CustomerKey, bucket: &str, key: &str) -> S3Result<Encryption> {
    let data_key = Key::random()?;
    let sealed = seal_key(&customer.key, &data_key, &binding(bucket, key, ""))?;
    Ok(Encryption {
        mode: Mode::Customer,
        cipher: Cipher::preferred(),
        key_id: String::new(),
        sealed,
        context: String::new(),
        customer_md5: customer.md5_b64.clone(),
        multipart: false,
        key: data_key,
    })
}

/// SSE-S3 or SSE-KMS (and the KMS key id, if one is named) as the request's headers, else
/// the bucket's default, else the server's setting ask; None for plaintext.
fn requested_kms_mode(ctx: &Ctx, call: &Call, bucket: &str) -> S3Result<Option<(Mode, Option<String>)>> {
    let requested = call.header("x-amz-server-side-encryption");
    let key_id = call.header("x-amz-server-side-encryption-aws-kms-key-id");
    if key_id.is_some() && requested != Some("aws:kms") {
        return err(
            Code::InvalidArgument,
            "Server Side Encryption with KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
        );
    }
    Ok(Some(match requested {
        Some("AES256") => (Mode::S3, None),
        Some("aws:kms") | Some("aws:kms:dsse") => (Mode::Kms, key_id.map(str::to_owned)),
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
    }))
}

/// The SSE-KMS encryption context the request names (base64 JSON, kept as sent), or empty.
fn kms_context(call: &Call) -> S3Result<String> {
    let Some(c) = call.header("x-amz-server-side-encryption-context") else { return Ok(String::new()) };
    let json = b64_decode(c).and_then(|j| String::from_utf8(j).ok()).ok_or_else(|| {
        S3Error::new(Code::InvalidArgument, "x-amz-server-side-encryption-context must be base64-encoded JSON")
    })?;
    if !json.trim_start().starts_with('{') {
        return err(Code::InvalidArgument, "x-amz-server-side-encryption-context must be a JSON object");
    }
    Ok(c.trim().to_owned())
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
    let damaged = || S3Error::new(Code::InternalError, "The object's encryption metadata is damaged");
    let Some(stored) = Stored::parse(headers).map_err(|_| damaged())? else {
        if customer_key(call, copy_source)?.is_some() {
            return err(Code::InvalidRequest, "The encryption parameters are not applicable to this object.");
        }
        return Ok(None);
    };
    let bind = binding(bucket, key, &stored.context);
    let data_key = match stored.mode {
        Mode::Customer => {
            let Some(customer) = customer_key(call, copy_source)? else {
                return err(
                    Code::InvalidRequest,
                    "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
                );
            };
            require_secure(ctx, call)?;
            if !constant_time_eq(customer.md5_b64.as_bytes(), stored.customer_md5.as_bytes()) {
                return err(Code::AccessDenied, "Access Denied");
            }
            open_key(&customer.key, &stored.sealed, &bind)
                .map_err(|_| S3Error::new(Code::AccessDenied, "Access Denied"))?
        }
        Mode::S3 | Mode::Kms => kms(ctx)?.decrypt(&stored.key_id, &stored.sealed, &bind).await?,
    };
    Ok(Some(stored.opened(data_key)))
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
async fn rewrap_one(ctx: &Ctx, kms: &Kms, bucket: &str, key: &str) -> Rewrapped {
    for _ in 0..5 {
        let Ok(meta) = ctx.engine.head_object(bucket, key).await else { return Rewrapped::Unchanged };
        let Some(sealed) = kms_sealed(&meta.headers) else { return Rewrapped::NotEncrypted };
        let bind = binding(bucket, key, sealed.context);
        let fresh = match kms.rewrap(sealed.key_id, &sealed.sealed, &bind).await {
            Ok(Some(fresh)) => fresh,
            Ok(None) => return Rewrapped::Unchanged,
            Err(e) => return Rewrapped::Failed(e.message),
        };
        let headers = Stored::with_sealed(&meta.headers, &fresh);
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
    let root = parse(doc)?;
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
    let mut x = Xml::new("ServerSideEncryptionConfiguration");
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
