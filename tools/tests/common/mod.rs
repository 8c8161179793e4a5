//! The integration tests' shared support: the real `ferrite` binary started and stopped
//! (server.rs), raw-socket requests and SigV4 signing (raw.rs), aws-sdk-s3 clients and
//! the get/put helpers every suite uses, `ferrite admin` runs, deterministic test data,
//! drive tampering, and the outbound client for the tests' own requests.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use ferrite_tiering::outbound::http::{Client, HttpSettings, Reply, TransportError, Url};

pub mod azurite;
pub mod kms;
pub mod netns;
pub mod raw;
mod server;
pub mod standin;

pub use server::Server;

/// The `ferrite` binary under test: this build's, or the one FERRITE_TEST_BINARY names.
pub fn binary() -> String {
    server::binary()
}

pub const USER: &str = "ferriteadmin";
pub const PASSWORD: &str = "ferriteadmin";

pub fn client_with(endpoint: &str, user: &str, password: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(user, password, None, None, "test"))
        .force_path_style(true)
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder().operation_timeout(Duration::from_secs(60)).build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The S3 error code of a failed SDK call.
pub fn code<E, R>(result: Result<R, aws_sdk_s3::error::SdkError<E>>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match result {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => match e.as_service_error() {
            Some(service) => service.code().unwrap_or("<no code>").to_owned(),
            None => match e.raw_response() {
                Some(raw) => format!("HTTP {}", raw.status().as_u16()),
                None => format!("{e:?}"),
            },
        },
    }
}

pub fn status<E, R>(result: Result<R, aws_sdk_s3::error::SdkError<E>>) -> u16
where
    R: std::fmt::Debug,
{
    match result {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0),
    }
}

/// Swaps a drive for an empty one while the server runs: the directory is renamed aside (one
/// atomic step, so a server writing into it cannot make the wipe fail half-way) and an
/// empty one takes its place. Files the server still holds open go on in the renamed
/// directory, out of the drive's reach, as they would on a pulled disk. The renamed
/// directory stays inside the server's root, which `Server`'s drop removes.
pub fn wipe(drive: &std::path::Path) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let name = drive.file_name().expect("a drive directory has a name").to_string_lossy();
    let aside = drive.with_file_name(format!("{name}.wiped-{nanos}"));
    std::fs::rename(drive, &aside).unwrap();
    // The drive monitor may have found the slot missing and created it meanwhile: fine.
    std::fs::create_dir_all(drive).unwrap();
    let _ = std::fs::remove_dir_all(&aside);
}

/// Every regular file under `dir`, skipping entries that vanish while it looks (the server
/// removes replaced data files in the background).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&path)),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
    out
}

/// An outbound client for the tests' own requests, trusting the system's CAs.
pub fn http() -> Client {
    Client::new(&HttpSettings::default())
}

/// One request of the tests' own (blocking), with [`http`].
pub fn request(method: &str, url: &Url, headers: &[(&str, &str)], body: &[u8]) -> Result<Reply, TransportError> {
    http().request(method, url, headers, body)
}

/// The value of one metric line (its name with labels, as printed) from `/ferrite/metrics`.
pub fn metric(server: &Server, name: &str) -> u64 {
    let url = Url::parse(&format!("{}/ferrite/metrics", server.endpoint)).unwrap();
    let text = request("GET", &url, &[], b"").unwrap().text();
    let prefix = format!("{name} ");
    let value = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
    value.unwrap_or_else(|| panic!("no {name} in\n{text}")).parse().unwrap()
}

/// A normal client PUTs an object large enough for data files (300,000 bytes) and reads
/// it back: the server still serves after whatever a test did to it.
pub async fn assert_serves(c: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    let body = bytes(300_000, key.len() as u64);
    let put = c.put_object().bucket(bucket).key(key).body(aws_sdk_s3::primitives::ByteStream::from(body.clone()));
    put.send().await.unwrap_or_else(|e| panic!("{key}: a normal PUT failed: {e:?}"));
    assert_eq!(get_bytes(c, bucket, key).await, body, "{key}");
}

/// A client that never retries: a request that failed because the server died must be
/// seen as failed.
pub fn client_without_retries(endpoint: &str) -> aws_sdk_s3::Client {
    let config =
        client_with(endpoint, USER, PASSWORD).config().to_builder().retry_config(RetryConfig::disabled()).build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A whole object; panics on any error.
pub async fn get_bytes(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    get_range_bytes(c, bucket, key, None).await
}

/// A range of an object (or all of it); panics on any error.
pub async fn get_range_bytes(c: &aws_sdk_s3::Client, bucket: &str, key: &str, range: Option<String>) -> Vec<u8> {
    let out = c.get_object().bucket(bucket).key(key).set_range(range).send().await.expect("get");
    out.body.collect().await.expect("body").into_bytes().to_vec()
}

/// A whole object, or the S3 error code (never partial bytes: a cut body is an error).
pub async fn get_or_code(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    match c.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out.body.collect().await.map(|b| b.into_bytes().to_vec()).map_err(|e| format!("body: {e}")),
        Err(e) => Err(code(Err::<(), _>(e))),
    }
}

/// A whole object, or None on any error.
pub async fn get_opt(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let out = c.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(out.body.collect().await.ok()?.into_bytes().to_vec())
}

/// Writes an object, or returns the S3 error code.
pub async fn put_or_code(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) -> Result<(), String> {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| code(Err::<(), _>(e)))
}

/// Runs `ferrite admin ARGS --endpoint ENDPOINT`.
pub fn admin(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .arg("admin")
        .args(args)
        .args(["--endpoint", &server.endpoint])
        .output()
        .expect("run ferrite admin")
}

/// The data files of one drive, sorted.
pub fn data_files_of(drive: &Path) -> Vec<PathBuf> {
    let mut out = files_under(&drive.join("data"));
    out.sort();
    out
}

/// The data files of every drive of a server.
pub fn data_files(server: &Server) -> BTreeSet<PathBuf> {
    server.drives.iter().flat_map(|d| data_files_of(d)).collect()
}

/// splitmix64: the seeded generator of the randomized tests (reproducible from the seed a
/// failure prints).
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)] // not an iterator: it never ends
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn between(&mut self, min: u64, max: u64) -> u64 {
        min + self.below(max - min)
    }
}
