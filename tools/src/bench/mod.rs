//! `ferrite bench`: a warp-style S3 load generator. Each worker owns one keep-alive
//! connection and a blocking thread; requests are signed with SigV4 (UNSIGNED-PAYLOAD by
//! default, so the tool does not hash payloads). It prepares its objects, measures only
//! after a warm-up, reports per operation obj/s, MiB/s, latency percentiles and time to
//! first byte, and its own CPU per request, then removes what it created.

mod opts;
mod report;
mod stats;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use opts::BenchArgs;
use opts::{Op, Opts};
use stats::{cpu_time, ok, OpStats, Rng};
use worker::{delete_xml, put_headers, worker, Shared};

use crate::client::Conn;

/// How often the measuring loop looks whether the workers are done (a delete run ends when
/// its objects do, and is timed to that end).
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often the progress line is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Keys listed (and deleted) per request when cleaning up.
const CLEANUP_PAGE_KEYS: usize = 1000;

/// One bench run: bucket, prepared objects, warm-up, measurement, report, clean-up.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let o = Opts::from_args(args)?;
    let mut admin = o.conn(0);
    let created_bucket = ensure_bucket(&o, &mut admin)?;
    let data = payload(o.size);
    let prepared = prepare(&o, &data)?;
    let shared = Arc::new(Shared {
        opts: o.clone(),
        data,
        prepared,
        next_delete: AtomicU64::new(0),
        done_ops: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        measuring: AtomicBool::new(false),
    });
    let handles: Vec<_> = (0..o.concurrency)
        .map(|i| {
            let shared = shared.clone();
            std::thread::spawn(move || worker(shared, i))
        })
        .collect();
    let (measured, cpu) = measure(&o, &shared, &handles);
    shared.stop.store(true, Ordering::Relaxed);
    let merged = collect(handles);
    if !o.json {
        eprintln!();
    }
    let total_ops: u64 = merged.values().map(|s| s.ops + s.errors).sum();
    report::report(&o, &merged, measured, cpu, total_ops);
    if o.cleanup {
        cleanup(&o, &mut admin, created_bucket);
    }
    Ok(())
}

/// Creates the bucket unless it exists; returns whether it did (then clean-up removes it).
fn ensure_bucket(o: &Opts, admin: &mut Conn) -> Result<bool, String> {
    let bucket = format!("/{}", o.bucket);
    let head = admin.call("HEAD", &bucket, "", &[], &[], false).map_err(|e| format!("{}: {e}", o.endpoints[0]))?;
    if head.status == 404 {
        let r = admin.call("PUT", &bucket, "", &[], &[], false).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("cannot create bucket {}: HTTP {}", o.bucket, r.status));
        }
        return Ok(true);
    }
    if head.status != 200 {
        return Err(format!("bucket {}: HTTP {} (check credentials)", o.bucket, head.status));
    }
    Ok(false)
}

/// The bytes every object is cut from: deterministic, incompressible.
fn payload(size: u64) -> Vec<u8> {
    let mut data = vec![0u8; size.max(1) as usize];
    let mut rng = Rng(42);
    for chunk in data.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    data
}

/// Uploads the objects the operations that read or delete them need; returns their keys.
fn prepare(o: &Opts, data: &[u8]) -> Result<Vec<String>, String> {
    if !o.op.reads_prepared() {
        return Ok(Vec::new());
    }
    let prepared: Vec<String> = (0..o.objects).map(|i| format!("prep/{i:08}")).collect();
    if prepared.is_empty() {
        return Ok(prepared);
    }
    eprintln!("preparing {} objects of {} bytes...", prepared.len(), o.size);
    let keys = Arc::new(prepared.clone());
    let (od, dd) = (o.clone(), Arc::new(data.to_vec()));
    let failures: usize = parallel(o, move |i, conn| {
        let mut failed = 0;
        for k in keys.iter().skip(i).step_by(od.concurrency) {
            let path = format!("/{}/{k}", od.bucket);
            if !ok(&conn.call("PUT", &path, "", &put_headers(&od, &dd), &dd, false)) {
                failed += 1;
            }
        }
        failed
    })
    .into_iter()
    .sum();
    if failures > 0 {
        return Err(format!("{failures} objects failed to upload while preparing"));
    }
    Ok(prepared)
}

/// Runs jobs on `concurrency` threads, each with its own connection.
fn parallel<T: Send + 'static>(o: &Opts, job: impl Fn(usize, &mut Conn) -> T + Send + Sync + 'static) -> Vec<T> {
    let job = Arc::new(job);
    let handles: Vec<_> = (0..o.concurrency)
        .map(|i| {
            let job = job.clone();
            let mut conn = o.conn(i);
            std::thread::spawn(move || job(i, &mut conn))
        })
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok()).collect()
}

/// Waits out the warm-up, then measures for --duration (or until the workers are done);
/// returns the time measured and the CPU the tool used meanwhile.
fn measure<T>(o: &Opts, shared: &Shared, handles: &[JoinHandle<T>]) -> (Duration, Duration) {
    // Deleting consumes a finite set of objects: measure it from the first request.
    if o.op != Op::Delete {
        std::thread::sleep(o.warmup);
    }
    let cpu_start = cpu_time();
    let measure_start = Instant::now();
    let ops_start = shared.done_ops.load(Ordering::Relaxed);
    shared.measuring.store(true, Ordering::Relaxed);
    let mut last_progress = Instant::now();
    while measure_start.elapsed() < o.duration {
        // Poll finely so a run whose work ends early (delete) is timed to its end.
        std::thread::sleep(POLL_INTERVAL.min(o.duration.saturating_sub(measure_start.elapsed())));
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        if !o.json && last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            let done = shared.done_ops.load(Ordering::Relaxed) - ops_start;
            let secs = measure_start.elapsed().as_secs_f64();
            eprint!("\r{:5.1}s  {done} requests  {:.0} requests/s   ", secs, done as f64 / secs.max(1e-9));
        }
    }
    shared.measuring.store(false, Ordering::Relaxed);
    (measure_start.elapsed(), cpu_time().saturating_sub(cpu_start))
}

/// Every worker's figures, merged per operation kind.
fn collect(handles: Vec<JoinHandle<BTreeMap<&'static str, OpStats>>>) -> BTreeMap<&'static str, OpStats> {
    let mut merged: BTreeMap<&'static str, OpStats> = BTreeMap::new();
    for h in handles {
        if let Ok(stats) = h.join() {
            for (op, s) in stats {
                merged.entry(op).or_insert_with(OpStats::new).merge(&s);
            }
        }
    }
    merged
}

/// Deletes every object the run created (listing the bucket) and the bucket if it made it.
fn cleanup(o: &Opts, conn: &mut Conn, created_bucket: bool) {
    let bucket = format!("/{}", o.bucket);
    let prefixes = ["prep/", "put/", "multipart/"];
    for prefix in prefixes {
        let list = format!("list-type=2&max-keys={CLEANUP_PAGE_KEYS}&prefix={prefix}");
        while let Ok(r) = conn.call("GET", &bucket, &list, &[], &[], true) {
            let xml = String::from_utf8_lossy(&r.body).into_owned();
            let keys: Vec<String> =
                xml.split("<Key>").skip(1).filter_map(|p| p.split("</Key>").next().map(str::to_owned)).collect();
            if keys.is_empty() {
                break;
            }
            for batch in keys.chunks(CLEANUP_PAGE_KEYS) {
                let _ = conn.call("POST", &bucket, "delete=", &[], delete_xml(batch).as_bytes(), false);
            }
        }
    }
    if created_bucket {
        let _ = conn.call("DELETE", &bucket, "", &[], &[], false);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::opts::{parse_duration, parse_size, BenchArgs, Opts};
    use super::stats::Rng;
    use super::worker::object_size;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("x").is_err());
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn random_sizes_stay_in_bounds() {
        let cli = Cli::try_parse_from(["bench", "put", "--size", "1MiB", "--random-size"]).unwrap();
        let o = Opts::from_args(cli.bench).unwrap();
        let mut rng = Rng(7);
        for _ in 0..1000 {
            let s = object_size(&o, &mut rng);
            assert!((1024..=1 << 20).contains(&s));
        }
    }
}
