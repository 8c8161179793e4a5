//! A hostile network gets nothing (issue 16, the network and process limits): a flood of
//! idle connections under a low descriptor limit takes no drive offline, request bodies and
//! response writes have a minimum rate, chunked trailers and drained bodies are bounded by
//! what crosses the wire, no control character reaches a response header, ambiguous
//! framing (request smuggling) is refused and the connection closed, the default root
//! password is refused on a reachable address, and a taken port is retried at start-up.

mod common;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use common::{bytes, code, Server};

const BUCKET: &str = "net";
/// FERRITE_CLIENT_TIMEOUT_SECS for these tests: the window of the minimum transfer rate too.
const CLIENT_TIMEOUT_SECS: u64 = 2;
/// How long a test waits for the server to close a connection it should close: several
/// windows, so a slow machine does not fail the test.
const CLOSE_WAIT: Duration = Duration::from_secs(6 * CLIENT_TIMEOUT_SECS);
/// The descriptor limit of the flooded servers, and the connections of the flood (the
/// issue's reproduction: 365 idle connections against `ulimit -n 256`).
const FD_LIMIT: u64 = 256;
const FLOOD_CONNECTIONS: usize = 365;

async fn started(envs: &[(&str, &str)]) -> Server {
    let server = Server::start_with(4, &[], envs);
    server.client().create_bucket().bucket(BUCKET).send().await.unwrap();
    server
}

fn short_timeouts() -> [(&'static str, String); 1] {
    [("FERRITE_CLIENT_TIMEOUT_SECS", CLIENT_TIMEOUT_SECS.to_string())]
}

fn envs<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A normal client PUTs an object large enough for data files and reads it back.
async fn assert_serves(server: &Server, key: &str) {
    common::assert_serves(&common::client_without_retries(&server.endpoint), BUCKET, key).await;
}

fn connect(server: &Server) -> TcpStream {
    common::raw::connect(&server.addr, CLOSE_WAIT)
}

fn signed(server: &Server, method: &str, path: &str, headers: &[(&str, String)]) -> String {
    common::raw::unsigned_head(&server.addr, method, path, "", headers)
}

/// Everything the server sends until it closes the connection (or CLOSE_WAIT passes: then
/// `closed` is false).
struct Answer {
    text: String,
    closed: bool,
}

fn read_until_closed(s: &mut TcpStream) -> Answer {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    let deadline = Instant::now() + CLOSE_WAIT;
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    return Answer { text: String::from_utf8_lossy(&got).into_owned(), closed: false };
                }
            }
            Err(_) => break, // A reset closes too.
        }
    }
    Answer { text: String::from_utf8_lossy(&got).into_owned(), closed: true }
}

/// The heal status: every drive's `online`, the heal's state and its passes.
fn heal_status(server: &Server) -> (Vec<bool>, String, u64) {
    let (status, body) = common::raw::signed_get(&server.addr, "/ferrite/admin/v1/heal").expect("heal status");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let online = v["drives"].as_array().unwrap().iter().map(|d| d["online"].as_bool().unwrap()).collect();
    (online, v["heal"]["state"].as_str().unwrap_or("").to_owned(), v["heal"]["passes"].as_u64().unwrap_or(0))
}

/// Opens up to `count` idle connections (it stops after ten in a row that the kernel's
/// backlog cannot take any more), holds them for three drive checks, then closes them. Returns how
/// many were open.
fn flood_with_idle_connections(server: &Server, count: usize) -> usize {
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    while held.len() < count && refused < 10 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => {
                held.push(s);
                refused = 0;
            }
            Err(_) => refused += 1,
        }
    }
    std::thread::sleep(Duration::from_secs(4));
    let open = held.len();
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    open
}

// ----- item 1: connections and descriptors -----

/// The reproduction: with `ulimit -n 256`, 365 idle connections made the drive
/// monitor fail with EMFILE and take every drive offline, and heal passes ran. Now the
/// connection cap (derived from the limit) keeps descriptors for the drives.
#[tokio::test]
async fn idle_connections_under_a_low_descriptor_limit_take_no_drive_offline() {
    let server = Server::start_limited(4, &[("FERRITE_DRIVE_CHECK_SECS", "1")], FD_LIMIT);
    server.client().create_bucket().bucket(BUCKET).send().await.unwrap();
    // The cap plus the kernel's backlog: the rest of the flood cannot even connect.
    let open = flood_with_idle_connections(&server, FLOOD_CONNECTIONS);
    assert!(open >= 100, "only {open} connections could be opened");
    let (online, heal, passes) = heal_status(&server);
    let log = server.log().join("\n");
    assert!(online.iter().all(|o| *o), "a drive went offline: {online:?}\n{log}");
    assert_eq!((heal.as_str(), passes), ("never-run", 0), "a heal ran\n{log}");
    assert!(!log.contains("unusable"), "{log}");
    assert!(log.contains("connection cap"), "the cap is not logged: {log}");
    assert_serves(&server, "after-flood").await;
}

/// Even with the cap lifted so that clients do exhaust the descriptors, EMFILE is the
/// process's problem, not the drives': no drive goes offline, no heal runs, the accept loop
/// warns at most once per core every 10 s instead of spinning (accepts fail and succeed in
/// turn while the flood's connections close), and the server serves once the clients leave.
#[tokio::test]
async fn descriptors_exhausted_by_clients_take_no_drive_offline() {
    let envs = [("FERRITE_DRIVE_CHECK_SECS", "1"), ("FERRITE_CONNECTIONS_MAX", "100000")];
    let server = Server::start_limited(4, &envs, FD_LIMIT);
    server.client().create_bucket().bucket(BUCKET).send().await.unwrap();
    let open = flood_with_idle_connections(&server, FLOOD_CONNECTIONS);
    assert!(open > FD_LIMIT as usize, "only {open} connections could be opened");
    let (online, heal, passes) = heal_status(&server);
    let log = server.log().join("\n");
    assert!(online.iter().all(|o| *o), "a drive went offline: {online:?}\n{log}");
    assert_eq!((heal.as_str(), passes), ("never-run", 0), "a heal ran\n{log}");
    let accept_warnings = server.log().iter().filter(|l| l.contains("accept failed")).count();
    assert!((1..=4).contains(&accept_warnings), "{accept_warnings} accept warnings:\n{log}");
    assert_serves(&server, "after-exhaustion").await;
}

// ----- item 5: request smuggling -----

/// A validly signed PUT of `key` with an empty body: what a smuggler hides behind a body.
fn smuggled_put(server: &Server, key: &str) -> String {
    signed(server, "PUT", &format!("/{BUCKET}/{key}"), &[("content-length", "0".to_owned())])
}

/// Framing headers two parties could read differently, and a body that ends the first
/// request early under one reading (so that the smuggled request would be next).
/// A smuggling case: its name, its framing headers and the body that follows its head.
type Smuggling = (&'static str, Vec<(&'static str, &'static str)>, &'static str);

fn smuggling_cases() -> Vec<Smuggling> {
    let chunked_end = "0\r\n\r\n";
    vec![
        ("te-gzip-chunked", vec![("transfer-encoding", "gzip, chunked")], chunked_end),
        ("te-chunked-chunked", vec![("transfer-encoding", "chunked, chunked")], chunked_end),
        ("te-identity", vec![("transfer-encoding", "identity")], ""),
        ("te-twice", vec![("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")], chunked_end),
        ("te-and-cl", vec![("transfer-encoding", "chunked"), ("content-length", "5")], chunked_end),
        ("cl-twice-equal", vec![("content-length", "5"), ("content-length", "5")], "hello"),
        ("cl-twice-different", vec![("content-length", "0"), ("content-length", "5")], ""),
        ("cl-plus-sign", vec![("content-length", "+5")], "hello"),
        ("cl-list", vec![("content-length", "5, 5")], "hello"),
        ("cl-hex", vec![("content-length", "0x5")], "hello"),
    ]
}

/// Each ambiguous framing gets one 4xx/501 answer and the connection closed; the request
/// smuggled after the body is never served.
#[tokio::test]
async fn ambiguous_framing_is_refused_and_nothing_smuggled_is_served() {
    let server = started(&[]).await;
    for (i, (name, framing, body)) in smuggling_cases().into_iter().enumerate() {
        let key = format!("smuggled-{i}");
        let headers: Vec<(&str, String)> = framing.iter().map(|(n, v)| (*n, v.to_string())).collect();
        let mut bytes = signed(&server, "PUT", &format!("/{BUCKET}/front-{i}"), &headers).into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        bytes.extend_from_slice(smuggled_put(&server, &key).as_bytes());
        let mut s = connect(&server);
        let _ = s.write_all(&bytes);
        let answer = read_until_closed(&mut s);
        assert!(answer.closed, "{name}: the connection stays open: {}", answer.text);
        let statuses: Vec<&str> = answer.text.matches("HTTP/1.1 ").collect();
        assert_eq!(statuses.len(), 1, "{name}: {} answers: {}", statuses.len(), answer.text);
        let status: u16 = answer.text[9..12].parse().unwrap_or(0);
        assert!(status == 400 || status == 501, "{name}: status {status}: {}", answer.text);
        assert!(answer.text.contains("Connection: close"), "{name}: {}", answer.text);
        let c = server.client();
        for k in [key, format!("front-{i}")] {
            assert_eq!(code(c.head_object().bucket(BUCKET).key(&k).send().await), "NotFound", "{name}: {k}");
        }
    }
    assert_serves(&server, "after-smuggling").await;
}

// ----- item 4: control characters in header values -----

/// The reproduction: a presigned GET whose response-content-disposition carries
/// CR LF and a Set-Cookie header gets 400 InvalidArgument, and no Set-Cookie.
#[tokio::test]
async fn a_response_override_with_crlf_is_refused() {
    let server = started(&[]).await;
    let c = server.client();
    c.put_object().bucket(BUCKET).key("doc").body(ByteStream::from_static(b"hi")).send().await.unwrap();
    for (param, value) in [
        ("disposition", "attachment\r\nSet-Cookie: session=stolen"),
        ("type", "text/html\nSet-Cookie: session=stolen"),
        ("nul", "a\0b"),
        ("del", "a\x7fb"),
    ] {
        let get = c.get_object().bucket(BUCKET).key("doc");
        let get = match param {
            "disposition" => get.response_content_disposition(value),
            "type" => get.response_content_type(value),
            "nul" => get.response_cache_control(value),
            _ => get.response_content_language(value),
        };
        let presigned = get.presigned(PresigningConfig::expires_in(Duration::from_secs(600)).unwrap()).await.unwrap();
        let uri = presigned.uri();
        let path_and_query = &uri[uri.find(&server.addr).unwrap() + server.addr.len()..];
        let mut s = connect(&server);
        let head = format!("GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr);
        s.write_all(head.as_bytes()).unwrap();
        let answer = read_until_closed(&mut s);
        assert!(answer.text.starts_with("HTTP/1.1 400"), "{param}: {}", answer.text);
        assert!(answer.text.contains("InvalidArgument"), "{param}: {}", answer.text);
        assert!(!answer.text.to_ascii_lowercase().contains("set-cookie"), "{param}: {}", answer.text);
    }
}

/// Stored metadata (and every other header value) with a control character is refused
/// with 400 on the request that brings it: nothing is stored to be written out later.
#[tokio::test]
async fn header_values_with_control_characters_are_refused() {
    let server = started(&[]).await;
    for (i, (name, value)) in [
        ("x-amz-meta-a", "x\x01y"),
        ("x-amz-meta-b", "x\0y"),
        ("x-amz-meta-c", "x\x7fy"),
        ("content-type", "text/plain\x1b"),
        ("x-amz-meta-d", "x\ry"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("ctl-{i}");
        let head = signed(&server, "PUT", &format!("/{BUCKET}/{key}"), &[("content-length", "2".to_owned())]);
        // The bad header goes in after the signature: the parser must refuse it first.
        let head = head.replacen("\r\n", &format!("\r\n{name}: {value}\r\n"), 1);
        let mut s = connect(&server);
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(b"hi");
        let answer = read_until_closed(&mut s);
        assert!(answer.text.starts_with("HTTP/1.1 400"), "{name}={value:?}: {}", answer.text);
        let c = server.client();
        assert_eq!(code(c.head_object().bucket(BUCKET).key(&key).send().await), "NotFound", "{key}");
    }
    assert_serves(&server, "after-control-characters").await;
}

// ----- item 2: request body deadlines and framing limits -----

/// Writes `head`, then one byte of the body every 300 ms (well inside the read timeout)
/// from another thread until the server closes or CLOSE_WAIT passes. Returns the answer.
fn drip_body(server: &Server, head: String) -> Answer {
    let mut s = connect(server);
    s.write_all(head.as_bytes()).unwrap();
    let mut writer = s.try_clone().unwrap();
    let dripper = std::thread::spawn(move || {
        let deadline = Instant::now() + CLOSE_WAIT;
        while Instant::now() < deadline && writer.write_all(b"x").is_ok() {
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let answer = read_until_closed(&mut s);
    let _ = s.shutdown(std::net::Shutdown::Both);
    dripper.join().unwrap();
    answer
}

fn assert_cut_for_pace(name: &str, answer: &Answer) {
    assert!(answer.closed, "{name}: a dripped body keeps its connection: {}", answer.text);
    assert!(answer.text.is_empty() || answer.text.contains("RequestTimeout"), "{name}: {}", answer.text);
}

/// The reproduction: a PUT of 1,000,000 bytes dripped a byte every 300 ms (every
/// read well inside the read timeout) is cut by the minimum rate, as a Content-Length
/// body, a chunked one, and a presigned PUT (which holds a memory-budget slot).
#[tokio::test]
async fn dripped_bodies_are_cut() {
    let timeouts = short_timeouts();
    let server = started(&envs(&timeouts)).await;
    let length = [("content-length", "1000000".to_owned())];
    assert_cut_for_pace(
        "content-length",
        &drip_body(&server, signed(&server, "PUT", &format!("/{BUCKET}/drip"), &length)),
    );
    let chunked = [("transfer-encoding", "chunked".to_owned())];
    let head = signed(&server, "PUT", &format!("/{BUCKET}/drip-chunked"), &chunked) + "f4240\r\n";
    assert_cut_for_pace("chunked", &drip_body(&server, head));
    let c = server.client();
    let presigned = c
        .put_object()
        .bucket(BUCKET)
        .key("drip-presigned")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(600)).unwrap())
        .await
        .unwrap();
    let uri = presigned.uri();
    let path_and_query = &uri[uri.find(&server.addr).unwrap() + server.addr.len()..];
    let head = format!("PUT {path_and_query} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000000\r\n\r\n", server.addr);
    assert_cut_for_pace("presigned", &drip_body(&server, head));
    for key in ["drip", "drip-chunked", "drip-presigned"] {
        assert_eq!(code(c.head_object().bucket(BUCKET).key(key).send().await), "NotFound", "{key}");
    }
    assert_serves(&server, "after-drip").await;
}

/// Sends `head` and then `piece` over and over from another thread until the server
/// closes (a write fails) or CLOSE_WAIT passes. Returns the answer and whether the server
/// cut the stream (rather than the deadline ending it).
fn stream_endlessly(server: &Server, head: String, piece: Vec<u8>) -> (Answer, bool) {
    let mut s = connect(server);
    s.write_all(head.as_bytes()).unwrap();
    let mut writer = s.try_clone().unwrap();
    let streamer = std::thread::spawn(move || {
        let deadline = Instant::now() + CLOSE_WAIT;
        while Instant::now() < deadline {
            if writer.write_all(&piece).is_err() {
                return true;
            }
        }
        false
    });
    let answer = read_until_closed(&mut s);
    let cut = streamer.join().unwrap();
    (answer, cut)
}

/// `0\r\n` followed by endless trailer lines: the server stops after TRAILER_BYTES_MAX
/// (every byte on the wire counted) and closes, while the client is still sending.
#[tokio::test]
async fn endless_trailers_are_cut() {
    let server = started(&[]).await;
    let chunked = [("transfer-encoding", "chunked".to_owned())];
    let head = signed(&server, "PUT", &format!("/{BUCKET}/trailers"), &chunked) + "0\r\n";
    let line = format!("x-trailer: {}\r\n", "t".repeat(1000)).into_bytes();
    let (answer, cut) = stream_endlessly(&server, head, line);
    assert!(cut && answer.closed, "endless trailers were read on: {}", answer.text);
    assert!(answer.text.is_empty() || answer.text.contains("RequestHeaderSectionTooLarge"), "{}", answer.text);
    // Many empty trailer lines (each 2 bytes on the wire, none kept) are counted too.
    let head = signed(&server, "PUT", &format!("/{BUCKET}/trailers"), &chunked) + "0\r\n";
    let (answer, cut) = stream_endlessly(&server, head, b"a:\r\n".repeat(1000));
    assert!(cut && answer.closed, "endless short trailers were read on: {}", answer.text);
    assert_serves(&server, "after-trailers").await;
}

/// The body of a request refused early (no such bucket) is drained only up to
/// DRAIN_BYTES_MAX counted on the wire: chunks of one data byte behind a 4 KB chunk-size
/// line are cut once the wire bytes pass the limit, not after a million chunks.
#[tokio::test]
async fn a_drained_body_counts_its_framing() {
    let server = started(&[]).await;
    let chunked = [("transfer-encoding", "chunked".to_owned())];
    let head = signed(&server, "PUT", "/no-such-bucket/drained", &chunked);
    let chunk = format!("1;ext={}\r\nx\r\n", "e".repeat(4000)).into_bytes();
    let (answer, cut) = stream_endlessly(&server, head, chunk);
    assert!(cut && answer.closed, "the drain read on: {}", answer.text);
    assert!(answer.text.is_empty() || answer.text.contains("NoSuchBucket"), "{}", answer.text);
}

/// A slow but steady upload (16 KiB every 250 ms, 64 KiB/s, above the minimum rate) is not
/// cut, although it takes longer than several windows.
#[tokio::test]
async fn a_slow_steady_upload_survives() {
    let timeouts = short_timeouts();
    let server = started(&envs(&timeouts)).await;
    let body = bytes(400 << 10, 7);
    let head = signed(&server, "PUT", &format!("/{BUCKET}/steady"), &[("content-length", body.len().to_string())]);
    let mut s = connect(&server);
    s.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(16 << 10) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut answer = [0u8; 12];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    assert_eq!(common::get_bytes(&server.client(), BUCKET, "steady").await, body);
}

// ----- item 3: response write deadlines -----

/// A client that pipelines GETs of a 4 MiB object and never reads loses its connection
/// once the server's writes fall below the minimum rate; the server then serves others.
#[tokio::test]
async fn a_client_that_never_reads_loses_its_connection() {
    const OBJECT_BYTES: usize = 4 << 20;
    const REQUESTS: usize = 32;
    let timeouts = short_timeouts();
    let server = started(&envs(&timeouts)).await;
    let c = server.client();
    c.put_object().bucket(BUCKET).key("big").body(ByteStream::from(bytes(OBJECT_BYTES, 3))).send().await.unwrap();
    let mut s = connect(&server);
    let get = signed(&server, "GET", &format!("/{BUCKET}/big"), &[]);
    s.write_all(get.repeat(REQUESTS).as_bytes()).unwrap();
    // Never read for a while: the server's writes stall once the socket buffers are full.
    std::thread::sleep(CLOSE_WAIT / 2);
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let deadline = Instant::now() + CLOSE_WAIT;
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    break false;
                }
            }
            Err(_) => break true,
        }
    };
    assert!(closed, "the connection stayed open; {received} bytes received");
    assert!(received < OBJECT_BYTES * REQUESTS, "every response was written: {received} bytes");
    assert_serves(&server, "after-no-reader").await;
}

// ----- item 6: default credentials on a reachable address -----

/// `ferrite server` on a non-loopback address with the default root password refuses to
/// start and says why (the flag that allows it is tested in server.rs's unit tests: these
/// tests bind 127.0.0.1 only).
#[test]
fn default_credentials_are_refused_on_a_reachable_address() {
    let dir = std::env::temp_dir().join(format!("ferrite-defcred-{}", std::process::id()));
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("0.0.0.0:{port}");
    // FERRITE_TEST_BINARY: as in common/server.rs, to run this against another build.
    let binary = std::env::var("FERRITE_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferrite").to_owned());
    let mut child = std::process::Command::new(binary)
        .args(["server", "--address", &addr])
        .arg(dir.join("d1"))
        .env_remove("FERRITE_ROOT_USER")
        .env_remove("FERRITE_ROOT_PASSWORD")
        .env_remove("FERRITE_ALLOW_DEFAULT_CREDENTIALS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A server that starts anyway would run for ever: give it a while, then stop it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let touched = dir.join("d1").exists();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(stderr.contains("default root password") && stderr.contains("--allow-default-credentials"), "{stderr}");
    assert!(!touched, "the drives were touched before the refusal");
}

// ----- item 7: a taken port at start-up -----

/// The port is held by another socket for a few seconds (as a crashed predecessor's
/// lingering socket would hold it; long enough for a debug build on a loaded machine to
/// reach its bind first): the server retries the bind, then serves.
#[test]
fn a_taken_port_is_retried_at_start_up() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    holder.set_nonblocking(true).unwrap();
    let release = std::thread::spawn(move || {
        // Turn away whatever connects meanwhile (the helper's readiness checks), then let go.
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            drop(holder.accept());
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let server = Server::start_at(port, 1, &[("FERRITE_BIND_RETRY_SECS", "30")]);
    release.join().unwrap();
    assert!(server.log().iter().any(|l| l.contains("address in use")), "{:?}", server.log());
    let (status, _) = common::raw::signed_get(&server.addr, "/ferrite/admin/v1/heal").unwrap();
    assert_eq!(status, 200);
}
