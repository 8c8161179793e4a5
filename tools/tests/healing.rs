//! Healing against the real binary: a drive replaced while serving is rebuilt online,
//! corruption in data and metadata files is found and repaired by `ferrite admin heal`,
//! and the background scanner repairs damage and reclaims leftovers on its own.
//!
//! The proof that a heal rebuilt a drive is always the same: after the heal, *other*
//! drives (as many as the parity) are wiped, and every object must still read back
//! byte-identical, which needs the healed drive's shards and log records.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use common::{bytes, wipe, Server};

/// Runs `ferrite admin heal ARGS` against the server; returns its JSON status.
fn admin_heal(server: &Server, args: &[&str]) -> String {
    let out = common::admin(server, &[&["heal"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.starts_with('{'), "ferrite admin heal {args:?} printed {stdout:?}, stderr {:?}", out.stderr);
    stdout
}

/// A number from the status JSON: `section` is "heal" or "scanner".
fn field(status: &str, section: &str, name: &str) -> u64 {
    let part = match section {
        "heal" => status.split("\"scanner\":").next().unwrap_or(""),
        _ => status.split("\"scanner\":").nth(1).unwrap_or(""),
    };
    let pattern = format!("\"{name}\":");
    let value = part.split(&pattern).nth(1).unwrap_or_else(|| panic!("no {section}.{name} in {status}"));
    value.split([',', '}']).next().unwrap().trim().parse().unwrap_or_else(|_| panic!("{section}.{name} in {status}"))
}

/// Polls the status until `done` says so; panics with the last status after `limit`.
fn wait_for(server: &Server, limit: Duration, what: &str, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let status = admin_heal(server, &["--status"]);
        if done(&status) {
            return status;
        }
        assert!(start.elapsed() < limit, "{what}: not done after {limit:?}; status {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

use common::data_files_of as data_files;

async fn put_mix(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, Vec<u8>)> {
    c.create_bucket().bucket(bucket).send().await.unwrap();
    let mut expected = Vec::new();
    for (i, size) in [0usize, 700, 100_000, 300_000, 1 << 20, 2_500_000].iter().enumerate() {
        for copy in 0..2 {
            let key = format!("obj-{i}-{copy}");
            let body = bytes(*size, (i * 7 + copy) as u64);
            c.put_object().bucket(bucket).key(&key).body(ByteStream::from(body.clone())).send().await.unwrap();
            expected.push((key, body));
        }
    }
    expected
}

async fn assert_all_read_back(c: &aws_sdk_s3::Client, bucket: &str, expected: &[(String, Vec<u8>)], when: &str) {
    for (key, body) in expected {
        let got = c.get_object().bucket(bucket).key(key).send().await;
        let got = match got {
            Ok(out) => out.body.collect().await.unwrap().into_bytes().to_vec(),
            Err(e) => panic!("{key} {when}: {e:?}"),
        };
        assert!(got == *body, "{key} {when}: {} bytes differ from the {} written", got.len(), body.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drive_replaced_while_serving_is_rebuilt_online() {
    let server = Server::start_with(4, &[], &[("FERRITE_DRIVE_CHECK_SECS", "1")]);
    let c = server.client();
    let expected = put_mix(&c, "heal").await;
    let upload = c.create_multipart_upload().bucket("heal").key("pending").send().await.unwrap();
    let part = bytes(5 << 20, 99);
    let part_etag = c
        .upload_part()
        .bucket("heal")
        .key("pending")
        .upload_id(upload.upload_id().unwrap())
        .part_number(1)
        .body(ByteStream::from(part.clone()))
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    let reference = data_files(&server.drives[0]).len();
    // Drive 2 is swapped for an empty one while the server runs.
    wipe(&server.drives[1]);
    let status = wait_for(&server, Duration::from_secs(60), "heal after drive replacement", |s| {
        s.contains("\"state\":\"done\"") && s.contains("drive replaced")
    });
    assert!(field(&status, "heal", "shards_repaired") > 0, "{status}");
    assert!(field(&status, "heal", "log_records_repaired") > 0, "{status}");
    assert_eq!(field(&status, "heal", "blocks_unrecoverable"), 0, "{status}");
    let names = |d: &Path| data_files(d).iter().map(|p| p.strip_prefix(d).unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&server.drives[1]), names(&server.drives[0]), "the rebuilt drive has every shard file");
    assert_eq!(data_files(&server.drives[1]).len(), reference);
    // Writes after the replacement land on it too; then lose two *other* drives.
    let late = bytes(1_500_000, 1234);
    c.put_object().bucket("heal").key("late").body(ByteStream::from(late.clone())).send().await.unwrap();
    wipe(&server.drives[0]);
    wipe(&server.drives[2]);
    let mut all = expected.clone();
    all.push(("late".into(), late));
    assert_all_read_back(&c, "heal", &all, "read from the rebuilt drive and one other").await;
    // The multipart part was rebuilt too: complete the upload and read it.
    let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .parts(aws_sdk_s3::types::CompletedPart::builder().part_number(1).e_tag(part_etag).build())
        .build();
    let server = server.restart_with(&[("FERRITE_DRIVE_CHECK_SECS", "1")]);
    let c = server.client();
    c.complete_multipart_upload()
        .bucket("heal")
        .key("pending")
        .upload_id(upload.upload_id().unwrap())
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    all.push(("pending".into(), part));
    assert_all_read_back(&c, "heal", &all, "after a restart on the rebuilt drive and one other").await;
}

/// Flips one byte in the middle of a file.
fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x5A;
    file.write_all_at(&byte, at).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_heal_repairs_bit_flips_and_truncation_in_data_and_metadata() {
    let server = Server::start_with(4, &[], &[("FERRITE_DRIVE_CHECK_SECS", "0")]);
    let c = server.client();
    let expected = put_mix(&c, "rot").await;
    // Data: flip a byte in every shard file on drive 1, truncate every one on drive 3.
    for file in data_files(&server.drives[0]) {
        let len = std::fs::metadata(&file).unwrap().len();
        flip(&file, len / 3);
    }
    for file in data_files(&server.drives[2]) {
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len / 2).unwrap();
    }
    // Metadata: a flipped byte inside drive 2's log, and drive 4's log cut in half.
    let wals = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d.join("meta"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("wal-"))
            .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
            .collect()
    };
    for wal in wals(&server.drives[1]) {
        flip(&wal, 40);
    }
    for wal in wals(&server.drives[3]) {
        let len = std::fs::metadata(&wal).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len / 2).unwrap();
    }
    admin_heal(&server, &["--wait"]);
    let status = admin_heal(&server, &["--status"]);
    assert!(status.contains("\"state\":\"done\""), "{status}");
    assert!(field(&status, "heal", "shards_repaired") >= 8, "{status}");
    assert!(status.contains("\"repaired_keys\":[\"rot/obj-"), "the status names what was repaired: {status}");
    assert!(field(&status, "heal", "log_records_repaired") >= 2, "{status}");
    assert_eq!(field(&status, "heal", "blocks_unrecoverable"), 0, "{status}");
    // A second heal finds nothing left to repair.
    admin_heal(&server, &["--wait"]);
    let again = admin_heal(&server, &["--status"]);
    assert_eq!(field(&again, "heal", "shards_repaired"), 0, "{again}");
    assert_eq!(field(&again, "heal", "log_records_repaired"), 0, "{again}");
    // And the repairs are real: the two drives that were *not* damaged go, the rest serve.
    wipe(&server.drives[1]);
    wipe(&server.drives[3]);
    assert_all_read_back(&c, "rot", &expected, "from the two repaired drives").await;
    // Metadata too: a restart replays the repaired logs of drives 1 and 3 alone.
    let server = server.restart_with(&[("FERRITE_DRIVE_CHECK_SECS", "0")]);
    assert_all_read_back(&server.client(), "rot", &expected, "after a restart on the repaired drives").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_scanner_repairs_damage_and_reclaims_leftovers() {
    let server = Server::start_with(
        4,
        &[],
        &[("FERRITE_SCAN_INTERVAL_SECS", "1"), ("FERRITE_LEFTOVER_AGE_SECS", "1"), ("FERRITE_DRIVE_CHECK_SECS", "0")],
    );
    let c = server.client();
    let expected = put_mix(&c, "scan").await;
    let victim = data_files(&server.drives[3]).into_iter().next().unwrap();
    flip(&victim, 100);
    // The start-up sweep (2 s after start) would take the leftover below: let it pass first.
    std::thread::sleep(Duration::from_secs(3));
    // A leftover of an interrupted write, last written an hour ago.
    let partition_dir = victim.parent().unwrap();
    let leftover = partition_dir.join(format!("{:032x}", 0xfeed_u128));
    std::fs::write(&leftover, b"orphan").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&leftover).unwrap().set_modified(old).unwrap();
    let status = wait_for(&server, Duration::from_secs(60), "scanner", |s| {
        field(s, "scanner", "shards_repaired") >= 1 && field(s, "scanner", "leftovers_removed") >= 1
    });
    assert!(field(&status, "scanner", "passes") >= 1, "{status}");
    assert!(!leftover.exists(), "the leftover was reclaimed");
    wipe(&server.drives[0]);
    wipe(&server.drives[1]);
    assert_all_read_back(&c, "scan", &expected, "after the scanner's repair, from drives 3 and 4").await;
}
