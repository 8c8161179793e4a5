//! Azure Key Vault (or Managed HSM) over its REST API (api-version 7.4): a key's newest
//! version, wrapKey and unwrapKey, signed in with an Entra ID token for the vault's OAuth
//! resource (the vault's host without its own name). A refused token is renewed once.

use std::sync::Arc;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::entra::{EntraSettings, Signin, TokenError};
use super::http::{Client, Url};
use super::kms::KmsError;

const API_VERSION: &str = "7.4";

/// base64url as Key Vault writes it (no padding), read with or without padding.
pub const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One vault, signed in to.
pub struct KeyVault {
    vault: Url,
    /// Tokens for the vault's OAuth resource (https://vault.azure.net,
    /// https://managedhsm.azure.net, https://vault.azure.cn, ...).
    signin: Arc<Signin>,
    http: Client,
}

#[derive(Serialize)]
struct WrapRequest<'a> {
    alg: &'a str,
    value: String,
}

#[derive(Deserialize)]
struct WrapAnswer {
    value: Option<String>,
}

#[derive(Deserialize)]
struct KeyAnswer {
    key: Option<KeyBody>,
}

#[derive(Deserialize)]
struct KeyBody {
    kid: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

impl KeyVault {
    /// The vault at `vault_url` (https only: the bearer token opens it), its token audience
    /// `resource` or the one its host implies.
    pub fn new(
        http: &Client,
        vault_url: &str,
        resource: Option<&str>,
        entra: &EntraSettings,
    ) -> Result<KeyVault, String> {
        let vault =
            Url::parse(vault_url.trim_end_matches('/')).map_err(|e| format!("FERRITE_KMS_AZURE_VAULT_URL: {e}"))?;
        if !vault.tls {
            return Err("FERRITE_KMS_AZURE_VAULT_URL must be https://".into());
        }
        let resource = resource.filter(|r| !r.is_empty()).map_or_else(|| resource_of(&vault.host), str::to_owned);
        let signin = Arc::new(Signin::new(entra, &resource, http)?);
        Ok(KeyVault { vault, signin, http: http.clone() })
    }

    /// scheme://host[:port] of the vault.
    pub fn origin(&self) -> String {
        self.vault.origin()
    }

    /// How it signs in ("client secret", "workload identity", "managed identity").
    pub fn signin_kind(&self) -> &'static str {
        self.signin.kind()
    }

    /// The key's current version: the last segment of its kid.
    pub async fn newest_version(&self, key_id: &str) -> Result<String, KmsError> {
        let text = self.call("GET", &format!("/keys/{key_id}"), Vec::new()).await?;
        let answer: Option<KeyAnswer> = serde_json::from_str(&text).ok();
        answer
            .and_then(|a| a.key?.kid)
            .and_then(|kid| kid.rsplit('/').next().map(str::to_owned))
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| KmsError::broken("get key", &text))
    }

    /// Wraps `value` with version `version` of `key_id` using `alg`.
    pub async fn wrap(&self, key_id: &str, version: &str, alg: &str, value: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.wrap_call("wrapkey", "wrapKey", key_id, version, alg, value).await
    }

    /// Unwraps what `wrap` made with the same key version and algorithm.
    pub async fn unwrap(&self, key_id: &str, version: &str, alg: &str, wrapped: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.wrap_call("unwrapkey", "unwrapKey", key_id, version, alg, wrapped).await
    }

    async fn wrap_call(
        &self,
        op: &str,
        name: &str,
        key_id: &str,
        version: &str,
        alg: &str,
        value: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let body = WrapRequest { alg, value: B64URL.encode(value) };
        let body = serde_json::to_vec(&body).map_err(|e| KmsError::broken(name, &e.to_string()))?;
        let text = self.call("POST", &format!("/keys/{key_id}/{version}/{op}"), body).await?;
        let answer: Option<WrapAnswer> = serde_json::from_str(&text).ok();
        answer.and_then(|a| B64URL.decode(a.value?).ok()).ok_or_else(|| KmsError::broken(name, &text))
    }

    /// One Key Vault call: the body of a 2xx answer. A refused token is renewed and the call
    /// made once more.
    async fn call(&self, method: &'static str, path: &str, body: Vec<u8>) -> Result<String, KmsError> {
        let url = self.vault.with_target(format!("{path}?api-version={API_VERSION}"));
        for attempt in 0..2 {
            let token = self.token().await?;
            let headers = vec![
                ("Authorization".into(), format!("Bearer {token}")),
                ("Content-Type".into(), "application/json".into()),
            ];
            let reply =
                self.http.send(method, url.clone(), headers, body.clone()).await.map_err(KmsError::unreachable)?;
            let text = reply.text();
            match reply.status {
                200..=299 => return Ok(text),
                401 if attempt == 0 => self.signin.forget(),
                404 => {
                    let key = path.split('/').nth(2).unwrap_or("");
                    return Err(KmsError::NoSuchKey(format!(
                        "Invalid keyId {key}: Key Vault has no such key or version"
                    )));
                }
                401 | 403 => {
                    // The details (identities, vault names) go to the log, not to the client.
                    let answer: ErrorAnswer = serde_json::from_str(&text).unwrap_or_default();
                    let why: String =
                        answer.error.and_then(|e| e.message).unwrap_or_default().chars().take(300).collect();
                    tracing::warn!("Key Vault refused {method} {path} (HTTP {}): {why}", reply.status);
                    return Err(KmsError::Refused(format!(
                        "Key Vault refused the request (HTTP {}); the server log has the details",
                        reply.status
                    )));
                }
                429 | 500..=599 => return Err(KmsError::unreachable(format!("Key Vault: HTTP {}", reply.status))),
                _ => return Err(KmsError::broken(&format!("{method} {path}"), &text)),
            }
        }
        Err(KmsError::Refused("Key Vault refused a freshly issued token".into()))
    }

    /// A bearer token for the vault (the sign-in runs on the blocking pool).
    async fn token(&self) -> Result<String, KmsError> {
        let signin = self.signin.clone();
        let token = monoio::spawn_blocking(move || signin.token())
            .await
            .map_err(|_| KmsError::unreachable("the sign-in was cancelled"))?;
        token.map_err(|e| match e {
            TokenError::Unreachable(why) => KmsError::unreachable(why),
            TokenError::Broken(why) => KmsError::broken("token", &why),
            TokenError::Refused(status, why) => {
                tracing::warn!("Entra ID refused Ferrite's Key Vault credentials (HTTP {status}): {why}");
                KmsError::Refused(format!(
                    "Entra ID refused Ferrite's Key Vault credentials (HTTP {status}); the server log has the details"
                ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_audiences_follow_the_vault_host() {
        assert_eq!(resource_of("acme.vault.azure.net"), "https://vault.azure.net");
        assert_eq!(resource_of("acme.managedhsm.azure.net"), "https://managedhsm.azure.net");
        assert_eq!(resource_of("acme.vault.azure.cn"), "https://vault.azure.cn");
        assert_eq!(resource_of("127.0.0.1"), "https://vault.azure.net");
        assert_eq!(resource_of("localhost"), "https://vault.azure.net");
    }
}
