//! The lifecycle pass, one at a time in the process, on the executor that runs it (core 0 on
//! a timer, or the one taking the admin API's request): every bucket's rules (expiration,
//! transition, aborting incomplete uploads), restored copies whose time is up (those exist in
//! buckets without rules too, so every bucket is listed), pending restores, then the orphan
//! sweep of every tier. One object at a time; a tier that could not be reached is not tried
//! again until the next pass.

use std::sync::atomic::Ordering::{AcqRel, Relaxed, Release};
use std::time::Duration;

use base64::Engine as _;
use ferrite_engine::{now_ms, ObjectMeta};

use crate::blocking::blocking;
use crate::mover::Mover;
use crate::outbound::azure_blob::Container;
use crate::rules::{self, Action, Rule};
use crate::store::{self, Walk, Walked};
use crate::stub::{remote_of, restore_pending, restored_until, Remote};
use crate::tiers::Tier;
use crate::transition::{B64URL, META_BUCKET, META_KEY, META_TIER};

/// Blobs listed per page by the orphan sweep.
const SWEEP_PAGE_BLOBS: u32 = 1000;
/// Uploads looked at per bucket and pass for AbortIncompleteMultipartUpload.
const UPLOADS_LISTED_MAX: usize = 10_000;
/// How often a second pass looks whether the first one finished.
const PASS_WAIT: Duration = Duration::from_millis(100);

/// What one pass did to the transitions due.
#[derive(Default)]
struct PassState {
    /// Tiers that could not be reached in this pass.
    unreachable: Vec<String>,
    /// Transitions due but not made.
    pending: u64,
}

/// Clears the pass flag when the pass ends, however it ends.
struct PassDone<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for PassDone<'_> {
    fn drop(&mut self) {
        self.0.store(false, Release);
    }
}

impl Mover {
    /// Resumes the restores a crash cut short, then runs lifecycle passes forever, one every
    /// `pass_interval` (none when it is zero), on this executor.
    pub async fn run(self) {
        self.resume_restores().await;
        let interval = self.settings().pass_interval;
        if interval.is_zero() {
            return;
        }
        loop {
            monoio::time::sleep(interval).await;
            self.pass().await;
        }
    }

    /// The walk's next object; an error ends the walk, logged (the next pass walks again).
    async fn next_object(walk: &mut Walk, bucket: &str) -> Option<Walked> {
        match walk.next().await {
            Ok(next) => next,
            Err(crate::error::Error::Engine(ferrite_engine::EngineError::NoSuchBucket)) => None,
            Err(e) => {
                tracing::warn!("lifecycle: the walk over bucket {bucket} stopped: {e}");
                None
            }
        }
    }

    /// Starts every pending restore again. Listings name each object's tier, so only objects
    /// in a tier are read.
    pub async fn resume_restores(&self) {
        for (bucket, _) in self.engine().list_buckets() {
            let mut walk = store::walk(self.engine(), &bucket);
            while let Some(object) = Self::next_object(&mut walk, &bucket).await {
                if object.tier.is_none() {
                    continue;
                }
                if let Ok(meta) = self.engine().head_object(&bucket, &object.key).await {
                    self.resume_restore(&bucket, &object.key, meta);
                }
            }
        }
    }

    /// One pass over every bucket, then the orphan sweep. A second caller waits for the
    /// first pass to finish, then runs its own.
    pub async fn pass(&self) {
        while self.pass_running().swap(true, AcqRel) {
            monoio::time::sleep(PASS_WAIT).await;
        }
        let _done = PassDone(self.pass_running());
        let mut state = PassState::default();
        for (bucket, _) in self.engine().list_buckets() {
            let doc = self.engine().bucket_config(&bucket, rules::BUCKET_CONFIG).ok().flatten();
            let rules = doc.and_then(|d| rules::parse(d.as_bytes(), &|_| true).ok()).unwrap_or_default();
            let now = now_ms();
            let mut walk = store::walk(self.engine(), &bucket);
            while let Some(object) = Self::next_object(&mut walk, &bucket).await {
                let Ok(meta) = self.engine().head_object(&bucket, &object.key).await else { continue };
                self.apply(&bucket, &object.key, meta, &rules, now, &mut state).await;
            }
            self.abort_incomplete(&bucket, &rules, now).await;
        }
        self.counters().transitions_pending.store(state.pending, Relaxed);
        self.sweep_orphans().await;
    }

    /// What is due for one object: its pending restore, the end of its restored copy, its
    /// expiration or transition.
    async fn apply(&self, bucket: &str, key: &str, meta: ObjectMeta, rules: &[Rule], now: i64, state: &mut PassState) {
        let counters = self.counters();
        if restore_pending(&meta).is_some() {
            self.resume_restore(bucket, key, meta.clone());
        }
        if restored_until(&meta).is_some_and(|until| until <= now) {
            if self.expire_restored(bucket, key, &meta).await.is_ok() {
                counters.restores_expired.fetch_add(1, Relaxed);
            }
            return;
        }
        match rules::action_for(rules, key, &meta, now, self.settings().day_ms) {
            Some(Action::Expire) => {
                if self.delete_object(bucket, key).await.is_ok() {
                    counters.expired.fetch_add(1, Relaxed);
                }
            }
            Some(Action::Transition(tier)) if !state.unreachable.contains(&tier) => {
                match self.transition(bucket, key, &meta, &tier).await {
                    Ok(true) => {
                        counters.transitioned.fetch_add(1, Relaxed);
                        counters.transitioned_bytes.fetch_add(meta.size, Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        state.pending += 1;
                        counters.transition_failed.fetch_add(1, Relaxed);
                        tracing::warn!("lifecycle: {bucket}/{key} to {tier}: {e}");
                        if e.is_unavailable() {
                            state.unreachable.push(tier);
                        }
                    }
                }
            }
            Some(Action::Transition(_)) if remote_of(&meta).is_none() => state.pending += 1,
            Some(Action::Transition(_)) | None => {}
        }
    }

    async fn abort_incomplete(&self, bucket: &str, rules: &[Rule], now: i64) {
        if !rules.iter().any(|r| r.enabled && r.abort_incomplete_days.is_some()) {
            return;
        }
        let Ok(uploads) = self.engine().list_uploads(bucket, "", "", "", UPLOADS_LISTED_MAX).await else { return };
        for upload in uploads {
            let due = rules::abort_due(rules, &upload.key, upload.initiated_ms, now, self.settings().day_ms);
            if due && self.engine().abort_upload(bucket, &upload.key, &upload.upload_id).await.is_ok() {
                self.counters().uploads_aborted.fetch_add(1, Relaxed);
            }
        }
    }

    /// Deletes blobs in each tier that no object refers to any more (the object was deleted
    /// or overwritten while in the tier, or a transition was abandoned after its upload). Only
    /// blobs whose metadata says this tier wrote them are considered (a container added with
    /// force holds others' data; another tier may share the container); a blob that is the
    /// pending transition of its object's current version is kept.
    pub async fn sweep_orphans(&self) {
        for name in self.tiers().names(self.engine()) {
            let Ok(Some(tier)) = self.tier(&name) else { continue };
            let Ok(container) = tier.container(self.tiers().http()) else { continue };
            let mut marker = String::new();
            loop {
                let (c, p, m) = (container.clone(), tier.prefix.clone(), marker.clone());
                let Ok(Ok((blobs, next))) = blocking(move || c.list_page(&p, &m, SWEEP_PAGE_BLOBS)).await else {
                    break;
                };
                for blob in blobs {
                    self.sweep_blob(&tier, &container, blob).await;
                }
                match next {
                    Some(next) => marker = next,
                    None => break,
                }
            }
        }
    }

    /// Deletes `blob` if this tier wrote it and its object no longer refers to it.
    async fn sweep_blob(&self, tier: &Tier, container: &Container, blob: String) {
        let (c, b) = (container.clone(), blob.clone());
        let Ok(Ok(props)) = blocking(move || c.properties(&b)).await else { return };
        let meta = |n: &str| props.metadata.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        if meta(META_TIER) != Some(tier.name.as_str()) {
            return;
        }
        let (Some(bucket), Some(key)) = (meta(META_BUCKET), meta(META_KEY)) else { return };
        let Some(key) = B64URL.decode(key).ok().and_then(|k| String::from_utf8(k).ok()) else { return };
        if self.referenced(&tier.prefix, &blob, bucket, &key).await {
            return;
        }
        self.delete_remote(Remote { tier: tier.name.clone(), blob, parts: Vec::new() }).await;
        self.counters().orphans_removed.fetch_add(1, Relaxed);
    }
}
