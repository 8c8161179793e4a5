//! Ferrite's storage engine: drives, erasure coding, the metadata log and index, and the
//! per-core metadata service. It knows nothing of HTTP or S3 XML, reads no environment
//! variable, and keeps no setting in a process-wide static: the binary passes an
//! [`EngineConfig`].
//!
//! Modules import one way (ARCHITECTURE.md shows the graph): shared types, limits and
//! configuration at the bottom; drive state, the log, the data path and healing above
//! them; the per-core metadata service (core.rs) above those; the `Engine` handle
//! (engine.rs) on top.

pub mod aligned;
mod buckets;
pub mod cache;
pub mod calendar;
pub mod config;
mod core;
pub mod data;
pub mod drives;
pub mod engine;
pub mod erasure;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod format;
mod heal;
pub mod heal_state;
mod index;
pub mod io;
pub mod limits;
pub mod log;
pub mod meta;
mod monitor;
mod partition;
pub mod quorum;
mod replay;
mod request;
pub mod snapshot;
pub mod sse;
pub mod types;
pub mod wal;

pub use crate::config::{EngineConfig, FaultConfig, HealConfig, SNAPSHOT_EVERY_BYTES_DEFAULT};
pub use crate::core::CoreBoot;
pub use crate::data::{Chunk, DataWriter, Finished, ObjectReader};
pub use crate::engine::{serve, Engine, ObjectWalk};
pub use crate::error::{EngineError, Result};
pub use crate::heal_state::{HealState, HealStatus};
pub use crate::limits::{INLINE_BYTES_MAX, OBJECT_META_BYTES_MAX};
pub use crate::meta::{DataLoc, ObjectMeta, PartLoc, PartMeta, UploadMeta};
pub use crate::types::{now_ms, ListItem, ListPage, ListedObject, ObjectKey, PutCondition, UploadKey, UploadSummary};
