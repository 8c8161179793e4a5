//! The mover's calls into the engine whose shape the engine may change: replacing an
//! object's data files (`swap_data`) and walking a bucket's objects. Kept here, together, so
//! an engine change touches one module of the mover.

use ferrite_engine::{Engine, EngineError, Finished, ObjectMeta, ObjectWalk};

use crate::stub::TIER_HEADER;

use crate::error::{Error, Result};

/// Drops an object's local data files (moved to a tier, or a restored copy expired), with
/// `headers` saying where the bytes are; only if the object is still `meta`
/// (PreconditionFailed otherwise).
pub(crate) async fn swap_out(
    engine: &Engine,
    bucket: &str,
    key: &str,
    meta: &ObjectMeta,
    headers: Vec<(String, String)>,
) -> Result<(), EngineError> {
    engine.drop_data(bucket, key, meta, headers).await
}

/// Makes the data just written (`copy`) the object's local copy, with `headers`; only if
/// the object is still `meta`.
pub(crate) async fn swap_in(
    engine: &Engine,
    bucket: &str,
    key: &str,
    meta: &ObjectMeta,
    copy: Finished,
    headers: Vec<(String, String)>,
) -> Result<(), SwapInError> {
    if copy.is_inline() {
        return Err(SwapInError::Inline);
    }
    engine.swap_data(bucket, key, meta, copy, headers).await.map_err(SwapInError::Engine)
}

/// Why a copy was not swapped in.
pub(crate) enum SwapInError {
    /// The copy came back inline (a writer that allows inline data was used).
    Inline,
    Engine(EngineError),
}

/// One object of a walk: its key, and the tier it is in (None: its bytes are local).
pub(crate) struct Walked {
    pub key: String,
    pub tier: Option<String>,
}

/// A bucket's objects, a listing page at a time (see `Engine::walk`).
pub(crate) struct Walk(ObjectWalk);

pub(crate) fn walk(engine: &Engine, bucket: &str) -> Walk {
    Walk(engine.walk(bucket, Some(TIER_HEADER)))
}

impl Walk {
    /// The next object; Ok(None) at the end. An error ends the walk.
    pub(crate) async fn next(&mut self) -> Result<Option<Walked>> {
        match self.0.next().await {
            Ok(next) => Ok(next.map(|o| Walked { key: o.key, tier: o.reported_header })),
            Err(e) => Err(Error::Engine(e)),
        }
    }
}
