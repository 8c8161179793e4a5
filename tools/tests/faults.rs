//! Drive faults against the real binary, injected by the test-only fault layer in the I/O
//! path (engine/src/fault.rs): rules written to `FERRITE_FAULTS_FILE` take effect while the
//! server runs. This is a shim inside the process, not a device-mapper or FUSE layer: the
//! machine's containers cannot create those. It fails or delays the same calls a failing
//! disk would fail or delay (open, read, write, sync, remove) on one drive's paths.

mod common;

use std::path::PathBuf;

use std::time::Duration;

use common::{bytes, wipe, Server};

struct Faulty {
    server: Server,
    rules: PathBuf,
}

const MONITOR_OFF: (&str, &str) = ("FERRITE_DRIVE_CHECK_SECS", "0");

impl Faulty {
    fn start(drives: usize, args: &[&str]) -> Faulty {
        Faulty::start_with(drives, args, &[])
    }

    fn start_with(drives: usize, args: &[&str], envs: &[(&str, &str)]) -> Faulty {
        let rules = std::env::temp_dir().join(format!("ferrite-faults-{}-{}", std::process::id(), rand_suffix()));
        std::fs::write(&rules, "").unwrap();
        let rules_env = rules.to_string_lossy().into_owned();
        let mut all = vec![("FERRITE_FAULTS_FILE", rules_env.as_str()), MONITOR_OFF];
        all.extend_from_slice(envs);
        let server = Server::start_with(drives, args, &all);
        Faulty { server, rules }
    }

    /// kill -9 and start again on the same drives, with the same (current) fault rules.
    fn restart(self) -> Faulty {
        let rules = self.rules.clone();
        let rules_env = rules.to_string_lossy().into_owned();
        let server = self.server.restart_with(&[("FERRITE_FAULTS_FILE", &rules_env), MONITOR_OFF]);
        Faulty { server, rules }
    }

    /// Replaces the fault rules; the server's watcher picks them up within 20 ms.
    fn set(&self, rules: &str) {
        std::fs::write(&self.rules, rules).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }

    fn drive(&self, n: usize) -> String {
        // Rules match on a path substring: "/d2/" is drive 2's directory.
        format!("/{}/", self.server.drives[n - 1].file_name().unwrap().to_string_lossy())
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

use common::{get_or_code as get, put_or_code as put};

const SIZES: [usize; 5] = [10, 90_000, 400_000, 1 << 20, 3_000_000];

async fn put_all(c: &aws_sdk_s3::Client, bucket: &str, tag: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, size) in SIZES.iter().enumerate() {
        let key = format!("{tag}-{i}");
        let body = bytes(*size, (i as u64) << 8 | tag.len() as u64);
        put(c, bucket, &key, &body).await.unwrap_or_else(|e| panic!("PUT {key} ({tag}): {e}"));
        out.push((key, body));
    }
    out
}

async fn check_all(c: &aws_sdk_s3::Client, bucket: &str, objects: &[(String, Vec<u8>)], when: &str) {
    for (key, body) in objects {
        match get(c, bucket, key).await {
            Ok(got) => assert!(got == *body, "{key} {when}: wrong bytes ({} vs {})", got.len(), body.len()),
            Err(e) => panic!("GET {key} {when}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_errors_on_parity_drives_keep_working_and_one_more_fails_cleanly() {
    // 6 drives, 4 data + 2 parity: write quorum 4, so two drives may fail for writes too.
    // The commit loop's own retry of a failed batch's void is an hour away: only a write or
    // the heal below can void the refused small PUT.
    let f = Faulty::start_with(6, &["--parity", "2"], &[("FERRITE_VOID_RETRY_SECS", "3600")]);
    let c = f.server.client();
    c.create_bucket().bucket("eio").send().await.unwrap();
    let before = put_all(&c, "eio", "before").await;
    let all_ops = "open,read,write,sync,remove";
    f.set(&format!("fail=EIO:{all_ops}:{};fail=EIO:{all_ops}:{}", f.drive(2), f.drive(5)));
    check_all(&c, "eio", &before, "with drives 2 and 5 failing every call").await;
    let during = put_all(&c, "eio", "during").await;
    check_all(&c, "eio", &during, "written while drives 2 and 5 fail").await;
    // A third drive: reads of erasure-coded objects and every write must fail with an S3
    // error, never with wrong or partial bytes.
    f.set(&format!(
        "fail=EIO:{all_ops}:{};fail=EIO:{all_ops}:{};fail=EIO:{all_ops}:{}",
        f.drive(2),
        f.drive(5),
        f.drive(1)
    ));
    for (key, body) in before.iter().chain(&during) {
        match get(&c, "eio", key).await {
            Ok(got) => assert!(got == *body, "{key}: wrong bytes with 3 of 6 drives failing"),
            Err(code) => {
                assert!(body.len() > 128 << 10, "{key}: inline objects live on every drive, yet: {code}");
                assert_eq!(code, "ServiceUnavailable", "{key}");
            }
        }
    }
    let refused = put(&c, "eio", "refused", &bytes(500_000, 1)).await;
    assert_eq!(refused, Err("ServiceUnavailable".into()));
    let refused_small = put(&c, "eio", "refused-small", b"tiny").await;
    assert_eq!(refused_small, Err("ServiceUnavailable".into()));
    // The drives come back: everything reads, the refused writes do not exist, and a heal
    // (then the loss of two other drives) shows the copies missed meanwhile were rebuilt.
    // The heal must also void the refused small PUT's log record first: it reached 3
    // drives, short of the quorum of 4, and no write has come since to carry the void.
    f.set("");
    check_all(&c, "eio", &before, "after the drives recovered").await;
    assert_eq!(get(&c, "eio", "refused").await, Err("NoSuchKey".into()));
    assert_eq!(get(&c, "eio", "refused-small").await, Err("NoSuchKey".into()));
    let out = common::admin(&f.server, &["heal", "--wait"]);
    assert!(out.status.success(), "heal: {}", String::from_utf8_lossy(&out.stdout));
    wipe(&f.server.drives[2]);
    wipe(&f.server.drives[3]);
    check_all(&c, "eio", &during, "healed, then drives 3 and 4 lost").await;
    // Its only copy left (drives 3 and 4 are wiped) is on drive 6, under the void the heal
    // waited for, so a restart does not bring it back.
    let f = f.restart();
    let c = f.server.client();
    assert_eq!(get(&c, "eio", "refused-small").await, Err("NoSuchKey".into()), "after a restart");
    check_all(&c, "eio", &during, "after a restart").await;
    let _ = std::fs::remove_file(&f.rules);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_drive_does_not_stall_reads_or_writes() {
    let f = Faulty::start(4, &[]);
    let c = f.server.client();
    c.create_bucket().bucket("slow").send().await.unwrap();
    let before = put_all(&c, "slow", "before").await;
    // Drive 3 takes an hour for every read, write and sync (opens stay quick: see ARCHITECTURE.md).
    f.set(&format!("delay=3600000:read,write,sync:{}", f.drive(3)));
    // Each of these would hang for an hour (the client gives up after 60 s) if a request
    // waited for drive 3: reads must be served from parity, writes from a quorum.
    check_all(&c, "slow", &before, "with drive 3 stalled").await;
    let during = put_all(&c, "slow", "during").await;
    check_all(&c, "slow", &during, "written while drive 3 stalled").await;
    c.delete_object().bucket("slow").key("before-0").send().await.unwrap();
    // The drive recovers; a restart replays the logs (drive 3 missed batches: holes).
    f.set("");
    let f = f.restart();
    let c = f.server.client();
    assert_eq!(get(&c, "slow", "before-0").await, Err("NoSuchKey".into()));
    check_all(&c, "slow", &before[1..], "after drive 3 recovered and a restart").await;
    check_all(&c, "slow", &during, "after drive 3 recovered and a restart").await;
    let _ = std::fs::remove_file(&f.rules);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_drives_refuse_writes_cleanly_and_recover_when_space_returns() {
    let f = Faulty::start(4, &[]);
    let c = f.server.client();
    c.create_bucket().bucket("full").send().await.unwrap();
    let before = put_all(&c, "full", "before").await;
    // One drive full: writes still reach a quorum.
    f.set(&format!("fail=ENOSPC:write:{}", f.drive(4)));
    let one_full = put_all(&c, "full", "onefull").await;
    // Every drive full: a clean 507 for data and metadata writes alike; reads go on.
    f.set("fail=ENOSPC:write:/d");
    for (key, size) in [("big", 2_000_000usize), ("small", 100), ("mid", 200_000)] {
        let result = put(&c, "full", key, &bytes(size, 5)).await;
        assert_eq!(result, Err("XFerriteStorageFull".into()), "PUT {key} with every drive full");
    }
    let delete = c.delete_object().bucket("full").key("before-1").send().await;
    assert_eq!(common::code(delete), "XFerriteStorageFull");
    check_all(&c, "full", &before, "with every drive full").await;
    // Space returns: writes work again, and a restart shows exactly the acknowledged ones
    // (the refused batches were voided, not left as holes that end replay).
    f.set("");
    let after = put_all(&c, "full", "after").await;
    let f = f.restart();
    let c = f.server.client();
    for objects in [&before, &one_full, &after] {
        check_all(&c, "full", objects, "after a restart").await;
    }
    for key in ["big", "small", "mid"] {
        assert_eq!(get(&c, "full", key).await, Err("NoSuchKey".into()), "{key} was refused, so must not exist");
    }
    let _ = std::fs::remove_file(&f.rules);
}
