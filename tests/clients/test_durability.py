"""Durability: losing drives under a running server, and kill -9 in the middle of writes."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

KiB = 1024
MiB = 1024 * 1024


def wipe_contents(drive: Path) -> int:
    """Delete everything inside a drive directory (the directory itself stays)."""
    n = 0
    for child in drive.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
        n += 1
    return n


def err_text(e: Exception) -> str:
    if isinstance(e, ClientError):
        r = e.response
        return (f"{r.get('Error', {}).get('Code')} (HTTP {r.get('ResponseMetadata', {}).get('HTTPStatusCode')}): "
                f"{r.get('Error', {}).get('Message')}")
    return repr(e)


def list_all(s3, bucket) -> dict[str, dict]:
    out, token = {}, None
    for _ in range(1000):
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, **kw)
        for o in page.get("Contents", []):
            out[o["Key"]] = o
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]
    raise AssertionError("listing did not terminate")


# ------------------------------------------------------------------ clean restart

@pytest.mark.parametrize("drives", [1, 4], ids=["1drive", "4drives"])
def test_graceful_restart_keeps_everything(ferrite_factory, drives):
    srv = ferrite_factory(drives=drives)
    s3 = srv.client()
    s3.create_bucket(Bucket="keep")
    objects = {f"k/{i}": os.urandom(n) for i, n in enumerate([0, 1, 5000, 300 * KiB, 6 * MiB])}
    for k, v in objects.items():
        s3.put_object(Bucket="keep", Key=k, Body=v, Metadata={"i": k})
    s3.put_object_tagging(Bucket="keep", Key="k/2", Tagging={"TagSet": [{"Key": "t", "Value": "v"}]})
    uid = s3.create_multipart_upload(Bucket="keep", Key="pending")["UploadId"]
    part = s3.upload_part(Bucket="keep", Key="pending", UploadId=uid, PartNumber=1, Body=b"p" * 1000)

    srv.restart()  # SIGTERM, wait, start again on the same drives
    s3 = srv.client()

    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["keep"]
    for k, v in objects.items():
        g = s3.get_object(Bucket="keep", Key=k)
        assert g["Body"].read() == v, k
        assert g["Metadata"] == {"i": k}, k
    assert s3.get_object_tagging(Bucket="keep", Key="k/2")["TagSet"] == [{"Key": "t", "Value": "v"}]
    # An in-progress multipart upload survives the restart and can be completed.
    s3.complete_multipart_upload(Bucket="keep", Key="pending", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert s3.get_object(Bucket="keep", Key="pending")["Body"].read() == b"p" * 1000


# ------------------------------------------------------------------ drive loss

@pytest.mark.parametrize("wiped", [(0, 1), (1, 3)], ids=["drives0+1", "drives1+3"])
def test_two_drives_wiped_while_running(ferrite_factory, wiped):
    srv = ferrite_factory(drives=4)  # 2 data + 2 parity
    s3 = srv.client()
    s3.create_bucket(Bucket="dur")

    sizes = [1 * KiB, 200 * KiB, 3 * MiB, 9 * MiB] * 5
    objects: dict[str, bytes] = {}
    for i, size in enumerate(sizes):
        key = f"obj/{i:02d}-{size}"
        data = os.urandom(size)
        if size == 9 * MiB and i % 8 == 3:
            # Some of the large ones as multipart uploads (5 MiB + 4 MiB).
            uid = s3.create_multipart_upload(Bucket="dur", Key=key)["UploadId"]
            parts = []
            for n, off in enumerate(range(0, size, 5 * MiB), start=1):
                r = s3.upload_part(Bucket="dur", Key=key, UploadId=uid, PartNumber=n,
                                   Body=data[off:off + 5 * MiB])
                parts.append({"PartNumber": n, "ETag": r["ETag"]})
            s3.complete_multipart_upload(Bucket="dur", Key=key, UploadId=uid,
                                         MultipartUpload={"Parts": parts})
        else:
            s3.put_object(Bucket="dur", Key=key, Body=data)
        objects[key] = data

    removed = {i: wipe_contents(srv.drives[i]) for i in wiped}
    assert all(removed.values()), f"drive directories were already empty: {removed}"

    problems = []
    for key, data in objects.items():
        try:
            body = s3.get_object(Bucket="dur", Key=key)["Body"].read()
        except Exception as e:
            problems.append(f"GET {key} ({len(data)} bytes) failed: {err_text(e)}")
            continue
        if body != data:
            problems.append(f"GET {key}: {len(body)} bytes returned, expected {len(data)}; "
                            f"sha256 {hashlib.sha256(body).hexdigest()[:16]} != "
                            f"{hashlib.sha256(data).hexdigest()[:16]}")
    # Ranged reads must reconstruct as well.
    for key, data in list(objects.items())[2::4]:
        try:
            body = s3.get_object(Bucket="dur", Key=key, Range="bytes=1000-2999999")["Body"].read()
            if body != data[1000:3000000]:
                problems.append(f"ranged GET {key}: wrong bytes")
        except Exception as e:
            problems.append(f"ranged GET {key} failed: {err_text(e)}")
    assert srv.running(), f"server exited (rc={srv.proc.returncode}) after the drives were wiped"
    assert not problems, f"{len(problems)} problems after wiping drives {wiped}:\n" + "\n".join(problems)

    try:
        listed = list_all(s3, "dur")
    except Exception as e:
        pytest.fail(f"listing failed after wiping drives {wiped}: {err_text(e)}", pytrace=False)
    assert set(listed) == set(objects), (
        f"missing={sorted(set(objects) - set(listed))} unexpected={sorted(set(listed) - set(objects))}")
    for key, o in listed.items():
        assert o["Size"] == len(objects[key]), key


# ------------------------------------------------------------------ crash

@dataclass
class Attempt:
    key: str
    size: int
    sha256: str
    md5: str
    start: float
    end: float | None = None
    acked: bool = False
    error: str | None = None


@dataclass
class CrashLog:
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


HOT_KEYS = [f"hot/{i}" for i in range(3)]


def _writer(tid: int, srv, stop: threading.Event, log: CrashLog):
    s3 = srv.client(read_timeout=30, connect_timeout=5)
    rng = random.Random(1000 + tid)
    n = 0
    while not stop.is_set():
        if rng.random() < 0.25:
            key = rng.choice(HOT_KEYS)
        else:
            key = f"fresh/t{tid}-{n:05d}"
            n += 1
        size = rng.randint(1 * KiB, 2 * MiB)
        data = os.urandom(size)
        a = Attempt(key, size, hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(),
                    time.monotonic())
        with log.lock:
            log.attempts.append(a)
        try:
            r = s3.put_object(Bucket="crash", Key=key, Body=data)
        except Exception as e:  # connection reset/refused once the server is killed
            a.error = err_text(e)
            continue
        a.end = time.monotonic()
        a.acked = r["ResponseMetadata"]["HTTPStatusCode"] == 200
        if a.acked and r.get("ETag") != f'"{a.md5}"':
            a.error = f"acknowledged with wrong ETag {r.get('ETag')}"


def test_kill9_during_writes(ferrite_factory):
    srv = ferrite_factory(drives=4)
    s3 = srv.client()
    s3.create_bucket(Bucket="crash")

    log = CrashLog()
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(t, srv, stop, log), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    srv.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "writer threads hung after the server was killed"

    attempts = log.attempts
    acked = [a for a in attempts if a.acked]
    bad_acks = [a for a in acked if a.error]
    assert acked, ("the server acknowledged no PUT within 3 s; errors seen: "
                   + "; ".join(sorted({a.error or '' for a in attempts})[:5]))

    srv.start()  # same drives, new process (and port)
    s3 = srv.client(read_timeout=60)

    by_key: dict[str, list[Attempt]] = {}
    for a in attempts:
        by_key.setdefault(a.key, []).append(a)

    problems = [f"{a.key}: PUT {a.error}" for a in bad_acks]
    for key, tries in sorted(by_key.items()):
        try:
            g = s3.get_object(Bucket="crash", Key=key)
            body = g["Body"].read()
            etag = g["ETag"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "NoSuchKey":
                if any(a.acked for a in tries):
                    problems.append(f"{key}: acknowledged PUT lost (GET -> NoSuchKey)")
                continue
            problems.append(f"{key}: GET failed: {err_text(e)}")
            continue
        except Exception as e:
            problems.append(f"{key}: GET failed: {err_text(e)}")
            continue
        sha = hashlib.sha256(body).hexdigest()
        match = [a for a in tries if a.sha256 == sha]
        if not match:
            problems.append(f"{key}: torn/unknown object: {len(body)} bytes, matches none of the "
                            f"{len(tries)} bodies written (sizes {[a.size for a in tries][:8]})")
            continue
        m = match[0]
        if etag != f'"{m.md5}"':
            problems.append(f"{key}: data matches a written body but ETag {etag} != \"{m.md5}\"")
        if m.end is not None:
            # The value read must not be older than an acknowledged PUT that started
            # after this one had been acknowledged.
            newer = [a for a in tries if a.acked and a.start > m.end]
            if newer:
                problems.append(f"{key}: stale value after restart: read the body of a PUT acked at "
                                f"t={m.end:.3f}, but {len(newer)} later PUT(s) were acked "
                                f"(first started t={newer[0].start:.3f})")

    try:
        listed = list_all(s3, "crash")
    except Exception as e:
        problems.append(f"listing after restart failed: {err_text(e)}")
        listed = None
    if listed is not None:
        for key in sorted(set(listed) - set(by_key)):
            problems.append(f"listing shows a key that was never written: {key}")
        for key in sorted({a.key for a in acked if a.key not in listed}):
            problems.append(f"listing misses acknowledged key {key}")
        for key, o in listed.items():
            if key in by_key and o["Size"] not in {a.size for a in by_key[key]}:
                problems.append(f"listing: {key} has size {o['Size']}, not one of the written sizes")

    # The restarted server accepts writes.
    try:
        s3.put_object(Bucket="crash", Key="after-restart", Body=b"still alive")
        assert s3.get_object(Bucket="crash", Key="after-restart")["Body"].read() == b"still alive"
    except Exception as e:
        problems.append(f"PUT/GET after restart failed: {err_text(e)}")

    summary = (f"{len(attempts)} PUTs attempted, {len(acked)} acknowledged, "
               f"{len(by_key)} distinct keys, {len(listed or {})} listed after restart")
    print(summary)
    assert not problems, summary + f"; {len(problems)} problems:\n" + "\n".join(problems[:60])
