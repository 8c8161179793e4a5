//! Protocol holes a hostile client or network could use, against the real server (issue 16,
//! items 5 to 9): aws-chunked lines that made memory grow with the bytes on the wire, Range
//! positions that wrapped, presigned PUTs whose signed payload hash went unchecked,
//! signatures for another region, and the admin API: https with a verified certificate,
//! bodies that must be signed, tier secrets never accepted in clear text from another
//! machine. Each test fails on the commit before the fix.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_s3::config::Region;
use aws_sdk_s3::presigning::PresigningConfig;
use common::netns::NetNs;
use common::raw::{self, sign_head, sign_head_in};
use common::{code, Server, PASSWORD, USER};
use ferrite_s3::sigv4::{self, chunk_signature, sha256_hex, signing_key, uri_encode, Scope, SignedRequest};

const BUCKET: &str = "proto";
/// How much the server's resident memory may grow while it decodes a body of 128 MiB on the
/// wire (it grew by all of it): one line, one read, the data stream's block and frames, and
/// allocator slack.
const RSS_GROWTH_MAX_BYTES: u64 = 48 << 20;
/// Bytes a client may push into a body of endless trailer lines before the server has read
/// its limit and closed (kernel socket buffers on loopback hold a few MiB of the rest).
const TRAILER_FLOOD_SENT_MAX_BYTES: usize = 32 << 20;

fn connect(server: &Server) -> TcpStream {
    raw::connect(&server.addr, Duration::from_secs(60))
}

fn vm_rss_bytes(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).expect("/proc status");
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS");
    kib.trim().trim_end_matches("kB").trim().parse::<u64>().expect("VmRSS in kB") << 10
}

/// One response: status, head and body (by Content-Length).
fn read_response(s: &mut impl Read) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((status, head, body))
}

/// Sends `request` on a new connection and reads the answer.
fn exchange(server: &Server, request: &[u8]) -> (u16, String, String) {
    let mut s = connect(server);
    s.write_all(request).unwrap();
    let (status, head, body) = read_response(&mut s).unwrap();
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

async fn started(envs: &[(&str, &str)]) -> Server {
    let server = Server::start_with(4, &[], envs);
    server.client().create_bucket().bucket(BUCKET).send().await.unwrap();
    server
}

async fn stored(server: &Server, key: &str) -> Option<Vec<u8>> {
    common::get_opt(&server.client(), BUCKET, key).await
}

/// Item 5: a signed streaming upload of one-byte chunks whose header lines each carry a
/// 3.9 KiB extension, written in pieces that end inside lines. Before, the decoder kept
/// every received byte (300 MB on the wire, 300 MB more RSS); now it holds at most a line
/// and a read, and the upload still succeeds (the lines are within the limit).
#[tokio::test]
async fn aws_chunked_lines_cut_mid_line_do_not_grow_memory() {
    let server = started(&[]).await;
    common::put_or_code(&server.client(), BUCKET, "warm-up", &common::bytes(300_000, 1)).await.unwrap();
    let before = vm_rss_bytes(&server);
    let data = common::bytes(32 << 10, 7);
    let pad = "x".repeat(ferrite_s3::body::CHUNK_HEADER_BYTES_MAX - 200);
    let line = |size: usize, sig: &str| format!("{size:x};pad={pad};chunk-signature={sig}\r\n");
    let zeros = "0".repeat(64);
    let body_len = data.len() * (line(1, &zeros).len() + 3) + line(0, &zeros).len() + 2;
    let headers = [
        ("content-length", body_len.to_string()),
        ("content-encoding", "aws-chunked".to_owned()),
        ("x-amz-decoded-content-length", data.len().to_string()),
    ];
    let (head, scope, seed) =
        sign_head(&server.addr, "PUT", "/proto/long-lines", "", &headers, sigv4::STREAMING_SIGNED);
    let mut s = connect(&server);
    s.write_all(head.as_bytes()).unwrap();
    let (mut prev, mut pending, mut sent, mut rss_most) = (seed, Vec::new(), 0usize, before);
    for piece in data.chunks(1).chain(std::iter::once(&[][..])) {
        let sig = chunk_signature(&scope, &prev, &sha256_hex(piece));
        pending.extend_from_slice(line(piece.len(), &sig).as_bytes());
        pending.extend_from_slice(piece);
        pending.extend_from_slice(b"\r\n");
        prev = sig;
        // 3,000-byte writes: each ends inside a 4 KiB line.
        while pending.len() >= 3000 {
            s.write_all(&pending[..3000]).unwrap();
            pending.drain(..3000);
            sent += 3000;
            if sent % (4 << 20) < 3000 {
                rss_most = rss_most.max(vm_rss_bytes(&server));
            }
        }
    }
    s.write_all(&pending).unwrap();
    let (status, _, body) = read_response(&mut s).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(sent > 120 << 20, "only {sent} bytes went over the wire");
    let grew = rss_most.saturating_sub(before);
    assert!(grew < RSS_GROWTH_MAX_BYTES, "RSS grew by {} MiB for {} MiB on the wire", grew >> 20, sent >> 20);
    assert_eq!(stored(&server, "long-lines").await.as_deref(), Some(&data[..]));
}

/// Item 5 (and the trailer half of item 2): `0\r\n` then trailer lines without end. Before,
/// the server read them all (here 64 MiB, in the issue 4 GB); now it refuses the body once
/// its trailer section passes 8 KiB and closes the connection.
#[tokio::test]
async fn endless_trailer_lines_are_cut_off() {
    let server = started(&[]).await;
    let declared: usize = 64 << 20;
    let headers = [
        ("content-length", declared.to_string()),
        ("content-encoding", "aws-chunked".to_owned()),
        ("x-amz-decoded-content-length", "0".to_owned()),
        ("x-amz-trailer", "x-amz-checksum-crc32".to_owned()),
    ];
    let path = "/proto/endless-trailer";
    let (head, _, _) = sign_head(&server.addr, "PUT", path, "", &headers, sigv4::STREAMING_UNSIGNED_TRAILER);
    let mut s = connect(&server);
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(b"0\r\n").unwrap();
    let flood = b"x-amz-meta-a:b\r\n".repeat(4096);
    let mut sent = 3;
    while sent + flood.len() <= declared && s.write_all(&flood).is_ok() {
        sent += flood.len();
    }
    assert!(sent < TRAILER_FLOOD_SENT_MAX_BYTES, "the server took {} MiB of trailer lines", sent >> 20);
    // The answer, if it arrived before the reset.
    if let Ok((status, _, body)) = read_response(&mut s) {
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("InvalidRequest"));
    }
    assert_eq!(stored(&server, "endless-trailer").await, None);
    common::put_or_code(&server.client(), BUCKET, "after", b"still serving").await.unwrap();
}

/// Item 7: Range and x-amz-copy-source-range positions at and beyond 2^64 - 1. Before,
/// `bytes=5-18446744073709551615` on 10 bytes answered 206 with Content-Length
/// 18446744073709551611 (a debug build panicked).
#[tokio::test]
async fn range_positions_beyond_64_bits_never_wrap() {
    let server = started(&[]).await;
    let c = server.client();
    common::put_or_code(&c, BUCKET, "ten", b"0123456789").await.unwrap();
    let max = u64::MAX.to_string();
    let huge = "9".repeat(30);
    for range in [format!("bytes=5-{max}"), format!("bytes=5-{huge}")] {
        let out = c.get_object().bucket(BUCKET).key("ten").range(&range).send().await.unwrap();
        assert_eq!(out.content_range(), Some("bytes 5-9/10"), "{range}");
        assert_eq!(out.content_length(), Some(5), "{range}");
        assert_eq!(out.body.collect().await.unwrap().into_bytes().as_ref(), b"56789", "{range}");
        let head = c.head_object().bucket(BUCKET).key("ten").range(&range).send().await.unwrap();
        assert_eq!(head.content_length(), Some(5), "HEAD {range}");
    }
    let suffix = c.get_object().bucket(BUCKET).key("ten").range(format!("bytes=-{max}")).send().await.unwrap();
    assert_eq!(suffix.content_range(), Some("bytes 0-9/10"));
    for range in [format!("bytes={max}-"), format!("bytes={huge}-{huge}"), format!("bytes={max}-{max}")] {
        let got = c.get_object().bucket(BUCKET).key("ten").range(&range).send().await;
        assert_eq!(code(got), "InvalidRange", "{range}");
    }
    // The raw answer: exact head, the connection still usable.
    let head = raw::unsigned_head(&server.addr, "GET", "/proto/ten", "", &[("range", format!("bytes=5-{max}"))]);
    let (status, head, body) = exchange(&server, head.as_bytes());
    assert_eq!((status, body.as_str()), (206, "56789"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-range: bytes 5-9/10"), "{head}");

    let upload = c.create_multipart_upload().bucket(BUCKET).key("copy").send().await.unwrap();
    let id = upload.upload_id().unwrap();
    let copy = |range: String| {
        c.upload_part_copy()
            .bucket(BUCKET)
            .key("copy")
            .upload_id(id)
            .part_number(1)
            .copy_source(format!("{BUCKET}/ten"))
            .copy_source_range(range)
            .send()
    };
    assert_eq!(code(copy(format!("bytes=5-{max}")).await), "InvalidArgument");
    assert_eq!(code(copy(format!("bytes=5-{huge}")).await), "InvalidArgument");
    assert_eq!(code(copy(format!("bytes={max}-{max}")).await), "InvalidRequest");
    assert_eq!(code(copy("bytes=5-4".into()).await), "InvalidArgument");
    copy("bytes=2-6".into()).await.expect("a range inside the source copies");
}

/// A presigned PUT of `/proto/KEY`, signed as AWS signs presigned URLs (UNSIGNED-PAYLOAD in
/// the canonical request), naming `query_hash` in X-Amz-Content-Sha256 and/or `header_hash`
/// in a signed x-amz-content-sha256 header. Returns the request head without its final CRLF.
fn presigned_put(server: &Server, key: &str, query_hash: Option<&str>, header_hash: Option<&str>) -> String {
    let (date, amz_date) = raw::now_dates();
    let scope = Scope {
        access_key: USER.into(),
        date: date.clone(),
        region: raw::REGION.into(),
        amz_date: amz_date.clone(),
        key: signing_key(PASSWORD, &date, raw::REGION),
    };
    let path = format!("/{BUCKET}/{key}");
    let mut query: Vec<(String, String)> = vec![
        ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
        ("X-Amz-Credential".into(), format!("{USER}/{}", scope.scope_string())),
        ("X-Amz-Date".into(), amz_date),
        ("X-Amz-Expires".into(), "300".into()),
    ];
    if let Some(hash) = query_hash {
        query.push(("X-Amz-Content-Sha256".into(), hash.into()));
    }
    let mut headers = vec![("host".to_owned(), server.addr.clone())];
    let mut signed = vec!["host"];
    if let Some(hash) = header_hash {
        headers.push(("x-amz-content-sha256".into(), hash.into()));
        signed.push("x-amz-content-sha256");
    }
    query.push(("X-Amz-SignedHeaders".into(), signed.join(";")));
    let req = SignedRequest { method: "PUT", path: &path, query: &query, headers: &headers };
    let signature = sigv4::sign(&scope, &req, &signed, sigv4::UNSIGNED_PAYLOAD).unwrap();
    query.push(("X-Amz-Signature".into(), signature));
    let query: Vec<String> =
        query.iter().map(|(k, v)| format!("{}={}", uri_encode(k, true), uri_encode(v, true))).collect();
    let mut head = format!("PUT {path}?{} HTTP/1.1\r\n", query.join("&"));
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head
}

/// Item 8: a presigned PUT that signs a payload hash (in the query, or as a signed header)
/// stores only a body with that hash. Before, any body was stored.
#[tokio::test]
async fn presigned_puts_must_match_the_payload_hash_they_sign() {
    let server = started(&[]).await;
    let (good, bad) = (b"the body that was signed".to_vec(), b"a body swapped on the way".to_vec());
    let hash = sha256_hex(&good);
    let send = |head: String, body: &[u8]| {
        let mut request = format!("{head}content-length: {}\r\n\r\n", body.len()).into_bytes();
        request.extend_from_slice(body);
        exchange(&server, &request)
    };
    for (key, query_hash, header_hash) in
        [("in-query", Some(hash.as_str()), None), ("in-header", None, Some(hash.as_str()))]
    {
        let (status, _, body) = send(presigned_put(&server, key, query_hash, header_hash), &bad);
        assert_eq!(status, 400, "{key}: {body}");
        assert!(body.contains("XAmzContentSHA256Mismatch"), "{key}: {body}");
        assert_eq!(stored(&server, key).await, None, "{key}: a mismatching body was stored");
        let (status, _, body) = send(presigned_put(&server, key, query_hash, header_hash), &good);
        assert_eq!(status, 200, "{key}: {body}");
        assert_eq!(stored(&server, key).await, Some(good.clone()), "{key}");
    }
    // Without a hash, a presigned PUT takes any body, as before.
    let (status, _, body) = send(presigned_put(&server, "no-hash", None, None), &bad);
    assert_eq!(status, 200, "{body}");
    // The SDK's presigned PUT (UNSIGNED-PAYLOAD) still works.
    let cfg = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let url = server.client().put_object().bucket(BUCKET).key("sdk").presigned(cfg).await.unwrap();
    let target = url.uri().split_once(&server.addr).unwrap().1.to_owned();
    let (status, _, body) = send(format!("PUT {target} HTTP/1.1\r\nhost: {}\r\n", server.addr), &good);
    assert_eq!(status, 200, "{body}");
}

fn client_in(server: &Server, region: &str) -> aws_sdk_s3::Client {
    let config = server.client().config().to_builder().region(Region::new(region.to_owned())).build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Item 9: a signature whose credential scope names another region is refused, naming the
/// server's region, as AWS answers. Before, any region was accepted.
#[tokio::test]
async fn requests_signed_for_another_region_are_refused() {
    let server = started(&[]).await;
    let head = sign_head_in("eu-west-1", &server.addr, "GET", "/proto", "", &[], sigv4::UNSIGNED_PAYLOAD).0;
    let (status, _, body) = exchange(&server, head.as_bytes());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("<Code>AuthorizationHeaderMalformed</Code>"), "{body}");
    assert!(body.contains("the region &apos;eu-west-1&apos; is wrong; expecting &apos;us-east-1&apos;"), "{body}");
    assert_eq!(code(client_in(&server, "eu-west-1").list_buckets().send().await), "AuthorizationHeaderMalformed");

    // A server in another region (FERRITE_REGION) serves clients of that region only.
    let elsewhere = Server::start_with(1, &[], &[("FERRITE_REGION", "eu-central-2")]);
    let local = client_in(&elsewhere, "eu-central-2");
    local.create_bucket().bucket(BUCKET).send().await.unwrap();
    common::put_or_code(&local, BUCKET, "k", b"v").await.unwrap();
    assert_eq!(code(elsewhere.client().list_buckets().send().await), "AuthorizationHeaderMalformed");
    let cfg = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let url = elsewhere.client().get_object().bucket(BUCKET).key("k").presigned(cfg).await.unwrap();
    let reply =
        common::request("GET", &ferrite_tiering::outbound::http::Url::parse(url.uri()).unwrap(), &[], b"").unwrap();
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("AuthorizationQueryParametersError"), "{}", reply.text());
}

/// `ferrite admin ARGS` with `env` (FERRITE_CA_FILE left unset unless given).
/// `ferrite admin` of the build under test (FERRITE_TEST_BINARY, like the server), so a run
/// against an older build tests its client too.
fn admin(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(common::binary())
        .arg("admin")
        .args(args)
        .env_remove("FERRITE_CA_FILE")
        .envs(env.iter().copied())
        .output()
        .expect("run ferrite admin")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A certificate directory as `--certs-dir` wants it, for 127.0.0.1; and the certificate
/// file a client trusts.
fn certs(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = common::standin::tls_cert(dir);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&cert, certs.join("public.crt")).unwrap();
    std::fs::copy(&key, certs.join("private.key")).unwrap();
    (certs, cert)
}

/// Item 6: `ferrite admin` speaks https and verifies the certificate (system roots plus
/// --ca-file / FERRITE_CA_FILE). Before, it refused https endpoints.
#[tokio::test]
async fn ferrite_admin_speaks_https_and_verifies_the_certificate() {
    let dir = std::env::temp_dir().join(format!("ferrite-admin-tls-{}", std::process::id()));
    let (certs, cert) = certs(&dir);
    let server = Server::start_tls(1, &certs, &cert);
    let port = server.addr.rsplit_once(':').unwrap().1;
    let https = format!("https://127.0.0.1:{port}");
    let ca = cert.to_str().unwrap();
    let out = admin(&["heal", "--status", "--endpoint", &https, "--ca-file", ca], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"drives\""));
    let out = admin(&["heal", "--status", "--endpoint", &https], &[("FERRITE_CA_FILE", ca)]);
    assert!(out.status.success(), "FERRITE_CA_FILE: {}", stderr(&out));
    // Not trusted: the system's roots do not hold the test certificate.
    let out = admin(&["heal", "--status", "--endpoint", &https], &[]);
    assert_eq!(out.status.code(), Some(2), "an unknown certificate was accepted");
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    // Trusted, but for another name: the certificate names 127.0.0.1 only.
    let out = admin(&["heal", "--status", "--endpoint", &format!("https://localhost:{port}"), "--ca-file", ca], &[]);
    assert_eq!(out.status.code(), Some(2), "a certificate for another name was accepted");
    // Plain HTTP to a TLS port fails cleanly.
    let out = admin(&["heal", "--status", "--endpoint", &format!("http://127.0.0.1:{port}")], &[]);
    assert_eq!(out.status.code(), Some(2));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A signed admin request with `body`, its x-amz-content-sha256 being `payload_hash`.
fn admin_request(host: &str, method: &str, path: &str, body: &[u8], payload_hash: &str) -> Vec<u8> {
    let headers = [("content-length", body.len().to_string())];
    let mut out = sign_head(host, method, path, "", &headers, payload_hash).0.into_bytes();
    out.extend_from_slice(body);
    out
}

const TIER_WITH_KEY: &str =
    r#"{"endpoint":"http://127.0.0.1:1","account":"acct","container":"cold","account_key":"c2VjcmV0"}"#;

/// Item 6: admin bodies must be signed (their SHA-256), so no one on the path can rewrite
/// them. Before, UNSIGNED-PAYLOAD was taken (and was all `ferrite admin` sent).
#[tokio::test]
async fn admin_request_bodies_must_be_signed() {
    let server = started(&[]).await;
    let tier = "/ferrite/admin/v1/tier/COLD";
    let body = TIER_WITH_KEY.as_bytes();
    let unsigned = admin_request(&server.addr, "PUT", tier, body, sigv4::UNSIGNED_PAYLOAD);
    let (status, _, answer) = exchange(&server, &unsigned);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("AccessDenied") && answer.contains("must sign"), "{answer}");
    // A heal request with a body it does not even read: refused all the same.
    let (status, _, answer) = exchange(
        &server,
        &admin_request(&server.addr, "POST", "/ferrite/admin/v1/heal", b"x", sigv4::UNSIGNED_PAYLOAD),
    );
    assert_eq!(status, 403, "{answer}");
    // aws-chunked without chunk signatures is not a signed body either.
    let chunked = format!("{:x}\r\n{TIER_WITH_KEY}\r\n0\r\n\r\n", body.len());
    let headers = [
        ("content-length", chunked.len().to_string()),
        ("content-encoding", "aws-chunked".to_owned()),
        ("x-amz-decoded-content-length", body.len().to_string()),
    ];
    let mut request =
        sign_head(&server.addr, "PUT", tier, "", &headers, sigv4::STREAMING_UNSIGNED_TRAILER).0.into_bytes();
    request.extend_from_slice(chunked.as_bytes());
    let (status, _, answer) = exchange(&server, &request);
    assert_eq!(status, 403, "{answer}");
    // A body that is not the one signed.
    let other = admin_request(&server.addr, "PUT", tier, body, &sha256_hex(b"{}"));
    let (status, _, answer) = exchange(&server, &other);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("XAmzContentSHA256Mismatch"), "{answer}");
    // Requests without a body need no payload hash (the test support's own GET is one).
    let (status, _, answer) =
        exchange(&server, &admin_request(&server.addr, "POST", "/ferrite/admin/v1/heal", b"", sigv4::UNSIGNED_PAYLOAD));
    assert_eq!(status, 200, "{answer}");
    // `ferrite admin` signs its bodies.
    let out = admin(&["heal", "--endpoint", &server.endpoint], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Item 6: a tier's account key or SAS over plain HTTP is refused unless the peer is on this
/// machine; `ferrite admin` will not send one there at all. The decision itself is the unit
/// test `ops::admin::tests::secrets_travel_over_tls_or_from_loopback_only`; this is the whole
/// path, with the server on a second host (a network namespace) and the request coming from
/// this one, so the server sees a peer that is not loopback. Before, the key was taken from
/// anyone.
#[tokio::test]
async fn tier_secrets_in_clear_text_are_refused_from_another_machine() {
    let ns = NetNs::new();
    let server = Server::start_in(&ns, 1, &["--allow-default-credentials", "on"], &[]);
    let tier = "/ferrite/admin/v1/tier/COLD";
    let body = TIER_WITH_KEY.as_bytes();
    let (status, _, answer) = exchange(&server, &admin_request(&server.addr, "PUT", tier, body, &sha256_hex(body)));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("InvalidRequest") && answer.contains("https"), "{answer}");
    let tier_add =
        ["tier", "add", "COLD", "--azure-endpoint", "http://127.0.0.1:1", "--account", "acct", "--container", "cold"];
    let with_key = [&tier_add[..], &["--account-key", "c2VjcmV0"]].concat();
    // The client refuses before sending anything.
    let out = admin(&[&with_key[..], &["--endpoint", &server.endpoint]].concat(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("refusing to send"), "{}", stderr(&out));
    // On the server's own host, over loopback, the key passes both checks (and the tier
    // then fails later: there is no Blob service).
    let port = server.addr.rsplit_once(':').unwrap().1;
    let local = format!("http://127.0.0.1:{port}");
    let out = ns
        .command(&common::binary())
        .args([&["admin"][..], &with_key, &["--endpoint", &local]].concat())
        .env_remove("FERRITE_CA_FILE")
        .output()
        .expect("run ferrite admin in the namespace");
    let said = stderr(&out);
    assert!(!said.contains("refusing to send") && !said.contains("crossed the network"), "{said}");
    assert!(
        said.contains("the Blob service cannot be reached"),
        "the server took the key and checked the tier: {said}"
    );
}
