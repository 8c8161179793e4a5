//! The engine's shared vocabulary: index keys, write conditions, listing results and the
//! clock. It sits at the bottom of the crate and imports no sibling, so every module may use
//! it without pulling in the modules that dispatch (engine.rs, core.rs).

/// An object's place in the index. Ordered by bucket, then key (a listing is a range).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub bucket: String,
    pub key: String,
}

impl ObjectKey {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> ObjectKey {
        ObjectKey { bucket: bucket.into(), key: key.into() }
    }
}

/// A multipart upload's place in the index. Ordered by bucket, key, then upload id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadKey {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}

impl UploadKey {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>, upload_id: impl Into<String>) -> UploadKey {
        UploadKey { bucket: bucket.into(), key: key.into(), upload_id: upload_id.into() }
    }

    /// The object this upload will become.
    pub fn object(&self) -> ObjectKey {
        ObjectKey::new(self.bucket.clone(), self.key.clone())
    }
}

/// A condition a write must meet when the owning core validates it.
#[derive(Clone, Debug)]
pub enum PutCondition {
    /// `If-None-Match: *`: only create.
    IfNoneMatchAny,
    /// `If-Match: etag` (unquoted).
    IfMatch(String),
}

/// One object in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub mtime_ms: i64,
    /// The value of the header the listing was asked to report (the S3 layer asks for the
    /// one naming a storage class), when the object carries it. The engine does not
    /// interpret headers.
    pub reported_header: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListItem {
    Object(ListedObject),
    /// A common prefix rolled up at the delimiter.
    Prefix(String),
}

impl ListItem {
    /// The key or the prefix: what listings are sorted and paged by.
    pub fn name(&self) -> &str {
        match self {
            ListItem::Object(object) => &object.key,
            ListItem::Prefix(prefix) => prefix,
        }
    }
}

#[derive(Debug, Default)]
pub struct ListPage {
    pub items: Vec<ListItem>,
    pub truncated: bool,
}

#[derive(Clone, Debug)]
pub struct UploadSummary {
    pub key: String,
    pub upload_id: String,
    pub initiated_ms: i64,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
