//! Key management for server-side encryption: where the keys that seal object keys live.
//! One interface, the backend chosen by configuration:
//!
//! - **static**: named 256-bit keys from `FERRITE_KMS_SECRET_KEY` ("name:base64" entries
//!   separated by commas, the first one the default), for development and tests;
//! - **OpenBao / Vault transit**: `FERRITE_KMS_VAULT_ADDR` (http:// or https://host:port),
//!   `FERRITE_KMS_VAULT_TOKEN`, `FERRITE_KMS_VAULT_KEY` (the default key name) and
//!   `FERRITE_KMS_VAULT_MOUNT` (default `transit`). Keys must be created with
//!   `derived=true`: the object's name is the derivation context, so a sealed key only
//!   opens for its own object. Vault key versions give rotation without touching data
//!   (`rewrap`).
//! - **Azure Key Vault** (`azure.rs`): `FERRITE_KMS_AZURE_VAULT_URL`, wrapKey/unwrapKey with
//!   an RSA or (Managed HSM) AES key, signed in with a client secret, AKS workload identity
//!   or a managed identity.
//!
//! A KMS that cannot be reached gives 503 ServiceUnavailable: never plaintext, never a
//! silently unencrypted write.

mod azure;

use ferrite_engine::sse::{open_key, seal_key, Key};

use crate::checksum::{b64, b64_decode};
use crate::error::{Code, S3Error, S3Result};
use crate::metrics::{self, KmsOp};
use crate::outbound::{self, json_string, Url};

pub use azure::AzureKms;

pub enum Kms {
    Static(StaticKms),
    Vault(VaultKms),
    Azure(Box<AzureKms>),
}

/// An OpenBao / HashiCorp Vault transit engine, over its HTTP API.
pub struct VaultKms {
    addr: Url,
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
        if let Ok(url) = std::env::var("FERRITE_KMS_AZURE_VAULT_URL") {
            return AzureKms::from_env(&url).map(|k| Some(Kms::Azure(Box::new(k))));
        }
        if let Ok(addr) = std::env::var("FERRITE_KMS_VAULT_ADDR") {
            let addr = Url::parse(addr.trim_end_matches('/')).map_err(|e| format!("FERRITE_KMS_VAULT_ADDR: {e}"))?;
            let token = std::env::var("FERRITE_KMS_VAULT_TOKEN").map_err(|_| "FERRITE_KMS_VAULT_TOKEN is not set")?;
            let default_key = std::env::var("FERRITE_KMS_VAULT_KEY").map_err(|_| "FERRITE_KMS_VAULT_KEY is not set")?;
            let mount = std::env::var("FERRITE_KMS_VAULT_MOUNT").unwrap_or_else(|_| "transit".into());
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
                format!("OpenBao/Vault transit at {}/v1/{}, default key {}", v.addr.origin(), v.mount, v.default_key)
            }
            Kms::Azure(a) => a.describe(),
        }
    }

    /// The backend's name in metrics.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Kms::Static(_) => "static",
            Kms::Vault(_) => "vault",
            Kms::Azure(_) => "azure-key-vault",
        }
    }

    pub fn default_key_id(&self) -> &str {
        match self {
            Kms::Static(s) => &s.keys[0].0,
            Kms::Vault(v) => &v.default_key,
            Kms::Azure(a) => a.default_key(),
        }
    }

    /// Draws a data key and seals it under `key_id`, bound to `context`.
    pub async fn generate(&self, key_id: &str, context: &[u8]) -> S3Result<DataKey> {
        let result = self.generate_uncounted(key_id, context).await;
        metrics::kms(KmsOp::Generate, &result);
        result
    }

    /// Opens a data key sealed by `generate` with the same key id and context.
    pub async fn decrypt(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Key> {
        let result = self.decrypt_uncounted(key_id, sealed, context).await;
        metrics::kms(KmsOp::Decrypt, &result);
        result
    }

    /// Re-seals a data key under the newest version of its KMS key where the KMS keeps
    /// versions, without the data being rewritten. None when it already is sealed under the
    /// newest version, or the backend has no versions.
    pub async fn rewrap(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Option<Vec<u8>>> {
        let result = self.rewrap_uncounted(key_id, sealed, context).await;
        metrics::kms(KmsOp::Rewrap, &result);
        result
    }

    async fn generate_uncounted(&self, key_id: &str, context: &[u8]) -> S3Result<DataKey> {
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
            Kms::Azure(a) => a.generate(key_id, context).await,
        }
    }

    async fn decrypt_uncounted(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Key> {
        match self {
            Kms::Static(s) => open_key(s.key(key_id)?, sealed, context).map_err(|_| key_damaged()),
            Kms::Vault(v) => {
                let reply = v.with_ciphertext("decrypt", key_id, sealed, context).await?;
                plaintext_key(&reply, "decrypt")
            }
            Kms::Azure(a) => a.decrypt(key_id, sealed, context).await,
        }
    }

    /// Vault's rewrap never shows the data key outside the KMS.
    async fn rewrap_uncounted(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Option<Vec<u8>>> {
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
            Kms::Azure(a) => a.rewrap(key_id, sealed, context).await,
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

/// A sealed key that the right KMS key does not open: the stored metadata was altered.
fn key_damaged() -> S3Error {
    S3Error::new(Code::InternalError, "The object's key does not open: its metadata is damaged")
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
    async fn call(&self, path: &str, body: String) -> S3Result<String> {
        let url = self.addr.with_target(format!("/v1/{}/{path}", self.mount));
        let headers =
            vec![("X-Vault-Token".into(), self.token.clone()), ("Content-Type".into(), "application/json".into())];
        let reply = outbound::send("POST", url, headers, body.into_bytes()).await.map_err(kms_unreachable)?;
        let (status, reply) = (reply.status, reply.text());
        match status {
            200..=299 => Ok(reply),
            400 | 404 if reply.contains("not found") || reply.contains("no existing key") => Err(S3Error::new(
                Code::KmsNotFound,
                format!("Invalid keyId: the KMS has no such key ({})", path.rsplit('/').next().unwrap_or("")),
            )),
            429 | 500..=599 => Err(kms_unreachable(format!("HTTP {status}"))),
            _ => Err(S3Error::new(Code::AccessDenied, format!("The KMS refused the request (HTTP {status})"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexpected_answers_are_shown_cut_at_a_character_boundary() {
        let _ = kms_broken("test", &"é".repeat(150));
    }
}
