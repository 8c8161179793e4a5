//! Ferrite's own outbound HTTP/1.1 client, for the requests it makes to other
//! services: a KMS (OpenBao/Vault, Azure Key Vault), an identity endpoint (Entra ID, the
//! instance metadata service), Azure Blob. Blocking, one connection per request, bodies held
//! in memory (at most 16 MiB); callers on an executor run it on the blocking pool (`send`).
//!
//! `https://` uses rustls with the system's CA bundle (`SSL_CERT_FILE`, or the usual
//! Debian/RHEL/Alpine paths) plus `FERRITE_CA_FILE` (a PEM bundle of extra roots, e.g. a
//! private CA or a test server's certificate).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers are buffered whole: control answers, and blob ranges of a few MiB. Anything
/// larger is refused.
const REPLY_MAX: usize = 16 << 20;
const HEAD_MAX: usize = 64 << 10;

/// Where CA bundles usually are (Debian/Ubuntu/Alpine, RHEL/Fedora, others).
const SYSTEM_BUNDLES: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// An absolute http:// or https:// URL, split for connecting.
#[derive(Clone, Debug, PartialEq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub target: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url}: only http:// and https:// URLs are supported"));
        };
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url}: bad IPv6 address"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{url}: bad port {p}"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let host = host.to_owned();
        Ok(Url { tls, host, port, target: target.to_owned() })
    }

    /// The same server with another path and query (which must start with '/').
    pub fn with_target(&self, target: String) -> Url {
        Url { target, ..self.clone() }
    }

    /// The URL without its path, as written: scheme://host[:port].
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }

    fn host_header(&self) -> String {
        self.origin().split_once("://").map(|(_, h)| h.to_owned()).unwrap_or_default()
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// [`request`] on the blocking pool, for callers on an executor.
pub async fn send(method: &'static str, url: Url, headers: Vec<(String, String)>, body: Vec<u8>) -> io::Result<Reply> {
    let job = move || {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        request(method, &url, &headers, &body)
    };
    match monoio::spawn_blocking(job).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::other("the request was cancelled")),
    }
}

/// One request with `Connection: close`. Any status is an Ok reply; Err is a transport
/// failure (cannot connect, TLS refused, timeout, malformed answer).
pub fn request(method: &str, url: &Url, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Reply> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("{}: no address", url.host)))?;
    let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!("{method} {} HTTP/1.1\r\nHost: {}\r\n", url.target, url.host_header());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    let no_body = method == "HEAD";
    if url.tls {
        let name = ServerName::try_from(url.host.clone()).map_err(|e| io::Error::other(e.to_string()))?;
        let conn = rustls::ClientConnection::new(client_config()?, name).map_err(io::Error::other)?;
        exchange(rustls::StreamOwned::new(conn, tcp), head.as_bytes(), body, no_body)
    } else {
        exchange(tcp, head.as_bytes(), body, no_body)
    }
}

fn exchange(mut stream: impl Read + Write, head: &[u8], body: &[u8], no_body: bool) -> io::Result<Reply> {
    stream.write_all(head)?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        if let Some(reply) = complete(&raw, no_body)? {
            return Ok(reply);
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // A peer that closes without TLS close_notify: what arrived is all there is.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return until_close(&raw);
        }
        if raw.len() + n > REPLY_MAX + HEAD_MAX {
            return Err(io::Error::other("the answer is too large"));
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    len: usize,
}

fn parse_head(raw: &[u8]) -> io::Result<Option<Head>> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(raw) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(Head {
            status: resp.code.unwrap_or(0),
            headers: resp
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).trim().to_owned()))
                .collect(),
            len,
        })),
        Ok(httparse::Status::Partial) if raw.len() > HEAD_MAX => {
            Err(io::Error::other("the answer's head is too large"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(io::Error::other(format!("malformed answer: {e}"))),
    }
}

/// The reply when `raw` holds all of it (by Content-Length or a complete chunked body).
fn complete(raw: &[u8], no_body: bool) -> io::Result<Option<Reply>> {
    let Some(head) = parse_head(raw)? else { return Ok(None) };
    let payload = &raw[head.len..];
    let value = |name: &str| head.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let body = if no_body || head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
        Vec::new()
    } else if value("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        match dechunk(payload)? {
            Some(body) => body,
            None => return Ok(None),
        }
    } else if let Some(len) = value("content-length") {
        let len: usize = len.parse().map_err(|_| io::Error::other("bad Content-Length in the answer"))?;
        if len > REPLY_MAX {
            return Err(io::Error::other("the answer is too large"));
        }
        if payload.len() < len {
            return Ok(None);
        }
        payload[..len].to_vec()
    } else {
        return Ok(None); // delimited by the close
    };
    Ok(Some(Reply { status: head.status, headers: head.headers, body }))
}

/// The connection closed: a reply delimited by the close is whole; anything else is cut.
fn until_close(raw: &[u8]) -> io::Result<Reply> {
    let cut = || io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed mid-answer");
    let head = parse_head(raw)?.ok_or_else(cut)?;
    let delimited = head.headers.iter().all(|(n, _)| n != "content-length" && n != "transfer-encoding");
    if !delimited {
        return Err(cut());
    }
    Ok(Reply { status: head.status, body: raw[head.len..].to_vec(), headers: head.headers })
}

/// Decodes a chunked body: Some(body) once the last chunk arrived, None while incomplete,
/// Err when malformed. Works on bytes, so a chunk boundary inside a character is harmless.
fn dechunk(mut body: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let line = std::str::from_utf8(&body[..eol]).map_err(|_| io::Error::other("bad chunk size"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16).map_err(|_| io::Error::other("bad chunk size"))?;
        let rest = &body[eol + 2..];
        if n == 0 {
            return Ok(Some(out)); // trailers, if any, are not needed
        }
        // Checked before any arithmetic: a size near u64::MAX must not wrap.
        if n > REPLY_MAX - out.len() {
            return Err(io::Error::other("the answer is too large"));
        }
        if rest.len() < n + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[..n]);
        body = &rest[n + 2..];
    }
}

/// The TLS client configuration, built once: the system's roots plus `FERRITE_CA_FILE`.
fn client_config() -> io::Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG.get_or_init(build_client_config).clone().map_err(io::Error::other)
}

fn build_client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    client_tls_config(std::env::var("FERRITE_CA_FILE").ok().as_deref()).map_err(|e| format!("{e} (FERRITE_CA_FILE)"))
}

/// A TLS client configuration trusting the system's CA bundle (or `SSL_CERT_FILE`) and the
/// certificates in the PEM file `extra_ca`, if given (`FERRITE_CA_FILE` for the server's
/// own outbound calls; `ferrite bench --ca`).
pub fn client_tls_config(extra_ca: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let system = std::env::var("SSL_CERT_FILE")
        .ok()
        .or_else(|| SYSTEM_BUNDLES.iter().find(|p| std::path::Path::new(p).exists()).map(|p| p.to_string()));
    if let Some(path) = system {
        if let Ok(certs) = CertificateDer::pem_file_iter(&path) {
            roots.add_parsable_certificates(certs.flatten());
        }
    }
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect())
            .map_err(|e| format!("CA file {path}: {e}"))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("CA file {path}: no usable certificate"));
        }
    }
    if roots.is_empty() {
        return Err("no trusted CA certificates: install ca-certificates or give a CA file".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The string value of `"field":"..."` in a JSON text, JSON escapes decoded; the first
/// occurrence at any depth (the answers read here have unique field names).
pub fn json_string(json: &str, field: &str) -> Option<String> {
    let rest = json_value(json, field)?.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
}

/// A number field, written as a JSON number or as a string of digits (the instance
/// metadata service quotes its numbers).
pub fn json_u64(json: &str, field: &str) -> Option<u64> {
    let value = json_value(json, field)?;
    let digits = value.trim_start_matches('"');
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn json_value<'a>(json: &'a str, field: &str) -> Option<&'a str> {
    let pattern = format!("\"{field}\"");
    let at = json.find(&pattern)?;
    Some(json[at + pattern.len()..].trim_start().strip_prefix(':')?.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_target() {
        let u = Url::parse("https://vault.example:8200/v1/transit?x=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.target.as_str()),
            (true, "vault.example", 8200, "/v1/transit?x=1")
        );
        assert_eq!(u.origin(), "https://vault.example:8200");
        let u = Url::parse("http://127.0.0.1").unwrap();
        assert_eq!((u.port, u.target.as_str(), u.origin().as_str()), (80, "/", "http://127.0.0.1"));
        let u = Url::parse("https://[::1]:9000/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.host_header().as_str()), ("::1", 9000, "[::1]:9000"));
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://x:port/").is_err());
        assert!(Url::parse("https:///path").is_err());
        assert_eq!(Url::parse("http://[::1]").unwrap().port, 80);
    }

    #[test]
    fn answers_are_complete_only_when_all_of_the_body_arrived() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert!(complete(&full[..cut], false).unwrap().is_none(), "cut at {cut}");
        }
        let reply = complete(full, false).unwrap().unwrap();
        assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello"[..]));
        // "é" is two bytes; the chunk boundary falls between them.
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"\xc3\r\n5\r\n\xa9\":1}\r\n0\r\n\r\n";
        for cut in 0..chunked.len() - 5 {
            let _ = complete(&chunked[..cut], false);
        }
        assert_eq!(complete(chunked, false).unwrap().unwrap().body, "{\"é\":1}".as_bytes());
        assert!(complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc", false).is_err());
        let head_only = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        assert!(complete(head_only, true).unwrap().unwrap().body.is_empty());
        assert!(until_close(head_only).is_err(), "a body cut short is an error");
        assert_eq!(until_close(b"HTTP/1.0 200 OK\r\n\r\nto the end").unwrap().body, b"to the end");
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", false).is_err());
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\nb\r\n";
        assert!(complete(huge, false).is_err(), "a chunk size near u64::MAX is refused, not wrapped");
    }

    #[test]
    fn json_fields_are_found_and_unescaped() {
        let reply = r#"{"data":{"ciphertext":"vault:v2:abc","plaintext":"AQ=="},"expires_in": 3599,"n":"86399"}"#;
        assert_eq!(json_string(reply, "ciphertext").as_deref(), Some("vault:v2:abc"));
        assert_eq!(json_string(reply, "missing"), None);
        assert_eq!(json_string(r#"{"plaintext":"unterminated"#, "plaintext"), None);
        assert_eq!(json_string(r#"{"m":"a\"b\\c\u00e9"}"#, "m").as_deref(), Some("a\"b\\cé"));
        assert_eq!(json_u64(reply, "expires_in"), Some(3599));
        assert_eq!(json_u64(reply, "n"), Some(86399));
        assert_eq!(json_u64(reply, "ciphertext"), None);
    }
}
