//! Remote tiers (Azure Blob containers) and objects that live in them.
//!
//! A tier is cluster-wide configuration (`tier/NAME` in the engine's cluster config): the
//! Blob endpoint, account, container, a blob-name prefix, the access tier (Hot, Cool, Cold)
//! and the credential (account key or SAS), sealed with AES-256-GCM under a key derived from
//! the root credentials, so the metadata log never holds it in the clear. A tier may instead
//! use Ferrite's own Entra ID identity (managed or workload identity): then nothing secret
//! is stored.
//!
//! A transitioned object keeps its metadata (size, ETag, headers, checksum, tags) in the
//! engine; its data files are replaced by internal headers that say where the stored bytes
//! went (`x-ferrite-tier*`). The stored bytes move unchanged, so an encrypted object stays
//! encrypted and is opened on the way out as before. Reads fetch ranges from the blob in
//! 4 MiB requests on the blocking pool.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use ferrite_engine::meta::{DataLoc, PartLoc};
use ferrite_engine::sse::{open_secret, seal_secret, Key};
use ferrite_engine::{Chunk, Engine, EngineError, ObjectMeta, ObjectReader};
use ferrite_tiering::azure::{Auth, BlobError, Container, ACCESS_TIERS, STORAGE_RESOURCE};
use ferrite_tiering::entra::Signin;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use sha2::Sha256;

use crate::checksum::{b64, b64_decode};
use crate::error::{Code, S3Error, S3Result};
use crate::outbound::json_string;
use crate::sse::header;

/// Internal headers of a transitioned object (never shown to clients). H_TIER names the
/// tier, which listings report as the object's storage class (they ask the engine for it).
pub const H_TIER: &str = "x-ferrite-tier";
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

const CONFIG_PREFIX: &str = "tier/";
/// Bytes per ranged GET from a tier.
const REMOTE_READ_BYTES: u64 = 4 << 20;
/// S3's own storage classes cannot name a tier.
const S3_CLASSES: [&str; 10] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "EXPRESS_ONEZONE",
];

/// A configured tier.
#[derive(Clone)]
pub struct Tier {
    pub name: String,
    pub endpoint: String,
    pub account: String,
    pub container: String,
    pub prefix: String,
    pub access_tier: String,
    pub auth: Auth,
}

/// The key that seals tier credentials, derived from the root credentials at start-up.
static SEAL_KEY: OnceLock<Key> = OnceLock::new();
/// Parsed tiers by name, with the stored text they came from (reparsed when it changes).
static CACHE: OnceLock<TierCache> = OnceLock::new();
type TierCache = RwLock<HashMap<String, (String, Arc<Tier>)>>;

/// Called once at start-up.
pub fn init(root_password: &str) {
    let mut mac = Hmac::<Sha256>::new_from_slice(root_password.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"ferrite: remote tier credentials");
    let _ = SEAL_KEY.set(Key(mac.finalize().into_bytes().into()));
}

fn seal_key() -> S3Result<&'static Key> {
    SEAL_KEY.get().ok_or_else(|| S3Error::new(Code::InternalError, "tier credentials key not initialised"))
}

fn enc(v: &str) -> String {
    utf8_percent_encode(v, NON_ALPHANUMERIC).to_string()
}

fn dec(v: &str) -> String {
    percent_decode_str(v).decode_utf8_lossy().into_owned()
}

impl Tier {
    pub fn container(&self) -> Result<Container, String> {
        Container::new(&self.endpoint, &self.account, &self.container, self.auth.clone())
    }

    /// The stored form: `key=value` lines, values percent-encoded, the credential sealed (an
    /// identity tier has none).
    fn encode(&self) -> S3Result<String> {
        let (kind, secret) = match &self.auth {
            Auth::SharedKey(key) => ("shared-key", Some(key.clone())),
            Auth::Sas(sas) => ("sas", Some(sas.as_bytes().to_vec())),
            Auth::Entra(_) => ("identity", None),
        };
        let sealed = match secret {
            Some(secret) => seal_secret(seal_key()?, &secret, self.context().as_bytes()).map_err(S3Error::from)?,
            None => Vec::new(),
        };
        Ok(format!(
            "endpoint={}\naccount={}\ncontainer={}\nprefix={}\naccess_tier={}\nauth={kind}\nsecret={}\n",
            enc(&self.endpoint),
            enc(&self.account),
            enc(&self.container),
            enc(&self.prefix),
            enc(&self.access_tier),
            b64(&sealed)
        ))
    }

    fn decode(name: &str, text: &str) -> Result<Tier, String> {
        let fields: HashMap<&str, String> =
            text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k, dec(v))).collect();
        let field = |k: &str| fields.get(k).cloned().ok_or_else(|| format!("tier {name}: {k} is missing"));
        let mut tier = Tier {
            name: name.to_owned(),
            endpoint: field("endpoint")?,
            account: field("account")?,
            container: field("container")?,
            prefix: field("prefix")?,
            access_tier: field("access_tier")?,
            auth: Auth::Sas(String::new()),
        };
        let kind = field("auth")?;
        if kind == "identity" {
            tier.auth = Auth::Entra(storage_signin().map_err(|e| format!("tier {name}: {e}"))?);
            return Ok(tier);
        }
        let sealed = b64_decode(&field("secret")?).ok_or_else(|| format!("tier {name}: damaged secret"))?;
        let key = seal_key().map_err(|e| e.message)?;
        let secret = open_secret(key, &sealed, tier.context().as_bytes())
            .map_err(|_| format!("tier {name}: its credential does not open (were the root credentials changed?)"))?;
        tier.auth = match kind.as_str() {
            "shared-key" => Auth::SharedKey(secret),
            "sas" => Auth::Sas(String::from_utf8(secret).map_err(|_| format!("tier {name}: damaged SAS"))?),
            other => return Err(format!("tier {name}: unknown auth {other}")),
        };
        Ok(tier)
    }

    fn context(&self) -> String {
        format!("{CONFIG_PREFIX}{}", self.name)
    }

    fn describe_json(&self) -> String {
        let auth = match &self.auth {
            Auth::SharedKey(_) => "account key",
            Auth::Sas(_) => "SAS",
            Auth::Entra(signin) => signin.kind(),
        };
        /// The tier as `tier ls` shows it (field order as written here).
        #[derive(serde::Serialize)]
        struct Description<'a> {
            name: &'a str,
            endpoint: &'a str,
            account: &'a str,
            container: &'a str,
            prefix: &'a str,
            access_tier: &'a str,
            auth: &'a str,
        }
        let description = Description {
            name: &self.name,
            endpoint: &self.endpoint,
            account: &self.account,
            container: &self.container,
            prefix: &self.prefix,
            access_tier: &self.access_tier,
            auth,
        };
        // Strings only: serializing cannot fail.
        serde_json::to_string(&description).unwrap_or_default()
    }
}

/// The tier called `name`, if configured.
pub fn get(engine: &Engine, name: &str) -> S3Result<Option<Arc<Tier>>> {
    let Some(text) = engine.cluster_config(&format!("{CONFIG_PREFIX}{name}")) else { return Ok(None) };
    let cache = CACHE.get_or_init(Default::default);
    if let Some((seen, tier)) = cache.read().unwrap_or_else(|p| p.into_inner()).get(name) {
        if *seen == text {
            return Ok(Some(tier.clone()));
        }
    }
    let tier = Arc::new(Tier::decode(name, &text).map_err(|e| S3Error::new(Code::InternalError, e))?);
    cache.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), (text, tier.clone()));
    Ok(Some(tier))
}

/// Every configured tier, as JSON (credentials left out).
pub fn list_json(engine: &Engine) -> S3Result<String> {
    let mut items = Vec::new();
    for (item, _) in engine.cluster_configs(CONFIG_PREFIX) {
        let name = &item[CONFIG_PREFIX.len()..];
        if let Some(tier) = get(engine, name)? {
            items.push(tier.describe_json());
        }
    }
    Ok(format!("{{\"tiers\":[{}]}}", items.join(",")))
}

/// Runs a blocking Blob call on the blocking pool.
pub async fn blocking<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> S3Result<T> {
    monoio::spawn_blocking(job).await.map_err(|_| S3Error::new(Code::InternalError, "a tier request was cancelled"))
}

fn check_failed(tier: &str, e: BlobError) -> S3Error {
    let code = match e {
        BlobError::Denied(_) => Code::AccessDenied,
        BlobError::Unavailable(_) => Code::ServiceUnavailable,
        _ => Code::InvalidArgument,
    };
    S3Error::new(code, format!("Tier {tier}: the check against Azure Blob failed: {e}"))
}

/// The process's Entra ID sign-in for Azure Storage (managed identity, workload identity or
/// client secret, from Azure's standard variables), shared by every tier that uses one.
fn storage_signin() -> Result<Arc<Signin>, String> {
    static SIGNIN: OnceLock<Result<Arc<Signin>, String>> = OnceLock::new();
    SIGNIN.get_or_init(|| Signin::from_env(STORAGE_RESOURCE).map(Arc::new)).clone()
}

fn credential_from(body: &str) -> S3Result<Auth> {
    let identity = json_string(body, "identity").is_some_and(|v| v == "true");
    match (json_string(body, "account_key"), json_string(body, "sas"), identity) {
        (Some(key), None, false) => b64_decode(&key)
            .filter(|k| !k.is_empty())
            .map(Auth::SharedKey)
            .ok_or_else(|| S3Error::new(Code::InvalidArgument, "account_key must be the account key in base64")),
        (None, Some(sas), false) if !sas.is_empty() => Ok(Auth::Sas(sas.trim_start_matches('?').to_owned())),
        (None, None, true) => storage_signin().map(Auth::Entra).map_err(|e| S3Error::new(Code::InvalidArgument, e)),
        _ => Err(S3Error::new(Code::InvalidArgument, "give exactly one of account_key, sas and identity")),
    }
}

/// Azure Blob's host names in the public and sovereign clouds.
const BLOB_HOST_SUFFIXES: [&str; 3] =
    [".blob.core.windows.net", ".blob.core.chinacloudapi.cn", ".blob.core.usgovcloudapi.net"];

/// Credentials travel in every request: plain http is only for a local emulator. The
/// server's own identity token is valid on every account the identity has a role on, so it
/// is only sent to Azure Blob itself (or a local emulator).
fn check_endpoint(endpoint: &str, auth: &Auth) -> S3Result<()> {
    let url = crate::outbound::Url::parse(endpoint).map_err(|e| S3Error::new(Code::InvalidArgument, e))?;
    let loopback = url.host == "localhost" || url.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !url.tls && !loopback {
        return Err(S3Error::new(Code::InvalidArgument, "A tier endpoint must be https:// (http only on loopback)."));
    }
    if !url.host.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)) {
        return Err(S3Error::new(Code::InvalidArgument, "A tier endpoint's host is a DNS name or an IP address."));
    }
    let blob_host = BLOB_HOST_SUFFIXES.iter().any(|suffix| url.host.to_ascii_lowercase().ends_with(suffix));
    if matches!(auth, Auth::Entra(_)) && !blob_host && !loopback {
        return Err(S3Error::new(
            Code::InvalidArgument,
            "A tier using the server's identity must be an Azure Blob endpoint (ACCOUNT.blob.core.windows.net or a sovereign cloud's).",
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> S3Result<()> {
    let fine = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !fine {
        return Err(S3Error::new(
            Code::InvalidArgument,
            "A tier name is 1-64 upper-case letters, digits, '_' and '-', starting with a letter.",
        ));
    }
    if S3_CLASSES.contains(&name) {
        return Err(S3Error::new(Code::InvalidArgument, format!("{name} is an S3 storage class, not a tier name")));
    }
    Ok(())
}

/// Adds a tier after a test write, read and delete in its container. A container (under
/// the prefix) that already holds blobs is refused unless `force`.
pub async fn add(engine: &Engine, name: &str, body: &str, force: bool) -> S3Result<String> {
    check_name(name)?;
    if get(engine, name)?.is_some() {
        return Err(S3Error::new(Code::InvalidRequest, format!("Tier {name} exists already; edit or remove it.")));
    }
    let field = |k: &str| json_string(body, k).unwrap_or_default();
    let access_tier = json_string(body, "access_tier").unwrap_or_else(|| "Hot".into());
    if access_tier.eq_ignore_ascii_case("Archive") {
        return Err(S3Error::new(
            Code::InvalidArgument,
            "The Archive access tier cannot serve reads immediately; use Hot, Cool or Cold.",
        ));
    }
    let Some(access_tier) = ACCESS_TIERS.iter().find(|t| t.eq_ignore_ascii_case(&access_tier)) else {
        return Err(S3Error::new(Code::InvalidArgument, "access_tier must be Hot, Cool or Cold"));
    };
    let prefix = field("prefix");
    let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix } else { format!("{prefix}/") };
    let tier = Tier {
        name: name.to_owned(),
        endpoint: field("endpoint"),
        account: field("account"),
        container: field("container"),
        prefix,
        access_tier: access_tier.to_string(),
        auth: credential_from(body)?,
    };
    check_endpoint(&tier.endpoint, &tier.auth)?;
    let container = tier.container().map_err(|e| S3Error::new(Code::InvalidArgument, e))?;
    let (probe_prefix, tier_name) = (tier.prefix.clone(), name.to_owned());
    blocking(move || probe(&container, &probe_prefix, force)).await?.map_err(|e| match e {
        Probe::Blob(e) => check_failed(&tier_name, e),
        Probe::HoldsData(blob) => S3Error::new(
            Code::InvalidRequest,
            format!("Tier {tier_name}: the container already holds data ({blob}); add it with force to use it anyway."),
        ),
        Probe::Mismatch => {
            S3Error::new(Code::InvalidArgument, format!("Tier {tier_name}: the test blob read back wrong"))
        }
    })?;
    engine.put_cluster_config(&tier.context(), Some(tier.encode()?)).await?;
    Ok(tier.describe_json())
}

/// Replaces a tier's credential, after the same test write, read and delete.
pub async fn edit(engine: &Engine, name: &str, body: &str) -> S3Result<String> {
    let Some(current) = get(engine, name)? else {
        return Err(S3Error::new(Code::InvalidArgument, format!("No tier {name}.")));
    };
    let tier = Tier { auth: credential_from(body)?, ..(*current).clone() };
    check_endpoint(&tier.endpoint, &tier.auth)?;
    let container = tier.container().map_err(|e| S3Error::new(Code::InvalidArgument, e))?;
    let (prefix, tier_name) = (tier.prefix.clone(), name.to_owned());
    blocking(move || probe(&container, &prefix, true)).await?.map_err(|e| match e {
        Probe::Blob(e) => check_failed(&tier_name, e),
        _ => S3Error::new(Code::InvalidArgument, format!("Tier {tier_name}: the test blob read back wrong")),
    })?;
    engine.put_cluster_config(&tier.context(), Some(tier.encode()?)).await?;
    Ok(tier.describe_json())
}

/// Removes a tier that no lifecycle rule names and no object lives in (removing it would
/// make those objects unreadable).
pub async fn remove(engine: &Engine, name: &str) -> S3Result<()> {
    if get(engine, name)?.is_none() {
        return Err(S3Error::new(Code::InvalidArgument, format!("No tier {name}.")));
    }
    for (bucket, _) in engine.list_buckets() {
        if let Ok(Some(doc)) = engine.bucket_config(&bucket, crate::lifecycle::BUCKET_CONFIG) {
            if crate::lifecycle::names_tier(&doc, name) {
                return Err(S3Error::new(
                    Code::InvalidRequest,
                    format!("Tier {name} is used by the lifecycle configuration of bucket {bucket}."),
                ));
            }
        }
        let mut walk = engine.walk(&bucket, Some(H_TIER));
        while let Some(ferrite_engine::ListedObject { key, reported_header: class, .. }) = walk.next().await? {
            if class.as_deref() == Some(name) {
                return Err(S3Error::new(
                    Code::InvalidRequest,
                    format!("Tier {name} holds objects, {bucket}/{key} among them: delete them first."),
                ));
            }
        }
    }
    engine.put_cluster_config(&format!("{CONFIG_PREFIX}{name}"), None).await?;
    Ok(())
}

enum Probe {
    Blob(BlobError),
    HoldsData(String),
    Mismatch,
}

fn probe(container: &Container, prefix: &str, force: bool) -> Result<(), Probe> {
    if !force {
        if let Some(blob) = container.list(prefix, 1).map_err(Probe::Blob)?.pop() {
            return Err(Probe::HoldsData(blob));
        }
    }
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let blob = format!("{prefix}.ferrite-probe-{}", crate::sigv4::hex(&nonce));
    let payload = format!("ferrite tier check {}", crate::sigv4::hex(&nonce)).into_bytes();
    let id = ferrite_tiering::azure::block_id(0);
    container.put_block(&blob, &id, payload.clone()).map_err(Probe::Blob)?;
    container.commit_blocks(&blob, &[id], "Hot", &[]).map_err(Probe::Blob)?;
    let back = container.get_range(&blob, 0, payload.len() as u64 - 1, None).map_err(Probe::Blob)?;
    container.delete(&blob).map_err(Probe::Blob)?;
    if back != payload {
        return Err(Probe::Mismatch);
    }
    Ok(())
}

// ----- transitioned objects -----

/// Where a transitioned object's stored bytes are.
pub struct Remote {
    pub tier: String,
    pub blob: String,
    pub parts: Vec<PartLoc>,
}

/// The remote location of a transitioned object (None: its data is local).
pub fn remote_of(meta: &ObjectMeta) -> Option<Remote> {
    let tier = header(&meta.headers, H_TIER)?;
    let blob = header(&meta.headers, H_BLOB)?;
    let parts = header(&meta.headers, H_PARTS)
        .unwrap_or("")
        .split(',')
        .filter_map(|p| p.split_once(':'))
        .filter_map(|(id, size)| {
            Some(PartLoc { file_id: u128::from_str_radix(id, 16).ok()?, size: size.parse().ok()? })
        })
        .collect();
    Some(Remote { tier: tier.to_owned(), blob: blob.to_owned(), parts })
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
fn has_local_copy(meta: &ObjectMeta) -> bool {
    matches!(&meta.data, DataLoc::Parts(parts) if !parts.is_empty()) || matches!(meta.data, DataLoc::Inline { .. })
}

/// When a restored copy of a transitioned object expires (ms), if it has one.
pub fn restored_until(meta: &ObjectMeta) -> Option<i64> {
    header(&meta.headers, H_RESTORED_UNTIL).and_then(|v| v.parse().ok())
}

/// The Days of a requested, unfinished restore, if one was requested.
pub fn restore_pending(meta: &ObjectMeta) -> Option<u32> {
    header(&meta.headers, H_RESTORE_PENDING).and_then(|v| v.parse().ok())
}

/// The object's headers without any restore state, plus `(name, value)` if given.
fn restore_headers(meta: &ObjectMeta, set: Option<(&str, i64)>) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> =
        meta.headers.iter().filter(|(n, _)| n != H_RESTORED_UNTIL && n != H_RESTORE_PENDING).cloned().collect();
    if let Some((name, until)) = set {
        headers.push((name.into(), until.to_string()));
    }
    headers
}

/// Restores currently running in this process, by bucket and key.
static RESTORING: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<(String, String)>>> =
    std::sync::LazyLock::new(Default::default);

pub fn restores_running() -> usize {
    RESTORING.lock().unwrap_or_else(|p| p.into_inner()).len()
}

/// RestoreObject: Ok(true) when a restore was started (202), Ok(false) when a restored copy
/// exists and only its expiry moves (200). The request is recorded with the object, then the
/// copy is written in the background on this executor; `x-amz-restore` tells when it is there.
pub async fn restore(engine: &Engine, bucket: &str, key: &str, days: u32) -> S3Result<bool> {
    let meta = engine.head_object(bucket, key).await?;
    if remote_of(&meta).is_none() {
        return Err(S3Error::new(
            Code::InvalidObjectState,
            "Restore is not allowed for the object's current storage class",
        ));
    }
    if has_local_copy(&meta) {
        let until = restore_expiry(days);
        engine.set_headers(bucket, key, &meta, restore_headers(&meta, Some((H_RESTORED_UNTIL, until)))).await?;
        return Ok(false);
    }
    if restore_pending(&meta).is_some() {
        // Requested before: running here, or cut short by a crash or a tier outage (then
        // this request starts it again).
        resume_restore(engine, bucket, key, meta);
        return Err(S3Error::new(Code::RestoreAlreadyInProgress, "Object restore is already in progress"));
    }
    let headers = restore_headers(&meta, Some((H_RESTORE_PENDING, days.into())));
    match engine.set_headers(bucket, key, &meta, headers.clone()).await {
        // Another request (on another core) recorded its restore first.
        Err(EngineError::PreconditionFailed) => {
            return Err(S3Error::new(Code::RestoreAlreadyInProgress, "Object restore is already in progress"))
        }
        other => other?,
    }
    resume_restore(engine, bucket, key, ObjectMeta { headers, ..meta });
    Ok(true)
}

/// When a restored copy made now for `days` expires: midnight UTC after the days.
fn restore_expiry(days: u32) -> i64 {
    let day_ms = crate::lifecycle::day_ms();
    crate::lifecycle::due_ms(&crate::lifecycle::When::Days(days), ferrite_engine::now_ms(), day_ms)
}

/// Starts writing the copy of a pending restore in the background, unless it is running in
/// this process already.
pub fn resume_restore(engine: &Engine, bucket: &str, key: &str, meta: ObjectMeta) {
    let Some(days) = restore_pending(&meta) else { return };
    let id = (bucket.to_owned(), key.to_owned());
    if !RESTORING.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone()) {
        return;
    }
    let engine = engine.clone();
    monoio::spawn(async move {
        use std::sync::atomic::Ordering::Relaxed;
        let mut retry_later = false;
        match copy_back(&engine, &id.0, &id.1, &meta, days).await {
            Ok(()) => {
                crate::lifecycle::COUNTERS.restored.fetch_add(1, Relaxed);
            }
            // Changed meanwhile: looked at again below.
            Err(CopyBack::Changed) => {}
            // The blob is gone or replaced: retrying cannot help, so the request is dropped
            // (HEAD stops saying it is ongoing; a new request may be made).
            Err(CopyBack::Gone(why)) => {
                eprintln!("ferrite: restore {}/{} failed: {why}", id.0, id.1);
                crate::lifecycle::COUNTERS.restores_failed.fetch_add(1, Relaxed);
                let cleared = engine.set_headers(&id.0, &id.1, &meta, restore_headers(&meta, None)).await;
                retry_later = cleared.is_err();
            }
            // The tier or the drives could not do it now: the request stays pending, for the
            // next pass or a repeated request.
            Err(CopyBack::Retry(why)) => {
                eprintln!("ferrite: restore {}/{} will be retried: {why}", id.0, id.1);
                retry_later = true;
            }
        }
        RESTORING.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        // A new request for the same object that came while this one was finishing found it
        // running and did not start: look once more.
        if !retry_later {
            if let Ok(now) = engine.head_object(&id.0, &id.1).await {
                resume_restore(&engine, &id.0, &id.1, now);
            }
        }
    });
}

/// Why a restore's copy was not made.
enum CopyBack {
    /// The blob is missing or not the one recorded.
    Gone(String),
    /// The object changed meanwhile (overwritten, deleted, re-sealed).
    Changed,
    /// Anything else (the tier or the drives): try again later.
    Retry(String),
}

/// Writes the blob's bytes into new local data files and records them as the restored copy,
/// if the object is unchanged meanwhile.
async fn copy_back(engine: &Engine, bucket: &str, key: &str, meta: &ObjectMeta, days: u32) -> Result<(), CopyBack> {
    let stored: u64 = stored_parts(meta).iter().map(|p| p.size).sum();
    let mut reader = StoredReader::open(engine, bucket, key, meta, 0, stored);
    let mut writer = engine.writer(bucket, key, false).map_err(|e| CopyBack::Retry(e.to_string()))?;
    let copied: ferrite_engine::Result<()> = async {
        while let Some(chunk) = reader.next_chunk().await? {
            writer.write(&chunk).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        writer.discard().await;
        // The remote reader reports a missing or replaced blob as corrupt data.
        return Err(match e {
            EngineError::Corrupt(why) => CopyBack::Gone(why),
            other => CopyBack::Retry(other.to_string()),
        });
    }
    let copy = match writer.finish().await {
        Ok(copy) if copy.is_inline() => return Err(CopyBack::Retry("a restored copy came back inline".into())),
        Ok(copy) => copy,
        Err(e) => return Err(CopyBack::Retry(e.to_string())),
    };
    let until = restore_expiry(days);
    let headers = restore_headers(meta, Some((H_RESTORED_UNTIL, until)));
    // If the object changed meanwhile the copy is unreferenced; the scanner's leftover pass
    // removes its files.
    match engine.swap_data(bucket, key, meta, copy, headers).await {
        Ok(()) => Ok(()),
        Err(EngineError::PreconditionFailed | EngineError::NoSuchKey | EngineError::NoSuchBucket) => {
            Err(CopyBack::Changed)
        }
        Err(e) => Err(CopyBack::Retry(e.to_string())),
    }
}

/// Frees a restored copy whose time is up (the lifecycle pass calls this).
pub async fn expire_restored(engine: &Engine, bucket: &str, key: &str, meta: &ObjectMeta) -> S3Result<()> {
    let headers = restore_headers(meta, None);
    engine.drop_data(bucket, key, meta, headers).await.map_err(S3Error::from)
}

/// The headers a transitioned object carries: its own plus where its bytes went.
pub fn transitioned_headers(meta: &ObjectMeta, tier: &str, blob: &str, blob_etag: &str) -> Vec<(String, String)> {
    let parts = match &meta.data {
        DataLoc::Parts(parts) => {
            parts.iter().map(|p| format!("{:x}:{}", p.file_id, p.size)).collect::<Vec<_>>().join(",")
        }
        DataLoc::Inline { .. } => String::new(),
    };
    let mut headers: Vec<(String, String)> =
        meta.headers.iter().filter(|(n, _)| !n.starts_with(H_TIER)).cloned().collect();
    headers.push((H_TIER.into(), tier.into()));
    headers.push((H_BLOB.into(), blob.into()));
    headers.push((H_BLOB_ETAG.into(), blob_etag.into()));
    headers.push((H_PARTS.into(), parts));
    headers
}

/// Reads stored bytes [start, end) of an object, from its data files or its tier.
pub enum StoredReader {
    Local(ObjectReader),
    Remote(Box<RemoteReader>),
}

pub struct RemoteReader {
    container: Option<Container>,
    error: Option<String>,
    blob: String,
    /// The blob's ETag at commit: a blob replaced since is refused, never served.
    etag: Option<String>,
    pos: u64,
    end: u64,
    primed: Option<Chunk>,
}

impl StoredReader {
    pub fn open(engine: &Engine, bucket: &str, key: &str, meta: &ObjectMeta, start: u64, end: u64) -> StoredReader {
        let Some(remote) = remote_of(meta).filter(|_| !has_local_copy(meta)) else {
            return StoredReader::Local(engine.reader(bucket, key, meta, start, end));
        };
        let (container, error) = match get(engine, &remote.tier) {
            Ok(Some(tier)) => match tier.container() {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e)),
            },
            Ok(None) => (None, Some(format!("tier {} is not configured", remote.tier))),
            Err(e) => (None, Some(e.message)),
        };
        let etag = header(&meta.headers, H_BLOB_ETAG).filter(|e| !e.is_empty()).map(str::to_owned);
        StoredReader::Remote(Box::new(RemoteReader {
            container,
            error,
            blob: remote.blob,
            etag,
            pos: start,
            end,
            primed: None,
        }))
    }

    pub async fn next_chunk(&mut self) -> ferrite_engine::Result<Option<Chunk>> {
        match self {
            StoredReader::Local(r) => r.next_chunk().await,
            StoredReader::Remote(r) => match r.primed.take() {
                Some(chunk) => Ok(Some(chunk)),
                None => r.fetch().await,
            },
        }
    }

    pub async fn prime(&mut self) -> ferrite_engine::Result<()> {
        match self {
            StoredReader::Local(r) => r.prime().await,
            StoredReader::Remote(r) => {
                if r.primed.is_none() {
                    r.primed = r.fetch().await?;
                }
                Ok(())
            }
        }
    }
}

impl RemoteReader {
    async fn fetch(&mut self) -> ferrite_engine::Result<Option<Chunk>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        // Clients get a plain reason; the details (Azure's answers, names) go to the log.
        let blob_name = self.blob.clone();
        let unavailable = |why: String| {
            eprintln!("ferrite: tier: reading blob {blob_name}: {why}");
            EngineError::ReadQuorum("the remote tier cannot be read now; the server log has the details".into())
        };
        let Some(container) = self.container.clone() else {
            return Err(unavailable(self.error.clone().unwrap_or_default()));
        };
        let (blob, from, to) = (self.blob.clone(), self.pos, (self.pos + REMOTE_READ_BYTES).min(self.end) - 1);
        let etag = self.etag.clone();
        let chunk = monoio::spawn_blocking(move || container.get_range(&blob, from, to, etag.as_deref()))
            .await
            .map_err(|_| unavailable("cancelled".into()))?
            .map_err(|e| match e {
                // Gone or replaced in the container: retrying will not help.
                BlobError::NotFound | BlobError::Refused(..) => {
                    eprintln!("ferrite: tier: reading blob {}: {e}", self.blob);
                    EngineError::Corrupt("the blob of a transitioned object is missing or changed".into())
                }
                BlobError::Unavailable(_) | BlobError::Denied(_) => unavailable(e.to_string()),
            })?;
        if chunk.len() as u64 != to + 1 - from {
            return Err(unavailable(format!("{} bytes answered for {from}-{to}", chunk.len())));
        }
        self.pos = to + 1;
        Ok(Some(Chunk::Owned(chunk)))
    }
}

/// Deletes an object and, when it had moved to a tier, its blob: in the background, so a
/// DELETE or DeleteObjects does not wait on Azure.
pub async fn delete_object(engine: &Engine, bucket: &str, key: &str) -> ferrite_engine::Result<()> {
    // Without any tier no object can be in one (a tier with objects cannot be removed), so
    // the lookup is skipped: plain deletes cost what they did before tiering.
    let remote = if engine.cluster_configs(CONFIG_PREFIX).is_empty() {
        None
    } else {
        engine.head_object(bucket, key).await.ok().and_then(|m| remote_of(&m))
    };
    engine.delete_object(bucket, key).await?;
    if let Some(remote) = remote {
        queue_blob_delete(engine, remote);
    }
    Ok(())
}

/// Blob deletes waiting on this core, at most this many (beyond, the blob is left to the
/// orphan sweep).
const BLOB_DELETES_QUEUED_MAX: usize = 10_000;

thread_local! {
    /// This core's blob deletes, done one at a time by one worker task, so an Azure outage
    /// never ties up more than one of the blocking pool's threads with them.
    static BLOB_DELETES: std::cell::RefCell<(std::collections::VecDeque<Remote>, bool)> = Default::default();
}

fn queue_blob_delete(engine: &Engine, remote: Remote) {
    let start_worker = BLOB_DELETES.with(|q| {
        let mut q = q.borrow_mut();
        if q.0.len() >= BLOB_DELETES_QUEUED_MAX {
            eprintln!("ferrite: tier: too many blob deletes queued; {} is left to the orphan sweep", remote.blob);
            return false;
        }
        q.0.push_back(remote);
        !std::mem::replace(&mut q.1, true)
    });
    if start_worker {
        let engine = engine.clone();
        monoio::spawn(async move {
            while let Some(remote) = BLOB_DELETES.with(|q| {
                let mut q = q.borrow_mut();
                let next = q.0.pop_front();
                q.1 = next.is_some();
                next
            }) {
                delete_remote(&engine, remote).await;
            }
        });
    }
}

/// Deletes a transitioned object's blob (after the object itself was deleted or replaced).
/// Failures are logged; the orphan is left behind.
pub async fn delete_remote(engine: &Engine, remote: Remote) {
    let container = match get(engine, &remote.tier) {
        Ok(Some(tier)) => tier.container(),
        _ => Err(format!("tier {} is not configured", remote.tier)),
    };
    let blob = remote.blob;
    let outcome: Result<bool, String> = match container {
        Ok(c) => match blocking(move || c.delete(&blob)).await {
            Ok(deleted) => deleted.map_err(|e| e.to_string()),
            Err(e) => Err(e.message),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        eprintln!("ferrite: tier: the blob of a deleted object was left behind: {e}");
    }
}
