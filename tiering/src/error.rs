//! The mover's one error type. The S3 layer (s3-front's error module) maps each variant to
//! an S3 error code, once; the mover itself only logs and counts them.

use ferrite_engine::EngineError;

use crate::outbound::azure_blob::BlobError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine refused or failed (no such key, quorum lost, ...).
    #[error(transparent)]
    Engine(#[from] EngineError),

    /// A lifecycle configuration that is not well-formed (the whole message, as AWS words it).
    #[error("{0}")]
    LifecycleMalformed(String),
    /// A well-formed lifecycle configuration that AWS would refuse (the whole message).
    #[error("{0}")]
    LifecycleInvalid(String),
    /// A Transition to a storage class that is no configured tier.
    #[error("The storage class you specified is not valid: no remote tier is called {0:?}")]
    UnknownStorageClass(String),

    /// A tier description (admin API) that cannot be used (the whole message).
    #[error("{0}")]
    TierInvalid(String),
    /// A tier change that conflicts with what exists (the whole message).
    #[error("{0}")]
    TierConflict(String),
    /// No tier has this name.
    #[error("no remote tier is called {0}")]
    NoSuchTier(String),
    /// Adding or editing a tier: the test write, read and delete in its container failed.
    #[error("Tier {tier}: the check against Azure Blob failed: {source}")]
    TierCheck { tier: String, source: BlobError },
    /// A stored tier that does not decode (damaged, or its credential sealed under other
    /// root credentials).
    #[error("{0}")]
    TierDamaged(String),

    /// RestoreObject of an object that is not in a tier.
    #[error("Restore is not allowed for the object's current storage class")]
    NotInTier,
    /// RestoreObject while a restore of the object is pending.
    #[error("Object restore is already in progress")]
    RestoreInProgress,

    /// A transitioned object's tier cannot be read now (the details are in the log).
    #[error("the remote tier cannot be read now; the server log has the details")]
    TierUnreachable,
    /// A transitioned object's blob is missing or was replaced: retrying will not help.
    #[error("the blob of a transitioned object is missing or changed")]
    BlobGone,
    /// A Blob call of the mover failed.
    #[error("remote tier: {0}")]
    Blob(#[source] BlobError),
    /// A blocking call was cancelled (the executor is going away).
    #[error("a tier request was cancelled")]
    Cancelled,
}

impl Error {
    /// Whether something a transition needs is unavailable now: the tier cannot be reached,
    /// or the drives lost their quorum. A pass stops trying that tier until the next pass.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Blob(BlobError::Unavailable(_))
                | Error::TierUnreachable
                | Error::Engine(EngineError::ReadQuorum(_) | EngineError::WriteQuorum { .. } | EngineError::Busy(_))
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
