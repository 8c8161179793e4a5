//! Healing: the background scanner, requested heals, and the drive monitor.
//!
//! Each core heals what it owns: the copies of its metadata log on every drive, the shards
//! of every object and multipart part in its partitions, and the leftovers of interrupted
//! writes in its partition directories. One pass walks all of that at a bounded rate:
//! - **scan** passes run in the background every `scan_interval`, at `scan_rate`;
//! - **heal** passes run when asked (`ferrite admin heal`, or a drive formatted as a
//!   replacement while serving), at `heal_rate` (0: as fast as the drives go).
//!
//! A heal request interrupts a running scan. Progress is kept in `HealState` (atomics, read
//! by the admin endpoint from any core).
//!
//! The drive monitor is a thread that checks every drive's format file: a drive whose
//! format vanished (wiped or replaced) is formatted into its slot, its cores reopen their
//! logs, and a heal starts.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::core::ObjectKey;
use crate::engine::{now_ms, Engine};
use crate::meta::{ObjectMeta, PartLoc};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    Scan,
    Heal,
}

/// Counters of one kind of pass. For heals they describe the current (or last) heal; for
/// scans they accumulate over every scan since start-up.
#[derive(Default)]
pub struct PassStats {
    pub started_ms: AtomicI64,
    pub finished_ms: AtomicI64,
    pub passes: AtomicU64,
    pub objects_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub objects_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub shards_repaired: AtomicU64,
    pub records_repaired: AtomicU64,
    pub blocks_lost: AtomicU64,
    pub leftovers_removed: AtomicU64,
    /// Cores that finished the current pass.
    pub cores_done: AtomicUsize,
    lost_keys: Mutex<Vec<String>>,
    repaired_keys: Mutex<Vec<String>>,
}

/// At most this many keys are listed in the status, per list.
const KEYS_SHOWN: usize = 20;

impl PassStats {
    fn reset(&self) {
        for counter in [
            &self.objects_total,
            &self.bytes_total,
            &self.objects_done,
            &self.bytes_done,
            &self.shards_repaired,
            &self.records_repaired,
            &self.blocks_lost,
            &self.leftovers_removed,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.cores_done.store(0, Ordering::Relaxed);
        self.finished_ms.store(0, Ordering::Relaxed);
        self.started_ms.store(now_ms(), Ordering::Relaxed);
        locked(&self.lost_keys).clear();
        locked(&self.repaired_keys).clear();
    }

    /// Adds "bucket/key" to one of the key lists (the first `KEYS_SHOWN` only).
    fn note_key(&self, list: &Mutex<Vec<String>>, key: &ObjectKey) {
        let mut list = locked(list);
        let name = format!("{}/{}", key.0, key.1);
        if list.len() < KEYS_SHOWN && !list.contains(&name) {
            list.push(name);
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub struct HealState {
    pub config: HealConfig,
    cores: usize,
    /// Bumped by every heal request; each core runs one heal pass per bump it sees.
    requests: AtomicU64,
    heal_rate: AtomicU64,
    reason: Mutex<String>,
    pub heal: PassStats,
    pub scan: PassStats,
}

impl HealState {
    pub fn new(cores: usize, config: HealConfig) -> HealState {
        HealState {
            heal_rate: AtomicU64::new(config.heal_rate),
            config,
            cores,
            requests: AtomicU64::new(0),
            reason: Mutex::new(String::new()),
            heal: PassStats::default(),
            scan: PassStats::default(),
        }
    }

    /// Starts a heal on every core (restarting one that is running); `rate` in bytes per
    /// second per core replaces the configured heal rate (0: unlimited).
    pub fn request(&self, reason: &str, rate: Option<u64>) {
        if let Some(rate) = rate {
            self.heal_rate.store(rate, Ordering::Relaxed);
        }
        match self.reason.lock() {
            Ok(mut r) => *r = reason.to_owned(),
            Err(poisoned) => *poisoned.into_inner() = reason.to_owned(),
        }
        self.heal.reset();
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn rate(&self, kind: PassKind) -> u64 {
        match kind {
            PassKind::Scan => self.config.scan_rate,
            PassKind::Heal => self.heal_rate.load(Ordering::Relaxed),
        }
    }

    fn stats(&self, kind: PassKind) -> &PassStats {
        match kind {
            PassKind::Scan => &self.scan,
            PassKind::Heal => &self.heal,
        }
    }

    pub fn heal_running(&self) -> bool {
        self.requests() > 0 && self.heal.cores_done.load(Ordering::Relaxed) < self.cores
    }

    /// The status as JSON, for the admin endpoint and `ferrite admin heal`.
    pub fn status_json(&self, engine: &Engine) -> String {
        let reason = match self.reason.lock() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let mut out = String::from("{");
        let state = if self.requests() == 0 {
            "never-run"
        } else if self.heal_running() {
            "running"
        } else {
            "done"
        };
        let _ = write!(out, "\"heal\":{{\"state\":\"{state}\",\"reason\":\"{}\",", json_escape(&reason));
        let rate = self.heal_rate.load(Ordering::Relaxed);
        let _ = write!(out, "\"rate_bytes_per_sec_per_core\":{rate},");
        pass_json(&mut out, &self.heal, true);
        out.push_str("},\"scanner\":{");
        let _ = write!(
            out,
            "\"interval_secs\":{},\"rate_bytes_per_sec_per_core\":{},",
            self.config.scan_interval.as_secs(),
            self.config.scan_rate
        );
        pass_json(&mut out, &self.scan, false);
        out.push_str("},\"drives\":[");
        for (i, path) in engine.drive_paths().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"path\":\"{}\",\"online\":{},\"pending_ops\":{}}}",
                json_escape(&path.display().to_string()),
                engine.drive_online(i),
                engine.drive_inflight(i)
            );
        }
        out.push_str("]}");
        out
    }
}

fn pass_json(out: &mut String, s: &PassStats, with_eta: bool) {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let started = s.started_ms.load(Ordering::Relaxed);
    let finished = s.finished_ms.load(Ordering::Relaxed);
    let _ = write!(
        out,
        "\"started_ms\":{started},\"finished_ms\":{finished},\"passes\":{},\"objects_total\":{},\"objects_done\":{},\
         \"bytes_total\":{},\"bytes_done\":{},\"shards_repaired\":{},\"log_records_repaired\":{},\
         \"blocks_unrecoverable\":{},\"leftovers_removed\":{}",
        get(&s.passes),
        get(&s.objects_total),
        get(&s.objects_done),
        get(&s.bytes_total),
        get(&s.bytes_done),
        get(&s.shards_repaired),
        get(&s.records_repaired),
        get(&s.blocks_lost),
        get(&s.leftovers_removed),
    );
    if with_eta {
        // Remaining bytes at the speed so far; null until something was read.
        let elapsed = (now_ms() - started).max(1) as f64 / 1000.0;
        let done = get(&s.bytes_done) as f64;
        let left = get(&s.bytes_total).saturating_sub(get(&s.bytes_done)) as f64;
        if finished > 0 {
            out.push_str(",\"eta_secs\":0");
        } else if done > 0.0 {
            let _ = write!(out, ",\"eta_secs\":{:.1}", left / (done / elapsed));
        } else {
            out.push_str(",\"eta_secs\":null");
        }
    }
    for (name, list) in [("repaired_keys", &s.repaired_keys), ("unrecoverable_keys", &s.lost_keys)] {
        let _ = write!(out, ",\"{name}\":[");
        for (i, key) in locked(list).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\"", json_escape(key));
        }
        out.push(']');
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// What a pass needs from its core's index (implemented by core.rs over the core's state).
pub(crate) trait IndexView {
    /// Up to `limit` objects after `after`, in key order.
    fn objects_after(&self, after: Option<&ObjectKey>, limit: usize) -> Vec<(ObjectKey, ObjectMeta)>;
    /// The parts of uploads in progress, with the object key they belong to.
    fn upload_parts(&self) -> Vec<(ObjectKey, PartLoc)>;
    fn object(&self, key: &ObjectKey) -> Option<ObjectMeta>;
    /// Objects and their bytes.
    fn totals(&self) -> (u64, u64);
    /// The log offset below which every record is settled (no failed batch is pending).
    fn settled_wal_end(&self) -> u64;
    /// True from a batch that missed the write quorum until a batch carrying its void is
    /// acknowledged (a void being written still counts as pending).
    fn void_pending(&self) -> bool;
    /// Asks the commit loop to write the pending void now.
    fn retry_void(&self);
    fn referenced_files(&self) -> HashSet<u128>;
}

/// How long a pass waits for a failed log batch to be voided before it goes on without.
const SETTLE_WAIT: Duration = Duration::from_secs(3);

/// Keeps a pass at its rate: after each unit of work, sleeps until the bytes read so far
/// fit the budget. Reads the rate anew each time, so a changed heal rate applies at once.
pub(crate) struct Pacer {
    start: Instant,
    bytes: u64,
}

impl Pacer {
    pub(crate) async fn account(&mut self, engine: &Engine, kind: PassKind, bytes: u64) {
        self.bytes += bytes;
        let rate = engine.heal().rate(kind);
        if rate == 0 {
            // Unlimited: still let the core serve requests between blocks.
            monoio::time::sleep(Duration::ZERO).await;
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            monoio::time::sleep(due - elapsed).await;
        }
    }
}

/// The per-core loop: background scans on their interval, heals when requested.
pub(crate) async fn run_core(engine: Engine, core: usize, view: Rc<dyn IndexView>) {
    let state = engine.heal();
    let interval = state.config.scan_interval;
    let mut seen = 0;
    let mut next_scan = Instant::now() + interval;
    let mut leftovers: HashMap<u16, HashSet<u128>> = HashMap::new();
    loop {
        let requests = state.requests();
        let kind = if requests != seen {
            seen = requests;
            PassKind::Heal
        } else if Instant::now() >= next_scan {
            PassKind::Scan
        } else {
            monoio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let interrupted = run_pass(&engine, core, view.as_ref(), kind, seen, &mut leftovers).await;
        if kind == PassKind::Scan {
            next_scan = Instant::now() + interval;
        }
        if !interrupted {
            let stats = state.stats(kind);
            if stats.cores_done.fetch_add(1, Ordering::Relaxed) + 1 == engine.cores() {
                stats.finished_ms.store(now_ms(), Ordering::Relaxed);
                PassStats::add(&stats.passes, 1);
                if kind == PassKind::Heal {
                    // Every core finished: replaced drives are whole again.
                    for path in engine.online_paths() {
                        let _ = std::fs::remove_file(path.join(crate::format::HEAL_PENDING_FILE));
                    }
                }
            }
        }
    }
}

/// One pass over this core's share. Returns true when a newer heal request cut it short.
async fn run_pass(
    engine: &Engine,
    core: usize,
    view: &dyn IndexView,
    kind: PassKind,
    request: u64,
    leftovers: &mut HashMap<u16, HashSet<u128>>,
) -> bool {
    let state = engine.heal();
    let stats = state.stats(kind);
    if kind == PassKind::Scan && core == 0 {
        stats.reset_for_scan();
    }
    let (objects, bytes) = view.totals();
    PassStats::add(&stats.objects_total, objects);
    PassStats::add(&stats.bytes_total, bytes);
    let cut_short = || state.requests() != request;
    // A batch that missed the write quorum stays on the drives that took it until it is
    // voided (by the next write, or the commit loop's retry). Void it first, so that a heal
    // leaves no copy of a refused write for a restart to bring back. Drives that still fail
    // keep the void from landing: then the pass goes on after SETTLE_WAIT, healing only the
    // settled part, and the commit loop's retry keeps trying.
    if view.void_pending() {
        view.retry_void();
        let deadline = Instant::now() + SETTLE_WAIT;
        while view.void_pending() && Instant::now() < deadline {
            if cut_short() {
                return true;
            }
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The metadata logs first: every object's record must be whole on every drive.
    let mut wals = vec![(core as u16, view.settled_wal_end())];
    if core == 0 {
        // Logs of executors that no longer exist (the core count shrank) are read by all.
        let online = engine.online_paths();
        wals.extend(
            crate::wal::list_wals(&online).into_iter().filter(|w| *w as usize >= engine.cores()).map(|w| (w, u64::MAX)),
        );
    }
    for (wal, end) in wals {
        let paths = engine.drive_paths().to_vec();
        let online: Vec<bool> = (0..paths.len()).map(|d| engine.drive_online(d)).collect();
        let job = move || crate::wal::heal_copies(&paths, &online, wal, end);
        match monoio::spawn_blocking(job).await {
            Ok(Ok(repaired)) => PassStats::add(&stats.records_repaired, repaired),
            Ok(Err(err)) => eprintln!("ferrite: core {core}: healing metadata log {wal} failed: {err}"),
            Err(_) => eprintln!("ferrite: core {core}: healing metadata log {wal} was cancelled"),
        }
    }
    let mut pacer = Pacer { start: Instant::now(), bytes: 0 };
    let mut after: Option<ObjectKey> = None;
    loop {
        let batch = view.objects_after(after.as_ref(), 64);
        let Some((last, _)) = batch.last() else { break };
        after = Some(last.clone());
        for (key, meta) in batch {
            if cut_short() {
                return true;
            }
            if let crate::meta::DataLoc::Parts(parts) = &meta.data {
                let partition = engine.partition_of(&key.0, &key.1);
                let current = || view.object(&key).is_some_and(|m| m.data == meta.data);
                for part in parts {
                    let found = crate::data::heal_part(engine, partition, part, &current, &mut pacer, kind).await;
                    PassStats::add(&stats.shards_repaired, found.repaired);
                    if found.repaired > 0 {
                        stats.note_key(&stats.repaired_keys, &key);
                    }
                    if found.lost_blocks > 0 && current() {
                        PassStats::add(&stats.blocks_lost, found.lost_blocks);
                        stats.note_key(&stats.lost_keys, &key);
                    }
                }
            }
            PassStats::add(&stats.objects_done, 1);
            PassStats::add(&stats.bytes_done, meta.size);
        }
    }
    for (key, part) in view.upload_parts() {
        if cut_short() {
            return true;
        }
        // A part replaced or completed meanwhile is left alone (its files may be going).
        let partition = engine.partition_of(&key.0, &key.1);
        let referenced = || view.referenced_files().contains(&part.file_id);
        let found = crate::data::heal_part(engine, partition, &part, &referenced, &mut pacer, kind).await;
        PassStats::add(&stats.shards_repaired, found.repaired);
        if found.repaired > 0 {
            stats.note_key(&stats.repaired_keys, &key);
        }
    }
    let removed = reclaim_leftovers(engine, core, view, leftovers).await;
    PassStats::add(&stats.leftovers_removed, removed);
    false
}

/// Removes data files of this core's partitions that no object or upload references and
/// that have not been written for `leftover_age`. A file is removed only when it was such
/// a candidate on the previous pass too, so a file is never removed on one look.
async fn reclaim_leftovers(
    engine: &Engine,
    core: usize,
    view: &dyn IndexView,
    candidates: &mut HashMap<u16, HashSet<u128>>,
) -> u64 {
    let age = engine.heal().config.leftover_age;
    let cores = engine.cores();
    let mut removed = 0;
    let referenced = view.referenced_files();
    for partition in (0..engine.partition_count()).filter(|p| *p as usize % cores == core) {
        let before = candidates.remove(&partition).unwrap_or_default();
        let mut now_found = HashSet::new();
        for path in engine.online_paths() {
            let dir = path.join("data").join(crate::format::partition_dir_name(partition));
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Some(id) = entry.file_name().to_str().and_then(|n| u128::from_str_radix(n, 16).ok()) else {
                    continue;
                };
                let idle = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|d| d >= age);
                if !idle || referenced.contains(&id) {
                    continue;
                }
                if before.contains(&id) {
                    if crate::io::remove_file(entry.path()).await.is_ok() {
                        removed += 1;
                    }
                } else {
                    now_found.insert(id);
                }
            }
        }
        if !now_found.is_empty() {
            candidates.insert(partition, now_found);
        }
        monoio::time::sleep(Duration::ZERO).await;
    }
    removed
}

impl PassStats {
    /// Scans accumulate; only the start time and per-pass completion are reset.
    fn reset_for_scan(&self) {
        self.started_ms.store(now_ms(), Ordering::Relaxed);
        self.finished_ms.store(0, Ordering::Relaxed);
        self.cores_done.store(0, Ordering::Relaxed);
    }
}

/// Starts the drive monitor thread (when `drive_check` is not zero), and a heal at once
/// when start-up formatted replacement drives.
pub fn start_drive_monitor(engine: Engine) {
    let pending: Vec<String> = engine
        .online_paths()
        .iter()
        .filter(|p| p.join(crate::format::HEAL_PENDING_FILE).exists())
        .map(|p| p.display().to_string())
        .collect();
    if !pending.is_empty() {
        engine.heal().request(&format!("drive replaced, not yet healed: {}", pending.join(", ")), None);
    }
    let every = engine.heal().config.drive_check;
    if every.is_zero() {
        return;
    }
    let spawned = std::thread::Builder::new().name("ferrite-drives".into()).spawn(move || loop {
        std::thread::sleep(every);
        check_drives(&engine);
    });
    if let Err(err) = spawned {
        eprintln!("ferrite: cannot start the drive monitor: {err}");
    }
}

/// One look at every drive: a drive whose format is gone is formatted as a replacement and
/// healed; a drive that cannot be read, or belongs elsewhere, is taken offline; a drive
/// that comes back is healed too (it missed writes while away).
pub fn check_drives(engine: &Engine) {
    let mut healed = Vec::new();
    for (drive, path) in engine.drive_paths().iter().enumerate() {
        match crate::format::check_drive(path, &engine.drives().format, drive) {
            crate::format::DriveCheck::Ok => {
                if !engine.drive_online(drive) {
                    println!("ferrite: drive {} is back", path.display());
                    if let Err(err) = crate::format::mark_heal_pending(path) {
                        eprintln!("ferrite: drive {}: {err}", path.display());
                    }
                    engine.set_drive_online(drive, true);
                    healed.push(path.clone());
                }
            }
            crate::format::DriveCheck::Missing => {
                // Offline while it is formatted, so no write lands in a half-made drive.
                engine.set_drive_online(drive, false);
                match crate::format::format_replacement(path, &engine.drives().format, drive) {
                    Ok(()) => {
                        println!("ferrite: drive {} lost its format: formatted as a replacement", path.display());
                        engine.set_drive_online(drive, true);
                        healed.push(path.clone());
                    }
                    Err(err) => {
                        eprintln!("ferrite: drive {} lost its format and cannot be formatted: {err}", path.display())
                    }
                }
            }
            crate::format::DriveCheck::Unusable(why) => {
                if engine.drive_online(drive) {
                    eprintln!("ferrite: drive {} is unusable: {why}; running without it", path.display());
                    engine.set_drive_online(drive, false);
                }
            }
        }
    }
    if !healed.is_empty() {
        engine.bump_drive_epoch();
        let names: Vec<String> = healed.iter().map(|p: &PathBuf| p.display().to_string()).collect();
        engine.heal().request(&format!("drive replaced or back: {}", names.join(", ")), None);
    }
}
