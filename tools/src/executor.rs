//! One core's executor: a monoio runtime pinned to the core (io_uring, or epoll with a
//! blocking pool for disk I/O), running the core's metadata service, the tier mover on core
//! 0, and the accept loop that serves every connection the core takes, up to the core's
//! connection cap.

use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ferrite_engine::{CoreBoot, Engine};
use ferrite_s3::kms::Kms;
use ferrite_s3::md5x::Kernel;
use ferrite_s3::{serve_connection, Config, Ctx};
use ferrite_tiering::Mover;
use tracing::{error, warn};

/// Threads for blocking disk I/O when io_uring is unavailable (per core).
const BLOCKING_THREADS_PER_CORE: usize = 4;
/// io_uring submission queue entries per core.
const URING_ENTRIES: u32 = 1024;
/// After a failed accept (out of file descriptors, say) the loop waits for a connection of
/// its own to close, or this long at most, so it never spins; the kernel's backlog keeps
/// the clients waiting meanwhile.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// At most one accept warning per core this often. At the descriptor limit with clients
/// coming and going, accepts fail and succeed in turn; a warning per failing run would be
/// a line per flip.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The accept loop's warnings: the first failure, then at most one per interval, each
/// saying how many failures it stands for.
#[derive(Default)]
struct AcceptWarnings {
    last: Option<Instant>,
    failures: u64,
}

impl AcceptWarnings {
    fn failed(&mut self, core: usize, error: &std::io::Error, open: usize) {
        self.failures += 1;
        if self.last.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_INTERVAL) {
            let failures = self.failures;
            warn!(core, %error, open, failures, "accept failed; waiting for a connection to close");
            (self.last, self.failures) = (Some(Instant::now()), 0);
        }
    }
}

/// What every core shares besides the engine and the configuration.
#[derive(Clone)]
pub struct Services {
    pub kms: Option<Arc<Kms>>,
    pub mover: Mover,
    pub md5: Kernel,
}

/// Everything a core is started with, cloned for each.
#[derive(Clone)]
pub struct CoreWiring {
    pub engine: Engine,
    pub config: Arc<Config>,
    pub services: Services,
    /// Whether the runtime drives io_uring (else epoll).
    pub uring: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The memory budget of all cores together.
    pub memory_budget_bytes: usize,
    /// Open connections this core keeps at most.
    pub connections_per_core: usize,
}

/// A core's cap on open connections. The accept loop takes a permit before it accepts;
/// a connection gives it back when it ends and wakes the loop. At the cap the loop does
/// not accept, so new clients wait in the kernel's backlog instead of being accepted and
/// closed. Per-core state, no locks; one waiter (the accept loop).
struct ConnectionGate {
    open: Cell<usize>,
    max: usize,
    /// Connections ended so far (the accept loop waits for this to move).
    closed: Cell<u64>,
    waiter: Cell<Option<Waker>>,
}

/// One open connection's place under the cap; given back on drop.
struct Permit(Rc<ConnectionGate>);

impl Drop for Permit {
    fn drop(&mut self) {
        let gate = &self.0;
        gate.open.set(gate.open.get() - 1);
        gate.closed.set(gate.closed.get() + 1);
        if let Some(waker) = gate.waiter.take() {
            waker.wake();
        }
    }
}

impl ConnectionGate {
    fn new(max: usize) -> Rc<Self> {
        Rc::new(Self { open: Cell::new(0), max: max.max(1), closed: Cell::new(0), waiter: Cell::new(None) })
    }

    /// A permit, once the core is under its cap.
    async fn permit(self: &Rc<Self>) -> Permit {
        poll_fn(|cx| {
            if self.open.get() < self.max {
                self.open.set(self.open.get() + 1);
                return Poll::Ready(Permit(self.clone()));
            }
            self.waiter.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Resolves when one of the core's connections has ended.
    async fn one_closed(&self) {
        let seen = self.closed.get();
        poll_fn(|cx| {
            if self.closed.get() != seen {
                return Poll::Ready(());
            }
            self.waiter.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// Runs core `boot.core` until its runtime ends.
pub fn run_core(wiring: CoreWiring, boot: CoreBoot, listener: std::net::TcpListener) {
    let core = boot.core;
    if let Err(e) = monoio::utils::bind_to_cpu_set([core]) {
        warn!(core, error = ?e, "could not pin executor");
    }
    let pool = Box::new(monoio::blocking::DefaultThreadPool::new(BLOCKING_THREADS_PER_CORE));
    let uring = wiring.uring;
    let main = serve(wiring, boot, listener);
    if uring {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .attach_thread_pool(pool)
            .build()
        {
            Ok(mut rt) => rt.block_on(main),
            Err(e) => error!(core, error = %e, "cannot start io_uring runtime"),
        }
    } else {
        match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().attach_thread_pool(pool).build() {
            Ok(mut rt) => rt.block_on(main),
            Err(e) => error!(core, error = %e, "cannot start runtime"),
        }
    }
}

/// The core's tasks: the metadata service, the mover (core 0), and the accept loop.
async fn serve(wiring: CoreWiring, boot: CoreBoot, listener: std::net::TcpListener) {
    let core = boot.core;
    if core == 0 {
        monoio::spawn(wiring.services.mover.clone().run());
    }
    monoio::spawn(ferrite_engine::serve(wiring.engine.clone(), boot));
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(core, error = %e, "cannot use the listener");
            return;
        }
    };
    let acceptor = wiring.tls.clone().map(|config| Rc::new(ferrite_s3::TlsAcceptor::from(config)));
    let gate = ConnectionGate::new(wiring.connections_per_core);
    let ctx = Rc::new(context(core, wiring));
    let mut warnings = AcceptWarnings::default();
    loop {
        let permit = gate.permit().await;
        match listener.accept().await {
            Ok((stream, _)) => {
                ferrite_s3::metrics::connection_opened();
                let connection = serve_connection(ctx.clone(), stream, acceptor.clone());
                monoio::spawn(async move {
                    connection.await;
                    ferrite_s3::metrics::connection_closed();
                    drop(permit);
                });
            }
            Err(e) => {
                drop(permit);
                warnings.failed(core, &e, gate.open.get());
                let _ = monoio::time::timeout(ACCEPT_RETRY_DELAY, gate.one_closed()).await;
            }
        }
    }
}

/// The core's request context: its share of the memory budget and its MD5 batcher.
fn context(core: usize, wiring: CoreWiring) -> Ctx {
    let engine = wiring.engine;
    let layout = engine.layout();
    let per_stream = ferrite_s3::budget::bytes_per_stream(engine.block_size(), layout.data, layout.parity);
    let slots = wiring.memory_budget_bytes / engine.cores() / per_stream;
    let budget = ferrite_s3::budget::Budget::new(core, slots);
    let md5 = ferrite_s3::md5x::core_batcher(wiring.services.md5);
    Ctx { engine, config: wiring.config, budget, kms: wiring.services.kms, mover: wiring.services.mover, md5 }
}
