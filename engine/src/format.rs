//! Drive formats: every drive carries `format.ferrite` naming the deployment, the drive's own
//! id, the ordered set of drive ids and the erasure layout. Start-up refuses foreign, swapped
//! or duplicated drives, formats fresh ones, and runs with up to `parity` drives missing.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{is_process_error, EngineError, Result};

pub const FORMAT_FILE_NAME: &str = "format.ferrite";
pub const FORMAT_VERSION: u32 = 1;
/// Fixed at format time; partitions are assigned to executors at start-up and never re-hashed.
pub const PARTITION_COUNT_DEFAULT: u16 = 256;
/// Objects are cut into blocks of this size before erasure coding.
pub const BLOCK_SIZE_DEFAULT: u32 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub version: u32,
    pub deployment_id: String,
    pub drive_id: String,
    /// Drive ids in set order; shard i of a block lives on drive (i + rotation) % n.
    pub set: Vec<String>,
    pub data_shards: usize,
    pub parity_shards: usize,
    pub partition_count: u16,
    pub block_size: u32,
}

impl Format {
    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "version={}", self.version);
        let _ = writeln!(out, "deployment={}", self.deployment_id);
        let _ = writeln!(out, "drive={}", self.drive_id);
        let _ = writeln!(out, "set={}", self.set.join(","));
        let _ = writeln!(out, "data={}", self.data_shards);
        let _ = writeln!(out, "parity={}", self.parity_shards);
        let _ = writeln!(out, "partitions={}", self.partition_count);
        let _ = writeln!(out, "block_size={}", self.block_size);
        out
    }

    fn decode(text: &str, path: &Path) -> Result<Format> {
        let bad = |what: &str| EngineError::Format(format!("{}: {what}", path.display()));
        let get = |name: &str| -> Result<String> {
            text.lines()
                .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("missing field {name}")))
        };
        let num = |value: String, name: &str| -> Result<u64> {
            value.parse().map_err(|_| bad(&format!("field {name} is not a number")))
        };
        let format = Format {
            version: num(get("version")?, "version")? as u32,
            deployment_id: get("deployment")?,
            drive_id: get("drive")?,
            set: get("set")?.split(',').map(str::to_owned).collect(),
            data_shards: num(get("data")?, "data")? as usize,
            parity_shards: num(get("parity")?, "parity")? as usize,
            partition_count: num(get("partitions")?, "partitions")? as u16,
            block_size: num(get("block_size")?, "block_size")? as u32,
        };
        if format.version != FORMAT_VERSION {
            return Err(bad(&format!("format version {} is not supported", format.version)));
        }
        if format.set.len() != format.data_shards + format.parity_shards || format.data_shards == 0 {
            return Err(bad("set size does not match data + parity"));
        }
        Ok(format)
    }
}

/// Parity used when `--parity` is not given, as a function of the drive count.
pub fn default_parity(drive_count: usize) -> usize {
    match drive_count {
        0 | 1 => 0,
        2 | 3 => 1,
        4 | 5 => 2,
        6 | 7 => 3,
        _ => 4,
    }
}

pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // getrandom only fails without an entropy source; fall back to time and pid.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes = (nanos ^ ((std::process::id() as u128) << 64)).to_le_bytes();
    }
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What start-up found on the drives.
#[derive(Debug)]
pub struct DriveSet {
    pub paths: Vec<PathBuf>,
    pub format: Format,
    /// online[i]: drive i has a valid format of this deployment in position i.
    pub online: Vec<bool>,
    /// Human-readable notes for the start-up log (missing or freshly formatted drives).
    pub notes: Vec<String>,
}

impl DriveSet {
    pub fn drive_count(&self) -> usize {
        self.paths.len()
    }

    /// Writes must reach this many drives (MinIO's rule: k, or k + 1 when k == m).
    pub fn write_quorum(&self) -> usize {
        let k = self.format.data_shards;
        let m = self.format.parity_shards;
        if k == m {
            k + 1
        } else {
            k
        }
    }
}

fn read_format(path: &Path) -> Result<Option<Format>> {
    let file = path.join(FORMAT_FILE_NAME);
    match fs::read_to_string(&file) {
        Ok(text) => Format::decode(&text, &file).map(Some),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(EngineError::Format(format!("{}: {err}", file.display()))),
    }
}

fn write_format(path: &Path, format: &Format, partitions: u16) -> Result<()> {
    for dir in ["meta", "data"] {
        fs::create_dir_all(path.join(dir))?;
    }
    for partition in 0..partitions {
        fs::create_dir_all(path.join("data").join(partition_dir_name(partition)))?;
    }
    let tmp = path.join(format!("{FORMAT_FILE_NAME}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(format.encode().as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path.join(FORMAT_FILE_NAME))?;
    for dir in [path.join("data"), path.join("meta"), path.to_path_buf()] {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What the drive monitor found on a drive.
pub enum DriveCheck {
    Ok,
    /// The format is gone (a wiped or replaced drive): `format_replacement` makes it new.
    Missing,
    Unusable(String),
    /// The format could not be read for a reason of the process (out of file descriptors
    /// or memory, interrupted): this look says nothing about the drive.
    Inconclusive(String),
}

/// Checks drive number `index` of a running set against the set's format.
pub fn check_drive(path: &Path, reference: &Format, index: usize) -> DriveCheck {
    let file = path.join(FORMAT_FILE_NAME);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return DriveCheck::Missing,
        Err(err) if is_process_error(&err) => return DriveCheck::Inconclusive(format!("{}: {err}", file.display())),
        Err(err) => return DriveCheck::Unusable(format!("{}: {err}", file.display())),
    };
    match Format::decode(&text, &file) {
        Ok(found) if found.deployment_id == reference.deployment_id && found.drive_id == reference.set[index] => {
            DriveCheck::Ok
        }
        Ok(_) => DriveCheck::Unusable("it carries the format of another drive or deployment".into()),
        Err(err) => DriveCheck::Unusable(err.to_string()),
    }
}

/// Formats drive number `index` into its slot as a replacement. The heal marker goes
/// first: a crash half-way leaves a drive that start-up recognises as a replacement whose
/// format was interrupted (whatever was written into it meanwhile), not as foreign data.
pub fn format_replacement(path: &Path, reference: &Format, index: usize) -> Result<()> {
    fs::create_dir_all(path)?;
    mark_heal_pending(path)?;
    let format = Format { drive_id: reference.set[index].clone(), ..reference.clone() };
    write_format(path, &format, reference.partition_count)
}

/// True when a directory holds no regular file other than what an interrupted format
/// leaves (its empty directories and the temporary format file): such a drive is treated
/// as empty. Anything else may be somebody's data, and the drive is left alone.
fn holds_no_files(path: &Path) -> bool {
    let Ok(entries) = fs::read_dir(path) else { return false };
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let Ok(kind) = entry.file_type() else { return false };
        let name = entry.file_name();
        let ok = if kind.is_dir() {
            holds_no_files(&entry.path())
        } else {
            name.to_str() == Some(&format!("{FORMAT_FILE_NAME}.tmp")) || name.to_str() == Some(HEAL_PENDING_FILE)
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Left on a drive formatted as a replacement until a heal has completed, so that a heal a
/// crash interrupted is started again at the next start-up.
pub const HEAL_PENDING_FILE: &str = "heal.pending";

pub fn mark_heal_pending(path: &Path) -> Result<()> {
    fs::write(path.join(HEAL_PENDING_FILE), b"")?;
    fs::File::open(path)?.sync_all()?;
    Ok(())
}

pub fn partition_dir_name(partition: u16) -> String {
    format!("{partition:03x}")
}

/// Opens (formatting where needed) the drives given on the command line.
pub fn open_drives(paths: &[PathBuf], parity: Option<usize>) -> Result<DriveSet> {
    let n = paths.len();
    if n == 0 {
        return Err(EngineError::Format("no drives given".into()));
    }
    let parity = parity.unwrap_or_else(|| default_parity(n));
    if parity * 2 > n || (n > 1 && parity >= n) || (n == 1 && parity != 0) {
        return Err(EngineError::Format(format!(
            "parity {parity} is not possible with {n} drives: parity may be at most half the drives"
        )));
    }
    for path in paths {
        fs::create_dir_all(path)
            .map_err(|err| EngineError::Format(format!("cannot create drive directory {}: {err}", path.display())))?;
    }
    let found: Vec<Option<Format>> = paths.iter().map(|p| read_format(p)).collect::<Result<_>>()?;
    let Some(reference) = found.iter().flatten().next().cloned() else {
        return format_fresh(paths, parity);
    };
    if reference.set.len() != n {
        return Err(EngineError::Format(format!(
            "the drives were formatted as a set of {} but {n} were given",
            reference.set.len()
        )));
    }
    let mut online = vec![false; n];
    for (i, format) in found.iter().enumerate() {
        if let Some(format) = format {
            check_member(paths, &found, i, format, &reference)?;
            online[i] = true;
        }
    }
    let notes = adopt_replacements(paths, &reference, &mut online)?;
    let missing = online.iter().filter(|o| !**o).count();
    if missing > reference.parity_shards {
        return Err(EngineError::Format(format!(
            "{missing} drives are missing but parity is {}: not enough drives to start",
            reference.parity_shards
        )));
    }
    Ok(DriveSet { paths: paths.to_vec(), format: reference, online, notes })
}

/// A fresh deployment: formats every drive.
fn format_fresh(paths: &[PathBuf], parity: usize) -> Result<DriveSet> {
    let n = paths.len();
    let set: Vec<String> = (0..n).map(|_| random_id()).collect();
    let deployment_id = random_id();
    for (i, path) in paths.iter().enumerate() {
        let format = Format {
            version: FORMAT_VERSION,
            deployment_id: deployment_id.clone(),
            drive_id: set[i].clone(),
            set: set.clone(),
            data_shards: n - parity,
            parity_shards: parity,
            partition_count: PARTITION_COUNT_DEFAULT,
            block_size: BLOCK_SIZE_DEFAULT,
        };
        write_format(path, &format, PARTITION_COUNT_DEFAULT)?;
    }
    let notes = vec![format!("formatted {n} new drives (deployment {deployment_id})")];
    let format = match read_format(&paths[0])? {
        Some(format) => format,
        None => return Err(EngineError::Format("format vanished right after writing".into())),
    };
    Ok(DriveSet { paths: paths.to_vec(), format, online: vec![true; n], notes })
}

/// Refuses drive `i` (formatted as `format`) unless it belongs to the reference's
/// deployment and set, in its own position, and no earlier drive carries its id.
fn check_member(
    paths: &[PathBuf],
    found: &[Option<Format>],
    i: usize,
    format: &Format,
    reference: &Format,
) -> Result<()> {
    let path = &paths[i];
    if format.deployment_id != reference.deployment_id {
        return Err(EngineError::Format(format!(
            "drive {} belongs to another deployment ({} != {}); refusing to start",
            path.display(),
            format.deployment_id,
            reference.deployment_id
        )));
    }
    if format.set != reference.set {
        return Err(EngineError::Format(format!(
            "drive {} has a different set layout from its peers; refusing to start",
            path.display()
        )));
    }
    match format.set.iter().position(|id| *id == format.drive_id) {
        Some(pos) if pos == i => {}
        Some(pos) => {
            return Err(EngineError::Format(format!(
                "drive {} is drive #{} of the set but was given in position #{}; \
                 give the drives in their original order",
                path.display(),
                pos + 1,
                i + 1
            )))
        }
        None => {
            return Err(EngineError::Format(format!(
                "drive {} has an id that is not in its own set; refusing to start",
                path.display()
            )))
        }
    }
    if let Some(j) = (0..i).find(|&j| found[j].as_ref().map(|f| &f.drive_id) == Some(&format.drive_id)) {
        return Err(EngineError::Format(format!(
            "drives {} and {} carry the same drive id (a copied drive?); refusing to start",
            paths[j].display(),
            path.display()
        )));
    }
    Ok(())
}

/// An empty directory in a formatted set is a replacement drive: formats it into its slot
/// (its data is rebuilt on read from parity, and by the healer). Returns the start-up notes
/// about the drives still missing and those formatted.
fn adopt_replacements(paths: &[PathBuf], reference: &Format, online: &mut [bool]) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        if online[i] {
            continue;
        }
        // Empty, or a replacement whose format a crash interrupted (its heal marker is there).
        if holds_no_files(path) || path.join(HEAL_PENDING_FILE).exists() {
            format_replacement(path, reference, i)?;
            online[i] = true;
            notes.push(format!("drive {} was empty: formatted as a replacement", path.display()));
        } else {
            notes.push(format!("drive {} is missing or unreadable: running without it", path.display()));
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_drives(n: usize) -> (PathBuf, Vec<PathBuf>) {
        let root = std::env::temp_dir().join(format!("ferrite-format-{}", random_id()));
        let paths = (0..n).map(|i| root.join(format!("d{i}"))).collect();
        (root, paths)
    }

    #[test]
    fn formats_then_reopens_and_refuses_swaps() {
        let (root, paths) = tmp_drives(4);
        let set = open_drives(&paths, None).unwrap();
        assert_eq!((set.format.data_shards, set.format.parity_shards), (2, 2));
        assert_eq!(set.write_quorum(), 3);
        let again = open_drives(&paths, None).unwrap();
        assert_eq!(again.format.deployment_id, set.format.deployment_id);
        let swapped = vec![paths[1].clone(), paths[0].clone(), paths[2].clone(), paths[3].clone()];
        let err = open_drives(&swapped, None).unwrap_err().to_string();
        assert!(err.contains("original order"), "{err}");
        let dup = vec![paths[0].clone(), paths[0].clone(), paths[2].clone(), paths[3].clone()];
        assert!(open_drives(&dup, None).is_err());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn refuses_foreign_drive_and_formats_replacement() {
        let (root, paths) = tmp_drives(4);
        open_drives(&paths, None).unwrap();
        let (root2, other) = tmp_drives(4);
        open_drives(&other, None).unwrap();
        let mixed = vec![paths[0].clone(), paths[1].clone(), paths[2].clone(), other[3].clone()];
        let err = open_drives(&mixed, None).unwrap_err().to_string();
        assert!(err.contains("another deployment"), "{err}");
        fs::remove_dir_all(&paths[3]).unwrap();
        let set = open_drives(&paths, None).unwrap();
        assert!(set.online.iter().all(|o| *o));
        assert!(set.notes.iter().any(|n| n.contains("replacement")));
        fs::remove_dir_all(root).unwrap();
        fs::remove_dir_all(root2).unwrap();
    }

    #[test]
    fn default_parity_table() {
        let table: Vec<usize> = (1..=9).map(default_parity).collect();
        assert_eq!(table, vec![0, 1, 1, 2, 2, 3, 3, 4, 4]);
    }
}
