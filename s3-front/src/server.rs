//! Connection handling, the top of the crate: read a request, authenticate it, route it to
//! its endpoint (router.rs) and run its operation (ops/), write the response (streaming
//! object bodies block by block), keep the connection alive.

use std::rc::Rc;

use ferrite_engine::Chunk;
use monoio::buf::IoBuf;
use monoio::net::TcpStream;

use crate::body::{Body, PayloadMode};
use crate::error::{Code, S3Error, S3Result};
use crate::http::{header_value_is_safe, reason, Conn, RawBody, Request, Stream};
use crate::ops;
use crate::request::{Call, Ctx, RespBody, Response};
use crate::router::{self, parse_query, Endpoint, Query, Target};
use crate::sigv4::{self, SignedRequest};
use crate::xml::{escape, XML_DECL};

/// A request body left unread after the response is drained up to this size so that the
/// connection can be reused; beyond it the connection is closed.
const DRAIN_BYTES_MAX: u64 = 1 << 20;
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    let peer = stream.peer_addr().ok().map(|a| a.ip());
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
        req.peer = peer;
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

/// The response head. A header whose name is not a token or whose value holds a control
/// character (CR, LF, NUL, DEL ... anything below 0x20 but tab) is never written: it could
/// end the head early and inject headers or a second response. Values that carry request
/// data are checked where they enter (400); this is the last line, a bug if it ever fires.
fn response_head(resp: &Response, request_id: &str, close: bool) -> String {
    use std::fmt::Write as _;
    let mut head = String::with_capacity(256);
    let _ = write!(head, "HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    let body_len = match &resp.body {
        RespBody::Bytes(b) => b.len() as u64,
        _ => 0,
    };
    let length = resp.content_length.unwrap_or(body_len);
    if resp.status != 304 && resp.status != 204 {
        let _ = write!(head, "Content-Length: {length}\r\n");
    }
    for (name, value) in &resp.headers {
        if !header_is_safe(name, value) {
            debug_assert!(false, "response header {name:?} with a control character: {value:?}");
            tracing::error!(header = %name.escape_debug(), "response header with a control character not written");
            continue;
        }
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(head, "x-amz-request-id: {request_id}\r\nServer: Ferrite\r\n");
    let _ = write!(head, "Date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now()));
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

/// A header that can be written as it is: a non-empty token for a name (RFC 9110 section
/// 5.1) and a value with no control character but tab.
fn header_is_safe(name: &str, value: &str) -> bool {
    let name_ok =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    name_ok && header_value_is_safe(value)
}

async fn write_response(conn: &mut Conn, resp: Response, request_id: &str, close: bool) -> std::io::Result<()> {
    crate::metrics::response(resp.status);
    conn.start_response();
    let head = response_head(&resp, request_id, close);
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

/// Reads the request's target, authenticates it, routes it to its endpoint and runs that.
async fn dispatch(ctx: &Ctx, req: &Request, raw: &mut Option<RawBody<'_>>, request_id: &str) -> S3Result<Response> {
    let target = Target::parse(req, ctx.config.domain.as_deref())?;
    if let Some(Endpoint::Metrics) = router::unsigned_endpoint(&req.method, &target) {
        return ops::admin::metrics(ctx, req);
    }
    let query = parse_query(&req.raw_query)?;
    let auth = authenticate(ctx, req, &target.path, &query)?;
    let mode = PayloadMode::of(&auth)?;
    let decoded_len = req.header("x-amz-decoded-content-length").and_then(|v| v.parse().ok());
    let endpoint = router::route(req, &target, Query(&query))?;
    // Authorization (IAM) goes here: `endpoint.access()` names every permission it needs.
    let call = Call { req, auth, request_id };
    let Some(raw_body) = raw.take() else {
        return Err(S3Error::new(Code::InternalError, "request body taken twice"));
    };
    let mut body = Body::new(raw_body, mode, decoded_len);
    let result = ops::run(ctx, &call, endpoint, &mut body).await;
    // Hand the raw body back so the connection loop can drain what the operation left.
    *raw = Some(body.into_raw());
    result
}

/// SigV4: the Authorization header, else a presigned URL's query; else AccessDenied.
fn authenticate(ctx: &Ctx, req: &Request, path: &str, query: &[(String, String)]) -> S3Result<sigv4::Auth> {
    let signed = SignedRequest { method: &req.method, path, query, headers: &req.headers };
    let now = now_secs();
    if let Some(authorization) = req.header("authorization") {
        sigv4::verify_header(&signed, authorization, ctx.config.as_ref(), now)
    } else if query.iter().any(|(k, _)| k == "X-Amz-Signature") {
        sigv4::verify_presigned(&signed, ctx.config.as_ref(), now)
    } else {
        Err(S3Error::new(Code::AccessDenied, "Access Denied"))
    }
}
