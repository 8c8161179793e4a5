//! Object tags: PutObjectTagging, GetObjectTagging, DeleteObjectTagging. (Tags given with a
//! PUT, a copy or a multipart upload are read where those are.)

use crate::body::Body;
use crate::error::{malformed_xml, S3Result};
use crate::limits::XML_BODY_BYTES_MAX;
use crate::request::{Ctx, Response};
use crate::router::ObjectRef;
use crate::xml::{parse, Xml};

use super::common::{read_small_body, validate_tags};

pub async fn put(ctx: &Ctx, object: ObjectRef<'_>, body: &mut Body<'_>) -> S3Result<Response> {
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    let tags = parse_tagging(&doc)?;
    ctx.engine.set_tags(object.bucket, object.key, tags).await?;
    Ok(Response::new(200))
}

/// The tags of a PutObjectTagging document, validated.
pub fn parse_tagging(doc: &[u8]) -> S3Result<Vec<(String, String)>> {
    let root = parse(doc)?;
    if root.name != "Tagging" {
        return malformed_xml();
    }
    let mut tags = Vec::new();
    if let Some(set) = root.child("TagSet") {
        for tag in set.all("Tag") {
            let (Some(k), Some(v)) = (tag.text_of("Key"), tag.text_of("Value").or(Some(""))) else {
                return malformed_xml();
            };
            tags.push((k.to_owned(), v.to_owned()));
        }
    }
    validate_tags(&tags)?;
    Ok(tags)
}

pub async fn get(ctx: &Ctx, object: ObjectRef<'_>) -> S3Result<Response> {
    let meta = ctx.engine.head_object(object.bucket, object.key).await?;
    let mut x = Xml::new("Tagging");
    x.start("TagSet");
    for (k, v) in &meta.tags {
        x.start("Tag").elem("Key", k).elem("Value", v).end();
    }
    x.end();
    Ok(Response::xml(x.finish()))
}

pub async fn delete(ctx: &Ctx, object: ObjectRef<'_>) -> S3Result<Response> {
    ctx.engine.set_tags(object.bucket, object.key, Vec::new()).await?;
    Ok(Response::new(204))
}
