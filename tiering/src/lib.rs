//! Tiering: the tier mover, a background worker that moves cold objects to a remote tier
//! (Azure Blob) and serves and restores them from there; and the outbound clients of the
//! services Ferrite talks to (HTTP, Entra ID, Azure Blob, Key Vault, OpenBao/Vault).
//!
//! The S3 layer calls in through [`Mover`] (one per process, shared by every core) and maps
//! [`Error`] to S3 errors; it never sees a Blob or HTTP error itself. This crate depends on
//! the engine, never on the S3 layer.
//!
//! Modules, bottom up (each imports only modules listed before it):
//! - `settings`, `counters`, `stub`, `xml`, `outbound`: what the mover is told, what it
//!   counted, the headers a transitioned object keeps, an XML tree, the clients;
//! - `error`, `blocking`, `store`: the error type, the blocking pool, the engine calls that
//!   may change shape;
//! - `rules`: lifecycle configurations (model, validation, evaluation);
//! - `tiers`: the tier registry and the admin API's tier operations;
//! - `mover`: the handle;
//! - `reader`, `deletes`, `transition`, `restore`, `pass`: what the mover does.

pub mod blocking;
pub mod counters;
pub mod deletes;
pub mod error;
pub mod mover;
pub mod outbound;
pub mod pass;
pub mod reader;
pub mod restore;
pub mod rules;
pub mod settings;
pub mod store;
pub mod stub;
pub mod tiers;
pub mod transition;
pub mod xml;

pub use counters::LifecycleStatus;
pub use error::{Error, Result};
pub use mover::Mover;
pub use reader::StoredReader;
pub use settings::MoverSettings;
pub use stub::TIER_HEADER;
