//! The request pipeline before an operation, on the server's real connection code: request
//! heads (httparse, the head size and header count limits, pipelined requests), the body
//! framing (Content-Length, chunked, 100-continue) drained as the connection loop drains
//! it, then what `dispatch` does with a head: target, query, SigV4 and the router.
//!
//! Input: one byte choosing the size of the pieces the client writes, then the bytes it
//! sends.

#![no_main]

use ferrite_fuzz::{piece_bytes, split_first, with_connection};
use ferrite_s3::http::{RawBody, Request};
use ferrite_s3::router::{self, parse_query, Query, Target};
use ferrite_s3::sigv4::{self, Credentials, SignedRequest};
use libfuzzer_sys::fuzz_target;

/// What the server drains of an unread body before it closes instead (server.rs).
const DRAIN_BYTES_MAX: u64 = 1 << 20;
/// Requests handled per connection at most (an input is at most a few hundred KiB).
const REQUESTS_MAX: usize = 1000;
/// The server's clock: the day of the dictionary's dates.
const NOW_SECS: i64 = 1_767_225_600;

struct Root;

impl Credentials for Root {
    fn secret_for(&self, access_key: &str) -> Option<String> {
        (access_key == ferrite_fuzz::chunked::ACCESS_KEY).then(|| ferrite_fuzz::chunked::SECRET_KEY.to_owned())
    }

    fn region(&self) -> &str {
        ferrite_fuzz::chunked::REGION
    }
}

/// `dispatch` without the operation: every step that reads the head.
fn route(req: &Request) {
    let Ok(target) = Target::parse(req, Some("s3.example.com")) else { return };
    let _ = router::unsigned_endpoint(&req.method, &target);
    let Ok(query) = parse_query(&req.raw_query) else { return };
    let signed = SignedRequest { method: &req.method, path: &target.path, query: &query, headers: &req.headers };
    let _ = match req.header("authorization") {
        Some(authorization) => sigv4::verify_header(&signed, authorization, &Root, NOW_SECS),
        None => sigv4::verify_presigned(&signed, &Root, NOW_SECS),
    };
    if let Ok(endpoint) = router::route(req, &target, Query(&query)) {
        let _ = endpoint.name();
        for access in endpoint.access() {
            let _ = access.resource.arn();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (selector, wire) = split_first(data);
    with_connection(wire, piece_bytes(selector, wire.len()), async |conn| {
        for _ in 0..REQUESTS_MAX {
            let req = match conn.read_head().await {
                Ok(Some(req)) => req,
                Ok(None) | Err(_) => return,
            };
            route(&req);
            let Ok(mut body) = RawBody::new(conn, &req) else { return };
            if !body.is_done() && !body.drain(DRAIN_BYTES_MAX).await {
                return;
            }
            if !req.keep_alive {
                return;
            }
        }
    });
});
