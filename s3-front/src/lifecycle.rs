//! Bucket lifecycle: Put/Get/DeleteBucketLifecycleConfiguration, and the background pass
//! that applies the rules (expiration, transition to a remote tier, aborting incomplete
//! multipart uploads), one object at a time and one pass at a time, uploads paced at
//! `FERRITE_LIFECYCLE_MIBPS` (default 64 MiB/s).
//!
//! The configuration is validated as AWS does and stored as sent (bucket configuration
//! `lifecycle`); the pass parses it again. Versioning does not exist yet, so the
//! noncurrent-version actions and ExpiredObjectDeleteMarker are accepted and have nothing to
//! act on.
//!
//! Days count from the object's last modification. AWS moves the due time to the next
//! midnight UTC; so does Ferrite when a day is 86,400 s. `FERRITE_LIFECYCLE_DAY_SECS`
//! shortens the day for tests (then no rounding).
//!
//! Objects stored inline in the metadata log (under 128 KiB) are not transitioned: AWS does
//! not transition objects under 128 KiB by default either.

use std::time::Duration;

use base64::Engine as _;
use ferrite_engine::meta::DataLoc;
use ferrite_engine::{Engine, EngineError, ObjectMeta, ObjectWalk};
use ferrite_tiering::azure::block_id;
use sha2::Digest;

use crate::error::{err, Code, S3Error, S3Result};
use crate::tier::{self, StoredReader};
use crate::xml::Node;

pub const BUCKET_CONFIG: &str = "lifecycle";
const RULES_MAX: usize = 1000;
const DAY_MS: i64 = 86_400_000;
/// Bytes per block put to a tier.
const UPLOAD_BLOCK_BYTES: usize = 4 << 20;
/// Blob metadata of a moved object: the tier that wrote it, its bucket and its key
/// (base64url). The orphan sweep only ever deletes blobs its own tier wrote.
const META_TIER: &str = "ferrite_tier";
const META_BUCKET: &str = "ferrite_bucket";
const META_KEY: &str = "ferrite_key";

#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Days(u32),
    /// Midnight UTC, in ms since the epoch.
    Date(i64),
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub prefix: String,
    pub tags: Vec<(String, String)>,
    pub size_greater_than: Option<u64>,
    pub size_less_than: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    pub filter: Filter,
    pub expiration: Option<When>,
    pub transition: Option<(When, String)>,
    pub abort_incomplete_days: Option<u32>,
}

fn malformed(why: &str) -> S3Error {
    S3Error::new(
        Code::MalformedXML,
        format!("The XML you provided was not well-formed or did not validate against our published schema: {why}"),
    )
}

fn invalid(why: impl Into<String>) -> S3Error {
    S3Error::new(Code::InvalidArgument, why)
}

/// Parses and validates a LifecycleConfiguration document. `tier_exists` says whether a
/// Transition's StorageClass names a configured tier.
pub fn parse(doc: &[u8], tier_exists: &dyn Fn(&str) -> bool) -> S3Result<Vec<Rule>> {
    let root = crate::xml::parse(doc)?;
    if root.name != "LifecycleConfiguration" {
        return Err(malformed("the root must be LifecycleConfiguration"));
    }
    let nodes: Vec<&Node> = root.all("Rule").collect();
    if nodes.is_empty() {
        return Err(malformed("at least one Rule is needed"));
    }
    if nodes.len() > RULES_MAX {
        return Err(malformed("at most 1,000 rules"));
    }
    let mut rules: Vec<Rule> = Vec::new();
    for node in nodes {
        let rule = parse_rule(node, tier_exists)?;
        if !rule.id.is_empty() && rules.iter().any(|r| r.id == rule.id) {
            return Err(invalid("Rule ID must be unique. Found same ID for more than one rule"));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn parse_rule(node: &Node, tier_exists: &dyn Fn(&str) -> bool) -> S3Result<Rule> {
    let id = node.text_of("ID").unwrap_or("").to_owned();
    if id.len() > 255 {
        return Err(invalid("ID length should not exceed allowed limit of 255"));
    }
    let enabled = match node.text_of("Status") {
        Some("Enabled") => true,
        Some("Disabled") => false,
        _ => return Err(malformed("Status must be Enabled or Disabled")),
    };
    let filter = match (node.child("Filter"), node.child("Prefix")) {
        (Some(_), Some(_)) => return Err(malformed("a rule has either Filter or Prefix")),
        (Some(f), None) => parse_filter(f)?,
        (None, Some(p)) => Filter { prefix: p.text.clone(), ..Filter::default() },
        (None, None) => return Err(malformed("a rule needs a Filter")),
    };
    let expiration = match node.child("Expiration") {
        Some(e) => {
            let when = parse_when(e, "Expiration")?;
            let marker = e.child("ExpiredObjectDeleteMarker").is_some();
            if when.is_none() && !marker {
                return Err(malformed("Expiration needs Days, Date or ExpiredObjectDeleteMarker"));
            }
            if when.is_some() && marker {
                return Err(malformed("ExpiredObjectDeleteMarker cannot be combined with Days or Date"));
            }
            when
        }
        None => None,
    };
    let transitions: Vec<&Node> = node.all("Transition").collect();
    if transitions.len() > 1 {
        return Err(invalid("Ferrite supports one Transition per rule (one remote tier)"));
    }
    let transition = match transitions.first() {
        Some(t) => {
            let when = parse_when(t, "Transition")?.ok_or_else(|| malformed("Transition needs Days or Date"))?;
            let class = t.text_of("StorageClass").unwrap_or("");
            if !tier_exists(class) {
                return Err(S3Error::new(
                    Code::InvalidStorageClass,
                    format!("The storage class you specified is not valid: no remote tier is called {class:?}"),
                ));
            }
            Some((when, class.to_owned()))
        }
        None => None,
    };
    if let (Some(When::Days(e)), Some((When::Days(t), _))) = (&expiration, &transition) {
        if e <= t {
            return Err(invalid(
                "'Days' in the Expiration action must be greater than 'Days' in the Transition action",
            ));
        }
    }
    let abort_incomplete_days = match node.child("AbortIncompleteMultipartUpload") {
        Some(a) => Some(positive(a.text_of("DaysAfterInitiation"), "DaysAfterInitiation")?),
        None => None,
    };
    if abort_incomplete_days.is_some() && !filter.tags.is_empty() {
        return Err(invalid("AbortIncompleteMultipartUpload cannot be specified with Tags"));
    }
    let noncurrent =
        node.child("NoncurrentVersionExpiration").is_some() || node.child("NoncurrentVersionTransition").is_some();
    let marker = node.child("Expiration").is_some_and(|e| e.child("ExpiredObjectDeleteMarker").is_some());
    if expiration.is_none() && transition.is_none() && abort_incomplete_days.is_none() && !noncurrent && !marker {
        return Err(invalid("At least one action needs to be specified in a rule"));
    }
    Ok(Rule { id, enabled, filter, expiration, transition, abort_incomplete_days })
}

fn positive(text: Option<&str>, what: &str) -> S3Result<u32> {
    match text.map(str::trim).and_then(|t| t.parse::<u32>().ok()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(invalid(format!("'{what}' must be a positive integer"))),
    }
}

fn parse_when(node: &Node, action: &str) -> S3Result<Option<When>> {
    match (node.text_of("Days"), node.text_of("Date")) {
        (Some(_), Some(_)) => Err(malformed("Days and Date cannot both be given")),
        (Some(days), None) => Ok(Some(When::Days(positive(Some(days), &format!("Days' for {action} action"))?))),
        (None, Some(date)) => Ok(Some(When::Date(midnight(date)?))),
        (None, None) => Ok(None),
    }
}

/// An ISO 8601 date at midnight UTC ("2026-12-01" or "2026-12-01T00:00:00Z" / ".000Z").
fn midnight(date: &str) -> S3Result<i64> {
    let date = date.trim();
    let (day, time) = date.split_once('T').unwrap_or((date, "00:00:00Z"));
    if !matches!(time, "00:00:00Z" | "00:00:00.000Z" | "00:00:00+00:00") {
        return Err(invalid("'Date' must be at midnight GMT"));
    }
    let mut parts = day.split('-').map(|p| p.parse::<i64>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(d)), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("'Date' must be an ISO 8601 date"));
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=month_days[(m - 1) as usize]).contains(&d) {
        return Err(invalid("'Date' must be an ISO 8601 date between 1970 and 9999"));
    }
    Ok(crate::sigv4::days_from_civil(y, m, d) * DAY_MS)
}

fn filter_node(f: &Node, filter: &mut Filter) -> S3Result<()> {
    for child in &f.children {
        match child.name.as_str() {
            "Prefix" => filter.prefix = child.text.clone(),
            "Tag" => filter.tags.push(parse_tag(child)?),
            "ObjectSizeGreaterThan" => filter.size_greater_than = Some(size(child)?),
            "ObjectSizeLessThan" => filter.size_less_than = Some(size(child)?),
            "And" => return Err(malformed("And cannot hold And")),
            other => return Err(malformed(&format!("unknown filter element {other}"))),
        }
    }
    Ok(())
}

fn parse_filter(f: &Node) -> S3Result<Filter> {
    let mut filter = Filter::default();
    match f.children.as_slice() {
        [] => {}
        [and] if and.name == "And" => {
            filter_node(and, &mut filter)?;
            let conditions = filter.tags.len()
                + usize::from(!filter.prefix.is_empty())
                + usize::from(filter.size_greater_than.is_some())
                + usize::from(filter.size_less_than.is_some());
            if conditions < 2 && filter.tags.len() < 2 {
                return Err(malformed("And needs at least two conditions"));
            }
        }
        [_] => filter_node(f, &mut filter)?,
        _ => return Err(malformed("a Filter holds one condition; combine them with And")),
    }
    if let (Some(gt), Some(lt)) = (filter.size_greater_than, filter.size_less_than) {
        if gt >= lt {
            return Err(invalid("ObjectSizeGreaterThan must be less than ObjectSizeLessThan"));
        }
    }
    Ok(filter)
}

fn parse_tag(node: &Node) -> S3Result<(String, String)> {
    match (node.text_of("Key"), node.text_of("Value")) {
        (Some(k), v) if !k.is_empty() => Ok((k.to_owned(), v.unwrap_or("").to_owned())),
        _ => Err(malformed("a Tag needs a Key")),
    }
}

fn size(node: &Node) -> S3Result<u64> {
    node.text.trim().parse().map_err(|_| invalid(format!("{} must be a whole number of bytes", node.name)))
}

/// Whether a stored configuration names `tier` in a Transition.
pub fn names_tier(doc: &str, tier: &str) -> bool {
    parse(doc.as_bytes(), &|_| true)
        .is_ok_and(|rules| rules.iter().any(|r| r.transition.as_ref().is_some_and(|(_, class)| class == tier)))
}

// ----- evaluation -----

impl Filter {
    fn matches(&self, key: &str, size: u64, tags: &[(String, String)]) -> bool {
        key.starts_with(&self.prefix)
            && self.tags.iter().all(|t| tags.contains(t))
            && self.size_greater_than.is_none_or(|gt| size > gt)
            && self.size_less_than.is_none_or(|lt| size < lt)
    }
}

/// When `when` falls due for an object modified at `mtime_ms`.
pub fn due_ms(when: &When, mtime_ms: i64, day_ms: i64) -> i64 {
    match when {
        When::Date(ms) => *ms,
        When::Days(days) => {
            let due = mtime_ms + i64::from(*days) * day_ms;
            if day_ms == DAY_MS {
                due.div_euclid(DAY_MS) * DAY_MS + if due.rem_euclid(DAY_MS) == 0 { 0 } else { DAY_MS }
            } else {
                due
            }
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Action {
    Expire,
    Transition(String),
}

/// What the rules say about one object now (expiration wins over transition).
pub fn action_for(rules: &[Rule], key: &str, meta: &ObjectMeta, now_ms: i64, day_ms: i64) -> Option<Action> {
    let live = rules.iter().filter(|r| r.enabled && r.filter.matches(key, meta.size, &meta.tags));
    let mut transition = None;
    for rule in live {
        if let Some(when) = &rule.expiration {
            if due_ms(when, meta.mtime_ms, day_ms) <= now_ms {
                return Some(Action::Expire);
            }
        }
        if let Some((when, class)) = &rule.transition {
            if due_ms(when, meta.mtime_ms, day_ms) <= now_ms {
                transition = Some(Action::Transition(class.clone()));
            }
        }
    }
    transition
}

// ----- the background pass -----

/// What lifecycle passes did since start-up (shown by the admin API and in metrics).
#[derive(Default)]
pub struct Counters {
    pub transitioned: std::sync::atomic::AtomicU64,
    pub transitioned_bytes: std::sync::atomic::AtomicU64,
    pub transition_failed: std::sync::atomic::AtomicU64,
    pub expired: std::sync::atomic::AtomicU64,
    pub uploads_aborted: std::sync::atomic::AtomicU64,
    pub restores_expired: std::sync::atomic::AtomicU64,
    pub restored: std::sync::atomic::AtomicU64,
    pub restores_failed: std::sync::atomic::AtomicU64,
    pub orphans_removed: std::sync::atomic::AtomicU64,
    /// A gauge: transitions the last pass found due but could not make (failed, or their
    /// tier was unreachable).
    pub transitions_pending: std::sync::atomic::AtomicU64,
}

pub static COUNTERS: std::sync::LazyLock<Counters> = std::sync::LazyLock::new(Counters::default);

pub fn counters_json() -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &*COUNTERS;
    format!(
        "{{\"transitioned\":{},\"transitioned_bytes\":{},\"transition_failed\":{},\"transitions_pending\":{},\"expired\":{},\"uploads_aborted\":{},\"restored\":{},\"restores_failed\":{},\"restores_running\":{},\"restores_expired\":{},\"orphans_removed\":{}}}",
        c.transitioned.load(Relaxed),
        c.transitioned_bytes.load(Relaxed),
        c.transition_failed.load(Relaxed),
        c.transitions_pending.load(Relaxed),
        c.expired.load(Relaxed),
        c.uploads_aborted.load(Relaxed),
        c.restored.load(Relaxed),
        c.restores_failed.load(Relaxed),
        tier::restores_running(),
        c.restores_expired.load(Relaxed),
        c.orphans_removed.load(Relaxed)
    )
}

/// Bytes per second transitions may upload: `FERRITE_LIFECYCLE_MIBPS` (default 64; 0 for
/// no limit). Transitions run one at a time, so this bounds the process.
fn upload_rate() -> Option<u64> {
    let mib = std::env::var("FERRITE_LIFECYCLE_MIBPS").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(64);
    (mib > 0).then_some(mib << 20)
}

/// The length of a lifecycle day: 86,400 s, or `FERRITE_LIFECYCLE_DAY_SECS` (tests).
pub fn day_ms() -> i64 {
    std::env::var("FERRITE_LIFECYCLE_DAY_SECS")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|s| *s > 0)
        .map_or(DAY_MS, |s| s * 1000)
}

/// Resumes the restores a crash cut short, then runs lifecycle passes forever, one every
/// `interval` (on one executor).
pub async fn run(engine: Engine, interval: Duration, day_ms: i64) {
    resume_restores(&engine).await;
    if interval.is_zero() {
        return;
    }
    loop {
        monoio::time::sleep(interval).await;
        pass(&engine, day_ms).await;
    }
}

/// The walk's next object; an error ends the walk, logged (the next pass walks again).
async fn next_object(walk: &mut ObjectWalk, bucket: &str) -> Option<(String, Option<String>)> {
    match walk.next().await {
        Ok(next) => next.map(|object| (object.key, object.reported_header)),
        Err(EngineError::NoSuchBucket) => None,
        Err(e) => {
            eprintln!("ferrite: lifecycle: the walk over bucket {bucket} stopped: {e}");
            None
        }
    }
}

/// Starts every pending restore again. Listings name each object's storage class, so only
/// objects in a tier are read.
pub async fn resume_restores(engine: &Engine) {
    for (bucket, _) in engine.list_buckets() {
        let mut walk = engine.walk(&bucket, Some(crate::tier::H_TIER));
        while let Some((key, class)) = next_object(&mut walk, &bucket).await {
            if class.is_none() {
                continue;
            }
            if let Ok(meta) = engine.head_object(&bucket, &key).await {
                tier::resume_restore(engine, &bucket, &key, meta);
            }
        }
    }
}

/// One pass over every bucket: its lifecycle rules, and restored copies whose time is up
/// (those exist in buckets without rules too, so every bucket is listed).
pub async fn pass(engine: &Engine, day_ms: i64) {
    use std::sync::atomic::Ordering::{AcqRel, Relaxed, Release};
    // One pass at a time in the process (the timer's and the admin API's): two would move
    // the same objects at once. A second caller waits for the first to finish.
    static RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    while RUNNING.swap(true, AcqRel) {
        monoio::time::sleep(Duration::from_millis(100)).await;
    }
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            RUNNING.store(false, Release);
        }
    }
    let _done = Done;
    // Tiers that could not be reached in this pass are not tried again until the next one.
    let mut unreachable: Vec<String> = Vec::new();
    let mut pending = 0u64;
    for (bucket, _) in engine.list_buckets() {
        let doc = engine.bucket_config(&bucket, BUCKET_CONFIG).ok().flatten();
        let rules = doc.and_then(|d| parse(d.as_bytes(), &|_| true).ok()).unwrap_or_default();
        let now = ferrite_engine::now_ms();
        let mut walk = engine.walk(&bucket, Some(crate::tier::H_TIER));
        while let Some((key, _)) = next_object(&mut walk, &bucket).await {
            let Ok(meta) = engine.head_object(&bucket, &key).await else { continue };
            if tier::restore_pending(&meta).is_some() {
                tier::resume_restore(engine, &bucket, &key, meta.clone());
            }
            if tier::restored_until(&meta).is_some_and(|until| until <= now) {
                match tier::expire_restored(engine, &bucket, &key, &meta).await {
                    Ok(()) => COUNTERS.restores_expired.fetch_add(1, Relaxed),
                    Err(_) => 0,
                };
                continue;
            }
            match action_for(&rules, &key, &meta, now, day_ms) {
                Some(Action::Expire) if tier::delete_object(engine, &bucket, &key).await.is_ok() => {
                    COUNTERS.expired.fetch_add(1, Relaxed);
                }
                Some(Action::Expire) => {}
                Some(Action::Transition(tier_name)) if !unreachable.contains(&tier_name) => {
                    match transition(engine, &bucket, &key, &meta, &tier_name).await {
                        Ok(true) => {
                            COUNTERS.transitioned.fetch_add(1, Relaxed);
                            COUNTERS.transitioned_bytes.fetch_add(meta.size, Relaxed);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            pending += 1;
                            COUNTERS.transition_failed.fetch_add(1, Relaxed);
                            eprintln!("ferrite: lifecycle: {bucket}/{key} to {tier_name}: {}", e.message);
                            if e.code == Code::ServiceUnavailable {
                                unreachable.push(tier_name);
                            }
                        }
                    }
                }
                Some(Action::Transition(_)) if tier::remote_of(&meta).is_none() => pending += 1,
                Some(Action::Transition(_)) => {}
                None => {}
            }
        }
        abort_incomplete(engine, &bucket, &rules, now, day_ms).await;
    }
    COUNTERS.transitions_pending.store(pending, Relaxed);
    sweep_orphans(engine).await;
}

/// Deletes blobs in each tier that no object refers to any more (the object was deleted or
/// overwritten while in the tier, or a transition was abandoned after its upload). Only
/// blobs whose metadata says this tier wrote them are considered (a container added with
/// force holds others' data; another tier may share the container); a blob that is the
/// pending transition of its object's current version is kept.
pub async fn sweep_orphans(engine: &Engine) {
    use std::sync::atomic::Ordering::Relaxed;
    for (item, _) in engine.cluster_configs("tier/") {
        let name = &item["tier/".len()..];
        let Ok(Some(tier)) = tier::get(engine, name) else { continue };
        let Ok(container) = tier.container() else { continue };
        let mut marker = String::new();
        loop {
            let (c, p, m) = (container.clone(), tier.prefix.clone(), marker.clone());
            let Ok(Ok((blobs, next))) = tier::blocking(move || c.list_page(&p, &m, 1000)).await else { break };
            for blob in blobs {
                let (c, b) = (container.clone(), blob.clone());
                let Ok(Ok(props)) = tier::blocking(move || c.properties(&b)).await else { continue };
                let meta = |n: &str| props.metadata.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
                if meta(META_TIER) != Some(name) {
                    continue;
                }
                let (Some(bucket), Some(key)) = (meta(META_BUCKET), meta(META_KEY)) else { continue };
                let Some(key) = B64URL.decode(key).ok().and_then(|k| String::from_utf8(k).ok()) else { continue };
                if referenced(engine, &tier.prefix, &blob, bucket, &key).await {
                    continue;
                }
                let remote = tier::Remote { tier: name.to_owned(), blob, parts: Vec::new() };
                tier::delete_remote(engine, remote).await;
                COUNTERS.orphans_removed.fetch_add(1, Relaxed);
            }
            match next {
                Some(next) => marker = next,
                None => break,
            }
        }
    }
}

/// Whether `blob` belongs to the current version of `bucket`/`key`, in the tier or about to
/// be (its pending transition).
async fn referenced(engine: &Engine, prefix: &str, blob: &str, bucket: &str, key: &str) -> bool {
    match engine.head_object(bucket, key).await {
        Ok(meta) => match tier::remote_of(&meta) {
            Some(remote) => remote.blob == blob,
            None => blob_name(prefix, bucket, key, &meta) == blob,
        },
        Err(EngineError::NoSuchKey) | Err(EngineError::NoSuchBucket) => false,
        Err(_) => true,
    }
}

async fn abort_incomplete(engine: &Engine, bucket: &str, rules: &[Rule], now: i64, day_ms: i64) {
    use std::sync::atomic::Ordering::Relaxed;
    let rules: Vec<&Rule> = rules.iter().filter(|r| r.enabled && r.abort_incomplete_days.is_some()).collect();
    if rules.is_empty() {
        return;
    }
    let Ok(uploads) = engine.list_uploads(bucket, "", "", "", 10_000).await else { return };
    for upload in uploads {
        let due = rules.iter().any(|r| {
            let days = i64::from(r.abort_incomplete_days.unwrap_or(u32::MAX));
            upload.key.starts_with(&r.filter.prefix) && upload.initiated_ms + days * day_ms <= now
        });
        if due && engine.abort_upload(bucket, &upload.key, &upload.upload_id).await.is_ok() {
            COUNTERS.uploads_aborted.fetch_add(1, Relaxed);
        }
    }
}

/// The blob an object version goes to: the tier's prefix, the bucket, a hash of the key and
/// a hash of the version's modification time and ETag. Deterministic, so a retried
/// transition resumes into the same blob; no character of the key reaches the name (Azure
/// rewrites "." and ".." segments, backslashes and trailing dots; keys could escape the
/// prefix). The key itself is kept in the blob's metadata.
pub fn blob_name(prefix: &str, bucket: &str, key: &str, meta: &ObjectMeta) -> String {
    let key_hash = sha2::Sha256::digest(key.as_bytes());
    let version = sha2::Sha256::digest(format!("{}\n{}", meta.mtime_ms, meta.etag));
    format!("{prefix}{bucket}/{}/{}", crate::sigv4::hex(&key_hash[..16]), crate::sigv4::hex(&version[..8]))
}

/// base64url without padding, for keys in blob metadata (values must be plain ASCII).
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Moves one object's stored bytes to `tier_name`: upload (resuming blocks the tier holds
/// already), commit, then swap the local data for the remote location if the object is
/// unchanged. Ok(false): nothing to do (inline, already moved) or the
/// object changed meanwhile (the blob is deleted again).
pub async fn transition(
    engine: &Engine,
    bucket: &str,
    key: &str,
    meta: &ObjectMeta,
    tier_name: &str,
) -> S3Result<bool> {
    let parts = match &meta.data {
        DataLoc::Parts(parts) if !parts.is_empty() && tier::remote_of(meta).is_none() => parts.clone(),
        _ => return Ok(false),
    };
    let Some(tier) = tier::get(engine, tier_name)? else {
        return err(Code::InvalidStorageClass, format!("no remote tier is called {tier_name}"));
    };
    let container = tier.container().map_err(|e| S3Error::new(Code::InternalError, e))?;
    let blob = blob_name(&tier.prefix, bucket, key, meta);
    let stored: u64 = parts.iter().map(|p| p.size).sum();
    let held = {
        let (c, b) = (container.clone(), blob.clone());
        tier::blocking(move || c.uncommitted_blocks(&b)).await?.map_err(blob_failed)?
    };
    let mut reader = StoredReader::open(engine, bucket, key, meta, 0, stored);
    let mut ids = Vec::new();
    let mut block = Vec::with_capacity(UPLOAD_BLOCK_BYTES);
    let mut done = false;
    let (started, rate, mut sent) = (std::time::Instant::now(), upload_rate(), 0u64);
    while !done {
        match reader.next_chunk().await? {
            Some(chunk) => block.extend_from_slice(&chunk),
            None => done = true,
        }
        while block.len() >= UPLOAD_BLOCK_BYTES || (done && !block.is_empty()) {
            let rest = if block.len() > UPLOAD_BLOCK_BYTES { block.split_off(UPLOAD_BLOCK_BYTES) } else { Vec::new() };
            let id = block_id(ids.len() as u64);
            let already = held.iter().any(|(h, size)| *h == id && *size == block.len() as u64);
            if !already {
                // Paced: the upload never runs ahead of `rate` bytes per second.
                if let Some(rate) = rate {
                    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        monoio::time::sleep(wait).await;
                    }
                }
                sent += block.len() as u64;
                let (c, b, i, data) =
                    (container.clone(), blob.clone(), id.clone(), std::mem::replace(&mut block, rest));
                tier::blocking(move || c.put_block(&b, &i, data)).await?.map_err(blob_failed)?;
            } else {
                block = rest;
            }
            ids.push(id);
        }
    }
    let access_tier = tier.access_tier.clone();
    let etag = {
        let (c, b, ids) = (container.clone(), blob.clone(), ids);
        let (tier_name, bucket, key) = (tier_name.to_owned(), bucket.to_owned(), B64URL.encode(key));
        let job = move || {
            let mark = [(META_TIER, tier_name.as_str()), (META_BUCKET, bucket.as_str()), (META_KEY, key.as_str())];
            c.commit_blocks(&b, &ids, &access_tier, &mark)
        };
        tier::blocking(job).await?.map_err(blob_failed)?
    };
    // `tier rm` refuses a tier that objects live in, but not one a transition is still
    // uploading to: check again just before the swap, and stay local if it went.
    if tier::get(engine, tier_name)?.is_none() {
        let _ = tier::blocking(move || container.delete(&blob)).await;
        return Ok(false);
    }
    let headers = tier::transitioned_headers(meta, tier_name, &blob, &etag);
    match engine.drop_data(bucket, key, meta, headers).await {
        Ok(()) => Ok(true),
        Err(EngineError::PreconditionFailed) | Err(EngineError::NoSuchKey) => {
            // Changed since it was read: the copy is not needed, unless the object refers to
            // this very blob now (another pass moved the same version first).
            if !referenced(engine, &tier.prefix, &blob, bucket, key).await {
                let remote = tier::Remote { tier: tier_name.to_owned(), blob, parts: Vec::new() };
                tier::delete_remote(engine, remote).await;
            }
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn blob_failed(e: ferrite_tiering::azure::BlobError) -> S3Error {
    let code = match e {
        ferrite_tiering::azure::BlobError::Unavailable(_) => Code::ServiceUnavailable,
        _ => Code::InternalError,
    };
    S3Error::new(code, format!("remote tier: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(xml: &str) -> S3Result<Vec<Rule>> {
        parse(xml.as_bytes(), &|t| t == "COLD")
    }

    fn doc(rule: &str) -> String {
        format!("<LifecycleConfiguration><Rule>{rule}</Rule></LifecycleConfiguration>")
    }

    #[test]
    fn valid_rules_parse_and_bad_ones_get_aws_errors() {
        let r = rules(&doc(
            "<ID>a</ID><Status>Enabled</Status><Filter><And><Prefix>logs/</Prefix><Tag><Key>t</Key><Value>v</Value></Tag></And></Filter>\
             <Transition><Days>30</Days><StorageClass>COLD</StorageClass></Transition><Expiration><Days>365</Days></Expiration>",
        ))
        .unwrap();
        assert_eq!(r[0].filter.prefix, "logs/");
        assert_eq!(r[0].filter.tags, [("t".to_owned(), "v".to_owned())]);
        assert_eq!(r[0].transition, Some((When::Days(30), "COLD".to_owned())));
        let r = rules(&doc(
            "<Status>Enabled</Status><Prefix>x</Prefix><Expiration><Date>2026-12-01T00:00:00Z</Date></Expiration>",
        ))
        .unwrap();
        assert_eq!(r[0].expiration, Some(When::Date(crate::sigv4::days_from_civil(2026, 12, 1) * DAY_MS)));
        for date in ["999999999-01-01", "2026-02-30", "2026-13-01", "1969-12-31", "2026-1"] {
            let xml = doc(&format!("<Status>Enabled</Status><Filter/><Expiration><Date>{date}</Date></Expiration>"));
            assert_eq!(rules(&xml).unwrap_err().code, Code::InvalidArgument, "{date}");
        }
        let code = |xml: &str| rules(xml).unwrap_err().code;
        assert_eq!(code("<Other/>"), Code::MalformedXML);
        assert_eq!(code("<LifecycleConfiguration></LifecycleConfiguration>"), Code::MalformedXML);
        assert_eq!(
            code(&doc("<Status>On</Status><Filter/><Expiration><Days>1</Days></Expiration>")),
            Code::MalformedXML
        );
        assert_eq!(
            code(&doc("<Status>Enabled</Status><Filter/><Expiration><Days>0</Days></Expiration>")),
            Code::InvalidArgument
        );
        assert_eq!(code(&doc("<Status>Enabled</Status><Filter/>")), Code::InvalidArgument);
        assert_eq!(
            code(&doc("<Status>Enabled</Status><Filter/><Expiration><Date>2026-12-01T10:00:00Z</Date></Expiration>")),
            Code::InvalidArgument
        );
        assert_eq!(
            code(&doc("<Status>Enabled</Status><Filter/><Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition>")),
            Code::InvalidStorageClass
        );
        assert_eq!(
            code(&doc(
                "<Status>Enabled</Status><Filter/><Transition><Days>10</Days><StorageClass>COLD</StorageClass></Transition><Expiration><Days>5</Days></Expiration>"
            )),
            Code::InvalidArgument
        );
        assert_eq!(
            code(&doc("<Status>Enabled</Status><Filter><Prefix>a</Prefix><Tag><Key>k</Key></Tag></Filter><Expiration><Days>1</Days></Expiration>")),
            Code::MalformedXML
        );
        let dup = "<LifecycleConfiguration><Rule><ID>x</ID><Status>Enabled</Status><Filter/><Expiration><Days>1</Days></Expiration></Rule>\
                   <Rule><ID>x</ID><Status>Enabled</Status><Filter/><Expiration><Days>2</Days></Expiration></Rule></LifecycleConfiguration>";
        assert_eq!(code(dup), Code::InvalidArgument);
    }

    #[test]
    fn actions_fall_due_by_days_dates_filters_and_midnight() {
        let r = rules(&doc(
            "<Status>Enabled</Status><Filter><And><Prefix>p/</Prefix><ObjectSizeGreaterThan>10</ObjectSizeGreaterThan></And></Filter>\
             <Transition><Days>1</Days><StorageClass>COLD</StorageClass></Transition><Expiration><Days>3</Days></Expiration>",
        ))
        .unwrap();
        let meta = |size: u64, mtime_ms: i64| ObjectMeta {
            size,
            etag: String::new(),
            mtime_ms,
            headers: Vec::new(),
            checksum: None,
            tags: Vec::new(),
            part_sizes: Vec::new(),
            data: DataLoc::Parts(Vec::new()),
        };
        let day = 1000;
        assert_eq!(action_for(&r, "p/a", &meta(11, 0), 999, day), None);
        assert_eq!(action_for(&r, "p/a", &meta(11, 0), 1000, day), Some(Action::Transition("COLD".into())));
        assert_eq!(action_for(&r, "p/a", &meta(11, 0), 3000, day), Some(Action::Expire));
        assert_eq!(action_for(&r, "q/a", &meta(11, 0), 3000, day), None, "prefix");
        assert_eq!(action_for(&r, "p/a", &meta(10, 0), 3000, day), None, "size");
        // Real days: due at the midnight after mtime + 1 day.
        let noon = 5 * DAY_MS + DAY_MS / 2;
        assert_eq!(due_ms(&When::Days(1), noon, DAY_MS), 7 * DAY_MS);
        assert_eq!(due_ms(&When::Days(1), 5 * DAY_MS, DAY_MS), 6 * DAY_MS);
    }
}
