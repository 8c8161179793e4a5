//! Seeded kill -9: for each seed, a 4-drive server takes a random workload from concurrent
//! workers (PUTs of random sizes, inline and with data files, overwrites, multipart uploads,
//! CopyObject, DeleteObjects batches), is killed with SIGKILL at a random moment and started
//! again; then every key is checked against a model of what was acknowledged.
//!
//! Each worker owns its keys and runs one operation at a time, so the model knows, per key,
//! the state its last acknowledged operation left and the state the operation in flight at
//! the kill (if any) would leave. After the restart a key must hold one of those two,
//! byte-identical, and the listing must agree with the GETs.
//!
//! The seed fixes the workload and the moment of the kill (not the server's scheduling).
//! Without FERRITE_CRASH_SEEDS each run picks fresh seeds and prints them; a failure prints
//! the command that replays its seed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use common::{Rng, Server};
use md5::{Digest, Md5};

const BUCKET: &str = "crash";
const SEEDS_DEFAULT_COUNT: usize = 5;
const WORKERS: u64 = 4;
const KEYS_PER_WORKER: u64 = 8;
/// Every worker stops after this many operations even if the kill has not come yet.
const STEPS_PER_WORKER_MAX: u64 = 10_000;
/// The kill comes this long after the workers start: a seeded moment in [min, max).
const KILL_AFTER_MS_MIN: u64 = 500;
const KILL_AFTER_MS_MAX: u64 = 3_000;
/// Objects up to this size are stored inline in the metadata log; larger ones in data files.
const INLINE_BYTES_MAX: u64 = 128 << 10;
const PUT_BYTES_MAX: u64 = 3 << 20;
const PART_1_BYTES: usize = 5 << 20;
const PART_2_BYTES_MAX: u64 = 300_000;
const DELETE_BATCH_MAX: u64 = 5;

/// Object bodies drawn from the seeded generator (common::Rng, splitmix64), so that a seed
/// replays the same workload.
trait Bodies {
    fn body(&mut self, len: u64) -> Arc<Vec<u8>>;
    fn body_between(&mut self, min: u64, max: u64) -> Arc<Vec<u8>>;
}

impl Bodies for Rng {
    fn body(&mut self, len: u64) -> Arc<Vec<u8>> {
        Arc::new(common::bytes(len as usize, self.next()))
    }

    /// A body of a length in [min, max).
    fn body_between(&mut self, min: u64, max: u64) -> Arc<Vec<u8>> {
        let len = self.between(min, max);
        self.body(len)
    }
}

/// An object as the model expects it: its bytes and, when known, its ETag.
#[derive(Clone)]
struct Obj {
    body: Arc<Vec<u8>>,
    /// None when the ETag cannot be predicted (a multipart upload that was not acknowledged).
    etag: Option<String>,
}

impl Obj {
    fn with_md5(body: Arc<Vec<u8>>) -> Obj {
        let etag = Some(md5_hex(&body));
        Obj { body, etag }
    }

    fn matches(&self, body: &[u8], etag: &str) -> bool {
        self.body.as_slice() == body && self.etag.as_ref().is_none_or(|e| e == etag)
    }
}

fn md5_hex(data: &[u8]) -> String {
    ferrite_s3::sigv4::hex(&Md5::digest(data))
}

/// What one key may hold.
#[derive(Default)]
struct KeyModel {
    /// The state the last acknowledged operation left (None: absent).
    acked: Option<Obj>,
    /// The state the operation in flight would leave, while it is in flight.
    in_flight: Option<Option<Obj>>,
    /// The operations on this key, for failure messages.
    history: Vec<String>,
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<String, KeyModel>,
    /// Upload ids whose CompleteMultipartUpload was acknowledged: none may be listed again.
    completed_uploads: BTreeSet<String>,
}

/// One operation of a worker, with its data drawn from the worker's generator.
enum Op {
    Put { key: String, body: Arc<Vec<u8>> },
    Multipart { key: String, part_1: Arc<Vec<u8>>, part_2: Arc<Vec<u8>> },
    Copy { source: String, key: String, body: Arc<Vec<u8>> },
    DeleteObjects { keys: Vec<String> },
}

impl Op {
    fn describe(&self) -> String {
        match self {
            Op::Put { key, body } => format!("PUT {key} ({} bytes, md5 {})", body.len(), md5_hex(body)),
            Op::Multipart { key, part_1, part_2 } => {
                format!("multipart {key} ({} + {} bytes)", part_1.len(), part_2.len())
            }
            Op::Copy { source, key, body } => format!("COPY {source} -> {key} ({} bytes)", body.len()),
            Op::DeleteObjects { keys } => format!("DeleteObjects {keys:?}"),
        }
    }

    /// The state each key the operation touches would have after it.
    fn effects(&self) -> Vec<(String, Option<Obj>)> {
        match self {
            Op::Put { key, body } => vec![(key.clone(), Some(Obj::with_md5(body.clone())))],
            Op::Multipart { key, part_1, part_2 } => {
                let mut whole = part_1.to_vec();
                whole.extend_from_slice(part_2);
                vec![(key.clone(), Some(Obj { body: Arc::new(whole), etag: None }))]
            }
            Op::Copy { key, body, .. } => vec![(key.clone(), Some(Obj::with_md5(body.clone())))],
            Op::DeleteObjects { keys } => keys.iter().map(|k| (k.clone(), None)).collect(),
        }
    }
}

fn pick_op(rng: &mut Rng, model: &Model, keys: &[String], ghost: &str) -> Op {
    let key = keys[rng.below(keys.len() as u64) as usize].clone();
    match rng.below(100) {
        0..=24 => {
            // Inline sizes, with the edges: empty and exactly the inline limit.
            let len = match rng.below(4) {
                0 => 0,
                1 => INLINE_BYTES_MAX,
                _ => rng.between(1, INLINE_BYTES_MAX),
            };
            Op::Put { key, body: rng.body(len) }
        }
        25..=59 => Op::Put { key, body: rng.body_between(INLINE_BYTES_MAX + 1, PUT_BYTES_MAX + 1) },
        60..=69 => {
            Op::Multipart { key, part_1: rng.body(PART_1_BYTES as u64), part_2: rng.body_between(1, PART_2_BYTES_MAX) }
        }
        70..=84 => {
            let existing: Vec<&String> =
                keys.iter().filter(|k| *k != &key && model.keys.get(*k).is_some_and(|m| m.acked.is_some())).collect();
            if existing.is_empty() {
                return Op::Put { key, body: rng.body_between(0, PUT_BYTES_MAX) };
            }
            let source = existing[rng.below(existing.len() as u64) as usize].clone();
            let body = model.keys[&source].acked.as_ref().map(|o| o.body.clone()).unwrap_or_default();
            Op::Copy { source, key, body }
        }
        _ => {
            // Some existing keys, some absent, and one that is never written at all.
            let mut batch: BTreeSet<String> = (0..rng.between(1, DELETE_BATCH_MAX + 1))
                .map(|_| keys[rng.below(keys.len() as u64) as usize].clone())
                .collect();
            if rng.below(2) == 0 {
                batch.insert(ghost.to_owned());
            }
            Op::DeleteObjects { keys: batch.into_iter().collect() }
        }
    }
}

/// Runs the operation. Ok carries the ETag a multipart upload got and its upload id.
async fn run_op(c: &aws_sdk_s3::Client, op: &Op) -> Result<Option<(String, String)>, String> {
    match op {
        Op::Put { key, body } => {
            let out = c
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .body(ByteStream::from(body.to_vec()))
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let expected = md5_hex(body);
            if out.e_tag().map(|e| e.trim_matches('"')) != Some(expected.as_str()) {
                return Err(format!("BUG: PUT {key} acknowledged with ETag {:?}, expected {expected}", out.e_tag()));
            }
            Ok(None)
        }
        Op::Multipart { key, part_1, part_2 } => {
            let up = c.create_multipart_upload().bucket(BUCKET).key(key).send().await.map_err(|e| format!("{e:?}"))?;
            let id = up.upload_id().unwrap_or_default().to_owned();
            let mut parts = CompletedMultipartUpload::builder();
            for (number, body) in [(1, part_1), (2, part_2)] {
                let out = c
                    .upload_part()
                    .bucket(BUCKET)
                    .key(key)
                    .upload_id(&id)
                    .part_number(number)
                    .body(ByteStream::from(body.to_vec()))
                    .send()
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                let e_tag = out.e_tag().unwrap_or_default();
                parts = parts.parts(CompletedPart::builder().part_number(number).e_tag(e_tag).build());
            }
            let out = c
                .complete_multipart_upload()
                .bucket(BUCKET)
                .key(key)
                .upload_id(&id)
                .multipart_upload(parts.build())
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            Ok(Some((out.e_tag().unwrap_or_default().trim_matches('"').to_owned(), id)))
        }
        Op::Copy { source, key, body } => {
            let out = c
                .copy_object()
                .bucket(BUCKET)
                .key(key)
                .copy_source(format!("{BUCKET}/{source}"))
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let etag = out.copy_object_result().and_then(|r| r.e_tag()).map(|e| e.trim_matches('"').to_owned());
            if etag.as_deref() != Some(md5_hex(body).as_str()) {
                return Err(format!("BUG: COPY {source} -> {key} acknowledged with ETag {etag:?}"));
            }
            Ok(None)
        }
        Op::DeleteObjects { keys } => {
            let objects: Vec<ObjectIdentifier> =
                keys.iter().map(|k| ObjectIdentifier::builder().key(k).build().expect("key is set")).collect();
            let delete = Delete::builder().set_objects(Some(objects)).build().expect("objects are set");
            let out = c.delete_objects().bucket(BUCKET).delete(delete).send().await.map_err(|e| format!("{e:?}"))?;
            let deleted: BTreeSet<&str> = out.deleted().iter().filter_map(|d| d.key()).collect();
            if !out.errors().is_empty() || deleted.len() != keys.len() {
                return Err(format!(
                    "BUG: DeleteObjects {keys:?} answered deleted {deleted:?}, errors {:?}",
                    out.errors()
                ));
            }
            Ok(None)
        }
    }
}

/// One worker: operations on its own keys, one at a time, until one fails. A failure
/// before the kill is a problem (Err); after it, expected.
async fn worker(
    c: aws_sdk_s3::Client,
    seed: u64,
    w: u64,
    model: Arc<Mutex<Model>>,
    killed: Arc<AtomicBool>,
) -> Result<u64, String> {
    let mut rng = Rng(seed ^ (w + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let keys: Vec<String> = (0..KEYS_PER_WORKER).map(|k| format!("w{w}/k{k}")).collect();
    let ghost = format!("w{w}/never-written");
    for step in 0..STEPS_PER_WORKER_MAX {
        let op = pick_op(&mut rng, &model.lock().unwrap(), &keys, &ghost);
        let what = op.describe();
        {
            let mut m = model.lock().unwrap();
            for (key, after) in op.effects() {
                let k = m.keys.entry(key).or_default();
                k.in_flight = Some(after);
                k.history.push(format!("step {step}: {what}"));
            }
        }
        let result = run_op(&c, &op).await;
        let mut m = model.lock().unwrap();
        match result {
            Ok(multipart) => {
                if let Some((_, upload_id)) = &multipart {
                    m.completed_uploads.insert(upload_id.clone());
                }
                for (key, mut after) in op.effects() {
                    if let (Some(obj), Some((etag, _))) = (after.as_mut(), &multipart) {
                        obj.etag = Some(etag.clone());
                    }
                    let k = m.keys.get_mut(&key).expect("in the model since the operation began");
                    k.acked = after;
                    k.in_flight = None;
                    k.history.push(format!("step {step}: acknowledged"));
                }
            }
            Err(e) if e.starts_with("BUG") => return Err(format!("worker {w}, step {step}: {e}")),
            Err(_) if killed.load(Ordering::SeqCst) => return Ok(step),
            Err(e) => return Err(format!("worker {w}, step {step} ({what}) failed before the kill: {e}")),
        }
    }
    Ok(STEPS_PER_WORKER_MAX)
}

/// A client that never retries: a retry could land after the kill, or on the next server.
async fn get(c: &aws_sdk_s3::Client, key: &str) -> Result<Option<(Vec<u8>, String)>, String> {
    match c.get_object().bucket(BUCKET).key(key).send().await {
        Ok(out) => {
            let etag = out.e_tag().unwrap_or_default().trim_matches('"').to_owned();
            let body = out.body.collect().await.map_err(|e| format!("GET {key}: body: {e}"))?;
            Ok(Some((body.into_bytes().to_vec(), etag)))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
        Err(e) => Err(format!("GET {key}: {e:?}")),
    }
}

fn describe(state: &Option<Obj>) -> String {
    match state {
        None => "absent".into(),
        Some(o) => format!("{} bytes, md5 {}, etag {:?}", o.body.len(), md5_hex(&o.body), o.etag),
    }
}

/// Checks the restarted server against the model; returns what is wrong.
async fn check(server: &Server, model: &Model) -> Vec<String> {
    let c = server.client();
    let mut problems = Vec::new();
    let mut found: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (key, k) in &model.keys {
        let got = match get(&c, key).await {
            Ok(got) => got,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let allowed: Vec<&Option<Obj>> = std::iter::once(&k.acked).chain(k.in_flight.as_ref()).collect();
        let ok = allowed.iter().any(|a| match (a, &got) {
            (None, None) => true,
            (Some(obj), Some((body, etag))) => obj.matches(body, etag),
            _ => false,
        });
        if !ok {
            let seen = match &got {
                None => "absent".to_owned(),
                Some((body, etag)) => format!("{} bytes, md5 {}, etag {etag}", body.len(), md5_hex(body)),
            };
            let expected: Vec<String> = allowed.iter().map(|a| describe(a)).collect();
            let recent = k.history.iter().rev().take(6).rev().cloned().collect::<Vec<_>>().join("\n      ");
            problems.push(format!("{key}: holds {seen}; expected one of {expected:?}\n    history:\n      {recent}"));
        }
        if let Some((body, etag)) = got {
            found.insert(key.clone(), (body.len() as u64, etag));
        }
    }
    // The listing shows exactly the objects the GETs found, with their sizes and ETags.
    let mut listed: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut token = None;
    loop {
        let page = match c.list_objects_v2().bucket(BUCKET).set_continuation_token(token.clone()).send().await {
            Ok(page) => page,
            Err(e) => {
                problems.push(format!("ListObjectsV2: {e:?}"));
                break;
            }
        };
        for o in page.contents() {
            let size = o.size().unwrap_or(-1) as u64;
            let etag = o.e_tag().unwrap_or_default().trim_matches('"').to_owned();
            listed.insert(o.key().unwrap_or_default().to_owned(), (size, etag));
        }
        token = page.next_continuation_token().map(str::to_owned);
        if page.is_truncated() != Some(true) || token.is_none() {
            break;
        }
    }
    for key in listed.keys().filter(|k| !model.keys.contains_key(*k)) {
        problems.push(format!("{key} is listed but was never written"));
    }
    if listed != found {
        problems.push(format!("ListObjectsV2 disagrees with GET:\n    listed {listed:?}\n    found  {found:?}"));
    }
    // An upload whose completion was acknowledged is gone; any other belongs to our keys.
    match c.list_multipart_uploads().bucket(BUCKET).send().await {
        Ok(out) => {
            for u in out.uploads() {
                let (key, id) = (u.key().unwrap_or_default(), u.upload_id().unwrap_or_default());
                if model.completed_uploads.contains(id) {
                    problems.push(format!("upload {id} of {key} was completed but is listed again"));
                }
                if !model.keys.contains_key(key) {
                    problems.push(format!("upload {id} of {key}: a key no worker used"));
                }
            }
        }
        Err(e) => problems.push(format!("ListMultipartUploads: {e:?}")),
    }
    problems
}

/// Runs one seed; returns a report of what went wrong (empty when nothing did).
async fn run_seed(seed: u64) -> String {
    // Odd seeds also lose drive 4 halfway to the kill: the drive monitor formats it and a
    // slow heal (2 MiB/s per core) is rebuilding it when the kill comes.
    let heal_during = seed % 2 == 1;
    let server = if heal_during {
        Server::start_with(4, &[], &[("FERRITE_DRIVE_CHECK_SECS", "1"), ("FERRITE_HEAL_MIBPS", "2")])
    } else {
        Server::start(4)
    };
    server.client().create_bucket().bucket(BUCKET).send().await.unwrap();
    let model: Arc<Mutex<Model>> = Arc::default();
    let killed = Arc::new(AtomicBool::new(false));
    let c = common::client_without_retries(&server.endpoint);
    let workers: Vec<_> =
        (0..WORKERS).map(|w| tokio::spawn(worker(c.clone(), seed, w, model.clone(), killed.clone()))).collect();
    let kill_after_ms = Rng(seed).between(KILL_AFTER_MS_MIN, KILL_AFTER_MS_MAX);
    if heal_during {
        tokio::time::sleep(Duration::from_millis(kill_after_ms / 2)).await;
        common::wipe(&server.drives[3]);
        tokio::time::sleep(Duration::from_millis(kill_after_ms - kill_after_ms / 2)).await;
    } else {
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
    }
    killed.store(true, Ordering::SeqCst);
    let mut server = server;
    server.kill();
    let mut problems = Vec::new();
    let mut steps = Vec::new();
    for w in workers {
        match w.await.expect("worker task") {
            Ok(n) => steps.push(n),
            Err(e) => problems.push(e),
        }
    }
    // Restart only once every worker has stopped, so that nothing reaches the new server.
    let server = server.restart();
    let model = std::mem::take(&mut *model.lock().unwrap());
    let acked = model.keys.values().filter(|k| k.history.iter().any(|h| h.ends_with("acknowledged"))).count();
    problems.extend(check(&server, &model).await);
    if heal_during && problems.is_empty() {
        // Finish the interrupted heal, then lose the two drives that were never wiped: the
        // rebuilt drive 4 must now hold its share of everything.
        let out = common::admin(&server, &["heal", "--wait"]);
        if !out.status.success() {
            problems.push(format!("heal after the restart failed: {}", String::from_utf8_lossy(&out.stdout)));
        }
        common::wipe(&server.drives[0]);
        common::wipe(&server.drives[1]);
        problems.extend(check(&server, &model).await.into_iter().map(|p| format!("after heal, drives 1+2 lost: {p}")));
    }
    println!(
        "seed {seed}: kill after {kill_after_ms} ms{}, steps per worker {steps:?}, {acked} keys acknowledged",
        if heal_during { " (drive 4 wiped halfway, heal running)" } else { "" }
    );
    if acked == 0 {
        problems.push("no operation was acknowledged before the kill; the seed tested nothing".into());
    }
    let mut report = String::new();
    for p in &problems {
        let _ = writeln!(report, "  - {p}");
    }
    report
}

fn seeds() -> Vec<u64> {
    match std::env::var("FERRITE_CRASH_SEEDS") {
        Ok(list) => list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap_or_else(|_| panic!("FERRITE_CRASH_SEEDS: {s:?} is not a number")))
            .collect(),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            let mut rng = Rng(now.as_nanos() as u64 ^ u64::from(std::process::id()));
            (0..SEEDS_DEFAULT_COUNT).map(|_| rng.next() % 1_000_000_000).collect()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_a_random_moment_of_a_random_workload() {
    let seeds = seeds();
    let list = seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    println!("crash_random: seeds {list} (replay with FERRITE_CRASH_SEEDS={list})");
    let mut failures = String::new();
    for seed in seeds {
        let report = run_seed(seed).await;
        if !report.is_empty() {
            let _ = write!(
                failures,
                "seed {seed}:\n{report}  reproduce: \
                 FERRITE_CRASH_SEEDS={seed} cargo nextest run -p ferrite --test crash_random\n"
            );
        }
    }
    assert!(failures.is_empty(), "kill -9 left the store in a state no acknowledged history explains:\n{failures}");
}
