//! The S3 operations. Each takes the decoded call and the request body and returns a
//! response; errors are S3 errors.

use std::time::{Duration, UNIX_EPOCH};

use ferrite_engine::{now_ms, DataLoc, DataWriter, Finished, ListItem, ObjectMeta, PartLoc, PartMeta, PutCondition};

use crate::body::Body;
use crate::checksum::{b64, b64_decode, md5_finish, md5_new, unhex, Algorithm, Hasher};
use crate::error::{err, Code, OrBadRequest, S3Error, S3Result};
use crate::md5x::{CoreBatcher, Md5Stream};
use crate::server::{Call, Ctx, RespBody, Response};
use crate::sigv4::hex;
use crate::sse;
use crate::xml::{parse, Xml};
use ferrite_engine::sse::Sealer;
use ferrite_tiering::{rules, stub};

/// Largest object a single PUT may carry, as on AWS.
const PUT_BYTES_MAX: u64 = 5 << 30;
/// Every multipart part but the last must be at least this large, as on AWS.
const PART_BYTES_MIN: u64 = 5 << 20;
const PART_NUMBER_MAX: u32 = 10_000;
const KEY_BYTES_MAX: usize = 1024;
const BUCKET_NAME_BYTES_MAX: usize = 63;
const LIST_KEYS_MAX: usize = 1000;
const DELETE_OBJECTS_MAX: usize = 1000;
/// XML request documents (Complete, Delete, Tagging) are read whole, up to this size.
const XML_BODY_BYTES_MAX: usize = 2 << 20;
const USER_METADATA_BYTES_MAX: usize = 2 << 10;
const TAGS_MAX: usize = 10;
/// A tag's key and value, in characters (as AWS).
const TAG_KEY_CHARS_MAX: usize = 128;
const TAG_VALUE_CHARS_MAX: usize = 256;

/// What one tag can add to an object's metadata record: key and value at 4 UTF-8 bytes per
/// character, and their two length prefixes.
const TAG_RECORD_BYTES_MAX: usize = (TAG_KEY_CHARS_MAX + TAG_VALUE_CHARS_MAX) * 4 + 8;
/// What one part can add to a multipart object's metadata record: its size (8) and location
/// (file id and size, 24), and its entry in a transitioned object's parts header ("file id
/// hex:size," at most 32 + 1 + 20 + 1).
const PART_RECORD_BYTES_MAX: usize = 8 + 24 + 54;
/// The internal headers Ferrite adds beside the parts header (SSE sealed keys and context,
/// tier, blob, restore state) and the stored checksum, generously.
const INTERNAL_RECORD_BYTES_MAX: usize = 16 << 10;
// Everything an object's metadata record carries is bounded by the caps above: the stored
// headers and user metadata come from one request head, tags and parts are counted. The
// engine accepts any metadata within OBJECT_META_BYTES_MAX, so no valid request can reach
// the log's record limit.
const _: () = assert!(USER_METADATA_BYTES_MAX <= crate::http::HEAD_BYTES_MAX);
const _: () = assert!(
    BUCKET_NAME_BYTES_MAX
        + KEY_BYTES_MAX
        + crate::http::HEAD_BYTES_MAX
        + TAGS_MAX * TAG_RECORD_BYTES_MAX
        + PART_NUMBER_MAX as usize * PART_RECORD_BYTES_MAX
        + INTERNAL_RECORD_BYTES_MAX
        <= ferrite_engine::OBJECT_META_BYTES_MAX
);
const STORED_HEADERS: [&str; 6] =
    ["content-type", "content-encoding", "content-disposition", "content-language", "cache-control", "expires"];
const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

pub async fn route(ctx: &Ctx, call: &Call<'_>, body: &mut Body<'_>) -> S3Result<Response> {
    let method = call.req.method.as_str();
    let Some(bucket) = call.bucket.as_deref() else {
        return match method {
            "GET" => list_buckets(ctx),
            _ => err(Code::MethodNotAllowed, "The specified method is not allowed against this resource."),
        };
    };
    let Some(key) = call.key.as_deref() else {
        return match method {
            "PUT" if call.query.is_empty() => create_bucket(ctx, bucket, body).await,
            "HEAD" => head_bucket(ctx, bucket),
            "DELETE" if call.query.is_empty() => delete_bucket(ctx, bucket).await,
            "GET" if call.has("location") => bucket_location(ctx, bucket),
            "GET" if call.has("uploads") => list_uploads(ctx, call, bucket).await,
            "GET" if call.has("versioning") => {
                require_bucket(ctx, bucket)?;
                let mut x = Xml::new("VersioningConfiguration");
                let _ = &mut x;
                Ok(Response::xml(x.finish()))
            }
            "GET" if call.query.iter().all(|(k, _)| LIST_PARAMS.contains(&k.as_str())) => {
                list_objects(ctx, call, bucket).await
            }
            "POST" if call.has("delete") => delete_objects(ctx, bucket, body).await,
            "PUT" if call.has("encryption") => put_bucket_encryption(ctx, bucket, body).await,
            "GET" if call.has("encryption") => get_bucket_encryption(ctx, bucket),
            "DELETE" if call.has("encryption") => {
                ctx.engine.put_bucket_config(bucket, sse::BUCKET_CONFIG, None).await?;
                Ok(Response::new(204))
            }
            "PUT" if call.has("lifecycle") => put_bucket_lifecycle(ctx, bucket, body).await,
            "GET" if call.has("lifecycle") => match ctx.engine.bucket_config(bucket, rules::BUCKET_CONFIG)? {
                Some(doc) => Ok(Response::xml(doc.into_bytes())),
                None => err(Code::NoSuchLifecycleConfiguration, "The lifecycle configuration does not exist"),
            },
            "DELETE" if call.has("lifecycle") => {
                ctx.engine.put_bucket_config(bucket, rules::BUCKET_CONFIG, None).await?;
                Ok(Response::new(204))
            }
            _ => err(
                Code::NotImplemented,
                "A header or query you provided implies functionality that is not implemented.",
            ),
        };
    };
    if key.len() > KEY_BYTES_MAX {
        return err(Code::KeyTooLongError, "Your key is too long");
    }
    match method {
        "PUT" if call.has("tagging") => put_tagging(ctx, bucket, key, body).await,
        "PUT" if call.has("partNumber") && call.has("uploadId") => upload_part(ctx, call, bucket, key, body).await,
        "PUT" if plain_object_call(call) && call.header("x-amz-copy-source").is_some() => {
            copy_object(ctx, call, bucket, key).await
        }
        "PUT" if plain_object_call(call) => put_object(ctx, call, bucket, key, body).await,
        "GET" if call.has("tagging") => get_tagging(ctx, bucket, key).await,
        "GET" if call.has("uploadId") => list_parts(ctx, call, bucket, key).await,
        "GET" => get_object(ctx, call, bucket, key, false).await,
        "HEAD" => get_object(ctx, call, bucket, key, true).await,
        "POST" if call.has("uploads") => create_upload(ctx, call, bucket, key).await,
        "POST" if call.has("restore") => restore_object(ctx, bucket, key, body).await,
        "POST" if call.has("uploadId") => complete_upload(ctx, call, bucket, key, body).await,
        "DELETE" if call.has("tagging") => {
            ctx.engine.set_tags(bucket, key, Vec::new()).await?;
            Ok(Response::new(204))
        }
        "DELETE" if call.has("uploadId") => {
            ctx.engine.abort_upload(bucket, key, call.q("uploadId").unwrap_or("")).await?;
            Ok(Response::new(204))
        }
        "DELETE" => {
            ctx.mover.delete_object(bucket, key).await?;
            Ok(Response::new(204))
        }
        _ => err(Code::NotImplemented, "A header or query you provided implies functionality that is not implemented."),
    }
}

/// True when the query carries no sub-resource (only presign parameters or the SDK's x-id).
fn plain_object_call(call: &Call) -> bool {
    call.query.iter().all(|(k, _)| k.starts_with("X-Amz-") || k == "x-id")
}

const LIST_PARAMS: [&str; 10] = [
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "marker",
    "continuation-token",
    "start-after",
    "encoding-type",
    "fetch-owner",
    "x-id",
];

// ----- helpers -----

pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = crate::sigv4::civil_from_days(secs.div_euclid(86400));
    let rem = secs.rem_euclid(86400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms.rem_euclid(1000))
}

fn http_date(ms: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

fn unquote(etag: &str) -> &str {
    etag.trim().trim_start_matches("W/").trim_matches('"')
}

fn require_bucket(ctx: &Ctx, bucket: &str) -> S3Result<i64> {
    ctx.engine.bucket_created_ms(bucket).ok_or_else(|| S3Error::from(ferrite_engine::EngineError::NoSuchBucket))
}

pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=BUCKET_NAME_BYTES_MAX).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && !name.contains(".-")
        && !name.contains("-.")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

pub(crate) async fn read_small_body(body: &mut Body<'_>, limit: usize) -> S3Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await? {
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(S3Error::new(Code::MalformedXML, "the request document is too large").closing());
        }
    }
    Ok(out)
}

/// The standard and user metadata headers to store with an object.
fn stored_headers(call: &Call) -> S3Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut user_bytes = 0;
    for (name, value) in &call.req.headers {
        if STORED_HEADERS.contains(&name.as_str()) || name.starts_with("x-amz-meta-") {
            if name.starts_with("x-amz-meta-") {
                user_bytes += name.len() - "x-amz-meta-".len() + value.len();
            }
            out.push((name.clone(), value.clone()));
        }
    }
    if user_bytes > USER_METADATA_BYTES_MAX {
        return err(Code::MetadataTooLarge, "Your metadata headers exceed the maximum allowed metadata size.");
    }
    Ok(out)
}

fn parse_tag_query(s: &str) -> S3Result<Vec<(String, String)>> {
    let tags = crate::server::parse_query(s)?;
    validate_tags(&tags)?;
    Ok(tags)
}

fn validate_tags(tags: &[(String, String)]) -> S3Result<()> {
    if tags.len() > TAGS_MAX {
        return err(Code::InvalidTag, "Object tags cannot be greater than 10");
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        if k.is_empty() || k.chars().count() > TAG_KEY_CHARS_MAX || v.chars().count() > TAG_VALUE_CHARS_MAX {
            return err(Code::InvalidTag, "The TagKey or TagValue you have provided is invalid");
        }
        if tags[..i].iter().any(|(k2, _)| k2 == k) {
            return err(Code::InvalidTag, "Cannot provide multiple Tags with the same key");
        }
    }
    Ok(())
}

/// The checksum a request asks for: its algorithm and, when sent as a header, its value.
fn requested_checksum(call: &Call) -> S3Result<Option<(Algorithm, Option<String>)>> {
    for algorithm in Algorithm::ALL {
        if let Some(value) = call.header(algorithm.header()) {
            return Ok(Some((algorithm, Some(value.to_owned()))));
        }
    }
    let named = call.header("x-amz-trailer").or(call.header("x-amz-sdk-checksum-algorithm"));
    match named {
        Some(name) => {
            let name = name.trim().trim_start_matches("x-amz-checksum-");
            match Algorithm::parse(name) {
                Some(a) => Ok(Some((a, None))),
                None => err(Code::InvalidRequest, format!("unsupported checksum algorithm {name}")),
            }
        }
        None => Ok(None),
    }
}

/// The writer of an object's bytes, sealing them first when the object is encrypted.
struct SealingWriter<'w> {
    writer: &'w mut DataWriter,
    sealer: Option<Sealer>,
    sealed: Vec<u8>,
}

impl<'w> SealingWriter<'w> {
    fn new(writer: &'w mut DataWriter, sealer: Option<Sealer>) -> Self {
        SealingWriter { writer, sealer, sealed: Vec::new() }
    }

    async fn write(&mut self, plain: &[u8]) -> S3Result<()> {
        match &mut self.sealer {
            Some(sealer) => {
                let n = sealer.push_into(plain, room(&mut self.sealed, sealer.push_bound(plain.len())))?;
                self.writer.write(&self.sealed[..n]).await?;
            }
            None => self.writer.write(plain).await?,
        }
        Ok(())
    }

    /// Seals the last partial package, if any.
    async fn finish(mut self) -> S3Result<()> {
        if let Some(sealer) = self.sealer.take() {
            let need = sealer.finish_bound();
            let n = sealer.finish_into(room(&mut self.sealed, need))?;
            self.writer.write(&self.sealed[..n]).await?;
        }
        Ok(())
    }
}

/// `buf`, grown to at least `need` bytes. It only grows: packages are sealed over what it
/// held, so its bytes are zeroed once, not on every write.
fn room(buf: &mut Vec<u8>, need: usize) -> &mut [u8] {
    if buf.len() < need {
        buf.resize(need, 0);
    }
    buf
}

/// The result of streaming a body into the engine.
struct Streamed {
    data: Finished,
    size: u64,
    md5: [u8; 16],
    checksum: Option<(String, String)>,
}

/// Streams the body into `writer`, hashing as it goes, and verifies Content-MD5 and the
/// checksum. On any error the data written so far is discarded.
async fn stream_body(
    ctx: &Ctx,
    call: &Call<'_>,
    body: &mut Body<'_>,
    mut writer: DataWriter,
    size_max: u64,
    sealer: Option<Sealer>,
) -> S3Result<Streamed> {
    let _slot = ctx.budget.acquire().await?;
    let result = stream_into(call, body, &mut writer, size_max, sealer, &ctx.md5).await;
    match result {
        Ok((md5, checksum, size)) => match writer.finish().await {
            Ok(data) => Ok(Streamed { data, size, md5, checksum }),
            Err(e) => Err(e.into()),
        },
        Err(e) => {
            writer.discard().await;
            Err(e)
        }
    }
}

/// Returns the MD5, the checksum and the size of the plaintext. With a sealer, what reaches
/// the writer is the sealed packages (sse.rs), in the same pass over each chunk.
async fn stream_into(
    call: &Call<'_>,
    body: &mut Body<'_>,
    writer: &mut DataWriter,
    size_max: u64,
    sealer: Option<Sealer>,
    md5_batcher: &CoreBatcher,
) -> S3Result<([u8; 16], Option<(String, String)>, u64)> {
    let content_md5 = match call.header("content-md5") {
        Some(v) => Some(
            b64_decode(v)
                .filter(|d| d.len() == 16)
                .ok_or_else(|| S3Error::new(Code::InvalidDigest, "The Content-MD5 you specified was invalid."))?,
        ),
        None => None,
    };
    let wanted = requested_checksum(call)?;
    let mut hasher = wanted.as_ref().map(|(a, _)| Hasher::new(*a));
    // Hashed with this core's other bodies (md5x.rs); the chunk goes to it once written.
    let mut md5 = Md5Stream::new(md5_batcher);
    let mut size = 0u64;
    let mut out = SealingWriter::new(writer, sealer);
    while let Some(chunk) = body.next().await? {
        if let Some(h) = &mut hasher {
            h.update(&chunk);
        }
        if size + chunk.len() as u64 > size_max {
            return Err(S3Error::new(
                Code::EntityTooLarge,
                "Your proposed upload exceeds the maximum allowed object size.",
            )
            .closing());
        }
        size += chunk.len() as u64;
        out.write(&chunk).await?;
        md5.update(chunk);
    }
    out.finish().await?;
    let md5 = md5.finish();
    if let Some(expected) = content_md5 {
        if expected != md5 {
            return err(Code::BadDigest, "The Content-MD5 you specified did not match what we received.");
        }
    }
    let checksum = match (wanted, hasher) {
        (Some((algorithm, header_value)), Some(h)) => {
            let computed = h.finish_base64();
            let claimed = header_value
                .or_else(|| body.trailers.iter().find(|(n, _)| *n == algorithm.header()).map(|(_, v)| v.clone()));
            match claimed {
                Some(c) if c.trim() != computed => {
                    return err(
                        Code::BadDigest,
                        format!("The {} you specified did not match the calculated checksum.", algorithm.name()),
                    );
                }
                _ => {}
            }
            Some((algorithm.name().to_owned(), computed))
        }
        _ => None,
    };
    Ok((md5, checksum, size))
}

fn put_condition(call: &Call) -> Option<PutCondition> {
    if call.header("if-none-match").map(str::trim) == Some("*") {
        return Some(PutCondition::IfNoneMatchAny);
    }
    call.header("if-match").map(|v| PutCondition::IfMatch(unquote(v).to_owned()))
}

fn checksum_headers(resp: Response, checksum: &Option<(String, String)>) -> Response {
    match checksum {
        Some((algorithm, value)) => match Algorithm::parse(algorithm) {
            Some(a) => resp.header(a.header(), value.clone()),
            None => resp,
        },
        None => resp,
    }
}

// ----- buckets -----

fn list_buckets(ctx: &Ctx) -> S3Result<Response> {
    let mut x = Xml::new("ListAllMyBucketsResult");
    x.start("Owner").elem("ID", &ctx.config.root_user).elem("DisplayName", &ctx.config.root_user).end();
    x.start("Buckets");
    for (name, created) in ctx.engine.list_buckets() {
        x.start("Bucket").elem("Name", &name).elem("CreationDate", &iso8601(created)).end();
    }
    x.end();
    Ok(Response::xml(x.finish()))
}

async fn create_bucket(ctx: &Ctx, bucket: &str, body: &mut Body<'_>) -> S3Result<Response> {
    if !valid_bucket_name(bucket) {
        return err(Code::InvalidBucketName, "The specified bucket is not valid.");
    }
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    if !doc.iter().all(u8::is_ascii_whitespace) {
        let root = parse(&doc)?;
        if root.name != "CreateBucketConfiguration" {
            return err(
                Code::MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema.",
            );
        }
    }
    ctx.engine.create_bucket(bucket).await?;
    Ok(Response::new(200).header("Location", format!("/{bucket}")))
}

fn head_bucket(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    Ok(Response::new(200).header("x-amz-bucket-region", ctx.config.region.clone()))
}

/// RestoreObject: brings a transitioned object's bytes back for `Days` (202 when a restore
/// starts, 200 when a restored copy exists and only its expiry moves).
async fn restore_object(ctx: &Ctx, bucket: &str, key: &str, body: &mut Body<'_>) -> S3Result<Response> {
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    let root = parse(&doc)?;
    if root.name != "RestoreRequest" {
        return err(
            Code::MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema.",
        );
    }
    let days = match root.text_of("Days").map(|d| d.trim().parse::<u32>()) {
        Some(Ok(days)) if days > 0 => days,
        _ => return err(Code::InvalidArgument, "Days must be a positive integer"),
    };
    let started = ctx.mover.restore(bucket, key, days).await?;
    Ok(Response::new(if started { 202 } else { 200 }))
}

async fn put_bucket_lifecycle(ctx: &Ctx, bucket: &str, body: &mut Body<'_>) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    rules::parse(&doc, &|tier| ctx.mover.tier_exists(tier))?;
    let doc = String::from_utf8(doc).map_err(|_| S3Error::new(Code::MalformedXML, "the document is not UTF-8"))?;
    ctx.engine.put_bucket_config(bucket, rules::BUCKET_CONFIG, Some(doc)).await?;
    Ok(Response::new(200))
}

async fn put_bucket_encryption(ctx: &Ctx, bucket: &str, body: &mut Body<'_>) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    let config = sse::parse_bucket_config(&doc)?;
    if ctx.kms.is_none() {
        return err(Code::NotImplemented, "Bucket default encryption needs a KMS (set FERRITE_KMS_SECRET_KEY).");
    }
    ctx.engine.put_bucket_config(bucket, sse::BUCKET_CONFIG, Some(config)).await?;
    Ok(Response::new(200))
}

fn get_bucket_encryption(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    match ctx.engine.bucket_config(bucket, sse::BUCKET_CONFIG)? {
        Some(config) => Ok(Response::xml(sse::bucket_config_xml(&config))),
        None => err(
            Code::ServerSideEncryptionConfigurationNotFoundError,
            "The server side encryption configuration was not found",
        ),
    }
}

async fn delete_bucket(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    ctx.engine.delete_bucket(bucket).await?;
    Ok(Response::new(204))
}

fn bucket_location(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    let region = if ctx.config.region == "us-east-1" { "" } else { ctx.config.region.as_str() };
    let body = format!(
        "{}<LocationConstraint xmlns=\"{}\">{}</LocationConstraint>",
        crate::xml::XML_DECL,
        crate::xml::S3_NS,
        region
    );
    Ok(Response::xml(body.into_bytes()))
}

// ----- listing -----

fn url_encode_key(s: &str) -> String {
    crate::sigv4::uri_encode(s, false)
}

async fn list_objects(ctx: &Ctx, call: &Call<'_>, bucket: &str) -> S3Result<Response> {
    let v2 = call.q("list-type") == Some("2");
    let prefix = call.q("prefix").unwrap_or("");
    let delimiter = call.q("delimiter").filter(|d| !d.is_empty());
    let max_keys = match call.q("max-keys") {
        Some(v) => {
            v.parse::<i64>().ok().filter(|n| *n >= 0).or_invalid("max-keys must be a non-negative integer")? as usize
        }
        None => LIST_KEYS_MAX,
    }
    .min(LIST_KEYS_MAX);
    let url = match call.q("encoding-type") {
        Some("url") => true,
        Some(_) => return err(Code::InvalidArgument, "Invalid Encoding Method specified in Request"),
        None => false,
    };
    let enc = |s: &str| if url { url_encode_key(s) } else { s.to_owned() };
    let token = call.q("continuation-token");
    let start_after = if v2 {
        match token {
            Some(t) => String::from_utf8(b64_decode(t).unwrap_or_default())
                .ok()
                .filter(|s| !s.is_empty())
                .or_invalid("The continuation token provided is incorrect")?,
            None => call.q("start-after").unwrap_or("").to_owned(),
        }
    } else {
        call.q("marker").unwrap_or("").to_owned()
    };
    let page = if max_keys == 0 {
        require_bucket(ctx, bucket)?;
        ferrite_engine::ListPage::default()
    } else {
        ctx.engine
            .list(bucket, prefix, delimiter, &start_after, max_keys, Some(ferrite_tiering::stub::TIER_HEADER))
            .await?
    };
    let mut x = Xml::new("ListBucketResult");
    x.elem("Name", bucket).elem("Prefix", &enc(prefix));
    if v2 {
        if let Some(t) = token {
            x.elem("ContinuationToken", t);
        }
        if let Some(s) = call.q("start-after") {
            x.elem("StartAfter", &enc(s));
        }
        x.elem("KeyCount", &page.items.len().to_string());
    } else {
        x.elem("Marker", &enc(call.q("marker").unwrap_or("")));
    }
    x.elem("MaxKeys", &max_keys.to_string());
    if let Some(d) = delimiter {
        x.elem("Delimiter", &enc(d));
    }
    if url {
        x.elem("EncodingType", "url");
    }
    x.elem("IsTruncated", if page.truncated { "true" } else { "false" });
    if page.truncated {
        if let Some(last) = page.items.last() {
            if v2 {
                x.elem("NextContinuationToken", &b64(last.name().as_bytes()));
            } else {
                x.elem("NextMarker", &enc(last.name()));
            }
        }
    }
    for item in &page.items {
        if let ListItem::Object(object) = item {
            x.start("Contents")
                .elem("Key", &enc(&object.key))
                .elem("LastModified", &iso8601(object.mtime_ms))
                .elem("ETag", &quoted(&object.etag))
                .elem("Size", &object.size.to_string())
                .elem("StorageClass", object.reported_header.as_deref().unwrap_or("STANDARD"));
            if !v2 || call.q("fetch-owner") == Some("true") {
                x.start("Owner").elem("ID", &ctx.config.root_user).elem("DisplayName", &ctx.config.root_user).end();
            }
            x.end();
        }
    }
    for item in &page.items {
        if let ListItem::Prefix(p) = item {
            x.start("CommonPrefixes").elem("Prefix", &enc(p)).end();
        }
    }
    Ok(Response::xml(x.finish()))
}

// ----- objects -----

async fn put_object(ctx: &Ctx, call: &Call<'_>, bucket: &str, key: &str, body: &mut Body<'_>) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    if call.header("content-length").is_none() && call.header("transfer-encoding").is_none() {
        return err(Code::MissingContentLength, "You must provide the Content-Length HTTP header.");
    }
    let declared = call
        .header("x-amz-decoded-content-length")
        .or(call.header("content-length"))
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > PUT_BYTES_MAX) {
        return Err(S3Error::new(
            Code::EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size.",
        )
        .closing());
    }
    let mut headers = stored_headers(call)?;
    if !headers.iter().any(|(n, _)| n == "content-type") {
        headers.push(("content-type".into(), DEFAULT_CONTENT_TYPE.into()));
    }
    let tags = match call.header("x-amz-tagging") {
        Some(t) => parse_tag_query(t)?,
        None => Vec::new(),
    };
    let cond = put_condition(call);
    let enc = sse::for_new_object(ctx, call, bucket, key).await?;
    if let Some(enc) = &enc {
        headers.extend(enc.stored_headers());
    }
    let writer = ctx.engine.writer(bucket, key, true)?;
    let sealer = match &enc {
        Some(enc) => Some(enc.sealer(writer.file_id())?),
        None => None,
    };
    let streamed = stream_body(ctx, call, body, writer, PUT_BYTES_MAX, sealer).await?;
    let etag = etag_of(enc.as_ref(), &streamed.md5);
    let meta = ObjectMeta {
        size: streamed.size,
        etag: etag.clone(),
        mtime_ms: now_ms(),
        headers,
        checksum: streamed.checksum.clone(),
        tags,
        part_sizes: Vec::new(),
        data: DataLoc::Parts(Vec::new()),
    };
    ctx.engine.put_object(bucket, key, meta, streamed.data, cond).await?;
    let resp = checksum_headers(Response::new(200).header("ETag", quoted(&etag)), &streamed.checksum);
    Ok(with_sse_headers(resp, enc.as_ref()))
}

/// The ETag of an object or part: its MD5, or for SSE-KMS / SSE-C an opaque value (`Encryption::etag`).
fn etag_of(enc: Option<&sse::Encryption>, md5: &[u8; 16]) -> String {
    match enc {
        Some(enc) => enc.etag(md5),
        None => hex(md5),
    }
}

fn with_sse_headers(resp: Response, enc: Option<&sse::Encryption>) -> Response {
    match enc {
        Some(enc) => enc.response_headers(resp),
        None => resp,
    }
}

/// Parses a Range header against an object size: Ok(None) = whole object.
pub fn parse_range(header: &str, size: u64) -> S3Result<Option<(u64, u64)>> {
    let invalid = || err(Code::InvalidRange, "The requested range is not satisfiable");
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else { return Ok(None) };
        if n == 0 || size == 0 {
            return invalid();
        }
        return Ok(Some((size.saturating_sub(n), size)));
    }
    let Ok(start) = a.parse::<u64>() else { return Ok(None) };
    let end = if b.is_empty() {
        size
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => (e + 1).min(size),
            _ => return Ok(None),
        }
    };
    if start >= size {
        return invalid();
    }
    Ok(Some((start, end)))
}

fn parse_http_date(s: &str) -> Option<i64> {
    httpdate::parse_http_date(s).ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs() as i64)
}

/// Conditional request headers (RFC 7232 order, as S3 applies them).
fn check_conditions(call: &Call, meta: &ObjectMeta, prefix: &str) -> S3Result<()> {
    let h = |name: &str| call.header(&format!("{prefix}{name}"));
    let mtime = meta.mtime_ms / 1000;
    let etag_matches = |list: &str| list.split(',').any(|e| unquote(e) == "*" || unquote(e) == meta.etag);
    let failed = || err(Code::PreconditionFailed, "At least one of the pre-conditions you specified did not hold");
    let not_modified = || Err(S3Error::new(Code::NotModified, "Not Modified"));
    let if_match = h("if-match");
    if let Some(v) = if_match {
        if !etag_matches(v) {
            return failed();
        }
    } else if let Some(t) = h("if-unmodified-since").and_then(parse_http_date) {
        if mtime > t {
            return failed();
        }
    }
    let if_none_match = h("if-none-match");
    if let Some(v) = if_none_match {
        if etag_matches(v) {
            return if prefix.is_empty() { not_modified() } else { failed() };
        }
    } else if let Some(t) = h("if-modified-since").and_then(parse_http_date) {
        if mtime <= t {
            return if prefix.is_empty() { not_modified() } else { failed() };
        }
    }
    Ok(())
}

async fn get_object(ctx: &Ctx, call: &Call<'_>, bucket: &str, key: &str, head_only: bool) -> S3Result<Response> {
    let meta = ctx.engine.head_object(bucket, key).await?;
    let enc = sse::open_stored(ctx, call, bucket, key, &meta.headers, false).await?;
    check_conditions(call, &meta, "")?;
    let range = match call.header("range") {
        Some(r) => match parse_range(r, meta.size) {
            Ok(r) => r,
            Err(e) if head_only => return Err(e),
            Err(e) => return Err(e),
        },
        None => None,
    };
    if call.has("partNumber") {
        return err(Code::NotImplemented, "GetObject with partNumber is not implemented yet");
    }
    let (start, end) = range.unwrap_or((0, meta.size));
    let mut resp = Response::new(if range.is_some() { 206 } else { 200 });
    resp.content_length = Some(end - start);
    for (name, value) in &meta.headers {
        if !name.starts_with(sse::INTERNAL_PREFIX) {
            resp.headers.push((name.clone(), value.clone()));
        }
    }
    resp = with_sse_headers(resp, enc.as_ref());
    let overrides = [
        ("response-content-type", "content-type"),
        ("response-content-language", "content-language"),
        ("response-expires", "expires"),
        ("response-cache-control", "cache-control"),
        ("response-content-disposition", "content-disposition"),
        ("response-content-encoding", "content-encoding"),
    ];
    for (param, header) in overrides {
        if let Some(v) = call.q(param) {
            resp.headers.retain(|(n, _)| n != header);
            resp.headers.push((header.to_owned(), v.to_owned()));
        }
    }
    resp = resp
        .header("ETag", quoted(&meta.etag))
        .header("Last-Modified", http_date(meta.mtime_ms))
        .header("Accept-Ranges", "bytes");
    if !meta.tags.is_empty() {
        resp = resp.header("x-amz-tagging-count", meta.tags.len().to_string());
    }
    if let Some(remote) = stub::remote_of(&meta) {
        resp = resp.header("x-amz-storage-class", remote.tier);
        if stub::restore_pending(&meta).is_some() {
            resp = resp.header("x-amz-restore", "ongoing-request=\"true\"");
        } else if let Some(until) = stub::restored_until(&meta) {
            resp = resp
                .header("x-amz-restore", format!("ongoing-request=\"false\", expiry-date=\"{}\"", http_date(until)));
        }
    }
    if !meta.part_sizes.is_empty() {
        resp = resp.header("x-amz-mp-parts-count", meta.part_sizes.len().to_string());
    }
    if range.is_some() {
        resp = resp.header("Content-Range", format!("bytes {start}-{}/{}", end.saturating_sub(1), meta.size));
    } else if call.header("x-amz-checksum-mode").is_some_and(|v| v.eq_ignore_ascii_case("enabled")) {
        resp = checksum_headers(resp, &meta.checksum);
        if meta.checksum.as_ref().is_some_and(|(_, v)| v.contains('-')) {
            resp = resp.header("x-amz-checksum-type", "COMPOSITE");
        } else if meta.checksum.is_some() {
            resp = resp.header("x-amz-checksum-type", "FULL_OBJECT");
        }
    }
    if !head_only && end > start {
        let slot = ctx.budget.acquire().await?;
        let mut stream = sse::object_stream(&ctx.mover, bucket, key, &meta, enc.as_ref(), start, end);
        stream.prime().await?;
        resp.body = RespBody::Object(stream, slot);
    }
    Ok(resp)
}

fn parse_copy_source(call: &Call) -> S3Result<(String, String)> {
    let raw = call.header("x-amz-copy-source").unwrap_or("");
    let raw = raw.split_once("?versionId=").map(|(s, _)| s).unwrap_or(raw);
    let decoded = crate::server::percent_decode(raw)?;
    let trimmed = decoded.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_owned(), k.to_owned())),
        _ => err(Code::InvalidArgument, "Copy Source must mention the source bucket and key: sourcebucket/sourcekey"),
    }
}

/// Copies plaintext bytes [start, end) of the source object (decrypting it if it is
/// encrypted) into `writer` (sealing them again with `sealer`). Returns the plaintext MD5.
async fn copy_data(
    ctx: &Ctx,
    src: (&str, &str),
    meta: &ObjectMeta,
    src_enc: Option<&sse::Encryption>,
    (start, end): (u64, u64),
    writer: &mut DataWriter,
    sealer: Option<Sealer>,
) -> S3Result<[u8; 16]> {
    let _slot = ctx.budget.acquire().await?;
    let mut reader = sse::object_stream(&ctx.mover, src.0, src.1, meta, src_enc, start, end);
    let mut md5 = md5_new();
    let mut out = SealingWriter::new(writer, sealer);
    while let Some(chunk) = reader.next_chunk().await? {
        md5::Digest::update(&mut md5, &chunk);
        out.write(&chunk).await?;
    }
    out.finish().await?;
    Ok(md5_finish(md5))
}

async fn copy_object(ctx: &Ctx, call: &Call<'_>, bucket: &str, key: &str) -> S3Result<Response> {
    let (src_bucket, src_key) = parse_copy_source(call)?;
    let src = ctx.engine.head_object(&src_bucket, &src_key).await?;
    let src_enc = sse::open_stored(ctx, call, &src_bucket, &src_key, &src.headers, true).await?;
    check_conditions(call, &src, "x-amz-copy-source-")?;
    let replace = match call.header("x-amz-metadata-directive") {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(_) => return err(Code::InvalidArgument, "Unknown metadata directive."),
    };
    let changes_encryption = call.header("x-amz-server-side-encryption").is_some()
        || call.header("x-amz-server-side-encryption-customer-algorithm").is_some();
    if src_bucket == bucket
        && src_key == key
        && !replace
        && !changes_encryption
        && call.header("x-amz-tagging-directive").is_none()
    {
        return err(
            Code::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        );
    }
    let mut headers = if replace { stored_headers(call)? } else { src.headers.clone() };
    // The copy is encrypted as the request (or the bucket) says, not as the source was.
    headers.retain(|(n, _)| !n.starts_with(sse::INTERNAL_PREFIX));
    let enc = sse::for_new_object(ctx, call, bucket, key).await?;
    if let Some(enc) = &enc {
        headers.extend(enc.stored_headers());
    }
    let tags = match call.header("x-amz-tagging-directive") {
        Some("REPLACE") => parse_tag_query(call.header("x-amz-tagging").unwrap_or(""))?,
        _ => src.tags.clone(),
    };
    let mut writer = ctx.engine.writer(bucket, key, true)?;
    let sealer = match &enc {
        Some(enc) => Some(enc.sealer(writer.file_id())?),
        None => None,
    };
    let copied =
        copy_data(ctx, (&src_bucket, &src_key), &src, src_enc.as_ref(), (0, src.size), &mut writer, sealer).await;
    let md5 = match copied {
        Ok(md5) => md5,
        Err(e) => {
            writer.discard().await;
            return Err(e);
        }
    };
    let data = writer.finish().await?;
    let etag = etag_of(enc.as_ref(), &md5);
    let mtime_ms = now_ms();
    let checksum = if src.part_sizes.is_empty() { src.checksum.clone() } else { None };
    let meta = ObjectMeta {
        size: src.size,
        etag: etag.clone(),
        mtime_ms,
        headers,
        checksum,
        tags,
        part_sizes: Vec::new(),
        data: DataLoc::Parts(Vec::new()),
    };
    ctx.engine.put_object(bucket, key, meta, data, put_condition(call)).await?;
    let mut x = Xml::new("CopyObjectResult");
    x.elem("LastModified", &iso8601(mtime_ms)).elem("ETag", &quoted(&etag));
    Ok(with_sse_headers(Response::xml(x.finish()), enc.as_ref()))
}

// ----- tagging -----

async fn put_tagging(ctx: &Ctx, bucket: &str, key: &str, body: &mut Body<'_>) -> S3Result<Response> {
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    let root = parse(&doc)?;
    if root.name != "Tagging" {
        return err(
            Code::MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema.",
        );
    }
    let mut tags = Vec::new();
    if let Some(set) = root.child("TagSet") {
        for tag in set.all("Tag") {
            let (Some(k), Some(v)) = (tag.text_of("Key"), tag.text_of("Value").or(Some(""))) else {
                return err(
                    Code::MalformedXML,
                    "The XML you provided was not well-formed or did not validate against our published schema.",
                );
            };
            tags.push((k.to_owned(), v.to_owned()));
        }
    }
    validate_tags(&tags)?;
    ctx.engine.set_tags(bucket, key, tags).await?;
    Ok(Response::new(200))
}

async fn get_tagging(ctx: &Ctx, bucket: &str, key: &str) -> S3Result<Response> {
    let meta = ctx.engine.head_object(bucket, key).await?;
    let mut x = Xml::new("Tagging");
    x.start("TagSet");
    for (k, v) in &meta.tags {
        x.start("Tag").elem("Key", k).elem("Value", v).end();
    }
    x.end();
    Ok(Response::xml(x.finish()))
}

// ----- delete objects -----

async fn delete_objects(ctx: &Ctx, bucket: &str, body: &mut Body<'_>) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    let root = parse(&doc)?;
    let malformed = || {
        err(
            Code::MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema.",
        )
    };
    if root.name != "Delete" {
        return malformed();
    }
    let quiet = root.text_of("Quiet").is_some_and(|q| q.trim() == "true");
    let keys: Vec<&str> = root.all("Object").filter_map(|o| o.text_of("Key")).collect();
    if keys.is_empty() || keys.len() > DELETE_OBJECTS_MAX || keys.len() != root.all("Object").count() {
        return malformed();
    }
    let mut x = Xml::new("DeleteResult");
    // Start every delete before awaiting any, so the owning cores commit them together
    // (one log write and fdatasync per core per batch instead of one per key); where tiers
    // exist each first looks the object up, to remove the blob of one that moved to a tier.
    let tasks: Vec<_> = keys
        .iter()
        .map(|key| {
            let (mover, bucket, key) = (ctx.mover.clone(), bucket.to_owned(), (*key).to_owned());
            monoio::spawn(async move { mover.delete_object(&bucket, &key).await })
        })
        .collect();
    for (key, task) in keys.iter().zip(tasks) {
        match task.await {
            Ok(()) => {
                if !quiet {
                    x.start("Deleted").elem("Key", key).end();
                }
            }
            Err(e) => {
                let e = S3Error::from(e);
                x.start("Error").elem("Key", key).elem("Code", e.code.as_str()).elem("Message", &e.message).end();
            }
        }
    }
    Ok(Response::xml(x.finish()))
}

// ----- multipart -----

async fn create_upload(ctx: &Ctx, call: &Call<'_>, bucket: &str, key: &str) -> S3Result<Response> {
    let mut headers = stored_headers(call)?;
    if !headers.iter().any(|(n, _)| n == "content-type") {
        headers.push(("content-type".into(), DEFAULT_CONTENT_TYPE.into()));
    }
    if let Some(t) = call.header("x-amz-tagging") {
        parse_tag_query(t)?;
        headers.push(("x-ferrite-tagging".into(), t.to_owned()));
    }
    let algorithm = match call.header("x-amz-checksum-algorithm") {
        Some(a) => Some(Algorithm::parse(a).or_invalid("unsupported checksum algorithm")?.name().to_owned()),
        None => None,
    };
    let mut enc = sse::for_new_object(ctx, call, bucket, key).await?;
    if let Some(enc) = &mut enc {
        enc.multipart = true;
        headers.extend(enc.stored_headers());
    }
    let upload_id = ctx.engine.create_upload(bucket, key, headers, algorithm.clone()).await?;
    let mut x = Xml::new("InitiateMultipartUploadResult");
    x.elem("Bucket", bucket).elem("Key", key).elem("UploadId", &upload_id);
    let mut resp = with_sse_headers(Response::xml(x.finish()), enc.as_ref());
    if let Some(a) = algorithm {
        resp = resp.header("x-amz-checksum-algorithm", a);
    }
    Ok(resp)
}

fn part_number(call: &Call) -> S3Result<u32> {
    match call.q("partNumber").and_then(|v| v.parse::<u32>().ok()) {
        Some(n) if (1..=PART_NUMBER_MAX).contains(&n) => Ok(n),
        _ => err(Code::InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"),
    }
}

async fn upload_part(ctx: &Ctx, call: &Call<'_>, bucket: &str, key: &str, body: &mut Body<'_>) -> S3Result<Response> {
    let number = part_number(call)?;
    let upload_id = call.q("uploadId").unwrap_or("");
    let upload = ctx.engine.get_upload(bucket, key, upload_id).await?;
    let enc = sse::open_stored(ctx, call, bucket, key, &upload.headers, false).await?;
    if call.header("x-amz-copy-source").is_some() {
        return upload_part_copy(ctx, call, (bucket, key), upload_id, number, enc.as_ref()).await;
    }
    if call.header("content-length").is_none() && call.header("transfer-encoding").is_none() {
        return err(Code::MissingContentLength, "You must provide the Content-Length HTTP header.");
    }
    let writer = ctx.engine.writer(bucket, key, false)?;
    let sealer = match &enc {
        Some(enc) => Some(enc.sealer(writer.file_id())?),
        None => None,
    };
    let streamed = stream_body(ctx, call, body, writer, PUT_BYTES_MAX, sealer).await?;
    let Some(loc) = streamed.data.part() else {
        return err(Code::InternalError, "a part was inlined");
    };
    let etag = etag_of(enc.as_ref(), &streamed.md5);
    // The stored (ciphertext) size: what the engine reads back. ListParts and Complete
    // turn it into the plaintext size for encrypted uploads.
    let part = PartMeta {
        file_id: loc.file_id,
        size: loc.size,
        etag: etag.clone(),
        mtime_ms: now_ms(),
        checksum: streamed.checksum.clone(),
    };
    ctx.engine.put_part(bucket, key, upload_id, number, part).await?;
    let resp = checksum_headers(Response::new(200).header("ETag", quoted(&etag)), &streamed.checksum);
    Ok(with_sse_headers(resp, enc.as_ref()))
}

async fn upload_part_copy(
    ctx: &Ctx,
    call: &Call<'_>,
    (bucket, key): (&str, &str),
    upload_id: &str,
    number: u32,
    enc: Option<&sse::Encryption>,
) -> S3Result<Response> {
    let (src_bucket, src_key) = parse_copy_source(call)?;
    let src = ctx.engine.head_object(&src_bucket, &src_key).await?;
    let src_enc = sse::open_stored(ctx, call, &src_bucket, &src_key, &src.headers, true).await?;
    check_conditions(call, &src, "x-amz-copy-source-")?;
    let (start, end) = match call.header("x-amz-copy-source-range") {
        Some(r) => {
            let parsed = r
                .strip_prefix("bytes=")
                .and_then(|s| s.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
            match parsed {
                Some((a, b)) if a <= b && b < src.size => (a, b + 1),
                _ => return err(Code::InvalidRange, "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"),
            }
        }
        None => (0, src.size),
    };
    let mut writer = ctx.engine.writer(bucket, key, false)?;
    let sealer = match enc {
        Some(enc) => Some(enc.sealer(writer.file_id())?),
        None => None,
    };
    let copied =
        copy_data(ctx, (&src_bucket, &src_key), &src, src_enc.as_ref(), (start, end), &mut writer, sealer).await;
    let md5 = match copied {
        Ok(md5) => md5,
        Err(e) => {
            writer.discard().await;
            return Err(e);
        }
    };
    let Some(loc) = writer.finish().await?.part().cloned() else {
        return err(Code::InternalError, "a part was inlined");
    };
    let etag = etag_of(enc, &md5);
    let mtime_ms = now_ms();
    let part = PartMeta { file_id: loc.file_id, size: loc.size, etag: etag.clone(), mtime_ms, checksum: None };
    ctx.engine.put_part(bucket, key, upload_id, number, part).await?;
    let mut x = Xml::new("CopyPartResult");
    x.elem("LastModified", &iso8601(mtime_ms)).elem("ETag", &quoted(&etag));
    Ok(with_sse_headers(Response::xml(x.finish()), enc))
}

async fn complete_upload(
    ctx: &Ctx,
    call: &Call<'_>,
    bucket: &str,
    key: &str,
    body: &mut Body<'_>,
) -> S3Result<Response> {
    let upload_id = call.q("uploadId").unwrap_or("");
    let upload = ctx.engine.get_upload(bucket, key, upload_id).await?;
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    let root = parse(&doc)?;
    let malformed = || {
        err(
            Code::MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema.",
        )
    };
    if root.name != "CompleteMultipartUpload" {
        return malformed();
    }
    let mut listed = Vec::new();
    for part in root.all("Part") {
        let Some(number) = part.text_of("PartNumber").and_then(|n| n.trim().parse::<u32>().ok()) else {
            return malformed();
        };
        let etag = unquote(part.text_of("ETag").unwrap_or("")).to_owned();
        listed.push((number, etag));
    }
    if listed.is_empty() {
        return malformed();
    }
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return err(
            Code::InvalidPartOrder,
            "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
        );
    }
    let invalid_part = || {
        err(Code::InvalidPart, "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.")
    };
    let mut parts = Vec::new();
    for (number, etag) in &listed {
        match upload.parts.get(number) {
            Some(p) if p.etag == *etag => parts.push((*number, p.clone())),
            _ => return invalid_part(),
        }
    }
    // Parts of an encrypted upload are stored sealed: their plaintext sizes are derived.
    let encrypted = sse::is_encrypted(&upload.headers);
    let plain = |stored: u64| if encrypted { sse::plain_len(stored) } else { stored };
    for (_, p) in &parts[..parts.len() - 1] {
        if plain(p.size) < PART_BYTES_MIN {
            return err(Code::EntityTooSmall, "Your proposed upload is smaller than the minimum allowed object size.");
        }
    }
    let mut md5s = md5_new();
    for (_, p) in &parts {
        md5::Digest::update(&mut md5s, unhex(&p.etag).unwrap_or_default());
    }
    let etag = format!("{}-{}", hex(&md5_finish(md5s)), parts.len());
    let checksum = upload.checksum_algorithm.as_deref().and_then(Algorithm::parse).and_then(|a| {
        let mut h = Hasher::new(a);
        for (_, p) in &parts {
            let (_, value) = p.checksum.as_ref()?;
            h.update(&b64_decode(value)?);
        }
        Some((a.name().to_owned(), format!("{}-{}", h.finish_base64(), parts.len())))
    });
    let mut headers = upload.headers.clone();
    let tags = match headers.iter().position(|(n, _)| n == "x-ferrite-tagging") {
        Some(i) => parse_tag_query(&headers.remove(i).1)?,
        None => Vec::new(),
    };
    let meta = ObjectMeta {
        size: parts.iter().map(|(_, p)| plain(p.size)).sum(),
        etag: etag.clone(),
        mtime_ms: now_ms(),
        headers,
        checksum: checksum.clone(),
        tags,
        part_sizes: parts.iter().map(|(_, p)| plain(p.size)).collect(),
        data: DataLoc::Parts(parts.iter().map(|(_, p)| PartLoc { file_id: p.file_id, size: p.size }).collect()),
    };
    let used = parts.iter().map(|(n, p)| (*n, p.file_id)).collect();
    ctx.engine.complete_upload(bucket, key, upload_id, meta, used, put_condition(call)).await?;
    let mut x = Xml::new("CompleteMultipartUploadResult");
    x.elem("Location", &format!("/{bucket}/{key}"))
        .elem("Bucket", bucket)
        .elem("Key", key)
        .elem("ETag", &quoted(&etag));
    if let Some((a, v)) = &checksum {
        let name = match Algorithm::parse(a) {
            Some(Algorithm::Crc32) => "ChecksumCRC32",
            Some(Algorithm::Crc32c) => "ChecksumCRC32C",
            Some(Algorithm::Crc64Nvme) => "ChecksumCRC64NVME",
            Some(Algorithm::Sha1) => "ChecksumSHA1",
            _ => "ChecksumSHA256",
        };
        x.elem(name, v);
    }
    Ok(Response::xml(x.finish()))
}

async fn list_parts(ctx: &Ctx, call: &Call<'_>, bucket: &str, key: &str) -> S3Result<Response> {
    let upload_id = call.q("uploadId").unwrap_or("");
    let upload = ctx.engine.get_upload(bucket, key, upload_id).await?;
    let max_parts = call.q("max-parts").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1000).min(1000);
    let marker = call.q("part-number-marker").and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let selected: Vec<_> = upload.parts.range(marker + 1..).take(max_parts + 1).collect();
    let truncated = selected.len() > max_parts;
    let encrypted = sse::is_encrypted(&upload.headers);
    let mut x = Xml::new("ListPartsResult");
    x.elem("Bucket", bucket).elem("Key", key).elem("UploadId", upload_id);
    x.elem("PartNumberMarker", &marker.to_string()).elem("MaxParts", &max_parts.to_string());
    x.elem("IsTruncated", if truncated { "true" } else { "false" });
    let shown = &selected[..selected.len().min(max_parts)];
    if let Some((n, _)) = shown.last() {
        x.elem("NextPartNumberMarker", &n.to_string());
    }
    x.elem("StorageClass", "STANDARD");
    for (n, p) in shown {
        x.start("Part")
            .elem("PartNumber", &n.to_string())
            .elem("LastModified", &iso8601(p.mtime_ms))
            .elem("ETag", &quoted(&p.etag))
            .elem("Size", &(if encrypted { sse::plain_len(p.size) } else { p.size }).to_string());
        if let Some((a, v)) = &p.checksum {
            x.elem(&format!("Checksum{a}"), v);
        }
        x.end();
    }
    Ok(Response::xml(x.finish()))
}

async fn list_uploads(ctx: &Ctx, call: &Call<'_>, bucket: &str) -> S3Result<Response> {
    let prefix = call.q("prefix").unwrap_or("");
    let key_marker = call.q("key-marker").unwrap_or("");
    let id_marker = if key_marker.is_empty() { "" } else { call.q("upload-id-marker").unwrap_or("") };
    let max = call.q("max-uploads").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1000).min(1000);
    // A key marker without an upload id marker skips every upload of that key.
    let id_marker_eff = if !key_marker.is_empty() && id_marker.is_empty() { "\u{10FFFF}" } else { id_marker };
    let uploads = ctx.engine.list_uploads(bucket, prefix, key_marker, id_marker_eff, max).await?;
    let truncated = uploads.len() > max;
    let shown = &uploads[..uploads.len().min(max)];
    let mut x = Xml::new("ListMultipartUploadsResult");
    x.elem("Bucket", bucket).elem("KeyMarker", key_marker).elem("UploadIdMarker", id_marker).elem("Prefix", prefix);
    if let Some(last) = shown.last().filter(|_| truncated) {
        x.elem("NextKeyMarker", &last.key).elem("NextUploadIdMarker", &last.upload_id);
    }
    x.elem("MaxUploads", &max.to_string()).elem("IsTruncated", if truncated { "true" } else { "false" });
    for u in shown {
        x.start("Upload").elem("Key", &u.key).elem("UploadId", &u.upload_id);
        x.start("Initiator").elem("ID", &ctx.config.root_user).elem("DisplayName", &ctx.config.root_user).end();
        x.start("Owner").elem("ID", &ctx.config.root_user).elem("DisplayName", &ctx.config.root_user).end();
        x.elem("StorageClass", "STANDARD").elem("Initiated", &iso8601(u.initiated_ms)).end();
    }
    Ok(Response::xml(x.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 100)));
        assert_eq!(parse_range("bytes=-5", 100).unwrap(), Some((95, 100)));
        assert_eq!(parse_range("bytes=-500", 100).unwrap(), Some((0, 100)));
        assert_eq!(parse_range("bytes=50-1000", 100).unwrap(), Some((50, 100)));
        assert_eq!(parse_range("bytes=100-", 100).unwrap_err().code, Code::InvalidRange);
        assert_eq!(parse_range("bytes=0-0", 0).unwrap_err().code, Code::InvalidRange);
        assert_eq!(parse_range("bytes=9-1", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100).unwrap(), None);
    }

    #[test]
    fn bucket_names_and_dates() {
        for ok in ["abc", "my-bucket.1", "a1b"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in ["ab", "ABC", "-abc", "abc-", "a..b", "192.168.1.1", "a_b", &"a".repeat(64)] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_868_800_123), "2000-03-01T00:00:00.123Z");
    }
}
