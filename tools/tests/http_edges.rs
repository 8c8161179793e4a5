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
use common::{code, Server};
use ferrite_s3::sigv4::{self, chunk_signature, sha256_hex, signing_key, Scope};

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
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

/// Builds a STREAMING-AWS4-HMAC-SHA256-PAYLOAD request by hand; `corrupt` breaks the
/// second chunk's signature.
fn streaming_put(server: &Server, key: &str, data: &[u8], chunk: usize, corrupt: bool) -> Vec<u8> {
    let (date, amz_date) = now_dates();
    let key_bytes = signing_key(common::PASSWORD, &date, "us-east-1");
    let scope = Scope {
        access_key: common::USER.into(),
        date: date.clone(),
        region: "us-east-1".into(),
        amz_date: amz_date.clone(),
        key: key_bytes,
    };
    let chunks: Vec<&[u8]> = data.chunks(chunk).chain(std::iter::once(&[][..])).collect();
    let mut body_len = 0;
    for c in &chunks {
        body_len += format!("{:x};chunk-signature={}\r\n", c.len(), "0".repeat(64)).len() + c.len() + 2;
    }
    let host = server.addr.clone();
    let path = format!("/edges/{key}");
    let signed_headers = "content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length";
    let canonical = format!(
        "PUT\n{path}\n\ncontent-length:{body_len}\nhost:{host}\nx-amz-content-sha256:{}\nx-amz-date:{amz_date}\nx-amz-decoded-content-length:{}\n\n{signed_headers}\n{}",
        sigv4::STREAMING_SIGNED,
        data.len(),
        sigv4::STREAMING_SIGNED
    );
    let to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}", scope.scope_string(), sha256_hex(canonical.as_bytes()));
    let seed = hmac_hex(&scope.key, to_sign.as_bytes());
    let mut out = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {body_len}\r\nx-amz-content-sha256: {}\r\nx-amz-date: {amz_date}\r\nx-amz-decoded-content-length: {}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed_headers}, Signature={seed}\r\n\r\n",
        sigv4::STREAMING_SIGNED,
        data.len(),
        common::USER,
        scope.scope_string()
    )
    .into_bytes();
    let mut prev = seed;
    for (i, c) in chunks.iter().enumerate() {
        let mut sig = chunk_signature(&scope, &prev, &sha256_hex(c));
        prev = sig.clone();
        if corrupt && i == 1 {
            sig = "f".repeat(64);
        }
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A request head signed in its Authorization header with UNSIGNED-PAYLOAD.
fn signed_head(server: &Server, method: &str, path: &str, query: &str, content_length: usize) -> String {
    signed_head_for_host(&server.addr, method, path, query, content_length)
}

fn signed_head_for_host(host: &str, method: &str, path: &str, query: &str, content_length: usize) -> String {
    let (date, amz_date) = now_dates();
    let scope = Scope {
        access_key: common::USER.into(),
        date: date.clone(),
        region: "us-east-1".into(),
        amz_date: amz_date.clone(),
        key: signing_key(common::PASSWORD, &date, "us-east-1"),
    };
    let signed_headers = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "{method}\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{amz_date}\n\n{signed_headers}\nUNSIGNED-PAYLOAD"
    );
    let to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}", scope.scope_string(), sha256_hex(canonical.as_bytes()));
    let signature = hmac_hex(&scope.key, to_sign.as_bytes());
    format!(
        "{method} {path}{}{query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {content_length}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-date: {amz_date}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}\r\n\r\n",
        if query.is_empty() { "" } else { "?" },
        common::USER,
        scope.scope_string()
    )
}

/// Today's credential date and the current X-Amz-Date.
fn now_dates() -> (String, String) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let amz_date = sigv4::format_amz_date(now);
    (amz_date[..8].to_owned(), amz_date)
}

fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    sigv4::hex(&mac.finalize().into_bytes())
}

#[tokio::test]
async fn aws_chunked_signatures_are_verified() {
    let server = server_with_bucket("edges").await;
    let data = common::bytes(300_000, 11);
    let mut s = connect(&server);
    s.write_all(&streaming_put(&server, "good", &data, 65_536, false)).unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let got = server.client().get_object().bucket("edges").key("good").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), data);
    let mut s = connect(&server);
    s.write_all(&streaming_put(&server, "bad", &data, 65_536, true)).unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("SignatureDoesNotMatch"));
    assert_eq!(code(server.client().head_object().bucket("edges").key("bad").send().await), "NotFound");
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
