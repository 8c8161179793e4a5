//! Prometheus metrics: the S3 front's counters (responses by status class, KMS calls by
//! outcome) and the text exposition of every metric. The endpoint that answers them
//! (`GET /ferrite/metrics`, before SigV4, to its bearer token) is `ops/admin.rs`.
//!
//! Counters are process-wide atomics, shared by every core.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ferrite_engine::Engine;
use ferrite_tiering::Mover;

use crate::error::{Code, S3Error};

static RESPONSES: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// Client connections open now, on every core: kept by a pair of calls per connection (not
/// per request). Data streams in use are the budget's own per-core counts.
static CONNECTIONS_OPEN: AtomicU64 = AtomicU64::new(0);

/// What a KMS call was for.
#[derive(Clone, Copy)]
pub enum KmsOp {
    Generate = 0,
    Decrypt = 1,
    Rewrap = 2,
}
const KMS_OPS: [&str; 3] = ["generate", "decrypt", "rewrap"];
/// ok, refused (the KMS answered no: unknown key, access denied, damaged key), unreachable
/// (no answer, or a 5xx/429: the request was refused with 503).
const KMS_OUTCOMES: [&str; 3] = ["ok", "refused", "unreachable"];
static KMS: [[AtomicU64; 3]; 3] = [const { [const { AtomicU64::new(0) }; 3] }; 3];

/// Counts one response by status class.
pub fn response(status: u16) {
    if let Some(slot) = RESPONSES.get((status / 100).saturating_sub(1) as usize) {
        slot.fetch_add(1, Relaxed);
    }
}

/// A client connection was accepted (`closed` when it ends).
pub fn connection_opened() {
    CONNECTIONS_OPEN.fetch_add(1, Relaxed);
}

pub fn connection_closed() {
    CONNECTIONS_OPEN.fetch_sub(1, Relaxed);
}

/// Counts one KMS call by its outcome.
pub fn kms<T>(op: KmsOp, result: &Result<T, S3Error>) {
    let outcome = match result {
        Ok(_) => 0,
        Err(e) if e.code == Code::ServiceUnavailable => 2,
        Err(_) => 1,
    };
    KMS[op as usize][outcome].fetch_add(1, Relaxed);
}

/// The metrics in the Prometheus text format: the counters here, the KMS backend's name,
/// the tier mover's counters and the engine's block cache, MD5 batching and drives.
pub fn render(kms_backend: &str, mover: &Mover, engine: &Engine) -> String {
    let mut out = Exposition::default();
    out.family("ferrite_http_responses_total", "counter", "Responses sent, by status class.");
    for (i, slot) in RESPONSES.iter().enumerate() {
        out.sample(&[("class", &format!("{}xx", i + 1))], slot.load(Relaxed));
    }
    out.family(
        "ferrite_kms_requests_total",
        "counter",
        "KMS calls by operation and outcome (unreachable: answered 503).",
    );
    for (op, row) in KMS_OPS.iter().zip(&KMS) {
        for (outcome, slot) in KMS_OUTCOMES.iter().zip(row) {
            out.sample(&[("backend", kms_backend), ("op", op), ("outcome", outcome)], slot.load(Relaxed));
        }
    }
    out.family("ferrite_connections_open", "gauge", "Client connections open now, on every core.");
    out.sample(&[], CONNECTIONS_OPEN.load(Relaxed));
    out.family(
        "ferrite_data_streams_in_use",
        "gauge",
        "Requests moving object data that hold a memory-budget slot now, on every core.",
    );
    out.sample(&[], crate::budget::in_use_everywhere() as u64);
    render_mover(&mut out, mover);
    render_engine(&mut out, engine);
    out.text
}

fn render_mover(out: &mut Exposition, mover: &Mover) {
    out.family("ferrite_lifecycle_total", "counter", "What lifecycle passes did since start-up.");
    let c = mover.counters();
    for (what, counter) in [
        ("transitioned", &c.transitioned),
        ("transitioned_bytes", &c.transitioned_bytes),
        ("transition_failed", &c.transition_failed),
        ("expired", &c.expired),
        ("uploads_aborted", &c.uploads_aborted),
        ("restored", &c.restored),
        ("restores_failed", &c.restores_failed),
        ("restores_expired", &c.restores_expired),
        ("orphans_removed", &c.orphans_removed),
    ] {
        out.sample(&[("what", what)], counter.load(Relaxed));
    }
    out.family(
        "ferrite_transitions_pending",
        "gauge",
        "Transitions the last lifecycle pass found due but could not make.",
    );
    out.sample(&[], c.transitions_pending.load(Relaxed));
    out.family("ferrite_restores_running", "gauge", "Restores of transitioned objects in progress.");
    out.sample(&[], mover.restores_running());
}

fn render_engine(out: &mut Exposition, engine: &Engine) {
    out.family(
        "ferrite_block_cache_total",
        "counter",
        "Data block reads served from the block cache, and those that missed it.",
    );
    out.sample(&[("result", "hit")], ferrite_engine::cache::HITS.load(Relaxed));
    out.sample(&[("result", "miss")], ferrite_engine::cache::MISSES.load(Relaxed));
    out.family("ferrite_block_cache_bytes", "gauge", "Bytes held by the block cache.");
    out.sample(&[], ferrite_engine::cache::BYTES.load(Relaxed));
    out.family(
        "ferrite_md5_blocks_total",
        "counter",
        "64-byte blocks hashed for ETags (the last one or two of each body, with the padding, are not counted).",
    );
    out.sample(&[], crate::md5x::BLOCKS.load(Relaxed));
    out.family(
        "ferrite_md5_steps_total",
        "counter",
        "Kernel steps that hashed them, one block per busy lane each: blocks / steps is the average number of PUTs hashed together.",
    );
    out.sample(&[], crate::md5x::STEPS.load(Relaxed));
    out.family("ferrite_drives", "gauge", "Drives in the erasure set, and how many are online.");
    out.sample(&[("state", "total")], engine.drive_paths().len() as u64);
    out.sample(&[("state", "online")], engine.online_paths().len() as u64);
}

/// The Prometheus text exposition format (version 0.0.4), written family by family.
///
/// Kept instead of the `prometheus-client` crate, measured (perf/RESULTS-metrics.md): its
/// pre-resolved counters increment as fast as these atomics, but a labelled lookup takes a
/// lock and hashes the labels (47-63 ns), and its histograms take a write lock on every
/// observation: a lock shared by every core on each request, which invariant 7 forbids.
/// Rendering is 1.2-1.8x faster here. What the crate would add, escaping label values, is
/// `sample`'s job.
#[derive(Default)]
struct Exposition {
    text: String,
    family: &'static str,
}

impl Exposition {
    /// Starts a metric family: its HELP and TYPE lines; the samples that follow belong to it.
    fn family(&mut self, name: &'static str, kind: &str, help: &str) {
        use std::fmt::Write;
        debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = write!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        self.family = name;
    }

    /// One sample of the current family, label values escaped as the format requires.
    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        use std::fmt::Write;
        self.text.push_str(self.family);
        for (i, (name, value)) in labels.iter().enumerate() {
            self.text.push_str(if i == 0 { "{" } else { "," });
            let _ = write!(self.text, "{name}=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.text.push_str("\\\\"),
                    '"' => self.text.push_str("\\\""),
                    '\n' => self.text.push_str("\\n"),
                    c => self.text.push(c),
                }
            }
            self.text.push('"');
        }
        if !labels.is_empty() {
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::Exposition;

    #[test]
    fn families_and_escaped_labels_follow_the_text_format() {
        let mut out = Exposition::default();
        out.family("ferrite_x_total", "counter", "Things.\nMore.");
        out.sample(&[], 3);
        out.sample(&[("a", "q\"b\\c\nd"), ("b", "plain")], 7);
        assert_eq!(
            out.text,
            "# HELP ferrite_x_total Things.\\nMore.\n# TYPE ferrite_x_total counter\n\
             ferrite_x_total 3\n\
             ferrite_x_total{a=\"q\\\"b\\\\c\\nd\",b=\"plain\"} 7\n"
        );
    }
}
