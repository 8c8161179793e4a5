//! The drive monitor: a thread that checks every drive's format file. A drive whose format
//! vanished (wiped or replaced) is formatted into its slot, its cores reopen their logs (the
//! drive epoch), and a heal starts; a drive that cannot be read, or belongs elsewhere, is
//! taken offline; one that comes back is healed. A check the process itself could not make
//! (out of file descriptors or memory: `error::is_process_error`) changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use crate::drives::DriveState;
use crate::format::{check_drive, format_replacement, mark_heal_pending, DriveCheck, HEAL_PENDING_FILE};
use crate::heal_state::HealState;

/// Starts the drive monitor thread (when `drive_check` is not zero), and a heal at once
/// when start-up formatted replacement drives.
pub(crate) fn start(drives: Arc<DriveState>, heal: Arc<HealState>) {
    let pending: Vec<String> = drives
        .online_paths()
        .iter()
        .filter(|p| p.join(HEAL_PENDING_FILE).exists())
        .map(|p| p.display().to_string())
        .collect();
    if !pending.is_empty() {
        heal.request(&format!("drive replaced, not yet healed: {}", pending.join(", ")), None);
    }
    let every = heal.config.drive_check;
    if every.is_zero() {
        return;
    }
    let spawned = std::thread::Builder::new().name("ferrite-drives".into()).spawn(move || loop {
        std::thread::sleep(every);
        check_drives(&drives, &heal);
    });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start the drive monitor");
    }
}

/// One look at every drive: a drive whose format is gone is formatted as a replacement and
/// healed; a drive that cannot be read, or belongs elsewhere, is taken offline; a drive
/// that comes back is healed too (it missed writes while away).
pub(crate) fn check_drives(drives: &DriveState, heal: &HealState) {
    let mut healed = Vec::new();
    for (drive, path) in drives.paths().iter().enumerate() {
        let back = match check_drive(path, &drives.set().format, drive) {
            DriveCheck::Ok => drive_ok(drives, drive),
            DriveCheck::Missing => drive_missing(drives, drive),
            DriveCheck::Unusable(why) => {
                if drives.online(drive) {
                    tracing::warn!(drive = %path.display(), reason = %why, "drive is unusable; running without it");
                    drives.set_online(drive, false);
                }
                false
            }
            DriveCheck::Inconclusive(why) => {
                // The process, not the drive, failed (EMFILE under a flood of connections,
                // say): the drive keeps its state and is looked at again next time.
                tracing::warn!(drive = %path.display(), reason = %why, "cannot check the drive now; its state is kept");
                false
            }
        };
        if back {
            healed.push(path.clone());
        }
    }
    if !healed.is_empty() {
        drives.bump_epoch();
        let names: Vec<String> = healed.iter().map(|p: &PathBuf| p.display().to_string()).collect();
        heal.request(&format!("drive replaced or back: {}", names.join(", ")), None);
    }
}

/// A drive with its own format: true when it was offline and is back (it needs a heal).
fn drive_ok(drives: &DriveState, drive: usize) -> bool {
    if drives.online(drive) {
        return false;
    }
    let path = &drives.paths()[drive];
    tracing::info!(drive = %path.display(), "drive is back");
    if let Err(err) = mark_heal_pending(path) {
        tracing::warn!(drive = %path.display(), error = %err, "cannot mark the drive as pending a heal");
    }
    drives.set_online(drive, true);
    true
}

/// A drive whose format is gone: formatted as a replacement (true) when possible.
fn drive_missing(drives: &DriveState, drive: usize) -> bool {
    let path = &drives.paths()[drive];
    // Offline while it is formatted, so no write lands in a half-made drive.
    drives.set_online(drive, false);
    match format_replacement(path, &drives.set().format, drive) {
        Ok(()) => {
            tracing::info!(drive = %path.display(), "drive lost its format: formatted as a replacement");
            drives.set_online(drive, true);
            true
        }
        Err(err) => {
            tracing::error!(drive = %path.display(), error = %err, "drive lost its format and cannot be formatted");
            false
        }
    }
}
