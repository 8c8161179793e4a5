//! What lifecycle passes and restores did since start-up: counters shared by every core,
//! shown by the admin API (`LifecycleStatus`, as JSON) and in the metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

#[derive(Default)]
pub struct Counters {
    pub transitioned: AtomicU64,
    pub transitioned_bytes: AtomicU64,
    pub transition_failed: AtomicU64,
    pub expired: AtomicU64,
    pub uploads_aborted: AtomicU64,
    pub restores_expired: AtomicU64,
    pub restored: AtomicU64,
    pub restores_failed: AtomicU64,
    pub orphans_removed: AtomicU64,
    /// A gauge: transitions the last pass found due but could not make (failed, or their
    /// tier was unreachable).
    pub transitions_pending: AtomicU64,
}

/// The counters at one moment, as the admin API shows them (the field order is the JSON's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LifecycleStatus {
    pub transitioned: u64,
    pub transitioned_bytes: u64,
    pub transition_failed: u64,
    pub transitions_pending: u64,
    pub expired: u64,
    pub uploads_aborted: u64,
    pub restored: u64,
    pub restores_failed: u64,
    pub restores_running: u64,
    pub restores_expired: u64,
    pub orphans_removed: u64,
}

impl Counters {
    /// The counters now, with the number of restores running.
    pub fn status(&self, restores_running: u64) -> LifecycleStatus {
        LifecycleStatus {
            transitioned: self.transitioned.load(Relaxed),
            transitioned_bytes: self.transitioned_bytes.load(Relaxed),
            transition_failed: self.transition_failed.load(Relaxed),
            transitions_pending: self.transitions_pending.load(Relaxed),
            expired: self.expired.load(Relaxed),
            uploads_aborted: self.uploads_aborted.load(Relaxed),
            restored: self.restored.load(Relaxed),
            restores_failed: self.restores_failed.load(Relaxed),
            restores_running,
            restores_expired: self.restores_expired.load(Relaxed),
            orphans_removed: self.orphans_removed.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_renders_in_its_documented_order() {
        let c = Counters::default();
        c.transitioned.fetch_add(4, Relaxed);
        let json = serde_json::to_string(&c.status(1)).unwrap();
        assert_eq!(
            json,
            "{\"transitioned\":4,\"transitioned_bytes\":0,\"transition_failed\":0,\"transitions_pending\":0,\
             \"expired\":0,\"uploads_aborted\":0,\"restored\":0,\"restores_failed\":0,\"restores_running\":1,\
             \"restores_expired\":0,\"orphans_removed\":0}"
        );
    }
}
