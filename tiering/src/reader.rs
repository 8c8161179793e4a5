//! Reading an object's stored bytes (ciphertext for an encrypted object) wherever they are:
//! its local data files through the engine, or its blob in a tier, 4 MiB ranged Get Blob
//! calls on the blocking pool. The S3 layer decrypts what comes out, the same either way.
//!
//! A tier that cannot be read now is `Error::TierUnreachable` (the details go to the log,
//! not to the client); a blob that is gone or was replaced is `Error::BlobGone`.

use ferrite_engine::{Chunk, ObjectMeta, ObjectReader};

use crate::error::{Error, Result};
use crate::mover::Mover;
use crate::outbound::azure_blob::{BlobError, Container};
use crate::stub::{blob_etag, has_local_copy, remote_of};

/// Bytes per ranged GET from a tier.
const REMOTE_READ_BYTES: u64 = 4 << 20;

/// Reads stored bytes [start, end) of an object, from its data files or its tier.
pub enum StoredReader {
    Local(ObjectReader),
    Remote(Box<RemoteReader>),
}

pub struct RemoteReader {
    /// The tier's container, or why there is none.
    container: Result<Container, String>,
    blob: String,
    /// The blob's ETag at commit: a blob replaced since is refused, never served.
    etag: Option<String>,
    pos: u64,
    end: u64,
    primed: Option<Chunk>,
}

impl Mover {
    /// A reader of stored bytes [start, end) of `bucket`/`key` as `meta` describes it.
    pub fn stored_reader(&self, bucket: &str, key: &str, meta: &ObjectMeta, start: u64, end: u64) -> StoredReader {
        let Some(remote) = remote_of(meta).filter(|_| !has_local_copy(meta)) else {
            return StoredReader::Local(self.engine().reader(bucket, key, meta, start, end));
        };
        let container = match self.tier(&remote.tier) {
            Ok(Some(tier)) => tier.container(self.tiers().http()),
            Ok(None) => Err(format!("tier {} is not configured", remote.tier)),
            Err(e) => Err(e.to_string()),
        };
        let etag = blob_etag(meta);
        StoredReader::Remote(Box::new(RemoteReader {
            container,
            blob: remote.blob,
            etag,
            pos: start,
            end,
            primed: None,
        }))
    }
}

impl StoredReader {
    pub async fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        match self {
            StoredReader::Local(r) => Ok(r.next_chunk().await?),
            StoredReader::Remote(r) => match r.primed.take() {
                Some(chunk) => Ok(Some(chunk)),
                None => r.fetch().await,
            },
        }
    }

    /// Reads the first chunk ahead, so a failure shows before a response head goes out.
    pub async fn prime(&mut self) -> Result<()> {
        match self {
            StoredReader::Local(r) => Ok(r.prime().await?),
            StoredReader::Remote(r) => {
                if r.primed.is_none() {
                    r.primed = r.fetch().await?;
                }
                Ok(())
            }
        }
    }
}

impl RemoteReader {
    fn unavailable(&self, why: &dyn std::fmt::Display) -> Error {
        tracing::warn!(blob = %self.blob, "tier: reading blob {}: {why}", self.blob);
        Error::TierUnreachable
    }

    async fn fetch(&mut self) -> Result<Option<Chunk>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let container = match &self.container {
            Ok(container) => container.clone(),
            Err(why) => return Err(self.unavailable(why)),
        };
        let (blob, from, to) = (self.blob.clone(), self.pos, (self.pos + REMOTE_READ_BYTES).min(self.end) - 1);
        let etag = self.etag.clone();
        let answer = monoio::spawn_blocking(move || container.get_range(&blob, from, to, etag.as_deref())).await;
        let chunk = match answer {
            Err(_) => return Err(self.unavailable(&"cancelled")),
            Ok(Ok(chunk)) => chunk,
            // Gone or replaced in the container: retrying will not help.
            Ok(Err(e @ (BlobError::NotFound | BlobError::Refused(..)))) => {
                tracing::warn!(blob = %self.blob, "tier: reading blob {}: {e}", self.blob);
                return Err(Error::BlobGone);
            }
            Ok(Err(e)) => return Err(self.unavailable(&e)),
        };
        if chunk.len() as u64 != to + 1 - from {
            return Err(self.unavailable(&format!("{} bytes answered for {from}-{to}", chunk.len())));
        }
        self.pos = to + 1;
        Ok(Some(Chunk::Owned(chunk)))
    }
}
