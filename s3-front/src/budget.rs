//! The memory budget (DESIGN.md invariant 5). Every request that moves object data holds
//! about one block plus its erasure-coded frames; each core admits at most `slots` such
//! streams at once. A request that finds no free slot waits a little (back-pressure), then
//! gets 503 SlowDown. Per-core state, no locks.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::error::{Code, S3Error, S3Result};

/// How long a request waits for a data stream slot before 503 SlowDown.
const SLOT_WAIT_MAX: Duration = Duration::from_secs(2);
const SLOT_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Cores whose slots in use are counted apart for the gauge (a core beyond shares a counter:
/// the sum stays right, only the cache line is shared; each core's budget is its own).
const CORES_COUNTED_MAX: usize = 256;

/// One core's count of slots in use, on its own cache line: written only by its core (no
/// contention on the data path), read by the metrics endpoint from any core.
#[repr(align(64))]
struct CoreCount(AtomicUsize);

static IN_USE: [CoreCount; CORES_COUNTED_MAX] = [const { CoreCount(AtomicUsize::new(0)) }; CORES_COUNTED_MAX];

/// Data streams holding a slot now, on every core (the `ferrite_data_streams_in_use` gauge).
pub fn in_use_everywhere() -> usize {
    IN_USE.iter().map(|c| c.0.load(Relaxed)).sum()
}

pub struct Budget {
    /// This core's slots in use: what the budget decides by.
    in_use: Cell<usize>,
    /// The same count, for the gauge (shared with other cores only beyond CORES_COUNTED_MAX).
    gauge: &'static AtomicUsize,
    slots: usize,
}

/// A held slot; released on drop.
pub struct Slot(Rc<Budget>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_use.set(self.0.in_use.get() - 1);
        self.0.gauge.fetch_sub(1, Relaxed);
    }
}

impl Budget {
    /// Core `core`'s budget of `slots` data streams.
    pub fn new(core: usize, slots: usize) -> Rc<Budget> {
        let gauge = &IN_USE[core % CORES_COUNTED_MAX].0;
        Rc::new(Budget { in_use: Cell::new(0), gauge, slots: slots.max(1) })
    }

    pub async fn acquire(self: &Rc<Self>) -> S3Result<Slot> {
        let deadline = Instant::now() + SLOT_WAIT_MAX;
        loop {
            if self.in_use.get() < self.slots {
                self.in_use.set(self.in_use.get() + 1);
                self.gauge.fetch_add(1, Relaxed);
                return Ok(Slot(self.clone()));
            }
            if Instant::now() >= deadline {
                return Err(S3Error::new(Code::SlowDown, "Please reduce your request rate."));
            }
            monoio::time::sleep(SLOT_POLL_INTERVAL).await;
        }
    }
}

/// Bytes one data stream may hold: the block being sent plus the blocks read ahead, each
/// with its frames (n/k of a block, each padded to 4 KiB), and one chunk in flight to or
/// from the socket. (A write holds one block and its frames, and body waiting for its MD5:
/// up to `md5x::HOLD_BYTES` and a chunk, in at most twice that in buffers. With 1 MiB
/// blocks that is still less than a read.)
pub fn bytes_per_stream(block_size: usize, data: usize, parity: usize) -> usize {
    let blocks = 1 + ferrite_engine::data::READ_AHEAD_BLOCKS as usize;
    let frames = (block_size / data + 4096) * (data + parity);
    blocks * (block_size + frames) + block_size
}
