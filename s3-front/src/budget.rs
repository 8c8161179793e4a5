//! The memory budget (DESIGN.md invariant 5). Every request that moves object data holds
//! about one block plus its erasure-coded frames; each core admits at most `slots` such
//! streams at once. A request that finds no free slot waits a little (back-pressure), then
//! gets 503 SlowDown. Per-core state, no locks.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::error::{Code, S3Error, S3Result};

/// How long a request waits for a data stream slot before 503 SlowDown.
const SLOT_WAIT_MAX: Duration = Duration::from_secs(2);
const SLOT_POLL_INTERVAL: Duration = Duration::from_millis(5);

pub struct Budget {
    in_use: Cell<usize>,
    slots: usize,
}

/// A held slot; released on drop.
pub struct Slot(Rc<Budget>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_use.set(self.0.in_use.get() - 1);
        crate::metrics::stream_in_use(false);
    }
}

impl Budget {
    pub fn new(slots: usize) -> Rc<Budget> {
        Rc::new(Budget { in_use: Cell::new(0), slots: slots.max(1) })
    }

    pub fn in_use(&self) -> usize {
        self.in_use.get()
    }

    pub async fn acquire(self: &Rc<Self>) -> S3Result<Slot> {
        let deadline = Instant::now() + SLOT_WAIT_MAX;
        loop {
            if self.in_use.get() < self.slots {
                self.in_use.set(self.in_use.get() + 1);
                crate::metrics::stream_in_use(true);
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
