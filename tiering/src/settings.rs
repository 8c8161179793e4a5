//! What the mover is told at start-up (the binary reads it from the environment).

use std::time::Duration;

/// A lifecycle day: 86,400 s.
pub const DAY_MS: i64 = 86_400_000;

/// The mover's settings.
#[derive(Clone, Debug)]
pub struct MoverSettings {
    /// Between background lifecycle passes; zero: none (passes run when asked).
    pub pass_interval: Duration,
    /// How fast transitions upload, in bytes per second (None: no limit). Transitions run one
    /// at a time, so this bounds the process.
    pub upload_bytes_per_sec: Option<u64>,
    /// The length of a lifecycle day in ms: [`DAY_MS`], shorter in tests (then due times are
    /// not rounded to midnight).
    pub day_ms: i64,
}

impl Default for MoverSettings {
    fn default() -> Self {
        MoverSettings { pass_interval: Duration::from_secs(3600), upload_bytes_per_sec: Some(64 << 20), day_ms: DAY_MS }
    }
}
