//! Deleting transitioned objects' blobs. DELETE and DeleteObjects answer once the object is
//! deleted; its blob is removed afterwards by one worker task per core, from a bounded queue,
//! so an Azure outage ties up at most one blocking thread per core. What fails or does not
//! fit in the queue is left to the orphan sweep.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::blocking::blocking;
use crate::mover::Mover;
use crate::stub::{remote_of, Remote};

/// Blob deletes waiting on one core, at most this many.
const BLOB_DELETES_QUEUED_MAX: usize = 10_000;

/// One core's blob deletes, and whether its worker task runs.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Remote>,
    working: bool,
}

thread_local! {
    /// This core's queue: only tasks of this core's executor touch it.
    static BLOB_DELETES: RefCell<Queue> = RefCell::default();
}

impl Mover {
    /// Deletes an object and, when it had moved to a tier, its blob (in the background).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> ferrite_engine::Result<()> {
        // Without any tier no object can be in one (a tier with objects cannot be removed), so
        // the lookup is skipped: plain deletes cost what they did before tiering.
        let remote = if self.tiers().any(self.engine()) {
            self.engine().head_object(bucket, key).await.ok().and_then(|m| remote_of(&m))
        } else {
            None
        };
        self.engine().delete_object(bucket, key).await?;
        if let Some(remote) = remote {
            self.queue_blob_delete(remote);
        }
        Ok(())
    }

    fn queue_blob_delete(&self, remote: Remote) {
        let start_worker = BLOB_DELETES.with(|q| {
            let mut q = q.borrow_mut();
            if q.waiting.len() >= BLOB_DELETES_QUEUED_MAX {
                tracing::warn!("tier: too many blob deletes queued; {} is left to the orphan sweep", remote.blob);
                return false;
            }
            q.waiting.push_back(remote);
            !std::mem::replace(&mut q.working, true)
        });
        if start_worker {
            let mover = self.clone();
            monoio::spawn(async move {
                while let Some(remote) = BLOB_DELETES.with(|q| {
                    let mut q = q.borrow_mut();
                    let next = q.waiting.pop_front();
                    q.working = next.is_some();
                    next
                }) {
                    mover.delete_remote(remote).await;
                }
            });
        }
    }

    /// Deletes a transitioned object's blob (after the object itself was deleted or
    /// replaced). Failures are logged; the orphan is left behind.
    pub(crate) async fn delete_remote(&self, remote: Remote) {
        let container = match self.tier(&remote.tier) {
            Ok(Some(tier)) => tier.container(self.tiers().http()),
            _ => Err(format!("tier {} is not configured", remote.tier)),
        };
        let blob = remote.blob;
        let outcome: Result<bool, String> = match container {
            Ok(c) => match blocking(move || c.delete(&blob)).await {
                Ok(deleted) => deleted.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!("tier: the blob of a deleted object was left behind: {e}");
        }
    }
}
