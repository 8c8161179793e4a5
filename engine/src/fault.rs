//! Test-only fault layer in the drive I/O path (cargo feature `fault-injection`, which only
//! the test builds enable). Every drive operation in io.rs asks it first; it can fail the
//! operation with an errno (EIO, ENOSPC, ...), delay it (a slow drive), or end the process
//! at the N-th write or sync point (a crash at a precise moment, optionally after writing
//! only half of the buffer: a torn write).
//!
//! Configuration is a text of rules separated by `;`, installed at start-up
//! (`FaultConfig::rules`, which the binary takes from `FERRITE_FAULTS`) and, when
//! `FaultConfig::rules_file` names a file (`FERRITE_FAULTS_FILE`), re-read from that file
//! whenever it changes, so a test can break and heal a drive while the server runs:
//!
//! ```text
//! fail=ENOSPC:write:/d2/      writes to paths containing "/d2/" fail with ENOSPC
//! fail=EIO:read,sync:/d1/     reads and syncs there fail with EIO
//! delay=3600000:read:/d3/     reads there take an hour
//! crash_at=17                 the 17th write or sync point of the process exits it
//! crash_after=5               the 5th point after these rules are installed exits it
//! torn                        ... after writing the first half of that write
//! ```
//!
//! Operation names: open, read, write, sync, remove. A crash exits with status 86 and
//! logs `fault: crash at point N` (an error event) first.
//!
//! The rules are process-wide statics: the I/O layer consults them from every executor and
//! from the blocking pool's threads. They exist only in test builds.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use crate::config::FaultConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    Open,
    Read,
    Write,
    Sync,
    Remove,
}

#[derive(Clone, Debug, PartialEq)]
enum Action {
    Fail(i32),
    Delay(Duration),
}

#[derive(Clone, Debug, PartialEq)]
struct Rule {
    kinds: Vec<IoKind>,
    path_contains: String,
    action: Action,
}

#[derive(Default)]
struct Config {
    rules: Vec<Rule>,
}

static CONFIG: RwLock<Config> = RwLock::new(Config { rules: Vec::new() });
static ACTIVE: AtomicBool = AtomicBool::new(false);
static CRASH_AT: AtomicU64 = AtomicU64::new(0);
static TORN: AtomicBool = AtomicBool::new(false);
static POINTS: AtomicU64 = AtomicU64::new(0);

/// Exit status of a process ended by `crash_at`.
pub const CRASH_EXIT_CODE: i32 = 86;

fn errno_of(name: &str) -> Option<i32> {
    Some(match name {
        "EIO" => libc::EIO,
        "ENOSPC" => libc::ENOSPC,
        "EROFS" => libc::EROFS,
        "EACCES" => libc::EACCES,
        _ => return None,
    })
}

fn kind_of(name: &str) -> Option<IoKind> {
    Some(match name {
        "open" => IoKind::Open,
        "read" => IoKind::Read,
        "write" => IoKind::Write,
        "sync" => IoKind::Sync,
        "remove" => IoKind::Remove,
        _ => return None,
    })
}

/// Parses a rule text (see the module comment). Returns the rules, crash point, whether it
/// counts from now (`crash_after`) and the torn flag.
fn parse(text: &str) -> Result<(Vec<Rule>, u64, bool, bool), String> {
    let mut rules = Vec::new();
    let mut crash_at = 0;
    let mut from_now = false;
    let mut torn = false;
    for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, value) = item.split_once('=').unwrap_or((item, ""));
        match name {
            "torn" => torn = true,
            "crash_at" | "crash_after" => {
                crash_at = value.parse().map_err(|_| format!("bad {name} in {item:?}"))?;
                from_now = name == "crash_after";
            }
            "fail" | "delay" => {
                let mut fields = value.splitn(3, ':');
                let (Some(what), Some(kinds), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
                    return Err(format!("{item:?}: expected {name}=WHAT:KINDS:PATH"));
                };
                let kinds = kinds
                    .split(',')
                    .map(|k| kind_of(k).ok_or(format!("unknown operation {k:?}")))
                    .collect::<Result<Vec<_>, String>>()?;
                let action = if name == "fail" {
                    Action::Fail(errno_of(what).ok_or(format!("unknown errno {what:?}"))?)
                } else {
                    Action::Delay(Duration::from_millis(what.parse().map_err(|_| format!("bad delay {what:?}"))?))
                };
                rules.push(Rule { kinds, path_contains: path.to_owned(), action });
            }
            _ => return Err(format!("unknown fault {item:?}")),
        }
    }
    Ok((rules, crash_at, from_now, torn))
}

fn install_rules(rules: Vec<Rule>) {
    let any = !rules.is_empty();
    match CONFIG.write() {
        Ok(mut config) => config.rules = rules,
        Err(poisoned) => poisoned.into_inner().rules = rules,
    }
    ACTIVE.store(any || CRASH_AT.load(Ordering::Relaxed) > 0, Ordering::Relaxed);
}

/// Installs faults from a rule text (replacing the current rules; the crash point is kept
/// unless the text sets one).
pub fn install(text: &str) -> Result<(), String> {
    let (rules, crash_at, from_now, torn) = parse(text)?;
    if from_now {
        POINTS.store(0, Ordering::Relaxed);
    }
    if crash_at > 0 {
        CRASH_AT.store(crash_at, Ordering::Relaxed);
        TORN.store(torn, Ordering::Relaxed);
    }
    install_rules(rules);
    Ok(())
}

/// Installs the configured rules and starts watching the rules file, if any (once per
/// process: `Engine::open` calls it). Logs what it installed.
pub fn init(config: &FaultConfig) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| init_once(config));
}

fn init_once(config: &FaultConfig) {
    if let Some(text) = &config.rules {
        match install(text) {
            Ok(()) => tracing::info!(rules = %text, "fault injection"),
            Err(err) => tracing::warn!(error = %err, "fault injection: ignoring the configured rules"),
        }
    }
    if let Some(file) = config.rules_file.clone() {
        std::thread::spawn(move || watch(&file));
    }
}

fn watch(file: &Path) {
    let mut last = None;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if last.as_ref() != Some(&text) {
            match install(&text) {
                Ok(()) => tracing::info!(rules = %text.trim(), "fault injection now"),
                Err(err) => tracing::warn!(file = %file.display(), error = %err, "fault injection: ignoring the file"),
            }
            last = Some(text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the I/O layer must do before an operation.
pub enum Verdict {
    Go,
    Fail(io::Error),
    Delay(Duration),
    /// Write this many bytes of the buffer, then end the process.
    TearAndCrash(usize),
}

/// Asks the fault layer about one operation on `path` (`len`: bytes a write carries).
pub fn check(path: &Path, kind: IoKind, len: usize) -> Verdict {
    if !ACTIVE.load(Ordering::Relaxed) {
        return Verdict::Go;
    }
    let crash_at = CRASH_AT.load(Ordering::Relaxed);
    if crash_at > 0 && matches!(kind, IoKind::Write | IoKind::Sync | IoKind::Remove) {
        let point = POINTS.fetch_add(1, Ordering::Relaxed) + 1;
        if point == crash_at {
            if kind == IoKind::Write && TORN.load(Ordering::Relaxed) && len > 1 {
                return Verdict::TearAndCrash(len / 2);
            }
            crash();
        }
    }
    let config = match CONFIG.read() {
        Ok(config) => config,
        Err(poisoned) => poisoned.into_inner(),
    };
    let path = path.to_string_lossy();
    for rule in &config.rules {
        if rule.kinds.contains(&kind) && path.contains(&rule.path_contains) {
            return match rule.action {
                Action::Fail(errno) => Verdict::Fail(io::Error::from_raw_os_error(errno)),
                Action::Delay(d) => Verdict::Delay(d),
            };
        }
    }
    Verdict::Go
}

/// Whether a delay rule still applies to this operation (a rule lifted ends the delay).
pub fn delayed(path: &Path, kind: IoKind) -> bool {
    let config = match CONFIG.read() {
        Ok(config) => config,
        Err(poisoned) => poisoned.into_inner(),
    };
    let path = path.to_string_lossy();
    config
        .rules
        .iter()
        .any(|r| matches!(r.action, Action::Delay(_)) && r.kinds.contains(&kind) && path.contains(&r.path_contains))
}

/// Ends the process at once: no destructor runs and nothing is synced, as with `kill -9`
/// (what the process wrote before stays in the page cache, as it would).
pub fn crash() -> ! {
    tracing::error!(point = POINTS.load(Ordering::Relaxed), "fault: crash at point");
    std::process::exit(CRASH_EXIT_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_reject_nonsense() {
        let (rules, crash_at, from_now, torn) =
            parse("fail=ENOSPC:write,sync:/d2/; delay=50:read:/d3/;crash_at=9;torn").unwrap();
        assert_eq!((rules.len(), crash_at, from_now, torn), (2, 9, false, true));
        let (_, crash_after, from_now, _) = parse("crash_after=3").unwrap();
        assert_eq!((crash_after, from_now), (3, true));
        assert_eq!(rules[0].kinds, vec![IoKind::Write, IoKind::Sync]);
        assert_eq!(rules[0].action, Action::Fail(libc::ENOSPC));
        assert_eq!(rules[1].action, Action::Delay(Duration::from_millis(50)));
        assert!(parse("fail=EWHAT:write:/x").is_err());
        assert!(parse("fail=EIO:scribble:/x").is_err());
        assert!(parse("delay=soon:read:/x").is_err());
        assert!(parse("explode").is_err());
        assert_eq!(parse("").unwrap().0, vec![]);
    }
}
