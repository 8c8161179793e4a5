//! Key management for server-side encryption: where the keys that seal object keys live.
//! One interface, the backend chosen by configuration. So far the built-in static backend:
//! named 256-bit keys from `FERRITE_KMS_SECRET_KEY` ("name:base64" entries separated by
//! commas, the first one the default), for development and tests. External backends
//! (OpenBao/Vault transit, Azure Key Vault) are the next step of issue 5.

use ferrite_engine::sse::{open_key, seal_key, Key};

use crate::error::{Code, S3Error, S3Result};

pub enum Kms {
    Static(StaticKms),
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
        }
    }

    pub fn default_key_id(&self) -> &str {
        match self {
            Kms::Static(s) => &s.keys[0].0,
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
        }
    }

    /// Opens a data key sealed by `generate` with the same key id and context.
    pub async fn decrypt(&self, key_id: &str, sealed: &[u8], context: &[u8]) -> S3Result<Key> {
        match self {
            Kms::Static(s) => open_key(s.key(key_id)?, sealed, context).map_err(|_| {
                S3Error::new(Code::InternalError, "The object's key does not open: its metadata is damaged")
            }),
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
            let bytes = crate::checksum::b64_decode(b64)
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
