//! Connection handling: read a request, authenticate, route to an operation, write the
//! response (streaming object bodies block by block), keep the connection alive.

use std::rc::Rc;
use std::sync::Arc;

use ferrite_engine::{Chunk, Engine};
use monoio::buf::IoBuf;
use monoio::net::TcpStream;

use crate::body::{Body, Mode};
use crate::error::{Code, S3Error, S3Result};
use crate::http::{reason, ClientTimeouts, Conn, RawBody, Request, Stream};
use crate::sigv4::{self, Credentials, SignedRequest};
use crate::xml::{escape, XML_DECL};

/// A request body left unread after the response is drained up to this size so that the
/// connection can be reused; beyond it the connection is closed.
const DRAIN_BYTES_MAX: u64 = 1 << 20;
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Config {
    pub root_user: String,
    pub root_password: String,
    /// Base domain for virtual-host-style addressing (bucket.domain).
    pub domain: Option<String>,
    pub region: String,
    /// How long a silent client is kept (FERRITE_CLIENT_TIMEOUT_SECS shortens it for tests).
    pub client_timeouts: ClientTimeouts,
    /// Encrypt every new object (SSE-S3) unless the request or bucket says otherwise.
    pub encrypt_everything: bool,
    /// Accept SSE-C keys over plain HTTP (tests only; AWS refuses them).
    pub sse_c_allow_http: bool,
    /// The bearer token `GET /ferrite/metrics` needs (None: the metrics are public).
    pub metrics_token: Option<String>,
}

impl Credentials for Config {
    fn secret_for(&self, access_key: &str) -> Option<String> {
        (access_key == self.root_user).then(|| self.root_password.clone())
    }
}

pub struct Ctx {
    pub engine: Engine,
    pub config: Arc<Config>,
    /// This core's share of the memory budget for requests that move object data.
    pub budget: Rc<crate::budget::Budget>,
    /// Where object keys are sealed (None: no KMS configured; SSE-C still works).
    pub kms: Option<Arc<crate::kms::Kms>>,
    /// The tier mover: reads, restores and deletes of transitioned objects, tiers, lifecycle.
    pub mover: ferrite_tiering::Mover,
    /// This core's ETag MD5 batcher (md5x.rs).
    pub md5: crate::md5x::CoreBatcher,
}

pub enum RespBody {
    Empty,
    Bytes(Vec<u8>),
    /// An object body streamed block by block; the slot is held until it is sent.
    Object(crate::sse::ObjectStream, crate::budget::Slot),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: RespBody,
    /// Content-Length to announce when it differs from the body (HEAD, streamed objects).
    pub content_length: Option<u64>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: RespBody::Empty, content_length: None }
    }
    pub fn xml(body: Vec<u8>) -> Self {
        let mut r = Self::new(200);
        r.headers.push(("content-type".into(), "application/xml".into()));
        r.body = RespBody::Bytes(body);
        r
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// The parts of a request an operation needs, decoded.
pub struct Call<'a> {
    pub req: &'a Request,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub query: Vec<(String, String)>,
    pub auth: sigv4::Auth,
    pub request_id: String,
}

impl Call<'_> {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.req.header(name)
    }
    pub fn path(&self) -> String {
        match (&self.bucket, &self.key) {
            (Some(b), Some(k)) => format!("/{b}/{k}"),
            (Some(b), None) => format!("/{b}"),
            _ => "/".into(),
        }
    }
}

pub fn percent_decode(s: &str) -> S3Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| S3Error::new(Code::InvalidArgument, "the request URI is not valid UTF-8"))
}

pub fn parse_query(raw: &str) -> S3Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn new_request_id() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    sigv4::hex(&bytes).to_ascii_uppercase()
}

fn now_secs() -> i64 {
    ferrite_engine::now_ms() / 1000
}

/// Serves one accepted connection; with `tls`, after the TLS handshake.
pub async fn serve_connection(ctx: Rc<Ctx>, stream: TcpStream, tls: Option<Rc<monoio_rustls::TlsAcceptor>>) {
    let _ = stream.set_nodelay(true);
    let stream = match tls {
        None => Stream::Plain(stream),
        Some(acceptor) => match monoio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
            // A failed or stalled handshake has no HTTP to answer; drop the connection.
            _ => return,
        },
    };
    let secure = matches!(stream, Stream::Tls(_));
    let mut conn = Conn::with_timeouts(stream, ctx.config.client_timeouts);
    loop {
        let request_id = new_request_id();
        let mut req = match conn.read_head().await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                let resp = error_response(&e, "/", &request_id, false);
                let _ = write_response(&mut conn, resp, &request_id, true).await;
                return;
            }
        };
        req.secure = secure;
        let head_only = req.method == "HEAD";
        let (resp, mut close) = {
            let raw = match RawBody::new(&mut conn, &req) {
                Ok(raw) => raw,
                Err(e) => {
                    let resp = error_response(&e, &req.raw_path, &request_id, head_only);
                    let _ = write_response(&mut conn, resp, &request_id, true).await;
                    return;
                }
            };
            let mut raw = Some(raw);
            let outcome = dispatch(&ctx, &req, &mut raw, &request_id).await;
            let (resp, close) = match outcome {
                Ok(resp) => (resp, false),
                Err(e) => {
                    let close = e.close;
                    (error_response(&e, &req.raw_path, &request_id, head_only), close)
                }
            };
            let body_left = match &mut raw {
                Some(raw) if !close => !raw.is_done() && !raw.drain(DRAIN_BYTES_MAX).await,
                _ => false,
            };
            (resp, close || body_left)
        };
        close |= !req.keep_alive;
        if write_response(&mut conn, resp, &request_id, close).await.is_err() || close {
            return;
        }
    }
}

pub fn error_response(e: &S3Error, resource: &str, request_id: &str, head_only: bool) -> Response {
    let mut resp = Response::new(e.code.status());
    if head_only || e.code == Code::NotModified {
        return resp;
    }
    let body = format!(
        "{XML_DECL}<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
        e.code.as_str(),
        escape(&e.message),
        escape(resource),
        request_id
    );
    resp.headers.push(("content-type".into(), "application/xml".into()));
    resp.body = RespBody::Bytes(body.into_bytes());
    resp
}

async fn write_response(conn: &mut Conn, resp: Response, request_id: &str, close: bool) -> std::io::Result<()> {
    crate::metrics::response(resp.status);
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    let body_len = match &resp.body {
        RespBody::Bytes(b) => b.len() as u64,
        _ => 0,
    };
    let length = resp.content_length.unwrap_or(body_len);
    if resp.status != 304 && resp.status != 204 {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    for (name, value) in &resp.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("x-amz-request-id: {request_id}\r\nServer: Ferrite\r\n"));
    head.push_str(&format!("Date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now())));
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    match resp.body {
        RespBody::Empty => conn.write_all(head.into_bytes()).await,
        RespBody::Bytes(body) => {
            let mut out = head.into_bytes();
            out.extend_from_slice(&body);
            conn.write_all(out).await
        }
        RespBody::Object(mut reader, _slot) => {
            conn.write_all(head.into_bytes()).await?;
            loop {
                match reader.next_chunk().await {
                    // A block's range goes out as it is, without a copy.
                    Ok(Some(Chunk::Shared(block, range))) => conn.write_all(block.slice(range)).await?,
                    Ok(Some(Chunk::Owned(bytes))) => conn.write_all(bytes).await?,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        // Headers are gone: the only honest signal left is to cut the connection.
                        tracing::warn!("read failed mid-response: {e}");
                        return Err(std::io::Error::other(e.to_string()));
                    }
                }
            }
        }
    }
}

fn split_target(ctx: &Ctx, req: &Request) -> S3Result<(Option<String>, Option<String>)> {
    let path = percent_decode(&req.raw_path)?;
    let host = req.header("host").unwrap_or("");
    let host = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host);
    let vhost_bucket =
        ctx.config.domain.as_deref().and_then(|d| host.strip_suffix(d)?.strip_suffix('.')).filter(|b| !b.is_empty());
    let rest = path.strip_prefix('/').unwrap_or(&path);
    if let Some(bucket) = vhost_bucket {
        let key = (!rest.is_empty()).then(|| rest.to_owned());
        return Ok((Some(bucket.to_owned()), key));
    }
    match rest.split_once('/') {
        Some((b, k)) if !k.is_empty() => Ok((Some(b.to_owned()), Some(k.to_owned()))),
        Some((b, _)) => Ok((Some(b.to_owned()), None)),
        None if rest.is_empty() => Ok((None, None)),
        None => Ok((Some(rest.to_owned()), None)),
    }
}

async fn dispatch(ctx: &Ctx, req: &Request, raw: &mut Option<RawBody<'_>>, request_id: &str) -> S3Result<Response> {
    let (bucket, key) = split_target(ctx, req)?;
    // Path-style only: with virtual-host addressing this is key "ferrite/metrics" of a bucket.
    if req.method == "GET"
        && (bucket.as_deref(), key.as_deref()) == (Some(crate::admin::RESERVED_BUCKET), Some("metrics"))
    {
        return crate::metrics::answer(ctx, req.header("authorization"))
            .ok_or_else(|| S3Error::new(Code::AccessDenied, "The metrics need the bearer token."));
    }
    let query = parse_query(&req.raw_query)?;
    let path = percent_decode(&req.raw_path)?;
    let signed = SignedRequest { method: &req.method, path: &path, query: &query, headers: &req.headers };
    let now = now_secs();
    let auth = if let Some(authorization) = req.header("authorization") {
        sigv4::verify_header(&signed, authorization, ctx.config.as_ref(), now)?
    } else if query.iter().any(|(k, _)| k == "X-Amz-Signature") {
        sigv4::verify_presigned(&signed, ctx.config.as_ref(), now)?
    } else {
        return Err(S3Error::new(Code::AccessDenied, "Access Denied"));
    };
    let presigned = req.header("authorization").is_none();
    let mode = payload_mode(&auth, presigned)?;
    let decoded_len = req.header("x-amz-decoded-content-length").and_then(|v| v.parse().ok());
    let call = Call { req, bucket, key, query, auth, request_id: request_id.to_owned() };
    let Some(raw_body) = raw.take() else {
        return Err(S3Error::new(Code::InternalError, "request body taken twice"));
    };
    let mut body = Body::new(raw_body, mode, decoded_len);
    let result = if call.bucket.as_deref() == Some(crate::admin::RESERVED_BUCKET) {
        crate::admin::route(ctx, &call, &mut body).await
    } else {
        crate::ops::route(ctx, &call, &mut body).await
    };
    // Hand the raw body back so the connection loop can drain what the operation left.
    *raw = Some(body.into_raw());
    result
}

fn payload_mode(auth: &sigv4::Auth, presigned: bool) -> S3Result<Mode> {
    if presigned {
        return Ok(Mode::Plain { sha256: None });
    }
    let hash = auth.payload_hash.as_str();
    Ok(match hash {
        sigv4::UNSIGNED_PAYLOAD => Mode::Plain { sha256: None },
        sigv4::STREAMING_SIGNED => {
            Mode::AwsChunked { signing: Some((auth.scope.clone(), auth.signature.clone())), trailer: false }
        }
        sigv4::STREAMING_SIGNED_TRAILER => {
            Mode::AwsChunked { signing: Some((auth.scope.clone(), auth.signature.clone())), trailer: true }
        }
        sigv4::STREAMING_UNSIGNED_TRAILER => Mode::AwsChunked { signing: None, trailer: true },
        h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Mode::Plain { sha256: Some(h.to_ascii_lowercase()) }
        }
        _ => {
            return Err(S3Error::new(
                Code::InvalidArgument,
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-* or a SHA-256 hex digest",
            ))
        }
    })
}
