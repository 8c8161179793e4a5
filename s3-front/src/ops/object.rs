//! Objects: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, RestoreObject.
//! (Copies are copy.rs, tags tagging.rs, multipart uploads multipart.rs.)

use ferrite_engine::{now_ms, DataLoc, ObjectMeta};
use ferrite_tiering::stub;

use crate::body::Body;
use crate::encryption::Encryption;
use crate::error::{err, malformed_xml, Code, S3Error, S3Result};
use crate::limits::{DELETE_OBJECTS_MAX, PUT_BYTES_MAX, XML_BODY_BYTES_MAX};
use crate::object_stream::ObjectStream;
use crate::request::{Call, Ctx, RespBody, Response};
use crate::router::{GetObjectInput, ObjectRef};
use crate::sse;
use crate::xml::{parse, Xml};

use super::common::{
    byte_position, check_conditions, http_date, parse_tag_query, put_condition, quoted, read_small_body,
    require_bucket, stored_headers_typed, INTERNAL_PREFIX,
};
use super::write::{etag_of, sealer_for, stream_body, too_large, with_checksum_header, with_sse_headers};

pub async fn put(ctx: &Ctx, call: &Call<'_>, object: ObjectRef<'_>, body: &mut Body<'_>) -> S3Result<Response> {
    let ObjectRef { bucket, key } = object;
    require_bucket(ctx, bucket)?;
    if call.header("content-length").is_none() && call.header("transfer-encoding").is_none() {
        return err(Code::MissingContentLength, "You must provide the Content-Length HTTP header.");
    }
    let declared = call
        .header("x-amz-decoded-content-length")
        .or(call.header("content-length"))
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > PUT_BYTES_MAX) {
        return Err(too_large().closing());
    }
    let mut headers = stored_headers_typed(call)?;
    let tags = match call.header("x-amz-tagging") {
        Some(t) => parse_tag_query(t)?,
        None => Vec::new(),
    };
    let condition = put_condition(call);
    let encryption = sse::for_new_object(ctx, call, bucket, key).await?;
    if let Some(encryption) = &encryption {
        headers.extend(encryption.stored_headers());
    }
    let writer = ctx.engine.writer(bucket, key, true)?;
    let sealer = sealer_for(encryption.as_ref(), &writer)?;
    let streamed = stream_body(ctx, call, body, writer, PUT_BYTES_MAX, sealer).await?;
    let etag = etag_of(encryption.as_ref(), &streamed.md5);
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
    ctx.engine.put_object(bucket, key, meta, streamed.data, condition).await?;
    let resp = with_checksum_header(Response::new(200).header("ETag", quoted(&etag)), &streamed.checksum);
    Ok(with_sse_headers(resp, encryption.as_ref()))
}

/// GetObject, or HeadObject with `head_only`.
pub async fn get(
    ctx: &Ctx,
    call: &Call<'_>,
    object: ObjectRef<'_>,
    input: &GetObjectInput<'_>,
    head_only: bool,
) -> S3Result<Response> {
    let ObjectRef { bucket, key } = object;
    let meta = ctx.engine.head_object(bucket, key).await?;
    let encryption = sse::open_stored(ctx, call, bucket, key, &meta.headers, false).await?;
    check_conditions(call, &meta, "")?;
    let range = match call.header("range") {
        Some(r) => parse_range(r, meta.size)?,
        None => None,
    };
    if input.part_number.is_some() {
        return err(Code::NotImplemented, "GetObject with partNumber is not implemented yet");
    }
    let (start, end) = range.unwrap_or((0, meta.size));
    let mut resp = Response::new(if range.is_some() { 206 } else { 200 });
    resp.content_length = Some(end - start);
    resp = with_object_headers(resp, &meta, encryption.as_ref(), input);
    if range.is_some() {
        resp = resp.header("Content-Range", format!("bytes {start}-{}/{}", end.saturating_sub(1), meta.size));
    } else if call.header("x-amz-checksum-mode").is_some_and(|v| v.eq_ignore_ascii_case("enabled")) {
        resp = with_checksum_header(resp, &meta.checksum);
        if meta.checksum.as_ref().is_some_and(|(_, v)| v.contains('-')) {
            resp = resp.header("x-amz-checksum-type", "COMPOSITE");
        } else if meta.checksum.is_some() {
            resp = resp.header("x-amz-checksum-type", "FULL_OBJECT");
        }
    }
    if !head_only && end > start {
        let slot = ctx.budget.acquire().await?;
        let mut stream = ObjectStream::open(&ctx.mover, (bucket, key), &meta, encryption.as_ref(), (start, end));
        stream.prime().await?;
        resp.body = RespBody::Object(stream, slot);
    }
    Ok(resp)
}

/// The headers of a GetObject or HeadObject answer: the stored ones (internal ones left
/// out), the SSE ones, the query's overrides, and what S3 reports about the object.
fn with_object_headers(
    mut resp: Response,
    meta: &ObjectMeta,
    encryption: Option<&Encryption>,
    input: &GetObjectInput<'_>,
) -> Response {
    for (name, value) in &meta.headers {
        if !name.starts_with(INTERNAL_PREFIX) {
            resp.headers.push((name.clone(), value.clone()));
        }
    }
    resp = with_sse_headers(resp, encryption);
    for (header, value) in input.overrides() {
        resp.headers.retain(|(n, _)| n != header);
        resp.headers.push((header.to_owned(), value.to_owned()));
    }
    resp = resp
        .header("ETag", quoted(&meta.etag))
        .header("Last-Modified", http_date(meta.mtime_ms))
        .header("Accept-Ranges", "bytes");
    if !meta.tags.is_empty() {
        resp = resp.header("x-amz-tagging-count", meta.tags.len().to_string());
    }
    if let Some(remote) = stub::remote_of(meta) {
        resp = resp.header("x-amz-storage-class", remote.tier);
        if stub::restore_pending(meta).is_some() {
            resp = resp.header("x-amz-restore", "ongoing-request=\"true\"");
        } else if let Some(until) = stub::restored_until(meta) {
            resp = resp
                .header("x-amz-restore", format!("ongoing-request=\"false\", expiry-date=\"{}\"", http_date(until)));
        }
    }
    if !meta.part_sizes.is_empty() {
        resp = resp.header("x-amz-mp-parts-count", meta.part_sizes.len().to_string());
    }
    resp
}

/// Parses a Range header against an object size as AWS does: Ok(None) serves the whole
/// object (200). `bytes=first-last` with a last byte beyond the object is cut at its end
/// (RFC 9110); a first byte at or beyond the end, or the suffix `bytes=-0`, is 416
/// InvalidRange; anything AWS does not read as one range (another unit, several ranges,
/// last before first, not numbers) is ignored. Positions too large for 64 bits saturate:
/// they lie beyond any object, which is all they can mean.
pub fn parse_range(header: &str, size: u64) -> S3Result<Option<(u64, u64)>> {
    let unsatisfiable = || err(Code::InvalidRange, "The requested range is not satisfiable");
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Ok(None) };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else { return Ok(None) };
    let (first, last) = (first.trim(), last.trim());
    match (byte_position(first), byte_position(last)) {
        // The last n bytes; on an empty object there are none, and AWS serves it whole.
        (None, Some(n)) if first.is_empty() => match n {
            0 => unsatisfiable(),
            _ if size == 0 => Ok(None),
            n => Ok(Some((size - n.min(size), size))),
        },
        (Some(start), end) if end.is_some() || last.is_empty() => match end {
            _ if start >= size => unsatisfiable(),
            None => Ok(Some((start, size))),
            Some(end) if end >= start => Ok(Some((start, end.min(size - 1) + 1))),
            Some(_) => Ok(None),
        },
        _ => Ok(None),
    }
}

/// DeleteObject: through the mover, which also removes the blob of an object that moved
/// to a tier.
pub async fn delete(ctx: &Ctx, object: ObjectRef<'_>) -> S3Result<Response> {
    ctx.mover.delete_object(object.bucket, object.key).await?;
    Ok(Response::new(204))
}

pub async fn delete_objects(ctx: &Ctx, bucket: &str, body: &mut Body<'_>) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    let (quiet, keys) = parse_delete(&doc)?;
    let mut x = Xml::new("DeleteResult");
    // Start every delete before awaiting any, so the owning cores commit them together
    // (one log write and fdatasync per core per batch instead of one per key); where tiers
    // exist each first looks the object up, to remove the blob of one that moved to a tier.
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let (mover, bucket) = (ctx.mover.clone(), bucket.to_owned());
            monoio::spawn(async move {
                let result = mover.delete_object(&bucket, &key).await;
                (key, result)
            })
        })
        .collect();
    for task in tasks {
        let (key, result) = task.await;
        let key = key.as_str();
        match result {
            Ok(()) if quiet => {}
            Ok(()) => {
                x.start("Deleted").elem("Key", key).end();
            }
            Err(e) => {
                let e = S3Error::from(e);
                x.start("Error").elem("Key", key).elem("Code", e.code.as_str()).elem("Message", &e.message).end();
            }
        }
    }
    Ok(Response::xml(x.finish()))
}

/// A DeleteObjects document: whether the answer is quiet, and the keys (1 to 1,000).
pub fn parse_delete(doc: &[u8]) -> S3Result<(bool, Vec<String>)> {
    let root = parse(doc)?;
    if root.name != "Delete" {
        return malformed_xml();
    }
    let quiet = root.text_of("Quiet").is_some_and(|q| q.trim() == "true");
    let keys: Vec<String> = root.all("Object").filter_map(|o| o.text_of("Key")).map(str::to_owned).collect();
    if keys.is_empty() || keys.len() > DELETE_OBJECTS_MAX || keys.len() != root.all("Object").count() {
        return malformed_xml();
    }
    Ok((quiet, keys))
}

/// RestoreObject: brings a transitioned object's bytes back for `Days` (202 when a restore
/// starts, 200 when a restored copy exists and only its expiry moves).
pub async fn restore(ctx: &Ctx, object: ObjectRef<'_>, body: &mut Body<'_>) -> S3Result<Response> {
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    let days = parse_restore_days(&doc)?;
    let started = ctx.mover.restore(object.bucket, object.key, days).await?;
    Ok(Response::new(if started { 202 } else { 200 }))
}

/// A RestoreRequest document's Days (a positive integer).
pub fn parse_restore_days(doc: &[u8]) -> S3Result<u32> {
    let root = parse(doc)?;
    if root.name != "RestoreRequest" {
        return malformed_xml();
    }
    match root.text_of("Days").map(|d| d.trim().parse::<u32>()) {
        Some(Ok(days)) if days > 0 => Ok(days),
        _ => err(Code::InvalidArgument, "Days must be a positive integer"),
    }
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
        assert_eq!(parse_range("bytes=-0", 100).unwrap_err().code, Code::InvalidRange);
        assert_eq!(parse_range("bytes=-5", 0).unwrap(), None);
        assert_eq!(parse_range("bytes=9-1", 100).unwrap(), None);
        // First beyond the end wins over last before first, as on AWS.
        assert_eq!(parse_range("bytes=200-1", 100).unwrap_err().code, Code::InvalidRange);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=a-b", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=200-b", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=+1-2", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=-", 100).unwrap(), None);
    }

    /// Issue 16, item 7: positions at and beyond u64::MAX never wrap.
    #[test]
    fn huge_positions_saturate_instead_of_wrapping() {
        let max = u64::MAX.to_string();
        assert_eq!(parse_range(&format!("bytes=5-{max}"), 10).unwrap(), Some((5, 10)));
        assert_eq!(parse_range("bytes=5-99999999999999999999999999", 10).unwrap(), Some((5, 10)));
        assert_eq!(parse_range(&format!("bytes=0-{max}"), u64::MAX).unwrap(), Some((0, u64::MAX)));
        assert_eq!(parse_range(&format!("bytes={max}-"), 10).unwrap_err().code, Code::InvalidRange);
        assert_eq!(parse_range(&format!("bytes={max}-{max}"), 10).unwrap_err().code, Code::InvalidRange);
        assert_eq!(parse_range(&format!("bytes=-{max}"), 10).unwrap(), Some((0, 10)));
        assert_eq!(parse_range("bytes=-99999999999999999999999999", 10).unwrap(), Some((0, 10)));
    }

    proptest::proptest! {
        /// Whatever the header, a range served lies inside the object and is not empty.
        #[test]
        fn a_served_range_is_inside_the_object(a in proptest::option::of(proptest::num::u64::ANY),
                                                b in proptest::option::of(proptest::num::u64::ANY),
                                                size in proptest::num::u64::ANY) {
            let text = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
            let header = format!("bytes={}-{}", text(a), text(b));
            if let Ok(Some((start, end))) = parse_range(&header, size) {
                proptest::prop_assert!(start < end && end <= size, "{header} on {size}: {start}..{end}");
            }
        }
    }

    /// Found by the `range` fuzz target: the last byte position u64::MAX overflowed (a panic
    /// in debug builds; in release, 206 with a Content-Length of 2^64 - 5 and `bytes 5-0/10`).
    #[test]
    fn a_last_byte_of_u64_max_is_the_end_of_the_object() {
        assert_eq!(parse_range("bytes=5-18446744073709551615", 10).unwrap(), Some((5, 10)));
        assert_eq!(parse_range("bytes=840-18446744073709551615", 1000).unwrap(), Some((840, 1000)));
        assert_eq!(parse_range("bytes=0-18446744073709551615", u64::MAX).unwrap(), Some((0, u64::MAX)));
        assert_eq!(parse_range("bytes=10-18446744073709551615", 10).unwrap_err().code, Code::InvalidRange);
    }
}
