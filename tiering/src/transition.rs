//! Transition: one object's stored bytes to a tier, uploads paced at the settings' rate.
//!
//! 1. The stored bytes (ciphertext for encrypted objects) are read through the engine and
//!    put as 4 MiB blocks with deterministic ids into a blob named from the bucket, key and
//!    a hash of the version; blocks the service already holds are not sent again, so an
//!    interrupted transition resumes.
//! 2. The block list is committed with the tier's access tier and an owner mark.
//! 3. The engine swaps the data files for internal headers saying where the bytes went, in
//!    one log record, only if the object's data is still what was read.
//!
//! A crash before 3 leaves the object local (the blob is reused by the next attempt or
//! removed by the orphan sweep); after 3 the stub is durable.

use std::time::{Duration, Instant};

use base64::Engine as _;
use ferrite_engine::{DataLoc, EngineError, ObjectMeta};
use sha2::Digest;

use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::mover::Mover;
use crate::outbound::azure_blob::{block_id, Container};
use crate::store;
use crate::stub::{remote_of, transitioned_headers, Remote};

/// Bytes per block put to a tier.
const UPLOAD_BLOCK_BYTES: usize = 4 << 20;
/// Blob metadata of a moved object: the tier that wrote it, its bucket and its key
/// (base64url). The orphan sweep only ever deletes blobs its own tier wrote.
pub(crate) const META_TIER: &str = "ferrite_tier";
pub(crate) const META_BUCKET: &str = "ferrite_bucket";
pub(crate) const META_KEY: &str = "ferrite_key";

/// base64url without padding, for keys in blob metadata (values must be plain ASCII).
pub(crate) const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The blob an object version goes to: the tier's prefix, the bucket, a hash of the key and
/// a hash of the version's modification time and ETag. Deterministic, so a retried
/// transition resumes into the same blob; no character of the key reaches the name (Azure
/// rewrites "." and ".." segments, backslashes and trailing dots; keys could escape the
/// prefix). The key itself is kept in the blob's metadata.
pub(crate) fn blob_name(prefix: &str, bucket: &str, key: &str, meta: &ObjectMeta) -> String {
    let key_hash = sha2::Sha256::digest(key.as_bytes());
    let version = sha2::Sha256::digest(format!("{}\n{}", meta.mtime_ms, meta.etag));
    format!("{prefix}{bucket}/{}/{}", hex(&key_hash[..16]), hex(&version[..8]))
}

/// Paces uploads: never ahead of `rate` bytes per second since `started`.
struct Pace {
    started: Instant,
    rate: Option<u64>,
    sent: u64,
}

impl Pace {
    async fn before(&mut self, bytes: usize) {
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                monoio::time::sleep(wait).await;
            }
        }
        self.sent += bytes as u64;
    }
}

impl Mover {
    /// Moves one object's stored bytes to `tier_name`: upload (resuming blocks the tier holds
    /// already), commit, then swap the local data for the remote location if the object is
    /// unchanged. Ok(false): nothing to do (inline, already moved) or the object changed
    /// meanwhile (the blob is deleted again).
    pub async fn transition(&self, bucket: &str, key: &str, meta: &ObjectMeta, tier_name: &str) -> Result<bool> {
        let parts = match &meta.data {
            DataLoc::Parts(parts) if !parts.is_empty() && remote_of(meta).is_none() => parts,
            _ => return Ok(false),
        };
        let Some(tier) = self.tier(tier_name)? else { return Err(Error::NoSuchTier(tier_name.to_owned())) };
        let container = tier.container(self.tiers().http()).map_err(Error::TierDamaged)?;
        let blob = blob_name(&tier.prefix, bucket, key, meta);
        let stored: u64 = parts.iter().map(|p| p.size).sum();
        let ids = self.upload(&container, &blob, bucket, key, meta, stored).await?;
        let etag = {
            let (c, b, access_tier) = (container.clone(), blob.clone(), tier.access_tier.clone());
            let (tier_name, bucket, key) = (tier_name.to_owned(), bucket.to_owned(), B64URL.encode(key));
            let job = move || {
                let mark = [(META_TIER, tier_name.as_str()), (META_BUCKET, bucket.as_str()), (META_KEY, key.as_str())];
                c.commit_blocks(&b, &ids, &access_tier, &mark)
            };
            blocking(job).await?.map_err(Error::Blob)?
        };
        // `tier rm` refuses a tier that objects live in, but not one a transition is still
        // uploading to: check again just before the swap, and stay local if it went.
        if self.tier(tier_name)?.is_none() {
            let _ = blocking(move || container.delete(&blob)).await;
            return Ok(false);
        }
        let headers = transitioned_headers(meta, tier_name, &blob, &etag);
        match store::swap_out(self.engine(), bucket, key, meta, headers).await {
            Ok(()) => Ok(true),
            Err(EngineError::PreconditionFailed) | Err(EngineError::NoSuchKey) => {
                // Changed since it was read: the copy is not needed, unless the object refers to
                // this very blob now (another pass moved the same version first).
                if !self.referenced(&tier.prefix, &blob, bucket, key).await {
                    self.delete_remote(Remote { tier: tier_name.to_owned(), blob, parts: Vec::new() }).await;
                }
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Puts the object's stored bytes as blocks of `blob`, skipping those the service holds
    /// already; the block ids in order.
    async fn upload(
        &self,
        container: &Container,
        blob: &str,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        stored: u64,
    ) -> Result<Vec<String>> {
        let held = {
            let (c, b) = (container.clone(), blob.to_owned());
            blocking(move || c.uncommitted_blocks(&b)).await?.map_err(Error::Blob)?
        };
        let mut reader = self.stored_reader(bucket, key, meta, 0, stored);
        let mut ids = Vec::new();
        let mut block = Vec::with_capacity(UPLOAD_BLOCK_BYTES);
        let mut done = false;
        let mut pace = Pace { started: Instant::now(), rate: self.settings().upload_bytes_per_sec, sent: 0 };
        while !done {
            match reader.next_chunk().await? {
                Some(chunk) => block.extend_from_slice(&chunk),
                None => done = true,
            }
            while block.len() >= UPLOAD_BLOCK_BYTES || (done && !block.is_empty()) {
                let rest =
                    if block.len() > UPLOAD_BLOCK_BYTES { block.split_off(UPLOAD_BLOCK_BYTES) } else { Vec::new() };
                let id = block_id(ids.len() as u64);
                let already = held.iter().any(|(h, size)| *h == id && *size == block.len() as u64);
                if already {
                    block = rest;
                } else {
                    pace.before(block.len()).await;
                    let (c, b, i, data) =
                        (container.clone(), blob.to_owned(), id.clone(), std::mem::replace(&mut block, rest));
                    blocking(move || c.put_block(&b, &i, data)).await?.map_err(Error::Blob)?;
                }
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Whether `blob` belongs to the current version of `bucket`/`key`, in the tier or about
    /// to be (its pending transition).
    pub(crate) async fn referenced(&self, prefix: &str, blob: &str, bucket: &str, key: &str) -> bool {
        match self.engine().head_object(bucket, key).await {
            Ok(meta) => match remote_of(&meta) {
                Some(remote) => remote.blob == blob,
                None => blob_name(prefix, bucket, key, &meta) == blob,
            },
            Err(EngineError::NoSuchKey) | Err(EngineError::NoSuchBucket) => false,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_hide_the_key_and_name_the_version() {
        let meta = ObjectMeta {
            size: 1,
            etag: "abc".into(),
            mtime_ms: 5,
            headers: Vec::new(),
            checksum: None,
            tags: Vec::new(),
            part_sizes: Vec::new(),
            data: DataLoc::Parts(Vec::new()),
        };
        let name = blob_name("data/", "b", "../../etc", &meta);
        let parts: Vec<&str> = name.split('/').collect();
        assert_eq!((parts[0], parts[1], parts[2].len(), parts[3].len()), ("data", "b", 32, 16), "{name}");
        let again = blob_name("data/", "b", "../../etc", &ObjectMeta { mtime_ms: 6, ..meta });
        assert_ne!(name, again, "another version, another blob");
    }
}
