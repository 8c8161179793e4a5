//! The engine's size limits, and the compile-time checks that tie them together: whatever
//! fits these limits fits a metadata log record and a batch. The S3 layer checks its own
//! request caps against [`OBJECT_META_BYTES_MAX`] the same way, so no valid request can
//! reach the log's record limit (which would be a panic, not an error).

use crate::format::BLOCK_SIZE_DEFAULT;
use crate::wal::{RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX};

/// Objects up to this size are stored inside their metadata record (no data files).
pub const INLINE_BYTES_MAX: usize = 128 << 10;

/// An object's metadata in its log record (bucket, key, headers, tags, checksum, part sizes
/// and part locations) may take up to this many bytes; the engine accepts any object whose
/// metadata fits, inline data or not.
pub const OBJECT_META_BYTES_MAX: usize = 2 << 20;

/// What a Put record holds besides the object's metadata and its inline data: kind,
/// partition, sequence number, the completed upload's id, length prefixes (generously).
const PUT_RECORD_OVERHEAD_BYTES: usize = 4 << 10;

/// At most this many log bytes go into one group commit (a batch stops taking records once
/// it reached this, so it may exceed it by one record).
pub(crate) const BATCH_BYTES_MAX: usize = 16 << 20;

// The largest object record, inline data included, is a valid record.
const _: () = assert!(INLINE_BYTES_MAX + OBJECT_META_BYTES_MAX + PUT_RECORD_OVERHEAD_BYTES <= RECORD_PAYLOAD_BYTES_MAX);
// A batch takes at least one record of the largest size before it is full.
const _: () = assert!(BATCH_BYTES_MAX >= RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX);
// A batch (the limit plus its last record) and every offset inside it fit the u32 lengths
// of the log's inline locations.
const _: () = assert!(BATCH_BYTES_MAX + RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
// An object is inlined only while its bytes are still in the writer's first block buffer.
const _: () = assert!(INLINE_BYTES_MAX <= BLOCK_SIZE_DEFAULT as usize);
