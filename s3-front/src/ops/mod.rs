//! The S3 operations, by resource, and `run`, which hands each endpoint to its operation.
//! Each operation takes its validated inputs (router.rs), the call (for the headers it
//! reads) and the request body, and returns a response; errors are S3 errors.
//!
//! The submodules import only `common` (shared helpers) and `write` (streaming a body into
//! the engine) of their siblings; `write` imports nothing of them, `common` nothing at all.

pub mod admin;
pub mod bucket;
mod bucket_config;
pub mod common;
pub mod copy;
mod list;
pub mod multipart;
pub mod object;
pub mod tagging;
mod write;

use crate::body::Body;
use crate::error::S3Result;
use crate::request::{Call, Ctx, Response};
use crate::router::Endpoint;

/// Runs the operation of an authenticated request.
pub async fn run(ctx: &Ctx, call: &Call<'_>, endpoint: Endpoint<'_>, body: &mut Body<'_>) -> S3Result<Response> {
    use Endpoint::*;
    match endpoint {
        Metrics => admin::metrics(ctx, call.req),
        ListBuckets => bucket::list_buckets(ctx),
        CreateBucket { bucket } => bucket::create(ctx, bucket, body).await,
        HeadBucket { bucket } => bucket::head(ctx, bucket),
        DeleteBucket { bucket } => bucket::delete(ctx, bucket).await,
        GetBucketLocation { bucket } => bucket::location(ctx, bucket),
        GetBucketVersioning { bucket } => bucket::versioning(ctx, bucket),
        ListObjects { bucket, input } => list::list_objects(ctx, bucket, &input).await,
        ListMultipartUploads { bucket, input } => multipart::list_uploads(ctx, bucket, &input).await,
        DeleteObjects { bucket } => object::delete_objects(ctx, bucket, body).await,
        PutBucketEncryption { bucket } => bucket_config::put_encryption(ctx, bucket, body).await,
        GetBucketEncryption { bucket } => bucket_config::get_encryption(ctx, bucket),
        DeleteBucketEncryption { bucket } => bucket_config::delete_encryption(ctx, bucket).await,
        PutBucketLifecycle { bucket } => bucket_config::put_lifecycle(ctx, bucket, body).await,
        GetBucketLifecycle { bucket } => bucket_config::get_lifecycle(ctx, bucket),
        DeleteBucketLifecycle { bucket } => bucket_config::delete_lifecycle(ctx, bucket).await,
        PutObject(object) => object::put(ctx, call, object, body).await,
        CopyObject { object, source } => copy::copy_object(ctx, call, object, &source).await,
        GetObject { object, input } => object::get(ctx, call, object, &input, false).await,
        HeadObject { object, input } => object::get(ctx, call, object, &input, true).await,
        DeleteObject(object) => object::delete(ctx, object).await,
        RestoreObject(object) => object::restore(ctx, object, body).await,
        PutObjectTagging(object) => tagging::put(ctx, object, body).await,
        GetObjectTagging(object) => tagging::get(ctx, object).await,
        DeleteObjectTagging(object) => tagging::delete(ctx, object).await,
        CreateMultipartUpload(object) => multipart::create(ctx, call, object).await,
        UploadPart { object, part } => multipart::upload_part(ctx, call, object, part, body).await,
        UploadPartCopy { object, part, source } => copy::upload_part_copy(ctx, call, object, part, &source).await,
        CompleteMultipartUpload { object, upload_id } => multipart::complete(ctx, call, object, upload_id, body).await,
        AbortMultipartUpload { object, upload_id } => multipart::abort(ctx, object, upload_id).await,
        ListParts { object, input } => multipart::list_parts(ctx, object, &input).await,
        Admin(endpoint) => admin::run(ctx, call, endpoint, body).await,
    }
}
