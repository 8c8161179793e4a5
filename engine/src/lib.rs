//! Ferrite's storage engine: drives, erasure coding, the metadata log and index, and the
//! per-core metadata service. It knows nothing of HTTP or S3 XML.

pub mod aligned;
pub mod cache;
pub mod core;
pub mod data;
pub mod engine;
pub mod erasure;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod format;
pub mod heal;
pub mod io;
pub mod meta;
pub mod quorum;
pub mod snapshot;
pub mod sse;
pub mod wal;

pub use crate::core::{serve, CoreBoot};
pub use crate::data::{Chunk, DataWriter, Finished, ObjectReader};
pub use crate::engine::{
    now_ms, Engine, EngineConfig, ListItem, ListPage, ObjectWalk, PutCondition, UploadSummary, INLINE_BYTES_MAX,
    SNAPSHOT_EVERY_BYTES_DEFAULT,
};
pub use crate::error::{EngineError, Result};
pub use crate::meta::{DataLoc, ObjectMeta, PartLoc, PartMeta, UploadMeta, STORAGE_CLASS_HEADER};
