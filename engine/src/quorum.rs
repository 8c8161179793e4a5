//! Running one I/O operation per drive and deciding when enough of them are done. A write
//! (data frames, fdatasync, a metadata log batch) goes to every drive and succeeds on a
//! write quorum; a drive far slower than the rest must not hold the request: once the
//! quorum is in, the stragglers get a short grace period and are then abandoned, and that
//! drive's copy counts as missing (reads rebuild it from parity, the healer rewrites it).
//! A drive with many abandoned operations still running is skipped outright until they
//! drain, so a stalled drive cannot pile up work.
//!
//! It needs only the drive state (drives.rs), never the `Engine` handle.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::drives::DriveState;

/// After the quorum is in, stragglers get this long at least ...
const GRACE_MIN: Duration = Duration::from_millis(100);
/// ... or this many times what the quorum took, whichever is longer.
const GRACE_FACTOR: u32 = 4;
/// No drive operation is waited for longer than this, quorum or not.
pub const DRIVE_OP_TIMEOUT: Duration = Duration::from_secs(30);
/// A drive with this many operations still running is treated as stalled and skipped.
pub const STALLED_INFLIGHT: usize = 64;

/// A drive whose operation failed, was skipped (stalled drive) or was abandoned.
pub struct DriveFailure {
    pub drive: usize,
    pub error: io::Error,
}

/// The outcome of one operation on a set of drives.
pub struct Outcome {
    pub ok: Vec<usize>,
    pub failed: Vec<DriveFailure>,
}

impl Outcome {
    /// True when every failure was "no space left": the caller reports a full store.
    pub fn all_failures_are_enospc(&self) -> bool {
        !self.failed.is_empty() && self.failed.iter().all(|f| f.error.raw_os_error() == Some(libc::ENOSPC))
    }
}

/// Runs `ops` (drive index, operation) concurrently on this core and returns when every
/// one finished, or `needed` succeeded and the rest had their grace period.
pub async fn run<F>(drives: &Arc<DriveState>, ops: Vec<(usize, F)>, needed: usize) -> Outcome
where
    F: Future<Output = io::Result<()>> + 'static,
{
    let (tx, rx) = flume::unbounded::<(usize, io::Result<()>)>();
    let mut failed = Vec::new();
    let mut launched = Vec::new();
    for (drive, op) in ops {
        if drives.inflight(drive) >= STALLED_INFLIGHT {
            let error = io::Error::new(io::ErrorKind::TimedOut, "drive stalled: too many operations pending");
            failed.push(DriveFailure { drive, error });
            continue;
        }
        let tx = tx.clone();
        let guard = drives.inflight_guard(drive);
        launched.push(drive);
        monoio::spawn(async move {
            let result = op.await;
            drop(guard);
            let _ = tx.send((drive, result));
        });
    }
    drop(tx);
    let mut pending = launched.len();
    let start = Instant::now();
    let mut ok = Vec::new();
    let mut quorum_at: Option<Duration> = None;
    while pending > 0 {
        let limit = match quorum_at {
            Some(took) => (took * GRACE_FACTOR).max(GRACE_MIN),
            None => DRIVE_OP_TIMEOUT,
        };
        let left = limit.saturating_sub(start.elapsed().saturating_sub(quorum_at.unwrap_or_default()));
        match monoio::time::timeout(left, rx.recv_async()).await {
            Ok(Ok((drive, Ok(())))) => {
                ok.push(drive);
                pending -= 1;
                if ok.len() >= needed && quorum_at.is_none() {
                    quorum_at = Some(start.elapsed());
                }
            }
            Ok(Ok((drive, Err(err)))) => {
                failed.push(DriveFailure { drive, error: err });
                pending -= 1;
            }
            Ok(Err(_)) => break,
            Err(_) => break,
        }
    }
    if pending > 0 {
        for drive in launched {
            if !ok.contains(&drive) && !failed.iter().any(|f| f.drive == drive) {
                let error = io::Error::new(io::ErrorKind::TimedOut, "drive too slow: operation abandoned");
                failed.push(DriveFailure { drive, error });
            }
        }
    }
    Outcome { ok, failed }
}
