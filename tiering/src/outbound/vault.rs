//! An OpenBao / HashiCorp Vault transit engine over its HTTP API: data keys drawn and sealed
//! under a named key, opened, and re-sealed under the key's newest version. Keys are made
//! with `derived=true`; the context sent with each call is the derivation context, so a
//! sealed key only opens with the context it was sealed with.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ferrite_engine::sse::Key;
use serde::{Deserialize, Serialize};

use super::http::{Client, Url};
use super::kms::KmsError;

/// One transit mount of one server, reached with one token.
pub struct Transit {
    addr: Url,
    token: String,
    mount: String,
    http: Client,
}

#[derive(Serialize)]
struct DataKeyRequest {
    context: String,
    bits: u32,
}

#[derive(Serialize)]
struct CiphertextRequest<'a> {
    ciphertext: &'a str,
    context: String,
}

#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    data: AnswerData,
}

#[derive(Deserialize, Default)]
struct AnswerData {
    ciphertext: Option<String>,
    plaintext: Option<String>,
}

impl Transit {
    /// `addr`: http(s)://host:port of the server.
    pub fn new(http: &Client, addr: &str, token: String, mount: String) -> Result<Transit, String> {
        let addr = Url::parse(addr.trim_end_matches('/')).map_err(|e| format!("FERRITE_KMS_VAULT_ADDR: {e}"))?;
        Ok(Transit { addr, token, mount, http: http.clone() })
    }

    /// Where it is: "{origin}/v1/{mount}".
    pub fn describe(&self) -> String {
        format!("{}/v1/{}", self.addr.origin(), self.mount)
    }

    /// A fresh 256-bit data key sealed under `key_id` (which must exist: `datakey`, unlike
    /// `encrypt`, never creates a key): the key and its sealed form.
    pub async fn datakey(&self, key_id: &str, context: &[u8]) -> Result<(Key, String), KmsError> {
        let body = DataKeyRequest { context: B64.encode(context), bits: 256 };
        let answer = self.call(&format!("datakey/plaintext/{key_id}"), &body).await?;
        let sealed = answer.ciphertext.clone().ok_or_else(|| KmsError::broken("datakey", "no ciphertext"))?;
        Ok((plaintext_key(&answer, "datakey")?, sealed))
    }

    /// Opens a sealed data key.
    pub async fn decrypt(&self, key_id: &str, sealed: &str, context: &[u8]) -> Result<Key, KmsError> {
        let body = CiphertextRequest { ciphertext: sealed, context: B64.encode(context) };
        let answer = self.call(&format!("decrypt/{key_id}"), &body).await?;
        plaintext_key(&answer, "decrypt")
    }

    /// Re-seals a sealed data key under the newest version of `key_id`; the key never
    /// leaves the KMS.
    pub async fn rewrap(&self, key_id: &str, sealed: &str, context: &[u8]) -> Result<String, KmsError> {
        let body = CiphertextRequest { ciphertext: sealed, context: B64.encode(context) };
        let answer = self.call(&format!("rewrap/{key_id}"), &body).await?;
        answer.ciphertext.ok_or_else(|| KmsError::broken("rewrap", "no ciphertext"))
    }

    /// POSTs a JSON body to /v1/{mount}/{path}; the `data` of a 2xx answer.
    async fn call(&self, path: &str, body: &impl Serialize) -> Result<AnswerData, KmsError> {
        let url = self.addr.with_target(format!("/v1/{}/{path}", self.mount));
        let body = serde_json::to_vec(body).map_err(|e| KmsError::broken("request", &e.to_string()))?;
        let headers =
            vec![("X-Vault-Token".into(), self.token.clone()), ("Content-Type".into(), "application/json".into())];
        let reply = self.http.send("POST", url, headers, body).await.map_err(KmsError::unreachable)?;
        let (status, text) = (reply.status, reply.text());
        match status {
            200..=299 => {}
            400 | 404 if text.contains("not found") || text.contains("no existing key") => {
                return Err(KmsError::NoSuchKey(format!(
                    "Invalid keyId: the KMS has no such key ({})",
                    path.rsplit('/').next().unwrap_or("")
                )))
            }
            429 | 500..=599 => return Err(KmsError::unreachable(format!("HTTP {status}"))),
            _ => return Err(KmsError::Refused(format!("The KMS refused the request (HTTP {status})"))),
        }
        let op = path.split('/').next().unwrap_or(path);
        reply.json::<Answer>().map(|a| a.data).map_err(|_| KmsError::broken(op, &text))
    }
}

/// The 256-bit key in a transit answer's "plaintext" field (base64). What is logged about a
/// bad one never includes its value: it may be key material.
fn plaintext_key(answer: &AnswerData, op: &str) -> Result<Key, KmsError> {
    let plain = answer.plaintext.as_deref().and_then(|p| B64.decode(p.trim()).ok());
    let plain: [u8; 32] = plain
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| KmsError::broken(op, "the plaintext is not a 256-bit key in base64"))?;
    Ok(Key(plain))
}
