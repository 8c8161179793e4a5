//! Copies: CopyObject and UploadPartCopy. The source's plaintext is read (decrypted if it
//! is encrypted) and written again as the target asks (sealed under the target's key).

use ferrite_engine::sse::Sealer;
use ferrite_engine::{now_ms, DataLoc, DataWriter, Finished, ObjectMeta, PartMeta};

use crate::checksum::{md5_finish, md5_new};
use crate::encryption::Encryption;
use crate::error::{err, Code, S3Result};
use crate::limits::PUT_BYTES_MAX;
use crate::object_stream::ObjectStream;
use crate::request::{Call, Ctx, Response};
use crate::router::{CopySource, ObjectRef, PartRef};
use crate::sse;
use crate::xml::Xml;

use super::common::{
    byte_position, check_conditions, iso8601, parse_tag_query, put_condition, quoted, stored_headers, INTERNAL_PREFIX,
};
use super::write::{etag_of, sealer_for, with_sse_headers, SealingWriter};

/// The source object: its metadata and, when encrypted, its open key.
struct Source {
    bucket: String,
    key: String,
    meta: ObjectMeta,
    encryption: Option<Encryption>,
}

/// Looks the source up, opens its key and applies the `x-amz-copy-source-if-*` conditions.
async fn open_source(ctx: &Ctx, call: &Call<'_>, source: &CopySource) -> S3Result<Source> {
    let CopySource { bucket, key } = source;
    let meta = ctx.engine.head_object(bucket, key).await?;
    let encryption = sse::open_stored(ctx, call, bucket, key, &meta.headers, true).await?;
    check_conditions(call, &meta, "x-amz-copy-source-")?;
    Ok(Source { bucket: bucket.clone(), key: key.clone(), meta, encryption })
}

pub async fn copy_object(ctx: &Ctx, call: &Call<'_>, object: ObjectRef<'_>, source: &CopySource) -> S3Result<Response> {
    let ObjectRef { bucket, key } = object;
    let src = open_source(ctx, call, source).await?;
    check_copy_size(src.meta.size)?;
    let replace = match call.header("x-amz-metadata-directive") {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(_) => return err(Code::InvalidArgument, "Unknown metadata directive."),
    };
    check_not_onto_itself(call, object, source, replace)?;
    let mut headers = if replace { stored_headers(call)? } else { src.meta.headers.clone() };
    // The copy is encrypted as the request (or the bucket) says, not as the source was.
    headers.retain(|(n, _)| !n.starts_with(INTERNAL_PREFIX));
    let encryption = sse::for_new_object(ctx, call, bucket, key).await?;
    if let Some(encryption) = &encryption {
        headers.extend(encryption.stored_headers());
    }
    let tags = match call.header("x-amz-tagging-directive") {
        Some("REPLACE") => parse_tag_query(call.header("x-amz-tagging").unwrap_or(""))?,
        _ => src.meta.tags.clone(),
    };
    let writer = ctx.engine.writer(bucket, key, true)?;
    let sealer = sealer_for(encryption.as_ref(), &writer)?;
    let (md5, data) = copy_into(ctx, &src, (0, src.meta.size), writer, sealer).await?;
    let etag = etag_of(encryption.as_ref(), &md5);
    let mtime_ms = now_ms();
    let meta = ObjectMeta {
        size: src.meta.size,
        etag: etag.clone(),
        mtime_ms,
        headers,
        // A multipart source's composite checksum does not describe the single-part copy.
        checksum: if src.meta.part_sizes.is_empty() { src.meta.checksum.clone() } else { None },
        tags,
        part_sizes: Vec::new(),
        data: DataLoc::Parts(Vec::new()),
    };
    ctx.engine.put_object(bucket, key, meta, data, put_condition(call)).await?;
    let mut x = Xml::new("CopyObjectResult");
    x.elem("LastModified", &iso8601(mtime_ms)).elem("ETag", &quoted(&etag));
    Ok(with_sse_headers(Response::xml(x.finish()), encryption.as_ref()))
}

/// AWS refuses a copy of an object onto itself that changes nothing.
fn check_not_onto_itself(call: &Call, object: ObjectRef, source: &CopySource, replace: bool) -> S3Result<()> {
    let changes_encryption = call.header("x-amz-server-side-encryption").is_some()
        || call.header("x-amz-server-side-encryption-customer-algorithm").is_some();
    if source.bucket == object.bucket
        && source.key == object.key
        && !replace
        && !changes_encryption
        && call.header("x-amz-tagging-directive").is_none()
    {
        return err(
            Code::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        );
    }
    Ok(())
}

pub async fn upload_part_copy(
    ctx: &Ctx,
    call: &Call<'_>,
    object: ObjectRef<'_>,
    part: PartRef<'_>,
    source: &CopySource,
) -> S3Result<Response> {
    let ObjectRef { bucket, key } = object;
    let upload = ctx.engine.get_upload(bucket, key, part.upload_id).await?;
    let encryption = sse::open_stored(ctx, call, bucket, key, &upload.headers, false).await?;
    let src = open_source(ctx, call, source).await?;
    let range = copy_range(call.header("x-amz-copy-source-range"), src.meta.size)?;
    check_copy_size(range.1 - range.0)?;
    let writer = ctx.engine.writer(bucket, key, false)?;
    let sealer = sealer_for(encryption.as_ref(), &writer)?;
    let (md5, data) = copy_into(ctx, &src, range, writer, sealer).await?;
    let Some(loc) = data.part() else {
        return err(Code::InternalError, "a part was inlined");
    };
    let etag = etag_of(encryption.as_ref(), &md5);
    let mtime_ms = now_ms();
    let meta = PartMeta { file_id: loc.file_id, size: loc.size, etag: etag.clone(), mtime_ms, checksum: None };
    ctx.engine.put_part(bucket, key, part.upload_id, part.number, meta).await?;
    let mut x = Xml::new("CopyPartResult");
    x.elem("LastModified", &iso8601(mtime_ms)).elem("ETag", &quoted(&etag));
    Ok(with_sse_headers(Response::xml(x.finish()), encryption.as_ref()))
}

/// `x-amz-copy-source-range: bytes=first-last`, as [start, end); the whole source without.
/// Stricter than Range, with AWS's errors: a malformed value is InvalidArgument, a first
/// byte beyond the source InvalidRequest, a last byte beyond it InvalidArgument. Positions
/// saturate at u64::MAX (never wrap), so a huge one is simply beyond the source.
pub fn copy_range(header: Option<&str>, size: u64) -> S3Result<(u64, u64)> {
    let Some(r) = header else { return Ok((0, size)) };
    let parsed = r
        .trim()
        .strip_prefix("bytes=")
        .and_then(|s| s.split_once('-'))
        .and_then(|(a, b)| Some((byte_position(a.trim())?, byte_position(b.trim())?)));
    match parsed {
        Some((first, last)) if first <= last => {
            if first >= size {
                return err(Code::InvalidRequest, "The specified copy range is invalid for the source object size");
            }
            if last >= size {
                return err(
                    Code::InvalidArgument,
                    format!("Range specified is not valid for source object of size: {size}"),
                );
            }
            Ok((first, last + 1))
        }
        _ => err(Code::InvalidArgument, "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"),
    }
}

/// AWS copies at most 5 GiB in one CopyObject or UploadPartCopy (larger objects are copied
/// in ranges, part by part).
fn check_copy_size(bytes: u64) -> S3Result<()> {
    if bytes > PUT_BYTES_MAX {
        return err(
            Code::InvalidRequest,
            format!("The specified copy source is larger than the maximum allowable size for a copy source: {PUT_BYTES_MAX}"),
        );
    }
    Ok(())
}

/// Copies the source's plaintext [start, end) into the writer's new data file and finishes
/// it; on any error the file is discarded.
async fn copy_into(
    ctx: &Ctx,
    src: &Source,
    range: (u64, u64),
    mut writer: DataWriter,
    sealer: Option<Sealer>,
) -> S3Result<([u8; 16], Finished)> {
    match copy_data(ctx, src, range, &mut writer, sealer).await {
        Ok(md5) => Ok((md5, writer.finish().await?)),
        Err(e) => {
            writer.discard().await;
            Err(e)
        }
    }
}

/// Copies plaintext bytes [start, end) of the source object (decrypting it if it is
/// encrypted) into `writer` (sealing them again with `sealer`). Returns the plaintext MD5.
async fn copy_data(
    ctx: &Ctx,
    src: &Source,
    range: (u64, u64),
    writer: &mut DataWriter,
    sealer: Option<Sealer>,
) -> S3Result<[u8; 16]> {
    let _slot = ctx.budget.acquire().await?;
    let from = (src.bucket.as_str(), src.key.as_str());
    let mut reader = ObjectStream::open(&ctx.mover, from, &src.meta, src.encryption.as_ref(), range);
    let mut md5 = md5_new();
    let mut out = SealingWriter::new(writer, sealer);
    while let Some(chunk) = reader.next_chunk().await? {
        md5::Digest::update(&mut md5, &chunk);
        out.write(&chunk).await?;
    }
    out.finish().await?;
    Ok(md5_finish(md5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_ranges_as_aws_answers_them() {
        assert_eq!(copy_range(None, 10).unwrap(), (0, 10));
        assert_eq!(copy_range(Some("bytes=0-9"), 10).unwrap(), (0, 10));
        assert_eq!(copy_range(Some("bytes=3-3"), 10).unwrap(), (3, 4));
        let max = u64::MAX.to_string();
        for (range, code) in [
            ("bytes=0-10", Code::InvalidArgument),
            (&format!("bytes=5-{max}") as &str, Code::InvalidArgument),
            ("bytes=5-99999999999999999999999", Code::InvalidArgument),
            ("bytes=10-12", Code::InvalidRequest),
            (&format!("bytes={max}-{max}"), Code::InvalidRequest),
            ("bytes=5-4", Code::InvalidArgument),
            ("bytes=-5", Code::InvalidArgument),
            ("bytes=5-", Code::InvalidArgument),
            ("bytes=0-1,3-4", Code::InvalidArgument),
            ("items=0-1", Code::InvalidArgument),
        ] {
            assert_eq!(copy_range(Some(range), 10).unwrap_err().code, code, "{range}");
        }
        assert_eq!(copy_range(Some(&format!("bytes=0-{}", u64::MAX - 1)), u64::MAX).unwrap(), (0, u64::MAX));
    }

    #[test]
    fn copies_beyond_five_gib_are_refused() {
        assert!(check_copy_size(PUT_BYTES_MAX).is_ok());
        assert_eq!(check_copy_size(PUT_BYTES_MAX + 1).unwrap_err().code, Code::InvalidRequest);
    }
}
