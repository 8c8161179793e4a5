//! The engine's one error type. The S3 layer maps each variant to an S3 error code.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("bucket already exists")]
    BucketExists,
    #[error("bucket not empty")]
    BucketNotEmpty,
    #[error("no such key")]
    NoSuchKey,
    #[error("no such upload")]
    NoSuchUpload,
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("invalid part: {0}")]
    InvalidPart(String),
    #[error("write quorum lost: {ok} of {needed} drives took the write")]
    WriteQuorum { ok: usize, needed: usize },
    #[error("the drives are full")]
    StorageFull,
    #[error("read quorum lost: {0}")]
    ReadQuorum(String),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("drive format: {0}")]
    Format(String),
    #[error("encryption: {0}")]
    Crypto(String),
    #[error("engine is shutting down")]
    ShuttingDown,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
