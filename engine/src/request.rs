//! The messages the engine handle sends to the core that owns a partition: metadata reads
//! and writes, each with its reply channel. Defined apart from both the sender (engine.rs)
//! and the receiver (core.rs), so neither imports the other.

use crate::error::Result;
use crate::meta::{DataLoc, ObjectMeta, PartMeta, UploadMeta};
use crate::types::{ListPage, PutCondition, UploadSummary};

/// Where a core sends its answer.
pub type Reply<T> = flume::Sender<Result<T>>;

// A request is moved once through a channel; boxing the large write variant would add an
// allocation per write to save a few hundred bytes of channel slot.
#[allow(clippy::large_enum_variant)]
pub enum MetaReq {
    /// Answered at once from the index.
    Read(ReadReq),
    /// Validated in arrival order and answered once its batch is durable.
    Write { partition: u16, op: WriteOp, reply: Reply<()> },
}

pub enum ReadReq {
    Get {
        bucket: String,
        key: String,
        reply: Reply<Option<ObjectMeta>>,
    },
    GetUpload {
        bucket: String,
        key: String,
        upload_id: String,
        reply: Reply<Option<UploadMeta>>,
    },
    List {
        bucket: String,
        prefix: String,
        delimiter: Option<String>,
        start_after: String,
        limit: usize,
        /// The header whose value each listed object reports (see `ListedObject`).
        report_header: Option<&'static str>,
        reply: Reply<ListPage>,
    },
    ListUploads {
        bucket: String,
        prefix: String,
        key_marker: String,
        upload_id_marker: String,
        limit: usize,
        reply: Reply<Vec<UploadSummary>>,
    },
    HasData {
        bucket: String,
        reply: Reply<bool>,
    },
}

pub enum WriteOp {
    Put {
        bucket: String,
        key: String,
        meta: ObjectMeta,
        inline: Option<Vec<u8>>,
        cond: Option<PutCondition>,
    },
    Delete {
        bucket: String,
        key: String,
    },
    SetTags {
        bucket: String,
        key: String,
        tags: Vec<(String, String)>,
    },
    /// Replaces the stored headers of an object whose data is still `data` (a key
    /// rotation re-sealing the object key), and with `new_data` its data too (the old data
    /// files become garbage: a transition to a remote tier, a restore, the expiry of a
    /// restored copy); NoSuchKey / PreconditionFailed otherwise.
    SetHeaders {
        bucket: String,
        key: String,
        data: DataLoc,
        /// The headers the caller read: a change by anyone else in between (a key re-seal
        /// racing a transition) refuses this one instead of being overwritten.
        headers_before: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        new_data: Option<DataLoc>,
    },
    CreateUpload {
        bucket: String,
        key: String,
        upload_id: String,
        upload: UploadMeta,
    },
    PutPart {
        bucket: String,
        key: String,
        upload_id: String,
        part_number: u32,
        part: PartMeta,
    },
    Complete {
        bucket: String,
        key: String,
        upload_id: String,
        meta: ObjectMeta,
        parts_used: Vec<(u32, u128)>,
        cond: Option<PutCondition>,
    },
    Abort {
        bucket: String,
        key: String,
        upload_id: String,
    },
    CreateBucket {
        name: String,
        created_ms: i64,
    },
    DeleteBucket {
        name: String,
    },
    BucketConfig {
        name: String,
        item: String,
        value: Option<String>,
    },
}

impl WriteOp {
    /// The object a write is about (None for bucket writes): debug builds check that it
    /// hashes to the partition the write was sent for.
    pub(crate) fn object_key(&self) -> Option<(&str, &str)> {
        match self {
            WriteOp::Put { bucket, key, .. }
            | WriteOp::Delete { bucket, key }
            | WriteOp::SetTags { bucket, key, .. }
            | WriteOp::SetHeaders { bucket, key, .. }
            | WriteOp::CreateUpload { bucket, key, .. }
            | WriteOp::PutPart { bucket, key, .. }
            | WriteOp::Complete { bucket, key, .. }
            | WriteOp::Abort { bucket, key, .. } => Some((bucket, key)),
            WriteOp::CreateBucket { .. } | WriteOp::DeleteBucket { .. } | WriteOp::BucketConfig { .. } => None,
        }
    }
}
