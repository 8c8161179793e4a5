//! Steps every KMS backend's test takes: SSE-S3 and SSE-KMS objects written and read back
//! (an unknown key id refused), and `ferrite admin kms-rewrap` after a rotation.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;

use super::{code, Server};

/// Reads a whole object, or the S3 error code.
pub async fn read(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    super::get_or_code(c, bucket, key).await
}

/// Writes "s3" (SSE-S3, 5,000 bytes) and "kms" (SSE-KMS with key id `key_id`, 1.5 MB) into
/// a new bucket, checks that an unknown key id is refused and both read back; returns them.
pub async fn write_encrypted_pair(c: &aws_sdk_s3::Client, bucket: &str, key_id: &str) -> (Vec<u8>, Vec<u8>) {
    c.create_bucket().bucket(bucket).send().await.unwrap();
    let small = super::bytes(5_000, 1);
    let large = super::bytes(1_500_000, 2);
    let put = |key: &'static str, sse: ServerSideEncryption, id: Option<&str>, data: &[u8]| {
        c.put_object()
            .bucket(bucket)
            .key(key)
            .server_side_encryption(sse)
            .set_ssekms_key_id(id.map(str::to_owned))
            .body(ByteStream::from(data.to_vec()))
            .send()
    };
    put("s3", ServerSideEncryption::Aes256, None, &small).await.unwrap();
    let kms = put("kms", ServerSideEncryption::AwsKms, Some(key_id), &large).await.unwrap();
    assert_eq!(kms.ssekms_key_id(), Some(key_id));
    let unknown = put("x", ServerSideEncryption::AwsKms, Some("no-such-key"), &[1u8]).await;
    assert_eq!(code(unknown), "KMS.NotFoundException");
    assert_eq!(read(c, bucket, "s3").await.unwrap(), small);
    assert_eq!(read(c, bucket, "kms").await.unwrap(), large);
    (small, large)
}

/// `ferrite admin kms-rewrap`; returns what it printed.
pub fn rewrap(server: &Server) -> String {
    let out = super::admin(server, &["kms-rewrap"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "kms-rewrap failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    stdout
}
