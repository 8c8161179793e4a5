//! What a request needs permission for, so that authorization is one lookup: each
//! `Endpoint` (router.rs) names one or two `Access`es, an IAM action on a resource.
//!
//! S3 actions are named as AWS's "Actions, resources, and condition keys for Amazon S3"
//! (Service Authorization Reference) maps each operation: HeadObject needs `s3:GetObject`,
//! HeadBucket and both ListObjects `s3:ListBucket`, the Delete*Configuration operations the
//! matching `s3:Put*Configuration`, CopyObject and UploadPartCopy `s3:PutObject` on the target
//! and `s3:GetObject` on the source, DeleteObjects `s3:DeleteObject` on each key it names.
//! The admin API's actions follow MinIO's `admin:*` names where MinIO has one.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    // Service and buckets.
    ListAllMyBuckets,
    CreateBucket,
    DeleteBucket,
    ListBucket,
    GetBucketLocation,
    GetBucketVersioning,
    ListBucketMultipartUploads,
    PutEncryptionConfiguration,
    GetEncryptionConfiguration,
    PutLifecycleConfiguration,
    GetLifecycleConfiguration,
    // Objects.
    GetObject,
    PutObject,
    DeleteObject,
    RestoreObject,
    ListMultipartUploadParts,
    AbortMultipartUpload,
    PutObjectTagging,
    GetObjectTagging,
    DeleteObjectTagging,
    // The admin API (`/ferrite/...`).
    /// Start a heal, or read the heal and scanner status (MinIO: admin:Heal).
    AdminHeal,
    /// Read what the lifecycle passes did (MinIO: admin:ServerInfo).
    AdminServerInfo,
    /// Run a lifecycle pass now (Ferrite's own; MinIO has no such call).
    AdminRunLifecycle,
    /// List the remote tiers (MinIO: admin:ListTier).
    AdminListTier,
    /// Add, edit or remove a remote tier (MinIO: admin:SetTier).
    AdminSetTier,
    /// Re-seal every object key under its KMS key's newest version (Ferrite's own).
    AdminKmsRewrap,
    /// Read the Prometheus metrics (MinIO: admin:Prometheus). Today the metrics are answered
    /// before SigV4, to their bearer token.
    AdminPrometheus,
}

impl Action {
    /// The action as IAM policies write it.
    pub fn as_str(self) -> &'static str {
        use Action::*;
        match self {
            ListAllMyBuckets => "s3:ListAllMyBuckets",
            CreateBucket => "s3:CreateBucket",
            DeleteBucket => "s3:DeleteBucket",
            ListBucket => "s3:ListBucket",
            GetBucketLocation => "s3:GetBucketLocation",
            GetBucketVersioning => "s3:GetBucketVersioning",
            ListBucketMultipartUploads => "s3:ListBucketMultipartUploads",
            PutEncryptionConfiguration => "s3:PutEncryptionConfiguration",
            GetEncryptionConfiguration => "s3:GetEncryptionConfiguration",
            PutLifecycleConfiguration => "s3:PutLifecycleConfiguration",
            GetLifecycleConfiguration => "s3:GetLifecycleConfiguration",
            GetObject => "s3:GetObject",
            PutObject => "s3:PutObject",
            DeleteObject => "s3:DeleteObject",
            RestoreObject => "s3:RestoreObject",
            ListMultipartUploadParts => "s3:ListMultipartUploadParts",
            AbortMultipartUpload => "s3:AbortMultipartUpload",
            PutObjectTagging => "s3:PutObjectTagging",
            GetObjectTagging => "s3:GetObjectTagging",
            DeleteObjectTagging => "s3:DeleteObjectTagging",
            AdminHeal => "admin:Heal",
            AdminServerInfo => "admin:ServerInfo",
            AdminRunLifecycle => "admin:RunLifecycle",
            AdminListTier => "admin:ListTier",
            AdminSetTier => "admin:SetTier",
            AdminKmsRewrap => "admin:KMSRewrap",
            AdminPrometheus => "admin:Prometheus",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// Not one bucket or object: ListBuckets, the admin API (IAM's `*`).
    All,
    Bucket(&'a str),
    Object {
        bucket: &'a str,
        key: &'a str,
    },
    /// Each object whose key the request body names (DeleteObjects): known only once the
    /// body is read, so it is checked per key.
    EachObjectIn(&'a str),
}

impl Resource<'_> {
    /// The resource's ARN (`arn:aws:s3:::bucket`, `arn:aws:s3:::bucket/key`, or for the keys
    /// of a DeleteObjects body the pattern `arn:aws:s3:::bucket/*`); `*` for all.
    pub fn arn(&self) -> String {
        match self {
            Resource::All => "*".to_owned(),
            Resource::Bucket(bucket) => format!("arn:aws:s3:::{bucket}"),
            Resource::Object { bucket, key } => format!("arn:aws:s3:::{bucket}/{key}"),
            Resource::EachObjectIn(bucket) => format!("arn:aws:s3:::{bucket}/*"),
        }
    }
}

/// One permission a request needs: an action on a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access<'a> {
    pub action: Action,
    pub resource: Resource<'a>,
}

impl<'a> Access<'a> {
    pub fn new(action: Action, resource: Resource<'a>) -> Self {
        Access { action, resource }
    }
}
