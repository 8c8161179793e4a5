//! The command line of `ferrite bench` and the checked options a run uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ferrite_s3::checksum::Algorithm;

use crate::client::{host_port, tls_name, Conn, REGION_DEFAULT};

/// The most keys one DeleteObjects request may name (S3's limit).
const DELETE_BATCH_MAX: usize = 1000;

/// `ferrite bench OP`: ops and obj/s count objects (a DeleteObjects request of --batch keys
/// counts --batch); latency is per request.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The operation to measure
    #[arg(value_enum)]
    pub op: Op,
    /// S3 endpoint(s), http:// or https://
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',', default_value = "http://127.0.0.1:9000")]
    pub endpoint: Vec<String>,
    /// PEM certificates to trust for https, beside the system's CA bundle
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The system's CA bundle, when not at one of the usual paths
    #[arg(long, env = "SSL_CERT_FILE", value_name = "FILE")]
    pub ssl_cert_file: Option<PathBuf>,
    /// The region requests are signed for (a Ferrite server's FERRITE_REGION)
    #[arg(long, env = "FERRITE_REGION", value_name = "REGION", default_value = REGION_DEFAULT)]
    pub region: String,
    /// Access key
    #[arg(long, env = "FERRITE_ROOT_USER", value_name = "K", default_value = "ferriteadmin")]
    pub access_key: String,
    /// Secret key
    #[arg(
        long,
        env = "FERRITE_ROOT_PASSWORD",
        value_name = "S",
        default_value = "ferriteadmin",
        hide_env_values = true
    )]
    pub secret_key: String,
    /// The bucket; created and removed if it did not exist
    #[arg(long, value_name = "NAME", default_value = "ferrite-bench")]
    pub bucket: String,
    /// Object size, e.g. 4KiB, 1MiB, 64MiB
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    pub size: u64,
    /// Sizes drawn log2-uniformly between 1 KiB and --size
    #[arg(long)]
    pub random_size: bool,
    /// Multipart part size
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "5MiB")]
    pub part_size: u64,
    /// Workers, one connection each
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub concurrency: usize,
    /// Measured time, e.g. 10s, 500ms, 2m
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Unmeasured time first
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Objects prepared for get/stat/list/mixed/delete
    #[arg(long, value_name = "N", default_value_t = 2500)]
    pub objects: usize,
    /// Keys per DeleteObjects (1 to 1000)
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub batch: usize,
    /// Send x-amz-checksum-ALGO with each PUT and part (multipart uploads name it at
    /// creation): crc32, crc32c, crc64nvme, sha1 or sha256
    #[arg(long, value_name = "ALGO", value_parser = parse_checksum)]
    pub checksum: Option<Algorithm>,
    /// Sign the payload SHA-256 instead of UNSIGNED-PAYLOAD
    #[arg(long)]
    pub sign_payload: bool,
    /// Ask for SSE-S3 (x-amz-server-side-encryption: AES256) on writes
    #[arg(long)]
    pub sse: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Leave the objects
    #[arg(long)]
    pub no_cleanup: bool,
}

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Op {
    Put,
    Get,
    Stat,
    List,
    Delete,
    Mixed,
    Multipart,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Stat => "stat",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Mixed => "mixed",
            Op::Multipart => "multipart",
        }
    }

    /// Whether the run needs objects prepared before it measures.
    pub fn reads_prepared(self) -> bool {
        matches!(self, Op::Get | Op::Stat | Op::List | Op::Mixed | Op::Delete)
    }
}

/// A run's options, checked.
#[derive(Clone)]
pub struct Opts {
    pub op: Op,
    pub endpoints: Vec<String>,
    pub access: String,
    pub region: String,
    pub secret: String,
    pub bucket: String,
    pub size: u64,
    pub random_size: bool,
    pub part_size: u64,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub objects: usize,
    pub batch: usize,
    pub checksum: Option<Algorithm>,
    /// The TLS client setup, when any endpoint is https.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sign_payload: bool,
    pub sse: bool,
    pub json: bool,
    pub cleanup: bool,
}

impl Opts {
    /// Checks the endpoints and sets up TLS for https ones.
    pub fn from_args(args: BenchArgs) -> Result<Opts, String> {
        let endpoints: Vec<String> = args.endpoint.iter().map(|e| e.trim_end_matches('/').to_owned()).collect();
        check_endpoints(&endpoints)?;
        let tls = tls_setup(&endpoints, args.ssl_cert_file.as_deref(), args.ca.as_deref())?;
        Ok(Opts {
            op: args.op,
            endpoints,
            access: args.access_key,
            region: args.region,
            secret: args.secret_key,
            bucket: args.bucket,
            size: args.size,
            random_size: args.random_size,
            part_size: args.part_size,
            concurrency: args.concurrency.max(1),
            duration: args.duration,
            warmup: args.warmup,
            objects: args.objects,
            batch: args.batch.clamp(1, DELETE_BATCH_MAX),
            checksum: args.checksum,
            tls,
            sign_payload: args.sign_payload,
            sse: args.sse,
            json: args.json,
            cleanup: !args.no_cleanup,
        })
    }

    /// A connection to the `i`-th endpoint (round robin), signed and secured as asked.
    pub fn conn(&self, i: usize) -> Conn {
        let endpoint = &self.endpoints[i % self.endpoints.len()];
        Conn::new(endpoint, &self.access, &self.secret)
            .with_region(&self.region)
            .sign_payload(self.sign_payload)
            .with_tls(endpoint, self.tls.as_ref())
    }
}

fn check_endpoints(endpoints: &[String]) -> Result<(), String> {
    for e in endpoints {
        let port = host_port(e).rsplit_once(':').map(|(_, p)| p);
        if !(e.starts_with("http://") || e.starts_with("https://")) || port.is_none_or(|p| p.parse::<u16>().is_err()) {
            return Err(format!("endpoint {e}: give http://HOST:PORT or https://HOST:PORT"));
        }
        if e.starts_with("https://") && tls_name(e).is_none() {
            return Err(format!("endpoint {e}: not a name or IP address a certificate can be checked against"));
        }
    }
    Ok(())
}

/// The TLS client setup when any endpoint is https; --ca only makes sense then.
fn tls_setup(
    endpoints: &[String],
    system: Option<&std::path::Path>,
    ca: Option<&std::path::Path>,
) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    match (endpoints.iter().any(|e| e.starts_with("https://")), ca) {
        (true, _) => Ok(Some(ferrite_tiering::outbound::http::client_tls_config(system, ca)?)),
        (false, Some(_)) => Err("--ca is for https:// endpoints".into()),
        (false, None) => Ok(None),
    }
}

fn parse_checksum(name: &str) -> Result<Algorithm, String> {
    Algorithm::parse(name).ok_or_else(|| format!("unknown --checksum {name}"))
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1000),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    num.trim().parse::<u64>().ok().and_then(|n| n.checked_mul(mult)).ok_or_else(|| format!("bad size {s}"))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let secs = num.parse::<f64>().map_err(|_| format!("bad duration {s}"))?;
    Duration::try_from_secs_f64(secs * unit).map_err(|_| format!("bad duration {s}"))
}
