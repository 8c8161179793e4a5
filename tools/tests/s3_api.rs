//! The S3 API driven by the aws-sdk-s3 crate against the real server (4 drives, parity 2).

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, Tag, Tagging,
};
use common::{bytes, code, status, Server};

use common::get_bytes;

#[tokio::test]
async fn buckets_lifecycle_and_errors() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("alpha").send().await.unwrap();
    assert_eq!(code(c.create_bucket().bucket("alpha").send().await), "BucketAlreadyOwnedByYou");
    assert_eq!(code(c.create_bucket().bucket("Bad_Name").send().await), "InvalidBucketName");
    c.head_bucket().bucket("alpha").send().await.unwrap();
    assert_eq!(status(c.head_bucket().bucket("missing").send().await), 404);
    let names: Vec<String> =
        c.list_buckets().send().await.unwrap().buckets().iter().filter_map(|b| b.name().map(str::to_owned)).collect();
    assert_eq!(names, vec!["alpha".to_owned()]);
    let loc = c.get_bucket_location().bucket("alpha").send().await.unwrap();
    assert!(loc.location_constraint().is_none_or(|l| l.as_str().is_empty()));
    c.put_object().bucket("alpha").key("x").body(ByteStream::from_static(b"1")).send().await.unwrap();
    assert_eq!(code(c.delete_bucket().bucket("alpha").send().await), "BucketNotEmpty");
    c.delete_object().bucket("alpha").key("x").send().await.unwrap();
    c.delete_bucket().bucket("alpha").send().await.unwrap();
    assert_eq!(code(c.get_object().bucket("alpha").key("x").send().await), "NoSuchBucket");
    assert_eq!(
        code(c.put_object().bucket("alpha").key("x").body(ByteStream::from_static(b"1")).send().await),
        "NoSuchBucket"
    );
}

#[tokio::test]
async fn objects_round_trip_with_metadata_and_checksums() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("data").send().await.unwrap();
    // Inline (<=128 KiB), just above, one block, several blocks with a short tail.
    for (i, size) in [0usize, 1, 131_072, 131_073, 1 << 20, 3_500_001].into_iter().enumerate() {
        let body = bytes(size, i as u64);
        let key = format!("obj/{size}");
        let put = c
            .put_object()
            .bucket("data")
            .key(&key)
            .content_type("application/x-test")
            .metadata("color", "blue")
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        let md5 = format!("\"{:x}\"", md5::Md5::digest(&body));
        assert_eq!(put.e_tag(), Some(md5.as_str()));
        let head = c.head_object().bucket("data").key(&key).send().await.unwrap();
        assert_eq!(head.content_length(), Some(size as i64));
        assert_eq!(head.content_type(), Some("application/x-test"));
        assert_eq!(head.metadata().and_then(|m| m.get("color")).map(String::as_str), Some("blue"));
        assert_eq!(get_bytes(&c, "data", &key).await, body, "size {size}");
    }
    let body = bytes(300_000, 99);
    for algorithm in [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32C,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ] {
        let key = format!("sum/{}", algorithm.as_str());
        let put = c
            .put_object()
            .bucket("data")
            .key(&key)
            .checksum_algorithm(algorithm.clone())
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        let got = c.get_object().bucket("data").key(&key).checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
        let (sent, returned) = match algorithm {
            ChecksumAlgorithm::Crc32 => (put.checksum_crc32(), got.checksum_crc32()),
            ChecksumAlgorithm::Crc32C => (put.checksum_crc32_c(), got.checksum_crc32_c()),
            ChecksumAlgorithm::Crc64Nvme => (put.checksum_crc64_nvme(), got.checksum_crc64_nvme()),
            ChecksumAlgorithm::Sha1 => (put.checksum_sha1(), got.checksum_sha1()),
            _ => (put.checksum_sha256(), got.checksum_sha256()),
        };
        assert!(sent.is_some(), "{algorithm:?} checksum not echoed on PUT");
        assert_eq!(sent, returned, "{algorithm:?}");
        assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
    }
    // A wrong checksum is refused and nothing is stored.
    let bad = c
        .put_object()
        .bucket("data")
        .key("bad-sum")
        .checksum_crc32("AAAAAA==")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await;
    assert_eq!(code(bad), "BadDigest");
    assert_eq!(code(c.head_object().bucket("data").key("bad-sum").send().await), "NotFound");
    assert_eq!(code(c.get_object().bucket("data").key("missing").send().await), "NoSuchKey");
    let long_key = "k".repeat(1025);
    assert_eq!(
        code(c.put_object().bucket("data").key(long_key).body(ByteStream::from_static(b"x")).send().await),
        "KeyTooLongError"
    );
}

use md5::Digest as _;

/// The MD5s of concurrent PUTs are computed together (s3-front/src/md5x.rs): each must still
/// get its own body's ETag, a wrong Content-MD5 among them must store nothing, and the metrics
/// must show that bodies really were hashed side by side (where a lane kernel runs). Once
/// with the widest kernel the CPU has, once with the AVX2 one.
#[tokio::test]
async fn concurrent_puts_hashed_together_keep_their_own_etags() {
    // The default's empty setting picks the widest kernel.
    for simd in ["", "avx2"] {
        concurrent_puts_on_one_core(simd).await;
    }
}

async fn concurrent_puts_on_one_core(simd: &str) {
    // One core, so every PUT lands in the same batcher.
    let server = Server::start_with(4, &[], &[("FERRITE_CORES", "1"), ("FERRITE_MD5_SIMD", simd)]);
    let c = server.client();
    c.create_bucket().bucket("md5").send().await.unwrap();
    let (blocks_before, steps_before) =
        (common::metric(&server, "ferrite_md5_blocks_total"), common::metric(&server, "ferrite_md5_steps_total"));
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..24u64 {
        // 0 bytes to about 4.6 MiB, most not a multiple of 64.
        let body = bytes((i as usize * 200_003) % 4_800_000 + (i as usize % 3), 100 + i);
        let wrong = i % 8 == 5;
        let c = c.clone();
        puts.spawn(async move {
            let key = format!("k{i}");
            let mut put = c.put_object().bucket("md5").key(&key).body(ByteStream::from(body.clone()));
            if wrong {
                let other = md5::Md5::digest(b"something else");
                put = put.content_md5(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, other));
            }
            (key, body, wrong, put.send().await)
        });
    }
    while let Some(done) = puts.join_next().await {
        let (key, body, wrong, result) = done.unwrap();
        if wrong {
            assert_eq!(code(result), "BadDigest", "{key}");
            assert_eq!(code(c.head_object().bucket("md5").key(&key).send().await), "NotFound", "{key}");
        } else {
            let md5 = format!("\"{:x}\"", md5::Md5::digest(&body));
            assert_eq!(result.unwrap().e_tag(), Some(md5.as_str()), "{key}: {} bytes", body.len());
            assert_eq!(get_bytes(&c, "md5", &key).await, body, "{key}");
        }
    }
    let blocks = common::metric(&server, "ferrite_md5_blocks_total") - blocks_before;
    let steps = common::metric(&server, "ferrite_md5_steps_total") - steps_before;
    assert!(blocks >= 24 * 2_000_000 / 64, "{blocks} blocks hashed");
    // The start-up event `ETag MD5 kernel="avx512 16x" ...` names the kernel that runs.
    let startup = server.startup();
    let lanes = startup.iter().any(|l| l.contains("ETag MD5 kernel=\"avx"));
    #[cfg(target_arch = "x86_64")]
    if simd == "avx2" && std::arch::is_x86_feature_detected!("avx2") {
        assert!(startup.iter().any(|l| l.contains("ETag MD5 kernel=\"avx2")), "{startup:?}");
    }
    if lanes {
        assert!(blocks > steps, "{simd:?}: {blocks} blocks in {steps} steps: no two bodies were hashed together");
    } else {
        assert_eq!(blocks, steps, "with the scalar kernel each body is hashed on its own");
    }
}

#[tokio::test]
async fn ranges_and_conditionals() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("cond").send().await.unwrap();
    let body = bytes(2_500_000, 7);
    let etag = c
        .put_object()
        .bucket("cond")
        .key("k")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap()
        .e_tag
        .unwrap();
    for (range, expect) in [
        ("bytes=0-9", &body[0..10]),
        ("bytes=1048570-1048590", &body[1_048_570..1_048_591]),
        ("bytes=-5", &body[body.len() - 5..]),
        ("bytes=2499990-", &body[2_499_990..]),
    ] {
        let out = c.get_object().bucket("cond").key("k").range(range).send().await.unwrap();
        assert_eq!(out.content_length(), Some(expect.len() as i64), "{range}");
        assert_eq!(out.body.collect().await.unwrap().into_bytes().to_vec(), expect, "{range}");
    }
    assert_eq!(code(c.get_object().bucket("cond").key("k").range("bytes=2500000-").send().await), "InvalidRange");
    assert_eq!(status(c.get_object().bucket("cond").key("k").range("bytes=2500000-").send().await), 416);
    assert_eq!(status(c.get_object().bucket("cond").key("k").if_match("\"nope\"").send().await), 412);
    assert_eq!(status(c.get_object().bucket("cond").key("k").if_none_match(&etag).send().await), 304);
    c.get_object().bucket("cond").key("k").if_match(&etag).send().await.unwrap();
    let past = aws_sdk_s3::primitives::DateTime::from_secs(1_000_000_000);
    c.get_object().bucket("cond").key("k").if_modified_since(past).send().await.unwrap();
    assert_eq!(status(c.get_object().bucket("cond").key("k").if_unmodified_since(past).send().await), 412);
    // Conditional writes.
    assert_eq!(
        status(
            c.put_object().bucket("cond").key("k").if_none_match("*").body(ByteStream::from_static(b"x")).send().await
        ),
        412
    );
    c.put_object()
        .bucket("cond")
        .key("new")
        .if_none_match("*")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status(
            c.put_object()
                .bucket("cond")
                .key("k")
                .if_match("\"nope\"")
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        ),
        412
    );
    c.put_object().bucket("cond").key("k").if_match(&etag).body(ByteStream::from_static(b"y")).send().await.unwrap();
    assert_eq!(get_bytes(&c, "cond", "k").await, b"y");
}

#[tokio::test]
async fn listing_pages_prefixes_and_markers() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("list").send().await.unwrap();
    let mut keys = Vec::new();
    for dir in ["a", "b/c", "b/d", "e f"] {
        for i in 0..8 {
            keys.push(format!("{dir}/{i:02}"));
        }
    }
    keys.push("top".into());
    for key in &keys {
        c.put_object().bucket("list").key(key).body(ByteStream::from_static(b"v")).send().await.unwrap();
    }
    keys.sort();
    // V2, 7 keys a page, every page checked.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page =
            c.list_objects_v2().bucket("list").max_keys(7).set_continuation_token(token.clone()).send().await.unwrap();
        assert!(page.contents().len() <= 7);
        seen.extend(page.contents().iter().map(|o| o.key().unwrap().to_owned()));
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(str::to_owned);
    }
    assert_eq!(seen, keys);
    // Delimiter: common prefixes roll up, also across pages of 1.
    let out = c.list_objects_v2().bucket("list").delimiter("/").send().await.unwrap();
    let prefixes: Vec<&str> = out.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, vec!["a/", "b/", "e f/"]);
    assert_eq!(out.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), vec!["top"]);
    let mut rolled = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_objects_v2()
            .bucket("list")
            .delimiter("/")
            .max_keys(1)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        rolled.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_owned)));
        rolled.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(str::to_owned);
    }
    assert_eq!(rolled, vec!["a/", "b/", "e f/", "top"]);
    let out = c.list_objects_v2().bucket("list").prefix("b/").delimiter("/").send().await.unwrap();
    let prefixes: Vec<&str> = out.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, vec!["b/c/", "b/d/"]);
    let out = c.list_objects_v2().bucket("list").prefix("b/c/").start_after("b/c/05").send().await.unwrap();
    assert_eq!(out.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), vec!["b/c/06", "b/c/07"]);
    // V1 with markers.
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = c.list_objects().bucket("list").max_keys(10).set_marker(marker.clone()).send().await.unwrap();
        seen.extend(page.contents().iter().map(|o| o.key().unwrap().to_owned()));
        if page.is_truncated() != Some(true) {
            break;
        }
        marker = page.next_marker().map(str::to_owned).or_else(|| seen.last().cloned());
    }
    assert_eq!(seen, keys);
    let empty = c.list_objects_v2().bucket("list").prefix("zzz").send().await.unwrap();
    assert_eq!(empty.key_count(), Some(0));
    assert_eq!(code(c.list_objects_v2().bucket("nolist").send().await), "NoSuchBucket");
}

#[tokio::test]
async fn multipart_upload_complete_abort_and_errors() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("multi").send().await.unwrap();
    let parts = [bytes(5 << 20, 1), bytes(5 << 20, 2), bytes(1, 3)];
    let up = c.create_multipart_upload().bucket("multi").key("big").content_type("video/test").send().await.unwrap();
    let id = up.upload_id().unwrap().to_owned();
    let mut done = Vec::new();
    // Upload out of order, and part 2 twice (the second replaces the first).
    for n in [3, 1, 2, 2] {
        let out = c
            .upload_part()
            .bucket("multi")
            .key("big")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(parts[n as usize - 1].clone()))
            .send()
            .await
            .unwrap();
        done.retain(|p: &CompletedPart| p.part_number() != Some(n));
        done.push(CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap()).build());
    }
    done.sort_by_key(|p| p.part_number());
    let listed = c.list_parts().bucket("multi").key("big").upload_id(&id).send().await.unwrap();
    assert_eq!(listed.parts().iter().map(|p| p.size().unwrap()).collect::<Vec<_>>(), vec![5 << 20, 5 << 20, 1]);
    let uploads = c.list_multipart_uploads().bucket("multi").send().await.unwrap();
    assert_eq!(uploads.uploads().iter().filter_map(|u| u.upload_id()).collect::<Vec<_>>(), vec![id.as_str()]);
    // Wrong order, unknown ETag, missing upload.
    let reversed: Vec<CompletedPart> = done.iter().rev().cloned().collect();
    let wrong_order = c
        .complete_multipart_upload()
        .bucket("multi")
        .key("big")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(reversed)).build())
        .send()
        .await;
    assert_eq!(code(wrong_order), "InvalidPartOrder");
    let bad_etag = vec![CompletedPart::builder().part_number(1).e_tag("\"00000000000000000000000000000000\"").build()];
    let bad = c
        .complete_multipart_upload()
        .bucket("multi")
        .key("big")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(bad_etag)).build())
        .send()
        .await;
    assert_eq!(code(bad), "InvalidPart");
    let out = c
        .complete_multipart_upload()
        .bucket("multi")
        .key("big")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done.clone())).build())
        .send()
        .await
        .unwrap();
    let mut md5s = Vec::new();
    for p in &parts {
        md5s.extend_from_slice(&md5::Md5::digest(p));
    }
    assert_eq!(out.e_tag().unwrap(), format!("\"{:x}-3\"", md5::Md5::digest(&md5s)));
    let whole: Vec<u8> = parts.concat();
    assert_eq!(get_bytes(&c, "multi", "big").await, whole);
    let head = c.head_object().bucket("multi").key("big").send().await.unwrap();
    assert_eq!(head.content_type(), Some("video/test"));
    assert_eq!(head.content_length(), Some(whole.len() as i64));
    let ranged = c.get_object().bucket("multi").key("big").range("bytes=5242870-5242890").send().await.unwrap();
    assert_eq!(ranged.body.collect().await.unwrap().into_bytes().to_vec(), whole[5_242_870..5_242_891]);
    assert_eq!(code(c.list_parts().bucket("multi").key("big").upload_id(&id).send().await), "NoSuchUpload");
    // A part under 5 MiB that is not the last one.
    let small = c.create_multipart_upload().bucket("multi").key("small").send().await.unwrap();
    let sid = small.upload_id().unwrap();
    let mut sparts = Vec::new();
    for n in 1..=2 {
        let e = c
            .upload_part()
            .bucket("multi")
            .key("small")
            .upload_id(sid)
            .part_number(n)
            .body(ByteStream::from(bytes(1000, n as u64)))
            .send()
            .await
            .unwrap();
        sparts.push(CompletedPart::builder().part_number(n).e_tag(e.e_tag().unwrap()).build());
    }
    let too_small = c
        .complete_multipart_upload()
        .bucket("multi")
        .key("small")
        .upload_id(sid)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(sparts)).build())
        .send()
        .await;
    assert_eq!(code(too_small), "EntityTooSmall");
    // Upload part copy from the finished object, then abort.
    let copy = c
        .upload_part_copy()
        .bucket("multi")
        .key("small")
        .upload_id(sid)
        .part_number(3)
        .copy_source("multi/big")
        .copy_source_range("bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(
        copy.copy_part_result().and_then(|r| r.e_tag()),
        Some(format!("\"{:x}\"", md5::Md5::digest(&whole[..100])).as_str())
    );
    assert_eq!(code(upload_one_byte(&c, sid, 0).await), "InvalidArgument");
    c.abort_multipart_upload().bucket("multi").key("small").upload_id(sid).send().await.unwrap();
    assert_eq!(
        code(c.abort_multipart_upload().bucket("multi").key("small").upload_id(sid).send().await),
        "NoSuchUpload"
    );
    assert_eq!(code(upload_one_byte(&c, sid, 1).await), "NoSuchUpload");
    assert_eq!(code(c.head_object().bucket("multi").key("small").send().await), "NotFound");
}

async fn upload_one_byte(
    c: &aws_sdk_s3::Client,
    upload_id: &str,
    part: i32,
) -> Result<
    aws_sdk_s3::operation::upload_part::UploadPartOutput,
    aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::upload_part::UploadPartError>,
> {
    c.upload_part()
        .bucket("multi")
        .key("small")
        .upload_id(upload_id)
        .part_number(part)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
}

#[tokio::test]
async fn copy_delete_objects_and_tagging() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("copies").send().await.unwrap();
    let body = bytes(1_300_000, 5);
    c.put_object()
        .bucket("copies")
        .key("src")
        .metadata("m", "1")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let out = c.copy_object().bucket("copies").key("dst").copy_source("copies/src").send().await.unwrap();
    assert_eq!(
        out.copy_object_result().and_then(|r| r.e_tag()),
        Some(format!("\"{:x}\"", md5::Md5::digest(&body)).as_str())
    );
    assert_eq!(get_bytes(&c, "copies", "dst").await, body);
    let head = c.head_object().bucket("copies").key("dst").send().await.unwrap();
    assert_eq!(head.metadata().and_then(|m| m.get("m")).map(String::as_str), Some("1"));
    assert_eq!(
        code(c.copy_object().bucket("copies").key("src").copy_source("copies/src").send().await),
        "InvalidRequest"
    );
    assert_eq!(code(c.copy_object().bucket("copies").key("x").copy_source("copies/missing").send().await), "NoSuchKey");
    // Tagging.
    let tags =
        Tagging::builder().tag_set(Tag::builder().key("team").value("storage").build().unwrap()).build().unwrap();
    c.put_object_tagging().bucket("copies").key("dst").tagging(tags).send().await.unwrap();
    let got = c.get_object_tagging().bucket("copies").key("dst").send().await.unwrap();
    assert_eq!(got.tag_set().iter().map(|t| (t.key(), t.value())).collect::<Vec<_>>(), vec![("team", "storage")]);
    c.delete_object_tagging().bucket("copies").key("dst").send().await.unwrap();
    assert!(c.get_object_tagging().bucket("copies").key("dst").send().await.unwrap().tag_set().is_empty());
    let eleven: Vec<Tag> = (0..11).map(|i| Tag::builder().key(format!("k{i}")).value("v").build().unwrap()).collect();
    let too_many = Tagging::builder().set_tag_set(Some(eleven)).build().unwrap();
    assert_eq!(code(c.put_object_tagging().bucket("copies").key("dst").tagging(too_many).send().await), "InvalidTag");
    assert_eq!(get_bytes(&c, "copies", "dst").await, body, "tagging must not touch the data");
    // DeleteObjects, including a key that never existed.
    let objects: Vec<ObjectIdentifier> =
        ["src", "dst", "never"].iter().map(|k| ObjectIdentifier::builder().key(*k).build().unwrap()).collect();
    let out = c
        .delete_objects()
        .bucket("copies")
        .delete(Delete::builder().set_objects(Some(objects)).build().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(out.deleted().len(), 3);
    assert!(out.errors().is_empty());
    assert_eq!(c.list_objects_v2().bucket("copies").send().await.unwrap().key_count(), Some(0));
}

#[tokio::test]
async fn authentication_failures() {
    let server = Server::start(1);
    let c = server.client();
    c.create_bucket().bucket("auth").send().await.unwrap();
    let wrong = common::client_with(&server.endpoint, common::USER, "not-the-password");
    assert_eq!(code(wrong.list_buckets().send().await), "SignatureDoesNotMatch");
    let unknown = common::client_with(&server.endpoint, "nobody", "x");
    assert_eq!(code(unknown.list_buckets().send().await), "InvalidAccessKeyId");
    assert_eq!(
        code(wrong.put_object().bucket("auth").key("k").body(ByteStream::from_static(b"x")).send().await),
        "SignatureDoesNotMatch"
    );
    assert_eq!(code(c.head_object().bucket("auth").key("k").send().await), "NotFound");
}

/// The disk path used where io_uring is unavailable (a blocking thread pool), forced here.
#[tokio::test]
async fn blocking_io_fallback_serves_the_same_api() {
    let server = Server::start_with(4, &[], &[("FERRITE_IO", "blocking")]);
    let c = server.client();
    c.create_bucket().bucket("fallback").send().await.unwrap();
    for (i, size) in [10usize, 3_000_000].into_iter().enumerate() {
        let body = bytes(size, 40 + i as u64);
        c.put_object()
            .bucket("fallback")
            .key(format!("k{i}"))
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(get_bytes(&c, "fallback", &format!("k{i}")).await, body);
    }
    let ranged = c.get_object().bucket("fallback").key("k1").range("bytes=1048575-1048576").send().await.unwrap();
    assert_eq!(ranged.body.collect().await.unwrap().into_bytes().len(), 2);
    let server = server.restart();
    let c = server.client();
    assert_eq!(get_bytes(&c, "fallback", "k0").await, bytes(10, 40));
}

/// A bad count argument is refused the same way on every listing (AWS: 400 InvalidArgument),
/// never silently read as the default.
#[tokio::test]
async fn bad_list_arguments_are_refused_alike() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("args").send().await.unwrap();
    let up = c.create_multipart_upload().bucket("args").key("k").send().await.unwrap();
    let id = up.upload_id().unwrap();
    let parts = || c.list_parts().bucket("args").key("k").upload_id(id);
    assert_eq!(status(parts().max_parts(-1).send().await), 400);
    assert_eq!(code(parts().max_parts(-1).send().await), "InvalidArgument");
    let uploads = c.list_multipart_uploads().bucket("args").max_uploads(-1).send().await;
    assert_eq!(code(uploads), "InvalidArgument");
    assert_eq!(code(c.list_objects_v2().bucket("args").max_keys(-1).send().await), "InvalidArgument");
    assert_eq!(code(c.list_objects().bucket("args").max_keys(-1).send().await), "InvalidArgument");
    // Valid values still list (a large one is served at the cap).
    assert_eq!(parts().max_parts(5000).send().await.unwrap().max_parts(), Some(1000));
    let uploads = c.list_multipart_uploads().bucket("args").max_uploads(2).send().await.unwrap();
    assert_eq!(uploads.uploads().len(), 1);
}
