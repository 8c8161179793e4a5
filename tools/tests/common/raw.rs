//! Requests on a raw socket, for tests that must control every byte: connecting, SigV4
//! signing of a request head (header and aws-chunked signatures), and one small signed GET.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use ferrite_s3::sigv4::{self, sha256_hex, signing_key, Scope};

use super::{PASSWORD, USER};

/// How long the one-shot signed GET waits for its answer.
const GET_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to `addr` whose reads and writes give up after `timeout`.
pub fn connect(addr: &str, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the server");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A request head signed with UNSIGNED-PAYLOAD plus `headers` (lower-case names).
pub fn unsigned_head(host: &str, method: &str, path: &str, query: &str, headers: &[(&str, String)]) -> String {
    sign_head(host, method, path, query, headers, sigv4::UNSIGNED_PAYLOAD).0
}

/// The region requests are signed for unless a test names another.
pub const REGION: &str = "us-east-1";

/// One signed GET on a new connection (closed after it): its status and body.
pub fn signed_get(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    signed_get_in(REGION, addr, path)
}

/// `signed_get`, signed for `region`.
pub fn signed_get_in(region: &str, addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(GET_TIMEOUT))?;
    get_over(s, region, addr, path)
}

/// `signed_get` over TLS, verifying the server with `config` (its name: the host of `addr`).
pub fn signed_get_tls(addr: &str, path: &str, config: Arc<rustls::ClientConfig>) -> std::io::Result<(u16, Vec<u8>)> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(GET_TIMEOUT))?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_owned();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(std::io::Error::other)?;
    let tls = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    get_over(rustls::StreamOwned::new(tls, tcp), REGION, addr, path)
}

fn get_over(mut s: impl Read + Write, region: &str, addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let headers = [("connection", "close".to_owned())];
    let head = sign_head_in(region, addr, "GET", path, "", &headers, sigv4::UNSIGNED_PAYLOAD).0;
    s.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify: what arrived is the whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e),
    }
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, answer[end + 4..].to_vec()))
}

/// Signs a request head in its Authorization header: `headers` (lower-case names) are
/// signed along with host, x-amz-content-sha256 and x-amz-date. Returns the head and the
/// scope and seed signature (for aws-chunked chunk signatures).
pub fn sign_head(
    host: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, String)],
    payload_hash: &str,
) -> (String, Scope, String) {
    sign_head_in(REGION, host, method, path, query, headers, payload_hash)
}

/// `sign_head`, signed for `region`.
pub fn sign_head_in(
    region: &str,
    host: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, String)],
    payload_hash: &str,
) -> (String, Scope, String) {
    let (date, amz_date) = now_dates();
    let scope = Scope {
        access_key: USER.into(),
        date: date.clone(),
        region: region.into(),
        amz_date: amz_date.clone(),
        key: signing_key(PASSWORD, &date, region),
    };
    let mut all: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    all.push(("host".into(), host.into()));
    all.push(("x-amz-content-sha256".into(), payload_hash.into()));
    all.push(("x-amz-date".into(), amz_date.clone()));
    all.sort();
    let canonical_headers: String = all.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let canonical = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}", scope.scope_string(), sha256_hex(canonical.as_bytes()));
    let signature = hmac_hex(&scope.key, to_sign.as_bytes());
    let mut head = format!("{method} {path}{}{query} HTTP/1.1\r\n", if query.is_empty() { "" } else { "?" });
    for (n, v) in &all {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Authorization: AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}\r\n\r\n",
        USER,
        scope.scope_string()
    ));
    (head, scope, signature)
}

/// Today's credential date and the current X-Amz-Date.
pub fn now_dates() -> (String, String) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let amz_date = sigv4::format_amz_date(now);
    (amz_date[..8].to_owned(), amz_date)
}

pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    sigv4::hex(&mac.finalize().into_bytes())
}
