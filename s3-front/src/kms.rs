//! Key management for server-side encryption: where the keys that seal object keys live.
//! One interface, the backend chosen by configuration:
//!
//! - **static**: named 256-bit keys from `FERRITE_KMS_SECRET_KEY` ("name:base64" entries
//!   separated by commas, the first one the default), for development and tests;
//! - **OpenBao / Vault transit**: `FERRITE_KMS_VAULT_ADDR` (http://host:port),
//!   `FERRITE_KMS_VAULT_TOKEN`, `FERRITE_KMS_VAULT_KEY` (the default key name) and
//!   `FERRITE_KMS_VAULT_MOUNT` (default `transit`). Keys must be created with
//!   `derived=true`: the object's name is the derivation context, so a sealed key only
//!   opens for its own object. Vault key versions give rotation without touching data
//!   (`rewrap`).
//!
//! A KMS that cannot be reached gives 503 ServiceUnavailable: never plaintext, never a
//! silently unencrypted write.

use ferrite_engine::sse::{open_key, seal_key, Key};

use crate::checksum::{b64, b64_decode};
use crate::error::{Code, S3Error, S3Result};

pub enum Kms {
    Static(StaticKms),
    Vault(VaultKms),
}

/// An OpenBao / HashiCorp Vault transit engine, over its HTTP API.
pub struct VaultKms {
    /// host:port (plain HTTP; the server is expected on a local or private address).
    addr: String,
    token: String,
    mount: String,
    default_key: String,
}

pub struct StaticKms {
    keys: Vec<(String, Key)>,
}

/// A freshly drawn data key and its sealed form (what is stored with the object).
pub struct DataKey {
    pub key: Key,
    pub sealed: Vec<u8>,
}

impl Kms {
    /// The backend from the environment; None when no KMS is configured.
    pub fn from_env() -> Result<Option<Kms>, String> {
        if let Ok(addr) = std::env::var("FERRITE_KMS_VAULT_ADDR") {
            let addr = addr.strip_prefix("http://").ok_or("FERRITE_KMS_VAULT_ADDR must be http://HOST:PORT")?;
            let token = std::env::var("FERRITE_KMS_VAULT_TOKEN").map_err(|_| "FERRITE_KMS_VAULT_TOKEN is not set")?;
            let default_key = std::env::var("FERRITE_KMS_VAULT_KEY").map_err(|_| "FERRITE_KMS_VAULT_KEY is not set")?;
            let mount = std::env::var("FERRITE_KMS_VAULT_MOUNT").unwrap_or_else(|_| "transit".into());
            let addr = addr.trim_end_matches('/').to_owned();
            return Ok(Some(Kms::Vault(VaultKms { addr, token, mount, default_key })));
        }
        match std::env::var("FERRITE_KMS_SECRET_KEY") {
            Ok(spec) => StaticKms::parse(&spec).map(|k| Some(Kms::Static(k))),
            Err(_) => Ok(None),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Kms::Static(s) => format!(
                "static keys from FERRITE_KMS_SECRET_KEY ({}), default {}",
                s.keys.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
                s.keys[0].0
            ),
            Kms::Vault(v) => {
                format!("OpenBao/Vault transit at http://{}/v1/{}, default key {}", v.addr, v.mount, v.default_key)
            }
        }
    }

    pub fn default_key_id(&self) -> &str {
        match self {
            Kms::Static(s) => &s.keys[0].0,
            Kms::Vault(v) => &v.default_key,
        }
    }

    /// Draws a data key and seals it under `key_id`, bound to `context`.
    pub async fn generate(&self, key_id: &str, context: &[u8]) -> S3Result<DataKey> {
        match self {
            Kms::Static(s) => {
                let kek = s.key(key_id)?;
                let key = Key::random().map_err(S3Error::from)?;
                let sealed = seal_key(kek, &key, context).map_err(S3Error::from)?;
                Ok(DataKey { key, sealed })
            }
            Kms::Vault(v) => {
                // datakey (unlike encrypt) never creates a missing key: an unknown id is refused.
                let body = format!("{{\"context\":\"{}\",\"bits\":256}}", b64(context));
                let reply = v.call(&format!("datakey/plaintext/{key_id}"), body).await?;
                let sealed = json_string(&reply, "ciphertext").ok_or_else(|| kms_broken("datakey", &reply))?;
                Ok(DataKey { key: plaintext_key(&reply, "datakey")?, sealed: sealed.into_bytes() })
            }
        }
    }

    /// Opens a data key sealed by `generate` with the same key id and context.
    pub async fn decrypt(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Key> {
        match self {
            Kms::Static(s) => open_key(s.key(key_id)?, sealed, context).map_err(|_| {
                S3Error::new(Code::InternalError, "The object's key does not open: its metadata is damaged")
            }),
            Kms::Vault(v) => {
                let reply = v.with_ciphertext("decrypt", key_id, sealed, context).await?;
                plaintext_key(&reply, "decrypt")
            }
        }
    }

    /// Re-seals a data key under the newest version of its KMS key where the KMS keeps
    /// versions (Vault's rewrap; the data key never leaves the KMS in the clear). None when
    /// it already is sealed under the newest version, or the backend has no versions.
    pub async fn rewrap(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Option<Vec<u8>>> {
        match self {
            Kms::Static(_) => Ok(None),
            Kms::Vault(v) => {
                let ciphertext = std::str::from_utf8(sealed).map_err(|_| kms_broken("rewrap", "sealed key"))?;
                let reply = v.with_ciphertext("rewrap", key_id, sealed, context).await?;
                let fresh = json_string(&reply, "ciphertext").ok_or_else(|| kms_broken("rewrap", &reply))?;
                // "vault:vN:...": a fresh ciphertext under the same version changes nothing.
                let version = |c: &str| c.split(':').nth(1).map(str::to_owned);
                Ok((version(&fresh) != version(ciphertext)).then(|| fresh.into_bytes()))
            }
        }
    }
}

impl StaticKms {
    fn parse(spec: &str) -> Result<StaticKms, String> {
        let mut keys = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, b64) = entry
                .split_once(':')
                .ok_or_else(|| "FERRITE_KMS_SECRET_KEY: each entry must be NAME:BASE64".to_owned())?;
            let bytes = b64_decode(b64)
                .filter(|b| b.len() == 32)
                .ok_or_else(|| format!("FERRITE_KMS_SECRET_KEY: key {name} must be 32 bytes of base64"))?;
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            keys.push((name.to_owned(), Key(key)));
        }
        if keys.is_empty() {
            return Err("FERRITE_KMS_SECRET_KEY holds no key".into());
        }
        Ok(StaticKms { keys })
    }

    fn key(&self, key_id: &str) -> S3Result<&Key> {
        self.keys
            .iter()
            .find(|(n, _)| n == key_id)
            .map(|(_, k)| k)
            .ok_or_else(|| S3Error::new(Code::KmsNotFound, format!("Invalid keyId {key_id}: the KMS has no such key")))
    }
}

/// The 256-bit key in a transit answer's "plaintext" field (base64).
fn plaintext_key(reply: &str, op: &str) -> S3Result<Key> {
    let plain = json_string(reply, "plaintext")
        .and_then(|p| b64_decode(&p))
        .filter(|p| p.len() == 32)
        .ok_or_else(|| kms_broken(op, reply))?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&plain);
    Ok(Key(key))
}

fn kms_broken(what: &str, detail: &str) -> S3Error {
    let shown: String = detail.chars().take(200).collect();
    eprintln!("ferrite: KMS {what}: unexpected answer: {shown}");
    S3Error::new(Code::InternalError, format!("The KMS answered {what} in a way Ferrite does not understand"))
}

fn kms_unreachable(err: impl std::fmt::Display) -> S3Error {
    eprintln!("ferrite: KMS unreachable: {err}");
    S3Error::new(Code::ServiceUnavailable, "The KMS cannot be reached; no encrypted object can be written or read.")
}

impl VaultKms {
    /// A transit operation on a sealed key (`decrypt`, `rewrap`) with its context.
    async fn with_ciphertext(&self, op: &str, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<String> {
        let ciphertext = std::str::from_utf8(sealed).map_err(|_| kms_broken(op, "sealed key"))?;
        let body = format!("{{\"ciphertext\":\"{ciphertext}\",\"context\":\"{}\"}}", b64(context));
        self.call(&format!("{op}/{key_id}"), body).await
    }

    /// POSTs a JSON body to /v1/{mount}/{path} and returns the response body of a 2xx.
    /// Runs on the blocking pool (one short request; connections are not kept).
    async fn call(&self, path: &str, body: String) -> S3Result<String> {
        let addr = self.addr.clone();
        let token = self.token.clone();
        let target = format!("/v1/{}/{path}", self.mount);
        let job = move || http_post(&addr, &token, &target, &body);
        let (status, reply) = match monoio::spawn_blocking(job).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(kms_unreachable(e)),
            Err(_) => return Err(kms_unreachable("request cancelled")),
        };
        match status {
            200..=299 => Ok(reply),
            400 | 404 if reply.contains("not found") || reply.contains("no existing key") => Err(S3Error::new(
                Code::KmsNotFound,
                format!("Invalid keyId: the KMS has no such key ({})", path.rsplit('/').next().unwrap_or("")),
            )),
            500..=599 => Err(kms_unreachable(format!("HTTP {status}"))),
            _ => Err(S3Error::new(Code::AccessDenied, format!("The KMS refused the request (HTTP {status})"))),
        }
    }
}

/// One HTTP/1.1 POST with `Connection: close`; returns the status and the body.
pub fn http_post(addr: &str, token: &str, target: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let timeout = Some(std::time::Duration::from_secs(5));
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\nX-Vault-Token: {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no HTTP head"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let payload = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    let chunked =
        head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let payload = if chunked { dechunk(payload) } else { payload.to_vec() };
    Ok((status, String::from_utf8_lossy(&payload).into_owned()))
}

/// Decodes a chunked body (bytes, so a chunk boundary inside a UTF-8 character is harmless);
/// stops at the last chunk or at anything malformed.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..eol]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let rest = &body[eol + 2..];
        let Some(n) = size.filter(|n| *n > 0 && rest.len() >= *n) else { break };
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The string value of `"field":"..."` in a flat JSON text (Vault's answers carry no
/// escapes in these fields: base64 and "vault:vN:..." strings).
pub fn json_string(json: &str, field: &str) -> Option<String> {
    let pattern = format!("\"{field}\":");
    let rest = json.split(&pattern).nth(1)?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_answers_and_fields_parse_without_panicking_on_any_bytes() {
        // "é" is two bytes; the chunk boundary falls between them.
        let body = b"3\r\n{\"\xc3\r\n5\r\n\xa9\":1}\r\n0\r\n\r\n";
        assert_eq!(dechunk(body), "{\"é\":1}".as_bytes());
        for cut in 0..body.len() {
            let _ = dechunk(&body[..cut]);
        }
        assert_eq!(dechunk(b"zz\r\nabc"), b"");
        let reply = r#"{"data":{"ciphertext":"vault:v2:abc","plaintext":"AQ=="}}"#;
        assert_eq!(json_string(reply, "ciphertext").as_deref(), Some("vault:v2:abc"));
        assert_eq!(json_string(reply, "missing"), None);
        assert_eq!(json_string(r#"{"plaintext":"unterminated"#, "plaintext"), None);
        let _ = kms_broken("test", &"é".repeat(150));
    }
}
