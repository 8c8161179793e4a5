//! The engine's settings. The binary builds them (from its command line and environment)
//! and passes them to `Engine::open`; the engine reads no environment variable and keeps
//! no setting in a process-wide static. Imports no sibling.

use std::path::PathBuf;
use std::time::Duration;

/// Default for `EngineConfig::snapshot_every_bytes`: start-up replays at most about this
/// much log per core.
pub const SNAPSHOT_EVERY_BYTES_DEFAULT: u64 = 64 << 20;

pub struct EngineConfig {
    pub drives: Vec<PathBuf>,
    /// Parity drives; None: the default for the drive count (format.rs).
    pub parity: Option<usize>,
    /// Executors (one metadata service and one block cache each).
    pub cores: usize,
    /// Each core snapshots its index after appending this many log bytes.
    pub snapshot_every_bytes: u64,
    pub heal: HealConfig,
    /// Bytes of verified data blocks cached, split evenly between the cores; 0 turns the
    /// block cache off.
    pub cache_bytes: usize,
    /// Faults to inject into the drive I/O path. Honoured only by test builds (cargo
    /// feature `fault-injection`); other builds ignore them.
    pub faults: FaultConfig,
}

impl Default for EngineConfig {
    /// No drives, one core, no block cache, default snapshot and heal settings.
    fn default() -> Self {
        EngineConfig {
            drives: Vec::new(),
            parity: None,
            cores: 1,
            snapshot_every_bytes: SNAPSHOT_EVERY_BYTES_DEFAULT,
            heal: HealConfig::default(),
            cache_bytes: 0,
            faults: FaultConfig::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct HealConfig {
    /// Time between the starts of two background scans (and before the first).
    pub scan_interval: Duration,
    /// Bytes per second each core's background scan reads.
    pub scan_rate: u64,
    /// Bytes per second each core's heal reads; 0 is unlimited.
    pub heal_rate: u64,
    /// How often the drive monitor looks at the drives; zero disables it.
    pub drive_check: Duration,
    /// Data files no object references are removed once they are this old.
    pub leftover_age: Duration,
    /// How soon the void of a log batch that missed the write quorum is retried when no
    /// write comes to carry it sooner.
    pub void_retry: Duration,
}

impl Default for HealConfig {
    fn default() -> Self {
        HealConfig {
            scan_interval: Duration::from_secs(3600),
            scan_rate: 16 << 20,
            heal_rate: 0,
            drive_check: Duration::from_secs(10),
            leftover_age: Duration::from_secs(3600),
            void_retry: Duration::from_secs(1),
        }
    }
}

/// The fault layer's rules (see fault.rs for the syntax).
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// Rules installed at start-up.
    pub rules: Option<String>,
    /// A file whose rules replace the current ones whenever it changes, so a test can break
    /// and heal a drive while the server runs.
    pub rules_file: Option<PathBuf>,
}
