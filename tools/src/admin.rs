//! `ferrite admin heal | kms-rewrap | tier | lifecycle`: the admin API
//! (s3-front/src/ops/admin.rs) from the command line, signed with the root credentials,
//! body included (its SHA-256, never UNSIGNED-PAYLOAD, so no one on the path can change it).
//! Over https the server's certificate is verified against the system's roots and
//! `--ca-file`; a tier's account key or SAS is never sent over plain HTTP except to this
//! machine. The answers are JSON: printed as they come, and read with serde_json where the
//! exit status depends on them.

use std::time::Duration;

use clap::{Args, Subcommand};
use ferrite_tiering::tiers::TierSpec;
use serde::Deserialize;

use std::path::PathBuf;

use crate::client::{host_port, is_loopback, tls_name, Conn, REGION_DEFAULT};

const HEAL_PATH: &str = "/ferrite/admin/v1/heal";
/// How long the cores take to pick a heal request up before `--wait` looks.
const HEAL_PICKUP_DELAY: Duration = Duration::from_millis(300);
/// How often `--wait` prints the heal's progress.
const HEAL_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The admin API of a running server. Credentials: FERRITE_ROOT_USER / FERRITE_ROOT_PASSWORD
/// (default ferriteadmin / ferriteadmin).
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The server: https://HOST:PORT (its certificate is verified), or http://HOST:PORT
    #[arg(long, global = true, value_name = "URL", default_value = "http://127.0.0.1:9000")]
    pub endpoint: String,
    /// PEM certificates to trust for https, beside the system's roots (a private CA, or a
    /// self-signed server certificate)
    #[arg(long, global = true, env = "FERRITE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The system's CA bundle, when not at one of the usual paths
    #[arg(long, global = true, env = "SSL_CERT_FILE", value_name = "FILE")]
    pub ssl_cert_file: Option<PathBuf>,
    /// The region the server answers for (its FERRITE_REGION)
    #[arg(long, global = true, env = "FERRITE_REGION", value_name = "REGION", default_value = REGION_DEFAULT)]
    pub region: String,
    /// The root user's access key
    #[arg(long, global = true, env = "FERRITE_ROOT_USER", value_name = "K", default_value = "ferriteadmin")]
    pub access_key: String,
    /// The root user's secret key
    #[arg(
        long,
        global = true,
        env = "FERRITE_ROOT_PASSWORD",
        value_name = "S",
        default_value = "ferriteadmin",
        hide_env_values = true
    )]
    pub secret_key: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Start a heal (rebuild every shard and log copy now) and print its status as JSON;
    /// exits 1 when blocks were found unrecoverable or a drive is offline
    Heal(HealArgs),
    /// After rotating a key in the KMS, re-seal every SSE-S3/SSE-KMS object key under its
    /// newest version without rewriting data; prints what it did; exits 1 when some failed
    KmsRewrap,
    /// Remote tiers (Azure Blob containers) that lifecycle rules move objects to
    #[command(subcommand)]
    Tier(TierCommand),
    /// What the lifecycle passes did
    Lifecycle {
        #[command(subcommand)]
        action: Option<LifecycleCommand>,
    },
}

#[derive(Args, Debug)]
pub struct HealArgs {
    /// Only show the status; do not start a heal
    #[arg(long)]
    pub status: bool,
    /// Follow the heal until it is done, printing progress every second
    #[arg(long)]
    pub wait: bool,
    /// Read at most N MiB/s per core while healing (0: unlimited)
    #[arg(long, value_name = "N")]
    pub rate_mib: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum TierCommand {
    /// List the tiers (never their secrets)
    Ls,
    /// Add a tier: checked with a test write, read and delete; a container that holds data
    /// is refused unless --force
    Add {
        /// The tier's name, as lifecycle rules give it in StorageClass (upper case)
        name: String,
        #[command(flatten)]
        place: TierPlace,
        #[command(flatten)]
        credential: TierCredential,
        /// Accept a container that already holds data
        #[arg(long)]
        force: bool,
    },
    /// Change a tier's credential
    Edit {
        name: String,
        #[command(flatten)]
        credential: TierCredential,
    },
    /// Remove a tier
    Rm { name: String },
}

/// Where a tier's blobs go.
#[derive(Args, Debug)]
pub struct TierPlace {
    /// The Blob service, e.g. https://ACCOUNT.blob.core.windows.net
    #[arg(long, value_name = "URL")]
    pub azure_endpoint: Option<String>,
    /// The storage account
    #[arg(long, value_name = "A")]
    pub account: Option<String>,
    /// The container
    #[arg(long, value_name = "C")]
    pub container: Option<String>,
    /// A prefix for the blob names
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Hot (the default), Cool or Cold
    #[arg(long, value_name = "Hot|Cool|Cold")]
    pub access_tier: Option<String>,
}

/// How the server signs in to a tier: one of these.
#[derive(Args, Debug)]
pub struct TierCredential {
    /// The storage account key (from the variable keeps it out of argv and shell history)
    #[arg(long, env = "FERRITE_TIER_ACCOUNT_KEY", value_name = "KEY", hide_env_values = true)]
    pub account_key: Option<String>,
    /// A SAS token
    #[arg(long, env = "FERRITE_TIER_SAS", value_name = "TOKEN", hide_env_values = true)]
    pub sas: Option<String>,
    /// Sign in with the server's own Entra ID identity (AKS workload identity, a managed
    /// identity, or AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET); stores no secret
    #[arg(long)]
    pub identity: bool,
}

#[derive(Subcommand, Debug)]
pub enum LifecycleCommand {
    /// Run a lifecycle pass now (otherwise every FERRITE_LIFECYCLE_INTERVAL_SECS)
    Run,
}

/// Returns false when the server reports a problem (see `AdminCommand`).
pub fn run(args: AdminArgs) -> Result<bool, String> {
    let mut admin = Admin::connect(&args)?;
    match args.command {
        AdminCommand::Heal(heal) => admin.heal(&heal),
        AdminCommand::KmsRewrap => admin.kms_rewrap(),
        AdminCommand::Tier(tier) => admin.tier(tier),
        AdminCommand::Lifecycle { action: None } => admin.print("GET", "/ferrite/admin/v1/lifecycle", "", ""),
        AdminCommand::Lifecycle { action: Some(LifecycleCommand::Run) } => {
            admin.print("POST", "/ferrite/admin/v1/lifecycle/run", "", "")
        }
    }
}

/// A signed connection to one server's admin API.
struct Admin {
    endpoint: String,
    conn: Conn,
}

impl Admin {
    fn connect(args: &AdminArgs) -> Result<Admin, String> {
        let endpoint = args.endpoint.trim_end_matches('/').to_owned();
        let https = endpoint.starts_with("https://");
        let port = host_port(&endpoint).rsplit_once(':').map(|(_, p)| p);
        if !(https || endpoint.starts_with("http://")) || port.is_none_or(|p| p.parse::<u16>().is_err()) {
            return Err(format!("--endpoint {endpoint}: give https://HOST:PORT or http://HOST:PORT"));
        }
        let tls = match https {
            true if tls_name(&endpoint).is_none() => {
                return Err(format!(
                    "--endpoint {endpoint}: not a name or address a certificate can be checked against"
                ))
            }
            true => Some(ferrite_tiering::outbound::http::client_tls_config(
                args.ssl_cert_file.as_deref(),
                args.ca_file.as_deref(),
            )?),
            false => None,
        };
        let conn = Conn::new(&endpoint, &args.access_key, &args.secret_key)
            .with_region(&args.region)
            .sign_payload(true)
            .with_tls(&endpoint, tls.as_ref());
        Ok(Admin { endpoint, conn })
    }

    /// Refuses to put a secret on the wire in clear text to another machine (the server
    /// refuses it too, but by then it has crossed the network).
    fn check_secret_may_travel(&self, credential: &TierCredential) -> Result<(), String> {
        let secret = credential.account_key.is_some() || credential.sas.is_some();
        if secret && self.endpoint.starts_with("http://") && !is_loopback(&self.endpoint) {
            return Err(format!(
                "{}: refusing to send a tier's account key or SAS over plain HTTP to another machine; use https://",
                self.endpoint
            ));
        }
        Ok(())
    }

    /// One call; its body, or an error unless the status is 2xx.
    fn call(&mut self, method: &str, path: &str, query: &str, body: &str) -> Result<String, String> {
        let endpoint = &self.endpoint;
        let reply =
            self.conn.call(method, path, query, &[], body.as_bytes(), true).map_err(|e| format!("{endpoint}: {e}"))?;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        if !(200..300).contains(&reply.status) {
            return Err(format!("{endpoint}: HTTP {}: {text}", reply.status));
        }
        Ok(text)
    }

    /// One call whose answer is printed as it came.
    fn print(&mut self, method: &str, path: &str, query: &str, body: &str) -> Result<bool, String> {
        let text = self.call(method, path, query, body)?;
        if !text.is_empty() {
            println!("{text}");
        }
        Ok(true)
    }

    fn kms_rewrap(&mut self) -> Result<bool, String> {
        let body = self.call("POST", "/ferrite/admin/v1/kms/rewrap", "", "")?;
        println!("{body}");
        let report: RewrapReport =
            serde_json::from_str(&body).map_err(|e| format!("{}: {e}: {body}", self.endpoint))?;
        Ok(report.failed == Some(0))
    }

    fn tier(&mut self, command: TierCommand) -> Result<bool, String> {
        let path = |name: &str| format!("/ferrite/admin/v1/tier/{name}");
        match command {
            TierCommand::Ls => self.print("GET", "/ferrite/admin/v1/tier", "", ""),
            TierCommand::Add { name, place, credential, force } => {
                self.check_secret_may_travel(&credential)?;
                let query = if force { "force=true" } else { "" };
                self.print("PUT", &path(&name), query, &tier_spec(place, credential)?)
            }
            TierCommand::Edit { name, credential } => {
                self.check_secret_may_travel(&credential)?;
                let place =
                    TierPlace { azure_endpoint: None, account: None, container: None, prefix: None, access_tier: None };
                self.print("POST", &path(&name), "", &tier_spec(place, credential)?)
            }
            TierCommand::Rm { name } => self.print("DELETE", &path(&name), "", ""),
        }
    }

    fn heal(&mut self, args: &HealArgs) -> Result<bool, String> {
        let mut body = if args.status {
            self.call("GET", HEAL_PATH, "", "")?
        } else {
            self.call("POST", HEAL_PATH, &args.rate_mib.map(|r| format!("rate-mib={r}")).unwrap_or_default(), "")?
        };
        let mut status = self.heal_status(&body)?;
        if args.wait {
            std::thread::sleep(HEAL_PICKUP_DELAY);
            loop {
                body = self.call("GET", HEAL_PATH, "", "")?;
                status = self.heal_status(&body)?;
                if status.heal.state != "running" {
                    break;
                }
                eprintln!("{}", status.progress_line());
                std::thread::sleep(HEAL_PROGRESS_INTERVAL);
            }
        }
        println!("{body}");
        let offline = status.drives.iter().filter(|d| !d.online).count();
        if offline > 0 {
            eprintln!("ferrite admin heal: {offline} drive(s) offline: the heal could not rebuild them");
        }
        Ok(status.heal.pass.blocks_unrecoverable == 0 && offline == 0)
    }

    fn heal_status(&self, body: &str) -> Result<HealStatusView, String> {
        serde_json::from_str(body).map_err(|e| format!("{}: not a heal status ({e}): {body}", self.endpoint))
    }
}

/// The tier's JSON for the admin API.
fn tier_spec(place: TierPlace, credential: TierCredential) -> Result<String, String> {
    let spec = TierSpec {
        endpoint: place.azure_endpoint,
        account: place.account,
        container: place.container,
        prefix: place.prefix,
        access_tier: place.access_tier,
        account_key: credential.account_key,
        sas: credential.sas,
        identity: credential.identity.then(|| serde_json::Value::String("true".to_owned())),
    };
    serde_json::to_string(&spec).map_err(|e| format!("cannot encode the tier: {e}"))
}

/// What `kms-rewrap` answers, as far as the exit status needs it.
#[derive(Deserialize)]
struct RewrapReport {
    failed: Option<u64>,
}

/// The parts of `GET /ferrite/admin/v1/heal` (engine `HealStatus`) the command reads.
#[derive(Deserialize)]
struct HealStatusView {
    heal: HealView,
    drives: Vec<DriveView>,
}

#[derive(Deserialize)]
struct HealView {
    /// never-run, running or done (engine `HealRun`).
    state: String,
    #[serde(flatten)]
    pass: PassView,
}

#[derive(Deserialize)]
struct PassView {
    objects_done: u64,
    objects_total: u64,
    bytes_done: u64,
    bytes_total: u64,
    shards_repaired: u64,
    log_records_repaired: u64,
    blocks_unrecoverable: u64,
    eta_secs: Option<f64>,
}

#[derive(Deserialize)]
struct DriveView {
    online: bool,
}

impl HealStatusView {
    /// "heal: objects 120/400, bytes ..., eta 9.5 s".
    fn progress_line(&self) -> String {
        let p = &self.heal.pass;
        let eta = p.eta_secs.map_or_else(|| "null".to_owned(), |s| s.to_string());
        format!(
            "heal: objects {}/{}, bytes {}/{}, {} shards and {} log records repaired, eta {eta} s",
            p.objects_done, p.objects_total, p.bytes_done, p.bytes_total, p.shards_repaired, p.log_records_repaired,
        )
    }
}

#[cfg(test)]
mod tests {
    use ferrite_engine::heal_state::{DriveReport, HealReport, HealRun, HealStatus, PassReport, ScannerReport};

    use super::*;

    fn pass(eta_secs: Option<Option<f64>>) -> PassReport {
        PassReport {
            started_ms: 1,
            finished_ms: 0,
            passes: 0,
            objects_total: 400,
            objects_done: 120,
            bytes_total: 3000,
            bytes_done: 1200,
            shards_repaired: 14,
            log_records_repaired: 2,
            blocks_unrecoverable: 1,
            leftovers_removed: 0,
            eta_secs,
            repaired_keys: Vec::new(),
            unrecoverable_keys: Vec::new(),
        }
    }

    /// The command reads the status exactly as the server writes it (engine `HealStatus`).
    #[test]
    fn reads_the_heal_status_the_server_writes() {
        let status = HealStatus {
            heal: HealReport {
                state: HealRun::Running,
                reason: String::new(),
                rate_bytes_per_sec_per_core: 0,
                pass: pass(Some(Some(9.5))),
            },
            scanner: ScannerReport { interval_secs: 3600, rate_bytes_per_sec_per_core: 1, pass: pass(None) },
            drives: vec![DriveReport { path: "/d1".into(), online: false, pending_ops: 0 }],
        };
        let json = serde_json::to_string(&status).unwrap();
        let view: HealStatusView = serde_json::from_str(&json).unwrap();
        assert_eq!(view.heal.state, "running");
        assert_eq!(view.heal.pass.blocks_unrecoverable, 1);
        assert!(!view.drives[0].online);
        assert_eq!(
            view.progress_line(),
            "heal: objects 120/400, bytes 1200/3000, 14 shards and 2 log records repaired, eta 9.5 s"
        );
    }
}
