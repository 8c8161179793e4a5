//! Azurite, Microsoft's Azure Storage emulator (the real Blob REST API), started from npm's
//! `azurite@3.35.0`, which `scripts/test` installs into `.cache/azurite` (or
//! `FERRITE_AZURITE_BIN`): on 127.0.0.1, a port of its own and a temporary location.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account and key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Option<Child>,
    pub port: u16,
    pub location: PathBuf,
    /// HTTPS with this certificate and key, and bearer tokens checked (`--oauth basic`).
    oauth: Option<(PathBuf, PathBuf)>,
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("FERRITE_AZURITE_BIN") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/azurite/node_modules/.bin/azurite-blob");
    if local.exists() {
        return local;
    }
    panic!("Azurite is missing: scripts/test installs it (npm install --prefix .cache/azurite azurite@3.35.0), or set FERRITE_AZURITE_BIN");
}

impl Azurite {
    pub fn start() -> Azurite {
        Azurite::start_with(None)
    }

    /// Azurite over HTTPS (`cert`, `key`: PEM files) that also takes Entra ID bearer tokens.
    /// Its "basic" check reads a token's issuer, audience and lifetime, not its signature.
    pub fn start_oauth(cert: &std::path::Path, key: &std::path::Path) -> Azurite {
        Azurite::start_with(Some((cert.to_owned(), key.to_owned())))
    }

    fn start_with(oauth: Option<(PathBuf, PathBuf)>) -> Azurite {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let location = std::env::temp_dir().join(format!("ferrite-azurite-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&location).unwrap();
        let mut azurite = Azurite { child: None, port, location, oauth };
        azurite.launch();
        azurite
    }

    fn launch(&mut self) {
        let mut command = Command::new(binary());
        if let Some((cert, key)) = &self.oauth {
            command.args(["--oauth", "basic", "--cert"]).arg(cert).arg("--key").arg(key);
        }
        let child = command
            .args(["--blobHost", "127.0.0.1", "--blobPort", &self.port.to_string()])
            .arg("--location")
            .arg(&self.location)
            .args(["--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start azurite");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "azurite did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Blob endpoint, path-style: http(s)://127.0.0.1:PORT/devstoreaccount1.
    pub fn endpoint(&self) -> String {
        let scheme = if self.oauth.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Stops it as an operator would (SIGTERM: it saves its metadata database on the way
    /// out; a SIGKILL would lose the last seconds of it), SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts again on the same port and location (what it stored is still there).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.location);
    }
}
