//! The bench workers: each owns a connection and a thread, picks its next request (the mix
//! of `mixed`, or the one operation measured), sends it and counts it once measuring began.
//! Also the requests themselves: PUT headers, multipart uploads, DeleteObjects bodies.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferrite_s3::checksum::{Algorithm, Hasher};

use super::opts::{Op, Opts};
use super::stats::{error_kind, ok, OpStats, Rng};
use crate::client::{Conn, Reply};

/// Log2 of the smallest random size: 1 KiB.
const RANDOM_SIZE_LOG2_MIN: f64 = 10.0;

/// What the workers share with the run that started them.
pub struct Shared {
    pub opts: Opts,
    pub data: Vec<u8>,
    pub prepared: Vec<String>,
    pub next_delete: AtomicU64,
    pub done_ops: AtomicU64,
    pub stop: AtomicBool,
    pub measuring: AtomicBool,
}

/// The request kinds of the report: "put", "get", "stat", "list", "delete", "multipart".
type Kind = &'static str;

/// One worker's state between requests.
struct Worker {
    shared: Arc<Shared>,
    id: usize,
    conn: Conn,
    rng: Rng,
    /// Keys this worker wrote in a mixed run, for its deletes.
    own: Vec<String>,
    n: u64,
    bucket: String,
}

/// What one request did: its result, the object bytes it moved and the objects it handled.
/// None: nothing to do (a mixed worker with nothing of its own to delete).
type Outcome = Option<(std::io::Result<Reply>, u64, u64)>;

/// Runs requests until told to stop (or the objects to delete run out); returns what it
/// counted while measuring.
pub fn worker(shared: Arc<Shared>, id: usize) -> BTreeMap<Kind, OpStats> {
    let conn = shared.opts.conn(id);
    let rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let bucket = format!("/{}", shared.opts.bucket);
    let mut w = Worker { shared, id, conn, rng, own: Vec::new(), n: 0, bucket };
    let mut stats: BTreeMap<Kind, OpStats> = BTreeMap::new();
    while !w.shared.stop.load(Ordering::Relaxed) {
        w.n += 1;
        let kind = w.pick();
        let started = Instant::now();
        let outcome = match kind {
            "put" | "multipart" => w.write(kind, started),
            "get" | "stat" => w.read(kind),
            "list" => {
                Some((w.conn.call("GET", &w.bucket, "list-type=2&max-keys=100&prefix=prep", &[], &[], false), 0, 1))
            }
            _ => match w.delete() {
                Ok(outcome) => outcome,
                Err(Exhausted) => break,
            },
        };
        let Some((result, bytes, objects)) = outcome else { continue };
        let latency = started.elapsed();
        w.shared.done_ops.fetch_add(1, Ordering::Relaxed);
        if !w.shared.measuring.load(Ordering::Relaxed) {
            continue;
        }
        let entry = stats.entry(kind).or_insert_with(OpStats::new);
        match &result {
            Ok(r) if r.status / 100 == 2 => entry.record(latency, r.ttfb, bytes, objects),
            _ => entry.record_error(error_kind(&result)),
        }
    }
    stats
}

/// The prepared objects are all deleted: the delete run is over.
struct Exhausted;

impl Worker {
    /// The next request's kind: the operation measured, or a draw from the mixed workload.
    fn pick(&mut self) -> Kind {
        match self.shared.opts.op {
            Op::Mixed => match self.rng.below(100) {
                0..=44 => "get",
                45..=74 => "stat",
                75..=89 => "put",
                _ => "delete",
            },
            op => op.name(),
        }
    }

    fn write(&mut self, kind: Kind, started: Instant) -> Outcome {
        let o = &self.shared.opts;
        let size = object_size(o, &mut self.rng) as usize;
        let body = &self.shared.data[..size];
        let key = format!("{}/{kind}/w{}/{}", self.bucket, self.id, self.n);
        let result = if kind == "put" {
            self.conn.call("PUT", &key, "", &put_headers(o, body), body, false)
        } else if multipart(&mut self.conn, o, &key, body) {
            Ok(Reply { status: 200, body: Vec::new(), ttfb: started.elapsed(), etag: None })
        } else {
            Err(std::io::Error::other("multipart upload failed"))
        };
        if o.op == Op::Mixed && ok(&result) {
            self.own.push(key);
        }
        Some((result, size as u64, 1))
    }

    fn read(&mut self, kind: Kind) -> Outcome {
        let prepared = &self.shared.prepared;
        let key = format!("{}/{}", self.bucket, prepared[self.rng.below(prepared.len() as u64) as usize]);
        let method = if kind == "get" { "GET" } else { "HEAD" };
        let result = self.conn.call(method, &key, "", &[], &[], false);
        let bytes = if kind == "get" { self.shared.opts.size } else { 0 };
        Some((result, bytes, 1))
    }

    /// A batch of prepared keys (or, in mixed, one of this worker's own).
    fn delete(&mut self) -> Result<Outcome, Exhausted> {
        let shared = &self.shared;
        let o = &shared.opts;
        let keys: Vec<String> = if o.op == Op::Mixed {
            match self.own.pop() {
                Some(k) => vec![k.trim_start_matches(&format!("{}/", self.bucket)).to_owned()],
                None => return Ok(None),
            }
        } else {
            let start = shared.next_delete.fetch_add(o.batch as u64, Ordering::Relaxed) as usize;
            if start >= shared.prepared.len() {
                return Err(Exhausted);
            }
            shared.prepared[start..(start + o.batch).min(shared.prepared.len())].to_vec()
        };
        let xml = delete_xml(&keys);
        let result = self.conn.call("POST", &self.bucket, "delete=", &[], xml.as_bytes(), false);
        Ok(Some((result, 0, keys.len() as u64)))
    }
}

/// --size, or with --random-size a size drawn log2-uniformly between 1 KiB and --size.
pub fn object_size(o: &Opts, rng: &mut Rng) -> u64 {
    if !o.random_size || o.size <= 1024 {
        return o.size;
    }
    let hi = (o.size as f64).log2();
    let exp = RANDOM_SIZE_LOG2_MIN + (rng.below(1_000_000) as f64 / 1_000_000.0) * (hi - RANDOM_SIZE_LOG2_MIN);
    (2f64.powf(exp) as u64).clamp(1024, o.size)
}

pub fn put_headers(o: &Opts, body: &[u8]) -> Vec<(&'static str, String)> {
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

fn extract<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(&xml[start..end])
}

pub fn delete_xml(keys: &[String]) -> String {
    let mut x = String::from("<Delete><Quiet>true</Quiet>");
    for k in keys {
        x.push_str(&format!("<Object><Key>{}</Key></Object>", ferrite_s3::xml::escape(k)));
    }
    x.push_str("</Delete>");
    x
}

/// The CreateMultipartUpload headers: encryption and the checksum algorithm are named there.
fn create_headers(o: &Opts) -> Vec<(&'static str, String)> {
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
    create
}

/// One multipart upload, as S3 wants it: encryption and the checksum algorithm named at
/// CreateMultipartUpload, each part's checksum sent with it and listed again in the
/// CompleteMultipartUpload body. A failed upload is aborted. Returns whether it succeeded.
fn multipart(conn: &mut Conn, o: &Opts, path: &str, body: &[u8]) -> bool {
    let Ok(created) = conn.call("POST", path, "uploads=", &create_headers(o), &[], true) else { return false };
    let xml = String::from_utf8_lossy(&created.body).into_owned();
    let Some(upload_id) = extract(&xml, "UploadId") else { return false };
    let q = format!("uploadId={upload_id}");
    if let Some(parts) = upload_parts(conn, o, path, upload_id, body) {
        if ok(&conn.call("POST", path, &q, &[], parts.as_bytes(), true)) {
            return true;
        }
    }
    let _ = conn.call("DELETE", path, &q, &[], &[], false);
    false
}

/// Uploads every part; returns the CompleteMultipartUpload body, or None when a part failed.
fn upload_parts(conn: &mut Conn, o: &Opts, path: &str, upload_id: &str, body: &[u8]) -> Option<String> {
    let mut parts = String::from("<CompleteMultipartUpload>");
    for (i, chunk) in body.chunks(o.part_size.max(1) as usize).enumerate() {
        let q = format!("partNumber={}&uploadId={upload_id}", i + 1);
        let checksum = checksum_header(o, chunk);
        let r = conn.call("PUT", path, &q, checksum.as_slice(), chunk, false).ok().filter(|r| r.status == 200)?;
        let etag = r.etag.unwrap_or_default();
        parts.push_str(&format!("<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag>", i + 1));
        if let (Some(algorithm), Some((_, value))) = (o.checksum, &checksum) {
            parts.push_str(&format!("<Checksum{0}>{value}</Checksum{0}>", algorithm.name()));
        }
        parts.push_str("</Part>");
    }
    parts.push_str("</CompleteMultipartUpload>");
    Some(parts)
}
