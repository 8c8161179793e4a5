//! The `ferrite` binary: wires the engine and the S3 front together, one executor per core.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

use std::time::Duration;

use ferrite_engine::{CoreBoot, Engine, EngineConfig, FaultConfig, HealConfig, SNAPSHOT_EVERY_BYTES_DEFAULT};
use ferrite_s3::http::ClientTimeouts;
use ferrite_s3::kms::{Kms, KmsSettings};
use ferrite_s3::md5x::{Kernel, KernelChoice};
use ferrite_s3::{serve_connection, Config, Ctx};
use ferrite_tiering::outbound::entra::EntraSettings;
use ferrite_tiering::outbound::http::{Client, HttpSettings};
use ferrite_tiering::{Mover, MoverSettings};
use rustls as rustls_config;

const DEFAULT_ADDRESS: &str = "127.0.0.1:9000";
const DEFAULT_ROOT: &str = "ferriteadmin";
const DEFAULT_DRIVES: &str = "./data/d{1...4}";
const MEMORY_BUDGET_MIB_DEFAULT: usize = 1024;
/// Threads for blocking disk I/O when io_uring is unavailable (per core).
const BLOCKING_THREADS_PER_CORE: usize = 4;

const USAGE: &str = "usage: ferrite server ... | ferrite bench OP ... | ferrite admin heal ...

usage: ferrite server [--address HOST:PORT] [--parity N] [--domain DOMAIN] DRIVE...

  DRIVE...          one directory = a single drive without parity; four or more are
                    erasure coded. `/data/d{1...4}` expands to /data/d1 .. /data/d4.
                    Without drives: ./data/d{1...4} (2 data + 2 parity).
  --address         where to listen (default 127.0.0.1:9000; 0.0.0.0:9000 for all interfaces)
  --parity N        parity drives (default: 0 for 1 drive, 1 for 2-3, 2 for 4-5, 3 for 6-7, 4 for 8+)
  --domain DOMAIN   also accept virtual-host-style requests to BUCKET.DOMAIN
  --certs-dir DIR   serve HTTPS with DIR/public.crt (chain, PEM) and DIR/private.key (PEM)

environment: FERRITE_ROOT_USER / FERRITE_ROOT_PASSWORD (default ferriteadmin / ferriteadmin),
             FERRITE_IO=blocking forces the thread-pool disk I/O path instead of io_uring,
             FERRITE_MEMORY_BUDGET_MIB bounds object data in flight (default 1024); beyond
             it requests wait, then get 503 SlowDown. FERRITE_CACHE_MIB caches data blocks
             read from the drives (default 512, split between the cores; 0 off).
             FERRITE_CORES sets the executor count
             (default: all cores); FERRITE_SNAPSHOT_BYTES how much metadata log each core
             appends between index snapshots (default 64 MiB). FERRITE_CLIENT_TIMEOUT_SECS
             closes connections silent that long, idle or mid-request (default 60 s idle,
             30 s inside a request).
encryption:  FERRITE_KMS_SECRET_KEY=NAME:BASE64[,NAME:BASE64...] static KMS keys (the first is
             the default) for SSE-S3 and SSE-KMS; FERRITE_KMS_AUTO_ENCRYPTION=on encrypts
             every new object; FERRITE_SSE_C_ALLOW_HTTP=on accepts SSE-C keys without TLS
             (tests only).
healing:     FERRITE_SCAN_INTERVAL_SECS between background scans (default 3600),
             FERRITE_SCAN_MIBPS scan reads per core (default 16), FERRITE_HEAL_MIBPS heal
             reads per core (default 0: unlimited), FERRITE_DRIVE_CHECK_SECS how often the
             drives' formats are checked (default 10; 0 never), FERRITE_LEFTOVER_AGE_SECS
             age of unreferenced data files the scanner removes (default 3600),
             FERRITE_VOID_RETRY_SECS how soon the void of a log batch that missed the write
             quorum is retried when no write comes first (default 1, at least 1).
tiering:     FERRITE_LIFECYCLE_INTERVAL_SECS between lifecycle passes (default 3600; 0
             never: run them with `ferrite admin lifecycle run`), FERRITE_LIFECYCLE_DAY_SECS
             the length of a lifecycle day (tests; default 86400), FERRITE_LIFECYCLE_MIBPS how
             fast transitions upload (default 64; 0 unlimited).
metrics:     GET /ferrite/metrics (Prometheus); FERRITE_METRICS_TOKEN requires that bearer
             token.";

struct Args {
    address: String,
    parity: Option<usize>,
    domain: Option<String>,
    certs_dir: Option<PathBuf>,
    drives: Vec<PathBuf>,
}

/// Expands `prefix{1...4}suffix` into prefix1suffix .. prefix4suffix.
fn expand(arg: &str) -> Result<Vec<String>, String> {
    let (Some(open), Some(close)) = (arg.find('{'), arg.find('}')) else { return Ok(vec![arg.to_owned()]) };
    let inner = &arg[open + 1..close];
    let Some((a, b)) = inner.split_once("...") else { return Ok(vec![arg.to_owned()]) };
    let (a, b): (u32, u32) = match (a.parse(), b.parse()) {
        (Ok(a), Ok(b)) if a <= b && b - a < 1024 => (a, b),
        _ => return Err(format!("bad drive range {{{inner}}}")),
    };
    Ok((a..=b).map(|i| format!("{}{i}{}", &arg[..open], &arg[close + 1..])).collect())
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    if args.next().as_deref() != Some("server") {
        return Err(USAGE.to_owned());
    }
    let mut out =
        Args { address: DEFAULT_ADDRESS.to_owned(), parity: None, domain: None, certs_dir: None, drives: Vec::new() };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"));
        match arg.as_str() {
            "--address" => out.address = value("--address")?,
            "--parity" => {
                out.parity = Some(value("--parity")?.parse().map_err(|_| "--parity must be a number".to_owned())?)
            }
            "--domain" => out.domain = Some(value("--domain")?),
            "--certs-dir" => out.certs_dir = Some(PathBuf::from(value("--certs-dir")?)),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}\n\n{USAGE}")),
            drive => out.drives.extend(expand(drive)?.into_iter().map(PathBuf::from)),
        }
    }
    if out.drives.is_empty() {
        // The embedded default: four drive directories under ./data, so erasure coding is on.
        out.drives = expand(DEFAULT_DRIVES)?.into_iter().map(PathBuf::from).collect();
    }
    Ok(out)
}

mod admin;
mod bench;
mod logging;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("bench") {
        return match bench::run(&argv[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("ferrite bench: {message}");
                ExitCode::FAILURE
            }
        };
    }
    if argv.first().map(String::as_str) == Some("admin") {
        return match admin::run(&argv[1..]) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(message) => {
                eprintln!("ferrite admin: {message}");
                ExitCode::from(2)
            }
        };
    }
    let args = match parse_args(argv.into_iter()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if let Err(message) = init_logging() {
        eprintln!("ferrite: {message}");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ferrite: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let forced_blocking = std::env::var("FERRITE_IO").is_ok_and(|v| v == "blocking");
    // Each core's runtime drives io_uring or epoll; the engine's disk I/O follows it.
    let uring = !forced_blocking && monoio::utils::detect_uring();
    if uring {
        println!("ferrite: disk and network I/O: io_uring");
    } else if forced_blocking {
        println!("ferrite: disk I/O: blocking thread pool, network: epoll (FERRITE_IO=blocking)");
    } else {
        println!(
            "ferrite: io_uring is not available (kernel.io_uring_disabled, or a seccomp profile that blocks it); \
             using epoll for the network and a thread pool for disk I/O"
        );
    }
    let cores = match env_number("FERRITE_CORES") {
        Some(n) if n > 0 => n as usize,
        _ => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    let snapshot_every_bytes = env_number("FERRITE_SNAPSHOT_BYTES").unwrap_or(SNAPSHOT_EVERY_BYTES_DEFAULT);
    let cache_mib = env_number("FERRITE_CACHE_MIB").map_or(CACHE_MIB_DEFAULT, |n| n as usize);
    let config = EngineConfig {
        drives: args.drives.clone(),
        parity: args.parity,
        cores,
        snapshot_every_bytes,
        heal: heal_config(),
        cache_bytes: cache_mib.saturating_mul(1 << 20),
        // Honoured by test builds only (the engine's fault-injection feature).
        faults: FaultConfig {
            rules: std::env::var("FERRITE_FAULTS").ok(),
            rules_file: std::env::var("FERRITE_FAULTS_FILE").ok().map(PathBuf::from),
        },
    };
    let (engine, boots) = Engine::open(config).map_err(|e| e.to_string())?;
    engine.start_drive_monitor();
    let drives = engine.drives();
    for note in &drives.notes {
        println!("ferrite: {note}");
    }
    println!("ferrite: {}", engine.startup_note());
    for (i, path) in drives.paths.iter().enumerate() {
        println!(
            "ferrite: drive {} {} {}",
            i + 1,
            path.display(),
            if engine.drive_online(i) { "online" } else { "MISSING" }
        );
    }
    let layout = engine.layout();
    println!(
        "ferrite: erasure layout {}+{} (data+parity), write quorum {}, {} executors",
        layout.data,
        layout.parity,
        engine.write_quorum(),
        cores
    );
    let user = std::env::var("FERRITE_ROOT_USER").unwrap_or_else(|_| DEFAULT_ROOT.to_owned());
    let password = std::env::var("FERRITE_ROOT_PASSWORD").unwrap_or_else(|_| DEFAULT_ROOT.to_owned());
    if user == DEFAULT_ROOT && password == DEFAULT_ROOT {
        println!("ferrite: root credentials are the development default {DEFAULT_ROOT} / {DEFAULT_ROOT}; set FERRITE_ROOT_USER and FERRITE_ROOT_PASSWORD");
    }
    let config = Arc::new(Config {
        root_user: user,
        root_password: password,
        domain: args.domain,
        region: "us-east-1".into(),
        client_timeouts: client_timeouts(),
        encrypt_everything: env_flag("FERRITE_KMS_AUTO_ENCRYPTION"),
        sse_c_allow_http: env_flag("FERRITE_SSE_C_ALLOW_HTTP"),
        metrics_token: std::env::var("FERRITE_METRICS_TOKEN").ok().filter(|t| !t.is_empty()),
    });
    // One outbound client for the KMS, Entra ID and the tiers: one connection pool.
    let http = Client::new(&http_settings());
    let mover = Mover::new(engine.clone(), mover_settings(), &config.root_password, http.clone(), entra_settings());
    let kms = Kms::new(&kms_settings()?, &http)?.map(Arc::new);
    match &kms {
        Some(kms) => println!("ferrite: KMS: {}", kms.describe()),
        None if config.encrypt_everything => {
            return Err("FERRITE_KMS_AUTO_ENCRYPTION needs a KMS: set FERRITE_KMS_SECRET_KEY".into())
        }
        None => println!("ferrite: no KMS configured: SSE-S3 and SSE-KMS are refused, SSE-C works"),
    }
    let tls = match &args.certs_dir {
        Some(dir) => Some(ferrite_s3::tls::load_server_config(dir)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener =
        std::net::TcpListener::bind(&args.address).map_err(|e| format!("cannot listen on {}: {e}", args.address))?;
    // The epoll driver needs a non-blocking socket (io_uring does not care).
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let md5 = Kernel::chosen(md5_kernel_choice());
    let how =
        if md5 == Kernel::Scalar { "one body at a time" } else { "the concurrent PUTs of a core hashed together" };
    println!("ferrite: ETag MD5: {}, {how}", md5.name());
    println!("ferrite: listening on {scheme}://{local}");
    let memory_budget_bytes = memory_budget_mib() << 20;
    println!("ferrite: memory budget for object data in flight: {} MiB", memory_budget_bytes >> 20);
    let mut threads = Vec::new();
    for boot in boots {
        let engine = engine.clone();
        let config = config.clone();
        let listener = listener.try_clone().map_err(|e| e.to_string())?;
        let tls = tls.clone();
        let services = Services { kms: kms.clone(), mover: mover.clone(), md5 };
        let thread = std::thread::Builder::new()
            .name(format!("ferrite-core-{}", boot.core))
            .spawn(move || run_core(engine, config, services, boot, listener, uring, tls, memory_budget_bytes))
            .map_err(|e| e.to_string())?;
        threads.push(thread);
    }
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// FERRITE_LOG_FORMAT (text or json, default text) and FERRITE_LOG_LEVEL (error, warn, info,
/// debug or trace; default info).
fn init_logging() -> Result<(), String> {
    let format = match std::env::var("FERRITE_LOG_FORMAT") {
        Ok(v) => v.parse()?,
        Err(_) => logging::LogFormat::Text,
    };
    let level = match std::env::var("FERRITE_LOG_LEVEL") {
        Ok(v) => v.parse().map_err(|_| format!("unknown log level {v:?} (error, warn, info, debug, trace)"))?,
        Err(_) => tracing::Level::INFO,
    };
    logging::init(format, level);
    Ok(())
}

/// A boolean setting: "on", "1" or "true".
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "on" | "1" | "true"))
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// FERRITE_CLIENT_TIMEOUT_SECS, when set, replaces both the idle and the read timeout of
/// client connections (the tests shorten them); otherwise the defaults of http.rs.
fn client_timeouts() -> ClientTimeouts {
    match env_number("FERRITE_CLIENT_TIMEOUT_SECS") {
        Some(secs) if secs > 0 => {
            let timeout = std::time::Duration::from_secs(secs);
            ClientTimeouts { idle: timeout, read: timeout }
        }
        _ => ClientTimeouts::default(),
    }
}

/// The scanner's and healer's settings from the environment (see USAGE).
fn heal_config() -> HealConfig {
    let defaults = HealConfig::default();
    let secs = |name: &str, default: Duration| env_number(name).map(Duration::from_secs).unwrap_or(default);
    HealConfig {
        scan_interval: secs("FERRITE_SCAN_INTERVAL_SECS", defaults.scan_interval),
        scan_rate: env_number("FERRITE_SCAN_MIBPS").map(|m| m << 20).unwrap_or(defaults.scan_rate),
        heal_rate: env_number("FERRITE_HEAL_MIBPS").map(|m| m << 20).unwrap_or(defaults.heal_rate),
        drive_check: secs("FERRITE_DRIVE_CHECK_SECS", defaults.drive_check),
        leftover_age: secs("FERRITE_LEFTOVER_AGE_SECS", defaults.leftover_age),
        // At least a second: retrying back to back would hammer drives that keep failing.
        void_retry: secs("FERRITE_VOID_RETRY_SECS", defaults.void_retry).max(Duration::from_secs(1)),
    }
}

/// SSL_CERT_FILE (the system's CA bundle, when elsewhere) and FERRITE_CA_FILE (extra roots)
/// for the server's outbound https calls.
fn http_settings() -> HttpSettings {
    let path = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    HttpSettings { system_ca_bundle: path("SSL_CERT_FILE"), ca_file: path("FERRITE_CA_FILE") }
}

/// Azure's standard sign-in variables (AZURE_*) and FERRITE_AZURE_IMDS_URL (formerly
/// FERRITE_KMS_AZURE_IMDS_URL, still read).
fn entra_settings() -> EntraSettings {
    EntraSettings {
        authority_host: env_text("AZURE_AUTHORITY_HOST"),
        tenant_id: env_text("AZURE_TENANT_ID"),
        client_id: env_text("AZURE_CLIENT_ID"),
        client_secret: env_text("AZURE_CLIENT_SECRET"),
        federated_token_file: env_text("AZURE_FEDERATED_TOKEN_FILE"),
        imds_url: env_text("FERRITE_AZURE_IMDS_URL").or_else(|| env_text("FERRITE_KMS_AZURE_IMDS_URL")),
    }
}

/// The KMS from FERRITE_KMS_*: Azure Key Vault, else OpenBao/Vault, else static keys.
fn kms_settings() -> Result<KmsSettings, String> {
    let var = |name: &str| std::env::var(name).ok();
    if let Some(vault_url) = var("FERRITE_KMS_AZURE_VAULT_URL") {
        return Ok(KmsSettings::Azure {
            vault_url,
            default_key: env_text("FERRITE_KMS_AZURE_KEY").ok_or("FERRITE_KMS_AZURE_KEY is not set")?,
            wrap_alg: env_text("FERRITE_KMS_AZURE_WRAP_ALG").unwrap_or_else(|| "RSA-OAEP-256".into()),
            resource: env_text("FERRITE_KMS_AZURE_RESOURCE"),
            signin: entra_settings(),
        });
    }
    if let Some(addr) = var("FERRITE_KMS_VAULT_ADDR") {
        return Ok(KmsSettings::Vault {
            addr,
            token: var("FERRITE_KMS_VAULT_TOKEN").ok_or("FERRITE_KMS_VAULT_TOKEN is not set")?,
            default_key: var("FERRITE_KMS_VAULT_KEY").ok_or("FERRITE_KMS_VAULT_KEY is not set")?,
            mount: var("FERRITE_KMS_VAULT_MOUNT").unwrap_or_else(|| "transit".into()),
        });
    }
    Ok(var("FERRITE_KMS_SECRET_KEY").map_or(KmsSettings::None, |keys| KmsSettings::Static { keys }))
}

/// FERRITE_LIFECYCLE_INTERVAL_SECS (default 3600; 0 never), FERRITE_LIFECYCLE_MIBPS
/// (default 64; 0 unlimited), FERRITE_LIFECYCLE_DAY_SECS (tests; default a day).
fn mover_settings() -> MoverSettings {
    let defaults = MoverSettings::default();
    let mibps = env_number("FERRITE_LIFECYCLE_MIBPS").unwrap_or(64);
    let day_secs = std::env::var("FERRITE_LIFECYCLE_DAY_SECS").ok().and_then(|v| v.parse::<i64>().ok());
    MoverSettings {
        pass_interval: env_number("FERRITE_LIFECYCLE_INTERVAL_SECS")
            .map_or(defaults.pass_interval, Duration::from_secs),
        upload_bytes_per_sec: (mibps > 0).then_some(mibps << 20),
        day_ms: day_secs.filter(|s| *s > 0).map_or(defaults.day_ms, |s| s * 1000),
    }
}

/// FERRITE_MD5_SIMD: `0` (scalar) or `avx2`; otherwise the widest kernel the CPU has.
fn md5_kernel_choice() -> KernelChoice {
    match std::env::var("FERRITE_MD5_SIMD").as_deref() {
        Ok("0") => KernelChoice::Scalar,
        Ok("avx2") => KernelChoice::Avx2,
        Ok("") | Err(_) => KernelChoice::Widest,
        Ok(other) => {
            tracing::warn!("FERRITE_MD5_SIMD={other:?} is neither 0 nor avx2; the widest kernel runs");
            KernelChoice::Widest
        }
    }
}

/// A set, non-empty environment variable.
fn env_text(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// What every core shares besides the engine and the configuration.
struct Services {
    kms: Option<Arc<Kms>>,
    mover: Mover,
    md5: Kernel,
}

/// FERRITE_CACHE_MIB, default 512: data blocks read from the drives, cached across all cores.
const CACHE_MIB_DEFAULT: usize = 512;

/// FERRITE_MEMORY_BUDGET_MIB, default 1 GiB: object data in flight across all cores.
fn memory_budget_mib() -> usize {
    env_number("FERRITE_MEMORY_BUDGET_MIB").map(|n| n as usize).unwrap_or(MEMORY_BUDGET_MIB_DEFAULT)
}

#[allow(clippy::too_many_arguments)] // one call site; the core's whole wiring
fn run_core(
    engine: Engine,
    config: Arc<Config>,
    services: Services,
    boot: CoreBoot,
    listener: std::net::TcpListener,
    uring: bool,
    tls: Option<Arc<rustls_config::ServerConfig>>,
    memory_budget_bytes: usize,
) {
    let cores_total = engine.cores();
    let core = boot.core;
    if let Err(e) = monoio::utils::bind_to_cpu_set([core]) {
        eprintln!("ferrite: core {core}: could not pin executor: {e:?}");
    }
    let pool = Box::new(monoio::blocking::DefaultThreadPool::new(BLOCKING_THREADS_PER_CORE));
    // The engine sets each core's share of the cache (EngineConfig::cache_bytes); this
    // only reports it.
    let cache_mib = env_number("FERRITE_CACHE_MIB").map_or(CACHE_MIB_DEFAULT, |n| n as usize);
    let per_core = cache_mib.saturating_mul(1 << 20) / cores_total;
    if core == 0 {
        // The cache keeps blocks of at most a quarter of a core's share.
        let usable = per_core >= 4 * engine.block_size();
        let note = if cache_mib > 0 && !usable { ": too small to keep a block, so it is off" } else { "" };
        println!("ferrite: block cache: {cache_mib} MiB, {} MiB per core{note}", per_core >> 20);
    }
    let main = async move {
        if core == 0 {
            monoio::spawn(services.mover.clone().run());
        }
        monoio::spawn(ferrite_engine::serve(engine.clone(), boot));
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ferrite: core {core}: cannot use the listener: {e}");
                return;
            }
        };
        let per_stream =
            ferrite_s3::budget::bytes_per_stream(engine.block_size(), engine.layout().data, engine.layout().parity);
        let slots = memory_budget_bytes / cores_total / per_stream;
        let (budget, md5) = (ferrite_s3::budget::Budget::new(slots), ferrite_s3::md5x::core_batcher(services.md5));
        let ctx = Rc::new(Ctx { engine, config, budget, kms: services.kms, mover: services.mover, md5 });
        let acceptor = tls.map(|config| Rc::new(ferrite_s3::TlsAcceptor::from(config)));
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    monoio::spawn(serve_connection(ctx.clone(), stream, acceptor.clone()));
                }
                Err(e) => {
                    eprintln!("ferrite: core {core}: accept failed: {e}");
                    monoio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    };
    if uring {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(1024)
            .enable_timer()
            .attach_thread_pool(pool)
            .build()
        {
            Ok(mut rt) => rt.block_on(main),
            Err(e) => eprintln!("ferrite: core {core}: cannot start io_uring runtime: {e}"),
        }
    } else {
        match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().attach_thread_pool(pool).build() {
            Ok(mut rt) => rt.block_on(main),
            Err(e) => eprintln!("ferrite: core {core}: cannot start runtime: {e}"),
        }
    }
}
