//! One Azure Blob container, over the Blob service REST API (x-ms-version 2021-12-02, the
//! first with the Cold tier), signed with the account's Shared Key, carrying a SAS token, or
//! with an Entra ID bearer token (a managed or workload identity; see `entra`).
//!
//! Calls are blocking (see `http`): run them on a blocking pool from an executor. Each is
//! idempotent and retried with back-off on 429, 500, 502, 503, 504 and transport errors
//! (5 attempts, 0.2 s doubling); 401 and 403 are reported at once.
//!
//! Large blobs go up as blocks (Put Block, then Put Block List). Block ids are deterministic
//! (`block_id(index)`), so an interrupted upload resumes: `uncommitted_blocks` says which
//! blocks the service already holds.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet};
use sha2::Sha256;

use super::entra::{Signin, TokenError};
use super::http::{Client, Reply, Url, ESCAPED};

pub const API_VERSION: &str = "2021-12-02";
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Characters escaped in blob names (all but RFC 3986 unreserved and '/').
const ESCAPED_PATH: &AsciiSet = &ESCAPED.remove(b'/');

/// The access tiers a tier may use. Archive is refused: it cannot serve a read at once.
pub const ACCESS_TIERS: [&str; 3] = ["Hot", "Cool", "Cold"];

#[derive(Clone)]
pub enum Auth {
    /// The storage account key (base64, as the portal shows it).
    SharedKey(Vec<u8>),
    /// A SAS token (the query string, without '?').
    Sas(String),
    /// Entra ID tokens for https://storage.azure.com (the identity needs a Storage Blob Data
    /// role on the container).
    Entra(std::sync::Arc<Signin>),
}

/// The OAuth resource of Azure Storage (the same in every cloud).
pub const STORAGE_RESOURCE: &str = "https://storage.azure.com";

/// Where blobs go: an account's endpoint, a container, and how to sign in.
#[derive(Clone)]
pub struct Container {
    /// The Blob endpoint: https://ACCOUNT.blob.core.windows.net, or Azurite's
    /// http://127.0.0.1:10000/devstoreaccount1 (path-style, the account in the path).
    endpoint: Url,
    account: String,
    name: String,
    auth: Auth,
    http: Client,
}

/// A Blob call that failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// 404: no such blob or container.
    #[error("no such blob or container")]
    NotFound,
    /// 401/403: the key or token was refused.
    #[error("access denied: {0}")]
    Denied(String),
    /// Still failing after the retries: the service cannot be reached or is overloaded.
    #[error("the Blob service cannot be reached: {0}")]
    Unavailable(String),
    /// Any other refusal (status, Azure's error code and message).
    #[error("the Blob service refused the request (HTTP {0}): {1}")]
    Refused(u16, String),
}

pub type BlobResult<T> = Result<T, BlobError>;

/// What Get Blob Properties tells.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobProps {
    pub size: u64,
    pub etag: String,
    pub access_tier: Option<String>,
    /// x-ms-meta-* (names lower-case, without the prefix).
    pub metadata: Vec<(String, String)>,
}

/// The id of block `index`: every id of a blob must have the same length.
pub fn block_id(index: u64) -> String {
    B64.encode(format!("ferrite-{index:012}"))
}

impl Container {
    pub fn new(http: &Client, endpoint: &str, account: &str, name: &str, auth: Auth) -> Result<Container, String> {
        let endpoint = Url::parse(endpoint.trim_end_matches('/'))?;
        if account.is_empty() || !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("{account}: an account name is letters and digits"));
        }
        let valid = (3..=63).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.contains("--");
        if !valid {
            return Err(format!("{name}: a container name is 3-63 lower-case letters, digits and single hyphens"));
        }
        Ok(Container { endpoint, account: account.to_owned(), name: name.to_owned(), auth, http: http.clone() })
    }

    /// Creates the container; one that exists already is fine.
    pub fn create(&self) -> BlobResult<()> {
        match self.call("PUT", None, &[("restype", "container")], &[], Vec::new()) {
            Ok(_) => Ok(()),
            Err(BlobError::Refused(409, _)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Uploads one block of `blob` (not visible until `commit_blocks`).
    pub fn put_block(&self, blob: &str, block_id: &str, data: Vec<u8>) -> BlobResult<()> {
        self.call("PUT", Some(blob), &[("comp", "block"), ("blockid", block_id)], &[], data).map(|_| ())
    }

    /// The blocks uploaded but not yet committed (id, size); none when the blob is unknown.
    pub fn uncommitted_blocks(&self, blob: &str) -> BlobResult<Vec<(String, u64)>> {
        let query = [("comp", "blocklist"), ("blocklisttype", "uncommitted")];
        let reply = match self.call("GET", Some(blob), &query, &[], Vec::new()) {
            Ok(reply) => reply,
            Err(BlobError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let text = reply.text();
        let names = xml_values(&text, "Name");
        let sizes = xml_values(&text, "Size");
        Ok(names.into_iter().zip(sizes).map(|(n, s)| (n, s.parse().unwrap_or(0))).collect())
    }

    /// Commits `ids` (in order) as the blob's content, in `access_tier`, with `metadata`
    /// (x-ms-meta-*; names are C# identifiers: letters, digits, underscores). Returns the
    /// blob's ETag.
    pub fn commit_blocks(
        &self,
        blob: &str,
        ids: &[String],
        access_tier: &str,
        metadata: &[(&str, &str)],
    ) -> BlobResult<String> {
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in ids {
            body.push_str(&format!("<Uncommitted>{id}</Uncommitted>"));
        }
        body.push_str("</BlockList>");
        let meta: Vec<(String, String)> =
            metadata.iter().map(|(n, v)| (format!("x-ms-meta-{n}"), v.to_string())).collect();
        let mut headers: Vec<(&str, &str)> =
            vec![("x-ms-access-tier", access_tier), ("content-type", "application/xml")];
        headers.extend(meta.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let reply = self.call("PUT", Some(blob), &[("comp", "blocklist")], &headers, body.into_bytes())?;
        Ok(reply.header("etag").unwrap_or_default().to_owned())
    }

    /// Bytes `start..=end` of the blob; with `etag`, only if the blob is still that version
    /// (412 otherwise, reported as Refused).
    pub fn get_range(&self, blob: &str, start: u64, end: u64, etag: Option<&str>) -> BlobResult<Vec<u8>> {
        let range = format!("bytes={start}-{end}");
        let mut headers = vec![("x-ms-range", range.as_str())];
        if let Some(etag) = etag {
            headers.push(("if-match", etag));
        }
        let reply = self.call("GET", Some(blob), &[], &headers, Vec::new())?;
        Ok(reply.body)
    }

    pub fn properties(&self, blob: &str) -> BlobResult<BlobProps> {
        let reply = self.call("HEAD", Some(blob), &[], &[], Vec::new())?;
        Ok(BlobProps {
            size: reply.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0),
            etag: reply.header("etag").unwrap_or_default().to_owned(),
            access_tier: reply.header("x-ms-access-tier").map(str::to_owned),
            metadata: reply
                .headers
                .iter()
                .filter_map(|(n, v)| Some((n.strip_prefix("x-ms-meta-")?.to_owned(), v.clone())))
                .collect(),
        })
    }

    pub fn set_tier(&self, blob: &str, access_tier: &str) -> BlobResult<()> {
        self.call("PUT", Some(blob), &[("comp", "tier")], &[("x-ms-access-tier", access_tier)], Vec::new()).map(|_| ())
    }

    /// Deletes the blob; Ok(false) when there was none.
    pub fn delete(&self, blob: &str) -> BlobResult<bool> {
        match self.call("DELETE", Some(blob), &[], &[], Vec::new()) {
            Ok(_) => Ok(true),
            Err(BlobError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Names of up to `max` blobs under `prefix` (one page).
    pub fn list(&self, prefix: &str, max: u32) -> BlobResult<Vec<String>> {
        self.list_page(prefix, "", max).map(|(names, _)| names)
    }

    /// One page of blob names under `prefix` from `marker` (empty: the start), and the marker
    /// of the next page if there is one.
    pub fn list_page(&self, prefix: &str, marker: &str, max: u32) -> BlobResult<(Vec<String>, Option<String>)> {
        let max = max.to_string();
        let mut query = vec![("restype", "container"), ("comp", "list"), ("prefix", prefix), ("maxresults", &max)];
        if !marker.is_empty() {
            query.push(("marker", marker));
        }
        let reply = self.call("GET", None, &query, &[], Vec::new())?;
        let text = reply.text();
        let next = xml_values(&text, "NextMarker").pop().filter(|m| !m.is_empty());
        Ok((xml_values(&text, "Name"), next))
    }

    /// One call, retried with back-off while the answer is 429/500/503 or the transport fails.
    fn call(
        &self,
        method: &str,
        blob: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> BlobResult<Reply> {
        let (path, url) = self.target(blob, query);
        let mut last = String::new();
        let mut renewed = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1));
            }
            let all = match self.signed_headers(method, headers, body.len(), &path, query) {
                Ok(all) => all,
                Err(Signing::Retry(why)) => {
                    last = why;
                    continue;
                }
                Err(Signing::Refused(e)) => return Err(e),
            };
            let pairs: Vec<(&str, &str)> = all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let reply = match self.http.request(method, &url, &pairs, &body) {
                Ok(reply) => reply,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match reply.status {
                200..=299 => return Ok(reply),
                404 => return Err(BlobError::NotFound),
                429 | 500 | 502 | 503 | 504 => last = format!("HTTP {}", reply.status),
                // A token revoked or expired early: sign in again, once.
                401 if matches!(&self.auth, Auth::Entra(_)) && !renewed && attempt + 1 < ATTEMPTS => {
                    if let Auth::Entra(signin) = &self.auth {
                        signin.forget();
                    }
                    renewed = true;
                    last = "HTTP 401".into();
                }
                401 | 403 => return Err(BlobError::Denied(error_text(&reply))),
                status => return Err(BlobError::Refused(status, error_text(&reply))),
            }
        }
        Err(BlobError::Unavailable(last))
    }

    /// The request path (for signing) and the URL of a call on the container or a blob.
    fn target(&self, blob: Option<&str>, query: &[(&str, &str)]) -> (String, Url) {
        let mut path = format!("{}/{}", self.endpoint.target.trim_end_matches('/'), self.name);
        if let Some(blob) = blob {
            path.push('/');
            path.push_str(&utf8_percent_encode(blob, ESCAPED_PATH).to_string());
        }
        let mut target = path.clone();
        let mut pairs: Vec<String> =
            query.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, ESCAPED))).collect();
        if let Auth::Sas(sas) = &self.auth {
            pairs.push(sas.trim_start_matches('?').to_owned());
        }
        if !pairs.is_empty() {
            target.push('?');
            target.push_str(&pairs.join("&"));
        }
        (path, self.endpoint.with_target(target))
    }

    /// The headers of one attempt: the caller's, the date and version, and the
    /// authorization (a Shared Key signature or a bearer token; a SAS is in the URL).
    fn signed_headers(
        &self,
        method: &str,
        headers: &[(&str, &str)],
        body_len: usize,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<(String, String)>, Signing> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut all: Vec<(String, String)> =
            headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())).collect();
        all.push(("x-ms-date".into(), date));
        all.push(("x-ms-version".into(), API_VERSION.into()));
        match &self.auth {
            Auth::SharedKey(key) => {
                let to_sign = string_to_sign(method, &all, body_len, &self.account, path, query);
                let signature = B64.encode(hmac_sha256(key, to_sign.as_bytes()));
                all.push(("authorization".into(), format!("SharedKey {}:{signature}", self.account)));
            }
            // The identity endpoint's hiccups (429, 5xx, no answer) are retried like the
            // service's own.
            Auth::Entra(signin) => match signin.token() {
                Ok(token) => all.push(("authorization".into(), format!("Bearer {token}"))),
                Err(TokenError::Unreachable(why) | TokenError::Broken(why)) => return Err(Signing::Retry(why)),
                Err(TokenError::Refused(status, why)) => {
                    let kind = signin.kind();
                    let why = format!("Entra ID refused the {kind} (HTTP {status}): {why}");
                    return Err(Signing::Refused(BlobError::Denied(why)));
                }
            },
            Auth::Sas(_) => {}
        }
        Ok(all)
    }
}

/// Why an attempt could not be signed.
enum Signing {
    /// The sign-in failed for now: retried like the service's own failures.
    Retry(String),
    Refused(BlobError),
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Azure's error code and message, from the x-ms-error-code header and the XML body.
fn error_text(reply: &Reply) -> String {
    let code = reply.header("x-ms-error-code").map(str::to_owned).or_else(|| xml_values(&reply.text(), "Code").pop());
    let message = xml_values(&reply.text(), "Message").pop().unwrap_or_default();
    let message = message.lines().next().unwrap_or("").to_owned();
    // Sign-in failures say what was wrong here (a signature, a token's audience or expiry).
    let detail = xml_values(&reply.text(), "AuthenticationErrorDetail").pop().unwrap_or_default();
    format!("{} {message} {detail}", code.unwrap_or_default()).trim().to_owned()
}

/// The Shared Key string to sign (Blob service, version 2015-02-21 and later: a zero
/// Content-Length is written as the empty string).
fn string_to_sign(
    method: &str,
    headers: &[(String, String)],
    body_len: usize,
    account: &str,
    path: &str,
    query: &[(&str, &str)],
) -> String {
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or("");
    let length = if body_len == 0 { String::new() } else { body_len.to_string() };
    let mut out = format!(
        "{method}\n{}\n{}\n{length}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n",
        get("content-encoding"),
        get("content-language"),
        get("content-md5"),
        get("content-type"),
        get("if-modified-since"),
        get("if-match"),
        get("if-none-match"),
        get("if-unmodified-since"),
        get("range"),
    );
    let mut ms: Vec<(&str, String)> = headers
        .iter()
        .filter(|(n, _)| n.starts_with("x-ms-"))
        .map(|(n, v)| (n.as_str(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    ms.sort();
    for (name, value) in ms {
        out.push_str(&format!("{name}:{value}\n"));
    }
    out.push_str(&format!("/{account}{path}"));
    let mut params: Vec<(String, &str)> = query.iter().map(|(k, v)| (k.to_ascii_lowercase(), *v)).collect();
    params.sort();
    for (name, value) in params {
        out.push_str(&format!("\n{name}:{value}"));
    }
    out
}

/// The text of every `<tag>...</tag>` in order, with XML's five entities decoded.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        let value = after[..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&");
        out.push(value);
        rest = &after[end + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_to_sign_follows_the_documented_layout() {
        let headers = vec![
            ("x-ms-version".to_owned(), API_VERSION.to_owned()),
            ("x-ms-date".to_owned(), "Fri, 26 Jun 2015 23:39:12 GMT".to_owned()),
            ("x-ms-meta-a".to_owned(), "  two   words ".to_owned()),
        ];
        let s = string_to_sign("PUT", &headers, 0, "acct", "/acct/c/b", &[("comp", "block"), ("blockid", "QQ==")]);
        let expected = "PUT\n\n\n\n\n\n\n\n\n\n\n\n\
                        x-ms-date:Fri, 26 Jun 2015 23:39:12 GMT\nx-ms-meta-a:two words\nx-ms-version:2021-12-02\n\
                        /acct/acct/c/b\nblockid:QQ==\ncomp:block";
        assert_eq!(s, expected);
        let s = string_to_sign("GET", &[], 5, "a", "/c", &[]);
        assert!(s.starts_with("GET\n\n\n5\n"), "{s:?}");
    }

    #[test]
    fn block_ids_have_one_length_and_xml_values_decode() {
        assert_eq!(block_id(0).len(), block_id(999_999_999_999).len());
        let xml = "<L><Name>a&amp;b</Name><Size>3</Size><Name>c</Name><Size>4</Size><Name>cut";
        assert_eq!(xml_values(xml, "Name"), ["a&b", "c"]);
        assert_eq!(xml_values(xml, "Size"), ["3", "4"]);
    }

    #[test]
    fn container_names_follow_azure_rules() {
        let key = Auth::SharedKey(vec![1; 64]);
        let http = Client::new(&Default::default());
        assert!(Container::new(
            &http,
            "http://127.0.0.1:10000/devstoreaccount1",
            "devstoreaccount1",
            "ferrite-tier",
            key.clone()
        )
        .is_ok());
        for bad in ["ab", "Upper", "-lead", "dou--ble", "under_score"] {
            assert!(Container::new(&http, "https://a.blob.core.windows.net", "a", bad, key.clone()).is_err(), "{bad}");
        }
        assert!(Container::new(&http, "https://a.blob.core.windows.net", "a-b", "okay", key).is_err());
    }
}
