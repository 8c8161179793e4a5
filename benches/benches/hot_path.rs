//! Criterion benches of every hot-path stage on one core: SigV4, MD5, the S3 checksums,
//! the block checksum, AEAD, Reed-Solomon, the fused block pipeline, HTTP parsing, routing
//! and ListObjects XML. Run: `cargo bench -p ferrite-benches --bench hot_path`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrite_benches::bytes;
use ferrite_engine::erasure::{Coder, Layout};
use ferrite_s3::checksum::{Algorithm, Hasher};
use ferrite_s3::sigv4::{self, Credentials, Scope, SignedRequest};

const MIB: usize = 1 << 20;

fn digests(c: &mut Criterion) {
    let data = bytes(MIB, 1);
    let mut g = c.benchmark_group("digest_1MiB");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("md5 (ETag)", |b| b.iter(|| <md5::Md5 as md5::Digest>::digest(&data)));
    g.bench_function("xxh3-64 (block checksum)", |b| b.iter(|| xxhash_rust::xxh3::xxh3_64(&data)));
    for algorithm in Algorithm::ALL {
        g.bench_function(algorithm.name(), |b| {
            b.iter(|| {
                let mut h = Hasher::new(algorithm);
                h.update(&data);
                h.finish_bytes()
            })
        });
    }
    g.finish();
}

/// The md5x kernel to measure: as the server chooses it, from FERRITE_MD5_SIMD (`0`:
/// scalar, `avx2`), else the widest this CPU has.
fn md5_kernel() -> ferrite_s3::md5x::Kernel {
    use ferrite_s3::md5x::{Kernel, KernelChoice};
    Kernel::chosen(match std::env::var("FERRITE_MD5_SIMD").as_deref() {
        Ok("0") => KernelChoice::Scalar,
        Ok("avx2") => KernelChoice::Avx2,
        _ => KernelChoice::Widest,
    })
}

/// MD5 of several concurrent bodies (1 MiB each, in 64 KiB chunks): the md-5 crate one body
/// after another, against md5x's batcher hashing them in lanes (s3-front/src/md5x.rs).
fn md5_streams(c: &mut Criterion) {
    use criterion::BatchSize;
    use ferrite_s3::md5x::{self, Batcher, LANES};
    let mut g = c.benchmark_group("md5_streams_1MiB_each");
    for streams in [1usize, 2, 4, 8, 16] {
        let bodies: Vec<Vec<u8>> = (0..streams).map(|i| bytes(MIB, 10 + i as u64)).collect();
        g.throughput(Throughput::Bytes((streams * MIB) as u64));
        g.bench_with_input(BenchmarkId::new("md-5 crate, one body after another", streams), &bodies, |b, bodies| {
            b.iter(|| bodies.iter().map(<md5::Md5 as md5::Digest>::digest).collect::<Vec<_>>())
        });
        let name = format!("md5x batcher ({})", md5_kernel().name());
        g.bench_with_input(BenchmarkId::new(name, streams), &bodies, |b, bodies| {
            b.iter_batched(
                || {
                    bodies
                        .iter()
                        .map(|d| d.chunks(64 << 10).map(<[u8]>::to_vec).collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                },
                |chunked| {
                    let mut batcher = Batcher::new(md5_kernel());
                    let ids: Vec<usize> = chunked.iter().map(|_| batcher.open()).collect();
                    // Round robin, as the chunks of concurrent PUTs arrive.
                    let mut chunked: Vec<_> = chunked.into_iter().map(Vec::into_iter).collect();
                    for _ in 0..MIB / (64 << 10) {
                        for (id, chunks) in ids.iter().zip(chunked.iter_mut()) {
                            chunks.next().into_iter().for_each(|c| batcher.append(*id, c));
                        }
                    }
                    ids.iter().map(|&id| batcher.finish(id)).collect::<Vec<_>>()
                },
                BatchSize::LargeInput,
            )
        });
        if streams == LANES {
            // Each kernel this CPU can run on full lanes, without the batcher around it.
            for kernel in md5x::Kernel::ALL.into_iter().filter(|k| k.available()) {
                let name = format!("md5x {} kernel, all lanes busy", kernel.name());
                g.bench_with_input(BenchmarkId::new(name, streams), &bodies, |b, bodies| {
                    let lanes: [&[u8]; LANES] = std::array::from_fn(|l| bodies[l].as_slice());
                    b.iter(|| {
                        let mut state = [[0u32; LANES]; 4];
                        md5x::compress_lanes(kernel, &mut state, &lanes, MIB / 64);
                        state
                    })
                });
            }
        }
    }
    g.finish();
}

/// Each job Ferrite does per byte, through Ferrite's own call path, against the fastest crate
/// for that job that is in the build (`../shared/MACHINE-FACTS.md` has the field: aws-lc-rs
/// ties the fastest SHA-256 and leads AES-256-GCM and ChaCha20-Poly1305; crc-fast leads the
/// CRCs; md-5 is the fastest single-stream MD5). Ids are `job/ferrite: ...` and
/// `job/fastest: ...`; perf/criterion_table.py turns each pair into a ratio.
fn vs_fastest_crate(c: &mut Criterion) {
    let data = bytes(MIB, 5);
    let mut g = c.benchmark_group("vs_fastest_crate_1MiB");
    g.throughput(Throughput::Bytes(MIB as u64));
    hashes_vs_fastest(&mut g, &data);
    aead_vs_fastest(&mut g, &data);
    g.finish();
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// The checksums and digests, and the ETag MD5 of one stream.
fn hashes_vs_fastest(g: &mut Group, data: &[u8]) {
    use aws_lc_rs::digest;
    use criterion::BatchSize;
    use ferrite_s3::md5x::Batcher;

    let through_ferrite = |algorithm: Algorithm| {
        move |data: &[u8]| {
            let mut h = Hasher::new(algorithm);
            h.update(data);
            h.finish_bytes()
        }
    };

    let sha256 = through_ferrite(Algorithm::Sha256);
    g.bench_function("SHA-256/ferrite: sha2 0.10", |b| b.iter(|| sha256(data)));
    g.bench_function("SHA-256/fastest: aws-lc-rs", |b| b.iter(|| digest::digest(&digest::SHA256, data)));
    let sha1 = through_ferrite(Algorithm::Sha1);
    g.bench_function("SHA-1/ferrite: sha1 0.10", |b| b.iter(|| sha1(data)));
    g.bench_function("SHA-1/fastest: aws-lc-rs", |b| {
        b.iter(|| digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data))
    });
    for (job, algorithm, crc) in [
        ("CRC32", Algorithm::Crc32, crc_fast::CrcAlgorithm::Crc32IsoHdlc),
        ("CRC32C", Algorithm::Crc32c, crc_fast::CrcAlgorithm::Crc32Iscsi),
        ("CRC64NVME", Algorithm::Crc64Nvme, crc_fast::CrcAlgorithm::Crc64Nvme),
    ] {
        let ferrite = through_ferrite(algorithm);
        g.bench_function(format!("{job}/ferrite: checksum::Hasher"), |b| b.iter(|| ferrite(data)));
        g.bench_function(format!("{job}/fastest: crc-fast"), |b| b.iter(|| crc_fast::checksum(crc, data)));
    }

    // One MD5 stream alone, the case where lanes have nothing to share: the batcher in
    // 64 KiB chunks, as a PUT feeds it.
    let chunks: Vec<Vec<u8>> = data.chunks(64 << 10).map(<[u8]>::to_vec).collect();
    g.bench_function("MD5, one stream/ferrite: md5x batcher", |b| {
        b.iter_batched(
            || chunks.clone(),
            |chunks| {
                let mut batcher = Batcher::new(md5_kernel());
                let id = batcher.open();
                chunks.into_iter().for_each(|c| batcher.append(id, c));
                batcher.finish(id)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("MD5, one stream/fastest: md-5", |b| b.iter(|| <md5::Md5 as md5::Digest>::digest(data)));
}

/// AEAD: Ferrite seals 64 KiB packages, each with its own nonce, tag and AAD, into an
/// output buffer; the crate alone seals the MiB as one message in place.
fn aead_vs_fastest(g: &mut Group, data: &[u8]) {
    use aws_lc_rs::aead::{AES_256_GCM, CHACHA20_POLY1305};
    use ferrite_engine::sse::Cipher;

    for (job, cipher, alg) in [
        ("AES-256-GCM", Cipher::AesGcm, &AES_256_GCM),
        ("ChaCha20-Poly1305", Cipher::ChaCha20Poly1305, &CHACHA20_POLY1305),
    ] {
        seal_vs_fastest(g, data, job, cipher, alg);
        open_vs_fastest(g, data, job, cipher, alg);
    }
}

fn seal_vs_fastest(
    g: &mut Group,
    data: &[u8],
    job: &str,
    cipher: ferrite_engine::sse::Cipher,
    alg: &'static aws_lc_rs::aead::Algorithm,
) {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
    use ferrite_engine::sse::{self, Key, Sealer};
    let key = Key([7u8; 32]);
    // As the PUT path uses it: a new sealer per object, sealing into a reused buffer.
    let mut out = vec![0u8; sse::sealed_len(MIB as u64) as usize];
    g.bench_function(format!("{job} seal/ferrite: sse::Sealer"), |b| {
        b.iter(|| {
            let mut sealer = Sealer::new(&key, cipher).expect("sealer");
            let n = sealer.push_into(data, &mut out).expect("seal");
            n + sealer.finish_into(&mut out[n..]).expect("seal")
        })
    });
    let raw = LessSafeKey::new(UnboundKey::new(alg, &key.0).expect("32-byte key"));
    let mut buf = data.to_vec();
    let mut crate_seal = |b: &mut criterion::Bencher| {
        b.iter(|| {
            let nonce = Nonce::assume_unique_for_key([1u8; 12]);
            raw.seal_in_place_separate_tag(nonce, Aad::empty(), &mut buf).expect("seal")
        })
    };
    g.bench_function(format!("{job} seal/fastest: aws-lc-rs"), &mut crate_seal);
    // Bodies arrive in pieces that do not end on packages: each write then copies the
    // part of a package it leaves pending (and, with ChaCha20-Poly1305, the part that
    // completes the package before it). The crate's row is the one-message seal again.
    let pieces = format!("{job} seal, 100,000-byte writes");
    g.bench_function(format!("{pieces}/ferrite: sse::Sealer"), |b| {
        b.iter(|| {
            let mut sealer = Sealer::new(&key, cipher).expect("sealer");
            let mut n = 0;
            for piece in data.chunks(100_000) {
                n += sealer.push_into(piece, &mut out).expect("seal");
            }
            n + sealer.finish_into(&mut out).expect("seal")
        })
    });
    g.bench_function(format!("{pieces}/fastest: aws-lc-rs"), &mut crate_seal);
}

fn open_vs_fastest(
    g: &mut Group,
    data: &[u8],
    job: &str,
    cipher: ferrite_engine::sse::Cipher,
    alg: &'static aws_lc_rs::aead::Algorithm,
) {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
    use criterion::BatchSize;
    use ferrite_engine::sse::{self, Key, Sealer};
    let key = Key([7u8; 32]);
    let raw = LessSafeKey::new(UnboundKey::new(alg, &key.0).expect("32-byte key"));
    let mut sealed = Vec::new();
    let mut sealer = Sealer::new(&key, cipher).expect("sealer");
    sealer.push(data, &mut sealed).expect("seal");
    sealer.finish(&mut sealed).expect("seal");
    g.bench_function(format!("{job} open/ferrite: sse::open_in_place"), |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |sealed| sse::open_in_place(&key, cipher, 0, sealed).expect("open"),
            BatchSize::LargeInput,
        )
    });
    let mut one = data.to_vec();
    raw.seal_in_place_append_tag(Nonce::assume_unique_for_key([1u8; 12]), Aad::empty(), &mut one).expect("seal");
    g.bench_function(format!("{job} open/fastest: aws-lc-rs"), |b| {
        b.iter_batched_ref(
            || one.clone(),
            |one| raw.open_in_place(Nonce::assume_unique_for_key([1u8; 12]), Aad::empty(), one).expect("open").len(),
            BatchSize::LargeInput,
        )
    });
}

fn erasure(c: &mut Criterion) {
    let block = bytes(MIB, 3);
    let mut g = c.benchmark_group("erasure_1MiB_block");
    g.throughput(Throughput::Bytes(MIB as u64));
    for (k, m) in [(2, 2), (4, 2), (8, 4), (12, 4)] {
        let layout = Layout { data: k, parity: m };
        let shard = layout.shard_size(MIB);
        // Equal, zero-padded shards (1 MiB does not divide by every k).
        let originals: Vec<Vec<u8>> = (0..k)
            .map(|i| {
                let mut s = vec![0u8; shard];
                let part = &block[(i * shard).min(MIB)..((i + 1) * shard).min(MIB)];
                s[..part.len()].copy_from_slice(part);
                s
            })
            .collect();
        g.bench_with_input(BenchmarkId::new("reed-solomon-simd encode", format!("{k}+{m}")), &(), |b, _| {
            b.iter(|| reed_solomon_simd::encode(k, m, &originals).expect("encode"))
        });
        // The fused stage Ferrite runs per block: copy into pooled aligned frames, RS, xxh3
        // per frame; the frames go back to the pool after their write, as in the engine.
        let mut coder = Coder::new(layout);
        g.bench_with_input(BenchmarkId::new("fused frames (copy+RS+xxh3)", format!("{k}+{m}")), &(), |b, _| {
            b.iter(|| coder.encode(&block).expect("encode").into_iter().for_each(ferrite_engine::aligned::give))
        });
        // Reconstruct with the first `m` data shards lost.
        let frames = coder.encode(&block).expect("encode");
        g.bench_with_input(
            BenchmarkId::new("reconstruct, parity-many data shards lost", format!("{k}+{m}")),
            &(),
            |b, _| {
                b.iter(|| {
                    let shards: Vec<Option<ferrite_engine::aligned::AlignedBuf>> = frames
                        .iter()
                        .enumerate()
                        .map(|(i, f)| {
                            (i >= m).then(|| {
                                let mut copy = ferrite_engine::aligned::AlignedBuf::zeroed(f.len());
                                copy.as_mut_slice().copy_from_slice(f.as_slice());
                                copy
                            })
                        })
                        .collect();
                    let mut out = Vec::new();
                    coder.decode(&shards, MIB, &mut out).expect("decode");
                    out
                })
            },
        );
    }
    g.finish();
}

/// MD5 (ETag), CRC32 and the frames of one block, the frames returned to the pool after.
fn md5_crc_frames(block: &[u8], coder: &mut Coder) -> (Vec<u8>, Vec<u8>, usize) {
    let md5 = <md5::Md5 as md5::Digest>::digest(block).to_vec();
    let mut crc = Hasher::new(Algorithm::Crc32);
    crc.update(block);
    let frames = coder.encode(block).expect("encode");
    let n = frames.len();
    frames.into_iter().for_each(ferrite_engine::aligned::give);
    (md5, crc.finish_bytes(), n)
}

/// The CPU work of a signed single PUT per MiB: payload SHA-256, MD5, CRC32 (the default
/// checksum of current SDKs), then the fused frames.
fn put_pipeline(c: &mut Criterion) {
    let block = bytes(MIB, 4);
    let mut coder = Coder::new(Layout { data: 2, parity: 2 });
    let mut g = c.benchmark_group("put_pipeline_1MiB");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("sha256+md5+crc32+frames 2+2", |b| {
        b.iter(|| (sigv4::sha256_hex(&block), md5_crc_frames(&block, &mut coder)))
    });
    g.bench_function("unsigned: md5+crc32+frames 2+2", |b| b.iter(|| md5_crc_frames(&block, &mut coder)));
    g.finish();
}

struct OneUser;
impl Credentials for OneUser {
    fn secret_for(&self, _: &str) -> Option<String> {
        Some("secret-key-of-forty-characters-length-x".into())
    }
    fn region(&self) -> &str {
        "us-east-1"
    }
}

fn signatures(c: &mut Criterion) {
    let amz = "20261125T120000Z";
    let now = sigv4::parse_amz_date(amz).expect("date");
    let scope = Scope {
        access_key: "AK".into(),
        date: "20261125".into(),
        region: "us-east-1".into(),
        amz_date: amz.into(),
        key: sigv4::signing_key("secret-key-of-forty-characters-length-x", "20261125", "us-east-1"),
    };
    let headers: Vec<(String, String)> = [
        ("host", "127.0.0.1:9000"),
        ("x-amz-content-sha256", sigv4::UNSIGNED_PAYLOAD),
        ("x-amz-date", amz),
        ("content-type", "application/octet-stream"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let req = SignedRequest { method: "PUT", path: "/bucket/some/object/key.bin", query: &[], headers: &headers };
    let signed = ["content-type", "host", "x-amz-content-sha256", "x-amz-date"];
    let sig = sigv4::sign(&scope, &req, &signed, sigv4::UNSIGNED_PAYLOAD).expect("sign");
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=AK/20261125/us-east-1/s3/aws4_request, SignedHeaders={}, Signature={sig}",
        signed.join(";")
    );
    let mut g = c.benchmark_group("sigv4");
    g.bench_function("verify Authorization header", |b| {
        b.iter(|| sigv4::verify_header(&req, &auth, &OneUser, now).expect("valid").signature)
    });
    let chunk = bytes(64 << 10, 5);
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("aws-chunked chunk signature, 64 KiB chunk", |b| {
        b.iter(|| sigv4::chunk_signature(&scope, &sig, &sigv4::sha256_hex(&chunk)))
    });
    g.finish();
}

fn http_and_xml(c: &mut Criterion) {
    let head = b"PUT /bucket/photos/2026/11/25/holiday-0001.jpg HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUser-Agent: aws-sdk-rust/1.3 os/linux lang/rust/1.95\r\nContent-Length: 1048576\r\nContent-Type: image/jpeg\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-date: 20261125T120000Z\r\nx-amz-checksum-crc32: AAAAAA==\r\nx-amz-meta-camera: test\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AK/20261125/us-east-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000\r\n\r\n";
    let mut g = c.benchmark_group("http_xml");
    g.bench_function("httparse request head (10 headers)", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(head).expect("parse").is_complete()
        })
    });
    g.bench_function("ListObjectsV2 XML, 1000 keys", |b| {
        b.iter(|| {
            let mut x = ferrite_s3::xml::Xml::new("ListBucketResult");
            x.elem("Name", "bucket").elem("KeyCount", "1000");
            for i in 0..1000 {
                x.start("Contents")
                    .elem("Key", &format!("photos/2026/11/25/holiday-{i:04}.jpg"))
                    .elem("LastModified", &ferrite_s3::ops::common::iso8601(1_764_000_000_000 + i))
                    .elem("ETag", "\"0123456789abcdef0123456789abcdef\"")
                    .elem("Size", "1048576")
                    .elem("StorageClass", "STANDARD")
                    .end();
            }
            x.finish().len()
        })
    });
    g.finish();
}

/// Routing a signed request once its head is parsed: the target (bucket and key, the decoded
/// path SigV4 signs), the query, and the endpoint with its inputs validated (router.rs).
fn routing(c: &mut Criterion) {
    use ferrite_s3::http::Request;
    use ferrite_s3::router::{parse_query, route, Query, Target};
    let request = |method: &str, path: &str, query: &str| Request {
        method: method.into(),
        raw_path: path.into(),
        raw_query: query.into(),
        headers: vec![
            ("host".into(), "127.0.0.1:9000".into()),
            ("x-amz-content-sha256".into(), sigv4::UNSIGNED_PAYLOAD.into()),
            ("x-amz-date".into(), "20261125T120000Z".into()),
            ("content-type".into(), "image/jpeg".into()),
        ],
        keep_alive: true,
        secure: false,
        peer: None,
    };
    let mut g = c.benchmark_group("routing");
    for (name, req) in [
        ("GetObject", request("GET", "/bucket/photos/2026/11/25/holiday-0001.jpg", "")),
        ("PutObject", request("PUT", "/bucket/photos/2026/11/25/holiday-0001.jpg", "x-id=PutObject")),
        ("ListObjectsV2", request("GET", "/bucket", "list-type=2&prefix=photos%2F&max-keys=1000&encoding-type=url")),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let target = Target::parse(&req, None).expect("target");
                let query = parse_query(&req.raw_query).expect("query");
                route(&req, &target, Query(&query)).map(|e| e.name()).expect("endpoint")
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    targets = digests, md5_streams, vs_fastest_crate, erasure, put_pipeline, signatures, http_and_xml, routing
}
criterion_main!(benches);
