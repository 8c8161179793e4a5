//! `ferrite bench` against the real server for a few seconds: every operation kind of the
//! mixed workload completes without errors, the JSON report is complete, and the tool
//! removes what it created.

mod common;

use std::process::Command;

use common::Server;

fn bench(server: &Server, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .arg("bench")
        .args(args)
        .args(["--endpoint", &server.endpoint, "--json", "--warmup", "200ms", "--concurrency", "4"])
        .output()
        .expect("run ferrite bench");
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The number after `"name":` in the JSON object that starts at `from`.
fn field(json: &str, from: usize, name: &str) -> f64 {
    let key = format!("\"{name}\":");
    let start =
        json[from..].find(&key).map(|i| from + i + key.len()).unwrap_or_else(|| panic!("{name} missing in {json}"));
    let end = json[start..].find([',', '}']).map(|i| start + i).unwrap();
    json[start..end].parse().unwrap()
}

#[tokio::test]
async fn mixed_and_multipart_workloads_run_clean_and_clean_up() {
    let server = Server::start(4);
    let mixed = bench(&server, &["mixed", "--size", "64KiB", "--objects", "200", "--duration", "2s"]);
    for op in ["get", "stat", "put", "delete"] {
        let at = mixed.find(&format!("{{\"op\":\"{op}\"")).unwrap_or_else(|| panic!("{op} missing: {mixed}"));
        assert!(field(&mixed, at, "ops") > 0.0, "{op}: {mixed}");
        assert_eq!(field(&mixed, at, "errors"), 0.0, "{op}: {mixed}");
        assert!(field(&mixed, at, "p99_ms") >= field(&mixed, at, "p50_ms"));
    }
    assert!(field(&mixed, 0, "client_cpu_us_per_op") > 0.0);
    let mp = bench(&server, &["multipart", "--size", "11MiB", "--part-size", "5MiB", "--duration", "2s"]);
    let at = mp.find("{\"op\":\"multipart\"").unwrap();
    assert!(field(&mp, at, "ops") > 0.0 && field(&mp, at, "errors") == 0.0, "{mp}");
    // The bench bucket did not exist, so the tool removed it with everything in it.
    let buckets = server.client().list_buckets().send().await.unwrap();
    assert!(buckets.buckets().is_empty(), "left behind: {:?}", buckets.buckets());
}

#[tokio::test]
async fn failed_requests_are_reported_with_their_s3_error_code() {
    // Every data file write fails with "no space left", so each 1 MiB PUT gets 507
    // XFerriteStorageFull; the metadata log still takes writes, so the bucket is made.
    let server = Server::start_with(4, &[], &[("FERRITE_FAULTS", "fail=ENOSPC:write:/data/")]);
    let out = bench(&server, &["put", "--size", "1MiB", "--duration", "1s"]);
    let at = out.find("{\"op\":\"put\"").unwrap_or_else(|| panic!("put missing: {out}"));
    assert_eq!(field(&out, at, "ops"), 0.0, "{out}");
    let errors = field(&out, at, "errors");
    assert!(errors > 0.0, "{out}");
    assert_eq!(field(&out, at, "HTTP 507 XFerriteStorageFull"), errors, "every error has its code: {out}");
    // The human report names the code too, and the server kept serving.
    let table = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["bench", "put", "--size", "1MiB", "--duration", "300ms", "--warmup", "0s", "--concurrency", "1"])
        .args(["--endpoint", &server.endpoint])
        .output()
        .expect("run ferrite bench");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("put errors: ") && table.contains(" x HTTP 507 XFerriteStorageFull"), "{table}");
    let buckets = server.client().list_buckets().send().await.unwrap();
    assert!(buckets.buckets().is_empty(), "left behind: {:?}", buckets.buckets());
}

#[tokio::test]
async fn every_checksum_algorithm_is_sent_and_verified_and_bad_options_are_refused() {
    use aws_sdk_s3::types::ChecksumMode;
    let server = Server::start(4);
    let c = server.client();
    for algorithm in ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"] {
        let bucket = format!("bench-{algorithm}");
        let out = bench(
            &server,
            &[
                "put",
                "--size",
                "100KiB",
                "--duration",
                "300ms",
                "--bucket",
                &bucket,
                "--checksum",
                algorithm,
                "--no-cleanup",
            ],
        );
        let at = out.find("{\"op\":\"put\"").unwrap_or_else(|| panic!("put missing: {out}"));
        // The server checks each value against the body: a wrong one would be an error.
        assert!(field(&out, at, "ops") > 0.0 && field(&out, at, "errors") == 0.0, "{algorithm}: {out}");
        let listed = c.list_objects_v2().bucket(&bucket).send().await.unwrap();
        let key = listed.contents()[0].key().unwrap().to_owned();
        let head = c.head_object().bucket(&bucket).key(&key).checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
        let stored = match algorithm {
            "crc32" => head.checksum_crc32(),
            "crc32c" => head.checksum_crc32_c(),
            "crc64nvme" => head.checksum_crc64_nvme(),
            "sha1" => head.checksum_sha1(),
            _ => head.checksum_sha256(),
        };
        assert!(stored.is_some_and(|v| !v.is_empty()), "{algorithm}: {key} stored no checksum of it");
    }
    // Multipart: the algorithm named at creation, each part's checksum sent and listed in
    // the completion, and the object's checksum (of the parts' checksums) stored.
    let out = bench(
        &server,
        &[
            "multipart",
            "--size",
            "11MiB",
            "--part-size",
            "5MiB",
            "--duration",
            "500ms",
            "--bucket",
            "bench-mp",
            "--checksum",
            "sha256",
            "--no-cleanup",
        ],
    );
    let at = out.find("{\"op\":\"multipart\"").unwrap_or_else(|| panic!("multipart missing: {out}"));
    assert!(field(&out, at, "ops") > 0.0 && field(&out, at, "errors") == 0.0, "{out}");
    let listed = c.list_objects_v2().bucket("bench-mp").send().await.unwrap();
    let key = listed.contents()[0].key().unwrap().to_owned();
    let head = c.head_object().bucket("bench-mp").key(&key).checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert!(head.checksum_sha256().is_some_and(|v| v.ends_with("-3")), "{key}: {:?}", head.checksum_sha256());

    for (args, refusal) in [
        (vec!["--checksum", "md4"], "unknown --checksum md4"),
        (vec!["--endpoint", "http://127.0.0.1"], "give http://HOST:PORT"),
        (vec!["--endpoint", "ftp://127.0.0.1:21"], "give http://HOST:PORT"),
        // getaddrinfo takes 127.1, but no certificate can name it: refused, never sent in clear.
        (vec!["--endpoint", "https://127.1:9000"], "not a name or IP address a certificate can be checked against"),
        (vec!["--ca", "/nonexistent.pem"], "--ca is for https:// endpoints"),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrite"));
        cmd.args(["bench", "put", "--endpoint", &server.endpoint]).args(&args);
        let out = cmd.output().expect("run ferrite bench");
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(refusal), "{args:?}: {stderr}");
    }
}
