//! Server-side encryption against the real binary with aws-sdk-s3: SSE-S3, SSE-KMS (the
//! static KMS backend), SSE-C, bucket default encryption; ranges, multipart, copies,
//! restarts and drive loss on encrypted objects; no plaintext on the drives; and a package
//! altered on disk (frame checksums rewritten to match) is refused, never served.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use common::{code, Server};
use md5::Digest;

const KMS_KEYS: &str =
    "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=,k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
/// A customer key (SSE-C) and a different one.
const CUSTOMER_KEY: [u8; 32] = [7u8; 32];
const OTHER_KEY: [u8; 32] = [8u8; 32];
const MARKER: &[u8] = b"FERRITE-PLAINTEXT-MARKER-";

fn start() -> Server {
    Server::start_with(
        4,
        &[],
        &[("FERRITE_KMS_SECRET_KEY", KMS_KEYS), ("FERRITE_SSE_C_ALLOW_HTTP", "on"), ("FERRITE_DRIVE_CHECK_SECS", "0")],
    )
}

/// Recognisable plaintext: the marker repeated, with a counter so ranges are checkable.
fn body(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(MARKER);
        out.extend_from_slice(format!("{i:08}|").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn b64(bytes: &[u8]) -> String {
    use aws_smithy_types::base64;
    base64::encode(bytes)
}

fn customer(key: &[u8; 32]) -> (String, String) {
    (b64(key), b64(&md5::Md5::digest(key)))
}

/// No file on any drive contains the plaintext marker.
fn assert_no_plaintext_on_drives(server: &Server) {
    for drive in &server.drives {
        for file in common::files_under(drive) {
            // A file removed since it was listed (replaced data) has nothing to show.
            let Ok(bytes) = std::fs::read(&file) else { continue };
            assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER), "plaintext found in {}", file.display());
        }
    }
}

use common::get_range_bytes as get_bytes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_s3_and_kms_round_trip_with_ranges_multipart_copies_restart_and_drive_loss() {
    let server = start();
    let c = server.client();
    c.create_bucket().bucket("enc").send().await.unwrap();
    let sizes = [0usize, 10, 65_536, 65_537, 200_000, 3_000_000];
    let mut written = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let data = body(*size);
        let key = format!("s3-{i}");
        let put = c
            .put_object()
            .bucket("enc")
            .key(&key)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(put.server_side_encryption(), Some(&ServerSideEncryption::Aes256));
        // SSE-S3 keeps the plaintext MD5 as the ETag (as AWS does).
        assert_eq!(put.e_tag().unwrap(), format!("\"{}\"", hex(&md5::Md5::digest(&data))));
        written.push((key, data));
    }
    // SSE-KMS with a chosen key and an encryption context.
    let context = b64(br#"{"team":"storage"}"#);
    let kms_data = body(300_000);
    let put = c
        .put_object()
        .bucket("enc")
        .key("kms")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id("k2")
        .ssekms_encryption_context(&context)
        .body(ByteStream::from(kms_data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.server_side_encryption(), Some(&ServerSideEncryption::AwsKms));
    assert_eq!(put.ssekms_key_id(), Some("k2"));
    assert_ne!(put.e_tag().unwrap(), format!("\"{}\"", hex(&md5::Md5::digest(&kms_data))));
    written.push(("kms".into(), kms_data));
    let unknown = c
        .put_object()
        .bucket("enc")
        .key("nokey")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id("nope")
        .body(ByteStream::from(vec![1u8; 10]))
        .send()
        .await;
    assert_eq!(code(unknown), "KMS.NotFoundException");
    // A key id is a name: anything path-like is refused before it reaches the KMS.
    for bad in ["../k1", "k1/rotate", "a b", ""] {
        let put = c
            .put_object()
            .bucket("enc")
            .key("badkey")
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(bad)
            .body(ByteStream::from(vec![1u8; 10]))
            .send()
            .await;
        assert_eq!(code(put), "KMS.NotFoundException", "key id {bad:?}");
    }
    // Multipart: two parts, each sealed under its own derived key.
    let up = c
        .create_multipart_upload()
        .bucket("enc")
        .key("mp")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .send()
        .await
        .unwrap();
    assert_eq!(up.server_side_encryption(), Some(&ServerSideEncryption::Aes256));
    let id = up.upload_id().unwrap();
    let mp_data = body((5 << 20) + 123_457);
    let mut parts = Vec::new();
    for (n, chunk) in [(1, &mp_data[..5 << 20]), (2, &mp_data[5 << 20..])] {
        let part = c
            .upload_part()
            .bucket("enc")
            .key("mp")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        parts.push(CompletedPart::builder().part_number(n).e_tag(part.e_tag().unwrap()).build());
    }
    let listed = c.list_parts().bucket("enc").key("mp").upload_id(id).send().await.unwrap();
    assert_eq!(listed.parts()[1].size(), Some(123_457), "ListParts shows plaintext sizes");
    c.complete_multipart_upload()
        .bucket("enc")
        .key("mp")
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .unwrap();
    written.push(("mp".into(), mp_data));
    // Copies: plaintext -> encrypted, encrypted -> plaintext.
    let plain = body(150_000);
    c.put_object().bucket("enc").key("plain").body(ByteStream::from(plain.clone())).send().await.unwrap();
    let copied = c
        .copy_object()
        .bucket("enc")
        .key("plain-encrypted")
        .copy_source("enc/plain")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .send()
        .await
        .unwrap();
    assert_eq!(copied.server_side_encryption(), Some(&ServerSideEncryption::Aes256));
    c.copy_object().bucket("enc").key("mp-decrypted").copy_source("enc/mp").send().await.unwrap();
    let head = c.head_object().bucket("enc").key("mp-decrypted").send().await.unwrap();
    assert_eq!(head.server_side_encryption(), None);
    c.delete_object().bucket("enc").key("plain").send().await.unwrap();
    let mp_plain = written.iter().find(|(k, _)| k == "mp").unwrap().1.clone();
    let check = |c: aws_sdk_s3::Client, written: Vec<(String, Vec<u8>)>, mp_plain: Vec<u8>, plain: Vec<u8>| async move {
        for (key, data) in &written {
            assert!(get_bytes(&c, "enc", key, None).await == *data, "{key}");
            let head = c.head_object().bucket("enc").key(key).send().await.unwrap();
            assert_eq!(head.content_length(), Some(data.len() as i64), "{key}: plaintext size");
            assert!(head.server_side_encryption().is_some(), "{key}");
            let len = data.len();
            if len > 2 {
                for (a, b) in [(0, 0), (1, len / 2), (len / 3, len - 1), (len - 1, len - 1)] {
                    let got = get_bytes(&c, "enc", key, Some(format!("bytes={a}-{b}"))).await;
                    assert!(got == data[a..=b], "{key} range {a}-{b}");
                }
            }
        }
        // Across the part boundary of the multipart object.
        let (a, b) = ((5 << 20) - 70_000, (5 << 20) + 70_000);
        assert!(get_bytes(&c, "enc", "mp", Some(format!("bytes={a}-{b}"))).await == mp_plain[a..=b]);
        assert!(get_bytes(&c, "enc", "plain-encrypted", None).await == plain);
        assert!(get_bytes(&c, "enc", "mp-decrypted", None).await == mp_plain);
    };
    check(c.clone(), written.clone(), mp_plain.clone(), plain.clone()).await;
    // Nothing readable at rest (the copy to "mp-decrypted" is plaintext on purpose).
    c.delete_object().bucket("enc").key("mp-decrypted").send().await.unwrap();
    std::thread::sleep(std::time::Duration::from_secs(6)); // the replaced files' removal delay
    assert_no_plaintext_on_drives(&server);
    c.copy_object().bucket("enc").key("mp-decrypted").copy_source("enc/mp").send().await.unwrap();
    // A restart, then two drives lost: still every byte.
    let server = server.restart_with(&[("FERRITE_KMS_SECRET_KEY", KMS_KEYS), ("FERRITE_DRIVE_CHECK_SECS", "0")]);
    for drive in [&server.drives[0], &server.drives[3]] {
        common::wipe(drive);
    }
    check(server.client(), written, mp_plain, plain).await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_c_needs_the_right_key_for_every_read_copy_and_part() {
    let server = start();
    let c = server.client();
    c.create_bucket().bucket("ssec").send().await.unwrap();
    let (key, md5) = customer(&CUSTOMER_KEY);
    let (other, other_md5) = customer(&OTHER_KEY);
    for (name, size) in [("small", 1_000usize), ("large", 2_500_000)] {
        let data = body(size);
        let put = c
            .put_object()
            .bucket("ssec")
            .key(name)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&key)
            .sse_customer_key_md5(&md5)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(put.sse_customer_key_md5(), Some(md5.as_str()));
        // No key: refused; the wrong key: 403; the right key: the bytes.
        assert_eq!(code(c.get_object().bucket("ssec").key(name).send().await), "InvalidRequest");
        let wrong = c
            .get_object()
            .bucket("ssec")
            .key(name)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&other)
            .sse_customer_key_md5(&other_md5)
            .send()
            .await;
        assert_eq!(common::status(wrong), 403, "{name} with the wrong key");
        let bad_md5 = c
            .get_object()
            .bucket("ssec")
            .key(name)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&key)
            .sse_customer_key_md5(&other_md5)
            .send()
            .await;
        assert_eq!(code(bad_md5), "InvalidArgument");
        let got = c
            .get_object()
            .bucket("ssec")
            .key(name)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&key)
            .sse_customer_key_md5(&md5)
            .range("bytes=5-900")
            .send()
            .await
            .unwrap();
        assert_eq!(got.sse_customer_algorithm(), Some("AES256"));
        assert!(got.body.collect().await.unwrap().into_bytes().to_vec() == data[5..=900]);
        let head = c.head_object().bucket("ssec").key(name).send().await;
        assert_eq!(common::status(head), 400, "HEAD without the key");
    }
    // Copy: the source needs its key in the copy-source headers; the copy gets another key.
    let copy = c
        .copy_object()
        .bucket("ssec")
        .key("copy")
        .copy_source("ssec/large")
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&key)
        .copy_source_sse_customer_key_md5(&md5)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&other)
        .sse_customer_key_md5(&other_md5)
        .send()
        .await
        .unwrap();
    assert_eq!(copy.sse_customer_key_md5(), Some(other_md5.as_str()));
    let no_source_key = c.copy_object().bucket("ssec").key("copy2").copy_source("ssec/large").send().await;
    assert_eq!(code(no_source_key), "InvalidRequest");
    let got = c
        .get_object()
        .bucket("ssec")
        .key("copy")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&other)
        .sse_customer_key_md5(&other_md5)
        .send()
        .await
        .unwrap();
    assert!(got.body.collect().await.unwrap().into_bytes().to_vec() == body(2_500_000));
    // Multipart: every part must carry the upload's key.
    let up = c
        .create_multipart_upload()
        .bucket("ssec")
        .key("mp")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key)
        .sse_customer_key_md5(&md5)
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let keyless = c
        .upload_part()
        .bucket("ssec")
        .key("mp")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from(vec![0u8; 10]))
        .send()
        .await;
    assert_eq!(code(keyless), "InvalidRequest");
    let part = c
        .upload_part()
        .bucket("ssec")
        .key("mp")
        .upload_id(id)
        .part_number(1)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key)
        .sse_customer_key_md5(&md5)
        .body(ByteStream::from(body(700_000)))
        .send()
        .await
        .unwrap();
    c.complete_multipart_upload()
        .bucket("ssec")
        .key("mp")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(CompletedPart::builder().part_number(1).e_tag(part.e_tag().unwrap()).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let got = c
        .get_object()
        .bucket("ssec")
        .key("mp")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key)
        .sse_customer_key_md5(&md5)
        .send()
        .await
        .unwrap();
    assert!(got.body.collect().await.unwrap().into_bytes().to_vec() == body(700_000));
    assert_no_plaintext_on_drives(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_c_is_refused_over_plain_http_and_sse_without_a_kms_is_refused() {
    let server = Server::start_with(4, &[], &[("FERRITE_DRIVE_CHECK_SECS", "0")]);
    let c = server.client();
    c.create_bucket().bucket("strict").send().await.unwrap();
    let (key, md5) = customer(&CUSTOMER_KEY);
    let put = c
        .put_object()
        .bucket("strict")
        .key("x")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key)
        .sse_customer_key_md5(&md5)
        .body(ByteStream::from(vec![1u8; 10]))
        .send()
        .await;
    assert_eq!(code(put), "InvalidRequest");
    let put = c
        .put_object()
        .bucket("strict")
        .key("y")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from(vec![1u8; 10]))
        .send()
        .await;
    assert_eq!(code(put), "NotImplemented");
    assert_eq!(code(c.head_object().bucket("strict").key("x").send().await), "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_default_encryption_applies_to_plain_puts_and_survives_restart() {
    let server = start();
    let c = server.client();
    c.create_bucket().bucket("deflt").send().await.unwrap();
    let missing = c.get_bucket_encryption().bucket("deflt").send().await;
    assert_eq!(code(missing), "ServerSideEncryptionConfigurationNotFoundError");
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(
            ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::AwsKms)
                .kms_master_key_id("k2")
                .build()
                .unwrap(),
        )
        .build();
    c.put_bucket_encryption()
        .bucket("deflt")
        .server_side_encryption_configuration(ServerSideEncryptionConfiguration::builder().rules(rule).build().unwrap())
        .send()
        .await
        .unwrap();
    let put = c.put_object().bucket("deflt").key("a").body(ByteStream::from(body(90_000))).send().await.unwrap();
    assert_eq!(put.server_side_encryption(), Some(&ServerSideEncryption::AwsKms));
    assert_eq!(put.ssekms_key_id(), Some("k2"));
    let server = server.restart_with(&[("FERRITE_KMS_SECRET_KEY", KMS_KEYS), ("FERRITE_DRIVE_CHECK_SECS", "0")]);
    let c = server.client();
    let got = c.get_bucket_encryption().bucket("deflt").send().await.unwrap();
    let by_default = got.server_side_encryption_configuration().unwrap().rules()[0]
        .apply_server_side_encryption_by_default()
        .unwrap()
        .clone();
    assert_eq!(by_default.sse_algorithm(), &ServerSideEncryption::AwsKms);
    assert_eq!(by_default.kms_master_key_id(), Some("k2"));
    assert!(get_bytes(&c, "deflt", "a", None).await == body(90_000));
    c.delete_bucket_encryption().bucket("deflt").send().await.unwrap();
    let put = c.put_object().bucket("deflt").key("b").body(ByteStream::from(body(10))).send().await.unwrap();
    assert_eq!(put.server_side_encryption(), None);
    // The one unencrypted object, "b", is shorter than the marker: nothing may match.
    assert_no_plaintext_on_drives(&server);
}

/// Flips one byte of the first shard in every data file of an object and rewrites each
/// frame's checksum to match, so the erasure layer accepts the altered shards and only the
/// package's AEAD tag stands between the change and the client.
fn tamper_consistently(files: &[std::path::PathBuf]) {
    use xxhash_rust::xxh3::xxh3_64;
    for file in files {
        let mut bytes = std::fs::read(file).unwrap();
        // The first frame's shard ends where a 64-byte boundary is followed by its xxh3.
        let shard_end = (64..bytes.len() - 8)
            .step_by(64)
            .find(|&p| xxh3_64(&bytes[..p]).to_le_bytes() == bytes[p..p + 8])
            .unwrap_or_else(|| panic!("no frame checksum found in {}", file.display()));
        bytes[100] ^= 0x01;
        let sum = xxh3_64(&bytes[..shard_end]).to_le_bytes();
        bytes[shard_end..shard_end + 8].copy_from_slice(&sum);
        std::fs::write(file, &bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_altered_on_disk_is_refused_never_served() {
    let server = start();
    let c = server.client();
    c.create_bucket().bucket("tamper").send().await.unwrap();
    let before: Vec<_> = server.drives.iter().flat_map(|d| common::files_under(d)).collect();
    let data = body(300_000);
    c.put_object()
        .bucket("tamper")
        .key("obj")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let mut server = server;
    server.kill();
    let written: Vec<_> = server
        .drives
        .iter()
        .flat_map(|d| common::files_under(d))
        .filter(|f| !before.contains(f) && !f.to_string_lossy().contains("wal"))
        .collect();
    assert_eq!(written.len(), 4, "one data file per drive: {written:?}");
    tamper_consistently(&written);
    let server = server.restart_with(&[
        ("FERRITE_KMS_SECRET_KEY", KMS_KEYS),
        ("FERRITE_SSE_C_ALLOW_HTTP", "on"),
        ("FERRITE_DRIVE_CHECK_SECS", "0"),
    ]);
    let c = server.client();
    // The altered byte is in the first 64 KiB package: a read that needs it fails...
    let whole = c.get_object().bucket("tamper").key("obj").send().await;
    match whole {
        Err(e) => assert!(common::status(Err::<(), _>(e)) >= 500),
        Ok(out) => assert!(out.body.collect().await.is_err(), "an altered package must not be served"),
    }
    let head = c.get_object().bucket("tamper").key("obj").range("bytes=0-99").send().await;
    assert!(head.is_err(), "the first package does not open");
    // ...and a range in untouched packages still reads, decrypting only those packages.
    assert_eq!(get_bytes(&c, "tamper", "obj", Some("bytes=200000-200999".into())).await, data[200_000..201_000]);
}
