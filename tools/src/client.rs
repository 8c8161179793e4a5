//! The S3 client of `ferrite bench` and `ferrite admin`: one keep-alive HTTP/1.1 connection
//! (plain or TLS) per `Conn`, each request signed with SigV4 (UNSIGNED-PAYLOAD unless the
//! payload is to be signed). Blocking, so each bench worker owns a thread and a connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_s3::sigv4::{self, sha256_hex, signing_key, Scope, SignedRequest};

/// The region requests are signed for unless `with_region` names another (Ferrite's
/// default, FERRITE_REGION, and the one SDKs fall back to).
pub const REGION_DEFAULT: &str = "us-east-1";
/// A response read stalled this long ends the request (a 64 MiB GET under load is slow).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// The read buffer: response heads must fit in it; bodies stream through it.
const BUFFER_BYTES: usize = 256 << 10;
/// Response headers parsed at most.
const RESPONSE_HEADERS_MAX: usize = 64;

/// Whether every address the endpoint's host resolves to is a loopback one (this machine,
/// no network in between). A host that does not resolve is not.
pub fn is_loopback(endpoint: &str) -> bool {
    use std::net::ToSocketAddrs;
    let mut addrs = match host_port(endpoint).to_socket_addrs() {
        Ok(addrs) => addrs.peekable(),
        Err(_) => return false,
    };
    addrs.peek().is_some() && addrs.all(|a| a.ip().to_canonical().is_loopback())
}

/// HOST:PORT of an endpoint URL.
pub fn host_port(endpoint: &str) -> &str {
    endpoint.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/')
}

/// The name an https endpoint's certificate must carry: a DNS name, or an IP address (a
/// bracketed IPv6 one without its brackets). None where rustls cannot check one.
pub fn tls_name(endpoint: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    let hp = host_port(endpoint);
    let host = hp.rsplit_once(':').map_or(hp, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    rustls::pki_types::ServerName::try_from(host).ok()
}

/// A connection's byte stream: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One keep-alive connection with SigV4 signing, over plain HTTP or HTTPS.
pub struct Conn {
    host: String,
    https: bool,
    /// For https endpoints: the TLS setup and the name the certificate must carry.
    tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    stream: Option<Stream>,
    access: String,
    secret: String,
    region: String,
    key_cache: Option<(String, [u8; 32])>,
    sign_payload: bool,
    buf: Vec<u8>,
}

/// A response: its status, its body (when kept), when its head arrived, its ETag.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub ttfb: Duration,
    pub etag: Option<String>,
}

/// What a response head said.
struct Head {
    status: u16,
    /// Bytes of the buffer the head took.
    len: usize,
    content_length: usize,
    etag: Option<String>,
}

fn now_amz() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    sigv4::format_amz_date(secs as i64)
}

impl Conn {
    pub fn new(endpoint: &str, access: &str, secret: &str) -> Conn {
        Conn {
            host: host_port(endpoint).to_owned(),
            https: endpoint.starts_with("https://"),
            tls: None,
            stream: None,
            access: access.to_owned(),
            secret: secret.to_owned(),
            region: REGION_DEFAULT.to_owned(),
            key_cache: None,
            sign_payload: false,
            buf: vec![0u8; BUFFER_BYTES],
        }
    }

    /// Signs for `region` instead of `REGION_DEFAULT`.
    pub fn with_region(mut self, region: &str) -> Conn {
        self.region = region.to_owned();
        self.key_cache = None;
        self
    }

    /// Signs the payload's SHA-256 instead of UNSIGNED-PAYLOAD.
    pub fn sign_payload(mut self, on: bool) -> Conn {
        self.sign_payload = on;
        self
    }

    /// The TLS setup for an https endpoint (ignored for http).
    pub fn with_tls(mut self, endpoint: &str, config: Option<&Arc<rustls::ClientConfig>>) -> Conn {
        if let (true, Some(config), Some(name)) = (self.https, config, tls_name(endpoint)) {
            self.tls = Some((config.clone(), name));
        }
        self
    }

    /// Sends one request; `keep_body` keeps the response body (else it is only counted; an
    /// error's body is always kept, for its S3 error code).
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        body: &[u8],
        keep_body: bool,
    ) -> std::io::Result<Reply> {
        let reused = self.stream.is_some();
        let mut result = self.try_call(method, path, query, headers, body, keep_body);
        if result.is_err() && reused {
            // A kept-alive connection the server closed meanwhile: reconnect once.
            self.stream = None;
            result = self.try_call(method, path, query, headers, body, keep_body);
        }
        if result.is_err() {
            // Whatever state the stream is in (a late reply, a broken TLS session), the next
            // request starts on a new connection.
            self.stream = None;
        }
        result
    }

    fn try_call(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        body: &[u8],
        keep_body: bool,
    ) -> std::io::Result<Reply> {
        self.connect()?;
        let request = self.signed_head(method, path, query, headers, body)?;
        let start = Instant::now();
        let Some(stream) = self.stream.as_mut() else { return Err(std::io::Error::other("no connection")) };
        stream.write_all(request.as_bytes())?;
        stream.write_all(body)?;
        let (head, filled) = read_head(stream, &mut self.buf, method)?;
        let ttfb = start.elapsed();
        let keep_body = keep_body || head.status >= 300;
        let body = read_body(stream, &mut self.buf, &head, filled, keep_body)?;
        Ok(Reply { status: head.status, body, ttfb, etag: head.etag })
    }

    /// Opens the connection if there is none.
    fn connect(&mut self) -> std::io::Result<()> {
        if self.stream.is_some() {
            return Ok(());
        }
        if self.https && self.tls.is_none() {
            return Err(std::io::Error::other("https endpoint without a TLS setup"));
        }
        let tcp = TcpStream::connect(&self.host)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(READ_TIMEOUT))?;
        self.stream = Some(match &self.tls {
            None => Stream::Plain(tcp),
            Some((config, name)) => {
                let tls = rustls::ClientConnection::new(config.clone(), name.clone()).map_err(std::io::Error::other)?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(tls, tcp)))
            }
        });
        Ok(())
    }

    /// Today's signing key, derived once a day.
    fn signing_key(&mut self, date: &str) -> [u8; 32] {
        match &self.key_cache {
            Some((d, k)) if d == date => *k,
            _ => {
                let k = signing_key(&self.secret, date, &self.region);
                self.key_cache = Some((date.to_owned(), k));
                k
            }
        }
    }

    /// The request head with its SigV4 Authorization header.
    fn signed_head(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<String> {
        let amz = now_amz();
        let date = &amz[..8];
        let key = self.signing_key(date);
        let payload = if self.sign_payload { sha256_hex(body) } else { sigv4::UNSIGNED_PAYLOAD.to_owned() };
        let mut all: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        all.push(("host".into(), self.host.clone()));
        all.push(("x-amz-content-sha256".into(), payload.clone()));
        all.push(("x-amz-date".into(), amz.clone()));
        all.sort();
        let signed: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        let query_pairs = query_pairs(query);
        let scope = Scope {
            access_key: self.access.clone(),
            date: date.to_owned(),
            region: self.region.clone(),
            amz_date: amz,
            key,
        };
        let req = SignedRequest { method, path, query: &query_pairs, headers: &all };
        let sig = sigv4::sign(&scope, &req, &signed, &payload).map_err(|e| std::io::Error::other(e.message))?;
        let mut head = format!("{method} {path}{}{query} HTTP/1.1\r\n", if query.is_empty() { "" } else { "?" });
        for (n, v) in &all {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str(&format!(
            "content-length: {}\r\nauthorization: AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={sig}\r\n\r\n",
            body.len(),
            self.access,
            scope.scope_string(),
            signed.join(";")
        ));
        Ok(head)
    }
}

/// `a=1&b` as [("a", "1"), ("b", "")].
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Reads until a whole response head is in `buf`; returns it and how much of `buf` is filled.
fn read_head(stream: &mut Stream, buf: &mut [u8], method: &str) -> std::io::Result<(Head, usize)> {
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        filled += n;
        let mut hs = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(len)) => {
                let header = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                };
                let status = resp.code.unwrap_or(0);
                let declared = header("content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
                let bodiless = method == "HEAD" || status == 304 || status == 204;
                let content_length = if bodiless { 0 } else { declared };
                let etag = header("etag").map(str::to_owned);
                return Ok((Head { status, len, content_length, etag }, filled));
            }
            Ok(httparse::Status::Partial) if filled < buf.len() => continue,
            _ => return Err(std::io::Error::other("bad response head")),
        }
    }
}

/// Reads the rest of the body (its first bytes may have come with the head); keeps it only
/// when asked.
fn read_body(
    stream: &mut Stream,
    buf: &mut [u8],
    head: &Head,
    filled: usize,
    keep_body: bool,
) -> std::io::Result<Vec<u8>> {
    let mut body_out = Vec::new();
    let mut have = filled - head.len;
    if keep_body {
        body_out.extend_from_slice(&buf[head.len..filled]);
    }
    while have < head.content_length {
        let want = (head.content_length - have).min(buf.len());
        let n = stream.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "body cut short"));
        }
        if keep_body {
            body_out.extend_from_slice(&buf[..n]);
        }
        have += n;
    }
    Ok(body_out)
}
