//! What a transitioned object keeps locally: its metadata, and internal headers that say
//! where its stored bytes went (the tier, the blob, the blob's ETag, the stored parts as they
//! were) and the state of a restore. These headers never reach a client (`x-ferrite-`).

use ferrite_engine::{DataLoc, ObjectMeta, PartLoc};

/// The tier a transitioned object lives in (listings show it as the storage class).
pub const TIER_HEADER: &str = "x-ferrite-tier";
const H_BLOB: &str = "x-ferrite-tier-blob";
const H_BLOB_ETAG: &str = "x-ferrite-tier-etag";
/// The stored parts as they were ("file id hex:size" by commas): multipart encrypted
/// objects derive each part's key from its file id.
const H_PARTS: &str = "x-ferrite-tier-parts";
/// A restored copy's expiry (ms since the epoch): while set, the object also has local data
/// files holding all its stored bytes, and reads use them.
const H_RESTORED_UNTIL: &str = "x-ferrite-tier-restored-until";
/// A requested restore that has not finished: the Days its copy will be kept, counted from
/// when it is written (as AWS does). Recorded before the 202, so a restore survives a crash:
/// start-up and each lifecycle pass resume it.
const H_RESTORE_PENDING: &str = "x-ferrite-tier-restore-pending";

fn header<'a>(meta: &'a ObjectMeta, name: &str) -> Option<&'a str> {
    meta.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Where a transitioned object's stored bytes are.
pub struct Remote {
    pub tier: String,
    pub blob: String,
    pub parts: Vec<PartLoc>,
}

/// The remote location of a transitioned object (None: its data is local).
pub fn remote_of(meta: &ObjectMeta) -> Option<Remote> {
    let tier = header(meta, TIER_HEADER)?;
    let blob = header(meta, H_BLOB)?;
    let parts = header(meta, H_PARTS)
        .unwrap_or("")
        .split(',')
        .filter_map(|p| p.split_once(':'))
        .filter_map(|(id, size)| {
            Some(PartLoc { file_id: u128::from_str_radix(id, 16).ok()?, size: size.parse().ok()? })
        })
        .collect();
    Some(Remote { tier: tier.to_owned(), blob: blob.to_owned(), parts })
}

/// The blob's ETag when it was committed: a blob replaced since is refused, never served.
pub(crate) fn blob_etag(meta: &ObjectMeta) -> Option<String> {
    header(meta, H_BLOB_ETAG).filter(|e| !e.is_empty()).map(str::to_owned)
}

/// The object's stored parts: its data files, or the parts it had before it moved out.
pub fn stored_parts(meta: &ObjectMeta) -> Vec<PartLoc> {
    match (&meta.data, remote_of(meta)) {
        (_, Some(remote)) => remote.parts,
        (DataLoc::Parts(parts), None) => parts.clone(),
        (DataLoc::Inline { .. }, None) => Vec::new(),
    }
}

/// Whether the object's stored bytes are in local data files (never moved, or restored).
pub(crate) fn has_local_copy(meta: &ObjectMeta) -> bool {
    matches!(&meta.data, DataLoc::Parts(parts) if !parts.is_empty()) || matches!(meta.data, DataLoc::Inline { .. })
}

/// When a restored copy of a transitioned object expires (ms), if it has one.
pub fn restored_until(meta: &ObjectMeta) -> Option<i64> {
    header(meta, H_RESTORED_UNTIL).and_then(|v| v.parse().ok())
}

/// The Days of a requested, unfinished restore, if one was requested.
pub fn restore_pending(meta: &ObjectMeta) -> Option<u32> {
    header(meta, H_RESTORE_PENDING).and_then(|v| v.parse().ok())
}

/// What a restore's headers record.
pub(crate) enum RestoreMark {
    /// Nothing: no restore requested, no restored copy.
    None,
    /// Requested for this many days.
    Pending(u32),
    /// A restored copy, kept until (ms since the epoch).
    Until(i64),
}

/// The object's headers without any restore state, plus `mark`.
pub(crate) fn restore_headers(meta: &ObjectMeta, mark: RestoreMark) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> =
        meta.headers.iter().filter(|(n, _)| n != H_RESTORED_UNTIL && n != H_RESTORE_PENDING).cloned().collect();
    match mark {
        RestoreMark::None => {}
        RestoreMark::Pending(days) => headers.push((H_RESTORE_PENDING.into(), days.to_string())),
        RestoreMark::Until(ms) => headers.push((H_RESTORED_UNTIL.into(), ms.to_string())),
    }
    headers
}

/// The headers a transitioned object carries: its own plus where its bytes went.
pub(crate) fn transitioned_headers(
    meta: &ObjectMeta,
    tier: &str,
    blob: &str,
    blob_etag: &str,
) -> Vec<(String, String)> {
    let parts = match &meta.data {
        DataLoc::Parts(parts) => {
            parts.iter().map(|p| format!("{:x}:{}", p.file_id, p.size)).collect::<Vec<_>>().join(",")
        }
        DataLoc::Inline { .. } => String::new(),
    };
    let mut headers: Vec<(String, String)> =
        meta.headers.iter().filter(|(n, _)| !n.starts_with(TIER_HEADER)).cloned().collect();
    headers.push((TIER_HEADER.into(), tier.into()));
    headers.push((H_BLOB.into(), blob.into()));
    headers.push((H_BLOB_ETAG.into(), blob_etag.into()));
    headers.push((H_PARTS.into(), parts));
    headers
}
