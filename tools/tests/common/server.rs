//! Starting and stopping the real `ferrite` binary on fresh (or given) drive directories.
//! A server is ready when it answers: the helper picks a free port, starts the server on it
//! and waits until a signed `GET /ferrite/admin/v1/heal` returns the status of *these*
//! drives (so another process that took the port meanwhile is not mistaken for it). The
//! server's log (stdout) is kept for the few tests that read a start-up event.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::netns::NetNs;
use super::raw;

/// How long a server may take to answer after it was started (a crash test's restart
/// replays logs; debug builds are slow).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How often start-up looks whether the server answers.
const START_POLL: Duration = Duration::from_millis(20);
/// Attempts with a new port when another process took the chosen one first.
const PORT_ATTEMPTS: usize = 5;
/// How long `startup()` waits for the log to catch up with a server that already answers.
const LOG_CATCH_UP: Duration = Duration::from_secs(10);

pub struct Server {
    pub child: Child,
    /// Where clients reach it (127.0.0.1:PORT, whatever address it listens on).
    pub endpoint: String,
    pub addr: String,
    pub root: PathBuf,
    pub drives: Vec<PathBuf>,
    /// Every line the server wrote to stdout (its log), as they arrive.
    log: Arc<Mutex<Vec<String>>>,
    /// For a server speaking https: the client setup that trusts its certificate.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The region it answers for (FERRITE_REGION among the variables it was started with).
    pub region: String,
}

/// Where a server listens and how it is reached.
#[derive(Clone)]
struct Listen {
    /// The host of `--address` (`0.0.0.0` listens on every interface).
    host: &'static str,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The descriptor limit (soft and hard) it starts with, if lowered.
    fd_limit: Option<u64>,
    /// The network namespace it runs in (its name), reached at that address from here.
    netns: Option<(String, std::net::Ipv4Addr)>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen { host: "127.0.0.1", tls: None, fd_limit: None, netns: None }
    }
}

fn unique_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("ferrite-it-{}-{nanos}", std::process::id()))
}

/// A port no one listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The binary the tests start: this build's, or the one FERRITE_TEST_BINARY names (to run a
/// test against another build, e.g. to watch a new test fail on the previous one).
pub(super) fn binary() -> String {
    std::env::var("FERRITE_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferrite").to_owned())
}

/// `ferrite`, started directly, or in a network namespace (`ip netns exec`), or with
/// `fd_limit` through `sh` after `ulimit -n` (soft and hard: the server cannot raise it back).
fn command(at: &Listen) -> Command {
    match (at.fd_limit, &at.netns) {
        (None, None) => Command::new(binary()),
        (None, Some((name, _))) => {
            let mut ip = Command::new("ip");
            ip.args(["netns", "exec", name, &binary()]);
            ip
        }
        (Some(limit), None) => {
            let mut sh = Command::new("sh");
            sh.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), &binary()]);
            sh
        }
        (Some(_), Some(_)) => unimplemented!("a lowered descriptor limit inside a namespace"),
    }
}

/// Copies `from` line by line into `log` (and, for stderr, to the test's stderr too).
fn collect(from: impl Read + Send + 'static, log: Arc<Mutex<Vec<String>>>, echo: bool) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if echo {
                eprintln!("{line}");
            }
            log.lock().unwrap().push(line);
        }
    });
}

impl Server {
    pub fn start(drive_count: usize) -> Server {
        Self::start_with(drive_count, &[], &[])
    }

    /// Starts with extra command-line arguments and environment variables.
    pub fn start_with(drive_count: usize, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let root = unique_dir();
        let drives: Vec<PathBuf> = (1..=drive_count).map(|i| root.join(format!("d{i}"))).collect();
        Self::launch(root, drives, args, envs)
    }

    pub fn start_on(root: PathBuf, drives: Vec<PathBuf>) -> Server {
        Self::launch(root, drives, &[], &[])
    }

    /// Starts on the given drive directories with environment variables (drives the test
    /// brought, e.g. a committed fixture's, and the settings they need to be read).
    pub fn start_on_with(root: PathBuf, drives: Vec<PathBuf>, envs: &[(&str, &str)]) -> Server {
        Self::launch(root, drives, &[], envs)
    }

    /// Starts an https server (`--certs-dir`: public.crt, private.key); `ca_file` is what a
    /// client must trust to verify it. `endpoint` is then https://127.0.0.1:PORT.
    pub fn start_tls(drive_count: usize, certs_dir: &Path, ca_file: &Path) -> Server {
        let root = unique_dir();
        let drives: Vec<PathBuf> = (1..=drive_count).map(|i| root.join(format!("d{i}"))).collect();
        let tls = ferrite_tiering::outbound::http::client_tls_config(None, Some(ca_file)).expect("TLS client setup");
        let certs = certs_dir.to_str().expect("a UTF-8 path");
        Self::launch_at(root, drives, &["--certs-dir", certs], &[], Listen { tls: Some(tls), ..Listen::default() })
    }

    /// Starts a server in the network namespace `ns`, listening on every interface there:
    /// `addr` and `endpoint` name the namespace's address, which clients here reach from an
    /// address that is not loopback (`ns.host_ip`).
    pub fn start_in(ns: &NetNs, drive_count: usize, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let root = unique_dir();
        let drives: Vec<PathBuf> = (1..=drive_count).map(|i| root.join(format!("d{i}"))).collect();
        let netns = Some((ns.name.clone(), ns.inner_ip));
        Self::launch_at(root, drives, args, envs, Listen { host: "0.0.0.0", netns, ..Listen::default() })
    }

    /// Starts with its descriptor limit (soft and hard) lowered to `fd_limit`.
    pub fn start_limited(drive_count: usize, envs: &[(&str, &str)], fd_limit: u64) -> Server {
        let root = unique_dir();
        let drives: Vec<PathBuf> = (1..=drive_count).map(|i| root.join(format!("d{i}"))).collect();
        Self::launch_at(root, drives, &[], envs, Listen { fd_limit: Some(fd_limit), ..Listen::default() })
    }

    /// Starts on 127.0.0.1:`port` exactly (a test that holds the port first); panics if it
    /// never serves.
    pub fn start_at(port: u16, drive_count: usize, envs: &[(&str, &str)]) -> Server {
        let root = unique_dir();
        let drives: Vec<PathBuf> = (1..=drive_count).map(|i| root.join(format!("d{i}"))).collect();
        Self::try_launch(&root, &drives, port, &[], envs, &Listen::default())
            .expect("ferrite could not listen on its address")
    }

    fn launch(root: PathBuf, drives: Vec<PathBuf>, args: &[&str], envs: &[(&str, &str)]) -> Server {
        Self::launch_at(root, drives, args, envs, Listen::default())
    }

    fn launch_at(root: PathBuf, drives: Vec<PathBuf>, args: &[&str], envs: &[(&str, &str)], at: Listen) -> Server {
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            if let Some(server) = Self::try_launch(&root, &drives, port, args, envs, &at) {
                return server;
            }
        }
        panic!("ferrite could not listen on any of {PORT_ATTEMPTS} free ports");
    }

    /// Starts the server on `addr`; None when the port was taken before it could bind.
    fn try_launch(
        root: &std::path::Path,
        drives: &[PathBuf],
        port: u16,
        args: &[&str],
        envs: &[(&str, &str)],
        at: &Listen,
    ) -> Option<Server> {
        let addr = match &at.netns {
            None => format!("127.0.0.1:{port}"),
            Some((_, ip)) => format!("{ip}:{port}"),
        };
        let mut child = command(at)
            .args(["server", "--address", &format!("{}:{port}", at.host)])
            .args(args)
            .args(drives)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferrite");
        let (log, errors) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        collect(child.stdout.take().expect("stdout"), log.clone(), false);
        collect(child.stderr.take().expect("stderr"), errors.clone(), true);
        let scheme = if at.tls.is_some() { "https" } else { "http" };
        let mut server = Server {
            child,
            endpoint: format!("{scheme}://{addr}"),
            addr,
            root: root.to_owned(),
            drives: drives.to_vec(),
            log,
            tls: at.tls.clone(),
            region: envs.iter().find(|(k, _)| *k == "FERRITE_REGION").map_or(raw::REGION, |(_, v)| v).to_owned(),
        };
        match server.wait_until_serving() {
            Ok(()) => Some(server),
            Err(_) if errors.lock().unwrap().iter().any(|l| l.contains("cannot listen")) => {
                server.forget_drives();
                None
            }
            Err(status) => panic!("ferrite exited ({status}) before serving; log: {:?}", server.log()),
        }
    }

    /// Waits until the server answers with the status of its own drives; Err when it exited.
    fn wait_until_serving(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for ferrite") {
                return Err(status);
            }
            if self.serves_these_drives() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "ferrite did not answer within {START_TIMEOUT:?}; log: {:?}",
                self.log()
            );
            std::thread::sleep(START_POLL);
        }
    }

    /// Whether the heal status at this address lists exactly this server's drives.
    fn serves_these_drives(&self) -> bool {
        let answer = match &self.tls {
            None => raw::signed_get_in(&self.region, &self.addr, "/ferrite/admin/v1/heal"),
            Some(tls) => raw::signed_get_tls(&self.addr, "/ferrite/admin/v1/heal", tls.clone()),
        };
        let Ok((200, body)) = answer else { return false };
        let Ok(status) = serde_json::from_slice::<serde_json::Value>(&body) else { return false };
        let paths: Vec<&str> =
            status["drives"].as_array().into_iter().flatten().filter_map(|d| d["path"].as_str()).collect();
        let ours: Vec<String> = self.drives.iter().map(|d| d.display().to_string()).collect();
        paths == ours
    }

    /// Leaves the drive directories to the caller (a failed attempt must not remove them).
    fn forget_drives(&mut self) {
        self.kill();
        self.root = PathBuf::new();
    }

    /// Every line the server has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The start-up events: everything the server logged up to where it listens.
    pub fn startup(&self) -> Vec<String> {
        let deadline = Instant::now() + LOG_CATCH_UP;
        loop {
            let log = self.log();
            if let Some(end) = log.iter().position(|l| l.contains("listening")) {
                return log[..=end].to_vec();
            }
            assert!(Instant::now() < deadline, "no start-up events logged: {log:?}");
            std::thread::sleep(START_POLL);
        }
    }

    /// The start-up event that says how the index was built.
    pub fn index_note(&self) -> String {
        self.startup().into_iter().find(|l| l.contains("index")).unwrap_or_default()
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        super::client_with(&self.endpoint, super::USER, super::PASSWORD)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server (SIGKILL) and starts it again on the same drives.
    pub fn restart(self) -> Server {
        self.restart_with(&[])
    }

    /// Kills the server (SIGKILL) and starts it again on the same drives with `envs`.
    pub fn restart_with(mut self, envs: &[(&str, &str)]) -> Server {
        self.kill();
        let root = std::mem::take(&mut self.root);
        let drives = std::mem::take(&mut self.drives);
        Server::launch(root, drives, &[], envs)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if !self.root.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
