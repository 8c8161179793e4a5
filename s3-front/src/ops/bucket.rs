//! Buckets: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation,
//! GetBucketVersioning.

use crate::body::Body;
use crate::error::{malformed_xml, S3Result};
use crate::limits::XML_BODY_BYTES_MAX;
use crate::request::{Ctx, Response};
use crate::xml::{parse, Xml, S3_NS, XML_DECL};

use super::common::{iso8601, read_small_body, require_bucket};

pub fn list_buckets(ctx: &Ctx) -> S3Result<Response> {
    let mut x = Xml::new("ListAllMyBucketsResult");
    x.start("Owner").elem("ID", &ctx.config.root_user).elem("DisplayName", &ctx.config.root_user).end();
    x.start("Buckets");
    for (name, created) in ctx.engine.list_buckets() {
        x.start("Bucket").elem("Name", &name).elem("CreationDate", &iso8601(created)).end();
    }
    x.end();
    Ok(Response::xml(x.finish()))
}

/// CreateBucket (the name is valid: the router checked it).
pub async fn create(ctx: &Ctx, bucket: &str, body: &mut Body<'_>) -> S3Result<Response> {
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    check_create_bucket_configuration(&doc)?;
    ctx.engine.create_bucket(bucket).await?;
    Ok(Response::new(200).header("Location", format!("/{bucket}")))
}

/// CreateBucket's body: none, or a CreateBucketConfiguration document.
pub fn check_create_bucket_configuration(doc: &[u8]) -> S3Result<()> {
    if !doc.iter().all(u8::is_ascii_whitespace) && parse(doc)?.name != "CreateBucketConfiguration" {
        return malformed_xml();
    }
    Ok(())
}

pub fn head(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    Ok(Response::new(200).header("x-amz-bucket-region", ctx.config.region.clone()))
}

pub async fn delete(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    ctx.engine.delete_bucket(bucket).await?;
    Ok(Response::new(204))
}

pub fn location(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    let region = if ctx.config.region == "us-east-1" { "" } else { ctx.config.region.as_str() };
    let body = format!("{XML_DECL}<LocationConstraint xmlns=\"{S3_NS}\">{region}</LocationConstraint>");
    Ok(Response::xml(body.into_bytes()))
}

/// Versioning is not implemented: every bucket answers as never versioned.
pub fn versioning(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    Ok(Response::xml(Xml::new("VersioningConfiguration").finish()))
}
