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
