//! ListObjects and ListObjectsV2: one page of a bucket's keys and common prefixes, the
//! storage class of transitioned objects shown as their tier's name.

use ferrite_engine::{ListItem, ListPage};
use ferrite_tiering::stub::TIER_HEADER;

use crate::checksum::b64;
use crate::error::S3Result;
use crate::request::{Ctx, Response};
use crate::router::{ListObjectsInput, ListVersion};
use crate::sigv4::uri_encode;
use crate::xml::Xml;

use super::common::{iso8601, quoted, require_bucket};

pub async fn list_objects(ctx: &Ctx, bucket: &str, input: &ListObjectsInput<'_>) -> S3Result<Response> {
    let page = if input.max_keys == 0 {
        require_bucket(ctx, bucket)?;
        ListPage::default()
    } else {
        let (prefix, delimiter) = (input.prefix, input.delimiter);
        ctx.engine.list(bucket, prefix, delimiter, &input.start_after_key, input.max_keys, Some(TIER_HEADER)).await?
    };
    let mut x = Xml::new("ListBucketResult");
    page_head(&mut x, bucket, input, &page);
    let owner = match input.version {
        ListVersion::V1 { .. } => true,
        ListVersion::V2 { fetch_owner, .. } => fetch_owner,
    };
    for item in &page.items {
        if let ListItem::Object(object) = item {
            x.start("Contents")
                .elem("Key", &shown(input, &object.key))
                .elem("LastModified", &iso8601(object.mtime_ms))
                .elem("ETag", &quoted(&object.etag))
                .elem("Size", &object.size.to_string())
                .elem("StorageClass", object.reported_header.as_deref().unwrap_or("STANDARD"));
            if owner {
                x.start("Owner").elem("ID", &ctx.config.root_user).elem("DisplayName", &ctx.config.root_user).end();
            }
            x.end();
        }
    }
    for item in &page.items {
        if let ListItem::Prefix(p) = item {
            x.start("CommonPrefixes").elem("Prefix", &shown(input, p)).end();
        }
    }
    Ok(Response::xml(x.finish()))
}

/// A key, prefix or marker as the answer shows it: percent-encoded with `encoding-type=url`.
fn shown(input: &ListObjectsInput, s: &str) -> String {
    if input.url_encoded {
        uri_encode(s, false)
    } else {
        s.to_owned()
    }
}

/// Everything before the page's entries: what was asked, and where the next page starts.
fn page_head(x: &mut Xml, bucket: &str, input: &ListObjectsInput, page: &ListPage) {
    x.elem("Name", bucket).elem("Prefix", &shown(input, input.prefix));
    match input.version {
        ListVersion::V2 { continuation_token, start_after, .. } => {
            if let Some(t) = continuation_token {
                x.elem("ContinuationToken", t);
            }
            if let Some(s) = start_after {
                x.elem("StartAfter", &shown(input, s));
            }
            x.elem("KeyCount", &page.items.len().to_string());
        }
        ListVersion::V1 { marker } => {
            x.elem("Marker", &shown(input, marker));
        }
    }
    x.elem("MaxKeys", &input.max_keys.to_string());
    if let Some(d) = input.delimiter {
        x.elem("Delimiter", &shown(input, d));
    }
    if input.url_encoded {
        x.elem("EncodingType", "url");
    }
    x.elem("IsTruncated", if page.truncated { "true" } else { "false" });
    if let Some(last) = page.items.last().filter(|_| page.truncated) {
        match input.version {
            ListVersion::V2 { .. } => x.elem("NextContinuationToken", &b64(last.name().as_bytes())),
            ListVersion::V1 { .. } => x.elem("NextMarker", &shown(input, last.name())),
        };
    }
}
