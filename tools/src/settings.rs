//! Every setting of `ferrite server`, each a flag and its `FERRITE_*` variable (clap reads
//! both, once, in `main`), and [`Settings`], the one value they become: the libraries'
//! settings structs (engine, S3 front, KMS, outbound HTTP, Entra ID, tier mover) plus what
//! the binary itself uses (where to listen, the I/O driver, the memory budget). No library
//! reads the environment; this module is where every setting is named and defaulted.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ferrite_engine::{EngineConfig, FaultConfig, HealConfig, SNAPSHOT_EVERY_BYTES_DEFAULT};
use ferrite_s3::http::{ClientTimeouts, RATE_MIN_BYTES_PER_SEC_DEFAULT};
use ferrite_s3::kms::KmsSettings;
use ferrite_s3::md5x::KernelChoice;
use ferrite_s3::Config;
use ferrite_tiering::outbound::entra::EntraSettings;
use ferrite_tiering::outbound::http::HttpSettings;
use ferrite_tiering::MoverSettings;

use crate::logging::LogArgs;

/// The drives when none are given: four directories under ./data, so erasure coding is on.
pub const DRIVES_DEFAULT: &str = "./data/d{1...4}";
/// The region when none is set: the one AWS SDKs fall back to, so clients work unconfigured.
pub const REGION_DEFAULT: &str = "us-east-1";
/// The development credentials; start-up warns while they are in use.
pub const ROOT_DEFAULT: &str = "ferriteadmin";
const MEMORY_BUDGET_MIB_DEFAULT: usize = 1024;
const CACHE_MIB_DEFAULT: usize = 512;
/// How long start-up keeps trying to bind a listening address that is still taken (a
/// crashed predecessor's socket, released by the kernel only after its io_uring is torn down).
const BIND_RETRY_SECS_DEFAULT: u64 = 30;
/// The most drives one `{a...b}` range may name (a typo like `{1...10000}` is refused).
const DRIVE_RANGE_MAX: u32 = 1024;

/// `ferrite server`: every flag also reads the variable named beside it.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Drive directories. One is a single drive without parity; four or more are erasure
    /// coded. `/data/d{1...4}` expands to /data/d1 .. /data/d4. The default is four drives
    /// (2 data + 2 parity).
    #[arg(value_name = "DRIVE", default_value = DRIVES_DEFAULT)]
    pub drives: Vec<String>,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub kms: KmsArgs,
    #[command(flatten)]
    pub outbound: OutboundArgs,
    #[command(flatten)]
    pub heal: HealArgs,
    #[command(flatten)]
    pub tiering: TieringArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub testing: TestingArgs,
}

/// Where and how clients reach the server.
#[derive(Args, Debug)]
#[command(next_help_heading = "Serving")]
pub struct ListenArgs {
    /// Where to listen; 0.0.0.0:9000 for all interfaces (port 0: any free port, logged)
    #[arg(long, env = "FERRITE_ADDRESS", value_name = "HOST:PORT", default_value = "127.0.0.1:9000")]
    pub address: String,
    /// Also accept virtual-host-style requests to BUCKET.DOMAIN
    #[arg(long, env = "FERRITE_DOMAIN")]
    pub domain: Option<String>,
    /// The region clients sign for: a request signed for another is refused with
    /// AuthorizationHeaderMalformed naming this one, as AWS does
    #[arg(long, env = "FERRITE_REGION", value_name = "REGION", default_value = REGION_DEFAULT)]
    pub region: String,
    /// Serve HTTPS with DIR/public.crt (chain, PEM) and DIR/private.key (PEM)
    #[arg(long, env = "FERRITE_CERTS_DIR", value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// The root user's access key
    #[arg(long, env = "FERRITE_ROOT_USER", default_value = ROOT_DEFAULT)]
    pub root_user: String,
    /// The root user's secret key
    #[arg(long, env = "FERRITE_ROOT_PASSWORD", default_value = ROOT_DEFAULT, hide_env_values = true)]
    pub root_password: String,
    /// Listen on a non-loopback address although the root password is the public default
    #[arg(long, env = "FERRITE_ALLOW_DEFAULT_CREDENTIALS", value_name = "on|off", num_args = 0..=1,
          default_value = "off", default_missing_value = "on", value_parser = switch)]
    pub allow_default_credentials: bool,
    /// Keep trying this long to bind an address that is still taken (0: fail at once)
    #[arg(long, env = "FERRITE_BIND_RETRY_SECS", value_name = "SECS", default_value_t = BIND_RETRY_SECS_DEFAULT)]
    pub bind_retry_secs: u64,
    /// Open client connections, all cores together; beyond it new ones wait in the kernel's
    /// backlog [default: from the file-descriptor limit, see ARCHITECTURE.md]
    #[arg(long, env = "FERRITE_CONNECTIONS_MAX", value_name = "N")]
    pub connections_max: Option<usize>,
    /// Close connections silent this long, idle or mid-request [default: 60 idle, 30 inside a request]
    #[arg(long, env = "FERRITE_CLIENT_TIMEOUT_SECS", value_name = "SECS")]
    pub client_timeout_secs: Option<u64>,
    /// A request body or response must move at least this many bytes a second, measured
    /// over each stretch of the in-request timeout the server spends waiting for the client
    /// (0: only the timeout)
    #[arg(long, env = "FERRITE_CLIENT_RATE_MIN_BYTES_PER_SEC", value_name = "BYTES",
          default_value_t = RATE_MIN_BYTES_PER_SEC_DEFAULT)]
    pub client_rate_min_bytes_per_sec: u64,
    /// Object data in flight, all cores together; beyond it requests wait, then get 503 SlowDown
    #[arg(long, env = "FERRITE_MEMORY_BUDGET_MIB", value_name = "MIB", default_value_t = MEMORY_BUDGET_MIB_DEFAULT)]
    pub memory_budget_mib: usize,
    /// `GET /ferrite/metrics` (Prometheus) requires this bearer token [default: public]
    #[arg(long, env = "FERRITE_METRICS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// ETag MD5 kernel: `0` one body at a time, `avx2` AVX2 lanes even where AVX-512 exists;
    /// otherwise the widest the CPU has
    #[arg(long, env = "FERRITE_MD5_SIMD", value_name = "0|avx2")]
    pub md5_simd: Option<String>,
}

/// Drives, executors and the memory they use.
#[derive(Args, Debug)]
#[command(next_help_heading = "Storage")]
pub struct StorageArgs {
    /// Parity drives [default: 0 for 1 drive, 1 for 2-3, 2 for 4-5, 3 for 6-7, 4 for 8+]
    #[arg(long, env = "FERRITE_PARITY", value_name = "N")]
    pub parity: Option<usize>,
    /// Executors, one per core [default: 0, every core]
    #[arg(long, env = "FERRITE_CORES", value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub cores: usize,
    /// Disk I/O: `auto` io_uring where the kernel allows it, else a thread pool;
    /// `blocking` forces the thread pool (network then on epoll)
    #[arg(long, env = "FERRITE_IO", value_enum, default_value_t = IoMode::Auto)]
    pub io: IoMode,
    /// Data blocks read from the drives kept in memory, split between the cores (0: off)
    #[arg(long, env = "FERRITE_CACHE_MIB", value_name = "MIB", default_value_t = CACHE_MIB_DEFAULT)]
    pub cache_mib: usize,
    /// Metadata log each core appends between index snapshots
    #[arg(long, env = "FERRITE_SNAPSHOT_BYTES", value_name = "BYTES", default_value_t = SNAPSHOT_EVERY_BYTES_DEFAULT)]
    pub snapshot_bytes: u64,
}

/// How disk I/O runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IoMode {
    Auto,
    Blocking,
}

/// Server-side encryption and the key management service it uses.
#[derive(Args, Debug)]
#[command(next_help_heading = "Encryption")]
pub struct KmsArgs {
    /// Static KMS keys for SSE-S3 and SSE-KMS, the first the default
    #[arg(long, env = "FERRITE_KMS_SECRET_KEY", value_name = "NAME:BASE64[,...]", hide_env_values = true)]
    pub kms_secret_key: Option<String>,
    /// Encrypt every new object (SSE-S3) unless the request or bucket says otherwise; needs a KMS
    #[arg(long, env = "FERRITE_KMS_AUTO_ENCRYPTION", value_name = "on|off", num_args = 0..=1,
          default_value = "off", default_missing_value = "on", value_parser = switch)]
    pub kms_auto_encryption: bool,
    /// OpenBao/Vault transit: the server's address (then token and key are needed)
    #[arg(long, env = "FERRITE_KMS_VAULT_ADDR", value_name = "URL")]
    pub kms_vault_addr: Option<String>,
    /// OpenBao/Vault token
    #[arg(long, env = "FERRITE_KMS_VAULT_TOKEN", hide_env_values = true)]
    pub kms_vault_token: Option<String>,
    /// OpenBao/Vault transit key used when a request names none
    #[arg(long, env = "FERRITE_KMS_VAULT_KEY", value_name = "KEY")]
    pub kms_vault_key: Option<String>,
    /// OpenBao/Vault transit mount
    #[arg(long, env = "FERRITE_KMS_VAULT_MOUNT", value_name = "MOUNT", default_value = "transit")]
    pub kms_vault_mount: String,
    /// Azure Key Vault or Managed HSM URL (then the key is needed); signs in with Entra ID
    #[arg(long, env = "FERRITE_KMS_AZURE_VAULT_URL", value_name = "URL")]
    pub kms_azure_vault_url: Option<String>,
    /// Azure Key Vault key used when a request names none
    #[arg(long, env = "FERRITE_KMS_AZURE_KEY", value_name = "KEY")]
    pub kms_azure_key: Option<String>,
    /// Key Vault wrap algorithm: RSA-OAEP-256, RSA-OAEP, or A256KW (Managed HSM AES keys)
    #[arg(long, env = "FERRITE_KMS_AZURE_WRAP_ALG", value_name = "ALG", default_value = "RSA-OAEP-256")]
    pub kms_azure_wrap_alg: String,
    /// The token audience, when the vault's host does not imply it
    #[arg(long, env = "FERRITE_KMS_AZURE_RESOURCE", value_name = "URL")]
    pub kms_azure_resource: Option<String>,
}

/// Calls to other services (KMS, Entra ID, Azure Blob tiers): trust and sign-in.
#[derive(Args, Debug)]
#[command(next_help_heading = "Outbound calls and Entra ID sign-in")]
pub struct OutboundArgs {
    /// Extra trusted roots for outbound https (PEM)
    #[arg(long, env = "FERRITE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The system's CA bundle, when not at one of the usual paths
    #[arg(long, env = "SSL_CERT_FILE", value_name = "FILE")]
    pub ssl_cert_file: Option<PathBuf>,
    /// Entra ID's token endpoint host (sovereign clouds) [default: the public one]
    #[arg(long, env = "AZURE_AUTHORITY_HOST", value_name = "URL")]
    pub azure_authority_host: Option<String>,
    /// Entra ID tenant
    #[arg(long, env = "AZURE_TENANT_ID", value_name = "ID")]
    pub azure_tenant_id: Option<String>,
    /// Entra ID application (client) id, or a user-assigned managed identity's
    #[arg(long, env = "AZURE_CLIENT_ID", value_name = "ID")]
    pub azure_client_id: Option<String>,
    /// Entra ID client secret
    #[arg(long, env = "AZURE_CLIENT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub azure_client_secret: Option<String>,
    /// AKS workload identity: the projected service account token
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE", value_name = "FILE")]
    pub azure_federated_token_file: Option<String>,
    /// The instance metadata service's token URL [default: Azure's]
    #[arg(long, env = "FERRITE_AZURE_IMDS_URL", value_name = "URL")]
    pub azure_imds_url: Option<String>,
    /// The former name of --azure-imds-url, still read
    #[arg(long, env = "FERRITE_KMS_AZURE_IMDS_URL", value_name = "URL", hide = true)]
    pub kms_azure_imds_url: Option<String>,
}

/// The background scanner, heals and the drive monitor.
#[derive(Args, Debug)]
#[command(next_help_heading = "Healing")]
pub struct HealArgs {
    /// Between background scans
    #[arg(long, env = "FERRITE_SCAN_INTERVAL_SECS", value_name = "SECS",
          default_value_t = HealConfig::default().scan_interval.as_secs())]
    pub scan_interval_secs: u64,
    /// Scan reads per core, MiB/s
    #[arg(long, env = "FERRITE_SCAN_MIBPS", value_name = "MIBPS", default_value_t = HealConfig::default().scan_rate >> 20)]
    pub scan_mibps: u64,
    /// Heal reads per core, MiB/s (0: unlimited)
    #[arg(long, env = "FERRITE_HEAL_MIBPS", value_name = "MIBPS", default_value_t = HealConfig::default().heal_rate >> 20)]
    pub heal_mibps: u64,
    /// How often the drives' formats are checked (0: never)
    #[arg(long, env = "FERRITE_DRIVE_CHECK_SECS", value_name = "SECS",
          default_value_t = HealConfig::default().drive_check.as_secs())]
    pub drive_check_secs: u64,
    /// Age of unreferenced data files the scanner removes
    #[arg(long, env = "FERRITE_LEFTOVER_AGE_SECS", value_name = "SECS",
          default_value_t = HealConfig::default().leftover_age.as_secs())]
    pub leftover_age_secs: u64,
    /// How soon the void of a log batch that missed the write quorum is retried when no
    /// write comes first (at least 1)
    #[arg(long, env = "FERRITE_VOID_RETRY_SECS", value_name = "SECS",
          default_value_t = HealConfig::default().void_retry.as_secs())]
    pub void_retry_secs: u64,
}

/// The tier mover: lifecycle passes and transitions.
#[derive(Args, Debug)]
#[command(next_help_heading = "Tiering")]
pub struct TieringArgs {
    /// Between lifecycle passes (0: never; run them with `ferrite admin lifecycle run`)
    #[arg(long, env = "FERRITE_LIFECYCLE_INTERVAL_SECS", value_name = "SECS",
          default_value_t = MoverSettings::default().pass_interval.as_secs())]
    pub lifecycle_interval_secs: u64,
    /// How fast transitions upload, MiB/s (0: unlimited)
    #[arg(long, env = "FERRITE_LIFECYCLE_MIBPS", value_name = "MIBPS", default_value_t = 64)]
    pub lifecycle_mibps: u64,
    /// The length of a lifecycle day (tests shorten it; then due times are not rounded to midnight)
    #[arg(long, env = "FERRITE_LIFECYCLE_DAY_SECS", value_name = "SECS",
          default_value_t = MoverSettings::default().day_ms / 1000)]
    pub lifecycle_day_secs: i64,
}

/// Settings only tests use.
#[derive(Args, Debug)]
#[command(next_help_heading = "Testing")]
pub struct TestingArgs {
    /// Accept SSE-C keys over plain HTTP (AWS refuses them)
    #[arg(long, env = "FERRITE_SSE_C_ALLOW_HTTP", value_name = "on|off", num_args = 0..=1,
          default_value = "off", default_missing_value = "on", value_parser = switch)]
    pub sse_c_allow_http: bool,
    /// Faults injected into the drive I/O path (test builds only; engine/src/fault.rs)
    #[arg(long, env = "FERRITE_FAULTS", value_name = "RULES")]
    pub faults: Option<String>,
    /// A file of fault rules, re-read whenever it changes (test builds only)
    #[arg(long, env = "FERRITE_FAULTS_FILE", value_name = "FILE")]
    pub faults_file: Option<PathBuf>,
}

/// A switch as the variables have always taken it: on, 1 or true; off, 0 or false.
fn switch(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" => Ok(true),
        "off" | "0" | "false" => Ok(false),
        other => Err(format!("{other:?} is neither on nor off")),
    }
}

/// Where the server listens, and how many connections it keeps.
pub struct ListenSettings {
    pub address: String,
    pub certs_dir: Option<PathBuf>,
    /// How long a taken address is retried before start-up fails.
    pub bind_retry: Duration,
    /// Open connections, all cores together (None: derived from the descriptor limit).
    pub connections_max: Option<usize>,
    /// Serve on a non-loopback address even with the default root password.
    pub allow_default_credentials: bool,
}

/// Everything the server runs with, built once from the command line and environment.
pub struct Settings {
    pub engine: EngineConfig,
    pub front: Config,
    pub kms: KmsSettings,
    pub http: HttpSettings,
    pub entra: EntraSettings,
    pub mover: MoverSettings,
    pub md5: KernelChoice,
    pub io: IoMode,
    pub listen: ListenSettings,
    pub memory_budget_bytes: usize,
}

impl ServerArgs {
    /// The settings these arguments describe; an error names the setting that is wrong.
    pub fn settings(self) -> Result<Settings, String> {
        let drives = expand_all(&self.drives)?;
        let entra = self.outbound.entra();
        Ok(Settings {
            engine: self.storage.engine(drives, self.heal.config(), self.testing.faults()),
            kms: self.kms.settings(&entra)?,
            front: front_config(self.listen.front()?, &self.kms, &self.testing),
            http: self.outbound.http(),
            entra,
            mover: self.tiering.mover(),
            md5: self.listen.md5_kernel(),
            io: self.storage.io,
            memory_budget_bytes: self.listen.memory_budget_mib << 20,
            listen: ListenSettings {
                address: self.listen.address,
                certs_dir: self.listen.certs_dir,
                bind_retry: Duration::from_secs(self.listen.bind_retry_secs),
                connections_max: self.listen.connections_max.filter(|n| *n > 0),
                allow_default_credentials: self.listen.allow_default_credentials,
            },
        })
    }
}

/// The S3 front's settings; `base` carries the serving ones.
fn front_config(base: Config, kms: &KmsArgs, testing: &TestingArgs) -> Config {
    Config { encrypt_everything: kms.kms_auto_encryption, sse_c_allow_http: testing.sse_c_allow_http, ..base }
}

impl ListenArgs {
    fn front(&self) -> Result<Config, String> {
        Ok(Config {
            root_user: self.root_user.clone(),
            root_password: self.root_password.clone(),
            domain: self.domain.clone(),
            region: checked_region(&self.region)?,
            client_timeouts: self.client_timeouts(),
            encrypt_everything: false,
            sse_c_allow_http: false,
            metrics_token: self.metrics_token.clone(),
        })
    }

    /// One value replaces both the idle and the read timeout (the tests shorten them);
    /// unset or 0: the defaults of http.rs.
    fn client_timeouts(&self) -> ClientTimeouts {
        let rate_min_bytes_per_sec = self.client_rate_min_bytes_per_sec;
        match self.client_timeout_secs {
            Some(secs) if secs > 0 => {
                let timeout = Duration::from_secs(secs);
                ClientTimeouts { idle: timeout, read: timeout, rate_min_bytes_per_sec }
            }
            _ => ClientTimeouts { rate_min_bytes_per_sec, ..ClientTimeouts::default() },
        }
    }

    /// An unknown kernel name runs the widest kernel, with a warning, as it always has.
    fn md5_kernel(&self) -> KernelChoice {
        match self.md5_simd.as_deref() {
            Some("0") => KernelChoice::Scalar,
            Some("avx2") => KernelChoice::Avx2,
            None => KernelChoice::Widest,
            Some(other) => {
                tracing::warn!(value = other, "FERRITE_MD5_SIMD is neither 0 nor avx2; the widest kernel runs");
                KernelChoice::Widest
            }
        }
    }
}

impl StorageArgs {
    fn engine(&self, drives: Vec<PathBuf>, heal: HealConfig, faults: FaultConfig) -> EngineConfig {
        let cores = match self.cores {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        EngineConfig {
            drives,
            parity: self.parity,
            cores,
            snapshot_every_bytes: self.snapshot_bytes,
            heal,
            cache_bytes: self.cache_mib.saturating_mul(1 << 20),
            faults,
        }
    }
}

impl KmsArgs {
    /// Azure Key Vault if its URL is set, else OpenBao/Vault if its address is, else static
    /// keys if given, else none.
    fn settings(&self, entra: &EntraSettings) -> Result<KmsSettings, String> {
        let needed = |value: &Option<String>, name: &str| value.clone().ok_or(format!("{name} is not set"));
        if let Some(vault_url) = &self.kms_azure_vault_url {
            return Ok(KmsSettings::Azure {
                vault_url: vault_url.clone(),
                default_key: needed(&self.kms_azure_key, "FERRITE_KMS_AZURE_KEY (--kms-azure-key)")?,
                wrap_alg: self.kms_azure_wrap_alg.clone(),
                resource: self.kms_azure_resource.clone(),
                signin: entra.clone(),
            });
        }
        if let Some(addr) = &self.kms_vault_addr {
            return Ok(KmsSettings::Vault {
                addr: addr.clone(),
                token: needed(&self.kms_vault_token, "FERRITE_KMS_VAULT_TOKEN (--kms-vault-token)")?,
                default_key: needed(&self.kms_vault_key, "FERRITE_KMS_VAULT_KEY (--kms-vault-key)")?,
                mount: self.kms_vault_mount.clone(),
            });
        }
        Ok(self.kms_secret_key.clone().map_or(KmsSettings::None, |keys| KmsSettings::Static { keys }))
    }
}

impl OutboundArgs {
    fn http(&self) -> HttpSettings {
        HttpSettings { system_ca_bundle: self.ssl_cert_file.clone(), ca_file: self.ca_file.clone() }
    }

    fn entra(&self) -> EntraSettings {
        EntraSettings {
            authority_host: self.azure_authority_host.clone(),
            tenant_id: self.azure_tenant_id.clone(),
            client_id: self.azure_client_id.clone(),
            client_secret: self.azure_client_secret.clone(),
            federated_token_file: self.azure_federated_token_file.clone(),
            imds_url: self.azure_imds_url.clone().or_else(|| self.kms_azure_imds_url.clone()),
        }
    }
}

impl HealArgs {
    fn config(&self) -> HealConfig {
        HealConfig {
            scan_interval: Duration::from_secs(self.scan_interval_secs),
            scan_rate: self.scan_mibps << 20,
            heal_rate: self.heal_mibps << 20,
            drive_check: Duration::from_secs(self.drive_check_secs),
            leftover_age: Duration::from_secs(self.leftover_age_secs),
            // At least a second: retrying back to back would hammer drives that keep failing.
            void_retry: Duration::from_secs(self.void_retry_secs.max(1)),
        }
    }
}

impl TieringArgs {
    fn mover(&self) -> MoverSettings {
        let defaults = MoverSettings::default();
        MoverSettings {
            pass_interval: Duration::from_secs(self.lifecycle_interval_secs),
            upload_bytes_per_sec: (self.lifecycle_mibps > 0).then_some(self.lifecycle_mibps << 20),
            day_ms: if self.lifecycle_day_secs > 0 {
                self.lifecycle_day_secs.saturating_mul(1000)
            } else {
                defaults.day_ms
            },
        }
    }
}

impl TestingArgs {
    /// Honoured by test builds only (the engine's fault-injection feature).
    fn faults(&self) -> FaultConfig {
        FaultConfig { rules: self.faults.clone(), rules_file: self.faults_file.clone() }
    }
}

/// A region name as AWS spells them (`us-east-1`, `eu-central-2`; any lower-case letters,
/// digits and dashes, so private regions work too).
fn checked_region(region: &str) -> Result<String, String> {
    let fine = !region.is_empty()
        && region.len() <= 64
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    match fine {
        true => Ok(region.to_owned()),
        false => Err(format!("--region {region:?}: a region is lower-case letters, digits and dashes")),
    }
}

/// Every drive argument with its ranges expanded.
fn expand_all(args: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut drives = Vec::new();
    for arg in args {
        drives.extend(expand(arg)?.into_iter().map(PathBuf::from));
    }
    Ok(drives)
}

/// Expands `prefix{1...4}suffix` into prefix1suffix .. prefix4suffix.
fn expand(arg: &str) -> Result<Vec<String>, String> {
    let (Some(open), Some(close)) = (arg.find('{'), arg.find('}')) else { return Ok(vec![arg.to_owned()]) };
    let inner = &arg[open + 1..close];
    let Some((a, b)) = inner.split_once("...") else { return Ok(vec![arg.to_owned()]) };
    let (a, b): (u32, u32) = match (a.parse(), b.parse()) {
        (Ok(a), Ok(b)) if a <= b && b - a < DRIVE_RANGE_MAX => (a, b),
        _ => return Err(format!("bad drive range {{{inner}}}")),
    };
    Ok((a..=b).map(|i| format!("{}{i}{}", &arg[..open], &arg[close + 1..])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_ranges_expand() {
        assert_eq!(expand("/d{1...3}/x").unwrap(), ["/d1/x", "/d2/x", "/d3/x"]);
        assert_eq!(expand("/plain").unwrap(), ["/plain"]);
        assert!(expand("/d{3...1}").is_err());
    }

    #[test]
    fn regions_are_names() {
        assert_eq!(checked_region("eu-central-2").unwrap(), "eu-central-2");
        for bad in ["", "US-EAST-1", "us_east_1", "us east", "a/b"] {
            assert!(checked_region(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn switches_read_as_before() {
        for on in ["on", "1", "true", "ON"] {
            assert_eq!(switch(on), Ok(true));
        }
        for off in ["off", "0", "false"] {
            assert_eq!(switch(off), Ok(false));
        }
        assert!(switch("maybe").is_err());
    }
}
