//! S3 error codes with their HTTP statuses, and the mapping from the errors of the layers
//! below (engine, tier mover, KMS clients): each of their errors becomes an S3 error here,
//! and only here.

use ferrite_engine::EngineError;
use ferrite_tiering::outbound::azure_blob::BlobError;
use ferrite_tiering::outbound::kms::KmsError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    AccessDenied,
    BadDigest,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooLarge,
    EntityTooSmall,
    IncompleteBody,
    InternalError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidBucketName,
    InvalidDigest,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    KeyTooLongError,
    MalformedXML,
    MethodNotAllowed,
    MissingContentLength,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NotImplemented,
    NotModified,
    PreconditionFailed,
    RequestHeaderSectionTooLarge,
    RequestTimeTooSkewed,
    RequestTimeout,
    SignatureDoesNotMatch,
    SlowDown,
    ServiceUnavailable,
    /// Not an AWS code (AWS never fills up); MinIO answers the same condition with 507.
    XFerriteStorageFull,
    AuthorizationHeaderMalformed,
    /// A presigned URL's X-Amz-* parameters are wrong (AWS's code for them).
    AuthorizationQueryParametersError,
    XAmzContentSHA256Mismatch,
    InvalidTag,
    MetadataTooLarge,
    InvalidEncryptionAlgorithmError,
    KmsNotFound,
    ServerSideEncryptionConfigurationNotFoundError,
    InvalidStorageClass,
    NoSuchLifecycleConfiguration,
    InvalidObjectState,
    RestoreAlreadyInProgress,
}

impl Code {
    pub fn status(self) -> u16 {
        use Code::*;
        match self {
            NotModified => 304,
            AccessDenied | InvalidAccessKeyId | SignatureDoesNotMatch | RequestTimeTooSkewed | InvalidObjectState => {
                403
            }
            NoSuchBucket
            | NoSuchKey
            | NoSuchUpload
            | ServerSideEncryptionConfigurationNotFoundError
            | NoSuchLifecycleConfiguration => 404,
            MethodNotAllowed => 405,
            BucketAlreadyOwnedByYou | BucketNotEmpty | RestoreAlreadyInProgress => 409,
            MissingContentLength => 411,
            PreconditionFailed => 412,
            InvalidRange => 416,
            InternalError => 500,
            NotImplemented => 501,
            SlowDown | ServiceUnavailable => 503,
            XFerriteStorageFull => 507,
            RequestTimeout => 400,
            _ => 400,
        }
    }

    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            AccessDenied => "AccessDenied",
            BadDigest => "BadDigest",
            BucketAlreadyOwnedByYou => "BucketAlreadyOwnedByYou",
            BucketNotEmpty => "BucketNotEmpty",
            EntityTooLarge => "EntityTooLarge",
            EntityTooSmall => "EntityTooSmall",
            IncompleteBody => "IncompleteBody",
            InternalError => "InternalError",
            InvalidAccessKeyId => "InvalidAccessKeyId",
            InvalidArgument => "InvalidArgument",
            InvalidBucketName => "InvalidBucketName",
            InvalidDigest => "InvalidDigest",
            InvalidPart => "InvalidPart",
            InvalidPartOrder => "InvalidPartOrder",
            InvalidRange => "InvalidRange",
            InvalidRequest => "InvalidRequest",
            KeyTooLongError => "KeyTooLongError",
            MalformedXML => "MalformedXML",
            MethodNotAllowed => "MethodNotAllowed",
            MissingContentLength => "MissingContentLength",
            NoSuchBucket => "NoSuchBucket",
            NoSuchKey => "NoSuchKey",
            NoSuchUpload => "NoSuchUpload",
            NotImplemented => "NotImplemented",
            NotModified => "NotModified",
            PreconditionFailed => "PreconditionFailed",
            RequestHeaderSectionTooLarge => "RequestHeaderSectionTooLarge",
            RequestTimeTooSkewed => "RequestTimeTooSkewed",
            RequestTimeout => "RequestTimeout",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            SlowDown => "SlowDown",
            ServiceUnavailable => "ServiceUnavailable",
            XFerriteStorageFull => "XFerriteStorageFull",
            AuthorizationHeaderMalformed => "AuthorizationHeaderMalformed",
            AuthorizationQueryParametersError => "AuthorizationQueryParametersError",
            XAmzContentSHA256Mismatch => "XAmzContentSHA256Mismatch",
            InvalidTag => "InvalidTag",
            InvalidEncryptionAlgorithmError => "InvalidEncryptionAlgorithmError",
            KmsNotFound => "KMS.NotFoundException",
            ServerSideEncryptionConfigurationNotFoundError => "ServerSideEncryptionConfigurationNotFoundError",
            MetadataTooLarge => "MetadataTooLarge",
            InvalidStorageClass => "InvalidStorageClass",
            NoSuchLifecycleConfiguration => "NoSuchLifecycleConfiguration",
            InvalidObjectState => "InvalidObjectState",
            RestoreAlreadyInProgress => "RestoreAlreadyInProgress",
        }
    }
}

/// An S3 error response: code, message, and whether the connection must close after it
/// (the request body could not be consumed).
#[derive(Debug)]
pub struct S3Error {
    pub code: Code,
    pub message: String,
    pub close: bool,
}

impl S3Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), close: false }
    }
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

pub type S3Result<T> = Result<T, S3Error>;

pub fn err<T>(code: Code, message: impl Into<String>) -> S3Result<T> {
    Err(S3Error::new(code, message))
}

impl From<EngineError> for S3Error {
    fn from(e: EngineError) -> Self {
        let (code, message) = match &e {
            EngineError::NoSuchBucket => (Code::NoSuchBucket, "The specified bucket does not exist".into()),
            EngineError::BucketExists => {
                (Code::BucketAlreadyOwnedByYou, "Your previous request to create the named bucket succeeded and you already own it.".into())
            }
            EngineError::BucketNotEmpty => (Code::BucketNotEmpty, "The bucket you tried to delete is not empty".into()),
            EngineError::NoSuchKey => (Code::NoSuchKey, "The specified key does not exist.".into()),
            EngineError::NoSuchUpload => (
                Code::NoSuchUpload,
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
                    .into(),
            ),
            EngineError::PreconditionFailed => {
                (Code::PreconditionFailed, "At least one of the pre-conditions you specified did not hold".into())
            }
            EngineError::InvalidPart(m) => (Code::InvalidPart, m.clone()),
            EngineError::WriteQuorum { .. } | EngineError::ReadQuorum(_) => (Code::ServiceUnavailable, e.to_string()),
            // Out of descriptors or memory: the client backs off and retries, as for the budget.
            EngineError::Busy(_) => (Code::SlowDown, "Please reduce your request rate.".into()),
            EngineError::StorageFull => {
                (Code::XFerriteStorageFull, "The drives are full: delete objects or add space, then retry.".into())
            }
            _ => (Code::InternalError, e.to_string()),
        };
        if code == Code::InternalError {
            tracing::error!("internal error: {e}");
        }
        S3Error::new(code, message)
    }
}

impl From<ferrite_tiering::Error> for S3Error {
    fn from(e: ferrite_tiering::Error) -> Self {
        use ferrite_tiering::Error as T;
        let e = match e {
            T::Engine(inner) => return S3Error::from(inner),
            other => other,
        };
        let code = match &e {
            T::Engine(_) => Code::InternalError,
            T::LifecycleMalformed(_) => Code::MalformedXML,
            T::LifecycleInvalid(_) | T::TierInvalid(_) => Code::InvalidArgument,
            T::UnknownStorageClass(_) => Code::InvalidStorageClass,
            T::TierConflict(_) => Code::InvalidRequest,
            T::NoSuchTier(name) => return S3Error::new(Code::InvalidArgument, format!("No tier {name}.")),
            T::TierCheck { source: BlobError::Denied(_), .. } => Code::AccessDenied,
            T::TierCheck { source: BlobError::Unavailable(_), .. } => Code::ServiceUnavailable,
            T::TierCheck { .. } => Code::InvalidArgument,
            T::NotInTier => Code::InvalidObjectState,
            T::RestoreInProgress => Code::RestoreAlreadyInProgress,
            T::TierUnreachable | T::Blob(BlobError::Unavailable(_)) => Code::ServiceUnavailable,
            T::TierDamaged(_) | T::BlobGone | T::Blob(_) | T::Cancelled => Code::InternalError,
        };
        if code == Code::InternalError {
            tracing::error!("internal error: {e}");
        }
        S3Error::new(code, e.to_string())
    }
}

impl From<KmsError> for S3Error {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::Unreachable(_) => S3Error::new(
                Code::ServiceUnavailable,
                "The KMS cannot be reached; no encrypted object can be written or read.",
            ),
            KmsError::NoSuchKey(message) => S3Error::new(Code::KmsNotFound, message),
            KmsError::Refused(message) => S3Error::new(Code::AccessDenied, message),
            KmsError::Broken(_) => S3Error::new(Code::InternalError, e.to_string()),
        }
    }
}

/// Short conversions that keep handlers readable.
pub trait OrBadRequest<T> {
    fn or_invalid(self, message: &str) -> S3Result<T>;
}

impl<T, E> OrBadRequest<T> for Result<T, E> {
    fn or_invalid(self, message: &str) -> S3Result<T> {
        self.map_err(|_| S3Error::new(Code::InvalidArgument, message))
    }
}

impl<T> OrBadRequest<T> for Option<T> {
    fn or_invalid(self, message: &str) -> S3Result<T> {
        self.ok_or_else(|| S3Error::new(Code::InvalidArgument, message))
    }
}

/// The MalformedXML error, with AWS's message.
pub fn malformed_xml<T>() -> S3Result<T> {
    err(
        Code::MalformedXML,
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
}
