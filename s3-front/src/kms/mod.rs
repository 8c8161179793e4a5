//! Key management for server-side encryption: where the keys that seal object keys live.
//! One interface, the backend chosen by the settings (the binary reads them from
//! `FERRITE_KMS_*`):
//!
//! - **static**: named 256-bit keys ("name:base64" entries separated by commas, the first one
//!   the default), for development and tests;
//! - **OpenBao / Vault transit** (`ferrite_tiering::outbound::vault`): keys created with
//!   `derived=true`; the object's name is the derivation context, so a sealed key only opens
//!   for its own object. Vault key versions give rotation without touching data (`rewrap`).
//! - **Azure Key Vault** (`azure.rs` over `ferrite_tiering::outbound::key_vault`):
//!   wrapKey/unwrapKey with an RSA or (Managed HSM) AES key, signed in with a client secret,
//!   AKS workload identity or a managed identity.
//!
//! Every call is counted in the metrics by its outcome. A KMS that cannot be reached gives
//! 503 ServiceUnavailable: never plaintext, never a silently unencrypted write.

mod azure;

use ferrite_engine::sse::{open_key, seal_key, Key};
use ferrite_tiering::outbound::entra::EntraSettings;
use ferrite_tiering::outbound::http::Client;
use ferrite_tiering::outbound::kms::KmsError;
use ferrite_tiering::outbound::vault::Transit;

use crate::checksum::b64_decode;
use crate::error::{Code, S3Error, S3Result};
use crate::metrics::{self, KmsOp};

pub use azure::AzureKms;

/// Which KMS to use.
#[derive(Clone, Debug, Default)]
pub enum KmsSettings {
    /// None: SSE-S3 and SSE-KMS are refused, SSE-C works.
    #[default]
    None,
    /// Named keys: "NAME:BASE64[,NAME:BASE64...]", the first the default.
    Static { keys: String },
    /// An OpenBao/Vault transit mount.
    Vault { addr: String, token: String, default_key: String, mount: String },
    /// Azure Key Vault or Managed HSM.
    Azure {
        vault_url: String,
        default_key: String,
        /// RSA-OAEP-256 (RSA keys), RSA-OAEP, or A256KW (Managed HSM AES keys).
        wrap_alg: String,
        /// The token audience, when the vault's host does not imply it.
        resource: Option<String>,
        signin: EntraSettings,
    },
}

pub enum Kms {
    Static(StaticKms),
    Vault(VaultKms),
    Azure(Box<AzureKms>),
}

/// An OpenBao / HashiCorp Vault transit engine, and the key used when a request names none.
pub struct VaultKms {
    transit: Transit,
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
    /// The backend `settings` choose, its calls made through `http`; None when no KMS is
    /// configured.
    pub fn new(settings: &KmsSettings, http: &Client) -> Result<Option<Kms>, String> {
        Ok(Some(match settings {
            KmsSettings::None => return Ok(None),
            KmsSettings::Static { keys } => Kms::Static(StaticKms::parse(keys)?),
            KmsSettings::Vault { addr, token, default_key, mount } => Kms::Vault(VaultKms {
                transit: Transit::new(http, addr, token.clone(), mount.clone())?,
                default_key: default_key.clone(),
            }),
            KmsSettings::Azure { vault_url, default_key, wrap_alg, resource, signin } => Kms::Azure(Box::new(
                AzureKms::new(http, vault_url, default_key, wrap_alg, resource.as_deref(), signin)?,
            )),
        }))
    }

    pub fn describe(&self) -> String {
        match self {
            Kms::Static(s) => format!(
                "static keys from FERRITE_KMS_SECRET_KEY ({}), default {}",
                s.keys.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
                s.keys[0].0
            ),
            Kms::Vault(v) => {
                format!("OpenBao/Vault transit at {}, default key {}", v.transit.describe(), v.default_key)
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
                let (key, sealed) = v.transit.datakey(key_id, context).await?;
                Ok(DataKey { key, sealed: sealed.into_bytes() })
            }
            Kms::Azure(a) => a.generate(key_id, context).await,
        }
    }

    async fn decrypt_uncounted(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Key> {
        match self {
            Kms::Static(s) => open_key(s.key(key_id)?, sealed, context).map_err(|_| key_damaged()),
            Kms::Vault(v) => Ok(v.transit.decrypt(key_id, transit_ciphertext(sealed, "decrypt")?, context).await?),
            Kms::Azure(a) => a.decrypt(key_id, sealed, context).await,
        }
    }

    /// Vault's rewrap never shows the data key outside the KMS.
    async fn rewrap_uncounted(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Option<Vec<u8>>> {
        match self {
            Kms::Static(_) => Ok(None),
            Kms::Vault(v) => {
                let ciphertext = transit_ciphertext(sealed, "rewrap")?;
                let fresh = v.transit.rewrap(key_id, ciphertext, context).await?;
                // "vault:vN:...": a fresh ciphertext under the same version changes nothing.
                let version = |c: &str| c.split(':').nth(1).map(str::to_owned);
                Ok((version(&fresh) != version(ciphertext)).then(|| fresh.into_bytes()))
            }
            Kms::Azure(a) => a.rewrap(key_id, sealed, context).await,
        }
    }
}

/// A transit ciphertext ("vault:vN:..."), as stored.
fn transit_ciphertext<'a>(sealed: &'a [u8], op: &str) -> S3Result<&'a str> {
    std::str::from_utf8(sealed).map_err(|_| KmsError::broken(op, "sealed key").into())
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

/// A sealed key that the right KMS key does not open: the stored metadata was altered.
fn key_damaged() -> S3Error {
    S3Error::new(Code::InternalError, "The object's key does not open: its metadata is damaged")
}
