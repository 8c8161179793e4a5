//! What the operations share, below all of them: dates and ETags as S3 writes them, the
//! bucket check, reading a small request document, the headers stored with an object, tags,
//! conditional requests, and the internal headers clients never see.

use std::time::{Duration, UNIX_EPOCH};

use ferrite_engine::{EngineError, ObjectMeta, PutCondition};

use crate::body::Body;
use crate::error::{err, Code, S3Error, S3Result};
use crate::limits::{TAGS_MAX, TAG_KEY_CHARS_MAX, TAG_VALUE_CHARS_MAX, USER_METADATA_BYTES_MAX};
use crate::request::{Call, Ctx};
use crate::router::parse_query;

/// Internal headers (SSE keys, tier state, an upload's tags) start with this; they are
/// stored with the object and never sent to a client.
pub const INTERNAL_PREFIX: &str = "x-ferrite-";
/// Where an upload keeps the tags its CreateMultipartUpload named, until it completes.
pub const UPLOAD_TAGS_HEADER: &str = "x-ferrite-tagging";
/// The standard headers stored with an object and sent back with it.
const STORED_HEADERS: [&str; 6] =
    ["content-type", "content-encoding", "content-disposition", "content-language", "cache-control", "expires"];
pub const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = ferrite_engine::calendar::civil_from_days(secs.div_euclid(86400));
    let rem = secs.rem_euclid(86400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms.rem_euclid(1000))
}

pub fn http_date(ms: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

fn parse_http_date(s: &str) -> Option<i64> {
    httpdate::parse_http_date(s).ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs() as i64)
}

/// A decimal byte position (Range, x-amz-copy-source-range): digits only, else None. A value
/// beyond 64 bits saturates at u64::MAX, never wraps: it lies beyond the end of any object.
pub fn byte_position(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, digit| n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))))
}

pub fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

pub fn unquote(etag: &str) -> &str {
    etag.trim().trim_start_matches("W/").trim_matches('"')
}

/// The bucket's creation time, or NoSuchBucket.
pub fn require_bucket(ctx: &Ctx, bucket: &str) -> S3Result<i64> {
    ctx.engine.bucket_created_ms(bucket).ok_or_else(|| S3Error::from(EngineError::NoSuchBucket))
}

/// Reads a whole request document of at most `limit` bytes.
pub async fn read_small_body(body: &mut Body<'_>, limit: usize) -> S3Result<Vec<u8>> {
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
pub fn stored_headers(call: &Call) -> S3Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut user_bytes = 0;
    for (name, value) in &call.req.headers {
        if STORED_HEADERS.contains(&name.as_str()) || name.starts_with("x-amz-meta-") {
            if name.starts_with("x-amz-meta-") {
                user_bytes += name.len() - "x-amz-meta-".len() + value.len();
            }
            // Stored values are written back as response headers on every GET and HEAD. The
            // head parser already refuses control characters; this keeps the store clean
            // whatever the way in.
            if !crate::http::header_value_is_safe(value) {
                return err(Code::InvalidArgument, format!("header {name} contains a control character"));
            }
            out.push((name.clone(), value.clone()));
        }
    }
    if user_bytes > USER_METADATA_BYTES_MAX {
        return err(Code::MetadataTooLarge, "Your metadata headers exceed the maximum allowed metadata size.");
    }
    Ok(out)
}

/// `stored_headers`, with the default content type when the request names none.
pub fn stored_headers_typed(call: &Call) -> S3Result<Vec<(String, String)>> {
    let mut headers = stored_headers(call)?;
    if !headers.iter().any(|(n, _)| n == "content-type") {
        headers.push(("content-type".into(), DEFAULT_CONTENT_TYPE.into()));
    }
    Ok(headers)
}

/// Tags in the form of the x-amz-tagging header (`k1=v1&k2=v2`), validated.
pub fn parse_tag_query(s: &str) -> S3Result<Vec<(String, String)>> {
    let tags = parse_query(s)?;
    validate_tags(&tags)?;
    Ok(tags)
}

pub fn validate_tags(tags: &[(String, String)]) -> S3Result<()> {
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

/// The condition of a conditional write (If-None-Match: *, If-Match).
pub fn put_condition(call: &Call) -> Option<PutCondition> {
    if call.header("if-none-match").map(str::trim) == Some("*") {
        return Some(PutCondition::IfNoneMatchAny);
    }
    call.header("if-match").map(|v| PutCondition::IfMatch(unquote(v).to_owned()))
}

/// Conditional request headers (RFC 7232 order, as S3 applies them); `prefix` is
/// `x-amz-copy-source-` for a copy's source.
pub fn check_conditions(call: &Call, meta: &ObjectMeta, prefix: &str) -> S3Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_positions_saturate() {
        assert_eq!(byte_position("0"), Some(0));
        assert_eq!(byte_position("18446744073709551615"), Some(u64::MAX));
        assert_eq!(byte_position("18446744073709551616"), Some(u64::MAX));
        assert_eq!(byte_position("99999999999999999999999999999"), Some(u64::MAX));
        for bad in ["", "-1", "+1", "1 ", "0x10", "1e3"] {
            assert_eq!(byte_position(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_868_800_123), "2000-03-01T00:00:00.123Z");
    }
}
