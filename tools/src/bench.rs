//! `ferrite bench`: a warp-style S3 load generator. Each worker owns one keep-alive
//! connection and a blocking thread; requests are signed with SigV4 (UNSIGNED-PAYLOAD by
//! default, so the tool does not hash payloads). It prepares its objects, measures only
//! after a warm-up, reports per operation obj/s, MiB/s, latency percentiles and time to
//! first byte, and its own CPU per request, then removes what it created.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_s3::checksum::{Algorithm, Hasher};
use ferrite_s3::sigv4::{self, sha256_hex, signing_key, Scope, SignedRequest};
use hdrhistogram::Histogram;

const USAGE: &str = "usage: ferrite bench OP [options]

OP: put | get | stat | list | delete | mixed | multipart
(ops and obj/s count objects: a DeleteObjects request of --batch keys counts --batch; latency is per request)

  --endpoint URL[,URL...]  S3 endpoint(s), http:// or https:// (default http://127.0.0.1:9000)
  --ca FILE                PEM certificates to trust for https, beside the system's CA bundle
  --access-key K / --secret-key S   (default $FERRITE_ROOT_USER / $FERRITE_ROOT_PASSWORD or ferriteadmin)
  --bucket NAME            (default ferrite-bench; created and removed if it did not exist)
  --size SIZE              object size, e.g. 4KiB, 1MiB, 64MiB (default 1MiB)
  --random-size            sizes drawn log2-uniformly between 1 KiB and --size
  --part-size SIZE         multipart part size (default 5MiB)
  --concurrency N          workers, one connection each (default 16)
  --duration D             measured time, e.g. 10s (default 10s)
  --warmup D               unmeasured time first (default 1s)
  --objects N              objects prepared for get/stat/list/mixed (default 2500)
  --batch N                keys per DeleteObjects (default 100)
  --checksum ALGO          send x-amz-checksum-ALGO with each PUT and part (multipart uploads
                           name it at creation): crc32, crc32c, crc64nvme, sha1 or sha256
  --sign-payload           sign the payload SHA-256 instead of UNSIGNED-PAYLOAD
  --sse                    ask for SSE-S3 (x-amz-server-side-encryption: AES256) on writes
  --json                   print the report as JSON
  --no-cleanup             leave the objects";

#[derive(Clone)]
struct Opts {
    op: String,
    endpoints: Vec<String>,
    access: String,
    secret: String,
    bucket: String,
    size: u64,
    random_size: bool,
    part_size: u64,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    objects: usize,
    batch: usize,
    checksum: Option<Algorithm>,
    /// The TLS client setup, when any endpoint is https.
    tls: Option<Arc<rustls::ClientConfig>>,
    sign_payload: bool,
    sse: bool,
    json: bool,
    cleanup: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
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
    num.trim().parse::<u64>().map(|n| n * mult).map_err(|_| format!("bad size {s}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
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
    num.parse::<f64>().map(|n| Duration::from_secs_f64(n * unit)).map_err(|_| format!("bad duration {s}"))
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let op = args.first().cloned().ok_or_else(|| USAGE.to_owned())?;
    if !["put", "get", "stat", "list", "delete", "mixed", "multipart"].contains(&op.as_str()) {
        return Err(USAGE.to_owned());
    }
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| "ferriteadmin".into());
    let mut o = Opts {
        op,
        endpoints: vec!["http://127.0.0.1:9000".into()],
        access: env("FERRITE_ROOT_USER"),
        secret: env("FERRITE_ROOT_PASSWORD"),
        bucket: "ferrite-bench".into(),
        size: 1 << 20,
        random_size: false,
        part_size: 5 << 20,
        concurrency: 16,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        objects: 2500,
        batch: 100,
        checksum: None,
        tls: None,
        sign_payload: false,
        sse: false,
        json: false,
        cleanup: true,
    };
    let mut ca = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--endpoint" => o.endpoints = v()?.split(',').map(|s| s.trim_end_matches('/').to_owned()).collect(),
            "--access-key" => o.access = v()?,
            "--secret-key" => o.secret = v()?,
            "--bucket" => o.bucket = v()?,
            "--size" => o.size = parse_size(&v()?)?,
            "--random-size" => o.random_size = true,
            "--part-size" => o.part_size = parse_size(&v()?)?,
            "--concurrency" => o.concurrency = v()?.parse().map_err(|_| "bad --concurrency")?,
            "--duration" => o.duration = parse_duration(&v()?)?,
            "--warmup" => o.warmup = parse_duration(&v()?)?,
            "--objects" => o.objects = v()?.parse().map_err(|_| "bad --objects")?,
            "--batch" => o.batch = v()?.parse().map_err(|_| "bad --batch")?,
            "--checksum" => {
                let name = v()?;
                o.checksum = Some(Algorithm::parse(&name).ok_or_else(|| format!("unknown --checksum {name}"))?);
            }
            "--ca" => ca = Some(v()?),
            "--sign-payload" => o.sign_payload = true,
            "--sse" => o.sse = true,
            "--json" => o.json = true,
            "--no-cleanup" => o.cleanup = false,
            other => return Err(format!("unknown option {other}\n\n{USAGE}")),
        }
    }
    for e in &o.endpoints {
        let port = host_port(e).rsplit_once(':').map(|(_, p)| p);
        if !(e.starts_with("http://") || e.starts_with("https://")) || port.is_none_or(|p| p.parse::<u16>().is_err()) {
            return Err(format!("endpoint {e}: give http://HOST:PORT or https://HOST:PORT"));
        }
        if e.starts_with("https://") && tls_name(e).is_none() {
            return Err(format!("endpoint {e}: not a name or IP address a certificate can be checked against"));
        }
    }
    match (o.endpoints.iter().any(|e| e.starts_with("https://")), &ca) {
        (true, _) => {
            o.tls = Some({
                let system = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
                ferrite_tiering::outbound::http::client_tls_config(
                    system.as_deref(),
                    ca.as_deref().map(std::path::Path::new),
                )?
            })
        }
        (false, Some(_)) => return Err("--ca is for https:// endpoints".into()),
        (false, None) => {}
    }
    o.concurrency = o.concurrency.max(1);
    o.batch = o.batch.clamp(1, 1000);
    Ok(o)
}

/// HOST:PORT of an endpoint URL.
fn host_port(endpoint: &str) -> &str {
    endpoint.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/')
}

/// The name an https endpoint's certificate must carry: a DNS name, or an IP address (a
/// bracketed IPv6 one without its brackets). None where rustls cannot check one.
fn tls_name(endpoint: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    let hp = host_port(endpoint);
    let host = hp.rsplit_once(':').map_or(hp, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    rustls::pki_types::ServerName::try_from(host).ok()
}

/// A connection's byte stream: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One keep-alive connection with SigV4 signing, over plain HTTP or HTTPS.
pub(crate) struct Conn {
    host: String,
    https: bool,
    /// For https endpoints: the TLS setup and the name the certificate must carry.
    tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    stream: Option<Stream>,
    access: String,
    secret: String,
    key_cache: Option<(String, [u8; 32])>,
    sign_payload: bool,
    buf: Vec<u8>,
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    ttfb: Duration,
    etag: Option<String>,
}

fn now_amz() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    sigv4::format_amz_date(secs as i64)
}

impl Conn {
    fn new(endpoint: &str, o: &Opts) -> Conn {
        let mut conn = Conn::with_credentials(endpoint, &o.access, &o.secret);
        conn.sign_payload = o.sign_payload;
        if let (true, Some(config), Some(name)) = (conn.https, &o.tls, tls_name(endpoint)) {
            conn.tls = Some((config.clone(), name));
        }
        conn
    }

    pub(crate) fn with_credentials(endpoint: &str, access: &str, secret: &str) -> Conn {
        Conn {
            host: host_port(endpoint).to_owned(),
            https: endpoint.starts_with("https://"),
            tls: None,
            stream: None,
            access: access.to_owned(),
            secret: secret.to_owned(),
            key_cache: None,
            sign_payload: false,
            buf: vec![0u8; 256 << 10],
        }
    }

    /// Sends one request; `keep_body` keeps the response body (else it is only counted; an
    /// error's body is always kept, for its S3 error code).
    pub(crate) fn call(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        body: &[u8],
        keep_body: bool,
    ) -> std::io::Result<Reply> {
        let reused = self.stream.is_some();
        let mut result = self.try_call(method, path, query, headers, body, keep_body);
        if result.is_err() && reused {
            // A kept-alive connection the server closed meanwhile: reconnect once.
            self.stream = None;
            result = self.try_call(method, path, query, headers, body, keep_body);
        }
        if result.is_err() {
            // Whatever state the stream is in (a late reply, a broken TLS session), the next
            // request starts on a new connection.
            self.stream = None;
        }
        result
    }

    fn try_call(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        body: &[u8],
        keep_body: bool,
    ) -> std::io::Result<Reply> {
        if self.stream.is_none() {
            if self.https && self.tls.is_none() {
                return Err(std::io::Error::other("https endpoint without a TLS setup"));
            }
            let tcp = TcpStream::connect(&self.host)?;
            tcp.set_nodelay(true)?;
            tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
            self.stream = Some(match &self.tls {
                None => Stream::Plain(tcp),
                Some((config, name)) => {
                    let tls =
                        rustls::ClientConnection::new(config.clone(), name.clone()).map_err(std::io::Error::other)?;
                    Stream::Tls(Box::new(rustls::StreamOwned::new(tls, tcp)))
                }
            });
        }
        let amz = now_amz();
        let date = &amz[..8];
        let key = match &self.key_cache {
            Some((d, k)) if d == date => *k,
            _ => {
                let k = signing_key(&self.secret, date, "us-east-1");
                self.key_cache = Some((date.to_owned(), k));
                k
            }
        };
        let payload = if self.sign_payload { sha256_hex(body) } else { sigv4::UNSIGNED_PAYLOAD.to_owned() };
        let mut all: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        all.push(("host".into(), self.host.clone()));
        all.push(("x-amz-content-sha256".into(), payload.clone()));
        all.push(("x-amz-date".into(), amz.clone()));
        all.sort();
        let signed: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        let query_pairs: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let scope = Scope {
            access_key: self.access.clone(),
            date: date.to_owned(),
            region: "us-east-1".into(),
            amz_date: amz.clone(),
            key,
        };
        let req = SignedRequest { method, path, query: &query_pairs, headers: &all };
        let sig = sigv4::sign(&scope, &req, &signed, &payload).map_err(|e| std::io::Error::other(e.message))?;
        let mut head = format!("{method} {path}{}{query} HTTP/1.1\r\n", if query.is_empty() { "" } else { "?" });
        for (n, v) in &all {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str(&format!(
            "content-length: {}\r\nauthorization: AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={sig}\r\n\r\n",
            body.len(),
            self.access,
            scope.scope_string(),
            signed.join(";")
        ));
        let start = Instant::now();
        let Some(stream) = self.stream.as_mut() else { return Err(std::io::Error::other("no connection")) };
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        // Read the head.
        let mut filled = 0;
        let (status, head_len, content_length, ttfb, etag) = loop {
            let n = stream.read(&mut self.buf[filled..])?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            filled += n;
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut hs);
            match resp.parse(&self.buf[..filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    let cl = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                        .unwrap_or(0);
                    let status = resp.code.unwrap_or(0);
                    let cl = if method == "HEAD" || status == 304 || status == 204 { 0 } else { cl };
                    let etag = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("etag"))
                        .and_then(|h| std::str::from_utf8(h.value).ok().map(str::to_owned));
                    break (status, len, cl, start.elapsed(), etag);
                }
                Ok(httparse::Status::Partial) if filled < self.buf.len() => continue,
                _ => return Err(std::io::Error::other("bad response head")),
            }
        };
        let mut body_out = Vec::new();
        let mut have = filled - head_len;
        let keep_body = keep_body || status >= 300;
        if keep_body {
            body_out.extend_from_slice(&self.buf[head_len..filled]);
        }
        while have < content_length {
            let want = (content_length - have).min(self.buf.len());
            let n = stream.read(&mut self.buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "body cut short"));
            }
            if keep_body {
                body_out.extend_from_slice(&self.buf[..n]);
            }
            have += n;
        }
        Ok(Reply { status, body: body_out, ttfb, etag })
    }
}

/// xorshift64*: cheap per-worker randomness for keys and sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Latencies and volume of one operation kind, for one worker or merged.
struct OpStats {
    latency_us: Histogram<u64>,
    ttfb_us: Histogram<u64>,
    ops: u64,
    bytes: u64,
    errors: u64,
    /// Why requests failed ("HTTP 507 XFerriteStorageFull", "connection closed"), and how often.
    error_kinds: BTreeMap<String, u64>,
}

impl OpStats {
    fn new() -> OpStats {
        let h = || match Histogram::new_with_bounds(1, 600_000_000, 3) {
            Ok(h) => h,
            Err(e) => panic!("histogram bounds are constant and valid: {e}"),
        };
        OpStats { latency_us: h(), ttfb_us: h(), ops: 0, bytes: 0, errors: 0, error_kinds: BTreeMap::new() }
    }
    /// One request that handled `objects` objects (more than one for DeleteObjects).
    fn record(&mut self, latency: Duration, ttfb: Duration, bytes: u64, objects: u64) {
        let _ = self.latency_us.record((latency.as_micros() as u64).max(1));
        let _ = self.ttfb_us.record((ttfb.as_micros() as u64).max(1));
        self.ops += objects;
        self.bytes += bytes;
    }
    fn record_error(&mut self, kind: String) {
        self.errors += 1;
        *self.error_kinds.entry(kind).or_insert(0) += 1;
    }
    fn merge(&mut self, other: &OpStats) {
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.ttfb_us.add(&other.ttfb_us);
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.errors += other.errors;
        for (kind, n) in &other.error_kinds {
            *self.error_kinds.entry(kind.clone()).or_insert(0) += n;
        }
    }
}

/// What went wrong with one request, short enough for a report line: the status and the
/// S3 error code of an error answer, or the transport error.
fn error_kind(result: &std::io::Result<Reply>) -> String {
    match result {
        Ok(r) => {
            let body = String::from_utf8_lossy(&r.body);
            match body.split("<Code>").nth(1).and_then(|rest| rest.split("</Code>").next()) {
                Some(code) => format!("HTTP {} {}", r.status, code.chars().take(64).collect::<String>()),
                None => format!("HTTP {}", r.status),
            }
        }
        Err(e) => e.to_string().chars().take(80).collect(),
    }
}

struct Shared {
    opts: Opts,
    data: Vec<u8>,
    prepared: Vec<String>,
    next_delete: AtomicU64,
    done_ops: AtomicU64,
    stop: AtomicBool,
    measuring: AtomicBool,
}

fn object_size(o: &Opts, rng: &mut Rng) -> u64 {
    if !o.random_size || o.size <= 1024 {
        return o.size;
    }
    let lo = 10f64;
    let hi = (o.size as f64).log2();
    let exp = lo + (rng.below(1_000_000) as f64 / 1_000_000.0) * (hi - lo);
    (2f64.powf(exp) as u64).clamp(1024, o.size)
}

fn put_headers(o: &Opts, body: &[u8]) -> Vec<(&'static str, String)> {
    let mut h = vec![("content-type", "application/octet-stream".to_owned())];
    if o.sse {
        h.push(("x-amz-server-side-encryption", "AES256".to_owned()));
    }
    h.extend(checksum_header(o, body));
    h
}

/// The x-amz-checksum-* header of `body` for --checksum, if given.
fn checksum_header(o: &Opts, body: &[u8]) -> Option<(&'static str, String)> {
    let algorithm = o.checksum?;
    let mut c = Hasher::new(algorithm);
    c.update(body);
    Some((algorithm.header(), c.finish_base64()))
}

fn ok(r: &std::io::Result<Reply>) -> bool {
    matches!(r, Ok(reply) if reply.status / 100 == 2)
}

fn extract<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(&xml[start..end])
}

fn delete_xml(keys: &[String]) -> String {
    let mut x = String::from("<Delete><Quiet>true</Quiet>");
    for k in keys {
        x.push_str(&format!("<Object><Key>{}</Key></Object>", ferrite_s3::xml::escape(k)));
    }
    x.push_str("</Delete>");
    x
}

/// One multipart upload, as S3 wants it: encryption and the checksum algorithm named at
/// CreateMultipartUpload, each part's checksum sent with it and listed again in the
/// CompleteMultipartUpload body. A failed upload is aborted. Returns whether it succeeded.
fn multipart(conn: &mut Conn, o: &Opts, path: &str, body: &[u8]) -> bool {
    let mut create = vec![("content-type", "application/octet-stream".to_owned())];
    if o.sse {
        create.push(("x-amz-server-side-encryption", "AES256".to_owned()));
    }
    if let Some(algorithm) = o.checksum {
        create.push(("x-amz-checksum-algorithm", algorithm.name().to_owned()));
        if algorithm == Algorithm::Crc64Nvme {
            // AWS takes CRC64NVME only as a checksum of the whole object.
            create.push(("x-amz-checksum-type", "FULL_OBJECT".to_owned()));
        }
    }
    let Ok(created) = conn.call("POST", path, "uploads=", &create, &[], true) else { return false };
    let xml = String::from_utf8_lossy(&created.body).into_owned();
    let Some(upload_id) = extract(&xml, "UploadId") else { return false };
    let mut parts = String::from("<CompleteMultipartUpload>");
    let mut uploaded = true;
    for (i, chunk) in body.chunks(o.part_size.max(1) as usize).enumerate() {
        let q = format!("partNumber={}&uploadId={upload_id}", i + 1);
        let checksum = checksum_header(o, chunk);
        match conn.call("PUT", path, &q, checksum.as_slice(), chunk, false) {
            Ok(r) if r.status == 200 => {
                let etag = r.etag.unwrap_or_default();
                parts.push_str(&format!("<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag>", i + 1));
                if let (Some(algorithm), Some((_, value))) = (o.checksum, &checksum) {
                    parts.push_str(&format!("<Checksum{0}>{value}</Checksum{0}>", algorithm.name()));
                }
                parts.push_str("</Part>");
            }
            _ => {
                uploaded = false;
                break;
            }
        }
    }
    parts.push_str("</CompleteMultipartUpload>");
    let q = format!("uploadId={upload_id}");
    if uploaded && ok(&conn.call("POST", path, &q, &[], parts.as_bytes(), true)) {
        return true;
    }
    let _ = conn.call("DELETE", path, &q, &[], &[], false);
    false
}

fn worker(shared: Arc<Shared>, id: usize) -> BTreeMap<&'static str, OpStats> {
    let o = &shared.opts;
    let mut conn = Conn::new(&o.endpoints[id % o.endpoints.len()], o);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut stats: BTreeMap<&'static str, OpStats> = BTreeMap::new();
    let mut own: Vec<String> = Vec::new();
    let mut n = 0u64;
    let bucket = format!("/{}", o.bucket);
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let op: &'static str = match o.op.as_str() {
            "mixed" => match rng.below(100) {
                0..=44 => "get",
                45..=74 => "stat",
                75..=89 => "put",
                _ => "delete",
            },
            "put" => "put",
            "get" => "get",
            "stat" => "stat",
            "list" => "list",
            "delete" => "delete",
            _ => "multipart",
        };
        let started = Instant::now();
        let mut objects = 1u64;
        let (result, bytes) = match op {
            "put" | "multipart" => {
                let size = object_size(o, &mut rng) as usize;
                let body = &shared.data[..size];
                let key = format!("{bucket}/{op}/w{id}/{n}");
                let result = if op == "put" {
                    conn.call("PUT", &key, "", &put_headers(o, body), body, false)
                } else if multipart(&mut conn, o, &key, body) {
                    Ok(Reply { status: 200, body: Vec::new(), ttfb: started.elapsed(), etag: None })
                } else {
                    Err(std::io::Error::other("multipart upload failed"))
                };
                if o.op == "mixed" && ok(&result) {
                    own.push(key);
                }
                (result, size as u64)
            }
            "get" | "stat" => {
                let key = format!("{bucket}/{}", shared.prepared[rng.below(shared.prepared.len() as u64) as usize]);
                let method = if op == "get" { "GET" } else { "HEAD" };
                let result = conn.call(method, &key, "", &[], &[], false);
                let bytes = if op == "get" { o.size } else { 0 };
                (result, bytes)
            }
            "list" => (conn.call("GET", &bucket, "list-type=2&max-keys=100&prefix=prep", &[], &[], false), 0),
            _ => {
                // delete: a batch of prepared keys (or, in mixed, one of this worker's own).
                let keys: Vec<String> = if o.op == "mixed" {
                    match own.pop() {
                        Some(k) => vec![k.trim_start_matches(&format!("{bucket}/")).to_owned()],
                        None => continue,
                    }
                } else {
                    let start = shared.next_delete.fetch_add(o.batch as u64, Ordering::Relaxed) as usize;
                    if start >= shared.prepared.len() {
                        break;
                    }
                    shared.prepared[start..(start + o.batch).min(shared.prepared.len())].to_vec()
                };
                let xml = delete_xml(&keys);
                objects = keys.len() as u64;
                (conn.call("POST", &bucket, "delete=", &[], xml.as_bytes(), false), 0)
            }
        };
        let latency = started.elapsed();
        shared.done_ops.fetch_add(1, Ordering::Relaxed);
        if !shared.measuring.load(Ordering::Relaxed) {
            continue;
        }
        let entry = stats.entry(op).or_insert_with(OpStats::new);
        match &result {
            Ok(r) if r.status / 100 == 2 => entry.record(latency, r.ttfb, bytes, objects),
            _ => entry.record_error(error_kind(&result)),
        }
    }
    stats
}

/// This process's user + system CPU time, from /proc/self/stat (Linux reports it in
/// USER_HZ = 100 ticks per second). Zero where it cannot be read.
fn cpu_time() -> Duration {
    const TICKS_PER_SEC: u64 = 100;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 0-based 11 and 12 after the ")".
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / TICKS_PER_SEC)
}

/// Runs jobs on `concurrency` threads, each with its own connection.
fn parallel<T: Send + 'static>(o: &Opts, job: impl Fn(usize, &mut Conn) -> T + Send + Sync + 'static) -> Vec<T> {
    let job = Arc::new(job);
    let handles: Vec<_> = (0..o.concurrency)
        .map(|i| {
            let job = job.clone();
            let mut conn = Conn::new(&o.endpoints[i % o.endpoints.len()], o);
            std::thread::spawn(move || job(i, &mut conn))
        })
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok()).collect()
}

pub fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let mut admin = Conn::new(&o.endpoints[0], &o);
    let bucket = format!("/{}", o.bucket);
    let head = admin.call("HEAD", &bucket, "", &[], &[], false).map_err(|e| format!("{}: {e}", o.endpoints[0]))?;
    let created_bucket = head.status == 404;
    if created_bucket {
        let r = admin.call("PUT", &bucket, "", &[], &[], false).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("cannot create bucket {}: HTTP {}", o.bucket, r.status));
        }
    } else if head.status != 200 {
        return Err(format!("bucket {}: HTTP {} (check credentials)", o.bucket, head.status));
    }
    let mut data = vec![0u8; o.size.max(1) as usize];
    let mut rng = Rng(42);
    for chunk in data.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let data = Arc::new(data);
    // Prepare objects for the operations that read or delete them.
    let prepared: Vec<String> = if ["get", "stat", "list", "mixed", "delete"].contains(&o.op.as_str()) {
        (0..o.objects).map(|i| format!("prep/{i:08}")).collect()
    } else {
        Vec::new()
    };
    if !prepared.is_empty() {
        eprintln!("preparing {} objects of {} bytes...", prepared.len(), o.size);
        let keys = Arc::new(prepared.clone());
        let (od, dd) = (o.clone(), data.clone());
        let failures: usize = parallel(&o, move |i, conn| {
            let mut failed = 0;
            for k in keys.iter().skip(i).step_by(od.concurrency) {
                let path = format!("/{}/{k}", od.bucket);
                if !ok(&conn.call("PUT", &path, "", &put_headers(&od, &dd), &dd, false)) {
                    failed += 1;
                }
            }
            failed
        })
        .into_iter()
        .sum();
        if failures > 0 {
            return Err(format!("{failures} objects failed to upload while preparing"));
        }
    }
    let shared = Arc::new(Shared {
        opts: o.clone(),
        data: (*data).clone(),
        prepared,
        next_delete: AtomicU64::new(0),
        done_ops: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        measuring: AtomicBool::new(false),
    });
    let handles: Vec<_> = (0..o.concurrency)
        .map(|i| {
            let shared = shared.clone();
            std::thread::spawn(move || worker(shared, i))
        })
        .collect();
    // Deleting consumes a finite set of objects: measure it from the first request.
    if o.op != "delete" {
        std::thread::sleep(o.warmup);
    }
    let cpu_start = cpu_time();
    let measure_start = Instant::now();
    let ops_start = shared.done_ops.load(Ordering::Relaxed);
    shared.measuring.store(true, Ordering::Relaxed);
    let mut last_progress = Instant::now();
    while measure_start.elapsed() < o.duration {
        // Poll finely so a run whose work ends early (delete) is timed to its end.
        std::thread::sleep(Duration::from_millis(20).min(o.duration.saturating_sub(measure_start.elapsed())));
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        if !o.json && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let done = shared.done_ops.load(Ordering::Relaxed) - ops_start;
            let secs = measure_start.elapsed().as_secs_f64();
            eprint!("\r{:5.1}s  {done} requests  {:.0} requests/s   ", secs, done as f64 / secs.max(1e-9));
        }
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let measured = measure_start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_start);
    shared.stop.store(true, Ordering::Relaxed);
    let mut merged: BTreeMap<&'static str, OpStats> = BTreeMap::new();
    for h in handles {
        if let Ok(stats) = h.join() {
            for (op, s) in stats {
                merged.entry(op).or_insert_with(OpStats::new).merge(&s);
            }
        }
    }
    if !o.json {
        eprintln!();
    }
    let total_ops: u64 = merged.values().map(|s| s.ops + s.errors).sum();
    report(&o, &merged, measured, cpu, total_ops);
    if o.cleanup {
        cleanup(&o, &mut admin, created_bucket);
    }
    Ok(())
}

/// The figures of one operation kind over the measured window.
struct Row {
    op: &'static str,
    ops: u64,
    errors: u64,
    obj_per_s: f64,
    mib_per_s: f64,
    /// p50, p90, p99, p99.9 and max latency, ms.
    latency_ms: [f64; 5],
    /// p50 and p99 time to first byte, ms.
    ttfb_ms: [f64; 2],
    error_kinds: Vec<(String, u64)>,
}

impl Row {
    fn new(op: &'static str, s: &OpStats, secs: f64) -> Row {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &s.latency_us;
        Row {
            op,
            ops: s.ops,
            errors: s.errors,
            obj_per_s: s.ops as f64 / secs,
            mib_per_s: s.bytes as f64 / secs / 1_048_576.0,
            latency_ms: [
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
            ],
            ttfb_ms: [ms(s.ttfb_us.value_at_quantile(0.5)), ms(s.ttfb_us.value_at_quantile(0.99))],
            error_kinds: s.error_kinds.iter().map(|(k, n)| (k.clone(), *n)).collect(),
        }
    }

    fn json(&self) -> String {
        let [p50, p90, p99, p999, max] = self.latency_ms;
        let kinds: Vec<String> = self
            .error_kinds
            .iter()
            .map(|(kind, n)| format!("{}:{n}", serde_json::Value::from(kind.as_str())))
            .collect();
        format!(
            "{{\"op\":\"{}\",\"ops\":{},\"errors\":{},\"obj_per_s\":{:.1},\"mib_per_s\":{:.2},\"p50_ms\":{p50:.3},\"p90_ms\":{p90:.3},\"p99_ms\":{p99:.3},\"p999_ms\":{p999:.3},\"max_ms\":{max:.3},\"ttfb_p50_ms\":{:.3},\"ttfb_p99_ms\":{:.3},\"error_kinds\":{{{}}}}}",
            self.op,
            self.ops,
            self.errors,
            self.obj_per_s,
            self.mib_per_s,
            self.ttfb_ms[0],
            self.ttfb_ms[1],
            kinds.join(",")
        )
    }

    fn table_line(&self) -> String {
        let [p50, p90, p99, p999, max] = self.latency_ms;
        format!(
            "{:<10} {:>9} {:>10.1} {:>10.2} {p50:>9.2} {p90:>9.2} {p99:>9.2} {p999:>9.2} {max:>9.2} {:>10.2} {:>7}",
            self.op, self.ops, self.obj_per_s, self.mib_per_s, self.ttfb_ms[0], self.errors
        )
    }
}

fn report(o: &Opts, stats: &BTreeMap<&'static str, OpStats>, measured: Duration, cpu: Duration, total_ops: u64) {
    let secs = measured.as_secs_f64().max(1e-9);
    let cpu_us_per_op = if total_ops > 0 { cpu.as_micros() as f64 / total_ops as f64 } else { 0.0 };
    let rows: Vec<Row> = stats.iter().map(|(op, s)| Row::new(op, s, secs)).collect();
    if o.json {
        let results: Vec<String> = rows.iter().map(Row::json).collect();
        println!(
            "{{\"op\":\"{}\",\"size\":{},\"concurrency\":{},\"seconds\":{:.3},\"client_cpu_us_per_op\":{:.1},\"results\":[{}]}}",
            o.op,
            o.size,
            o.concurrency,
            secs,
            cpu_us_per_op,
            results.join(",")
        );
        return;
    }
    println!(
        "ferrite bench {}: size {} B{}, concurrency {}, measured {:.1} s, client CPU {:.1} us/op",
        o.op,
        o.size,
        if o.random_size { " (random)" } else { "" },
        o.concurrency,
        secs,
        cpu_us_per_op
    );
    if rows.is_empty() {
        println!("no operation completed in the measured window");
        return;
    }
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "op", "ops", "obj/s", "MiB/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "ttfb p50", "errors"
    );
    for row in &rows {
        println!("{}", row.table_line());
    }
    for row in &rows {
        for (kind, n) in &row.error_kinds {
            println!("{} errors: {n} x {kind}", row.op);
        }
    }
}

/// Deletes every object the run created (listing the bucket) and the bucket if it made it.
fn cleanup(o: &Opts, conn: &mut Conn, created_bucket: bool) {
    let bucket = format!("/{}", o.bucket);
    let prefixes = ["prep/", "put/", "multipart/"];
    for prefix in prefixes {
        let list = format!("list-type=2&max-keys=1000&prefix={prefix}");
        while let Ok(r) = conn.call("GET", &bucket, &list, &[], &[], true) {
            let xml = String::from_utf8_lossy(&r.body).into_owned();
            let keys: Vec<String> =
                xml.split("<Key>").skip(1).filter_map(|p| p.split("</Key>").next().map(str::to_owned)).collect();
            if keys.is_empty() {
                break;
            }
            for batch in keys.chunks(1000) {
                let _ = conn.call("POST", &bucket, "delete=", &[], delete_xml(batch).as_bytes(), false);
            }
        }
    }
    if created_bucket {
        let _ = conn.call("DELETE", &bucket, "", &[], &[], false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("x").is_err());
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn random_sizes_stay_in_bounds() {
        let o = parse(&["put".into(), "--size".into(), "1MiB".into(), "--random-size".into()]).unwrap();
        let mut rng = Rng(7);
        for _ in 0..1000 {
            let s = object_size(&o, &mut rng);
            assert!((1024..=1 << 20).contains(&s));
        }
    }
}
