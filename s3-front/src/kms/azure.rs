//! Azure Key Vault (or Managed HSM) as the KMS, over its REST API (api-version 7.4).
//!
//! Configuration:
//! - `FERRITE_KMS_AZURE_VAULT_URL`: https://NAME.vault.azure.net (or NAME.managedhsm.azure.net);
//! - `FERRITE_KMS_AZURE_KEY`: the default key name;
//! - `FERRITE_KMS_AZURE_WRAP_ALG`: `RSA-OAEP-256` (default; RSA keys) or `A256KW` (Managed
//!   HSM AES keys);
//! - sign-in with Azure's standard variables: a client secret, AKS workload identity or a
//!   managed identity (`ferrite_tiering::entra`); the token audience follows the vault's host
//!   (`FERRITE_KMS_AZURE_RESOURCE` overrides it).
//!
//! Key Vault's wrapKey binds no associated data, so each object gets a random 256-bit seed
//! that Key Vault wraps, and the object's data key is sealed locally under that seed with the
//! bucket, object name and context bound in (`seal_key`). A wrapped seed copied to another
//! object unwraps, but the local seal does not open there. The stored form is
//! `azkv1:{key version}:{wrapped seed, base64url}:{local seal, base64}`.
//!
//! Rotation: after a new key version is created in Key Vault, `rewrap` unwraps each seed with
//! the version it was wrapped under and wraps it with the newest (Key Vault has no rewrap
//! call, so the seed passes through Ferrite's memory); the local seal and the data stay.
//!
//! Unwrapped seeds are cached in memory for 5 minutes (at most 10,000), so a hot object is not
//! one Key Vault round trip per GET. A key version disabled in Key Vault therefore still
//! opens its cached objects for up to 5 minutes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use ferrite_engine::sse::{open_key, seal_key, Key};
use ferrite_tiering::entra::{env, Signin, TokenError};

use super::{key_damaged, kms_broken, kms_unreachable, DataKey};
use crate::checksum::{b64, b64_decode};
use crate::error::{Code, S3Error, S3Result};
use crate::outbound::{self, json_string, Url};

const API_VERSION: &str = "7.4";
const SEALED_TAG: &str = "azkv1";
const SEED_CACHE_TTL: Duration = Duration::from_secs(300);
const SEED_CACHE_MAX: usize = 10_000;
/// How long the newest key version is trusted before it is asked again (new objects only;
/// `rewrap` always asks).
const VERSION_CACHE_TTL: Duration = Duration::from_secs(60);

/// base64url as Key Vault writes it (no padding), read with or without padding.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub struct AzureKms {
    vault: Url,
    default_key: String,
    alg: String,
    /// Tokens for the vault's OAuth resource: its host without the vault's own name
    /// (https://vault.azure.net, https://managedhsm.azure.net, https://vault.azure.cn, ...).
    signin: std::sync::Arc<Signin>,
    versions: Mutex<HashMap<String, (String, Instant)>>,
    seeds: Mutex<HashMap<Vec<u8>, (Key, Instant)>>,
}

impl AzureKms {
    pub fn from_env(vault_url: &str) -> Result<AzureKms, String> {
        let vault =
            Url::parse(vault_url.trim_end_matches('/')).map_err(|e| format!("FERRITE_KMS_AZURE_VAULT_URL: {e}"))?;
        if !vault.tls {
            return Err("FERRITE_KMS_AZURE_VAULT_URL must be https://".into());
        }
        let default_key = env("FERRITE_KMS_AZURE_KEY").ok_or("FERRITE_KMS_AZURE_KEY is not set")?;
        let alg = env("FERRITE_KMS_AZURE_WRAP_ALG").unwrap_or_else(|| "RSA-OAEP-256".into());
        if !["RSA-OAEP-256", "RSA-OAEP", "A256KW"].contains(&alg.as_str()) {
            return Err(format!("FERRITE_KMS_AZURE_WRAP_ALG {alg}: use RSA-OAEP-256, RSA-OAEP or A256KW"));
        }
        let resource = env("FERRITE_KMS_AZURE_RESOURCE").unwrap_or_else(|| resource_of(&vault.host));
        Ok(AzureKms {
            vault,
            default_key,
            alg,
            signin: std::sync::Arc::new(Signin::from_env(&resource)?),
            versions: Mutex::new(HashMap::new()),
            seeds: Mutex::new(HashMap::new()),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "Azure Key Vault at {}, default key {}, {} wrapping, signed in with a {}",
            self.vault.origin(),
            self.default_key,
            self.alg,
            self.signin.kind()
        )
    }

    pub fn default_key(&self) -> &str {
        &self.default_key
    }

    pub async fn generate(&self, key_id: &str, context: &[u8]) -> S3Result<DataKey> {
        let version = self.newest_version(key_id, true).await?;
        let seed = Key::random().map_err(S3Error::from)?;
        let wrapped = self.wrap(key_id, &version, &seed).await?;
        let key = Key::random().map_err(S3Error::from)?;
        let local = seal_key(&seed, &key, context).map_err(S3Error::from)?;
        self.remember(&wrapped, &seed);
        let sealed = format!("{SEALED_TAG}:{version}:{}:{}", B64URL.encode(&wrapped), b64(&local));
        Ok(DataKey { key, sealed: sealed.into_bytes() })
    }

    pub async fn decrypt(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Key> {
        let (version, wrapped, local) = parse_sealed(sealed)?;
        let seed = self.seed(key_id, &version, &wrapped).await?;
        open_key(&seed, &local, context).map_err(|_| key_damaged())
    }

    pub async fn rewrap(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Option<Vec<u8>>> {
        let (version, wrapped, local) = parse_sealed(sealed)?;
        let newest = self.newest_version(key_id, false).await?;
        if newest == version {
            return Ok(None);
        }
        let seed = self.unwrap(key_id, &version, &wrapped).await?;
        // Only a seed that opens this object's seal is carried over.
        open_key(&seed, &local, context).map_err(|_| key_damaged())?;
        let rewrapped = self.wrap(key_id, &newest, &seed).await?;
        self.remember(&rewrapped, &seed);
        Ok(Some(format!("{SEALED_TAG}:{newest}:{}:{}", B64URL.encode(&rewrapped), b64(&local)).into_bytes()))
    }

    async fn seed(&self, key_id: &str, version: &str, wrapped: &[u8]) -> S3Result<Key> {
        let cached = {
            let seeds = self.seeds.lock().unwrap_or_else(|p| p.into_inner());
            seeds.get(wrapped).filter(|(_, at)| at.elapsed() < SEED_CACHE_TTL).map(|(k, _)| k.clone())
        };
        if let Some(seed) = cached {
            return Ok(seed);
        }
        let seed = self.unwrap(key_id, version, wrapped).await?;
        self.remember(wrapped, &seed);
        Ok(seed)
    }

    fn remember(&self, wrapped: &[u8], seed: &Key) {
        let mut seeds = self.seeds.lock().unwrap_or_else(|p| p.into_inner());
        if seeds.len() >= SEED_CACHE_MAX {
            seeds.retain(|_, (_, at)| at.elapsed() < SEED_CACHE_TTL);
            if seeds.len() >= SEED_CACHE_MAX {
                seeds.clear();
            }
        }
        seeds.insert(wrapped.to_vec(), (seed.clone(), Instant::now()));
    }

    async fn wrap(&self, key_id: &str, version: &str, seed: &Key) -> S3Result<Vec<u8>> {
        let body = format!("{{\"alg\":\"{}\",\"value\":\"{}\"}}", self.alg, B64URL.encode(seed.0));
        let reply = self.call("POST", &format!("/keys/{key_id}/{version}/wrapkey"), body).await?;
        json_string(&reply, "value").and_then(|v| B64URL.decode(v).ok()).ok_or_else(|| kms_broken("wrapKey", &reply))
    }

    async fn unwrap(&self, key_id: &str, version: &str, wrapped: &[u8]) -> S3Result<Key> {
        let body = format!("{{\"alg\":\"{}\",\"value\":\"{}\"}}", self.alg, B64URL.encode(wrapped));
        let reply = self.call("POST", &format!("/keys/{key_id}/{version}/unwrapkey"), body).await?;
        let seed = json_string(&reply, "value")
            .and_then(|v| B64URL.decode(v).ok())
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| kms_broken("unwrapKey", &reply))?;
        Ok(Key(seed))
    }

    /// The key's current version: the last segment of its kid.
    async fn newest_version(&self, key_id: &str, cached: bool) -> S3Result<String> {
        if cached {
            let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((v, _)) = versions.get(key_id).filter(|(_, at)| at.elapsed() < VERSION_CACHE_TTL) {
                return Ok(v.clone());
            }
        }
        let reply = self.call("GET", &format!("/keys/{key_id}"), String::new()).await?;
        let version = json_string(&reply, "kid")
            .and_then(|kid| kid.rsplit('/').next().map(str::to_owned))
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| kms_broken("get key", &reply))?;
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.insert(key_id.to_owned(), (version.clone(), Instant::now()));
        Ok(version)
    }

    /// One Key Vault call; a refused token is renewed and the call made once more.
    async fn call(&self, method: &'static str, path: &str, body: String) -> S3Result<String> {
        let url = self.vault.with_target(format!("{path}?api-version={API_VERSION}"));
        for attempt in 0..2 {
            let token = self.token().await?;
            let headers = vec![
                ("Authorization".into(), format!("Bearer {token}")),
                ("Content-Type".into(), "application/json".into()),
            ];
            let reply = outbound::send(method, url.clone(), headers, body.clone().into_bytes())
                .await
                .map_err(kms_unreachable)?;
            let text = reply.text();
            match reply.status {
                200..=299 => return Ok(text),
                401 if attempt == 0 => self.signin.forget(),
                404 => {
                    return Err(S3Error::new(
                        Code::KmsNotFound,
                        format!(
                            "Invalid keyId {}: Key Vault has no such key or version",
                            path.split('/').nth(2).unwrap_or("")
                        ),
                    ))
                }
                401 | 403 => {
                    // The details (identities, vault names) go to the log, not to the client.
                    let why: String = json_string(&text, "message").unwrap_or_default().chars().take(300).collect();
                    eprintln!("ferrite: Key Vault refused {method} {path} (HTTP {}): {why}", reply.status);
                    return Err(S3Error::new(
                        Code::AccessDenied,
                        format!(
                            "Key Vault refused the request (HTTP {}); the server log has the details",
                            reply.status
                        ),
                    ));
                }
                429 | 500..=599 => return Err(kms_unreachable(format!("Key Vault: HTTP {}", reply.status))),
                _ => return Err(kms_broken(&format!("{method} {path}"), &text)),
            }
        }
        Err(S3Error::new(Code::AccessDenied, "Key Vault refused a freshly issued token"))
    }

    /// A bearer token for the vault (the sign-in runs on the blocking pool).
    async fn token(&self) -> S3Result<String> {
        let signin = self.signin.clone();
        let token = monoio::spawn_blocking(move || signin.token())
            .await
            .map_err(|_| kms_unreachable("the sign-in was cancelled"))?;
        token.map_err(|e| match e {
            TokenError::Unreachable(why) => kms_unreachable(why),
            TokenError::Broken(why) => kms_broken("token", &why),
            TokenError::Refused(status, why) => {
                eprintln!("ferrite: Entra ID refused Ferrite's Key Vault credentials (HTTP {status}): {why}");
                S3Error::new(
                    Code::AccessDenied,
                    format!("Entra ID refused Ferrite's Key Vault credentials (HTTP {status}); the server log has the details"),
                )
            }
        })
    }
}

/// The token audience for a vault host: NAME.vault.azure.net -> https://vault.azure.net (and
/// likewise for Managed HSM and the sovereign clouds). An address without such a name (a
/// test server) gets the public cloud's.
fn resource_of(host: &str) -> String {
    match host.split_once('.') {
        Some((_, domain)) if domain.contains('.') && host.parse::<std::net::IpAddr>().is_err() => {
            format!("https://{domain}")
        }
        _ => "https://vault.azure.net".into(),
    }
}

/// (key version, wrapped seed, local seal) from the stored form.
fn parse_sealed(sealed: &[u8]) -> S3Result<(String, Vec<u8>, Vec<u8>)> {
    let text = std::str::from_utf8(sealed).map_err(|_| key_damaged())?;
    let mut parts = text.split(':');
    let (Some(SEALED_TAG), Some(version), Some(wrapped), Some(local), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(key_damaged());
    };
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(key_damaged());
    }
    let wrapped = B64URL.decode(wrapped).map_err(|_| key_damaged())?;
    let local = b64_decode(local).ok_or_else(key_damaged)?;
    Ok((version.to_owned(), wrapped, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_parse_only_in_their_own_shape() {
        let good = format!("azkv1:0123abcd:{}:{}", B64URL.encode([1u8; 256]), b64(&[2u8; 60]));
        let (version, wrapped, local) = parse_sealed(good.as_bytes()).unwrap();
        assert_eq!((version.as_str(), wrapped.len(), local.len()), ("0123abcd", 256, 60));
        for bad in [
            "vault:v1:abc",
            "azkv1:v1:AAAA",
            "azkv1::AAAA:AAAA",
            "azkv1:../x:AAAA:AAAA",
            "azkv1:v1:AAAA:AAAA:extra",
            "azkv1:v1:@@@@:AAAA",
        ] {
            assert!(parse_sealed(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_sealed(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn token_audiences_follow_the_vault_host() {
        assert_eq!(resource_of("acme.vault.azure.net"), "https://vault.azure.net");
        assert_eq!(resource_of("acme.managedhsm.azure.net"), "https://managedhsm.azure.net");
        assert_eq!(resource_of("acme.vault.azure.cn"), "https://vault.azure.cn");
        assert_eq!(resource_of("127.0.0.1"), "https://vault.azure.net");
        assert_eq!(resource_of("localhost"), "https://vault.azure.net");
    }
}
