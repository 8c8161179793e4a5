//! Bearer tokens from Microsoft Entra ID for one resource (Key Vault, Azure Storage). The
//! credential is the first of these that the settings hold (the binary fills them from
//! Azure's standard variables):
//! - tenant + client id + client secret;
//! - tenant + client id + a federated token file: AKS workload identity (the kubelet rotates
//!   the file);
//! - otherwise the managed identity of the node or pod, through the instance metadata service
//!   (a client id picks a user-assigned one).
//!
//! Calls are blocking (see `http`). A token is cached until 5 minutes before it expires;
//! `forget` drops it after the service refused it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::http::{form, Client, Url};

/// A token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
const AUTHORITY_DEFAULT: &str = "https://login.microsoftonline.com";
const IMDS_DEFAULT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// How Ferrite signs in to Entra ID (empty values count as unset).
#[derive(Clone, Debug, Default)]
pub struct EntraSettings {
    /// The token endpoint's host (sovereign clouds, tests); default Entra ID's public one.
    pub authority_host: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// AKS workload identity: the projected service account token.
    pub federated_token_file: Option<String>,
    /// The instance metadata service's token URL (tests); default Azure's.
    pub imds_url: Option<String>,
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

/// What the token endpoints answer (the metadata service writes `expires_in` as a string).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    error: Option<String>,
    error_description: Option<String>,
}

/// Signs in for tokens of one resource (its OAuth audience, like https://storage.azure.com).
pub struct Signin {
    credential: Credential,
    resource: String,
    http: Client,
    token: Mutex<Option<(String, Instant)>>,
}

fn set(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}

impl Signin {
    pub fn new(settings: &EntraSettings, resource: &str, http: &Client) -> Result<Signin, String> {
        let authority = set(&settings.authority_host).unwrap_or_else(|| AUTHORITY_DEFAULT.into());
        let authority =
            Url::parse(authority.trim_end_matches('/')).map_err(|e| format!("AZURE_AUTHORITY_HOST: {e}"))?;
        let signed_in_app = set(&settings.tenant_id).zip(set(&settings.client_id));
        let credential = match (signed_in_app, set(&settings.client_secret), set(&settings.federated_token_file)) {
            (Some((tenant, client_id)), Some(secret), _) => Credential::Secret { authority, tenant, client_id, secret },
            (Some((tenant, client_id)), None, Some(token_file)) => {
                Credential::Federated { authority, tenant, client_id, token_file }
            }
            _ => {
                let imds = set(&settings.imds_url).unwrap_or_else(|| IMDS_DEFAULT.into());
                let imds = Url::parse(&imds).map_err(|e| format!("FERRITE_AZURE_IMDS_URL: {e}"))?;
                Credential::Managed { imds, client_id: set(&settings.client_id) }
            }
        };
        Ok(Signin { credential, resource: resource.to_owned(), http: http.clone(), token: Mutex::new(None) })
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
        let reply = self.ask()?;
        match reply.status {
            200 => {}
            // The metadata service documents 404 and 410 (still starting) as worth a retry.
            404 | 410 | 429 | 500..=599 => {
                return Err(TokenError::Unreachable(format!("identity endpoint: HTTP {}", reply.status)))
            }
            status => {
                let answer: ErrorAnswer = reply.json().unwrap_or_default();
                let why = answer.error_description.or(answer.error).unwrap_or_default();
                return Err(TokenError::Refused(status, why.chars().take(300).collect()));
            }
        }
        let answer: TokenAnswer = reply.json().map_err(|e| TokenError::Broken(format!("token answer: {e}")))?;
        let token = answer.access_token.ok_or_else(|| TokenError::Broken("no access_token".into()))?;
        let until = Instant::now() + kept_for(seconds(answer.expires_in.as_ref()));
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), until));
        Ok(token)
    }

    /// The token request for this credential.
    fn ask(&self) -> Result<super::http::Reply, TokenError> {
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
                self.http.request("POST", &token_url(authority, tenant), &form_headers, body.as_bytes())
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
                self.http.request("POST", &token_url(authority, tenant), &form_headers, body.as_bytes())
            }
            Credential::Managed { imds, client_id } => {
                let mut target = format!("{}?api-version=2018-02-01&resource={}", imds.target, form(&self.resource));
                if let Some(id) = client_id {
                    target.push_str(&format!("&client_id={}", form(id)));
                }
                self.http.request("GET", &imds.with_target(target), &[("Metadata", "true")], b"")
            }
        };
        reply.map_err(|e| TokenError::Unreachable(format!("identity endpoint: {e}")))
    }
}

/// A lifetime in seconds, written as a JSON number or as a string of digits.
fn seconds(value: Option<&serde_json::Value>) -> Option<u64> {
    match value? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
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
        let imds: TokenAnswer = serde_json::from_str(r#"{"access_token":"t","expires_in":"86399"}"#).unwrap();
        assert_eq!(seconds(imds.expires_in.as_ref()), Some(86_399), "IMDS sends a string");
        let entra: TokenAnswer = serde_json::from_str(r#"{"access_token":"t","expires_in":3599}"#).unwrap();
        assert_eq!(seconds(entra.expires_in.as_ref()), Some(3599));
    }

    #[test]
    fn token_urls_keep_the_authority_path() {
        let authority = Url::parse("https://login.example/base").unwrap();
        assert_eq!(token_url(&authority, "t 1").target, "/base/t%201/oauth2/v2.0/token");
        let authority = Url::parse("https://login.microsoftonline.com").unwrap();
        assert_eq!(token_url(&authority, "tenant").target, "/tenant/oauth2/v2.0/token");
    }

    #[test]
    fn the_credential_is_the_first_the_settings_hold() {
        let http = Client::new(&Default::default());
        let mut s = EntraSettings { tenant_id: Some("t".into()), client_id: Some("c".into()), ..Default::default() };
        assert_eq!(Signin::new(&s, "r", &http).unwrap().kind(), "managed identity");
        s.federated_token_file = Some("/f".into());
        assert_eq!(Signin::new(&s, "r", &http).unwrap().kind(), "workload identity");
        s.client_secret = Some("x".into());
        assert_eq!(Signin::new(&s, "r", &http).unwrap().kind(), "client secret");
        s.client_secret = Some(String::new());
        assert_eq!(Signin::new(&s, "r", &http).unwrap().kind(), "workload identity", "empty is unset");
    }
}
