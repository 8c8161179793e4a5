//! What a bench run counts: latency and time-to-first-byte histograms and volume per
//! operation kind, why requests failed, the tool's own CPU time, and the cheap random
//! numbers the workers draw keys and sizes from.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::Reply;

/// The longest latency a histogram holds: 10 minutes, in microseconds.
const LATENCY_US_MAX: u64 = 600_000_000;
/// Significant figures the histograms keep.
const HISTOGRAM_PRECISION: u8 = 3;
/// Characters of an error kind kept for the report.
const ERROR_CODE_CHARS_MAX: usize = 64;
const ERROR_TEXT_CHARS_MAX: usize = 80;

/// xorshift64*: cheap per-worker randomness for keys and sizes.
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)] // not an iterator: it never ends
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Latencies and volume of one operation kind, for one worker or merged.
pub struct OpStats {
    pub latency_us: Histogram<u64>,
    pub ttfb_us: Histogram<u64>,
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Why requests failed ("HTTP 507 XFerriteStorageFull", "connection closed"), and how often.
    pub error_kinds: BTreeMap<String, u64>,
}

impl OpStats {
    pub fn new() -> OpStats {
        let h = || match Histogram::new_with_bounds(1, LATENCY_US_MAX, HISTOGRAM_PRECISION) {
            Ok(h) => h,
            Err(e) => panic!("histogram bounds are constant and valid: {e}"),
        };
        OpStats { latency_us: h(), ttfb_us: h(), ops: 0, bytes: 0, errors: 0, error_kinds: BTreeMap::new() }
    }

    /// One request that handled `objects` objects (more than one for DeleteObjects).
    pub fn record(&mut self, latency: Duration, ttfb: Duration, bytes: u64, objects: u64) {
        let _ = self.latency_us.record((latency.as_micros() as u64).max(1));
        let _ = self.ttfb_us.record((ttfb.as_micros() as u64).max(1));
        self.ops += objects;
        self.bytes += bytes;
    }

    pub fn record_error(&mut self, kind: String) {
        self.errors += 1;
        *self.error_kinds.entry(kind).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: &OpStats) {
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.ttfb_us.add(&other.ttfb_us);
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.errors += other.errors;
        for (kind, n) in &other.error_kinds {
            *self.error_kinds.entry(kind.clone()).or_insert(0) += n;
        }
    }
}

/// Whether a request got a 2xx answer.
pub fn ok(r: &std::io::Result<Reply>) -> bool {
    matches!(r, Ok(reply) if reply.status / 100 == 2)
}

/// What went wrong with one request, short enough for a report line: the status and the
/// S3 error code of an error answer, or the transport error.
pub fn error_kind(result: &std::io::Result<Reply>) -> String {
    match result {
        Ok(r) => {
            let body = String::from_utf8_lossy(&r.body);
            match body.split("<Code>").nth(1).and_then(|rest| rest.split("</Code>").next()) {
                Some(code) => {
                    format!("HTTP {} {}", r.status, code.chars().take(ERROR_CODE_CHARS_MAX).collect::<String>())
                }
                None => format!("HTTP {}", r.status),
            }
        }
        Err(e) => e.to_string().chars().take(ERROR_TEXT_CHARS_MAX).collect(),
    }
}

/// This process's user + system CPU time, from /proc/self/stat (Linux reports it in
/// USER_HZ = 100 ticks per second). Zero where it cannot be read.
pub fn cpu_time() -> Duration {
    const TICKS_PER_SEC: u64 = 100;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 0-based 11 and 12 after the ")".
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / TICKS_PER_SEC)
}
