//! Durability against the real binary: drive loss while serving, kill -9 during concurrent
//! PUTs, and the start-up sweep of what interrupted writes leave behind.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{bytes, Server};

use common::get_opt as get;

#[tokio::test]
async fn two_of_four_drives_wiped_while_serving_every_object_reads_back() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("loss").send().await.unwrap();
    let sizes = [0usize, 1_000, 131_072, 200_000, 1 << 20, 3_000_000, 9_437_185];
    let mut expected = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        for copy in 0..3 {
            let key = format!("k{i}-{copy}");
            let body = bytes(*size, (i * 10 + copy) as u64);
            c.put_object().bucket("loss").key(&key).body(ByteStream::from(body.clone())).send().await.unwrap();
            expected.push((key, body));
        }
    }
    // Drives 1 and 3 are swapped for empty ones.
    common::wipe(&server.drives[0]);
    common::wipe(&server.drives[2]);
    for (key, body) in &expected {
        assert_eq!(get(&c, "loss", key).await.as_ref(), Some(body), "{key} after losing 2 of 4 drives");
    }
    let listed = c.list_objects_v2().bucket("loss").send().await.unwrap().key_count();
    assert_eq!(listed, Some(expected.len() as i32));
    // After a restart the wiped drives are formatted as replacements and reads still work.
    let server = server.restart();
    let c = server.client();
    for (key, body) in &expected {
        assert_eq!(get(&c, "loss", key).await.as_ref(), Some(body), "{key} after restart with replacement drives");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_puts_loses_no_acknowledged_write() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("crash").send().await.unwrap();
    // key -> every body written to it (in order), and the ones acknowledged.
    let acked: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let attempted: Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let c = c.clone();
        let acked = acked.clone();
        let attempted = attempted.clone();
        workers.push(tokio::spawn(async move {
            for i in 0..10_000u64 {
                // Fresh keys, plus one key per worker that is overwritten again and again.
                let key = if i % 4 == 0 { format!("hot-{w}") } else { format!("w{w}-{i}") };
                let size = [1_000usize, 50_000, 300_000, 1_500_000][(i % 4) as usize];
                let body = bytes(size, w * 1_000_000 + i);
                attempted.lock().unwrap().entry(key.clone()).or_default().push(body.clone());
                let put = c.put_object().bucket("crash").key(&key).body(ByteStream::from(body.clone())).send().await;
                match put {
                    Ok(_) => {
                        acked.lock().unwrap().insert(key, body);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let server = server.restart();
    for w in workers {
        let _ = w.await;
    }
    let c = server.client();
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(acked.len() > 20, "too few acknowledged writes ({}) to mean anything", acked.len());
    for (key, body) in &acked {
        let got = get(&c, "crash", key).await.unwrap_or_else(|| panic!("acknowledged {key} lost"));
        // A key may hold a later write that was in flight at the kill; never a torn one.
        let candidates = &attempted[key];
        let pos = candidates.iter().position(|b| b == body).unwrap();
        assert!(candidates[pos..].contains(&got), "{key}: content is neither the acknowledged body nor a later write");
    }
    // Every visible object is one of the bodies written to its key, complete.
    let mut token = None;
    loop {
        let page = c.list_objects_v2().bucket("crash").set_continuation_token(token.clone()).send().await.unwrap();
        for o in page.contents() {
            let key = o.key().unwrap();
            let got = get(&c, "crash", key).await.unwrap();
            assert!(attempted[key].contains(&got), "{key} is torn");
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(str::to_owned);
    }
}

#[tokio::test]
async fn start_up_sweep_reclaims_orphaned_data_files_only() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("sweep").send().await.unwrap();
    let body = bytes(2_000_000, 3);
    c.put_object().bucket("sweep").key("kept").body(ByteStream::from(body.clone())).send().await.unwrap();
    // An orphan, as a crash between the data write and the metadata commit leaves it.
    let orphans: Vec<_> =
        server.drives.iter().map(|d| d.join("data").join("007").join(format!("{:032x}", 0xdead_beef_u128))).collect();
    for o in &orphans {
        std::fs::write(o, b"orphaned shard").unwrap();
    }
    let server = server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while orphans.iter().any(|o| o.exists()) {
        assert!(std::time::Instant::now() < deadline, "orphans were not reclaimed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(&server.client(), "sweep", "kept").await, Some(body));
}

/// Index snapshots: start-up loads them and replays only the newer log; a different
/// executor count makes start-up replay everything, and partitions move between cores
/// without losing anything.
#[tokio::test]
async fn snapshots_log_tails_and_executor_count_changes_keep_every_object() {
    let small_snapshots = ("FERRITE_SNAPSHOT_BYTES", "2000");
    let mut server = Server::start_with(4, &[], &[("FERRITE_CORES", "2"), small_snapshots]);
    let mut expected: HashMap<String, Vec<u8>> = HashMap::new();
    let c = server.client();
    c.create_bucket().bucket("snap").send().await.unwrap();
    let upload = c.create_multipart_upload().bucket("snap").key("pending").send().await.unwrap();
    let upload_id = upload.upload_id().unwrap().to_owned();
    c.upload_part()
        .bucket("snap")
        .key("pending")
        .upload_id(&upload_id)
        .part_number(1)
        .body(ByteStream::from(bytes(6 << 20, 1)))
        .send()
        .await
        .unwrap();
    let steps: [(&str, &str, &str); 5] = [
        ("2", "snapshots", "after snapshots were written"),
        ("2", "snapshots", "after more writes since the snapshots"),
        ("1", "rebuilt", "with one executor instead of two"),
        ("3", "rebuilt", "with three executors"),
        ("3", "snapshots", "with three executors again"),
    ];
    for (round, (cores, how, when)) in (0u64..).zip(steps) {
        // Writes, overwrites and deletes, then a kill -9.
        let c = server.client();
        for i in 0..25u64 {
            let key = format!("r{round}-{i}");
            let body = bytes(if i % 5 == 0 { 300_000 } else { 2_000 }, round * 100 + i);
            c.put_object().bucket("snap").key(&key).body(ByteStream::from(body.clone())).send().await.unwrap();
            expected.insert(key, body);
        }
        c.delete_object().bucket("snap").key(format!("r{round}-3")).send().await.unwrap();
        expected.remove(&format!("r{round}-3"));
        server = server.restart_with(&[("FERRITE_CORES", cores), small_snapshots]);
        assert!(server.index_note().contains(how), "{when}: {:?}", server.startup());
        let c = server.client();
        for (key, body) in &expected {
            assert_eq!(get(&c, "snap", key).await.as_ref(), Some(body), "{key} {when}");
        }
        let listed = c.list_objects_v2().bucket("snap").send().await.unwrap();
        assert_eq!(listed.key_count(), Some(expected.len() as i32), "{when}");
        let uploads = c.list_multipart_uploads().bucket("snap").send().await.unwrap();
        assert_eq!(uploads.uploads().len(), 1, "{when}");
        let parts = c.list_parts().bucket("snap").key("pending").upload_id(&upload_id).send().await.unwrap();
        assert_eq!(parts.parts().len(), 1, "{when}");
    }
}

/// Bitrot and a lost file: the GET is served from parity, and the damaged shards are
/// rewritten in place, byte-identical to what was first written.
#[tokio::test]
async fn corrupt_and_missing_shards_are_served_from_parity_and_repaired() {
    let server = Server::start(4);
    let c = server.client();
    c.create_bucket().bucket("heal").send().await.unwrap();
    let body = bytes(3_500_000, 77);
    c.put_object().bucket("heal").key("obj").body(ByteStream::from(body.clone())).send().await.unwrap();
    // The object's shard file on each drive (the only data file in the deployment).
    let shard_file = |drive: &std::path::Path| -> std::path::PathBuf {
        let mut found = Vec::new();
        for dir in std::fs::read_dir(drive.join("data")).unwrap() {
            for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                found.push(f.unwrap().path());
            }
        }
        assert_eq!(found.len(), 1, "expected one data file on {}", drive.display());
        found.pop().unwrap()
    };
    let files: Vec<_> = server.drives.iter().map(|d| shard_file(d)).collect();
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let file_id = u128::from_str_radix(files[0].file_name().unwrap().to_str().unwrap(), 16).unwrap();
    // Shards 0 and 1 are the data shards, read on every GET: corrupt one, delete the other.
    let data_drive = |shard: u128| ((shard + file_id % 4) % 4) as usize;
    let (corrupt, missing) = (data_drive(0), data_drive(1));
    let mut damaged = originals[corrupt].clone();
    damaged[100] ^= 0xFF;
    damaged[1_100_000] ^= 0x01;
    std::fs::write(&files[corrupt], &damaged).unwrap();
    std::fs::remove_file(&files[missing]).unwrap();
    assert_eq!(get(&c, "heal", "obj").await.as_ref(), Some(&body));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for drive in [corrupt, missing] {
        loop {
            if std::fs::read(&files[drive]).ok().as_ref() == Some(&originals[drive]) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "drive {drive}'s shard was not repaired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(get(&c, "heal", "obj").await.as_ref(), Some(&body));
}

/// The block cache: a second GET is served from memory, ranges too, and an overwrite is never
/// answered with the old bytes (it writes a new data file; cache entries belong to files).
#[tokio::test]
async fn repeated_reads_come_from_the_block_cache_and_never_go_stale() {
    let metric = |server: &Server, result: &str| -> u64 {
        common::metric(server, &format!("ferrite_block_cache_total{{result=\"{result}\"}}"))
    };
    // One core: each core has its own cache, and a new connection may land on either.
    let server = Server::start_with(4, &[], &[("FERRITE_CORES", "1")]);
    let c = server.client();
    c.create_bucket().bucket("cache").send().await.unwrap();
    let first = bytes(3_500_000, 5); // 4 blocks of 1 MiB
    c.put_object().bucket("cache").key("obj").body(ByteStream::from(first.clone())).send().await.unwrap();
    assert_eq!(get(&c, "cache", "obj").await.unwrap(), first);
    let (hits, misses) = (metric(&server, "hit"), metric(&server, "miss"));
    assert_eq!((hits, misses), (0, 4), "the first read goes to the drives");
    assert_eq!(get(&c, "cache", "obj").await.unwrap(), first);
    let range = c.get_object().bucket("cache").key("obj").range("bytes=1048570-2097160").send().await.unwrap();
    assert_eq!(range.body.collect().await.unwrap().into_bytes(), first[1_048_570..=2_097_160]);
    assert_eq!((metric(&server, "hit"), metric(&server, "miss")), (4 + 3, 4), "then it comes from memory");

    let second = bytes(3_500_000, 6);
    c.put_object().bucket("cache").key("obj").body(ByteStream::from(second.clone())).send().await.unwrap();
    assert_eq!(get(&c, "cache", "obj").await.unwrap(), second, "an overwrite is read, not the cached bytes");

    // Off: every read goes to the drives.
    let server = server.restart_with(&[("FERRITE_CORES", "1"), ("FERRITE_CACHE_MIB", "0")]);
    let c = server.client();
    assert_eq!(get(&c, "cache", "obj").await.unwrap(), second);
    assert_eq!(get(&c, "cache", "obj").await.unwrap(), second);
    assert_eq!((metric(&server, "hit"), metric(&server, "miss")), (0, 0));

    // A cache of 4 blocks under a 6-block object: evictions between the reads ahead and
    // the reads served; every byte still right, whole and in ranges.
    let server = server.restart_with(&[("FERRITE_CORES", "1"), ("FERRITE_CACHE_MIB", "4")]);
    let c = server.client();
    let big = bytes(6 * 1_048_576 - 1000, 7);
    c.put_object().bucket("cache").key("big").body(ByteStream::from(big.clone())).send().await.unwrap();
    for round in 0..3 {
        assert!(get(&c, "cache", "big").await.unwrap() == big, "round {round}");
        for (from, to) in
            [(0usize, 10usize), (1_048_000, 3_200_000), (5_242_000, big.len() - 1), (2_097_152, 2_097_152)]
        {
            let range = format!("bytes={from}-{to}");
            let out = c.get_object().bucket("cache").key("big").range(&range).send().await.unwrap();
            assert!(out.body.collect().await.unwrap().into_bytes() == big[from..=to], "round {round} {range}");
        }
    }
    assert!(metric(&server, "hit") > 0, "some reads were served from the small cache");
}
