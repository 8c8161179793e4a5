//! RestoreObject: a transitioned object's blob copied back into new local data files,
//! swapped in with an expiry; reads prefer the local copy, and the lifecycle pass drops it
//! again when the expiry passes.
//!
//! The request (its Days) is recorded in the object's headers before the 202, so HEAD says
//! the restore is ongoing and a second request is refused until the copy is in, across
//! crashes: start-up and every lifecycle pass resume pending restores, as does a repeated
//! request. The copy's expiry counts from when it is written, as AWS does. A restore whose
//! blob is gone or replaced is dropped (`restores_failed`); one that cannot reach the tier
//! stays pending.

use std::sync::atomic::Ordering::Relaxed;

use ferrite_engine::{now_ms, EngineError, ObjectMeta};

use crate::error::{Error, Result};
use crate::mover::Mover;
use crate::rules::{due_ms, When};
use crate::store::{self, SwapInError};
use crate::stub::{has_local_copy, remote_of, restore_headers, restore_pending, stored_parts, RestoreMark};

/// Why a restore's copy was not made.
enum CopyBack {
    /// The blob is missing or not the one recorded.
    Gone(String),
    /// The object changed meanwhile (overwritten, deleted, re-sealed).
    Changed,
    /// Anything else (the tier or the drives): try again later.
    Retry(String),
}

impl Mover {
    /// RestoreObject: Ok(true) when a restore was started (202), Ok(false) when a restored
    /// copy exists and only its expiry moves (200). The request is recorded with the object,
    /// then the copy is written in the background on this executor.
    pub async fn restore(&self, bucket: &str, key: &str, days: u32) -> Result<bool> {
        let meta = self.engine().head_object(bucket, key).await?;
        if remote_of(&meta).is_none() {
            return Err(Error::NotInTier);
        }
        if has_local_copy(&meta) {
            let headers = restore_headers(&meta, RestoreMark::Until(self.restore_expiry(days)));
            self.engine().set_headers(bucket, key, &meta, headers).await?;
            return Ok(false);
        }
        if restore_pending(&meta).is_some() {
            // Requested before: running here, or cut short by a crash or a tier outage (then
            // this request starts it again).
            self.resume_restore(bucket, key, meta);
            return Err(Error::RestoreInProgress);
        }
        let headers = restore_headers(&meta, RestoreMark::Pending(days));
        match self.engine().set_headers(bucket, key, &meta, headers.clone()).await {
            // Another request (on another core) recorded its restore first.
            Err(EngineError::PreconditionFailed) => return Err(Error::RestoreInProgress),
            other => other?,
        }
        self.resume_restore(bucket, key, ObjectMeta { headers, ..meta });
        Ok(true)
    }

    /// When a restored copy made now for `days` expires: midnight UTC after the days.
    fn restore_expiry(&self, days: u32) -> i64 {
        due_ms(&When::Days(days), now_ms(), self.settings().day_ms)
    }

    /// Starts writing the copy of a pending restore in the background, unless it is running
    /// in this process already.
    pub fn resume_restore(&self, bucket: &str, key: &str, meta: ObjectMeta) {
        let Some(days) = restore_pending(&meta) else { return };
        let id = (bucket.to_owned(), key.to_owned());
        if !self.restoring().insert(id.clone()) {
            return;
        }
        let mover = self.clone();
        monoio::spawn(async move {
            let retry_later = mover.finish_restore(&id.0, &id.1, &meta, days).await;
            mover.restoring().remove(&id);
            // A new request for the same object that came while this one was finishing found
            // it running and did not start: look once more.
            if !retry_later {
                if let Ok(now) = mover.engine().head_object(&id.0, &id.1).await {
                    mover.resume_restore(&id.0, &id.1, now);
                }
            }
        });
    }

    /// Makes the copy and records the outcome; true when the request stays pending for a
    /// later pass or request.
    async fn finish_restore(&self, bucket: &str, key: &str, meta: &ObjectMeta, days: u32) -> bool {
        match self.copy_back(bucket, key, meta, days).await {
            Ok(()) => {
                self.counters().restored.fetch_add(1, Relaxed);
                false
            }
            // Changed meanwhile: looked at again by the caller.
            Err(CopyBack::Changed) => false,
            // The blob is gone or replaced: retrying cannot help, so the request is dropped
            // (HEAD stops saying it is ongoing; a new request may be made).
            Err(CopyBack::Gone(why)) => {
                tracing::warn!("restore {bucket}/{key} failed: {why}");
                self.counters().restores_failed.fetch_add(1, Relaxed);
                let cleared =
                    self.engine().set_headers(bucket, key, meta, restore_headers(meta, RestoreMark::None)).await;
                cleared.is_err()
            }
            // The tier or the drives could not do it now: the request stays pending.
            Err(CopyBack::Retry(why)) => {
                tracing::warn!("restore {bucket}/{key} will be retried: {why}");
                true
            }
        }
    }

    /// Writes the blob's bytes into new local data files and records them as the restored
    /// copy, if the object is unchanged meanwhile.
    async fn copy_back(&self, bucket: &str, key: &str, meta: &ObjectMeta, days: u32) -> Result<(), CopyBack> {
        let stored: u64 = stored_parts(meta).iter().map(|p| p.size).sum();
        let mut reader = self.stored_reader(bucket, key, meta, 0, stored);
        let mut writer = self.engine().writer(bucket, key, false).map_err(|e| CopyBack::Retry(e.to_string()))?;
        let copied: Result<()> = async {
            while let Some(chunk) = reader.next_chunk().await? {
                writer.write(&chunk).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = copied {
            writer.discard().await;
            return Err(match e {
                Error::BlobGone => CopyBack::Gone(e.to_string()),
                other => CopyBack::Retry(other.to_string()),
            });
        }
        let copy = writer.finish().await.map_err(|e| CopyBack::Retry(e.to_string()))?;
        let headers = restore_headers(meta, RestoreMark::Until(self.restore_expiry(days)));
        // If the object changed meanwhile the copy is unreferenced; the scanner's leftover
        // pass removes its files.
        match store::swap_in(self.engine(), bucket, key, meta, copy, headers).await {
            Ok(()) => Ok(()),
            Err(SwapInError::Inline) => Err(CopyBack::Retry("a restored copy came back inline".into())),
            Err(SwapInError::Engine(
                EngineError::PreconditionFailed | EngineError::NoSuchKey | EngineError::NoSuchBucket,
            )) => Err(CopyBack::Changed),
            Err(SwapInError::Engine(e)) => Err(CopyBack::Retry(e.to_string())),
        }
    }

    /// Frees a restored copy whose time is up (the lifecycle pass calls this).
    pub(crate) async fn expire_restored(&self, bucket: &str, key: &str, meta: &ObjectMeta) -> Result<()> {
        let headers = restore_headers(meta, RestoreMark::None);
        Ok(store::swap_out(self.engine(), bucket, key, meta, headers).await?)
    }
}
