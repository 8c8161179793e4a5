//! Azure Key Vault (or Managed HSM) as the KMS: the vault's calls are
//! `ferrite_tiering::outbound::key_vault`; this module decides what is wrapped and keeps
//! what must not be asked of the vault every time.
//!
//! Settings: the vault URL (https://NAME.vault.azure.net or NAME.managedhsm.azure.net), the
//! default key name, the wrap algorithm (`RSA-OAEP-256`, the default, for RSA keys; `A256KW`
//! for Managed HSM AES keys), the Entra ID sign-in (client secret, AKS workload identity or a
//! managed identity) and, when the vault's host does not imply it, the token audience.
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

use base64::Engine as _;
use ferrite_engine::sse::{open_key, seal_key, Key};
use ferrite_tiering::outbound::entra::EntraSettings;
use ferrite_tiering::outbound::http::Client;
use ferrite_tiering::outbound::key_vault::{KeyVault, B64URL};
use ferrite_tiering::outbound::kms::KmsError;

use super::{key_damaged, DataKey};
use crate::checksum::{b64, b64_decode};
use crate::error::{S3Error, S3Result};

const SEALED_TAG: &str = "azkv1";
const SEED_CACHE_TTL: Duration = Duration::from_secs(300);
const SEED_CACHE_MAX: usize = 10_000;
/// How long the newest key version is trusted before it is asked again (new objects only;
/// `rewrap` always asks).
const VERSION_CACHE_TTL: Duration = Duration::from_secs(60);

/// The wrap algorithms Key Vault and Managed HSM offer for this use.
const WRAP_ALGS: [&str; 3] = ["RSA-OAEP-256", "RSA-OAEP", "A256KW"];

pub struct AzureKms {
    vault: KeyVault,
    default_key: String,
    alg: String,
    versions: Mutex<HashMap<String, (String, Instant)>>,
    seeds: Mutex<HashMap<Vec<u8>, (Key, Instant)>>,
}

impl AzureKms {
    pub fn new(
        http: &Client,
        vault_url: &str,
        default_key: &str,
        alg: &str,
        resource: Option<&str>,
        signin: &EntraSettings,
    ) -> Result<AzureKms, String> {
        let vault = KeyVault::new(http, vault_url, resource, signin)?;
        if !WRAP_ALGS.contains(&alg) {
            return Err(format!("FERRITE_KMS_AZURE_WRAP_ALG {alg}: use RSA-OAEP-256, RSA-OAEP or A256KW"));
        }
        Ok(AzureKms {
            vault,
            default_key: default_key.to_owned(),
            alg: alg.to_owned(),
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
            self.vault.signin_kind()
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
        Ok(self.vault.wrap(key_id, version, &self.alg, &seed.0).await?)
    }

    async fn unwrap(&self, key_id: &str, version: &str, wrapped: &[u8]) -> S3Result<Key> {
        // The unwrapped seed is wiped when this returns; the Key wipes itself when dropped.
        let seed = zeroize::Zeroizing::new(self.vault.unwrap(key_id, version, &self.alg, wrapped).await?);
        if seed.len() != 32 {
            return Err(KmsError::broken("unwrapKey", "not a 256-bit seed").into());
        }
        let mut key = Key([0u8; 32]);
        key.0.copy_from_slice(&seed);
        Ok(key)
    }

    /// The key's current version, asked again after `VERSION_CACHE_TTL` or when `cached` is
    /// false.
    async fn newest_version(&self, key_id: &str, cached: bool) -> S3Result<String> {
        if cached {
            let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((v, _)) = versions.get(key_id).filter(|(_, at)| at.elapsed() < VERSION_CACHE_TTL) {
                return Ok(v.clone());
            }
        }
        let version = self.vault.newest_version(key_id).await?;
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.insert(key_id.to_owned(), (version.clone(), Instant::now()));
        Ok(version)
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
}
