//! Remote tiers: the registry of configured Azure Blob containers, and what the admin API
//! does to it (add, edit, list, remove).
//!
//! A tier is cluster-wide configuration (`tier/NAME` in the engine's cluster config): the
//! Blob endpoint, account, container, a blob-name prefix, the access tier (Hot, Cool, Cold)
//! and the credential (account key or SAS), sealed with AES-256-GCM under a key derived from
//! the root credentials, so the metadata log never holds it in the clear. A tier may instead
//! use Ferrite's own Entra ID identity (managed or workload identity): then nothing secret
//! is stored. A tier is checked with a test write, read and delete before it is stored.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ferrite_engine::sse::{open_secret, seal_secret, Key};
use ferrite_engine::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::outbound::azure_blob::{self, Auth, BlobError, Container, ACCESS_TIERS, STORAGE_RESOURCE};
use crate::outbound::entra::{EntraSettings, Signin};
use crate::outbound::http::{Client, Url};
use crate::{rules, store};

const CONFIG_PREFIX: &str = "tier/";
const NAME_BYTES_MAX: usize = 64;
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
/// Azure Blob's host names in the public and sovereign clouds.
const BLOB_HOST_SUFFIXES: [&str; 3] =
    [".blob.core.windows.net", ".blob.core.chinacloudapi.cn", ".blob.core.usgovcloudapi.net"];

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

/// A tier as the admin API shows it: everything but the credential.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TierInfo {
    pub name: String,
    pub endpoint: String,
    pub account: String,
    pub container: String,
    pub prefix: String,
    pub access_tier: String,
    /// How it signs in: "account key", "SAS", or the kind of Entra ID identity.
    pub auth: String,
}

/// `GET /ferrite/admin/v1/tier`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TierList {
    pub tiers: Vec<TierInfo>,
}

/// A tier as the admin API receives it (`PUT` adds one, `POST` replaces the credential):
/// exactly one of `account_key`, `sas` and `identity`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TierSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Hot (the default), Cool or Cold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_tier: Option<String>,
    /// The storage account key, in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas: Option<String>,
    /// "true": sign in with the server's own Entra ID identity (a JSON `true` works too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<serde_json::Value>,
}

impl TierSpec {
    fn identity(&self) -> bool {
        matches!(&self.identity, Some(serde_json::Value::Bool(true)))
            || matches!(&self.identity, Some(serde_json::Value::String(s)) if s == "true")
    }
}

fn enc(v: &str) -> String {
    utf8_percent_encode(v, NON_ALPHANUMERIC).to_string()
}

fn dec(v: &str) -> String {
    percent_decode_str(v).decode_utf8_lossy().into_owned()
}

impl Tier {
    pub fn container(&self, http: &Client) -> Result<Container, String> {
        Container::new(http, &self.endpoint, &self.account, &self.container, self.auth.clone())
    }

    fn context(&self) -> String {
        format!("{CONFIG_PREFIX}{}", self.name)
    }

    pub fn info(&self) -> TierInfo {
        let auth = match &self.auth {
            Auth::SharedKey(_) => "account key",
            Auth::Sas(_) => "SAS",
            Auth::Entra(signin) => signin.kind(),
        };
        TierInfo {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            account: self.account.clone(),
            container: self.container.clone(),
            prefix: self.prefix.clone(),
            access_tier: self.access_tier.clone(),
            auth: auth.to_owned(),
        }
    }
}

/// Parsed tiers by name, with the stored text they came from (reparsed when it changes).
type TierCache = RwLock<HashMap<String, (String, Arc<Tier>)>>;

/// The registry: what decodes and checks tiers, and the tiers decoded so far.
pub struct Tiers {
    /// Seals tier credentials; derived from the root credentials.
    seal_key: Key,
    cache: TierCache,
    http: Client,
    entra: EntraSettings,
    /// The process's Entra ID sign-in for Azure Storage, shared by every tier that uses
    /// one; made when first needed.
    storage_signin: OnceLock<Result<Arc<Signin>, String>>,
}

impl Tiers {
    pub fn new(root_password: &str, http: Client, entra: EntraSettings) -> Tiers {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(root_password.as_bytes()).expect("HMAC takes any key length");
        mac.update(b"ferrite: remote tier credentials");
        let seal_key = Key(mac.finalize().into_bytes().into());
        Tiers { seal_key, cache: RwLock::default(), http, entra, storage_signin: OnceLock::new() }
    }

    pub fn http(&self) -> &Client {
        &self.http
    }

    fn storage_signin(&self) -> Result<Arc<Signin>, String> {
        let made = || Signin::new(&self.entra, STORAGE_RESOURCE, &self.http).map(Arc::new);
        self.storage_signin.get_or_init(made).clone()
    }

    /// The tier called `name`, if configured.
    pub fn get(&self, engine: &Engine, name: &str) -> Result<Option<Arc<Tier>>> {
        let Some(text) = engine.cluster_config(&format!("{CONFIG_PREFIX}{name}")) else { return Ok(None) };
        if let Some((seen, tier)) = self.cache.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            if *seen == text {
                return Ok(Some(tier.clone()));
            }
        }
        let tier = Arc::new(self.decode(name, &text).map_err(Error::TierDamaged)?);
        self.cache.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), (text, tier.clone()));
        Ok(Some(tier))
    }

    /// Whether a tier called `name` is configured (and decodes).
    pub fn exists(&self, engine: &Engine, name: &str) -> bool {
        self.get(engine, name).ok().flatten().is_some()
    }

    /// The names of the configured tiers.
    pub fn names(&self, engine: &Engine) -> Vec<String> {
        engine
            .cluster_configs(CONFIG_PREFIX)
            .into_iter()
            .map(|(item, _)| item[CONFIG_PREFIX.len()..].to_owned())
            .collect()
    }

    /// Whether any tier is configured (without one, no object can be in a tier).
    pub fn any(&self, engine: &Engine) -> bool {
        !engine.cluster_configs(CONFIG_PREFIX).is_empty()
    }

    /// Every configured tier, credentials left out.
    pub fn list(&self, engine: &Engine) -> Result<TierList> {
        let mut tiers = Vec::new();
        for name in self.names(engine) {
            if let Some(tier) = self.get(engine, &name)? {
                tiers.push(tier.info());
            }
        }
        Ok(TierList { tiers })
    }

    /// The stored form: `key=value` lines, values percent-encoded, the credential sealed (an
    /// identity tier has none).
    fn encode(&self, tier: &Tier) -> Result<String> {
        let (kind, secret) = match &tier.auth {
            Auth::SharedKey(key) => ("shared-key", Some(key.clone())),
            Auth::Sas(sas) => ("sas", Some(sas.as_bytes().to_vec())),
            Auth::Entra(_) => ("identity", None),
        };
        let sealed = match secret {
            Some(secret) => seal_secret(&self.seal_key, &secret, tier.context().as_bytes())?,
            None => Vec::new(),
        };
        Ok(format!(
            "endpoint={}\naccount={}\ncontainer={}\nprefix={}\naccess_tier={}\nauth={kind}\nsecret={}\n",
            enc(&tier.endpoint),
            enc(&tier.account),
            enc(&tier.container),
            enc(&tier.prefix),
            enc(&tier.access_tier),
            B64.encode(&sealed)
        ))
    }

    fn decode(&self, name: &str, text: &str) -> Result<Tier, String> {
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
            tier.auth = Auth::Entra(self.storage_signin().map_err(|e| format!("tier {name}: {e}"))?);
            return Ok(tier);
        }
        let sealed = B64.decode(field("secret")?.trim()).map_err(|_| format!("tier {name}: damaged secret"))?;
        let secret = open_secret(&self.seal_key, &sealed, tier.context().as_bytes())
            .map_err(|_| format!("tier {name}: its credential does not open (were the root credentials changed?)"))?;
        tier.auth = match kind.as_str() {
            "shared-key" => Auth::SharedKey(secret),
            "sas" => Auth::Sas(String::from_utf8(secret).map_err(|_| format!("tier {name}: damaged SAS"))?),
            other => return Err(format!("tier {name}: unknown auth {other}")),
        };
        Ok(tier)
    }

    fn credential_from(&self, spec: &TierSpec) -> Result<Auth> {
        match (&spec.account_key, &spec.sas, spec.identity()) {
            (Some(key), None, false) => B64
                .decode(key.trim())
                .ok()
                .filter(|k| !k.is_empty())
                .map(Auth::SharedKey)
                .ok_or_else(|| Error::TierInvalid("account_key must be the account key in base64".into())),
            (None, Some(sas), false) if !sas.is_empty() => Ok(Auth::Sas(sas.trim_start_matches('?').to_owned())),
            (None, None, true) => self.storage_signin().map(Auth::Entra).map_err(Error::TierInvalid),
            _ => Err(Error::TierInvalid("give exactly one of account_key, sas and identity".into())),
        }
    }

    /// Adds a tier after a test write, read and delete in its container. A container (under
    /// the prefix) that already holds blobs is refused unless `force`.
    pub async fn add(&self, engine: &Engine, name: &str, spec: &TierSpec, force: bool) -> Result<TierInfo> {
        check_name(name)?;
        if self.get(engine, name)?.is_some() {
            return Err(Error::TierConflict(format!("Tier {name} exists already; edit or remove it.")));
        }
        let access_tier = spec.access_tier.clone().unwrap_or_else(|| "Hot".into());
        if access_tier.eq_ignore_ascii_case("Archive") {
            return Err(Error::TierInvalid(
                "The Archive access tier cannot serve reads immediately; use Hot, Cool or Cold.".into(),
            ));
        }
        let Some(access_tier) = ACCESS_TIERS.iter().find(|t| t.eq_ignore_ascii_case(&access_tier)) else {
            return Err(Error::TierInvalid("access_tier must be Hot, Cool or Cold".into()));
        };
        let prefix = spec.prefix.clone().unwrap_or_default();
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix } else { format!("{prefix}/") };
        let tier = Tier {
            name: name.to_owned(),
            endpoint: spec.endpoint.clone().unwrap_or_default(),
            account: spec.account.clone().unwrap_or_default(),
            container: spec.container.clone().unwrap_or_default(),
            prefix,
            access_tier: access_tier.to_string(),
            auth: self.credential_from(spec)?,
        };
        self.check_and_store(engine, &tier, force).await?;
        Ok(tier.info())
    }

    /// Replaces a tier's credential, after the same test write, read and delete.
    pub async fn edit(&self, engine: &Engine, name: &str, spec: &TierSpec) -> Result<TierInfo> {
        let Some(current) = self.get(engine, name)? else { return Err(Error::NoSuchTier(name.to_owned())) };
        let tier = Tier { auth: self.credential_from(spec)?, ..(*current).clone() };
        self.check_and_store(engine, &tier, true).await?;
        Ok(tier.info())
    }

    /// Checks `tier` against its container (see `probe`), then stores it.
    async fn check_and_store(&self, engine: &Engine, tier: &Tier, force: bool) -> Result<()> {
        check_endpoint(&tier.endpoint, &tier.auth)?;
        let container = tier.container(&self.http).map_err(Error::TierInvalid)?;
        let (prefix, name) = (tier.prefix.clone(), tier.name.clone());
        crate::blocking::blocking(move || probe(&container, &prefix, force)).await?.map_err(|e| match e {
            Probe::Blob(source) => Error::TierCheck { tier: name, source },
            Probe::HoldsData(blob) => Error::TierConflict(format!(
                "Tier {name}: the container already holds data ({blob}); add it with force to use it anyway."
            )),
            Probe::Mismatch => Error::TierInvalid(format!("Tier {name}: the test blob read back wrong")),
        })?;
        engine.put_cluster_config(&tier.context(), Some(self.encode(tier)?)).await?;
        Ok(())
    }

    /// Removes a tier that no lifecycle rule names and no object lives in (removing it would
    /// make those objects unreadable).
    pub async fn remove(&self, engine: &Engine, name: &str) -> Result<()> {
        if self.get(engine, name)?.is_none() {
            return Err(Error::NoSuchTier(name.to_owned()));
        }
        for (bucket, _) in engine.list_buckets() {
            if let Ok(Some(doc)) = engine.bucket_config(&bucket, rules::BUCKET_CONFIG) {
                if rules::names_tier(&doc, name) {
                    return Err(Error::TierConflict(format!(
                        "Tier {name} is used by the lifecycle configuration of bucket {bucket}."
                    )));
                }
            }
            let mut walk = store::walk(engine, &bucket);
            while let Some(object) = walk.next().await? {
                if object.tier.as_deref() == Some(name) {
                    return Err(Error::TierConflict(format!(
                        "Tier {name} holds objects, {bucket}/{} among them: delete them first.",
                        object.key
                    )));
                }
            }
        }
        engine.put_cluster_config(&format!("{CONFIG_PREFIX}{name}"), None).await?;
        Ok(())
    }
}

/// Credentials travel in every request: plain http is only for a local emulator. The
/// server's own identity token is valid on every account the identity has a role on, so it
/// is only sent to Azure Blob itself (or a local emulator).
fn check_endpoint(endpoint: &str, auth: &Auth) -> Result<()> {
    let url = Url::parse(endpoint).map_err(Error::TierInvalid)?;
    let loopback = url.is_loopback();
    if !url.tls && !loopback {
        return Err(Error::TierInvalid("A tier endpoint must be https:// (http only on loopback).".into()));
    }
    if !url.host.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)) {
        return Err(Error::TierInvalid("A tier endpoint's host is a DNS name or an IP address.".into()));
    }
    let blob_host = BLOB_HOST_SUFFIXES.iter().any(|suffix| url.host.to_ascii_lowercase().ends_with(suffix));
    if matches!(auth, Auth::Entra(_)) && !blob_host && !loopback {
        return Err(Error::TierInvalid(
            "A tier using the server's identity must be an Azure Blob endpoint (ACCOUNT.blob.core.windows.net or a sovereign cloud's).".into(),
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    let fine = (1..=NAME_BYTES_MAX).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !fine {
        return Err(Error::TierInvalid(
            "A tier name is 1-64 upper-case letters, digits, '_' and '-', starting with a letter.".into(),
        ));
    }
    if S3_CLASSES.contains(&name) {
        return Err(Error::TierInvalid(format!("{name} is an S3 storage class, not a tier name")));
    }
    Ok(())
}

enum Probe {
    Blob(BlobError),
    HoldsData(String),
    Mismatch,
}

/// A test write, read back and delete of a small blob under `prefix` (blocking). Unless
/// `force`, a container holding blobs under the prefix is refused first.
fn probe(container: &Container, prefix: &str, force: bool) -> Result<(), Probe> {
    if !force {
        if let Some(blob) = container.list(prefix, 1).map_err(Probe::Blob)?.pop() {
            return Err(Probe::HoldsData(blob));
        }
    }
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let blob = format!("{prefix}.ferrite-probe-{nonce}");
    let payload = format!("ferrite tier check {nonce}").into_bytes();
    let id = azure_blob::block_id(0);
    container.put_block(&blob, &id, payload.clone()).map_err(Probe::Blob)?;
    container.commit_blocks(&blob, &[id], "Hot", &[]).map_err(Probe::Blob)?;
    let back = container.get_range(&blob, 0, payload.len() as u64 - 1, None).map_err(Probe::Blob)?;
    container.delete(&blob).map_err(Probe::Blob)?;
    if back != payload {
        return Err(Probe::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_endpoints_and_specs_are_checked_as_before() {
        assert!(check_name("COOL").is_ok() && check_name("A-1_B").is_ok());
        for bad in ["", "cool", "1A", "GLACIER", &"A".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let sas = Auth::Sas("sv=1".into());
        assert!(check_endpoint("https://a.blob.core.windows.net", &sas).is_ok());
        assert!(check_endpoint("http://127.0.0.1:10000/devstoreaccount1", &sas).is_ok());
        assert!(check_endpoint("http://example.com", &sas).is_err(), "credentials never go in clear");
        let spec: TierSpec = serde_json::from_str(r#"{"identity":"true","prefix":"p"}"#).unwrap();
        assert!(spec.identity());
        let spec: TierSpec = serde_json::from_str(r#"{"identity":"false"}"#).unwrap();
        assert!(!spec.identity());
    }

    #[test]
    fn stored_tiers_round_trip_and_open_only_under_the_same_root_credentials() {
        let http = Client::new(&Default::default());
        let tiers = Tiers::new("root-secret", http.clone(), EntraSettings::default());
        let tier = Tier {
            name: "COOL".into(),
            endpoint: "http://127.0.0.1:10000/devstoreaccount1".into(),
            account: "devstoreaccount1".into(),
            container: "c".into(),
            prefix: "data/a=b/".into(),
            access_tier: "Cool".into(),
            auth: Auth::SharedKey(vec![7; 64]),
        };
        let text = tiers.encode(&tier).unwrap();
        assert!(!text.contains("BwcH"), "the key is sealed: {text}");
        let back = tiers.decode("COOL", &text).unwrap();
        assert_eq!(back.info(), tier.info());
        assert!(matches!(back.auth, Auth::SharedKey(k) if k == vec![7; 64]));
        let other = Tiers::new("another", http, EntraSettings::default());
        assert!(other.decode("COOL", &text).err().unwrap_or_default().contains("root credentials"));
        let json = serde_json::to_string(&TierList { tiers: vec![tier.info()] }).unwrap();
        assert!(json.starts_with("{\"tiers\":[{\"name\":\"COOL\",\"endpoint\":"), "{json}");
        assert!(json.contains("\"access_tier\":\"Cool\",\"auth\":\"account key\"}"), "{json}");
    }
}
