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
    let mut out = String::new();
    out.push_str("# HELP ferrite_http_responses_total Responses sent, by status class.\n");
    out.push_str("# TYPE ferrite_http_responses_total counter\n");
    for (i, slot) in RESPONSES.iter().enumerate() {
        out.push_str(&format!("ferrite_http_responses_total{{class=\"{}xx\"}} {}\n", i + 1, slot.load(Relaxed)));
    }
    out.push_str("# HELP ferrite_kms_requests_total KMS calls by operation and outcome (unreachable: answered 503).\n");
    out.push_str("# TYPE ferrite_kms_requests_total counter\n");
    for (op, row) in KMS_OPS.iter().zip(&KMS) {
        for (outcome, slot) in KMS_OUTCOMES.iter().zip(row) {
            out.push_str(&format!(
                "ferrite_kms_requests_total{{backend=\"{kms_backend}\",op=\"{op}\",outcome=\"{outcome}\"}} {}\n",
                slot.load(Relaxed)
            ));
        }
    }
    out.push_str("# HELP ferrite_lifecycle_total What lifecycle passes did since start-up.\n");
    out.push_str("# TYPE ferrite_lifecycle_total counter\n");
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
        out.push_str(&format!("ferrite_lifecycle_total{{what=\"{what}\"}} {}\n", counter.load(Relaxed)));
    }
    out.push_str(
        "# HELP ferrite_transitions_pending Transitions the last lifecycle pass found due but could not make.\n",
    );
    out.push_str("# TYPE ferrite_transitions_pending gauge\n");
    out.push_str(&format!("ferrite_transitions_pending {}\n", c.transitions_pending.load(Relaxed)));
    out.push_str("# HELP ferrite_restores_running Restores of transitioned objects in progress.\n");
    out.push_str("# TYPE ferrite_restores_running gauge\n");
    out.push_str(&format!("ferrite_restores_running {}\n", mover.restores_running()));
    out.push_str(
        "# HELP ferrite_block_cache_total Data block reads served from the block cache, and those that missed it.\n",
    );
    out.push_str("# TYPE ferrite_block_cache_total counter\n");
    let cache = |what: &str, n: &std::sync::atomic::AtomicU64| {
        format!("ferrite_block_cache_total{{result=\"{what}\"}} {}\n", n.load(Relaxed))
    };
    out.push_str(&cache("hit", &ferrite_engine::cache::HITS));
    out.push_str(&cache("miss", &ferrite_engine::cache::MISSES));
    out.push_str("# HELP ferrite_block_cache_bytes Bytes held by the block cache.\n");
    out.push_str("# TYPE ferrite_block_cache_bytes gauge\n");
    out.push_str(&format!("ferrite_block_cache_bytes {}\n", ferrite_engine::cache::BYTES.load(Relaxed)));
    out.push_str("# HELP ferrite_md5_blocks_total 64-byte blocks hashed for ETags (the last one or two of each body, with the padding, are not counted).\n");
    out.push_str("# TYPE ferrite_md5_blocks_total counter\n");
    out.push_str(&format!("ferrite_md5_blocks_total {}\n", crate::md5x::BLOCKS.load(Relaxed)));
    out.push_str(
        "# HELP ferrite_md5_steps_total Kernel steps that hashed them, one block per busy lane each: blocks / steps is the average number of PUTs hashed together.\n",
    );
    out.push_str("# TYPE ferrite_md5_steps_total counter\n");
    out.push_str(&format!("ferrite_md5_steps_total {}\n", crate::md5x::STEPS.load(Relaxed)));
    let drives = engine.drive_paths().len();
    let online = engine.online_paths().len();
    out.push_str("# HELP ferrite_drives Drives in the erasure set, and how many are online.\n");
    out.push_str("# TYPE ferrite_drives gauge\n");
    out.push_str(&format!("ferrite_drives{{state=\"total\"}} {drives}\nferrite_drives{{state=\"online\"}} {online}\n"));
    out
}
