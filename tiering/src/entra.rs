//! Bearer tokens from Microsoft Entra ID for one resource (Key Vault, Azure Storage), with
//! Azure's standard variables, the first that applies:
//! - `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`: a client secret;
//! - `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_FEDERATED_TOKEN_FILE`: AKS workload
//!   identity (the kubelet sets these in the pod and rotates the file);
//! - otherwise the managed identity of the node or pod, through the instance metadata service
//!   (`AZURE_CLIENT_ID` picks a user-assigned one).
//!
//! `AZURE_AUTHORITY_HOST` (default https://login.microsoftonline.com) and
//! `FERRITE_AZURE_IMDS_URL` (formerly `FERRITE_KMS_AZURE_IMDS_URL`, still read) move the token
//! endpoints (sovereign clouds, tests).
//!
//! Calls are blocking (see `outbound`). A token is cached until 5 minutes before it expires;
//! `forget` drops it after the service refused it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use percent_encoding::utf8_percent_encode;

use crate::azure::ESCAPED;
use crate::outbound::{json_string, json_u64, request, Url};

/// A token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

fn form(value: &str) -> String {
    utf8_percent_encode(value, ESCAPED).to_string()
}

enum Credential {
    Secret { authority: Url, tenant: String, client_id: String, secret: String },
    Federated { authority: Url, tenant: String, client_id: String, token_file: String },
    Managed { imds: Url, client_id: Option<String> },
}

#[derive(Debug)]
pub enum TokenError {
    /// The identity endpoint could not be reached or was overloaded.
    Unreachable(String),
    /// Entra ID or the metadata service refused the credential (status, its explanation:
    /// meant for the server log, not for clients).
    Refused(u16, String),
    /// An answer without a token.
    Broken(String),
}

/// Signs in for tokens of one resource (its OAuth audience, like https://storage.azure.com).
pub struct Signin {
    credential: Credential,
    resource: String,
    token: Mutex<Option<(String, Instant)>>,
}

/// A set, non-empty environment variable.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Signin {
    pub fn from_env(resource: &str) -> Result<Signin, String> {
        let authority = env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| "https://login.microsoftonline.com".into());
        let authority =
            Url::parse(authority.trim_end_matches('/')).map_err(|e| format!("AZURE_AUTHORITY_HOST: {e}"))?;
        let signed_in_app = env("AZURE_TENANT_ID").zip(env("AZURE_CLIENT_ID"));
        let credential = match (signed_in_app, env("AZURE_CLIENT_SECRET"), env("AZURE_FEDERATED_TOKEN_FILE")) {
            (Some((tenant, client_id)), Some(secret), _) => Credential::Secret { authority, tenant, client_id, secret },
            (Some((tenant, client_id)), None, Some(token_file)) => {
                Credential::Federated { authority, tenant, client_id, token_file }
            }
            _ => {
                let imds = env("FERRITE_AZURE_IMDS_URL")
                    .or_else(|| env("FERRITE_KMS_AZURE_IMDS_URL"))
                    .unwrap_or_else(|| "http://169.254.169.254/metadata/identity/oauth2/token".into());
                let imds = Url::parse(&imds).map_err(|e| format!("FERRITE_AZURE_IMDS_URL: {e}"))?;
                Credential::Managed { imds, client_id: env("AZURE_CLIENT_ID") }
            }
        };
        Ok(Signin { credential, resource: resource.to_owned(), token: Mutex::new(None) })
    }

    /// How it signs in: "client secret", "workload identity" or "managed identity".
    pub fn kind(&self) -> &'static str {
        match &self.credential {
            Credential::Secret { .. } => "client secret",
            Credential::Federated { .. } => "workload identity",
            Credential::Managed { .. } => "managed identity",
        }
    }

    /// Drops the cached token (the service refused it: expired or revoked early).
    pub fn forget(&self) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A bearer token, from the cache or the identity endpoint (blocking).
    pub fn token(&self) -> Result<String, TokenError> {
        {
            let token = self.token.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, _)) = token.as_ref().filter(|(_, until)| Instant::now() < *until) {
                return Ok(t.clone());
            }
        }
        let scope = format!("{}/.default", self.resource.trim_end_matches('/'));
        let form_headers = [("Content-Type", "application/x-www-form-urlencoded")];
        let reply = match &self.credential {
            Credential::Secret { authority, tenant, client_id, secret } => {
                let body = format!(
                    "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
                    form(client_id),
                    form(secret),
                    form(&scope)
                );
                request("POST", &token_url(authority, tenant), &form_headers, body.as_bytes())
            }
            Credential::Federated { authority, tenant, client_id, token_file } => {
                // The file is rotated by the kubelet: read it at every sign-in.
                let assertion = std::fs::read_to_string(token_file)
                    .map_err(|e| TokenError::Unreachable(format!("AZURE_FEDERATED_TOKEN_FILE {token_file}: {e}")))?;
                let body = format!(
                    "grant_type=client_credentials&client_id={}&scope={}&client_assertion_type={}&client_assertion={}",
                    form(client_id),
                    form(&scope),
                    form("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    form(assertion.trim())
                );
                request("POST", &token_url(authority, tenant), &form_headers, body.as_bytes())
            }
            Credential::Managed { imds, client_id } => {
                let mut target = format!("{}?api-version=2018-02-01&resource={}", imds.target, form(&self.resource));
                if let Some(id) = client_id {
                    target.push_str(&format!("&client_id={}", form(id)));
                }
                request("GET", &imds.with_target(target), &[("Metadata", "true")], b"")
            }
        };
        let reply = reply.map_err(|e| TokenError::Unreachable(format!("identity endpoint: {e}")))?;
        let text = reply.text();
        match reply.status {
            200 => {}
            // The metadata service documents 404 and 410 (still starting) as worth a retry.
            404 | 410 | 429 | 500..=599 => {
                return Err(TokenError::Unreachable(format!("identity endpoint: HTTP {}", reply.status)))
            }
            status => {
                let why = json_string(&text, "error_description").or_else(|| json_string(&text, "error"));
                return Err(TokenError::Refused(status, why.unwrap_or_default().chars().take(300).collect()));
            }
        }
        let token = json_string(&text, "access_token").ok_or_else(|| TokenError::Broken("no access_token".into()))?;
        let until = Instant::now() + kept_for(json_u64(&text, "expires_in"));
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), until));
        Ok(token)
    }
}

/// How long a token that expires in `expires_in` seconds is used: until 5 minutes before it
/// expires, at least 30 s. Tokens live about an hour (a day for managed identities); anything
/// longer is not believed, and an answer without a lifetime is taken as 5 minutes.
fn kept_for(expires_in: Option<u64>) -> Duration {
    let lifetime = Duration::from_secs(expires_in.unwrap_or(300).min(86_400));
    lifetime.saturating_sub(TOKEN_MARGIN).max(Duration::from_secs(30))
}

fn token_url(authority: &Url, tenant: &str) -> Url {
    authority.with_target(format!("{}/{}/oauth2/v2.0/token", authority.target.trim_end_matches('/'), form(tenant)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_until_five_minutes_before_they_expire() {
        assert_eq!(kept_for(Some(3599)), Duration::from_secs(3299));
        assert_eq!(kept_for(Some(86_399)), Duration::from_secs(86_099));
        assert_eq!(kept_for(Some(u64::MAX)), Duration::from_secs(86_100), "a day at most");
        assert_eq!(kept_for(Some(60)), Duration::from_secs(30), "at least 30 s");
        assert_eq!(kept_for(None), Duration::from_secs(30));
        assert_eq!(json_u64(r#"{"expires_in":"86399"}"#, "expires_in"), Some(86_399), "IMDS sends a string");
    }

    #[test]
    fn token_urls_keep_the_authority_path() {
        let authority = Url::parse("https://login.example/base").unwrap();
        assert_eq!(token_url(&authority, "t 1").target, "/base/t%201/oauth2/v2.0/token");
        let authority = Url::parse("https://login.microsoftonline.com").unwrap();
        assert_eq!(token_url(&authority, "tenant").target, "/tenant/oauth2/v2.0/token");
    }
}
