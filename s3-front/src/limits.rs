//! The S3 layer's request caps (AWS's, unless said otherwise) and the compile-time checks
//! that tie them to the engine's record limit: everything a valid request can make an
//! object's metadata record carry fits `ferrite_engine::OBJECT_META_BYTES_MAX`, so no
//! request can reach the log's record limit.

use crate::http::HEAD_BYTES_MAX;

/// Largest object a single PUT may carry, as on AWS.
pub const PUT_BYTES_MAX: u64 = 5 << 30;
/// Every multipart part but the last must be at least this large, as on AWS.
pub const PART_BYTES_MIN: u64 = 5 << 20;
pub const PART_NUMBER_MAX: u32 = 10_000;
pub const KEY_BYTES_MAX: usize = 1024;
pub const BUCKET_NAME_BYTES_MAX: usize = 63;
/// One page of ListObjects, ListParts and ListMultipartUploads holds at most this many
/// entries; a larger `max-keys`, `max-parts` or `max-uploads` is served at the cap.
pub const LIST_KEYS_MAX: usize = 1000;
pub const LIST_PARTS_MAX: usize = 1000;
pub const LIST_UPLOADS_MAX: usize = 1000;
pub const DELETE_OBJECTS_MAX: usize = 1000;
/// XML request documents (Complete, Delete, Tagging, configurations) are read whole, up to
/// this size.
pub const XML_BODY_BYTES_MAX: usize = 2 << 20;
/// Admin request bodies are small JSON documents.
pub const ADMIN_BODY_BYTES_MAX: usize = 64 << 10;
pub const USER_METADATA_BYTES_MAX: usize = 2 << 10;
pub const TAGS_MAX: usize = 10;
/// A tag's key and value, in characters (as AWS).
pub const TAG_KEY_CHARS_MAX: usize = 128;
pub const TAG_VALUE_CHARS_MAX: usize = 256;

/// What one tag can add to an object's metadata record: key and value at 4 UTF-8 bytes per
/// character, and their two length prefixes.
const TAG_RECORD_BYTES_MAX: usize = (TAG_KEY_CHARS_MAX + TAG_VALUE_CHARS_MAX) * 4 + 8;
/// What one part can add to a multipart object's metadata record: its size (8) and location
/// (file id and size, 24), and its entry in a transitioned object's parts header ("file id
/// hex:size," at most 32 + 1 + 20 + 1).
const PART_RECORD_BYTES_MAX: usize = 8 + 24 + 54;
/// The internal headers Ferrite adds beside the parts header (SSE sealed keys and context,
/// tier, blob, restore state) and the stored checksum, generously.
const INTERNAL_RECORD_BYTES_MAX: usize = 16 << 10;

// Everything an object's metadata record carries is bounded by the caps above: the stored
// headers (standard ones and user metadata) come from one request head, tags and parts are
// counted. The engine accepts any metadata within OBJECT_META_BYTES_MAX.
const _: () = assert!(USER_METADATA_BYTES_MAX <= HEAD_BYTES_MAX);
const _: () = assert!(
    BUCKET_NAME_BYTES_MAX
        + KEY_BYTES_MAX
        + HEAD_BYTES_MAX
        + TAGS_MAX * TAG_RECORD_BYTES_MAX
        + PART_NUMBER_MAX as usize * PART_RECORD_BYTES_MAX
        + INTERNAL_RECORD_BYTES_MAX
        <= ferrite_engine::OBJECT_META_BYTES_MAX
);
// A key always fits the head it came in.
const _: () = assert!(KEY_BYTES_MAX <= HEAD_BYTES_MAX);
// The list caps are what the XML reports as MaxKeys / MaxParts / MaxUploads: they fit the
// 32-bit integers AWS's arguments are.
const _: () = assert!(LIST_KEYS_MAX <= i32::MAX as usize && LIST_PARTS_MAX <= i32::MAX as usize);
const _: () = assert!(LIST_UPLOADS_MAX <= i32::MAX as usize);
