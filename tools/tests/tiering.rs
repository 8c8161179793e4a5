//! Lifecycle transitions to an Azure Blob tier, against Azurite (the real Blob REST API) and
//! the real server, driven by aws-sdk-s3 and `ferrite admin`:
//! tier add (wrong key, Archive, a container holding data, force), lifecycle configuration
//! (validation, round trip), a pass that moves plain, encrypted and multipart objects by
//! prefix and by tag while leaving others, byte-identical GETs and ranged GETs with the same
//! ETag and the tier as storage class, the local files freed, restarts, DELETE removing the
//! blob, and Azurite stopped and restarted under a read; restores (also across kill -9);
//! crashes during transitions; a tier that signs in with a managed identity.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, CompletedMultipartUpload, CompletedPart, LifecycleRule, LifecycleRuleFilter,
    ServerSideEncryption, StorageClass, Tag, Transition, TransitionStorageClass,
};
use common::azurite::{Azurite, ACCOUNT, KEY};
use common::standin::{self, Req};
use common::{code, Server};
use ferrite_tiering::outbound::azure_blob::{block_id, Auth, Container};
use ferrite_tiering::outbound::http::{Client, HttpSettings, Url};

const KMS_KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fn admin(server: &Server, args: &[&str]) -> (bool, String) {
    let out = common::admin(server, args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The S3 key a moved object's blob holds (from the blob's metadata).
fn key_of(tier: &Container, blob: &str) -> Option<String> {
    use base64::Engine as _;
    let props = tier.properties(blob).unwrap();
    let key = props.metadata.iter().find(|(n, _)| n == "ferrite_key")?.1.clone();
    String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key).unwrap()).ok()
}

fn blob_of(tier: &Container, blobs: &[String], key: &str) -> String {
    blobs
        .iter()
        .find(|b| key_of(tier, b).as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no blob for {key}"))
        .clone()
}

/// The blobs under `prefix` once deletes in flight have left `count` (the server removes a
/// deleted object's blob in the background); fails after 10 s.
async fn blobs_once_removed(tier: &Container, prefix: &str, count: usize) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let blobs = tier.list(prefix, 100).unwrap();
        if blobs.len() <= count || start.elapsed() > Duration::from_secs(10) {
            assert_eq!(blobs.len(), count, "{blobs:?}");
            return blobs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn container(azurite: &Azurite, name: &str) -> Container {
    container_via(&common::http(), azurite, name)
}

/// The container `name` in `azurite`, reached through `http`.
fn container_via(http: &Client, azurite: &Azurite, name: &str) -> Container {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.decode(KEY).unwrap();
    Container::new(http, &azurite.endpoint(), ACCOUNT, name, Auth::SharedKey(key)).unwrap()
}

fn add_tier(
    server: &Server,
    azurite: &Azurite,
    name: &str,
    container: &str,
    key: &str,
    extra: &[&str],
) -> (bool, String) {
    let endpoint = azurite.endpoint();
    let mut args = vec!["tier", "add", name, "--azure-endpoint", &endpoint, "--account", ACCOUNT];
    args.extend(["--container", container, "--account-key", key]);
    args.extend(extra);
    admin(server, &args)
}

async fn get(c: &aws_sdk_s3::Client, key: &str, range: Option<&str>) -> Result<(Vec<u8>, Option<String>), String> {
    let mut req = c.get_object().bucket("tiered").key(key);
    if let Some(r) = range {
        req = req.range(r);
    }
    match req.send().await {
        Ok(out) => {
            let etag = out.e_tag().map(str::to_owned);
            Ok((out.body.collect().await.map_err(|e| e.to_string())?.into_bytes().to_vec(), etag))
        }
        Err(e) => Err(code(Err::<(), _>(e))),
    }
}

fn transition_rule(id: &str, filter: LifecycleRuleFilter) -> LifecycleRule {
    transition_rule_to(id, filter, "COOL")
}

fn transition_rule_to(id: &str, filter: LifecycleRuleFilter, class: &str) -> LifecycleRule {
    LifecycleRule::builder()
        .id(id)
        .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
        .filter(filter)
        .transitions(Transition::builder().days(1).storage_class(TransitionStorageClass::from(class)).build())
        .build()
        .unwrap()
}

/// A rule moving every object of `bucket` to `class` a (lifecycle) day after it was written,
/// then a wait of that day (1 s in these tests), so the next pass finds them all due.
async fn move_everything_when_due(c: &aws_sdk_s3::Client, bucket: &str, class: &str) {
    let rule = transition_rule_to("all", LifecycleRuleFilter::builder().prefix("").build(), class);
    let config = BucketLifecycleConfiguration::builder().rules(rule).build().unwrap();
    c.put_bucket_lifecycle_configuration().bucket(bucket).lifecycle_configuration(config).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_moves_objects_to_azure_blob_and_serves_them_transparently() {
    let mut azurite = Azurite::start();
    container(&azurite, "ferrite-tier").create().unwrap();
    let occupied = container(&azurite, "occupied");
    occupied.create().unwrap();
    occupied.put_block("someone-else", &block_id(0), b"theirs".to_vec()).unwrap();
    occupied.commit_blocks("someone-else", &[block_id(0)], "Hot", &[]).unwrap();

    let envs = [
        ("FERRITE_LIFECYCLE_INTERVAL_SECS", "0"),
        ("FERRITE_LIFECYCLE_DAY_SECS", "1"),
        ("FERRITE_KMS_SECRET_KEY", KMS_KEYS),
        ("FERRITE_DRIVE_CHECK_SECS", "0"),
    ];
    let server = Server::start_with(4, &[], &envs);

    // Adding a tier: checked against the service before anything is stored.
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (ok, out) = add_tier(&server, &azurite, "COOL", "ferrite-tier", wrong, &[]);
    assert!(!ok && out.contains("AccessDenied"), "a wrong key is refused clearly: {out}");
    let (ok, out) = add_tier(&server, &azurite, "COOL", "ferrite-tier", KEY, &["--access-tier", "Archive"]);
    assert!(!ok && out.contains("Archive"), "{out}");
    let (ok, out) = add_tier(&server, &azurite, "OTHER", "occupied", KEY, &[]);
    assert!(!ok && out.contains("already holds data"), "{out}");
    let (ok, out) = add_tier(&server, &azurite, "OTHER", "occupied", KEY, &["--force"]);
    assert!(ok, "{out}");
    let (ok, out) = add_tier(&server, &azurite, "lower", "ferrite-tier", KEY, &[]);
    assert!(!ok && out.contains("upper-case"), "{out}");
    let (ok, out) =
        add_tier(&server, &azurite, "COOL", "ferrite-tier", KEY, &["--access-tier", "Cool", "--prefix", "data"]);
    assert!(ok, "{out}");
    let (ok, out) = add_tier(&server, &azurite, "COOL", "ferrite-tier", KEY, &[]);
    assert!(!ok && out.contains("exists already"), "{out}");
    let (ok, listing) = admin(&server, &["tier", "ls"]);
    assert!(ok && listing.contains("\"name\":\"COOL\"") && listing.contains("\"access_tier\":\"Cool\""), "{listing}");
    assert!(!listing.contains(&KEY[..20]), "the key is never shown: {listing}");
    let (ok, out) = admin(&server, &["tier", "rm", "OTHER"]);
    assert!(ok, "{out}");

    let c = server.client();
    c.create_bucket().bucket("tiered").send().await.unwrap();
    let plain = common::bytes(1_500_000, 1);
    let secret = common::bytes(700_000, 2);
    let kept = common::bytes(300_000, 3);
    let tagged = common::bytes(400_000, 4);
    let small = common::bytes(1_000, 5);
    let put = |key: &'static str, data: &Vec<u8>| {
        c.put_object().bucket("tiered").key(key).body(ByteStream::from(data.clone())).send()
    };
    let plain_etag = put("logs/plain", &plain).await.unwrap().e_tag().unwrap().to_owned();
    c.put_object()
        .bucket("tiered")
        .key("logs/secret")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from(secret.clone()))
        .send()
        .await
        .unwrap();
    put("keep/local", &kept).await.unwrap();
    put("logs/small", &small).await.unwrap();
    c.put_object()
        .bucket("tiered")
        .key("misc/tagged")
        .tagging("archive=yes")
        .body(ByteStream::from(tagged.clone()))
        .send()
        .await
        .unwrap();
    // A multipart object of 5 MiB + 3 MiB: its stored parts are read back across blocks.
    let parts = [common::bytes(5 << 20, 6), common::bytes(3 << 20, 7)];
    let up = c.create_multipart_upload().bucket("tiered").key("logs/multi").send().await.unwrap();
    let mut done = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let out = c
            .upload_part()
            .bucket("tiered")
            .key("logs/multi")
            .upload_id(up.upload_id().unwrap())
            .part_number(n)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .unwrap();
        done.push(CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap()).build());
    }
    c.complete_multipart_upload()
        .bucket("tiered")
        .key("logs/multi")
        .upload_id(up.upload_id().unwrap())
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        .send()
        .await
        .unwrap();
    let multi: Vec<u8> = parts.concat();

    // Lifecycle configuration: a rule naming no tier is refused; the real one round-trips.
    let bad = BucketLifecycleConfiguration::builder()
        .rules(
            LifecycleRule::builder()
                .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix("x").build())
                .transitions(Transition::builder().days(1).storage_class(TransitionStorageClass::Glacier).build())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let refused = c.put_bucket_lifecycle_configuration().bucket("tiered").lifecycle_configuration(bad).send().await;
    assert_eq!(code(refused), "InvalidStorageClass");
    let missing = c.get_bucket_lifecycle_configuration().bucket("tiered").send().await;
    assert_eq!(code(missing), "NoSuchLifecycleConfiguration");
    // Expiration and aborting stale uploads ride along in the same configuration.
    put("tmp/expires", &small).await.unwrap();
    let stale = c.create_multipart_upload().bucket("tiered").key("tmp/stale-upload").send().await.unwrap();
    let expire = LifecycleRule::builder()
        .id("tmp")
        .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("tmp/").build())
        .expiration(aws_sdk_s3::types::LifecycleExpiration::builder().days(1).build())
        .abort_incomplete_multipart_upload(
            aws_sdk_s3::types::AbortIncompleteMultipartUpload::builder().days_after_initiation(1).build(),
        )
        .build()
        .unwrap();
    let config = BucketLifecycleConfiguration::builder()
        .rules(expire)
        .rules(transition_rule("logs", LifecycleRuleFilter::builder().prefix("logs/").build()))
        .rules(transition_rule(
            "tagged",
            LifecycleRuleFilter::builder().tag(Tag::builder().key("archive").value("yes").build().unwrap()).build(),
        ))
        .build()
        .unwrap();
    c.put_bucket_lifecycle_configuration().bucket("tiered").lifecycle_configuration(config).send().await.unwrap();
    let back = c.get_bucket_lifecycle_configuration().bucket("tiered").send().await.unwrap();
    assert_eq!(back.rules().len(), 3);
    assert_eq!(back.rules()[1].transitions()[0].storage_class().map(|s| s.as_str()), Some("COOL"));

    // Not due yet: nothing moves. A (lifecycle) day later, the pass moves what the rules name.
    let files_before = server.drives.iter().map(|d| common::files_under(d).len()).sum::<usize>();
    let (_, counters) = admin(&server, &["lifecycle", "run"]);
    assert!(counters.contains("\"transitioned\":0"), "{counters}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (ok, counters) = admin(&server, &["lifecycle", "run"]);
    assert!(ok && counters.contains("\"transitioned\":4,"), "plain, secret, multi and tagged move: {counters}");
    assert!(counters.contains("\"transition_failed\":0"), "{counters}");
    assert!(counters.contains("\"expired\":1,") && counters.contains("\"uploads_aborted\":1,"), "{counters}");
    assert_eq!(get(&c, "tmp/expires", None).await, Err("NoSuchKey".into()));
    let uploads = c.list_multipart_uploads().bucket("tiered").send().await.unwrap();
    assert!(uploads.uploads().iter().all(|u| u.upload_id() != stale.upload_id()), "the stale upload was aborted");
    // Freed after the engine's grace for readers still on them (5 s): 4 objects, 4 drives,
    // one file per part.
    let count = || server.drives.iter().map(|d| common::files_under(d).len()).sum::<usize>();
    let start = std::time::Instant::now();
    while count() + 4 * 5 > files_before && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count() + 4 * 5, files_before, "the moved objects' local files are freed");
    let tier = container(&azurite, "ferrite-tier");
    let blobs = tier.list("data/tiered/", 100).unwrap();
    assert_eq!(blobs.len(), 4, "{blobs:?}");
    assert!(blobs.iter().all(|b| tier.properties(b).unwrap().access_tier.as_deref() == Some("Cool")));
    let (_, again) = admin(&server, &["lifecycle", "run"]);
    assert!(again.contains("\"transitioned\":4,"), "a transition happens once: {again}");
    let url = Url::parse(&format!("{}/ferrite/metrics", server.endpoint)).unwrap();
    let metrics = common::request("GET", &url, &[], b"").unwrap().text();
    assert!(metrics.contains("ferrite_lifecycle_total{what=\"transitioned\"} 4\n"), "{metrics}");

    // Reads are transparent: same bytes, same ETag, the tier as storage class.
    let head = c.head_object().bucket("tiered").key("logs/plain").send().await.unwrap();
    assert_eq!(head.storage_class(), Some(&StorageClass::from("COOL")));
    assert_eq!(head.e_tag(), Some(plain_etag.as_str()));
    assert_eq!(head.content_length(), Some(plain.len() as i64));
    let local = c.head_object().bucket("tiered").key("keep/local").send().await.unwrap();
    assert_eq!(local.storage_class(), None, "objects no rule names stay local");
    let listed = c.list_objects_v2().bucket("tiered").prefix("logs/").send().await.unwrap();
    let classes: Vec<(&str, &str)> =
        listed.contents().iter().map(|o| (o.key().unwrap(), o.storage_class().unwrap().as_str())).collect();
    assert_eq!(
        classes,
        [("logs/multi", "COOL"), ("logs/plain", "COOL"), ("logs/secret", "COOL"), ("logs/small", "STANDARD")],
        "listings name the tier"
    );
    assert_eq!(get(&c, "logs/plain", None).await.unwrap(), (plain.clone(), Some(plain_etag.clone())));
    assert_eq!(get(&c, "logs/plain", Some("bytes=1000-1999")).await.unwrap().0, plain[1000..2000]);
    assert_eq!(get(&c, "logs/secret", None).await.unwrap().0, secret);
    assert_eq!(get(&c, "logs/secret", Some("bytes=65000-200000")).await.unwrap().0, secret[65000..=200000]);
    assert_eq!(get(&c, "logs/multi", None).await.unwrap().0, multi);
    let across = format!("bytes={}-{}", (5 << 20) - 10, (5 << 20) + 10);
    assert_eq!(get(&c, "logs/multi", Some(&across)).await.unwrap().0, multi[(5 << 20) - 10..=(5 << 20) + 10]);
    assert_eq!(get(&c, "misc/tagged", None).await.unwrap().0, tagged);
    assert_eq!(get(&c, "keep/local", None).await.unwrap().0, kept);
    assert_eq!(get(&c, "logs/small", None).await.unwrap().0, small, "inline objects are not moved");
    // The stored bytes of the encrypted object went out encrypted.
    let secret_blob = blob_of(&tier, &blobs, "logs/secret");
    let stored = tier.get_range(&secret_blob, 0, 999, None).unwrap();
    assert_ne!(stored, secret[..1000], "encrypted objects stay encrypted in the tier");

    // The stub is durable: after kill -9 and restart, everything still reads.
    let server = server.restart_with(&envs);
    let c = server.client();
    assert_eq!(get(&c, "logs/multi", None).await.unwrap().0, multi);
    assert_eq!(get(&c, "logs/secret", None).await.unwrap().0, secret);

    // The tier cannot be removed while a rule names it.
    let (ok, out) = admin(&server, &["tier", "rm", "COOL"]);
    assert!(!ok && out.contains("lifecycle"), "{out}");

    // Azurite goes away: transitioned objects answer 503, local ones still read; it comes
    // back and so do they.
    azurite.stop();
    assert_eq!(get(&c, "misc/tagged", None).await, Err("ServiceUnavailable".into()));
    assert_eq!(get(&c, "keep/local", None).await.unwrap().0, kept);
    azurite.restart();
    assert_eq!(get(&c, "misc/tagged", None).await.unwrap().0, tagged);

    // DELETE of a transitioned object removes its blob too (right after the 204, in the
    // background).
    c.delete_object().bucket("tiered").key("logs/plain").send().await.unwrap();
    let blobs = blobs_once_removed(&tier, "data/tiered/", 3).await;
    let keys: Vec<String> = blobs.iter().filter_map(|b| key_of(&tier, b)).collect();
    assert!(!keys.contains(&"logs/plain".to_owned()), "{keys:?}");

    // Overwriting a transitioned object orphans its blob: the next pass removes it, and
    // leaves alone a blob Ferrite did not write, even under its prefix.
    tier.put_block("data/tiered/someone/else/x", &block_id(0), b"not ours".to_vec()).unwrap();
    tier.commit_blocks("data/tiered/someone/else/x", &[block_id(0)], "Hot", &[]).unwrap();
    let fresh = common::bytes(200_000, 9);
    c.put_object().bucket("tiered").key("misc/tagged").body(ByteStream::from(fresh.clone())).send().await.unwrap();
    let (_, counters) = admin(&server, &["lifecycle", "run"]);
    assert!(counters.contains("\"orphans_removed\":1"), "{counters}");
    let blobs = tier.list("data/tiered/", 100).unwrap();
    assert_eq!(blobs.len(), 3, "secret, multi and the foreign blob: {blobs:?}");
    assert!(blobs.contains(&"data/tiered/someone/else/x".to_owned()));
    assert_eq!(get(&c, "misc/tagged", None).await.unwrap().0, fresh);

    // Without the rules, the tier still cannot go while objects live in it.
    c.delete_bucket_lifecycle().bucket("tiered").send().await.unwrap();
    let (ok, out) = admin(&server, &["tier", "rm", "COOL"]);
    assert!(!ok && out.contains("holds objects"), "{out}");

    // DeleteObjects removes the blobs of the transitioned objects it deletes.
    let delete = aws_sdk_s3::types::Delete::builder()
        .objects(aws_sdk_s3::types::ObjectIdentifier::builder().key("logs/secret").build().unwrap())
        .objects(aws_sdk_s3::types::ObjectIdentifier::builder().key("logs/multi").build().unwrap())
        .build()
        .unwrap();
    let deleted = c.delete_objects().bucket("tiered").delete(delete).send().await.unwrap();
    assert_eq!(deleted.deleted().len(), 2, "{deleted:?}");
    assert_eq!(blobs_once_removed(&tier, "data/tiered/", 1).await, ["data/tiered/someone/else/x"]);
    let (ok, out) = admin(&server, &["tier", "rm", "COOL"]);
    assert!(ok, "an empty tier goes: {out}");
}

async fn restore(c: &aws_sdk_s3::Client, bucket: &str, key: &str, days: i32) -> Result<(), String> {
    let request = aws_sdk_s3::types::RestoreRequest::builder().days(days).build();
    match c.restore_object().bucket(bucket).key(key).restore_request(request).send().await {
        Ok(_) => Ok(()),
        Err(e) => Err(code(Err::<(), _>(e))),
    }
}

async fn restore_header(c: &aws_sdk_s3::Client, key: &str) -> Option<String> {
    c.head_object().bucket("restore").key(key).send().await.unwrap().restore().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_brings_a_local_copy_back_for_days_then_it_expires() {
    let mut azurite = Azurite::start();
    container(&azurite, "restore-tier").create().unwrap();
    let envs = [("FERRITE_LIFECYCLE_INTERVAL_SECS", "0"), ("FERRITE_LIFECYCLE_DAY_SECS", "1")];
    let server = Server::start_with(4, &[], &envs);
    let (ok, out) = add_tier(&server, &azurite, "COOL", "restore-tier", KEY, &[]);
    assert!(ok, "{out}");
    let c = server.client();
    c.create_bucket().bucket("restore").send().await.unwrap();
    let data = common::bytes(2_000_000, 8);
    c.put_object().bucket("restore").key("obj").body(ByteStream::from(data.clone())).send().await.unwrap();
    move_everything_when_due(&c, "restore", "COOL").await;
    let (_, counters) = admin(&server, &["lifecycle", "run"]);
    assert!(counters.contains("\"transitioned\":1,"), "{counters}");
    let body = |c: &aws_sdk_s3::Client| {
        let c = c.clone();
        async move {
            match c.get_object().bucket("restore").key("obj").send().await {
                Ok(out) => Ok(out.body.collect().await.unwrap().into_bytes().to_vec()),
                Err(e) => Err(code(Err::<(), _>(e))),
            }
        }
    };

    // Only transitioned objects can be restored.
    c.put_object().bucket("restore").key("local").body(ByteStream::from(vec![1u8; 10])).send().await.unwrap();
    assert_eq!(restore(&c, "restore", "local", 1).await, Err("InvalidObjectState".into()));
    assert_eq!(restore(&c, "restore", "missing", 1).await, Err("NoSuchKey".into()));

    // With the tier unreachable a restore starts (202) and keeps retrying: a second request
    // is refused while it runs, and HEAD says it is ongoing, also after its retries ran out.
    azurite.stop();
    restore(&c, "restore", "obj", 2).await.unwrap();
    assert_eq!(restore(&c, "restore", "obj", 2).await, Err("RestoreAlreadyInProgress".into()));
    assert_eq!(restore_header(&c, "obj").await.as_deref(), Some("ongoing-request=\"true\""));
    // kill -9 forgets nothing: the request was recorded before the 202. HEAD still says it
    // is ongoing, and once the tier is back the restart resumes it.
    let server = server.restart_with(&envs);
    let c = server.client();
    assert_eq!(restore_header(&c, "obj").await.as_deref(), Some("ongoing-request=\"true\""));
    assert_eq!(restore(&c, "restore", "obj", 2).await, Err("RestoreAlreadyInProgress".into()));
    azurite.restart();
    let server = server.restart_with(&envs);
    let c = server.client();
    let start = std::time::Instant::now();
    let header = loop {
        match restore_header(&c, "obj").await {
            Some(h) if h.starts_with("ongoing-request=\"false\"") => break h,
            _ => assert!(start.elapsed() < Duration::from_secs(30), "the restore never finished"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The counter moves just after the swap HEAD saw.
    let start = std::time::Instant::now();
    loop {
        let (_, counters) = admin(&server, &["lifecycle"]);
        if counters.contains("\"restored\":1,") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{counters}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(header.contains("expiry-date=\""), "{header}");
    let head = c.head_object().bucket("restore").key("obj").send().await.unwrap();
    assert_eq!(head.storage_class(), Some(&StorageClass::from("COOL")), "a restored object stays in its tier");
    // The copy is local: it reads with the tier gone, and survives a restart.
    azurite.stop();
    assert_eq!(body(&c).await.unwrap(), data);
    let server = server.restart_with(&envs);
    let c = server.client();
    assert_eq!(body(&c).await.unwrap(), data);
    restore(&c, "restore", "obj", 2).await.unwrap(); // a restored copy: only the expiry moves

    // Two (lifecycle) days later the pass frees the copy: reads need the tier again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, counters) = admin(&server, &["lifecycle", "run"]);
    assert!(counters.contains("\"restores_expired\":1"), "{counters}");
    assert_eq!(restore_header(&c, "obj").await, None);
    assert_eq!(body(&c).await, Err("ServiceUnavailable".into()));
    azurite.restart();
    assert_eq!(body(&c).await.unwrap(), data);
}

/// `kill -9` of the server at many moments of a lifecycle pass that is moving objects
/// (uploading blocks, committing, swapping the data for the stub, freeing files): after each
/// restart every object reads byte for byte, wherever it is; a final pass then moves the
/// rest, and the orphan sweep leaves exactly one blob per object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_moment_of_a_transition_loses_nothing() {
    let azurite = Azurite::start();
    container(&azurite, "crash-tier").create().unwrap();
    let envs = [("FERRITE_LIFECYCLE_INTERVAL_SECS", "0"), ("FERRITE_LIFECYCLE_DAY_SECS", "1")];
    let mut server = Server::start_with(4, &[], &envs);
    let objects = crash_bucket(&server, &azurite, 16).await;
    let c = server.client();
    // The tier is down during a pass: the first transition fails after its retries, the
    // pass stops trying that tier, every object stays readable where it is, and the rounds
    // below finish the job once it is back.
    let mut azurite = azurite;
    azurite.stop();
    let (ok, counters) = admin(&server, &["lifecycle", "run"]);
    assert!(
        ok && counters.contains("\"transitioned\":0,") && counters.contains("\"transition_failed\":1,"),
        "{counters}"
    );
    assert!(counters.contains("\"transitions_pending\":16,"), "{counters}");
    for (key, data) in &objects {
        assert_eq!(get_from(&c, "crash", key).await, *data, "{key} with the tier down");
    }
    azurite.restart();
    let mut progress = Vec::new();
    let delays = [0u64, 3, 6, 10, 15, 20, 25, 30, 40, 50, 60, 75, 90, 110, 140, 200];
    for (round, delay_ms) in delays.into_iter().enumerate() {
        let mut run = Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args(["admin", "lifecycle", "run", "--endpoint", &server.endpoint])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.kill();
        let _ = run.wait();
        server = server.restart_with(&envs);
        progress.push(all_read_back(&server, &objects, &format!("round {round} (kill after {delay_ms} ms)")).await);
    }
    eprintln!("objects moved after each kill: {progress:?}");
    // The kills must have landed inside passes, or this test shows nothing.
    assert!(progress.iter().any(|m| *m > 0 && *m < objects.len()), "no kill interrupted a pass: {progress:?}");
    all_moved_once(&server, &azurite, &objects).await;
}

/// The same at each write, sync and remove of the drives a pass makes (deterministic, through
/// the engine's fault layer: `crash_after=N` ends the process at the N-th point after it is
/// armed, tearing the write on odd N). The pass's first writes are the first transition's
/// swap record, so N = 1, 2, ... crash at each write and sync of a swap, until a pass
/// completes without reaching N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_write_of_a_transition_loses_nothing() {
    let azurite = Azurite::start();
    container(&azurite, "crash-tier").create().unwrap();
    let faults = std::env::temp_dir().join(format!("ferrite-tier-faults-{}", std::process::id()));
    std::fs::write(&faults, "").unwrap();
    let faults_path = faults.to_str().unwrap();
    let envs = [
        ("FERRITE_LIFECYCLE_INTERVAL_SECS", "0"),
        ("FERRITE_LIFECYCLE_DAY_SECS", "1"),
        ("FERRITE_DRIVE_CHECK_SECS", "0"),
        ("FERRITE_FAULTS_FILE", faults_path),
    ];
    let mut server = Server::start_with(4, &[], &envs);
    let objects = crash_bucket(&server, &azurite, 4).await;
    let mut progress = Vec::new();
    let mut completed = false;
    for point in 1..=40 {
        std::fs::write(&faults, format!("crash_after={point}{}", if point % 2 == 1 { ";torn" } else { "" })).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await; // the server re-reads it every 20 ms
        let (finished, _) = admin(&server, &["lifecycle", "run"]);
        std::fs::write(&faults, "").unwrap();
        server = server.restart_with(&envs);
        if finished {
            completed = true; // the pass made fewer than `point` writes: every one was tried
            break;
        }
        let repro = format!("crash at point {point} of a pass (FERRITE_FAULTS crash_after={point})");
        progress.push(all_read_back(&server, &objects, &repro).await);
    }
    eprintln!("objects moved after each crash point: {progress:?}");
    assert!(completed, "passes still crashed after 40 points: {progress:?}");
    // Whether a crash inside the swap's log write keeps the swap depends on how many drives
    // the record reached first (the drives are written in parallel), so only the order is
    // fixed: a moved object never comes back.
    assert!(progress.len() >= 3, "fewer crashes than points before a pass completed: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "a moved object came back: {progress:?}");
    all_moved_once(&server, &azurite, &objects).await;
    let _ = std::fs::remove_file(&faults);
}

/// Bucket "crash" with `count` objects of 0.3 to 2.4 MB and a rule moving all of them to
/// tier COOL, due (a lifecycle day is 1 s here).
async fn crash_bucket(server: &Server, azurite: &Azurite, count: u64) -> Vec<(String, Vec<u8>)> {
    let (ok, out) = add_tier(server, azurite, "COOL", "crash-tier", KEY, &[]);
    assert!(ok, "{out}");
    let c = server.client();
    c.create_bucket().bucket("crash").send().await.unwrap();
    let mut objects = Vec::new();
    for i in 0..count {
        let data = common::bytes(300_000 + (i as usize % 4) * 700_000, 100 + i);
        let key = format!("obj-{i:02}");
        c.put_object().bucket("crash").key(&key).body(ByteStream::from(data.clone())).send().await.unwrap();
        objects.push((key, data));
    }
    move_everything_when_due(&c, "crash", "COOL").await;
    objects
}

/// Every object reads back byte for byte, wherever it is; returns how many have moved.
async fn all_read_back(server: &Server, objects: &[(String, Vec<u8>)], label: &str) -> usize {
    let c = server.client();
    let mut moved = 0;
    for (key, data) in objects {
        let out = c.get_object().bucket("crash").key(key).send().await;
        let out = out.unwrap_or_else(|e| panic!("{label}: {key}: {e:?}"));
        moved += usize::from(out.storage_class().is_some());
        let body = out.body.collect().await.unwrap().into_bytes();
        assert!(body == data[..], "{label}: {key} reads back different bytes");
    }
    moved
}

/// A last pass moves the rest; then every object is in the tier, reads back, and has exactly
/// one blob (the orphan sweep removed what crashed transitions left).
async fn all_moved_once(server: &Server, azurite: &Azurite, objects: &[(String, Vec<u8>)]) {
    let (ok, counters) = admin(server, &["lifecycle", "run"]);
    assert!(ok && counters.contains("\"transition_failed\":0"), "{counters}");
    assert_eq!(all_read_back(server, objects, "after the last pass").await, objects.len(), "all moved in the end");
    let blobs = container(azurite, "crash-tier").list("", 1000).unwrap();
    assert_eq!(blobs.len(), objects.len(), "one blob per object, no orphans: {blobs:?}");
}

use common::get_bytes as get_from;

/// The stand-in instance metadata service's answer to the managed-identity token call
/// (documented: `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R` with
/// `Metadata: true`; `expires_in` is a string). The token is a JWT whose audience is the
/// resource asked for and whose issuer is Entra ID's, unsigned: Azurite's "basic" OAuth
/// checks the issuer, audience and lifetime only.
fn imds_answer(req: &Req, issued: &AtomicUsize, assigned: &AtomicBool) -> (u16, String) {
    use base64::Engine as _;
    let b64url = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let (path, query) = req.target.split_once('?').unwrap_or((req.target.as_str(), ""));
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
    };
    if req.method != "GET"
        || path != "/metadata/identity/oauth2/token"
        || req.header("metadata") != Some("true")
        || param("api-version").as_deref() != Some("2018-02-01")
    {
        return (
            400,
            r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#.into(),
        );
    }
    if !assigned.load(Ordering::SeqCst) {
        return (400, r#"{"error":"invalid_request","error_description":"Identity not found"}"#.into());
    }
    let resource = param("resource").unwrap_or_default();
    issued.fetch_add(1, Ordering::SeqCst);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = format!(
        r#"{{"aud":"{resource}","iss":"https://sts.windows.net/ferrite-tenant/","iat":{},"nbf":{},"exp":{},"oid":"node-identity"}}"#,
        now - 60,
        now - 60,
        now + 86_400
    );
    let jwt = format!("{}.{}.{}", b64url(r#"{"alg":"RS256","typ":"JWT"}"#), b64url(&claims), b64url("unsigned"));
    (200, format!(r#"{{"access_token":"{jwt}","expires_in":"86399","token_type":"Bearer","resource":"{resource}"}}"#))
}

/// A tier that signs in with the server's managed identity: no key stored.
///
/// Azurite runs over HTTPS with `--oauth basic`, which refuses a bearer token with the wrong
/// audience, issuer or lifetime. The instance metadata service that hands out
/// managed-identity tokens cannot run on this machine: **a stand-in** (`imds_answer`) serves
/// its documented token call on 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_signs_in_with_the_servers_managed_identity() {
    let dir = std::env::temp_dir().join(format!("ferrite-identity-{}", std::process::id()));
    let (cert, key) = standin::tls_cert(&dir);
    // This test process sets up Azurite's container over HTTPS too, trusting the same
    // certificate as the server.
    let https = Client::new(&HttpSettings { ca_file: Some(cert.clone()), ..HttpSettings::default() });
    let azurite = Azurite::start_oauth(&cert, &key);
    let tier = container_via(&https, &azurite, "identity-tier");
    tier.create().unwrap();

    let (issued, assigned) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://127.0.0.1:{}/metadata/identity/oauth2/token", listener.local_addr().unwrap().port());
    let (i, a) = (issued.clone(), assigned.clone());
    standin::serve(listener, None, Arc::default(), move |req| imds_answer(req, &i, &a));

    let cert_path = cert.to_str().unwrap();
    let envs = [
        ("FERRITE_LIFECYCLE_INTERVAL_SECS", "0"),
        ("FERRITE_LIFECYCLE_DAY_SECS", "1"),
        ("FERRITE_CA_FILE", cert_path),
        ("FERRITE_AZURE_IMDS_URL", imds.as_str()),
    ];
    let server = Server::start_with(4, &[], &envs);
    let endpoint = azurite.endpoint();
    let add = |server: &Server| {
        let args = ["tier", "add", "MI", "--azure-endpoint", &endpoint, "--account", ACCOUNT];
        admin(server, &[&args[..], &["--container", "identity-tier", "--identity"]].concat())
    };
    // No identity is assigned to the node yet: the metadata service refuses, and so does
    // tier add, saying why.
    let (ok, out) = add(&server);
    assert!(!ok && out.contains("AccessDenied") && out.contains("managed identity"), "{out}");
    assigned.store(true, Ordering::SeqCst);
    let (ok, out) = add(&server);
    assert!(ok && out.contains("\"auth\":\"managed identity\""), "{out}");

    let c = server.client();
    c.create_bucket().bucket("tiered").send().await.unwrap();
    let data = common::bytes(1_500_000, 21);
    c.put_object().bucket("tiered").key("cold").body(ByteStream::from(data.clone())).send().await.unwrap();
    move_everything_when_due(&c, "tiered", "MI").await;
    let (_, counters) = admin(&server, &["lifecycle", "run"]);
    assert!(counters.contains("\"transitioned\":1,"), "{counters}");
    assert_eq!(tier.list("", 100).unwrap().len(), 1, "the object went to the tier");
    assert_eq!(get(&c, "cold", None).await.unwrap().0, data);
    assert_eq!(get(&c, "cold", Some("bytes=1000000-1000099")).await.unwrap().0, data[1_000_000..1_000_100]);
    // One token served the probe, the upload and the reads: it is cached until near expiry.
    assert_eq!(issued.load(Ordering::SeqCst), 1);

    // After kill -9 the stored tier signs in again: nothing secret was kept, nothing is lost.
    let server = server.restart_with(&envs);
    let c = server.client();
    assert_eq!(get(&c, "cold", None).await.unwrap().0, data);
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    c.delete_object().bucket("tiered").key("cold").send().await.unwrap();
    assert!(blobs_once_removed(&tier, "", 0).await.is_empty(), "DELETE removed the blob with the identity's token");
    let _ = std::fs::remove_dir_all(&dir);
}
