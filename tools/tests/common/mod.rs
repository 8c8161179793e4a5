//! Starts the real `ferrite` binary on fresh drive directories, builds aws-sdk-s3 clients and
//! signs raw request heads (SigV4) for tests that speak HTTP on a socket.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use ferrite_s3::sigv4::{self, sha256_hex, signing_key, Scope};
use ferrite_tiering::outbound::http::{Client, HttpSettings, Reply, TransportError, Url};

pub mod azurite;
pub mod kms;
pub mod standin;

pub const USER: &str = "ferriteadmin";
pub const PASSWORD: &str = "ferriteadmin";

pub struct Server {
    pub child: Child,
    pub endpoint: String,
    pub addr: String,
    pub root: PathBuf,
    pub drives: Vec<PathBuf>,
    /// What the server printed before it listened (drives, layout, how the index was built).
    pub startup: Vec<String>,
}

fn unique_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("ferrite-it-{}-{nanos}", std::process::id()))
}

impl Server {
    pub fn start(drive_count: usize) -> Server {
        Self::start_with(drive_count, &[], &[])
    }

    /// Starts with extra command-line arguments and environment variables.
    pub fn start_with(drive_count: usize, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let root = unique_dir();
        let drives: Vec<PathBuf> = (1..=drive_count).map(|i| root.join(format!("d{i}"))).collect();
        Self::launch(root, drives, args, envs)
    }

    pub fn start_on(root: PathBuf, drives: Vec<PathBuf>) -> Server {
        Self::launch(root, drives, &[], &[])
    }

    fn launch(root: PathBuf, drives: Vec<PathBuf>, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .arg("server")
            .arg("--address")
            .arg("127.0.0.1:0")
            .args(args)
            .args(&drives)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ferrite");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut startup = Vec::new();
        let addr = loop {
            let line = lines.next().expect("ferrite exited before listening").expect("read stdout");
            if let Some(rest) = line.strip_prefix("ferrite: listening on http://") {
                break rest.trim().to_owned();
            }
            startup.push(line);
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, endpoint: format!("http://{addr}"), addr, root, drives, startup }
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        client_with(&self.endpoint, USER, PASSWORD)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server (SIGKILL) and starts it again on the same drives.
    pub fn restart(self) -> Server {
        self.restart_with(&[])
    }

    /// Kills the server (SIGKILL) and starts it again on the same drives with `envs`.
    pub fn restart_with(mut self, envs: &[(&str, &str)]) -> Server {
        self.kill();
        let root = std::mem::take(&mut self.root);
        let drives = std::mem::take(&mut self.drives);
        std::mem::forget(self);
        Server::launch(root, drives, &[], envs)
    }

    /// The start-up line that says how the index was built.
    pub fn index_note(&self) -> &str {
        self.startup.iter().find(|l| l.contains("index")).map(String::as_str).unwrap_or("")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if !self.root.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

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

/// Signs a request head in its Authorization header: `headers` (lower-case names) are
/// signed along with host, x-amz-content-sha256 and x-amz-date. Returns the head and the
/// scope and seed signature (for aws-chunked chunk signatures).
pub fn sign_head(
    host: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, String)],
    payload_hash: &str,
) -> (String, Scope, String) {
    let (date, amz_date) = now_dates();
    let scope = Scope {
        access_key: USER.into(),
        date: date.clone(),
        region: "us-east-1".into(),
        amz_date: amz_date.clone(),
        key: signing_key(PASSWORD, &date, "us-east-1"),
    };
    let mut all: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    all.push(("host".into(), host.into()));
    all.push(("x-amz-content-sha256".into(), payload_hash.into()));
    all.push(("x-amz-date".into(), amz_date.clone()));
    all.sort();
    let canonical_headers: String = all.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let canonical = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}", scope.scope_string(), sha256_hex(canonical.as_bytes()));
    let signature = hmac_hex(&scope.key, to_sign.as_bytes());
    let mut head = format!("{method} {path}{}{query} HTTP/1.1\r\n", if query.is_empty() { "" } else { "?" });
    for (n, v) in &all {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Authorization: AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}\r\n\r\n",
        USER,
        scope.scope_string()
    ));
    (head, scope, signature)
}

/// Today's credential date and the current X-Amz-Date.
pub fn now_dates() -> (String, String) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let amz_date = sigv4::format_amz_date(now);
    (amz_date[..8].to_owned(), amz_date)
}

pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    sigv4::hex(&mac.finalize().into_bytes())
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
