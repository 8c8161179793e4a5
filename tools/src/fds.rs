//! File descriptors: the soft `RLIMIT_NOFILE` raised to the hard limit at start-up, and the
//! connection cap derived from what the limit leaves once the process's own files are set
//! aside. A process that runs out of descriptors cannot open a drive's files; the cap keeps
//! clients from ever getting it there (and the engine never blames a drive for EMFILE).

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors the process needs whatever the load: standard streams, the drive monitor,
/// start-up and snapshot files, the outbound client's connection pool (KMS, Entra ID,
/// tiers), the listening socket.
const FDS_FIXED: u64 = 128;
/// Per core: its io_uring or epoll instance, eventfds and timers, its blocking pool's.
const FDS_PER_CORE: u64 = 16;
/// Per core and drive: the core's metadata log, a heal pass's shard file, an inline read's
/// log copy and a snapshot being written.
const FDS_PER_CORE_DRIVE: u64 = 4;
/// Per data stream (a memory-budget slot) and drive: a shard file, twice for a copy (its
/// source and its destination).
const FDS_PER_STREAM_DRIVE: u64 = 2;
/// Per connection: its socket and a file a request may hold outside a data stream (an
/// inline object's log copy being read).
const FDS_PER_CONNECTION: u64 = 2;
/// The derived cap never exceeds this (an unlimited descriptor limit would otherwise make
/// it meaningless); `--connections-max` may go higher.
const CONNECTIONS_DERIVED_MAX: u64 = 1 << 20;

/// The descriptor limit as found and as raised.
pub struct FdLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft descriptor limit to the hard one (the soft default, often 1024, is far
/// below what a server with many clients needs; the hard one is what the administrator
/// allows). Err when the limit cannot be read; a refused raise keeps the soft limit.
pub fn raise_limit() -> Result<FdLimit, String> {
    let (soft_before, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("cannot read the file-descriptor limit: {e}"))?;
    let soft = match soft_before < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        true => hard,
        false => soft_before,
    };
    Ok(FdLimit { soft_before, soft, hard })
}

/// What the connection cap is derived from.
pub struct FdNeeds {
    pub cores: usize,
    pub drives: usize,
    /// Data streams the memory budget admits, all cores together.
    pub streams: usize,
}

/// The most connections (all cores together) the descriptor limit `limit` allows: what is
/// left after the fixed and per-core needs goes half at most to the data streams' shard
/// files, the rest to connections (two descriptors each). At least one per core.
pub fn connections_max(limit: u64, needs: &FdNeeds) -> u64 {
    let (cores, drives, streams) = (needs.cores as u64, needs.drives as u64, needs.streams as u64);
    let fixed = FDS_FIXED + cores * (FDS_PER_CORE + drives * FDS_PER_CORE_DRIVE);
    let left = limit.saturating_sub(fixed);
    let for_streams = streams.saturating_mul(drives).saturating_mul(FDS_PER_STREAM_DRIVE).min(left / 2);
    ((left - for_streams) / FDS_PER_CONNECTION).clamp(cores.max(1), CONNECTIONS_DERIVED_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_drives_and_streams() {
        let needs = FdNeeds { cores: 2, drives: 4, streams: 100 };
        // 128 + 2 * (16 + 16) = 192 fixed; 64 left: 32 for streams, 16 connections.
        assert_eq!(connections_max(256, &needs), 16);
        // A generous limit: the streams get all they can use, connections the rest.
        assert_eq!(connections_max(65_536, &needs), (65_536 - 192 - 800) / 2);
        // Too low a limit still lets every core serve one connection.
        assert_eq!(connections_max(100, &needs), 2);
        assert_eq!(connections_max(u64::MAX, &needs), CONNECTIONS_DERIVED_MAX);
    }
}
