//! What every core's heal and scan passes share: the heal configuration, heal requests,
//! progress counters (atomics, read by the admin endpoint from any core), and the typed
//! status the admin API serializes. The passes themselves are in heal.rs.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

use crate::config::HealConfig;
use crate::drives::DriveState;
use crate::types::{now_ms, ObjectKey};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    Scan,
    Heal,
}

/// Counters of one kind of pass. For heals they describe the current (or last) heal; for
/// scans they accumulate over every scan since start-up.
#[derive(Default)]
pub struct PassStats {
    pub started_ms: AtomicI64,
    pub finished_ms: AtomicI64,
    pub passes: AtomicU64,
    pub objects_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub objects_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub shards_repaired: AtomicU64,
    pub records_repaired: AtomicU64,
    pub blocks_lost: AtomicU64,
    pub leftovers_removed: AtomicU64,
    /// Cores that finished the current pass.
    pub cores_done: AtomicUsize,
    lost_keys: Mutex<Vec<String>>,
    repaired_keys: Mutex<Vec<String>>,
}

/// At most this many keys are listed in the status, per list.
const KEYS_SHOWN: usize = 20;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl PassStats {
    fn reset(&self) {
        for counter in [
            &self.objects_total,
            &self.bytes_total,
            &self.objects_done,
            &self.bytes_done,
            &self.shards_repaired,
            &self.records_repaired,
            &self.blocks_lost,
            &self.leftovers_removed,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.cores_done.store(0, Ordering::Relaxed);
        self.finished_ms.store(0, Ordering::Relaxed);
        self.started_ms.store(now_ms(), Ordering::Relaxed);
        locked(&self.lost_keys).clear();
        locked(&self.repaired_keys).clear();
    }

    /// Scans accumulate; only the start time and per-pass completion are reset.
    pub(crate) fn reset_for_scan(&self) {
        self.started_ms.store(now_ms(), Ordering::Relaxed);
        self.finished_ms.store(0, Ordering::Relaxed);
        self.cores_done.store(0, Ordering::Relaxed);
    }

    /// Lists "bucket/key" among the repaired objects (the first `KEYS_SHOWN` only).
    pub(crate) fn note_repaired(&self, key: &ObjectKey) {
        note_key(&self.repaired_keys, key);
    }

    /// Lists "bucket/key" among the objects with unrecoverable blocks.
    pub(crate) fn note_lost(&self, key: &ObjectKey) {
        note_key(&self.lost_keys, key);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters as the status reports them; `with_eta` adds the heal's time estimate.
    fn report(&self, with_eta: bool) -> PassReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let started_ms = self.started_ms.load(Ordering::Relaxed);
        let finished_ms = self.finished_ms.load(Ordering::Relaxed);
        let eta_secs = with_eta.then(|| {
            // Remaining bytes at the speed so far; null until something was read.
            let elapsed = (now_ms() - started_ms).max(1) as f64 / 1000.0;
            let done = get(&self.bytes_done) as f64;
            let left = get(&self.bytes_total).saturating_sub(get(&self.bytes_done)) as f64;
            if finished_ms > 0 {
                Some(0.0)
            } else if done > 0.0 {
                Some((left / (done / elapsed) * 10.0).round() / 10.0)
            } else {
                None
            }
        });
        PassReport {
            started_ms,
            finished_ms,
            passes: get(&self.passes),
            objects_total: get(&self.objects_total),
            objects_done: get(&self.objects_done),
            bytes_total: get(&self.bytes_total),
            bytes_done: get(&self.bytes_done),
            shards_repaired: get(&self.shards_repaired),
            log_records_repaired: get(&self.records_repaired),
            blocks_unrecoverable: get(&self.blocks_lost),
            leftovers_removed: get(&self.leftovers_removed),
            eta_secs,
            repaired_keys: locked(&self.repaired_keys).clone(),
            unrecoverable_keys: locked(&self.lost_keys).clone(),
        }
    }
}

fn note_key(list: &Mutex<Vec<String>>, key: &ObjectKey) {
    let mut list = locked(list);
    let name = format!("{}/{}", key.bucket, key.key);
    if list.len() < KEYS_SHOWN && !list.contains(&name) {
        list.push(name);
    }
}

pub struct HealState {
    pub config: HealConfig,
    cores: usize,
    /// Bumped by every heal request; each core runs one heal pass per bump it sees.
    requests: AtomicU64,
    heal_rate: AtomicU64,
    reason: Mutex<String>,
    pub heal: PassStats,
    pub scan: PassStats,
}

impl HealState {
    pub fn new(cores: usize, config: HealConfig) -> HealState {
        HealState {
            heal_rate: AtomicU64::new(config.heal_rate),
            config,
            cores,
            requests: AtomicU64::new(0),
            reason: Mutex::new(String::new()),
            heal: PassStats::default(),
            scan: PassStats::default(),
        }
    }

    /// Starts a heal on every core (restarting one that is running); `rate` in bytes per
    /// second per core replaces the configured heal rate (0: unlimited).
    pub fn request(&self, reason: &str, rate: Option<u64>) {
        if let Some(rate) = rate {
            self.heal_rate.store(rate, Ordering::Relaxed);
        }
        *locked(&self.reason) = reason.to_owned();
        self.heal.reset();
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes per second a pass of this kind may read on each core (0: unlimited). Read
    /// anew after every block, so a changed heal rate applies at once.
    pub(crate) fn rate(&self, kind: PassKind) -> u64 {
        match kind {
            PassKind::Scan => self.config.scan_rate,
            PassKind::Heal => self.heal_rate.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn stats(&self, kind: PassKind) -> &PassStats {
        match kind {
            PassKind::Scan => &self.scan,
            PassKind::Heal => &self.heal,
        }
    }

    pub fn heal_running(&self) -> bool {
        self.requests() > 0 && self.heal.cores_done.load(Ordering::Relaxed) < self.cores
    }

    /// The status for the admin endpoint and `ferrite admin heal`.
    pub fn status(&self, drives: &DriveState) -> HealStatus {
        let drives = (0..drives.paths().len())
            .map(|d| DriveReport {
                path: drives.paths()[d].display().to_string(),
                online: drives.online(d),
                pending_ops: drives.inflight(d),
            })
            .collect();
        self.status_of(drives)
    }

    fn status_of(&self, drives: Vec<DriveReport>) -> HealStatus {
        let state = if self.requests() == 0 {
            HealRun::NeverRun
        } else if self.heal_running() {
            HealRun::Running
        } else {
            HealRun::Done
        };
        HealStatus {
            heal: HealReport {
                state,
                reason: locked(&self.reason).clone(),
                rate_bytes_per_sec_per_core: self.heal_rate.load(Ordering::Relaxed),
                pass: self.heal.report(true),
            },
            scanner: ScannerReport {
                interval_secs: self.config.scan_interval.as_secs(),
                rate_bytes_per_sec_per_core: self.config.scan_rate,
                pass: self.scan.report(false),
            },
            drives,
        }
    }
}

/// The heal and scanner status as the admin API returns it (serialized as JSON by the S3
/// layer; the field names are the API's).
#[derive(Clone, Debug, Serialize)]
pub struct HealStatus {
    pub heal: HealReport,
    pub scanner: ScannerReport,
    pub drives: Vec<DriveReport>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealRun {
    NeverRun,
    Running,
    Done,
}

#[derive(Clone, Debug, Serialize)]
pub struct HealReport {
    pub state: HealRun,
    pub reason: String,
    pub rate_bytes_per_sec_per_core: u64,
    #[serde(flatten)]
    pub pass: PassReport,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScannerReport {
    pub interval_secs: u64,
    pub rate_bytes_per_sec_per_core: u64,
    #[serde(flatten)]
    pub pass: PassReport,
}

/// One kind of pass's progress.
#[derive(Clone, Debug, Serialize)]
pub struct PassReport {
    pub started_ms: i64,
    pub finished_ms: i64,
    pub passes: u64,
    pub objects_total: u64,
    pub objects_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub shards_repaired: u64,
    pub log_records_repaired: u64,
    pub blocks_unrecoverable: u64,
    pub leftovers_removed: u64,
    /// Heals only: seconds left at the speed so far (0 when finished, null before any byte
    /// was read). Scans report none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<Option<f64>>,
    pub repaired_keys: Vec<String>,
    pub unrecoverable_keys: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DriveReport {
    pub path: String,
    pub online: bool,
    pub pending_ops: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drives() -> Vec<DriveReport> {
        vec![DriveReport { path: "/d1".into(), online: true, pending_ops: 0 }]
    }

    /// Tests and `ferrite admin heal` parse this JSON: same names, nesting and types as the
    /// hand-written JSON it replaced.
    #[test]
    fn the_status_keeps_the_admin_api_shape() {
        let state = HealState::new(2, HealConfig::default());
        let json = serde_json::to_value(state.status_of(drives())).unwrap();
        assert_eq!(json["heal"]["state"], "never-run");
        assert!(json["heal"]["eta_secs"].is_null(), "{json}");
        assert!(json["heal"].as_object().unwrap().contains_key("eta_secs"));
        assert!(!json["scanner"].as_object().unwrap().contains_key("eta_secs"));
        assert_eq!(json["scanner"]["interval_secs"], 3600);
        assert_eq!(json["heal"]["log_records_repaired"], 0);
        assert_eq!(json["heal"]["repaired_keys"], serde_json::json!([]));
        assert_eq!(json["drives"], serde_json::json!([{"path": "/d1", "online": true, "pending_ops": 0}]));
        state.request("because", Some(5));
        state.heal.finished_ms.store(1, Ordering::Relaxed);
        let json = serde_json::to_value(state.status_of(drives())).unwrap();
        assert_eq!(json["heal"]["state"], "running");
        assert_eq!(json["heal"]["reason"], "because");
        assert_eq!(json["heal"]["rate_bytes_per_sec_per_core"], 5);
        assert_eq!(json["heal"]["eta_secs"], 0.0);
        let text = serde_json::to_string(&state.status_of(drives())).unwrap();
        assert!(text.find("\"heal\":").unwrap() < text.find("\"scanner\":").unwrap(), "{text}");
    }
}
