//! Soak (issue 16): valid clients and hostile ones against one server at once, for
//! `FERRITE_SOAK_SECS` (120 s by default; set it higher for a longer soak). The hostile
//! clients drip request heads and bodies, pipeline GETs they never read, send endless
//! trailers, open floods of idle connections, and send ambiguous framing, injected header
//! values and garbage. Afterwards every valid request has succeeded (with the SDK's normal
//! retries) and read back what it wrote, and the server's open connections, data streams
//! holding a memory-budget slot, file descriptors and RSS are back near where they started;
//! every drive is still online.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use common::{bytes, Rng, Server};

const BUCKET: &str = "soak";
/// FERRITE_CLIENT_TIMEOUT_SECS: the window of the minimum transfer rate too, so hostile
/// clients are cut within a few seconds and come back many times during the soak.
const CLIENT_TIMEOUT_SECS: u64 = 2;
/// How long a hostile client holds on before it gives up by itself.
const HOLD_MAX: Duration = Duration::from_secs(6 * CLIENT_TIMEOUT_SECS);
/// Object sizes of the valid load: inline, one data file, several blocks.
const SIZES: [usize; 3] = [4 << 10, 300_000, 2_500_000];
/// How long the server may take to give back what the hostile clients held.
const SETTLE_MAX: Duration = Duration::from_secs(30);
/// Descriptors and RSS allowed above the start once everything settled: pooled outbound
/// connections, allocator slack and the block cache (16 MiB here) fit; a leak per hostile
/// connection (thousands of them) does not.
const FDS_SLACK: usize = 16;
const RSS_SLACK_KIB: u64 = 128 << 10;

fn soak_secs() -> u64 {
    std::env::var("FERRITE_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(120)
}

/// The server's open descriptors and resident memory (KiB), from /proc.
fn usage(server: &Server) -> (usize, u64) {
    let pid = server.child.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// Presigned request paths (path and query) the hostile clients reuse.
struct Paths {
    put: String,
    get: String,
    get_injected: String,
}

async fn presigned_paths(server: &Server) -> Paths {
    let c = server.client();
    let config = || PresigningConfig::expires_in(Duration::from_secs(3600)).unwrap();
    let path = |uri: &str| uri[uri.find(&server.addr).unwrap() + server.addr.len()..].to_owned();
    let put = c.put_object().bucket(BUCKET).key("hostile-put").presigned(config()).await.unwrap();
    let get = c.get_object().bucket(BUCKET).key("big").presigned(config()).await.unwrap();
    let injected = c
        .get_object()
        .bucket(BUCKET)
        .key("big")
        .response_content_disposition("attachment\r\nSet-Cookie: soak=1")
        .presigned(config())
        .await
        .unwrap();
    Paths { put: path(put.uri()), get: path(get.uri()), get_injected: path(injected.uri()) }
}

fn connect(addr: &str) -> Option<TcpStream> {
    let s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    s.set_write_timeout(Some(HOLD_MAX)).ok()?;
    Some(s)
}

/// Writes `piece` every `every` until the server closes the connection or HOLD_MAX passes.
fn drip(mut s: TcpStream, piece: &[u8], every: Duration) {
    let until = Instant::now() + HOLD_MAX;
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        if s.write_all(piece).is_err() {
            return;
        }
        if matches!(s.read(&mut buf), Ok(0)) {
            return;
        }
        std::thread::sleep(every);
    }
}

/// One hostile client of kind `kind`; each returns when the server has cut it off or it
/// gave up.
fn attack(kind: u64, addr: &str, paths: &Paths, rng: &mut Rng) {
    let Some(mut s) = connect(addr) else { return };
    match kind {
        // A request head dripped a header at a time.
        0 => {
            let _ = s.write_all(format!("GET /{BUCKET}/big HTTP/1.1\r\nHost: {addr}\r\n").as_bytes());
            drip(s, b"X-Drip: 1\r\n", Duration::from_millis(300));
        }
        // A presigned PUT (it holds a budget slot) whose body drips.
        1 => {
            let head = format!("PUT {} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000000\r\n\r\n", paths.put);
            let _ = s.write_all(head.as_bytes());
            drip(s, b"x", Duration::from_millis(500));
        }
        // Pipelined presigned GETs of a large object, never read.
        2 => {
            let head = format!("GET {} HTTP/1.1\r\nHost: {addr}\r\n\r\n", paths.get);
            let _ = s.write_all(head.repeat(16).as_bytes());
            std::thread::sleep(HOLD_MAX);
        }
        // A chunked body that ends, then trailers without end.
        3 => {
            let head = format!("PUT {} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", paths.put);
            let _ = s.write_all(head.as_bytes());
            drip(
                s,
                &b"X-Trailer: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(64),
                Duration::from_millis(5),
            );
        }
        // A flood of idle connections.
        4 => {
            let held: Vec<_> = (0..150).filter_map(|_| TcpStream::connect(addr).ok()).collect();
            std::thread::sleep(Duration::from_secs(3));
            drop(held);
        }
        // Ambiguous framing, an injected header value, garbage: each gets its answer.
        _ => {
            let head = match rng.below(4) {
                0 => format!("PUT {} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", paths.put).into_bytes(),
                1 => format!("PUT {} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", paths.put).into_bytes(),
                2 => format!("GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n", paths.get_injected).into_bytes(),
                _ => bytes(rng.between(1, 9000) as usize, rng.next()),
            };
            let _ = s.write_all(&head);
            let mut answer = Vec::new();
            let _ = s.set_read_timeout(Some(HOLD_MAX));
            let _ = s.read_to_end(&mut answer);
            assert!(
                !String::from_utf8_lossy(&answer).to_ascii_lowercase().contains("set-cookie"),
                "injected header written"
            );
        }
    }
}

/// Hostile clients, one thread each, until `deadline`.
fn hostile(addr: String, paths: std::sync::Arc<Paths>, seed: u64, deadline: Instant) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut rng = Rng(seed);
        let mut attacks = 0;
        while Instant::now() < deadline {
            attack(rng.below(6), &addr, &paths, &mut rng);
            attacks += 1;
        }
        attacks
    })
}

/// One valid client until `deadline`: PUT, GET and compare, sometimes list or delete.
/// Returns how many operations succeeded and what failed.
async fn valid(endpoint: String, worker: u64, deadline: Instant) -> (u64, Vec<String>) {
    let c = common::client_with(&endpoint, common::USER, common::PASSWORD);
    let (mut rng, mut done, mut failed) = (Rng(worker + 1), 0u64, Vec::new());
    while Instant::now() < deadline {
        let key = format!("valid-{worker}-{}", rng.below(20));
        let body = bytes(SIZES[rng.below(3) as usize], rng.next());
        let put = c.put_object().bucket(BUCKET).key(&key).body(ByteStream::from(body.clone())).send().await;
        if let Err(e) = put {
            failed.push(format!("PUT {key}: {e:?}"));
            continue;
        }
        match common::get_or_code(&c, BUCKET, &key).await {
            Ok(got) if got == body => done += 2,
            Ok(_) => failed.push(format!("GET {key}: not what was written")),
            Err(e) => failed.push(format!("GET {key}: {e}")),
        }
        if rng.below(8) == 0 {
            let prefix = format!("valid-{worker}-");
            match c.list_objects_v2().bucket(BUCKET).prefix(prefix).send().await {
                Ok(_) => done += 1,
                Err(e) => failed.push(format!("LIST: {e:?}")),
            }
        }
        if rng.below(8) == 0 {
            match c.delete_object().bucket(BUCKET).key(&key).send().await {
                Ok(_) => done += 1,
                Err(e) => failed.push(format!("DELETE {key}: {e:?}")),
            }
        }
    }
    (done, failed)
}

/// The gauges that must come back: open connections and data streams in use.
fn gauges(server: &Server) -> (u64, u64) {
    (common::metric(server, "ferrite_connections_open"), common::metric(server, "ferrite_data_streams_in_use"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_load_beside_hostile_clients_for_minutes_leaves_nothing_behind() {
    let timeout = CLIENT_TIMEOUT_SECS.to_string();
    let envs = [("FERRITE_CLIENT_TIMEOUT_SECS", timeout.as_str()), ("FERRITE_CACHE_MIB", "16")];
    let server = Server::start_with(4, &[], &envs);
    let c = server.client();
    c.create_bucket().bucket(BUCKET).send().await.unwrap();
    let big = bytes(2_500_000, 7);
    c.put_object().bucket(BUCKET).key("big").body(ByteStream::from(big.clone())).send().await.unwrap();
    let paths = std::sync::Arc::new(presigned_paths(&server).await);
    let (conns_before, streams_before) = gauges(&server);
    let (fds_before, rss_before) = usage(&server);
    assert_eq!(streams_before, 0);

    let deadline = Instant::now() + Duration::from_secs(soak_secs());
    let attackers: Vec<_> = (0..4).map(|i| hostile(server.addr.clone(), paths.clone(), 100 + i, deadline)).collect();
    let workers: Vec<_> = (0..3).map(|w| tokio::spawn(valid(server.endpoint.clone(), w, deadline))).collect();
    let mut failures = Vec::new();
    let mut done = 0;
    for w in workers {
        let (ok, failed) = w.await.unwrap();
        done += ok;
        failures.extend(failed);
    }
    let attacks: u64 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    eprintln!("soak: {done} valid operations, {attacks} hostile clients");
    assert!(failures.is_empty(), "valid requests failed: {failures:?}");
    assert!(done > 0 && attacks > 0);

    // What the hostile clients held comes back.
    let settle = Instant::now() + SETTLE_MAX;
    loop {
        let ((conns, streams), (fds, rss)) = (gauges(&server), usage(&server));
        let back = conns <= conns_before + 1 && streams == 0 && fds <= fds_before + FDS_SLACK;
        if back && rss <= rss_before + RSS_SLACK_KIB {
            eprintln!(
                "soak: settled: connections {conns} (before {conns_before}), fds {fds} (before {fds_before}), \
                 RSS {rss} KiB (before {rss_before})"
            );
            break;
        }
        assert!(
            Instant::now() < settle,
            "not back after {SETTLE_MAX:?}: connections {conns} (before {conns_before}), streams {streams}, \
             fds {fds} (before {fds_before}), RSS {rss} KiB (before {rss_before})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every drive still online, and the server still serves.
    let (status, body) = common::raw::signed_get(&server.addr, "/ferrite/admin/v1/heal").unwrap();
    assert_eq!(status, 200);
    let heal: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(heal["drives"].as_array().unwrap().iter().all(|d| d["online"] == true), "{heal}");
    assert_eq!(common::get_bytes(&c, BUCKET, "big").await, big);
}
