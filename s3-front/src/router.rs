//! Routing: a request's target (bucket and key, path-style or virtual-host-style), its query
//! and the headers that choose between operations become an `Endpoint`, whose inputs are
//! parsed and validated here, once, so a bad value gets the same S3 error whichever
//! operation it came with. Each endpoint names the permissions it needs (`access`).
//!
//! Routing runs after SigV4 (a bad argument from an unsigned client is AccessDenied, as
//! before); only the metrics are answered before it (`unsigned_endpoint`).

use std::borrow::Cow;

use crate::access::{Access, Action, Resource};
use crate::checksum::b64_decode;
use crate::error::{err, Code, S3Error, S3Result};
use crate::http::{header_value_is_safe, Request};
use crate::limits::{
    BUCKET_NAME_BYTES_MAX, KEY_BYTES_MAX, LIST_KEYS_MAX, LIST_PARTS_MAX, LIST_UPLOADS_MAX, PART_NUMBER_MAX,
};

/// No bucket of this name can be created: its paths are the admin API and the metrics.
pub const RESERVED_BUCKET: &str = "ferrite";

/// The query parameters a GetObject may carry to replace a header of the answer, and that
/// header.
pub const RESPONSE_OVERRIDES: [(&str, &str); 6] = [
    ("response-content-type", "content-type"),
    ("response-content-language", "content-language"),
    ("response-expires", "expires"),
    ("response-cache-control", "cache-control"),
    ("response-content-disposition", "content-disposition"),
    ("response-content-encoding", "content-encoding"),
];

/// The query parameters of ListObjects (v1 and v2); a bucket GET with any other is not a
/// listing.
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

/// What a request's path and Host name: the decoded path (what SigV4 signs), the bucket and
/// the key.
pub struct Target {
    pub path: String,
    pub bucket: Option<String>,
    pub key: Option<String>,
}

impl Target {
    /// Reads the bucket from the Host name (`BUCKET.domain`) when `domain` is set and the
    /// host is one of its subdomains, else from the path's first segment.
    pub fn parse(req: &Request, domain: Option<&str>) -> S3Result<Target> {
        let path = percent_decode(&req.raw_path)?;
        let host = req.header("host").unwrap_or("");
        let host = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host);
        let vhost_bucket = domain.and_then(|d| host.strip_suffix(d)?.strip_suffix('.')).filter(|b| !b.is_empty());
        let rest = path.strip_prefix('/').unwrap_or(&path);
        let (bucket, key) = match (vhost_bucket, rest.split_once('/')) {
            (Some(bucket), _) => (Some(bucket.to_owned()), (!rest.is_empty()).then(|| rest.to_owned())),
            (None, Some((b, k))) => (Some(b.to_owned()), (!k.is_empty()).then(|| k.to_owned())),
            (None, None) if rest.is_empty() => (None, None),
            (None, None) => (Some(rest.to_owned()), None),
        };
        Ok(Target { path, bucket, key })
    }
}

pub fn percent_decode(s: &str) -> S3Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| S3Error::new(Code::InvalidArgument, "the request URI is not valid UTF-8"))
}

/// Decodes `a=1&b=2` (a query, or the x-amz-tagging header) into its pairs, in order.
pub fn parse_query(raw: &str) -> S3Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

/// A request's decoded query parameters, in the order sent; the first of a repeated name
/// counts.
#[derive(Clone, Copy)]
pub struct Query<'a>(pub &'a [(String, String)]);

impl<'a> Query<'a> {
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn all(&self, allowed: impl Fn(&str) -> bool) -> bool {
        self.0.iter().all(|(k, _)| allowed(k))
    }
}

/// A bucket and a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectRef<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
}

/// The source of a copy (`x-amz-copy-source`, decoded; a `?versionId=` is ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySource {
    pub bucket: String,
    pub key: String,
}

/// One part of a multipart upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartRef<'a> {
    pub upload_id: &'a str,
    pub number: u32,
}

/// GetObject's and HeadObject's query inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetObjectInput<'a> {
    /// `partNumber`, validated; reading a single part is not implemented yet.
    pub part_number: Option<u32>,
    /// The `RESPONSE_OVERRIDES` values, in that order.
    pub overrides: [Option<&'a str>; 6],
}

impl<'a> GetObjectInput<'a> {
    /// The headers the query replaces, and their new values.
    pub fn overrides(&self) -> impl Iterator<Item = (&'static str, &'a str)> + '_ {
        RESPONSE_OVERRIDES.iter().zip(self.overrides).filter_map(|((_, header), value)| Some((*header, value?)))
    }
}

/// ListObjects (v1) and ListObjectsV2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListObjectsInput<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    pub max_keys: usize,
    /// `encoding-type=url`: keys, prefixes and markers are sent percent-encoded.
    pub url_encoded: bool,
    /// The listing starts after this key: v1's marker, v2's decoded continuation token or
    /// its start-after.
    pub start_after_key: Cow<'a, str>,
    pub version: ListVersion<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListVersion<'a> {
    V1 { marker: &'a str },
    V2 { continuation_token: Option<&'a str>, start_after: Option<&'a str>, fetch_owner: bool },
}

/// ListParts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListPartsInput<'a> {
    pub upload_id: &'a str,
    pub max_parts: usize,
    pub part_number_marker: u32,
}

/// ListMultipartUploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListUploadsInput<'a> {
    pub prefix: &'a str,
    pub key_marker: &'a str,
    /// Only with a key marker (as AWS: without one it is ignored).
    pub upload_id_marker: &'a str,
    pub max_uploads: usize,
}

/// Every operation Ferrite answers, with its validated inputs. Headers that do not choose the
/// operation are read by the operation itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `GET /ferrite/metrics`: answered before SigV4, to its bearer token.
    Metrics,
    ListBuckets,
    CreateBucket {
        bucket: &'a str,
    },
    HeadBucket {
        bucket: &'a str,
    },
    DeleteBucket {
        bucket: &'a str,
    },
    GetBucketLocation {
        bucket: &'a str,
    },
    GetBucketVersioning {
        bucket: &'a str,
    },
    ListObjects {
        bucket: &'a str,
        input: ListObjectsInput<'a>,
    },
    ListMultipartUploads {
        bucket: &'a str,
        input: ListUploadsInput<'a>,
    },
    DeleteObjects {
        bucket: &'a str,
    },
    PutBucketEncryption {
        bucket: &'a str,
    },
    GetBucketEncryption {
        bucket: &'a str,
    },
    DeleteBucketEncryption {
        bucket: &'a str,
    },
    PutBucketLifecycle {
        bucket: &'a str,
    },
    GetBucketLifecycle {
        bucket: &'a str,
    },
    DeleteBucketLifecycle {
        bucket: &'a str,
    },
    PutObject(ObjectRef<'a>),
    CopyObject {
        object: ObjectRef<'a>,
        source: CopySource,
    },
    GetObject {
        object: ObjectRef<'a>,
        input: GetObjectInput<'a>,
    },
    HeadObject {
        object: ObjectRef<'a>,
        input: GetObjectInput<'a>,
    },
    DeleteObject(ObjectRef<'a>),
    RestoreObject(ObjectRef<'a>),
    PutObjectTagging(ObjectRef<'a>),
    GetObjectTagging(ObjectRef<'a>),
    DeleteObjectTagging(ObjectRef<'a>),
    CreateMultipartUpload(ObjectRef<'a>),
    UploadPart {
        object: ObjectRef<'a>,
        part: PartRef<'a>,
    },
    UploadPartCopy {
        object: ObjectRef<'a>,
        part: PartRef<'a>,
        source: CopySource,
    },
    CompleteMultipartUpload {
        object: ObjectRef<'a>,
        upload_id: &'a str,
    },
    AbortMultipartUpload {
        object: ObjectRef<'a>,
        upload_id: &'a str,
    },
    ListParts {
        object: ObjectRef<'a>,
        input: ListPartsInput<'a>,
    },
    Admin(AdminEndpoint<'a>),
}

/// The admin API, under the reserved bucket (`/ferrite/admin/v1/...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminEndpoint<'a> {
    HealStatus,
    /// Start a heal, reading at most this many bytes per second per core (0: unlimited).
    Heal {
        rate_bytes_per_sec: Option<u64>,
    },
    KmsRewrap,
    ListTiers,
    /// Add a tier; `force` uses a container that already holds blobs under the prefix.
    AddTier {
        name: &'a str,
        force: bool,
    },
    EditTier {
        name: &'a str,
    },
    RemoveTier {
        name: &'a str,
    },
    LifecycleStatus,
    RunLifecycle,
}

/// The endpoint of a request answered before SigV4, if it is one: only the metrics
/// (Prometheus does not sign). Path-style only, as the bucket and key are compared.
pub fn unsigned_endpoint(method: &str, target: &Target) -> Option<Endpoint<'static>> {
    let metrics = method == "GET"
        && target.bucket.as_deref() == Some(RESERVED_BUCKET)
        && target.key.as_deref() == Some("metrics");
    metrics.then_some(Endpoint::Metrics)
}

/// The endpoint of an authenticated request.
pub fn route<'a>(req: &'a Request, target: &'a Target, query: Query<'a>) -> S3Result<Endpoint<'a>> {
    let method = req.method.as_str();
    let Some(bucket) = target.bucket.as_deref() else {
        return match method {
            "GET" => Ok(Endpoint::ListBuckets),
            _ => err(Code::MethodNotAllowed, "The specified method is not allowed against this resource."),
        };
    };
    if bucket == RESERVED_BUCKET {
        return admin_endpoint(method, target.key.as_deref(), query).map(Endpoint::Admin);
    }
    match target.key.as_deref() {
        None => bucket_endpoint(method, bucket, query),
        Some(key) if key.len() > KEY_BYTES_MAX => err(Code::KeyTooLongError, "Your key is too long"),
        Some(key) => object_endpoint(req, ObjectRef { bucket, key }, query),
    }
}

fn not_implemented<T>() -> S3Result<T> {
    err(Code::NotImplemented, "A header or query you provided implies functionality that is not implemented.")
}

fn bucket_endpoint<'a>(method: &str, bucket: &'a str, q: Query<'a>) -> S3Result<Endpoint<'a>> {
    use Endpoint::*;
    Ok(match method {
        "PUT" if q.is_empty() => {
            if !valid_bucket_name(bucket) {
                return err(Code::InvalidBucketName, "The specified bucket is not valid.");
            }
            CreateBucket { bucket }
        }
        "HEAD" => HeadBucket { bucket },
        "DELETE" if q.is_empty() => DeleteBucket { bucket },
        "GET" if q.has("location") => GetBucketLocation { bucket },
        "GET" if q.has("uploads") => ListMultipartUploads { bucket, input: list_uploads_input(q)? },
        "GET" if q.has("versioning") => GetBucketVersioning { bucket },
        "GET" if q.all(|k| LIST_PARAMS.contains(&k)) => ListObjects { bucket, input: list_objects_input(q)? },
        "POST" if q.has("delete") => DeleteObjects { bucket },
        "PUT" if q.has("encryption") => PutBucketEncryption { bucket },
        "GET" if q.has("encryption") => GetBucketEncryption { bucket },
        "DELETE" if q.has("encryption") => DeleteBucketEncryption { bucket },
        "PUT" if q.has("lifecycle") => PutBucketLifecycle { bucket },
        "GET" if q.has("lifecycle") => GetBucketLifecycle { bucket },
        "DELETE" if q.has("lifecycle") => DeleteBucketLifecycle { bucket },
        _ => return not_implemented(),
    })
}

fn object_endpoint<'a>(req: &'a Request, object: ObjectRef<'a>, q: Query<'a>) -> S3Result<Endpoint<'a>> {
    use Endpoint::*;
    let copy_source = req.header("x-amz-copy-source");
    let upload_id = || q.get("uploadId").unwrap_or("");
    Ok(match req.method.as_str() {
        "PUT" if q.has("tagging") => PutObjectTagging(object),
        "PUT" if q.has("partNumber") && q.has("uploadId") => {
            let part = PartRef { upload_id: upload_id(), number: part_number(q.get("partNumber"))? };
            match copy_source {
                Some(source) => UploadPartCopy { object, part, source: copy_source_of(source)? },
                None => UploadPart { object, part },
            }
        }
        // No sub-resource: only presign parameters or the SDK's x-id.
        "PUT" if q.all(|k| k.starts_with("X-Amz-") || k == "x-id") => match copy_source {
            Some(source) => CopyObject { object, source: copy_source_of(source)? },
            None => PutObject(object),
        },
        "GET" if q.has("tagging") => GetObjectTagging(object),
        "GET" if q.has("uploadId") => ListParts { object, input: list_parts_input(q)? },
        "GET" => GetObject { object, input: get_object_input(q)? },
        "HEAD" => HeadObject { object, input: get_object_input(q)? },
        "POST" if q.has("uploads") => CreateMultipartUpload(object),
        "POST" if q.has("restore") => RestoreObject(object),
        "POST" if q.has("uploadId") => CompleteMultipartUpload { object, upload_id: upload_id() },
        "DELETE" if q.has("tagging") => DeleteObjectTagging(object),
        "DELETE" if q.has("uploadId") => AbortMultipartUpload { object, upload_id: upload_id() },
        "DELETE" => DeleteObject(object),
        _ => return not_implemented(),
    })
}

fn admin_endpoint<'a>(method: &str, key: Option<&'a str>, q: Query<'a>) -> S3Result<AdminEndpoint<'a>> {
    use AdminEndpoint::*;
    let unknown = || err(Code::InvalidRequest, "Unknown admin API call.");
    let path = key.unwrap_or("");
    if let Some(name) = path.strip_prefix("admin/v1/tier/") {
        return match method {
            "PUT" => Ok(AddTier { name, force: q.get("force") == Some("true") }),
            "POST" => Ok(EditTier { name }),
            "DELETE" => Ok(RemoveTier { name }),
            _ => unknown(),
        };
    }
    Ok(match (method, path) {
        ("GET", "admin/v1/tier") => ListTiers,
        ("GET", "admin/v1/lifecycle") => LifecycleStatus,
        ("POST", "admin/v1/lifecycle/run") => RunLifecycle,
        ("GET", "admin/v1/heal") => HealStatus,
        ("POST", "admin/v1/heal") => Heal { rate_bytes_per_sec: heal_rate(q)? },
        ("POST", "admin/v1/kms/rewrap") => KmsRewrap,
        ("PUT", _) if key.is_none() => {
            return err(Code::InvalidBucketName, "The bucket name ferrite is reserved for the admin API.")
        }
        _ => return unknown(),
    })
}

/// `rate-mib`: MiB/s per core, a whole number (0: unlimited).
fn heal_rate(q: Query) -> S3Result<Option<u64>> {
    match q.get("rate-mib") {
        // Checked: a shift would silently drop the high bits of a huge value.
        Some(v) => match v.parse::<u64>().ok().and_then(|mib| mib.checked_mul(1 << 20)) {
            Some(rate) => Ok(Some(rate)),
            None => err(Code::InvalidArgument, "rate-mib must be a whole number of MiB/s"),
        },
        None => Ok(None),
    }
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

/// A part number: 1 to 10,000 (UploadPart, UploadPartCopy, GetObject and HeadObject).
fn part_number(value: Option<&str>) -> S3Result<u32> {
    match value.and_then(|v| v.parse::<u32>().ok()) {
        Some(n) if (1..=PART_NUMBER_MAX).contains(&n) => Ok(n),
        _ => err(Code::InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"),
    }
}

/// A count or marker argument (`max-keys`, `max-parts`, `max-uploads`,
/// `part-number-marker`): AWS reads a 32-bit integer and refuses a negative one, each with
/// its own message (`name_in_range_message` is how that message names the argument).
/// None when absent.
fn count(q: Query, name: &str, name_in_range_message: &str) -> S3Result<Option<usize>> {
    let Some(value) = q.get(name) else { return Ok(None) };
    match value.parse::<i32>() {
        Ok(n) if n >= 0 => Ok(Some(n as usize)),
        Ok(_) => err(
            Code::InvalidArgument,
            format!("Argument {name_in_range_message} must be an integer between 0 and 2147483647"),
        ),
        Err(_) => err(Code::InvalidArgument, format!("Provided {name} not an integer or within integer range")),
    }
}

/// `encoding-type`: only `url` exists.
fn url_encoded(q: Query) -> S3Result<bool> {
    match q.get("encoding-type") {
        Some("url") => Ok(true),
        Some(_) => err(Code::InvalidArgument, "Invalid Encoding Method specified in Request"),
        None => Ok(false),
    }
}

fn list_objects_input(q: Query) -> S3Result<ListObjectsInput> {
    let max_keys = count(q, "max-keys", "maxKeys")?.unwrap_or(LIST_KEYS_MAX).min(LIST_KEYS_MAX);
    let url_encoded = url_encoded(q)?;
    let (version, start_after_key) = if q.get("list-type") == Some("2") {
        let continuation_token = q.get("continuation-token");
        let start_after = q.get("start-after");
        let start_after_key = match continuation_token {
            Some(token) => Cow::Owned(decode_continuation_token(token)?),
            None => Cow::Borrowed(start_after.unwrap_or("")),
        };
        let fetch_owner = q.get("fetch-owner") == Some("true");
        (ListVersion::V2 { continuation_token, start_after, fetch_owner }, start_after_key)
    } else {
        // Any other list-type is read as version 1, as before.
        let marker = q.get("marker").unwrap_or("");
        (ListVersion::V1 { marker }, Cow::Borrowed(marker))
    };
    Ok(ListObjectsInput {
        prefix: q.get("prefix").unwrap_or(""),
        delimiter: q.get("delimiter").filter(|d| !d.is_empty()),
        max_keys,
        url_encoded,
        start_after_key,
        version,
    })
}

/// A continuation token is the base64 of the last key of the page before.
fn decode_continuation_token(token: &str) -> S3Result<String> {
    String::from_utf8(b64_decode(token).unwrap_or_default())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| S3Error::new(Code::InvalidArgument, "The continuation token provided is incorrect"))
}

fn list_uploads_input(q: Query) -> S3Result<ListUploadsInput> {
    let max_uploads = count(q, "max-uploads", "max-uploads")?.unwrap_or(LIST_UPLOADS_MAX).min(LIST_UPLOADS_MAX);
    // Validated as for ListObjects; the keys are listed as they are, without an EncodingType
    // in the answer, so a client does not decode them.
    url_encoded(q)?;
    let key_marker = q.get("key-marker").unwrap_or("");
    let upload_id_marker = if key_marker.is_empty() { "" } else { q.get("upload-id-marker").unwrap_or("") };
    Ok(ListUploadsInput { prefix: q.get("prefix").unwrap_or(""), key_marker, upload_id_marker, max_uploads })
}

fn list_parts_input(q: Query) -> S3Result<ListPartsInput> {
    let max_parts = count(q, "max-parts", "max-parts")?.unwrap_or(LIST_PARTS_MAX).min(LIST_PARTS_MAX);
    let marker = count(q, "part-number-marker", "partNumberMarker")?.unwrap_or(0);
    Ok(ListPartsInput {
        upload_id: q.get("uploadId").unwrap_or(""),
        max_parts,
        // At most i32::MAX, so the marker and the part after it fit a u32.
        part_number_marker: marker as u32,
    })
}

fn get_object_input(q: Query) -> S3Result<GetObjectInput> {
    let part_number = match q.get("partNumber") {
        Some(v) => Some(part_number(Some(v))?),
        None => None,
    };
    let overrides = RESPONSE_OVERRIDES.map(|(param, _)| q.get(param));
    // A value decoded from the query becomes a response header: a CR or LF in it would
    // inject headers (`attachment%0D%0ASet-Cookie:...`).
    for ((param, _), value) in RESPONSE_OVERRIDES.iter().zip(overrides) {
        if value.is_some_and(|v| !header_value_is_safe(v)) {
            return Err(S3Error::new(Code::InvalidArgument, format!("{param} contains a control character")));
        }
    }
    Ok(GetObjectInput { part_number, overrides })
}

/// `x-amz-copy-source`: `[/]bucket/key[?versionId=...]`, percent-encoded.
fn copy_source_of(header: &str) -> S3Result<CopySource> {
    let raw = header.split_once("?versionId=").map(|(s, _)| s).unwrap_or(header);
    let decoded = percent_decode(raw)?;
    let trimmed = decoded.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok(CopySource { bucket: b.to_owned(), key: k.to_owned() }),
        _ => err(Code::InvalidArgument, "Copy Source must mention the source bucket and key: sourcebucket/sourcekey"),
    }
}

impl<'a> Endpoint<'a> {
    /// The operation's name, as AWS's API reference names it (the admin API's: `Admin`).
    pub fn name(&self) -> &'static str {
        use Endpoint::*;
        match self {
            Metrics => "Metrics",
            ListBuckets => "ListBuckets",
            CreateBucket { .. } => "CreateBucket",
            HeadBucket { .. } => "HeadBucket",
            DeleteBucket { .. } => "DeleteBucket",
            GetBucketLocation { .. } => "GetBucketLocation",
            GetBucketVersioning { .. } => "GetBucketVersioning",
            ListObjects { input, .. } => match input.version {
                ListVersion::V1 { .. } => "ListObjects",
                ListVersion::V2 { .. } => "ListObjectsV2",
            },
            ListMultipartUploads { .. } => "ListMultipartUploads",
            DeleteObjects { .. } => "DeleteObjects",
            PutBucketEncryption { .. } => "PutBucketEncryption",
            GetBucketEncryption { .. } => "GetBucketEncryption",
            DeleteBucketEncryption { .. } => "DeleteBucketEncryption",
            PutBucketLifecycle { .. } => "PutBucketLifecycleConfiguration",
            GetBucketLifecycle { .. } => "GetBucketLifecycleConfiguration",
            DeleteBucketLifecycle { .. } => "DeleteBucketLifecycle",
            PutObject(_) => "PutObject",
            CopyObject { .. } => "CopyObject",
            GetObject { .. } => "GetObject",
            HeadObject { .. } => "HeadObject",
            DeleteObject(_) => "DeleteObject",
            RestoreObject(_) => "RestoreObject",
            PutObjectTagging(_) => "PutObjectTagging",
            GetObjectTagging(_) => "GetObjectTagging",
            DeleteObjectTagging(_) => "DeleteObjectTagging",
            CreateMultipartUpload(_) => "CreateMultipartUpload",
            UploadPart { .. } => "UploadPart",
            UploadPartCopy { .. } => "UploadPartCopy",
            CompleteMultipartUpload { .. } => "CompleteMultipartUpload",
            AbortMultipartUpload { .. } => "AbortMultipartUpload",
            ListParts { .. } => "ListParts",
            Admin(_) => "Admin",
        }
    }

    /// Every permission the request needs: its action on its resource and, for a copy,
    /// `s3:GetObject` on the source.
    pub fn access(&self) -> impl Iterator<Item = Access<'_>> {
        let source = match self {
            Endpoint::CopyObject { source, .. } | Endpoint::UploadPartCopy { source, .. } => {
                let resource = Resource::Object { bucket: &source.bucket, key: &source.key };
                Some(Access::new(Action::GetObject, resource))
            }
            _ => None,
        };
        std::iter::once(self.primary_access()).chain(source)
    }

    fn primary_access(&self) -> Access<'_> {
        use Action as A;
        use Endpoint::*;
        let on_object =
            |action, o: &ObjectRef<'a>| Access::new(action, Resource::Object { bucket: o.bucket, key: o.key });
        let on_bucket = |action, bucket: &'a str| Access::new(action, Resource::Bucket(bucket));
        match self {
            Metrics => Access::new(A::AdminPrometheus, Resource::All),
            ListBuckets => Access::new(A::ListAllMyBuckets, Resource::All),
            CreateBucket { bucket } => on_bucket(A::CreateBucket, bucket),
            HeadBucket { bucket } | ListObjects { bucket, .. } => on_bucket(A::ListBucket, bucket),
            DeleteBucket { bucket } => on_bucket(A::DeleteBucket, bucket),
            GetBucketLocation { bucket } => on_bucket(A::GetBucketLocation, bucket),
            GetBucketVersioning { bucket } => on_bucket(A::GetBucketVersioning, bucket),
            ListMultipartUploads { bucket, .. } => on_bucket(A::ListBucketMultipartUploads, bucket),
            DeleteObjects { bucket } => Access::new(A::DeleteObject, Resource::EachObjectIn(bucket)),
            PutBucketEncryption { bucket } | DeleteBucketEncryption { bucket } => {
                on_bucket(A::PutEncryptionConfiguration, bucket)
            }
            GetBucketEncryption { bucket } => on_bucket(A::GetEncryptionConfiguration, bucket),
            PutBucketLifecycle { bucket } | DeleteBucketLifecycle { bucket } => {
                on_bucket(A::PutLifecycleConfiguration, bucket)
            }
            GetBucketLifecycle { bucket } => on_bucket(A::GetLifecycleConfiguration, bucket),
            PutObject(object)
            | CopyObject { object, .. }
            | CreateMultipartUpload(object)
            | UploadPart { object, .. }
            | UploadPartCopy { object, .. }
            | CompleteMultipartUpload { object, .. } => on_object(A::PutObject, object),
            GetObject { object, .. } | HeadObject { object, .. } => on_object(A::GetObject, object),
            DeleteObject(object) => on_object(A::DeleteObject, object),
            RestoreObject(object) => on_object(A::RestoreObject, object),
            PutObjectTagging(object) => on_object(A::PutObjectTagging, object),
            GetObjectTagging(object) => on_object(A::GetObjectTagging, object),
            DeleteObjectTagging(object) => on_object(A::DeleteObjectTagging, object),
            AbortMultipartUpload { object, .. } => on_object(A::AbortMultipartUpload, object),
            ListParts { object, .. } => on_object(A::ListMultipartUploadParts, object),
            Admin(admin) => Access::new(admin.action(), Resource::All),
        }
    }
}

impl AdminEndpoint<'_> {
    pub fn action(&self) -> Action {
        use AdminEndpoint::*;
        match self {
            HealStatus | Heal { .. } => Action::AdminHeal,
            KmsRewrap => Action::AdminKmsRewrap,
            ListTiers => Action::AdminListTier,
            AddTier { .. } | EditTier { .. } | RemoveTier { .. } => Action::AdminSetTier,
            LifecycleStatus => Action::AdminServerInfo,
            RunLifecycle => Action::AdminRunLifecycle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request {
        let (raw_path, raw_query) = uri.split_once('?').unwrap_or((uri, ""));
        let mut all: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        if !headers.iter().any(|(n, _)| *n == "host") {
            all.push(("host".to_owned(), "127.0.0.1:9000".to_owned()));
        }
        Request {
            method: method.into(),
            raw_path: raw_path.into(),
            raw_query: raw_query.into(),
            headers: all,
            keep_alive: true,
            secure: false,
            peer: None,
        }
    }

    /// The endpoint's name and its accesses (action, ARN), or the error's code and message.
    fn resolve_with(method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<(String, Vec<String>), S3Error> {
        let req = request(method, uri, headers);
        let target = Target::parse(&req, Some("s3.example.com"))?;
        let query = parse_query(&req.raw_query)?;
        let endpoint = route(&req, &target, Query(&query))?;
        let accesses = endpoint.access().map(|a| format!("{} {}", a.action, a.resource.arn())).collect();
        Ok((endpoint.name().to_owned(), accesses))
    }

    fn resolve(method: &str, uri: &str) -> Result<(String, Vec<String>), S3Error> {
        resolve_with(method, uri, &[])
    }

    fn refused(method: &str, uri: &str) -> (Code, String) {
        match resolve(method, uri) {
            Ok(ok) => panic!("{method} {uri} was routed to {ok:?}"),
            Err(e) => (e.code, e.message),
        }
    }

    /// Method, URI, headers, the endpoint's name, its accesses.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str, &'a [&'a str]);

    #[test]
    fn every_operation_resolves_to_its_endpoint_and_action() {
        let copy = [("x-amz-copy-source", "/src/a%20b.txt")];
        let cases: &[Case] = &[
            ("GET", "/", &[], "ListBuckets", &["s3:ListAllMyBuckets *"]),
            ("PUT", "/bkt", &[], "CreateBucket", &["s3:CreateBucket arn:aws:s3:::bkt"]),
            ("HEAD", "/bkt", &[], "HeadBucket", &["s3:ListBucket arn:aws:s3:::bkt"]),
            ("DELETE", "/bkt", &[], "DeleteBucket", &["s3:DeleteBucket arn:aws:s3:::bkt"]),
            ("GET", "/bkt?location", &[], "GetBucketLocation", &["s3:GetBucketLocation arn:aws:s3:::bkt"]),
            ("GET", "/bkt?versioning", &[], "GetBucketVersioning", &["s3:GetBucketVersioning arn:aws:s3:::bkt"]),
            ("GET", "/bkt", &[], "ListObjects", &["s3:ListBucket arn:aws:s3:::bkt"]),
            ("GET", "/bkt?list-type=2&prefix=a", &[], "ListObjectsV2", &["s3:ListBucket arn:aws:s3:::bkt"]),
            ("GET", "/bkt?uploads", &[], "ListMultipartUploads", &["s3:ListBucketMultipartUploads arn:aws:s3:::bkt"]),
            ("POST", "/bkt?delete", &[], "DeleteObjects", &["s3:DeleteObject arn:aws:s3:::bkt/*"]),
            ("PUT", "/bkt?encryption", &[], "PutBucketEncryption", &["s3:PutEncryptionConfiguration arn:aws:s3:::bkt"]),
            ("GET", "/bkt?encryption", &[], "GetBucketEncryption", &["s3:GetEncryptionConfiguration arn:aws:s3:::bkt"]),
            (
                "DELETE",
                "/bkt?encryption",
                &[],
                "DeleteBucketEncryption",
                &["s3:PutEncryptionConfiguration arn:aws:s3:::bkt"],
            ),
            (
                "PUT",
                "/bkt?lifecycle",
                &[],
                "PutBucketLifecycleConfiguration",
                &["s3:PutLifecycleConfiguration arn:aws:s3:::bkt"],
            ),
            (
                "GET",
                "/bkt?lifecycle",
                &[],
                "GetBucketLifecycleConfiguration",
                &["s3:GetLifecycleConfiguration arn:aws:s3:::bkt"],
            ),
            (
                "DELETE",
                "/bkt?lifecycle",
                &[],
                "DeleteBucketLifecycle",
                &["s3:PutLifecycleConfiguration arn:aws:s3:::bkt"],
            ),
            ("PUT", "/bkt/k/e%20y", &[], "PutObject", &["s3:PutObject arn:aws:s3:::bkt/k/e y"]),
            ("PUT", "/bkt/k?x-id=PutObject", &[], "PutObject", &["s3:PutObject arn:aws:s3:::bkt/k"]),
            (
                "PUT",
                "/bkt/k",
                &copy,
                "CopyObject",
                &["s3:PutObject arn:aws:s3:::bkt/k", "s3:GetObject arn:aws:s3:::src/a b.txt"],
            ),
            ("GET", "/bkt/k", &[], "GetObject", &["s3:GetObject arn:aws:s3:::bkt/k"]),
            ("GET", "/bkt/k?response-content-type=a/b", &[], "GetObject", &["s3:GetObject arn:aws:s3:::bkt/k"]),
            ("HEAD", "/bkt/k", &[], "HeadObject", &["s3:GetObject arn:aws:s3:::bkt/k"]),
            ("DELETE", "/bkt/k", &[], "DeleteObject", &["s3:DeleteObject arn:aws:s3:::bkt/k"]),
            ("POST", "/bkt/k?restore", &[], "RestoreObject", &["s3:RestoreObject arn:aws:s3:::bkt/k"]),
            ("PUT", "/bkt/k?tagging", &[], "PutObjectTagging", &["s3:PutObjectTagging arn:aws:s3:::bkt/k"]),
            ("GET", "/bkt/k?tagging", &[], "GetObjectTagging", &["s3:GetObjectTagging arn:aws:s3:::bkt/k"]),
            ("DELETE", "/bkt/k?tagging", &[], "DeleteObjectTagging", &["s3:DeleteObjectTagging arn:aws:s3:::bkt/k"]),
            ("POST", "/bkt/k?uploads", &[], "CreateMultipartUpload", &["s3:PutObject arn:aws:s3:::bkt/k"]),
            ("PUT", "/bkt/k?partNumber=3&uploadId=u", &[], "UploadPart", &["s3:PutObject arn:aws:s3:::bkt/k"]),
            (
                "PUT",
                "/bkt/k?partNumber=3&uploadId=u",
                &copy,
                "UploadPartCopy",
                &["s3:PutObject arn:aws:s3:::bkt/k", "s3:GetObject arn:aws:s3:::src/a b.txt"],
            ),
            ("POST", "/bkt/k?uploadId=u", &[], "CompleteMultipartUpload", &["s3:PutObject arn:aws:s3:::bkt/k"]),
            (
                "DELETE",
                "/bkt/k?uploadId=u",
                &[],
                "AbortMultipartUpload",
                &["s3:AbortMultipartUpload arn:aws:s3:::bkt/k"],
            ),
            ("GET", "/bkt/k?uploadId=u", &[], "ListParts", &["s3:ListMultipartUploadParts arn:aws:s3:::bkt/k"]),
            ("GET", "/ferrite/admin/v1/heal", &[], "Admin", &["admin:Heal *"]),
            ("POST", "/ferrite/admin/v1/heal?rate-mib=4", &[], "Admin", &["admin:Heal *"]),
            ("POST", "/ferrite/admin/v1/kms/rewrap", &[], "Admin", &["admin:KMSRewrap *"]),
            ("GET", "/ferrite/admin/v1/tier", &[], "Admin", &["admin:ListTier *"]),
            ("PUT", "/ferrite/admin/v1/tier/cold?force=true", &[], "Admin", &["admin:SetTier *"]),
            ("POST", "/ferrite/admin/v1/tier/cold", &[], "Admin", &["admin:SetTier *"]),
            ("DELETE", "/ferrite/admin/v1/tier/cold", &[], "Admin", &["admin:SetTier *"]),
            ("GET", "/ferrite/admin/v1/lifecycle", &[], "Admin", &["admin:ServerInfo *"]),
            ("POST", "/ferrite/admin/v1/lifecycle/run", &[], "Admin", &["admin:RunLifecycle *"]),
        ];
        for (method, uri, headers, name, accesses) in cases {
            let (got_name, got_accesses) = resolve_with(method, uri, headers)
                .unwrap_or_else(|e| panic!("{method} {uri}: {:?} {}", e.code, e.message));
            assert_eq!(&got_name, name, "{method} {uri}");
            assert_eq!(got_accesses, accesses.to_vec(), "{method} {uri}");
        }
    }

    #[test]
    fn inputs_are_parsed_once() {
        let req =
            request("GET", "/bkt?list-type=2&max-keys=5000&encoding-type=url&continuation-token=a2V5&delimiter=", &[]);
        let target = Target::parse(&req, None).unwrap();
        let query = parse_query(&req.raw_query).unwrap();
        let Endpoint::ListObjects { bucket: "bkt", input } = route(&req, &target, Query(&query)).unwrap() else {
            panic!("not a listing")
        };
        assert_eq!(input.max_keys, LIST_KEYS_MAX);
        assert!(input.url_encoded);
        assert_eq!(input.delimiter, None);
        assert_eq!(input.start_after_key, "key");

        let req = request("GET", "/bkt/k?response-expires=x&partNumber=7", &[]);
        let target = Target::parse(&req, None).unwrap();
        let query = parse_query(&req.raw_query).unwrap();
        let Endpoint::GetObject { input, .. } = route(&req, &target, Query(&query)).unwrap() else { panic!() };
        assert_eq!(input.part_number, Some(7));
        assert_eq!(input.overrides().collect::<Vec<_>>(), vec![("expires", "x")]);

        let req = request("GET", "/bkt/k?uploadId=u&max-parts=2&part-number-marker=9", &[]);
        let target = Target::parse(&req, None).unwrap();
        let query = parse_query(&req.raw_query).unwrap();
        let Endpoint::ListParts { input, .. } = route(&req, &target, Query(&query)).unwrap() else { panic!() };
        assert_eq!(input, ListPartsInput { upload_id: "u", max_parts: 2, part_number_marker: 9 });
    }

    #[test]
    fn bad_query_values_are_refused_alike() {
        let invalid = Code::InvalidArgument;
        for (uri, message) in [
            ("/bkt?max-keys=-1", "Argument maxKeys must be an integer between 0 and 2147483647"),
            ("/bkt?list-type=2&max-keys=abc", "Provided max-keys not an integer or within integer range"),
            ("/bkt?max-keys=2147483648", "Provided max-keys not an integer or within integer range"),
            ("/bkt/k?uploadId=u&max-parts=-1", "Argument max-parts must be an integer between 0 and 2147483647"),
            ("/bkt/k?uploadId=u&max-parts=x", "Provided max-parts not an integer or within integer range"),
            ("/bkt?uploads&max-uploads=-5", "Argument max-uploads must be an integer between 0 and 2147483647"),
            ("/bkt?uploads&max-uploads=1.5", "Provided max-uploads not an integer or within integer range"),
            (
                "/bkt/k?uploadId=u&part-number-marker=x",
                "Provided part-number-marker not an integer or within integer range",
            ),
            ("/bkt?encoding-type=base64", "Invalid Encoding Method specified in Request"),
            ("/bkt?uploads&encoding-type=base64", "Invalid Encoding Method specified in Request"),
            ("/bkt?list-type=2&continuation-token=%21%21", "The continuation token provided is incorrect"),
            ("/bkt/k?partNumber=0", "Part number must be an integer between 1 and 10000, inclusive"),
            ("/bkt/k?partNumber=abc", "Part number must be an integer between 1 and 10000, inclusive"),
        ] {
            assert_eq!(refused("GET", uri), (invalid, message.to_owned()), "GET {uri}");
        }
        let part = "Part number must be an integer between 1 and 10000, inclusive".to_owned();
        assert_eq!(refused("PUT", "/bkt/k?partNumber=10001&uploadId=u"), (invalid, part.clone()));
        assert_eq!(refused("HEAD", "/bkt/k?partNumber=-2"), (invalid, part));
        let rate = "rate-mib must be a whole number of MiB/s".to_owned();
        assert_eq!(refused("POST", "/ferrite/admin/v1/heal?rate-mib=fast"), (invalid, rate.clone()));
        // 2^44 MiB/s would wrap to 0 (unlimited) if shifted unchecked.
        assert_eq!(refused("POST", "/ferrite/admin/v1/heal?rate-mib=17592186044416"), (invalid, rate));
    }

    #[test]
    fn unknown_and_invalid_requests() {
        assert_eq!(refused("PUT", "/").0, Code::MethodNotAllowed);
        assert_eq!(refused("GET", "/bkt?acl").0, Code::NotImplemented);
        assert_eq!(refused("PUT", "/bkt?foo").0, Code::NotImplemented);
        assert_eq!(refused("POST", "/bkt/k").0, Code::NotImplemented);
        assert_eq!(refused("PUT", "/Bad_Bucket").0, Code::InvalidBucketName);
        assert_eq!(refused("PUT", "/ferrite").0, Code::InvalidBucketName);
        assert_eq!(refused("GET", "/ferrite/admin/v1/nothing").0, Code::InvalidRequest);
        assert_eq!(refused("GET", &format!("/bkt/{}", "k".repeat(KEY_BYTES_MAX + 1))).0, Code::KeyTooLongError);
        let bad_source = resolve_with("PUT", "/bkt/k", &[("x-amz-copy-source", "nokey")]).unwrap_err();
        assert_eq!(bad_source.code, Code::InvalidArgument);
    }

    #[test]
    fn targets_and_unsigned_endpoints() {
        let req = request("GET", "/photos/a.jpg", &[("host", "media.s3.example.com:9000")]);
        let target = Target::parse(&req, Some("s3.example.com")).unwrap();
        assert_eq!((target.bucket.as_deref(), target.key.as_deref()), (Some("media"), Some("photos/a.jpg")));
        let target = Target::parse(&request("GET", "/bkt/", &[]), None).unwrap();
        assert_eq!((target.bucket.as_deref(), target.key.as_deref()), (Some("bkt"), None));
        let metrics = Target::parse(&request("GET", "/ferrite/metrics", &[]), None).unwrap();
        assert_eq!(unsigned_endpoint("GET", &metrics), Some(Endpoint::Metrics));
        assert_eq!(unsigned_endpoint("PUT", &metrics), None);
        let object = Target::parse(&request("GET", "/bkt/metrics", &[]), None).unwrap();
        assert_eq!(unsigned_endpoint("GET", &object), None);
    }

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket.1", "a1b"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in ["ab", "ABC", "-abc", "abc-", "a..b", "192.168.1.1", "a_b", &"a".repeat(64)] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }
}
