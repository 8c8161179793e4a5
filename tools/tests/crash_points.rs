//! Crash consistency at every write and sync point (in the spirit of the crash-consistency
//! checks of AWS ShardStore). The test-only fault layer (engine/src/fault.rs) ends the server
//! at its N-th write, sync or remove, for N = 1, 2, 3, ... until the workload completes; on
//! odd N the write at the crash point is torn (only its first half reaches the file). After
//! each crash the server restarts on the same drives, and the visible state must equal the
//! model with the acknowledged operations applied, plus the one in flight either applied
//! or not (for DeleteObjects: per key). Then the recovered server must take a new write.
//!
//! One executor (`FERRITE_CORES=1`), so that the points come in a repeatable order.
//! `FERRITE_CRASH_POINTS=a..b` limits the points tried (to reproduce one failure).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use common::{bytes, Server};

type Model = BTreeMap<String, Vec<u8>>;

#[derive(Clone, Debug)]
enum Step {
    Put(&'static str, usize, u64),
    /// Create, upload one part, complete: three requests, one visible change.
    Multipart(&'static str, usize, u64),
    Copy(&'static str, &'static str),
    Delete(&'static str),
    DeleteMany(&'static [&'static str]),
}

const BUCKET: &str = "crashpts";

fn workload() -> Vec<Step> {
    vec![
        Step::Put("a", 1_000, 1),
        Step::Put("b", 300_000, 2),
        Step::Put("c", 1_500_000, 3),
        Step::Put("a", 200_000, 4),
        Step::Multipart("m", 200_000, 5),
        Step::Copy("b", "d"),
        Step::Delete("c"),
        Step::DeleteMany(&["a", "zz", "d"]),
        Step::Put("e", 10, 6),
    ]
}

fn apply(model: &mut Model, step: &Step) {
    match step {
        Step::Put(key, size, seed) | Step::Multipart(key, size, seed) => {
            model.insert(key.to_string(), bytes(*size, *seed));
        }
        Step::Copy(from, to) => {
            let body = model[*from].clone();
            model.insert(to.to_string(), body);
        }
        Step::Delete(key) => {
            model.remove(*key);
        }
        Step::DeleteMany(keys) => {
            for key in keys.iter() {
                model.remove(*key);
            }
        }
    }
}

async fn run_step(c: &aws_sdk_s3::Client, step: &Step) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Debug| format!("{e:?}");
    match step {
        Step::Put(key, size, seed) => {
            let body = ByteStream::from(bytes(*size, *seed));
            c.put_object().bucket(BUCKET).key(*key).body(body).send().await.map(|_| ()).map_err(|x| e(&x))
        }
        Step::Multipart(key, size, seed) => {
            let up = c.create_multipart_upload().bucket(BUCKET).key(*key).send().await.map_err(|x| e(&x))?;
            let id = up.upload_id().unwrap_or_default().to_owned();
            let body = ByteStream::from(bytes(*size, *seed));
            let part = c
                .upload_part()
                .bucket(BUCKET)
                .key(*key)
                .upload_id(&id)
                .part_number(1)
                .body(body)
                .send()
                .await
                .map_err(|x| e(&x))?;
            let done = CompletedMultipartUpload::builder()
                .parts(CompletedPart::builder().part_number(1).e_tag(part.e_tag().unwrap_or_default()).build())
                .build();
            c.complete_multipart_upload()
                .bucket(BUCKET)
                .key(*key)
                .upload_id(&id)
                .multipart_upload(done)
                .send()
                .await
                .map(|_| ())
                .map_err(|x| e(&x))
        }
        Step::Copy(from, to) => c
            .copy_object()
            .bucket(BUCKET)
            .key(*to)
            .copy_source(format!("{BUCKET}/{from}"))
            .send()
            .await
            .map(|_| ())
            .map_err(|x| e(&x)),
        Step::Delete(key) => c.delete_object().bucket(BUCKET).key(*key).send().await.map(|_| ()).map_err(|x| e(&x)),
        Step::DeleteMany(keys) => {
            let objects = keys.iter().map(|k| ObjectIdentifier::builder().key(*k).build().unwrap()).collect();
            let delete = Delete::builder().set_objects(Some(objects)).build().unwrap();
            let out = c.delete_objects().bucket(BUCKET).delete(delete).send().await.map_err(|x| e(&x))?;
            if out.errors().is_empty() {
                Ok(())
            } else {
                Err(format!("DeleteObjects errors: {:?}", out.errors()))
            }
        }
    }
}

/// What the server shows: every listed key with its bytes.
async fn visible(c: &aws_sdk_s3::Client) -> Result<Model, String> {
    let list = c.list_objects_v2().bucket(BUCKET).send().await.map_err(|e| format!("list: {e:?}"))?;
    let mut out = Model::new();
    for object in list.contents() {
        let key = object.key().unwrap_or_default().to_owned();
        let got = c.get_object().bucket(BUCKET).key(&key).send().await.map_err(|e| format!("GET {key}: {e:?}"))?;
        let body = got.body.collect().await.map_err(|e| format!("GET {key} body: {e}"))?.into_bytes().to_vec();
        out.insert(key, body);
    }
    Ok(out)
}

fn describe(model: &Model) -> String {
    let parts: Vec<String> = model.iter().map(|(k, v)| format!("{k}:{}B", v.len())).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Whether `seen` is `before` with `step` applied or not (DeleteObjects: key by key).
fn acceptable(before: &Model, step: &Step, seen: &Model) -> bool {
    let mut after = before.clone();
    apply(&mut after, step);
    if seen == before || *seen == after {
        return true;
    }
    let Step::DeleteMany(keys) = step else { return false };
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let untouched =
        |m: &Model| m.iter().filter(|(k, _)| !keys.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect::<Model>();
    untouched(seen) == untouched(before) && keys.iter().all(|k| seen.get(k).is_none() || seen.get(k) == before.get(k))
}

fn wait_exit(server: &mut Server) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(status)) = server.child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn point_range() -> (u64, u64) {
    let given = std::env::var("FERRITE_CRASH_POINTS").ok().and_then(|r| {
        let (a, b) = r.split_once("..")?;
        Some((a.parse().ok()?, b.parse().ok()?))
    });
    given.unwrap_or((1, u64::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_and_sync_point_recovers_to_a_prefix_of_acknowledged_operations() {
    let steps = workload();
    let (first, last) = point_range();
    let mut completed_at = None;
    let mut tried = 0;
    for point in first..=last {
        let torn = point % 2 == 1;
        let faults = format!("crash_at={point}{}", if torn { ";torn" } else { "" });
        let repro = format!("FERRITE_CRASH_POINTS={point}..{point} cargo nextest run -p ferrite --test crash_points");
        let envs = [("FERRITE_CORES", "1"), ("FERRITE_DRIVE_CHECK_SECS", "0"), ("FERRITE_FAULTS", faults.as_str())];
        let mut server = Server::start_with(4, &[], &envs);
        let c = common::client_without_retries(&server.endpoint);
        let mut model = Model::new();
        // The bucket is step zero: a crash there leaves no bucket or an empty one.
        let mut in_flight = None;
        if c.create_bucket().bucket(BUCKET).send().await.is_ok() {
            for step in &steps {
                match run_step(&c, step).await {
                    Ok(()) => apply(&mut model, step),
                    Err(_) => {
                        in_flight = Some(step.clone());
                        break;
                    }
                }
            }
        } else {
            in_flight = Some(Step::Delete("bucket"));
        }
        tried += 1;
        let Some(in_flight) = in_flight else {
            // The workload finished before the crash point: every point was tried.
            completed_at = Some(point);
            break;
        };
        let code = wait_exit(&mut server);
        assert_eq!(
            code,
            Some(ferrite_engine::fault::CRASH_EXIT_CODE),
            "point {point}: a request failed ({in_flight:?}) but the server did not crash; reproduce: {repro}"
        );
        let server = server.restart_with(&[("FERRITE_CORES", "1"), ("FERRITE_DRIVE_CHECK_SECS", "0")]);
        let c = common::client_without_retries(&server.endpoint);
        let bucket_exists = c.head_bucket().bucket(BUCKET).send().await.is_ok();
        if matches!(in_flight, Step::Delete("bucket")) && !bucket_exists {
            c.create_bucket().bucket(BUCKET).send().await.unwrap_or_else(|e| panic!("point {point}: {e:?}; {repro}"));
        }
        assert!(bucket_exists || matches!(in_flight, Step::Delete("bucket")), "point {point}: bucket lost; {repro}");
        let seen = visible(&c).await.unwrap_or_else(|e| panic!("point {point}: after recovery: {e}; {repro}"));
        assert!(
            acceptable(&model, &in_flight, &seen),
            "point {point}{}: in flight {in_flight:?}\n acknowledged: {}\n recovered:    {}\n reproduce: {repro}",
            if torn { " (torn write)" } else { "" },
            describe(&model),
            describe(&seen)
        );
        // The recovered server takes writes and keeps them.
        run_step(&c, &Step::Put("after-recovery", 150_000, point))
            .await
            .unwrap_or_else(|e| panic!("point {point}: write after recovery: {e}; {repro}"));
        let mut expected = seen.clone();
        apply(&mut expected, &Step::Put("after-recovery", 150_000, point));
        let server = server.restart_with(&[("FERRITE_CORES", "1"), ("FERRITE_DRIVE_CHECK_SECS", "0")]);
        let again = visible(&common::client_without_retries(&server.endpoint))
            .await
            .unwrap_or_else(|e| panic!("point {point}: after a second restart: {e}; {repro}"));
        assert!(again == expected, "point {point}: after a second restart: {}; {repro}", describe(&again));
    }
    if first == 1 && last == u64::MAX {
        let points = completed_at.expect("the workload never completed");
        println!("crash points tried: {tried}; the workload has {} write/sync points", points - 1);
        assert!(points > 40, "only {points} points: the fault layer is not counting");
    }
}
