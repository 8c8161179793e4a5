//! A bucket's configuration: default encryption (Put/Get/DeleteBucketEncryption) and
//! lifecycle rules (Put/Get/DeleteBucketLifecycleConfiguration), stored in the engine's
//! bucket map. Versioning has none yet (bucket.rs).

use ferrite_tiering::rules;

use crate::body::Body;
use crate::error::{err, Code, S3Error, S3Result};
use crate::limits::XML_BODY_BYTES_MAX;
use crate::request::{Ctx, Response};
use crate::sse;

use super::common::{read_small_body, require_bucket};

pub async fn put_encryption(ctx: &Ctx, bucket: &str, body: &mut Body<'_>) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    let config = sse::parse_bucket_config(&doc)?;
    if ctx.kms.is_none() {
        return err(Code::NotImplemented, "Bucket default encryption needs a KMS (set FERRITE_KMS_SECRET_KEY).");
    }
    ctx.engine.put_bucket_config(bucket, sse::BUCKET_CONFIG, Some(config)).await?;
    Ok(Response::new(200))
}

pub fn get_encryption(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    match ctx.engine.bucket_config(bucket, sse::BUCKET_CONFIG)? {
        Some(config) => Ok(Response::xml(sse::bucket_config_xml(&config))),
        None => err(
            Code::ServerSideEncryptionConfigurationNotFoundError,
            "The server side encryption configuration was not found",
        ),
    }
}

pub async fn delete_encryption(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    ctx.engine.put_bucket_config(bucket, sse::BUCKET_CONFIG, None).await?;
    Ok(Response::new(204))
}

/// Stores a lifecycle configuration as sent, once the mover's rules accept it (every
/// transition names a tier that exists).
pub async fn put_lifecycle(ctx: &Ctx, bucket: &str, body: &mut Body<'_>) -> S3Result<Response> {
    require_bucket(ctx, bucket)?;
    let doc = read_small_body(body, XML_BODY_BYTES_MAX).await?;
    rules::parse(&doc, &|tier| ctx.mover.tier_exists(tier))?;
    let doc = String::from_utf8(doc).map_err(|_| S3Error::new(Code::MalformedXML, "the document is not UTF-8"))?;
    ctx.engine.put_bucket_config(bucket, rules::BUCKET_CONFIG, Some(doc)).await?;
    Ok(Response::new(200))
}

pub fn get_lifecycle(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    match ctx.engine.bucket_config(bucket, rules::BUCKET_CONFIG)? {
        Some(doc) => Ok(Response::xml(doc.into_bytes())),
        None => err(Code::NoSuchLifecycleConfiguration, "The lifecycle configuration does not exist"),
    }
}

pub async fn delete_lifecycle(ctx: &Ctx, bucket: &str) -> S3Result<Response> {
    ctx.engine.put_bucket_config(bucket, rules::BUCKET_CONFIG, None).await?;
    Ok(Response::new(204))
}
