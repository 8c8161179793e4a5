//! SSE with Azure Key Vault as the KMS.
//!
//! **This test talks to a stand-in, not to Azure.** No Key Vault emulator runs on this
//! machine, so `FakeKeyVault` below implements the documented REST calls Ferrite makes, over
//! HTTPS with a certificate made by the openssl CLI:
//! - Entra ID's client-credentials token endpoint (`POST /{tenant}/oauth2/v2.0/token`), which
//!   checks the client secret and the scope;
//! - Key Vault 7.4 `GET /keys/{name}`, `POST /keys/{name}/{version}/wrapkey` and `.../unwrapkey`
//!   with real RSA-OAEP-256 (aws-lc-rs), bearer tokens, key versions and disabled versions, and
//!   Key Vault's error shapes (401, 403 Forbidden, 404 KeyNotFound).
//!
//! What it shows: keys wrapped by the vault round-trip; rotation with `ferrite admin kms-rewrap`
//! moves every object to the new key version without rewriting data (the old version is then
//! disabled and everything still reads); a vault that cannot be reached gives 503 and the
//! KMS-unavailable metric counts it; a wrong client secret gives a clear refusal.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::kms::{self, read, write_encrypted_pair};
use common::request;
use common::standin::{self, Req};
use common::{code, Server};
use ferrite_tiering::outbound::http::Url;

const TENANT: &str = "ferrite-tenant";
const CLIENT_ID: &str = "ferrite-app";
const SECRET: &str = "s3cret~with.symbols";

struct KeyVersion {
    id: String,
    key: PrivateDecryptingKey,
    enabled: bool,
}

#[derive(Default)]
struct Vault {
    keys: HashMap<String, Vec<KeyVersion>>,
    tokens: Vec<String>,
}

struct FakeKeyVault {
    origin: String,
    ca_file: PathBuf,
    state: Arc<Mutex<Vault>>,
    /// While set, connections are closed unanswered: the vault cannot be reached.
    down: Arc<AtomicBool>,
    unwraps: Arc<AtomicUsize>,
}

impl FakeKeyVault {
    fn start(dir: &Path) -> FakeKeyVault {
        let (cert, key) = standin::tls_cert(dir);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let kv = FakeKeyVault {
            origin: origin.clone(),
            ca_file: cert.clone(),
            state: Arc::default(),
            down: Arc::default(),
            unwraps: Arc::default(),
        };
        kv.rotate("ferrite");
        let (state, unwraps) = (kv.state.clone(), kv.unwraps.clone());
        let tls = Some(standin::tls_config(&cert, &key));
        standin::serve(listener, tls, kv.down.clone(), move |req| answer(&state, &unwraps, &origin, req));
        kv
    }

    /// Adds a new version of `name` (creating the key), as `az keyvault key rotate` does.
    fn rotate(&self, name: &str) -> String {
        let mut state = self.state.lock().unwrap();
        let versions = state.keys.entry(name.to_owned()).or_default();
        let id = format!("{:032x}", versions.len() as u128 * 0x1f1f_0000_0000 + 0xabc);
        versions.push(KeyVersion {
            id: id.clone(),
            key: PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap(),
            enabled: true,
        });
        id
    }

    fn disable(&self, name: &str, version: &str) {
        let mut state = self.state.lock().unwrap();
        state.keys.get_mut(name).unwrap().iter_mut().find(|v| v.id == version).unwrap().enabled = false;
    }
}

fn kv_error(status: u16, code: &str, message: &str) -> (u16, String) {
    (status, format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{message}\"}}}}"))
}

/// Key Vault's and Entra ID's answers, as documented.
fn answer(state: &Mutex<Vault>, unwraps: &AtomicUsize, origin: &str, req: &Req) -> (u16, String) {
    let mut state = state.lock().unwrap();
    let (method, target, headers) = (req.method.as_str(), req.target.as_str(), &req.headers);
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == format!("/{TENANT}/oauth2/v2.0/token") {
        let form: HashMap<&str, String> = body
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned()))
            .collect();
        let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
            && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && form.get("scope").map(String::as_str) == Some("https://vault.azure.net/.default");
        if !ok || form.get("client_secret").map(String::as_str) != Some(SECRET) {
            return (
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#
                    .into(),
            );
        }
        let token = format!("token-{}", state.tokens.len());
        state.tokens.push(token.clone());
        return (200, format!("{{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"{token}\"}}"));
    }
    if query != "api-version=7.4" {
        return kv_error(400, "BadParameter", "The api-version query parameter is missing or unsupported.");
    }
    let bearer = headers.iter().find(|(n, _)| n == "authorization").and_then(|(_, v)| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| state.tokens.iter().any(|issued| issued == t)) {
        return kv_error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (name, version, op) = match (method, parts.as_slice()) {
        ("GET", ["keys", name]) => (*name, None, "get"),
        ("POST", ["keys", name, version, op]) => (*name, Some(*version), *op),
        _ => return kv_error(400, "BadParameter", "Unknown request."),
    };
    let Some(versions) = state.keys.get(name) else {
        return kv_error(404, "KeyNotFound", "A key with (name/id) was not found in this key vault.");
    };
    let kid = |v: &KeyVersion| format!("{origin}/keys/{name}/{}", v.id);
    if op == "get" {
        let newest = versions.last().unwrap();
        return (200, format!("{{\"key\":{{\"kid\":\"{}\",\"kty\":\"RSA\",\"key_ops\":[\"wrapKey\",\"unwrapKey\"]}},\"attributes\":{{\"enabled\":true}}}}", kid(newest)));
    }
    let Some(key) = versions.iter().find(|v| Some(v.id.as_str()) == version) else {
        return kv_error(404, "KeyNotFound", "A key with (name/id) was not found in this key vault.");
    };
    if !key.enabled {
        return kv_error(403, "Forbidden", "Operation is not allowed on a disabled key.");
    }
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let field = |name: &str| json.get(name).and_then(serde_json::Value::as_str);
    if field("alg") != Some("RSA-OAEP-256") {
        return kv_error(400, "BadParameter", "Unsupported alg.");
    }
    let Some(value) = field("value").and_then(|v| URL_SAFE_NO_PAD.decode(v).ok()) else {
        return kv_error(400, "BadParameter", "value is not base64url.");
    };
    let out = match op {
        "wrapkey" => {
            let public = OaepPublicEncryptingKey::new(key.key.public_key()).unwrap();
            let mut out = vec![0u8; public.ciphertext_size()];
            public.encrypt(&OAEP_SHA256_MGF1SHA256, &value, &mut out, None).unwrap().to_vec()
        }
        "unwrapkey" => {
            unwraps.fetch_add(1, Ordering::SeqCst);
            let private = OaepPrivateDecryptingKey::new(key.key.clone()).unwrap();
            let mut out = vec![0u8; private.min_output_size()];
            match private.decrypt(&OAEP_SHA256_MGF1SHA256, &value, &mut out, None) {
                Ok(plain) => plain.to_vec(),
                Err(_) => return kv_error(400, "BadParameter", "The parameter is incorrect."),
            }
        }
        _ => return kv_error(400, "BadParameter", "Unknown operation."),
    };
    (200, format!("{{\"kid\":\"{}\",\"value\":\"{}\"}}", kid(key), URL_SAFE_NO_PAD.encode(out)))
}

fn metrics(server: &Server) -> String {
    let url = Url::parse(&format!("{}/ferrite/metrics", server.endpoint)).unwrap();
    let reply = request("GET", &url, &[], b"").unwrap();
    assert_eq!(reply.status, 200);
    reply.text()
}

fn metric(text: &str, op: &str, outcome: &str) -> u64 {
    let name = format!("ferrite_kms_requests_total{{backend=\"azure-key-vault\",op=\"{op}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name))
        .map_or_else(|| panic!("no {name} in\n{text}"), |v| v.parse().unwrap())
}

async fn put(c: &aws_sdk_s3::Client, key: &str, sse: ServerSideEncryption, data: &[u8]) -> Result<(), String> {
    match c
        .put_object()
        .bucket("azure")
        .key(key)
        .server_side_encryption(sse)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(code(Err::<(), _>(e))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_key_vault_wraps_keys_rotates_without_rewriting_and_fails_closed() {
    let dir = std::env::temp_dir().join(format!("ferrite-kv-{}", std::process::id()));
    let kv = FakeKeyVault::start(&dir);
    let ca = kv.ca_file.to_string_lossy().into_owned();
    let envs = [
        ("FERRITE_KMS_AZURE_VAULT_URL", kv.origin.as_str()),
        ("FERRITE_KMS_AZURE_KEY", "ferrite"),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
        ("AZURE_AUTHORITY_HOST", kv.origin.as_str()),
        ("FERRITE_CA_FILE", ca.as_str()),
        ("FERRITE_DRIVE_CHECK_SECS", "0"),
    ];
    let server = Server::start_with(4, &[], &envs);
    assert!(server.startup().iter().any(|l| l.contains("Azure Key Vault")), "{:?}", server.startup());
    let c = server.client();
    let (small, large) = write_encrypted_pair(&c, "azure", "ferrite").await;
    // Seeds wrapped in this process are cached: these reads asked the vault nothing.
    assert_eq!(kv.unwraps.load(Ordering::SeqCst), 0);
    for drive in &server.drives {
        for file in common::files_under(drive) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(!bytes.windows(64).any(|w| w == &large[1000..1064]), "plaintext in {}", file.display());
        }
    }
    let m = metrics(&server);
    assert_eq!(metric(&m, "generate", "ok"), 2, "{m}");
    assert_eq!(metric(&m, "generate", "refused"), 1, "{m}");

    // A fresh process unwraps through the vault.
    let server = server.restart_with(&envs);
    let c = server.client();
    assert_eq!(read(&c, "azure", "kms").await.unwrap(), large);
    assert_eq!(kv.unwraps.load(Ordering::SeqCst), 1);

    // Rotate in the vault, re-wrap every seed under the new version, disable the old one.
    let first_version = kv.state.lock().unwrap().keys["ferrite"][0].id.clone();
    kv.rotate("ferrite");
    let first = kms::rewrap(&server);
    assert!(first.contains("\"encrypted\":2,\"rewrapped\":2,\"failed\":0"), "{first}");
    let again = kms::rewrap(&server);
    assert!(again.contains("\"rewrapped\":0"), "a second pass finds nothing to do: {again}");
    kv.disable("ferrite", &first_version);
    let server = server.restart_with(&envs);
    let c = server.client();
    assert_eq!(read(&c, "azure", "s3").await.unwrap(), small, "readable with only the new key version");
    assert_eq!(read(&c, "azure", "kms").await.unwrap(), large);

    // The vault cannot be reached: a fresh process (nothing cached) refuses encrypted reads
    // and writes with 503, counts them, writes nothing in the clear; plain objects work.
    kv.down.store(true, Ordering::SeqCst);
    let server = server.restart_with(&envs);
    let c = server.client();
    assert_eq!(read(&c, "azure", "kms").await, Err("ServiceUnavailable".into()));
    assert_eq!(put(&c, "refused", ServerSideEncryption::Aes256, &[7u8; 100]).await, Err("ServiceUnavailable".into()));
    assert_eq!(read(&c, "azure", "refused").await, Err("NoSuchKey".into()));
    c.put_object().bucket("azure").key("plain").body(ByteStream::from(vec![9u8; 10])).send().await.unwrap();
    // (The SDK retries a 503, so each refused call may count up to three times.)
    let m = metrics(&server);
    assert!(metric(&m, "decrypt", "unreachable") >= 1, "{m}");
    assert!(metric(&m, "generate", "unreachable") >= 1, "{m}");
    assert_eq!(metric(&m, "decrypt", "ok") + metric(&m, "generate", "ok"), 0, "{m}");
    kv.down.store(false, Ordering::SeqCst);
    assert_eq!(read(&c, "azure", "kms").await.unwrap(), large, "readable again once the vault is back");

    // A wrong client secret is refused with a clear error, not a 503.
    let mut wrong = envs;
    wrong[4] = ("AZURE_CLIENT_SECRET", "wrong");
    let server = server.restart_with(&wrong);
    let c = server.client();
    assert_eq!(read(&c, "azure", "kms").await, Err("AccessDenied".into()));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
