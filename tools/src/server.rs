//! `ferrite server`: refuses the default credentials on a reachable address, raises the
//! descriptor limit and derives the connection cap from it, opens the engine, starts the
//! services every core shares (outbound client, tier mover, KMS, MD5 kernel), binds the
//! listening socket (retrying while a crashed predecessor's socket lingers), logs what it
//! runs with, then starts one executor per core (executor.rs) and waits for them.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_engine::{CoreBoot, Engine};
use ferrite_s3::kms::Kms;
use ferrite_s3::md5x::Kernel;
use ferrite_s3::Config;
use ferrite_tiering::outbound::http::Client;
use ferrite_tiering::Mover;
use tracing::{info, warn};

use crate::executor::{self, CoreWiring, Services};
use crate::fds::{self, FdNeeds};
use crate::settings::{IoMode, ListenSettings, Settings, ROOT_DEFAULT};

/// While the address is taken, a bind is tried again this often.
const BIND_RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// Runs the server until its executors end (they normally never do).
pub fn run(settings: Settings) -> Result<(), String> {
    check_default_credentials(&settings.front.root_password, &settings.listen)?;
    let fd_limit = fds::raise_limit()?;
    let uring = choose_io(settings.io);
    let (cache_bytes, cores) = (settings.engine.cache_bytes, settings.engine.cores);
    let (engine, boots) = Engine::open(settings.engine).map_err(|e| e.to_string())?;
    engine.start_drive_monitor();
    log_drives(&engine, cores);
    let connections_per_core = connection_cap(&engine, &settings.listen, &fd_limit, settings.memory_budget_bytes);
    let config = Arc::new(settings.front);
    warn_default_credentials(&config);
    // One outbound client for the KMS, Entra ID and the tiers: one connection pool.
    let http = Client::new(&settings.http);
    let mover = Mover::new(engine.clone(), settings.mover, &config.root_password, http.clone(), settings.entra);
    let kms = start_kms(&settings.kms, &http, &config)?;
    let md5 = Kernel::chosen(settings.md5);
    let (listener, tls) = listen(&settings.listen)?;
    log_serving(&engine, &listener, tls.is_some(), md5, cache_bytes, settings.memory_budget_bytes)?;
    let wiring = CoreWiring {
        engine,
        config,
        services: Services { kms, mover, md5 },
        uring,
        tls,
        memory_budget_bytes: settings.memory_budget_bytes,
        connections_per_core,
    };
    run_cores(wiring, boots, &listener)
}

/// Each core's runtime drives io_uring or epoll; the engine's disk I/O follows it. Returns
/// whether io_uring runs.
fn choose_io(mode: IoMode) -> bool {
    let forced_blocking = mode == IoMode::Blocking;
    let uring = !forced_blocking && monoio::utils::detect_uring();
    if uring {
        info!(disk = "io_uring", network = "io_uring", "I/O drivers");
    } else if forced_blocking {
        info!(disk = "blocking thread pool", network = "epoll", "I/O drivers (FERRITE_IO=blocking)");
    } else {
        warn!(
            disk = "blocking thread pool",
            network = "epoll",
            "io_uring is not available (kernel.io_uring_disabled, or a seccomp profile that blocks it)"
        );
    }
    uring
}

/// The engine's notes on its drives, how the index was built, each drive and the layout.
fn log_drives(engine: &Engine, cores: usize) {
    let drives = engine.drives();
    for note in &drives.notes {
        info!("{note}");
    }
    info!("{}", engine.startup_note());
    for (i, path) in drives.paths.iter().enumerate() {
        let state = if engine.drive_online(i) { "online" } else { "MISSING" };
        info!(drive = i + 1, path = %path.display(), state, "drive");
    }
    let layout = engine.layout();
    info!(
        data = layout.data,
        parity = layout.parity,
        write_quorum = engine.write_quorum(),
        executors = cores,
        "erasure layout"
    );
}

/// Refuses to serve a non-loopback address with the public default root password unless
/// `--allow-default-credentials` says so: anyone who reaches the address would be root.
fn check_default_credentials(root_password: &str, listen: &ListenSettings) -> Result<(), String> {
    if root_password != ROOT_DEFAULT || listen.allow_default_credentials {
        return Ok(());
    }
    // An address that does not resolve fails at bind, with its own message.
    let Ok(addrs) = listen.address.to_socket_addrs() else { return Ok(()) };
    let addrs: Vec<SocketAddr> = addrs.collect();
    if addrs.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {} with the default root password ({ROOT_DEFAULT}): anyone who can reach \
         the address would have every right. Set FERRITE_ROOT_USER and FERRITE_ROOT_PASSWORD \
         (--root-user, --root-password), or pass --allow-default-credentials \
         (FERRITE_ALLOW_DEFAULT_CREDENTIALS=on) to run so anyway",
        listen.address
    ))
}

/// Each core's connection cap: `--connections-max` split between the cores, or derived
/// from the descriptor limit (fds.rs). Logs the limit and the cap.
fn connection_cap(engine: &Engine, listen: &ListenSettings, limit: &fds::FdLimit, memory_budget_bytes: usize) -> usize {
    let layout = engine.layout();
    let per_stream = ferrite_s3::budget::bytes_per_stream(engine.block_size(), layout.data, layout.parity);
    let needs = FdNeeds {
        cores: engine.cores(),
        drives: engine.drives().paths.len(),
        streams: memory_budget_bytes / per_stream,
    };
    let derived = fds::connections_max(limit.soft, &needs) as usize;
    info!(soft_before = limit.soft_before, soft = limit.soft, hard = limit.hard, "file-descriptor limit");
    let total = match listen.connections_max {
        Some(n) if n > derived => {
            warn!(connections_max = n, derived, "more connections allowed than the descriptor limit leaves room for");
            n
        }
        Some(n) => n,
        None => derived,
    };
    let per_core = (total / engine.cores()).max(1);
    info!(total = per_core * engine.cores(), per_core, "connection cap");
    per_core
}

fn warn_default_credentials(config: &Config) {
    if config.root_user == ROOT_DEFAULT && config.root_password == ROOT_DEFAULT {
        warn!(
            "root credentials are the development default {ROOT_DEFAULT} / {ROOT_DEFAULT}; \
             set FERRITE_ROOT_USER and FERRITE_ROOT_PASSWORD"
        );
    }
}

/// The KMS the settings name, if any; encrypting everything needs one.
fn start_kms(
    settings: &ferrite_s3::kms::KmsSettings,
    http: &Client,
    config: &Config,
) -> Result<Option<Arc<Kms>>, String> {
    let kms = Kms::new(settings, http)?.map(Arc::new);
    match &kms {
        Some(kms) => info!(kms = %kms.describe(), "KMS"),
        None if config.encrypt_everything => {
            return Err("FERRITE_KMS_AUTO_ENCRYPTION needs a KMS: set FERRITE_KMS_SECRET_KEY".into())
        }
        None => info!("no KMS configured: SSE-S3 and SSE-KMS are refused, SSE-C works"),
    }
    Ok(kms)
}

type Tls = Option<Arc<rustls::ServerConfig>>;

/// The TLS setup (with --certs-dir) and the bound listening socket.
fn listen(settings: &ListenSettings) -> Result<(TcpListener, Tls), String> {
    let tls = match &settings.certs_dir {
        Some(dir) => Some(ferrite_s3::tls::load_server_config(dir)?),
        None => None,
    };
    let listener = bind(&settings.address, settings.bind_retry)?;
    // The epoll driver needs a non-blocking socket (io_uring does not care).
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok((listener, tls))
}

/// Binds `address`, retrying for up to `retry` while it is in use. After `kill -9` the
/// old process's listening socket can outlive it: its io_uring still holds an accept on
/// the socket until the kernel tears the ring down, which waits for the ring's in-flight
/// work (see ARCHITECTURE.md). A supervisor restarting the server at once must not fail.
fn bind(address: &str, retry: Duration) -> Result<TcpListener, String> {
    let deadline = Instant::now() + retry;
    let mut logged = false;
    loop {
        match TcpListener::bind(address) {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !logged {
                    warn!(
                        address,
                        retry_secs = retry.as_secs(),
                        "address in use (a previous process's socket?); retrying"
                    );
                    logged = true;
                }
                std::thread::sleep(BIND_RETRY_INTERVAL);
            }
            Err(e) => return Err(format!("cannot listen on {address}: {e}")),
        }
    }
}

/// The last start-up events: the MD5 kernel, the block cache, the memory budget, and where
/// the server listens (the last one: everything before it is the start-up).
fn log_serving(
    engine: &Engine,
    listener: &TcpListener,
    https: bool,
    md5: Kernel,
    cache_bytes: usize,
    memory_budget_bytes: usize,
) -> Result<(), String> {
    let batching =
        if md5 == Kernel::Scalar { "one body at a time" } else { "the concurrent PUTs of a core hashed together" };
    info!(kernel = md5.name(), batching, "ETag MD5");
    log_cache(engine, cache_bytes);
    info!(mib = memory_budget_bytes >> 20, "memory budget for object data in flight");
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if https { "https" } else { "http" };
    info!(address = %format_args!("{scheme}://{local}"), "listening");
    Ok(())
}

/// The engine sets each core's share of the cache (EngineConfig::cache_bytes); this only
/// reports it.
fn log_cache(engine: &Engine, cache_bytes: usize) {
    let per_core = cache_bytes / engine.cores();
    // The cache keeps blocks of at most a quarter of a core's share.
    if cache_bytes > 0 && per_core < 4 * engine.block_size() {
        warn!(mib = cache_bytes >> 20, per_core_mib = per_core >> 20, "block cache too small to keep a block: off");
    } else {
        info!(mib = cache_bytes >> 20, per_core_mib = per_core >> 20, "block cache");
    }
}

/// One pinned thread per core, each serving the shared listening socket; waits for them.
fn run_cores(wiring: CoreWiring, boots: Vec<CoreBoot>, listener: &TcpListener) -> Result<(), String> {
    let mut threads = Vec::new();
    for boot in boots {
        let wiring = wiring.clone();
        let listener = listener.try_clone().map_err(|e| e.to_string())?;
        let thread = std::thread::Builder::new()
            .name(format!("ferrite-core-{}", boot.core))
            .spawn(move || executor::run_core(wiring, boot, listener))
            .map_err(|e| e.to_string())?;
        threads.push(thread);
    }
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(address: &str, allow_default_credentials: bool) -> ListenSettings {
        let (certs_dir, bind_retry, connections_max) = (None, Duration::ZERO, None);
        ListenSettings { address: address.into(), certs_dir, bind_retry, connections_max, allow_default_credentials }
    }

    #[test]
    fn default_credentials_only_on_loopback_unless_allowed() {
        for address in ["127.0.0.1:9000", "[::1]:9000", "localhost:9000", "127.0.0.2:9000"] {
            assert!(check_default_credentials(ROOT_DEFAULT, &listen(address, false)).is_ok(), "{address}");
        }
        for address in ["0.0.0.0:9000", "[::]:9000", "10.1.2.3:9000"] {
            let refused = check_default_credentials(ROOT_DEFAULT, &listen(address, false));
            assert!(refused.is_err_and(|e| e.contains("--allow-default-credentials")), "{address}");
            assert!(check_default_credentials(ROOT_DEFAULT, &listen(address, true)).is_ok(), "{address}");
            assert!(check_default_credentials("a-real-secret", &listen(address, false)).is_ok(), "{address}");
        }
    }
}
