//! The engine's one error type (the S3 layer maps each variant to an S3 error code), and
//! the one rule that says whether a failed drive operation blames the drive or the process.

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
    /// The process ran out of something of its own (file descriptors, memory) or the call
    /// was interrupted: nothing is wrong with the drives, the request may be retried.
    #[error("the server is short of resources: {0}")]
    Busy(String),
    #[error("engine is shutting down")]
    ShuttingDown,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Whether a failed drive operation says nothing about the drive: the process itself ran
/// out of file descriptors (EMFILE, ENFILE) or memory (ENOMEM, ENOBUFS), or the call would
/// block or was interrupted (EAGAIN/EWOULDBLOCK, EINTR). Such an error never takes a drive
/// offline, never counts as a damaged shard or a drive that missed a write, and never starts
/// a heal; the request that met it fails with `Busy` (503 SlowDown) and may be retried. Every
/// other error (EIO, ENOSPC, EROFS, a missing or foreign format, a timeout of a stalled
/// drive ...) blames the drive. Every place that decides a drive's fate asks this function.
pub fn is_process_error(err: &io::Error) -> bool {
    match err.raw_os_error() {
        Some(code) => {
            matches!(code, libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EINTR)
                || code == libc::EAGAIN
                || code == libc::EWOULDBLOCK
        }
        None => {
            matches!(err.kind(), io::ErrorKind::OutOfMemory | io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock)
        }
    }
}

/// The error of a request that met `err`, a process error (see [`is_process_error`]).
pub fn busy(err: &io::Error) -> EngineError {
    EngineError::Busy(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_process_own_errors_spare_the_drive() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::EAGAIN, libc::EWOULDBLOCK, libc::EINTR] {
            assert!(is_process_error(&io::Error::from_raw_os_error(code)), "errno {code}");
        }
        for code in [libc::EIO, libc::ENOSPC, libc::EROFS, libc::ENOENT, libc::EACCES, libc::EBADMSG] {
            assert!(!is_process_error(&io::Error::from_raw_os_error(code)), "errno {code}");
        }
        assert!(!is_process_error(&io::Error::new(io::ErrorKind::TimedOut, "drive stalled")));
        assert!(!is_process_error(&io::Error::other("short read")));
    }
}
