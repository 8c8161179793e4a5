//! The engine without HTTP: durable put and verified get of 4 KiB, 1 MiB and 64 MiB objects
//! on four temporary drives (2 data + 2 parity), one executor, io_uring when available.
//! Every put is fdatasync'd like a real one. Run: `cargo bench -p ferrite-benches --bench engine`.
//! FERRITE_BENCH_DIR chooses where the drives go (default: the system temp dir).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrite_benches::bytes;
use ferrite_engine::{DataLoc, Engine, EngineConfig, ObjectMeta};
use monoio::FusionDriver;

fn meta(size: u64) -> ObjectMeta {
    ObjectMeta {
        size,
        etag: "0123456789abcdef0123456789abcdef".into(),
        mtime_ms: 0,
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        checksum: None,
        tags: vec![],
        part_sizes: vec![],
        data: DataLoc::Parts(vec![]),
    }
}

fn engine_put_get(c: &mut Criterion) {
    let base = std::env::var("FERRITE_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let root = base.join(format!("ferrite-bench-{}", std::process::id()));
    let drives: Vec<PathBuf> = (1..=4).map(|i| root.join(format!("d{i}"))).collect();
    let uring = monoio::utils::detect_uring();
    // No block cache (the default): every GET reads the drives. The runtime below drives
    // io_uring when the kernel allows it, and the engine's disk I/O follows it.
    let config = EngineConfig { drives, snapshot_every_bytes: u64::MAX, ..Default::default() };
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
        e.create_bucket("bench").await.expect("bucket");
    });
    let mut g = c.benchmark_group(if uring { "engine_io_uring" } else { "engine_blocking_io" });
    for (name, size) in [("4KiB", 4usize << 10), ("1MiB", 1 << 20), ("64MiB", 64 << 20)] {
        let data = bytes(size, size as u64);
        g.throughput(Throughput::Bytes(size as u64));
        if size >= 64 << 20 {
            g.sample_size(10);
        }
        let key = format!("obj-{name}");
        g.bench_function(format!("put {name}"), |b| {
            b.iter(|| {
                let (e, data, key) = (engine.clone(), &data, &key);
                rt.block_on(async move {
                    let mut w = e.writer("bench", key, true).expect("writer");
                    w.write(data).await.expect("write");
                    let done = w.finish().await.expect("finish");
                    e.put_object("bench", key, meta(data.len() as u64), done, None).await.expect("commit");
                })
            })
        });
        g.bench_function(format!("get {name}"), |b| {
            b.iter(|| {
                let (e, key) = (engine.clone(), &key);
                rt.block_on(async move {
                    let m = e.head_object("bench", key).await.expect("head");
                    let mut reader = e.reader("bench", key, &m, 0, m.size);
                    let mut total = 0;
                    while let Some(chunk) = reader.next_chunk().await.expect("read") {
                        total += chunk.len();
                    }
                    assert_eq!(total as u64, m.size);
                })
            })
        });
    }
    g.finish();
    drop(rt);
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    targets = engine_put_get
}
criterion_main!(benches);
