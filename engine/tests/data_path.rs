//! The engine's write path end to end, without HTTP: objects around block boundaries, written
//! in pieces that straddle shard boundaries (the first block is gathered in a buffer, later
//! ones are filled straight into their frames), read back from the drives byte for byte, and
//! read back again with two of the four drives' data files gone, so parity must be right too.

use std::path::{Path, PathBuf};

use ferrite_engine::{DataLoc, Engine, EngineConfig, ObjectMeta};
use monoio::FusionDriver;

fn meta(size: u64) -> ObjectMeta {
    ObjectMeta {
        size,
        etag: "0123456789abcdef0123456789abcdef".into(),
        mtime_ms: 0,
        headers: vec![],
        checksum: None,
        tags: vec![],
        part_sizes: vec![],
        data: DataLoc::Parts(vec![]),
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn remove_files_under(dir: &Path) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            removed += remove_files_under(&path);
        } else if std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes the drives' directory however the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 4 drives, 2 + 2: a block splits into two shards of exactly half a block.
#[test]
fn objects_across_blocks_read_back_as_written_and_from_parity_2_plus_2() {
    round_trip(4);
}

/// 5 drives, 3 + 2: shards are rounded up (3 x 349,568 > 1 MiB), so the last data shard of
/// a full block ends in padding.
#[test]
fn objects_across_blocks_read_back_as_written_and_from_parity_3_plus_2() {
    round_trip(5);
}

fn round_trip(drive_count: usize) {
    let root = TempDir(std::env::temp_dir().join(format!("ferrite-data-path-{}-{drive_count}", std::process::id())));
    let drives: Vec<PathBuf> = (1..=drive_count).map(|i| root.0.join(format!("d{i}"))).collect();
    // No block cache (the default): every read comes from the drives.
    let config =
        EngineConfig { drives: drives.clone(), parity: Some(2), snapshot_every_bytes: u64::MAX, ..Default::default() };
    let (engine, mut boots) = Engine::open(config).expect("open engine");
    let boot = boots.pop().expect("one core");
    let mut rt = monoio::RuntimeBuilder::<FusionDriver>::new()
        .enable_timer()
        .attach_thread_pool(Box::new(monoio::blocking::DefaultThreadPool::new(4)))
        .build()
        .expect("runtime");
    let e = engine.clone();
    rt.block_on(async move {
        monoio::spawn(ferrite_engine::serve(e.clone(), boot));
        e.create_bucket("t").await.expect("bucket");
        let bs = e.block_size();
        let shard = e.layout().shard_size(bs);
        assert_eq!(e.layout().data, drive_count - 2);
        let mut written = Vec::new();
        for size in [1, bs - 1, bs, bs + 1, 2 * bs + 12_345, 3 * bs] {
            let data = pseudo_random(size, size as u64);
            // Whole, small pieces, and pieces just over a shard: every piece crosses a shard
            // or block boundary somewhere.
            for piece in [size, 7_919, shard + 1] {
                let key = format!("o-{size}-{piece}");
                let mut w = e.writer("t", &key, false).expect("writer");
                for part in data.chunks(piece) {
                    w.write(part).await.expect("write");
                }
                let done = w.finish().await.expect("finish");
                e.put_object("t", &key, meta(size as u64), done, None).await.expect("commit");
                written.push((key, data.clone()));
            }
        }
        let read_all = |what: &'static str| {
            let (e, written) = (e.clone(), &written);
            async move {
                for (key, data) in written {
                    let m = e.head_object("t", key).await.expect("head");
                    let mut reader = e.reader("t", key, &m, 0, m.size);
                    let mut got = Vec::with_capacity(data.len());
                    while let Some(chunk) = reader.next_chunk().await.expect("read") {
                        got.extend_from_slice(&chunk);
                    }
                    assert!(
                        got == *data,
                        "{key} ({what}): {} bytes read, {} written, or different",
                        got.len(),
                        data.len()
                    );
                }
            }
        };
        read_all("all drives").await;
        // As many drives as there is parity lose every data file: reads need the parity.
        let removed: usize = drives[..2].iter().map(|d| remove_files_under(&d.join("data"))).sum();
        assert!(removed >= written.len(), "only {removed} data files removed");
        read_all("two drives' data files gone").await;
    });
    drop(rt);
}
