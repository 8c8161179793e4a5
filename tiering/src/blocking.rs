//! Running a blocking call (a Blob request, a sign-in) on the calling executor's blocking
//! pool, so the executor thread keeps serving meanwhile.

use crate::error::{Error, Result};

/// Runs `job` on the blocking pool; Err only when it was cancelled.
pub async fn blocking<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    monoio::spawn_blocking(job).await.map_err(|_| Error::Cancelled)
}
