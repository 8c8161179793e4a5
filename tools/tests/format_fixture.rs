//! The format-1 fixture (tools/tests/fixtures): four drives written once by format-1 ferrite
//! and committed, so that every later build is checked against drives from the field without
//! building an old commit. The test checks only what S3 clients see (bodies, ETags, headers,
//! tags, listings, bucket encryption, the upload in progress), so it keeps its meaning when
//! the on-disk format changes and start-up upgrades the drives in place.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use common::Server;

/// Where the fixture and its expectations are committed.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// format1.json: what an S3 client must find on the fixture's drives (written by
/// make-format1.py from what it sent and what the server answered at the time).
#[derive(Deserialize)]
struct Fixture {
    /// The variables the server needs to read the drives (KMS key, credentials).
    env: BTreeMap<String, String>,
    drives: Vec<String>,
    /// S3's Content-Type for an object stored without one.
    default_content_type: String,
    buckets: Vec<Bucket>,
    objects: Vec<Object>,
    absent: Vec<Absent>,
    multipart_object: MultipartObject,
    upload_in_progress: Upload,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
    /// The default encryption's algorithm, if the bucket has one.
    encryption: Option<String>,
}

#[derive(Deserialize, Clone)]
struct Object {
    bucket: String,
    key: String,
    size: i64,
    sha256: String,
    etag: String,
    content_type: Option<String>,
    metadata: HashMap<String, String>,
    tags: HashMap<String, String>,
    /// The server-side encryption the object was stored with.
    sse: Option<String>,
}

/// A key that must not exist: deleted, or a PUT that was never acknowledged.
#[derive(Deserialize)]
struct Absent {
    bucket: String,
    key: String,
    why: String,
}

#[derive(Deserialize)]
struct MultipartObject {
    bucket: String,
    key: String,
    etag: String,
}

#[derive(Deserialize)]
struct Upload {
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<Part>,
    metadata: HashMap<String, String>,
    size: i64,
    sha256: String,
    etag_when_completed: String,
}

#[derive(Deserialize)]
struct Part {
    part_number: i32,
    size: i64,
    etag: String,
}

impl Fixture {
    fn load() -> Fixture {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join("format1.json")).expect("read format1.json");
        serde_json::from_str(&text).expect("parse format1.json")
    }

    fn envs(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// The upload in progress as the object it becomes once completed.
    fn completed_upload(&self) -> Object {
        let u = &self.upload_in_progress;
        Object {
            bucket: u.bucket.clone(),
            key: u.key.clone(),
            size: u.size,
            sha256: u.sha256.clone(),
            etag: u.etag_when_completed.clone(),
            content_type: None,
            metadata: u.metadata.clone(),
            tags: HashMap::new(),
            sse: None,
        }
    }
}

/// The fixture's drives, unpacked into a fresh directory: (root, drives in set order).
fn unpack(fx: &Fixture) -> (PathBuf, Vec<PathBuf>) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let root = std::env::temp_dir().join(format!("ferrite-format1-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let tarball = Path::new(FIXTURES).join("format1.tar.gz");
    let status = Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&root).status().expect("run tar");
    if !status.success() {
        let _ = std::fs::remove_dir_all(&root);
        panic!("tar xzf {} failed: {status}", tarball.display());
    }
    let drives = fx.drives.iter().map(|d| root.join(d)).collect();
    (root, drives)
}

fn client(server: &Server, fx: &Fixture) -> Client {
    common::client_with(&server.endpoint, &fx.env["FERRITE_ROOT_USER"], &fx.env["FERRITE_ROOT_PASSWORD"])
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// One live object: body, size, ETag, Content-Type, user metadata, encryption and tags.
async fn check_object(c: &Client, fx: &Fixture, o: &Object, when: &str) {
    let what = format!("{}/{} {when}", o.bucket, o.key);
    let got = c.get_object().bucket(&o.bucket).key(&o.key).send().await.unwrap_or_else(|e| panic!("GET {what}: {e:?}"));
    assert_eq!(got.e_tag(), Some(o.etag.as_str()), "{what}: ETag");
    assert_eq!(got.content_length(), Some(o.size), "{what}: Content-Length");
    let content_type = o.content_type.as_deref().unwrap_or(&fx.default_content_type);
    assert_eq!(got.content_type(), Some(content_type), "{what}: Content-Type");
    assert_eq!(got.metadata().cloned().unwrap_or_default(), o.metadata, "{what}: user metadata");
    let sse = got.server_side_encryption().map(|s| s.as_str().to_owned());
    assert_eq!(sse, o.sse, "{what}: server-side encryption");
    let body = got.body.collect().await.unwrap_or_else(|e| panic!("{what}: body: {e:?}")).into_bytes();
    assert_eq!(body.len() as i64, o.size, "{what}: body length");
    assert_eq!(sha256_hex(&body), o.sha256, "{what}: body sha256");
    let tagging = c.get_object_tagging().bucket(&o.bucket).key(&o.key).send().await;
    let tagging = tagging.unwrap_or_else(|e| panic!("GetObjectTagging {what}: {e:?}"));
    let tags: HashMap<String, String> =
        tagging.tag_set().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect();
    assert_eq!(tags, o.tags, "{what}: tags");
}

/// Deleted and never-acknowledged keys: 404 to HEAD, NoSuchKey to GET.
async fn check_absent(c: &Client, fx: &Fixture, when: &str) {
    for a in &fx.absent {
        let head = c.head_object().bucket(&a.bucket).key(&a.key).send().await;
        assert_eq!(common::status(head), 404, "HEAD {}/{} ({}) {when}", a.bucket, a.key, a.why);
        let get = common::get_or_code(c, &a.bucket, &a.key).await;
        assert_eq!(get, Err("NoSuchKey".to_owned()), "GET {}/{} ({}) {when}", a.bucket, a.key, a.why);
    }
}

/// Every key ListObjectsV2 returns for `bucket`, page by page.
async fn list_keys(c: &Client, bucket: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = c.list_objects_v2().bucket(bucket).max_keys(17).set_continuation_token(token).send().await;
        let page = page.unwrap_or_else(|e| panic!("ListObjectsV2 {bucket}: {e:?}"));
        keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_owned()));
        if page.is_truncated() != Some(true) {
            return keys;
        }
        token = page.next_continuation_token().map(str::to_owned);
    }
}

/// The buckets, their listings (exactly the live keys, in order) and their encryption.
async fn check_buckets(c: &Client, fx: &Fixture, live: &[Object], when: &str) {
    let listed = c.list_buckets().send().await.unwrap();
    let names: Vec<&str> = listed.buckets().iter().filter_map(|b| b.name()).collect();
    let expected: Vec<&str> = fx.buckets.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, expected, "ListBuckets {when}");
    for bucket in &fx.buckets {
        let mut keys: Vec<String> = live.iter().filter(|o| o.bucket == bucket.name).map(|o| o.key.clone()).collect();
        keys.sort();
        assert_eq!(list_keys(c, &bucket.name).await, keys, "ListObjectsV2 {} {when}", bucket.name);
        assert_eq!(bucket_encryption(c, &bucket.name).await, bucket.encryption, "encryption of {} {when}", bucket.name);
    }
}

/// The algorithm of a bucket's default encryption; None when it has no configuration.
async fn bucket_encryption(c: &Client, bucket: &str) -> Option<String> {
    match c.get_bucket_encryption().bucket(bucket).send().await {
        Ok(out) => {
            let rules = out.server_side_encryption_configuration().expect("a configuration").rules();
            let default = rules.first().and_then(|r| r.apply_server_side_encryption_by_default());
            default.map(|d| d.sse_algorithm().as_str().to_owned())
        }
        Err(e) => {
            assert_eq!(common::code(Err::<(), _>(e)), "ServerSideEncryptionConfigurationNotFoundError", "{bucket}");
            None
        }
    }
}

/// The upload in progress is listed with its parts, as they were answered.
async fn check_upload_listed(c: &Client, fx: &Fixture) {
    let u = &fx.upload_in_progress;
    let uploads = c.list_multipart_uploads().bucket(&u.bucket).send().await.unwrap();
    let listed: Vec<(&str, &str)> =
        uploads.uploads().iter().map(|m| (m.key().unwrap(), m.upload_id().unwrap())).collect();
    assert_eq!(listed, [(u.key.as_str(), u.upload_id.as_str())], "ListMultipartUploads");
    let parts = c.list_parts().bucket(&u.bucket).key(&u.key).upload_id(&u.upload_id).send().await.unwrap();
    let got: Vec<(i32, i64, &str)> =
        parts.parts().iter().map(|p| (p.part_number().unwrap(), p.size().unwrap(), p.e_tag().unwrap())).collect();
    let expected: Vec<(i32, i64, &str)> = u.parts.iter().map(|p| (p.part_number, p.size, p.etag.as_str())).collect();
    assert_eq!(got, expected, "ListParts");
}

/// Completes the upload in progress from the parts the fixture recorded.
async fn complete_upload(c: &Client, fx: &Fixture) {
    let u = &fx.upload_in_progress;
    let parts: Vec<CompletedPart> =
        u.parts.iter().map(|p| CompletedPart::builder().part_number(p.part_number).e_tag(&p.etag).build()).collect();
    let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
    let complete = c.complete_multipart_upload().bucket(&u.bucket).key(&u.key).upload_id(&u.upload_id);
    let out = complete.multipart_upload(done).send().await.unwrap_or_else(|e| panic!("complete: {e:?}"));
    assert_eq!(out.e_tag(), Some(u.etag_when_completed.as_str()), "ETag of the completed upload");
    let uploads = c.list_multipart_uploads().bucket(&u.bucket).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "uploads left after completing: {:?}", uploads.uploads());
}

/// Everything a client sees: objects, absent keys, buckets, listings, encryption.
async fn check_all(c: &Client, fx: &Fixture, live: &[Object], when: &str) {
    for o in live {
        check_object(c, fx, o, when).await;
    }
    check_absent(c, fx, when).await;
    check_buckets(c, fx, live, when).await;
}

/// The fixture's own consistency: its server must pass the tests' start-up check (signed
/// with the tests' credentials), and the multipart object it records is one of its objects.
fn check_fixture(fx: &Fixture) {
    assert_eq!(fx.env["FERRITE_ROOT_USER"], common::USER, "the start-up check signs as common::USER");
    assert_eq!(fx.env["FERRITE_ROOT_PASSWORD"], common::PASSWORD, "the start-up check signs with common::PASSWORD");
    let m = &fx.multipart_object;
    assert!(m.etag.ends_with("-2\""), "a two-part ETag: {}", m.etag);
    assert!(fx.objects.iter().any(|o| o.bucket == m.bucket && o.key == m.key && o.etag == m.etag), "{}", m.key);
}

#[tokio::test]
async fn format1_fixture_is_read_whole() {
    let fx = Fixture::load();
    check_fixture(&fx);
    let (root, drives) = unpack(&fx);
    let server = Server::start_on_with(root, drives, &fx.envs());
    let c = client(&server, &fx);
    check_all(&c, &fx, &fx.objects, "as found").await;
    check_upload_listed(&c, &fx).await;
    complete_upload(&c, &fx).await;
    let mut live = fx.objects.clone();
    live.push(fx.completed_upload());
    check_object(&c, &fx, live.last().unwrap(), "just completed").await;
    // kill -9 and start again (with the same variables: restart() would drop them).
    let server = server.restart_with(&fx.envs());
    let c = client(&server, &fx);
    check_all(&c, &fx, &live, "after a restart").await;
}
