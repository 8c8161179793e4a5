//! Multipart uploads: CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
//! AbortMultipartUpload, ListParts, ListMultipartUploads. (UploadPartCopy is copy.rs.)
//! Completing an upload writes one metadata record: the object is the list of its parts'
//! files, no data is copied.

use ferrite_engine::{now_ms, DataLoc, ObjectMeta, PartLoc, PartMeta, UploadMeta};

use crate::body::Body;
use crate::checksum::{b64_decode, md5_finish, md5_new, unhex, Algorithm, Hasher};
use crate::encryption::{is_encrypted, plain_len};
use crate::error::{err, malformed_xml, Code, OrBadRequest, S3Result};
use crate::limits::{PART_BYTES_MIN, PUT_BYTES_MAX, XML_BODY_BYTES_MAX};
use crate::request::{Call, Ctx, Response};
use crate::router::{ListPartsInput, ListUploadsInput, ObjectRef, PartRef};
use crate::sigv4::hex;
use crate::sse;
use crate::xml::{parse, Xml};

use super::common::{
    iso8601, parse_tag_query, put_condition, quoted, read_small_body, stored_headers_typed, unquote, UPLOAD_TAGS_HEADER,
};
use super::write::{etag_of, sealer_for, stream_body, with_checksum_header, with_sse_headers};

pub async fn create(ctx: &Ctx, call: &Call<'_>, object: ObjectRef<'_>) -> S3Result<Response> {
    let ObjectRef { bucket, key } = object;
    let mut headers = stored_headers_typed(call)?;
    if let Some(t) = call.header("x-amz-tagging") {
        parse_tag_query(t)?;
        headers.push((UPLOAD_TAGS_HEADER.into(), t.to_owned()));
    }
    let algorithm = match call.header("x-amz-checksum-algorithm") {
        Some(a) => Some(Algorithm::parse(a).or_invalid("unsupported checksum algorithm")?.name().to_owned()),
        None => None,
    };
    let mut encryption = sse::for_new_object(ctx, call, bucket, key).await?;
    if let Some(encryption) = &mut encryption {
        encryption.multipart = true;
        headers.extend(encryption.stored_headers());
    }
    let upload_id = ctx.engine.create_upload(bucket, key, headers, algorithm.clone()).await?;
    let mut x = Xml::new("InitiateMultipartUploadResult");
    x.elem("Bucket", bucket).elem("Key", key).elem("UploadId", &upload_id);
    let mut resp = with_sse_headers(Response::xml(x.finish()), encryption.as_ref());
    if let Some(a) = algorithm {
        resp = resp.header("x-amz-checksum-algorithm", a);
    }
    Ok(resp)
}

pub async fn upload_part(
    ctx: &Ctx,
    call: &Call<'_>,
    object: ObjectRef<'_>,
    part: PartRef<'_>,
    body: &mut Body<'_>,
) -> S3Result<Response> {
    let ObjectRef { bucket, key } = object;
    let upload = ctx.engine.get_upload(bucket, key, part.upload_id).await?;
    let encryption = sse::open_stored(ctx, call, bucket, key, &upload.headers, false).await?;
    if call.header("content-length").is_none() && call.header("transfer-encoding").is_none() {
        return err(Code::MissingContentLength, "You must provide the Content-Length HTTP header.");
    }
    let writer = ctx.engine.writer(bucket, key, false)?;
    let sealer = sealer_for(encryption.as_ref(), &writer)?;
    let streamed = stream_body(ctx, call, body, writer, PUT_BYTES_MAX, sealer).await?;
    let Some(loc) = streamed.data.part() else {
        return err(Code::InternalError, "a part was inlined");
    };
    let etag = etag_of(encryption.as_ref(), &streamed.md5);
    // The stored (ciphertext) size: what the engine reads back. ListParts and Complete
    // turn it into the plaintext size for encrypted uploads.
    let meta = PartMeta {
        file_id: loc.file_id,
        size: loc.size,
        etag: etag.clone(),
        mtime_ms: now_ms(),
        checksum: streamed.checksum.clone(),
    };
    ctx.engine.put_part(bucket, key, part.upload_id, part.number, meta).await?;
    let resp = with_checksum_header(Response::new(200).header("ETag", quoted(&etag)), &streamed.checksum);
    Ok(with_sse_headers(resp, encryption.as_ref()))
}

pub async fn complete(
    ctx: &Ctx,
    call: &Call<'_>,
    object: ObjectRef<'_>,
    upload_id: &str,
    body: &mut Body<'_>,
) -> S3Result<Response> {
    let ObjectRef { bucket, key } = object;
    let upload = ctx.engine.get_upload(bucket, key, upload_id).await?;
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    let parts = chosen_parts(&upload, &listed_parts(&doc)?)?;
    let meta = completed_object(upload, &parts)?;
    let (etag, checksum) = (meta.etag.clone(), meta.checksum.clone());
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

/// The parts a CompleteMultipartUpload document lists: (number, ETag), in ascending order.
pub fn listed_parts(doc: &[u8]) -> S3Result<Vec<(u32, String)>> {
    let root = parse(doc)?;
    if root.name != "CompleteMultipartUpload" {
        return malformed_xml();
    }
    let mut listed = Vec::new();
    for part in root.all("Part") {
        let Some(number) = part.text_of("PartNumber").and_then(|n| n.trim().parse::<u32>().ok()) else {
            return malformed_xml();
        };
        let etag = unquote(part.text_of("ETag").unwrap_or("")).to_owned();
        listed.push((number, etag));
    }
    if listed.is_empty() {
        return malformed_xml();
    }
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return err(
            Code::InvalidPartOrder,
            "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
        );
    }
    Ok(listed)
}

/// The uploaded parts the list names, each with the ETag it names; every part but the last
/// at least `PART_BYTES_MIN` of plaintext.
fn chosen_parts(upload: &UploadMeta, listed: &[(u32, String)]) -> S3Result<Vec<(u32, PartMeta)>> {
    let mut parts = Vec::new();
    for (number, etag) in listed {
        match upload.parts.get(number) {
            Some(p) if p.etag == *etag => parts.push((*number, p.clone())),
            _ => return err(Code::InvalidPart, "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."),
        }
    }
    let encrypted = is_encrypted(&upload.headers);
    for (_, p) in &parts[..parts.len() - 1] {
        if plain_size(encrypted, p.size) < PART_BYTES_MIN {
            return err(Code::EntityTooSmall, "Your proposed upload is smaller than the minimum allowed object size.");
        }
    }
    Ok(parts)
}

/// A part's plaintext size: parts of an encrypted upload are stored sealed.
fn plain_size(encrypted: bool, stored: u64) -> u64 {
    if encrypted {
        plain_len(stored)
    } else {
        stored
    }
}

/// The completed object's metadata: the multipart ETag (the MD5 of the parts' MD5s, and
/// their count), the composite checksum, and the tags the upload was created with.
fn completed_object(upload: UploadMeta, parts: &[(u32, PartMeta)]) -> S3Result<ObjectMeta> {
    let encrypted = is_encrypted(&upload.headers);
    let mut md5s = md5_new();
    for (_, p) in parts {
        md5::Digest::update(&mut md5s, unhex(&p.etag).unwrap_or_default());
    }
    let etag = format!("{}-{}", hex(&md5_finish(md5s)), parts.len());
    let checksum = upload.checksum_algorithm.as_deref().and_then(Algorithm::parse).and_then(|a| {
        let mut h = Hasher::new(a);
        for (_, p) in parts {
            let (_, value) = p.checksum.as_ref()?;
            h.update(&b64_decode(value)?);
        }
        Some((a.name().to_owned(), format!("{}-{}", h.finish_base64(), parts.len())))
    });
    let mut headers = upload.headers;
    let tags = match headers.iter().position(|(n, _)| n == UPLOAD_TAGS_HEADER) {
        Some(i) => parse_tag_query(&headers.remove(i).1)?,
        None => Vec::new(),
    };
    let part_sizes: Vec<u64> = parts.iter().map(|(_, p)| plain_size(encrypted, p.size)).collect();
    Ok(ObjectMeta {
        size: part_sizes.iter().sum(),
        etag,
        mtime_ms: now_ms(),
        headers,
        checksum,
        tags,
        part_sizes,
        data: DataLoc::Parts(parts.iter().map(|(_, p)| PartLoc { file_id: p.file_id, size: p.size }).collect()),
    })
}

pub async fn abort(ctx: &Ctx, object: ObjectRef<'_>, upload_id: &str) -> S3Result<Response> {
    ctx.engine.abort_upload(object.bucket, object.key, upload_id).await?;
    Ok(Response::new(204))
}

pub async fn list_parts(ctx: &Ctx, object: ObjectRef<'_>, input: &ListPartsInput<'_>) -> S3Result<Response> {
    let ObjectRef { bucket, key } = object;
    let upload = ctx.engine.get_upload(bucket, key, input.upload_id).await?;
    let (max_parts, marker) = (input.max_parts, input.part_number_marker);
    let selected: Vec<_> = upload.parts.range(marker + 1..).take(max_parts + 1).collect();
    let truncated = selected.len() > max_parts;
    let encrypted = is_encrypted(&upload.headers);
    let mut x = Xml::new("ListPartsResult");
    x.elem("Bucket", bucket).elem("Key", key).elem("UploadId", input.upload_id);
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
            .elem("Size", &plain_size(encrypted, p.size).to_string());
        if let Some((a, v)) = &p.checksum {
            x.elem(&format!("Checksum{a}"), v);
        }
        x.end();
    }
    Ok(Response::xml(x.finish()))
}

pub async fn list_uploads(ctx: &Ctx, bucket: &str, input: &ListUploadsInput<'_>) -> S3Result<Response> {
    let ListUploadsInput { prefix, key_marker, upload_id_marker, max_uploads: max } = *input;
    // A key marker without an upload id marker skips every upload of that key.
    let id_marker_eff =
        if !key_marker.is_empty() && upload_id_marker.is_empty() { "\u{10FFFF}" } else { upload_id_marker };
    let uploads = ctx.engine.list_uploads(bucket, prefix, key_marker, id_marker_eff, max).await?;
    let truncated = uploads.len() > max;
    let shown = &uploads[..uploads.len().min(max)];
    let mut x = Xml::new("ListMultipartUploadsResult");
    x.elem("Bucket", bucket)
        .elem("KeyMarker", key_marker)
        .elem("UploadIdMarker", upload_id_marker)
        .elem("Prefix", prefix);
    if let Some(last) = shown.last().filter(|_| truncated) {
        x.elem("NextKeyMarker", &last.key).elem("NextUploadIdMarker", &last.upload_id);
    }
    x.elem("MaxUploads", &max.to_string()).elem("IsTruncated", if truncated { "true" } else { "false" });
    let root = &ctx.config.root_user;
    for u in shown {
        x.start("Upload").elem("Key", &u.key).elem("UploadId", &u.upload_id);
        x.start("Initiator").elem("ID", root).elem("DisplayName", root).end();
        x.start("Owner").elem("ID", root).elem("DisplayName", root).end();
        x.elem("StorageClass", "STANDARD").elem("Initiated", &iso8601(u.initiated_ms)).end();
    }
    Ok(Response::xml(x.finish()))
}
