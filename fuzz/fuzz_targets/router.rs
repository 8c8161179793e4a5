//! Routing: the target (path- or virtual-host-style), query parsing, the copy source
//! header, the x-amz-tagging header and `route` with every endpoint's input checks.
//!
//! Input (structure-aware): a method, a path, a query, a Host, optional copy-source and
//! tagging headers. Whatever routes names the bucket and key the target parsed.

#![no_main]

use arbitrary::Arbitrary;
use ferrite_s3::http::Request;
use ferrite_s3::limits::KEY_BYTES_MAX;
use ferrite_s3::ops::common::parse_tag_query;
use ferrite_s3::router::{parse_query, route, unsigned_endpoint, valid_bucket_name, Endpoint, Query, Target};
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 6] = ["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS"];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: u8,
    path: &'a str,
    query: &'a str,
    host: &'a str,
    virtual_host: bool,
    copy_source: Option<&'a str>,
    tagging: Option<&'a str>,
}

/// The bucket and key an endpoint acts on, when it names one.
fn object_of<'e>(endpoint: &'e Endpoint) -> Option<(&'e str, &'e str)> {
    use Endpoint::*;
    match endpoint {
        PutObject(o)
        | DeleteObject(o)
        | RestoreObject(o)
        | PutObjectTagging(o)
        | GetObjectTagging(o)
        | DeleteObjectTagging(o)
        | CreateMultipartUpload(o) => Some((o.bucket, o.key)),
        CopyObject { object: o, .. }
        | GetObject { object: o, .. }
        | HeadObject { object: o, .. }
        | UploadPart { object: o, .. }
        | UploadPartCopy { object: o, .. }
        | CompleteMultipartUpload { object: o, .. }
        | AbortMultipartUpload { object: o, .. }
        | ListParts { object: o, .. } => Some((o.bucket, o.key)),
        _ => None,
    }
}

fuzz_target!(|input: Input| {
    let method = METHODS.get(usize::from(input.method)).copied().unwrap_or("PATCH");
    let mut headers = vec![("host".to_owned(), input.host.to_owned())];
    if let Some(source) = input.copy_source {
        headers.push(("x-amz-copy-source".to_owned(), source.to_owned()));
    }
    let req = Request {
        method: method.to_owned(),
        raw_path: input.path.to_owned(),
        raw_query: input.query.to_owned(),
        headers,
        keep_alive: true,
        secure: false,
        peer: None,
    };
    if let Some(tagging) = input.tagging {
        let _ = parse_tag_query(tagging);
    }
    let Ok(target) = Target::parse(&req, input.virtual_host.then_some("s3.example.com")) else { return };
    let _ = unsigned_endpoint(method, &target);
    let Ok(query) = parse_query(&req.raw_query) else { return };
    let Ok(endpoint) = route(&req, &target, Query(&query)) else { return };
    let _ = endpoint.name();
    for access in endpoint.access() {
        let _ = access.resource.arn();
    }
    if let Some((bucket, key)) = object_of(&endpoint) {
        assert_eq!(Some(bucket), target.bucket.as_deref());
        assert_eq!(Some(key), target.key.as_deref());
        assert!(!key.is_empty() && key.len() <= KEY_BYTES_MAX, "key of {} bytes routed", key.len());
    }
    match &endpoint {
        Endpoint::CreateBucket { bucket } => assert!(valid_bucket_name(bucket), "CreateBucket {bucket:?}"),
        Endpoint::CopyObject { source, .. } | Endpoint::UploadPartCopy { source, .. } => {
            assert!(!source.bucket.is_empty() && !source.key.is_empty(), "copy source {source:?}");
        }
        _ => {}
    }
});
