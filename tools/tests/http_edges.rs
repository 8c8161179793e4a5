//! Bad and unusual HTTP on a raw socket against the real server: oversize and malformed
//! heads, short bodies, expired presigned URLs, malformed XML, aws-chunked signatures,
//! `Expect: 100-continue`, chunked transfer coding and keep-alive. After each, the server
//! must still serve, and nothing half-written may be visible.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use common::raw::sign_head;
use common::{code, Server};
use ferrite_s3::sigv4::{self, chunk_signature, sha256_hex, Scope};

fn connect(server: &Server) -> TcpStream {
    common::raw::connect(&server.addr, Duration::from_secs(20))
}

/// Reads one response (head + Content-Length body). Returns (status, head, body).
fn read_response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => buf.push(byte[0]),
            Err(e) => panic!("reading response head: {e}; got {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if status != 100 && status != 304 && status != 204 {
        s.read_exact(&mut body).unwrap();
    }
    (status, head, body)
}

fn is_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

async fn presigned(server: &Server, method: &str, bucket: &str, key: &str, expires: Duration) -> String {
    let c = server.client();
    let cfg = PresigningConfig::expires_in(expires).unwrap();
    let req = match method {
        "PUT" => c.put_object().bucket(bucket).key(key).presigned(cfg).await.unwrap(),
        _ => c.get_object().bucket(bucket).key(key).presigned(cfg).await.unwrap(),
    };
    let uri = req.uri().to_owned();
    uri.split_once(&server.addr).map(|(_, path)| path.to_owned()).unwrap()
}

async fn server_with_bucket(bucket: &str) -> Server {
    let server = Server::start(4);
    server.client().create_bucket().bucket(bucket).send().await.unwrap();
    server
}

async fn still_serves(server: &Server) {
    server.client().list_buckets().send().await.expect("server still serves");
}

#[tokio::test]
async fn oversize_and_malformed_heads_get_400_and_close() {
    let server = server_with_bucket("edges").await;
    let mut s = connect(&server);
    let big = "x".repeat(70_000);
    write!(s, "GET /edges HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n", server.addr).unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("RequestHeaderSectionTooLarge"));
    assert!(is_closed(&mut s));

    let mut s = connect(&server);
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    write!(s, "GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").unwrap();
    assert_eq!(read_response(&mut s).0, 400);
    assert!(is_closed(&mut s));

    let mut s = connect(&server);
    s.write_all(b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).0, 400);
    assert!(is_closed(&mut s));

    let mut s = connect(&server);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!(status, 403, "anonymous requests are refused");
    assert!(String::from_utf8_lossy(&body).contains("<Code>AccessDenied</Code>"));
    still_serves(&server).await;
}

#[tokio::test]
async fn body_shorter_than_content_length_stores_nothing() {
    let server = server_with_bucket("edges").await;
    for (key, declared, sent) in [("short-small", 100, 50), ("short-big", 3_000_000, 2_000_000)] {
        let path = presigned(&server, "PUT", "edges", key, Duration::from_secs(60)).await;
        let mut s = connect(&server);
        write!(s, "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {declared}\r\n\r\n", server.addr).unwrap();
        s.write_all(&vec![7u8; sent]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let (status, _, _) = read_response(&mut s);
        assert!(status == 400 || status == 0, "{key}: status {status}");
        let head = server.client().head_object().bucket("edges").key(key).send().await;
        assert_eq!(code(head), "NotFound", "{key}");
    }
    still_serves(&server).await;
}

#[tokio::test]
async fn presigned_urls_work_and_expire() {
    let server = server_with_bucket("edges").await;
    let put = presigned(&server, "PUT", "edges", "pre", Duration::from_secs(60)).await;
    let mut s = connect(&server);
    // Expect: 100-continue, then the body, then a second request on the same connection.
    write!(s, "PUT {put} HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", server.addr)
        .unwrap();
    let (status, _, _) = read_response(&mut s);
    assert_eq!(status, 100);
    s.write_all(b"hello").unwrap();
    assert_eq!(read_response(&mut s).0, 200);
    let get = presigned(&server, "GET", "edges", "pre", Duration::from_secs(60)).await;
    write!(s, "GET {get} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    // Chunked transfer coding.
    let put2 = presigned(&server, "PUT", "edges", "chunked", Duration::from_secs(60)).await;
    write!(
        s,
        "PUT {put2} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        server.addr
    )
    .unwrap();
    assert_eq!(read_response(&mut s).0, 200);
    let out = server.client().get_object().bucket("edges").key("chunked").send().await.unwrap();
    assert_eq!(out.body.collect().await.unwrap().into_bytes().as_ref(), b"abcde");
    // Expiry.
    let short = presigned(&server, "GET", "edges", "pre", Duration::from_secs(1)).await;
    std::thread::sleep(Duration::from_millis(2100));
    let mut s = connect(&server);
    write!(s, "GET {short} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("expired"), "{}", String::from_utf8_lossy(&body));
    // Tampered signature.
    let bad = get.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    write!(s, "GET {bad} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("SignatureDoesNotMatch"));
}

#[tokio::test]
async fn malformed_xml_is_rejected() {
    let server = server_with_bucket("edges").await;
    let c = server.client();
    let up = c.create_multipart_upload().bucket("edges").key("mx").send().await.unwrap();
    let id = up.upload_id().unwrap();
    for doc in ["<CompleteMultipartUpload><Part>", "not xml at all", "<Other/>"] {
        let mut s = connect(&server);
        let auth = signed_head(&server, "POST", "/edges/mx", &format!("uploadId={id}"), doc.len());
        s.write_all(auth.as_bytes()).unwrap();
        s.write_all(doc.as_bytes()).unwrap();
        let (status, _, body) = read_response(&mut s);
        assert_eq!(status, 400, "{doc}");
        assert!(String::from_utf8_lossy(&body).contains("MalformedXML"), "{doc}");
    }
    // The upload is untouched and can still complete.
    let e = c
        .upload_part()
        .bucket("edges")
        .key("mx")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let parts = aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .parts(aws_sdk_s3::types::CompletedPart::builder().part_number(1).e_tag(e.e_tag().unwrap()).build())
        .build();
    c.complete_multipart_upload().bucket("edges").key("mx").upload_id(id).multipart_upload(parts).send().await.unwrap();
}

/// A request head signed with UNSIGNED-PAYLOAD.
fn signed_head(server: &Server, method: &str, path: &str, query: &str, content_length: usize) -> String {
    signed_head_for_host(&server.addr, method, path, query, content_length)
}

fn signed_head_for_host(host: &str, method: &str, path: &str, query: &str, content_length: usize) -> String {
    common::raw::unsigned_head(host, method, path, query, &[("content-length", content_length.to_string())])
}

/// How to break an aws-chunked upload.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    ChunkSignature,
    TrailerChecksum,
    TrailerSignature,
}

/// An aws-chunked PUT: chunks signed when `signed`, with an optional trailing CRC32.
fn chunked_put(server: &Server, key: &str, data: &[u8], signed: bool, trailer: bool, fault: Fault) -> Vec<u8> {
    let chunks: Vec<&[u8]> = data.chunks(65_536).chain(std::iter::once(&[][..])).collect();
    let mut crc = ferrite_s3::checksum::Hasher::new(ferrite_s3::checksum::Algorithm::Crc32);
    crc.update(data);
    let mut crc_value = crc.finish_base64();
    if fault == Fault::TrailerChecksum {
        crc_value = "AAAAAA==".into();
    }
    let payload_hash = match (signed, trailer) {
        (true, false) => sigv4::STREAMING_SIGNED,
        (true, true) => sigv4::STREAMING_SIGNED_TRAILER,
        (false, _) => sigv4::STREAMING_UNSIGNED_TRAILER,
    };
    // The body's length does not depend on signature values (always 64 hex digits).
    let body = |scope: Option<&Scope>, seed: &str| -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = seed.to_owned();
        for (i, c) in chunks.iter().enumerate() {
            match scope {
                Some(scope) if signed => {
                    let mut sig = chunk_signature(scope, &prev, &sha256_hex(c));
                    prev = sig.clone();
                    if fault == Fault::ChunkSignature && i == 1 {
                        sig = "f".repeat(64);
                    }
                    out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
                }
                None if signed => {
                    out.extend_from_slice(format!("{:x};chunk-signature={}\r\n", c.len(), "0".repeat(64)).as_bytes())
                }
                _ => out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes()),
            }
            out.extend_from_slice(c);
            if !c.is_empty() || !trailer {
                out.extend_from_slice(b"\r\n");
            }
        }
        if trailer {
            let line = format!("x-amz-checksum-crc32:{crc_value}");
            out.extend_from_slice(format!("{line}\r\n").as_bytes());
            if signed {
                let mut sig = match scope {
                    Some(scope) => sigv4::trailer_signature(scope, &prev, format!("{line}\n").as_bytes()),
                    None => "0".repeat(64),
                };
                if fault == Fault::TrailerSignature {
                    sig = "e".repeat(64);
                }
                out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        out
    };
    let body_len = body(None, "").len();
    let mut headers = vec![
        ("content-length", body_len.to_string()),
        ("content-encoding", "aws-chunked".to_string()),
        ("x-amz-decoded-content-length", data.len().to_string()),
    ];
    if trailer {
        headers.push(("x-amz-trailer", "x-amz-checksum-crc32".into()));
    }
    let (head, scope, seed) = sign_head(&server.addr, "PUT", &format!("/edges/{key}"), "", &headers, payload_hash);
    let mut out = head.into_bytes();
    out.extend_from_slice(&body(Some(&scope), &seed));
    out
}

#[tokio::test]
async fn aws_chunked_signatures_and_trailing_checksums_are_verified() {
    let server = server_with_bucket("edges").await;
    let data = common::bytes(300_000, 11);
    let crc = {
        let mut h = ferrite_s3::checksum::Hasher::new(ferrite_s3::checksum::Algorithm::Crc32);
        h.update(&data);
        h.finish_base64()
    };
    // (key, signed chunks, trailer, fault, expected status, expected code)
    let cases = [
        ("signed", true, false, Fault::None, 200, ""),
        ("signed-trailer", true, true, Fault::None, 200, ""),
        ("unsigned-trailer", false, true, Fault::None, 200, ""),
        ("bad-chunk-sig", true, false, Fault::ChunkSignature, 403, "SignatureDoesNotMatch"),
        ("bad-trailer-sum", false, true, Fault::TrailerChecksum, 400, "BadDigest"),
        ("bad-signed-trailer-sum", true, true, Fault::TrailerChecksum, 400, "BadDigest"),
        ("bad-trailer-sig", true, true, Fault::TrailerSignature, 403, "SignatureDoesNotMatch"),
    ];
    for (key, signed, trailer, fault, status, code_expected) in cases {
        let mut s = connect(&server);
        s.write_all(&chunked_put(&server, key, &data, signed, trailer, fault)).unwrap();
        let (got, head, body) = read_response(&mut s);
        assert_eq!(got, status, "{key}: {}", String::from_utf8_lossy(&body));
        let c = server.client();
        if status == 200 {
            if trailer {
                assert!(
                    head.to_ascii_lowercase().contains(&format!("x-amz-checksum-crc32: {}", crc.to_ascii_lowercase())),
                    "{key}: {head}"
                );
            }
            let got = c.get_object().bucket("edges").key(key).send().await.unwrap();
            assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), data, "{key}");
        } else {
            assert!(
                String::from_utf8_lossy(&body).contains(code_expected),
                "{key}: {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(code(c.head_object().bucket("edges").key(key).send().await), "NotFound", "{key}");
        }
    }
    // The stored trailing checksum comes back with ChecksumMode=ENABLED.
    let out = server
        .client()
        .get_object()
        .bucket("edges")
        .key("unsigned-trailer")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(out.checksum_crc32(), Some(crc.as_str()));
    still_serves(&server).await;
}

#[tokio::test]
async fn virtual_host_style_addressing_with_domain() {
    let server = Server::start_with(1, &["--domain", "s3.ferrite.test"], &[]);
    server.client().create_bucket().bucket("vhost").send().await.unwrap();
    server
        .client()
        .put_object()
        .bucket("vhost")
        .key("dir/file")
        .body(ByteStream::from_static(b"virtual"))
        .send()
        .await
        .unwrap();
    let mut s = connect(&server);
    s.write_all(signed_head_for_host("vhost.s3.ferrite.test", "GET", "/dir/file", "", 0).as_bytes()).unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!((status, body.as_slice()), (200, &b"virtual"[..]));
    // Path style keeps working on the same server.
    s.write_all(signed_head_for_host(&server.addr, "GET", "/vhost/dir/file", "", 0).as_bytes()).unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!((status, body.as_slice()), (200, &b"virtual"[..]));
}

#[tokio::test]
async fn memory_budget_pushes_back_with_slow_down() {
    // A budget so small that each core admits one data stream at a time.
    let server = Server::start_with(4, &[], &[("FERRITE_MEMORY_BUDGET_MIB", "1")]);
    server.client().create_bucket().bucket("budget").send().await.unwrap();
    // Six uploads that send their head and a few bytes, then stall: at most one per core
    // holds a slot; the others must be refused after the wait.
    let mut stalled = Vec::new();
    for i in 0..6 {
        let path = presigned(&server, "PUT", "budget", &format!("slow-{i}"), Duration::from_secs(60)).await;
        let mut s = connect(&server);
        write!(s, "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 10000000\r\n\r\n", server.addr).unwrap();
        s.write_all(&[1u8; 100]).unwrap();
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut slowed = 0;
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 512];
        if let Ok(n) = s.read(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("HTTP/1.1 503") {
                assert!(text.contains("SlowDown"), "{text}");
                slowed += 1;
            }
        }
    }
    assert!(slowed >= 4, "only {slowed} of 6 stalled uploads were pushed back");
    drop(stalled);
    // Slots come back when the stalled clients go away, and nothing partial is visible.
    std::thread::sleep(Duration::from_millis(500));
    let c = server.client();
    c.put_object().bucket("budget").key("after").body(ByteStream::from(vec![5u8; 3_000_000])).send().await.unwrap();
    assert_eq!(c.list_objects_v2().bucket("budget").send().await.unwrap().key_count(), Some(1));
}

#[tokio::test]
async fn metrics_are_public_or_need_their_bearer_token() {
    use common::request;
    use ferrite_tiering::outbound::http::Url;
    let get = |server: &Server, auth: Option<&str>| {
        let url = Url::parse(&format!("{}/ferrite/metrics", server.endpoint)).unwrap();
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let reply = request("GET", &url, &headers, b"").unwrap();
        (reply.status, reply.text())
    };
    let public = Server::start(4);
    let (status, text) = get(&public, None);
    assert_eq!(status, 200);
    assert!(text.contains("ferrite_drives{state=\"online\"} 4"), "{text}");
    assert!(text.contains("ferrite_kms_requests_total{backend=\"none\",op=\"decrypt\",outcome=\"ok\"} 0"), "{text}");
    // Responses are counted: one 4xx (an unsigned request) shows up in the next scrape.
    let url = Url::parse(&format!("{}/bucket", public.endpoint)).unwrap();
    assert_eq!(request("GET", &url, &[], b"").unwrap().status, 403);
    let (_, text) = get(&public, None);
    assert!(text.contains("ferrite_http_responses_total{class=\"4xx\"} 1"), "{text}");
    let guarded = Server::start_with(4, &[], &[("FERRITE_METRICS_TOKEN", "scrape-me")]);
    assert_eq!(get(&guarded, None).0, 403);
    assert_eq!(get(&guarded, Some("Bearer wrong")).0, 403);
    assert_eq!(get(&guarded, Some("Bearer scrape-me")).0, 200);
    still_serves(&guarded).await;
}
