"""boto3 (pure-Python botocore, default checksum settings) against Ferrite."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from botocore.compat import HAS_CRT
from botocore.exceptions import ClientError

from conftest import multipart_etag

KiB = 1024
MiB = 1024 * 1024


# ---------------------------------------------------------------- helpers

def expect_error(code: str, status: int, fn, *args, **kwargs) -> ClientError:
    """Call fn and assert it fails with this S3 error code and HTTP status."""
    try:
        result = fn(*args, **kwargs)
    except ClientError as e:
        got_code = e.response.get("Error", {}).get("Code")
        got_status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        assert (got_code, got_status) == (code, status), (
            f"expected {code}/{status}, got {got_code}/{got_status}; full response: {e.response}")
        return e
    result.pop("Body", None)
    pytest.fail(f"expected {code}/{status}, but the call succeeded: {result}", pytrace=False)


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    t = _CRC32C
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def get_bytes(s3, bucket, key, **kw) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def status(resp) -> int:
    return resp["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def bucket(s3):
    s3.create_bucket(Bucket="bkt")
    return "bkt"


# ---------------------------------------------------------------- buckets

def test_bucket_create_list_head_delete(s3):
    r = s3.create_bucket(Bucket="alpha")
    assert status(r) == 200
    s3.create_bucket(Bucket="beta")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert names == sorted(names)
    assert {"alpha", "beta"} <= set(names)
    for b in s3.list_buckets()["Buckets"]:
        assert isinstance(b["CreationDate"], dt.datetime)
    assert status(s3.head_bucket(Bucket="alpha")) == 200
    assert status(s3.delete_bucket(Bucket="alpha")) == 204
    expect_error("404", 404, s3.head_bucket, Bucket="alpha")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "alpha" not in names and "beta" in names


def test_bucket_errors(s3, bucket):
    # Real S3 answers 200 here in us-east-1 only for legacy reasons; Ferrite, like
    # every other region, reports the conflict.
    expect_error("BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    expect_error("BucketNotEmpty", 409, s3.delete_bucket, Bucket=bucket)
    expect_error("NoSuchBucket", 404, s3.delete_bucket, Bucket="missing-bucket")
    expect_error("NoSuchBucket", 404, s3.list_objects_v2, Bucket="missing-bucket")
    expect_error("NoSuchBucket", 404, s3.get_object, Bucket="missing-bucket", Key="k")
    expect_error("NoSuchBucket", 404, s3.put_object, Bucket="missing-bucket", Key="k", Body=b"x")
    expect_error("404", 404, s3.head_bucket, Bucket="missing-bucket")
    expect_error("InvalidBucketName", 400, s3.create_bucket, Bucket="Invalid_Bucket_Name")


# ---------------------------------------------------------------- objects

def test_put_get_head_delete_with_metadata(s3, bucket):
    data = os.urandom(50 * KiB + 3)
    r = s3.put_object(Bucket=bucket, Key="dir/obj.txt", Body=data,
                      ContentType="text/plain; charset=utf-8",
                      Metadata={"color": "blue", "multi-word": "Hello World"},
                      CacheControl="max-age=60", ContentDisposition='attachment; filename="o.txt"')
    assert r["ETag"] == md5_etag(data)

    h = s3.head_object(Bucket=bucket, Key="dir/obj.txt")
    assert h["ContentLength"] == len(data)
    assert h["ETag"] == md5_etag(data)
    assert h["ContentType"] == "text/plain; charset=utf-8"
    assert h["Metadata"] == {"color": "blue", "multi-word": "Hello World"}
    assert h["CacheControl"] == "max-age=60"
    assert h["ContentDisposition"] == 'attachment; filename="o.txt"'
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((now - h["LastModified"]).total_seconds()) < 300, h["LastModified"]

    g = s3.get_object(Bucket=bucket, Key="dir/obj.txt")
    assert g["Body"].read() == data
    assert g["ContentLength"] == len(data)
    assert g["ETag"] == md5_etag(data)
    assert g["ContentType"] == "text/plain; charset=utf-8"
    assert g["Metadata"] == {"color": "blue", "multi-word": "Hello World"}

    # Overwrite replaces data and metadata.
    s3.put_object(Bucket=bucket, Key="dir/obj.txt", Body=b"v2")
    h = s3.head_object(Bucket=bucket, Key="dir/obj.txt")
    assert h["Metadata"] == {} and h["ContentLength"] == 2
    assert get_bytes(s3, bucket, "dir/obj.txt") == b"v2"

    assert status(s3.delete_object(Bucket=bucket, Key="dir/obj.txt")) == 204
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="dir/obj.txt")
    expect_error("404", 404, s3.head_object, Bucket=bucket, Key="dir/obj.txt")
    # Deleting a missing key is not an error in S3.
    assert status(s3.delete_object(Bucket=bucket, Key="dir/obj.txt")) == 204


@pytest.mark.parametrize("ferrite", [1, 4], indirect=True, ids=["1drive", "4drives"])
def test_object_sizes_roundtrip(s3):
    s3.create_bucket(Bucket="sizes")
    sizes = [0, 1, 4095, 4096, 4097, 65536, 1 * MiB + 7, 17 * MiB + 1]
    blobs = {f"obj-{n}": os.urandom(n) for n in sizes}
    for k, v in blobs.items():
        assert s3.put_object(Bucket="sizes", Key=k, Body=v)["ETag"] == md5_etag(v), k
    for k, v in blobs.items():
        g = s3.get_object(Bucket="sizes", Key=k)
        body = g["Body"].read()
        assert g["ContentLength"] == len(v), k
        assert body == v, f"{k}: got {len(body)} bytes, sha256 differs"
    assert blobs["obj-0"] == b"" and s3.head_object(Bucket="sizes", Key="obj-0")["ETag"] == \
        '"d41d8cd98f00b204e9800998ecf8427e"'


def test_special_character_keys(s3, bucket):
    keys = ["with space", "plus+sign", "ünïcödé/日本語", "percent%2Fslash", "a&b=c?d#e",
            "tilde~star*", "dir//double", "trailing/", "quote'\"", "semi;colon,comma", "caret^`{}|"]
    for i, k in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=k, Body=f"body-{i}".encode())
    for i, k in enumerate(keys):
        assert get_bytes(s3, bucket, k) == f"body-{i}".encode(), k
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert listed == sorted(keys, key=lambda s: s.encode()), listed
    listed_v1 = [o["Key"] for o in s3.list_objects(Bucket=bucket).get("Contents", [])]
    assert listed_v1 == listed


# ---------------------------------------------------------------- ranges & conditionals

def test_range_get(s3, bucket):
    n = 100 * KiB + 17
    data = os.urandom(n)
    s3.put_object(Bucket=bucket, Key="r", Body=data)

    cases = [
        ("bytes=0-9", 0, 9),
        ("bytes=-5", n - 5, n - 1),            # suffix
        ("bytes=100-", 100, n - 1),             # open-ended
        (f"bytes={n - 10}-{n + 100}", n - 10, n - 1),  # end past EOF is clipped
        (f"bytes=-{n + 100}", 0, n - 1),        # suffix longer than the object
        (f"bytes={n - 1}-{n - 1}", n - 1, n - 1),
        ("bytes=4090-4100", 4090, 4100),        # crosses a 4 KiB boundary
    ]
    for header, first, last in cases:
        g = s3.get_object(Bucket=bucket, Key="r", Range=header)
        body = g["Body"].read()
        assert status(g) == 206, header
        assert g["ContentRange"] == f"bytes {first}-{last}/{n}", header
        assert g["ContentLength"] == last - first + 1, header
        assert body == data[first:last + 1], header

    expect_error("InvalidRange", 416, s3.get_object, Bucket=bucket, Key="r", Range=f"bytes={n}-")
    expect_error("InvalidRange", 416, s3.get_object, Bucket=bucket, Key="r",
                 Range=f"bytes={n + 5}-{n + 10}")


def test_conditional_get(s3, bucket):
    data = b"conditional body"
    etag = s3.put_object(Bucket=bucket, Key="c", Body=data)["ETag"]
    assert get_bytes(s3, bucket, "c", IfMatch=etag) == data
    assert get_bytes(s3, bucket, "c", IfNoneMatch='"0123456789abcdef0123456789abcdef"') == data
    expect_error("PreconditionFailed", 412, s3.get_object, Bucket=bucket, Key="c",
                 IfMatch='"0123456789abcdef0123456789abcdef"')
    expect_error("304", 304, s3.get_object, Bucket=bucket, Key="c", IfNoneMatch=etag)
    expect_error("304", 304, s3.head_object, Bucket=bucket, Key="c", IfNoneMatch=etag)
    last_modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    past = dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)
    expect_error("304", 304, s3.get_object, Bucket=bucket, Key="c", IfModifiedSince=last_modified)
    expect_error("PreconditionFailed", 412, s3.get_object, Bucket=bucket, Key="c",
                 IfUnmodifiedSince=past)
    assert get_bytes(s3, bucket, "c", IfModifiedSince=past) == data


# ---------------------------------------------------------------- copy / batch delete

def test_copy_object(s3, bucket):
    s3.create_bucket(Bucket="dst")
    data = os.urandom(300 * KiB)
    src_key = "src dir/a+b ü.bin"
    s3.put_object(Bucket=bucket, Key=src_key, Body=data, ContentType="application/x-src",
                  Metadata={"origin": "source"})

    r = s3.copy_object(CopySource={"Bucket": bucket, "Key": src_key}, Bucket="dst", Key="copy1")
    assert r["CopyObjectResult"]["ETag"] == md5_etag(data)
    h = s3.head_object(Bucket="dst", Key="copy1")
    assert h["ContentType"] == "application/x-src"
    assert h["Metadata"] == {"origin": "source"}
    assert get_bytes(s3, "dst", "copy1") == data

    s3.copy_object(CopySource={"Bucket": bucket, "Key": src_key}, Bucket=bucket, Key="copy2",
                   MetadataDirective="REPLACE", ContentType="text/x-new",
                   Metadata={"origin": "replaced"})
    h = s3.head_object(Bucket=bucket, Key="copy2")
    assert h["ContentType"] == "text/x-new"
    assert h["Metadata"] == {"origin": "replaced"}
    assert get_bytes(s3, bucket, "copy2") == data
    assert get_bytes(s3, bucket, src_key) == data

    expect_error("NoSuchKey", 404, s3.copy_object,
                 CopySource={"Bucket": bucket, "Key": "missing"}, Bucket=bucket, Key="x")


def test_delete_objects_batch(s3, bucket):
    keys = [f"d/{i}" for i in range(6)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    r = s3.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": "d/0"}, {"Key": "d/1"}, {"Key": "d/2"}, {"Key": "never-existed"}]})
    assert sorted(d["Key"] for d in r.get("Deleted", [])) == ["d/0", "d/1", "d/2", "never-existed"]
    assert r.get("Errors", []) == []
    remaining = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert remaining == ["d/3", "d/4", "d/5"]

    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "d/3"}], "Quiet": True})
    assert r.get("Deleted", []) == [] and r.get("Errors", []) == []
    remaining = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert remaining == ["d/4", "d/5"]


# ---------------------------------------------------------------- listing

LIST_KEYS = sorted(
    [f"a/{i:02d}" for i in range(10)]
    + [f"b/c/{i:02d}" for i in range(8)]
    + [f"b/d{i}" for i in range(4)]
    + [f"top{i:02d}" for i in range(8)]
)


@pytest.fixture
def listing(s3, bucket):
    assert len(LIST_KEYS) == 30
    for k in LIST_KEYS:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    return bucket


def _keys(page):
    return [o["Key"] for o in page.get("Contents", [])]


def _prefixes(page):
    return [p["Prefix"] for p in page.get("CommonPrefixes", [])]


def test_list_objects_v2_full_and_sizes(s3, listing):
    r = s3.list_objects_v2(Bucket=listing)
    assert _keys(r) == LIST_KEYS
    assert r["KeyCount"] == 30
    assert r["IsTruncated"] is False
    assert "NextContinuationToken" not in r
    for o in r["Contents"]:
        assert o["Size"] == len(o["Key"])
        assert o["ETag"] == md5_etag(o["Key"].encode())
        assert isinstance(o["LastModified"], dt.datetime)


def test_list_objects_v2_pagination(s3, listing):
    pages, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=listing, MaxKeys=7, **kw)
        pages.append(page)
        assert len(pages) <= 10, "pagination does not terminate"
        if token:
            assert page.get("ContinuationToken") == token
        i = len(pages) - 1
        expected = LIST_KEYS[i * 7:(i + 1) * 7]
        assert _keys(page) == expected, f"page {i}"
        assert page["KeyCount"] == len(expected), f"page {i}"
        assert page["MaxKeys"] == 7
        last = (i + 1) * 7 >= len(LIST_KEYS)
        assert page["IsTruncated"] is (not last), f"page {i}"
        if last:
            assert "NextContinuationToken" not in page
            break
        token = page["NextContinuationToken"]
        assert token
    assert len(pages) == 5


def test_list_objects_v2_prefix_delimiter(s3, listing):
    r = s3.list_objects_v2(Bucket=listing, Prefix="b/")
    assert _keys(r) == [k for k in LIST_KEYS if k.startswith("b/")]

    r = s3.list_objects_v2(Bucket=listing, Delimiter="/")
    assert _prefixes(r) == ["a/", "b/"]
    assert _keys(r) == [f"top{i:02d}" for i in range(8)]
    assert r["KeyCount"] == 10

    r = s3.list_objects_v2(Bucket=listing, Prefix="b/", Delimiter="/")
    assert _prefixes(r) == ["b/c/"]
    assert _keys(r) == ["b/d0", "b/d1", "b/d2", "b/d3"]
    assert r["Prefix"] == "b/" and r["Delimiter"] == "/"

    r = s3.list_objects_v2(Bucket=listing, Prefix="nothing-here/")
    assert r["KeyCount"] == 0 and "Contents" not in r and r["IsTruncated"] is False

    r = s3.list_objects_v2(Bucket=listing, StartAfter="a/05")
    assert _keys(r) == [k for k in LIST_KEYS if k > "a/05"]

    # Delimiter with MaxKeys=1: common prefixes count towards MaxKeys, one entry per page.
    entries, token = [], None
    for _ in range(20):
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=listing, Delimiter="/", MaxKeys=1, **kw)
        got = _prefixes(page) + _keys(page)
        assert len(got) == 1 and page["KeyCount"] == 1, page
        entries += got
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert entries == ["a/", "b/"] + [f"top{i:02d}" for i in range(8)]

    # Prefix + delimiter + pagination inside b/c/.
    got, token = [], None
    for _ in range(10):
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=listing, Prefix="b/c/", Delimiter="/", MaxKeys=3, **kw)
        got += _keys(page)
        assert _prefixes(page) == []
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert got == [f"b/c/{i:02d}" for i in range(8)]


def test_list_objects_v1_marker(s3, listing):
    r = s3.list_objects(Bucket=listing, Marker=LIST_KEYS[9])
    assert _keys(r) == LIST_KEYS[10:]
    assert r.get("Marker") == LIST_KEYS[9]
    assert r["IsTruncated"] is False

    got, marker, pages = [], "", 0
    while True:
        page = s3.list_objects(Bucket=listing, MaxKeys=10, Marker=marker)
        pages += 1
        keys = _keys(page)
        assert keys == LIST_KEYS[len(got):len(got) + 10]
        got += keys
        if not page["IsTruncated"]:
            break
        marker = page.get("NextMarker", keys[-1])
        assert pages < 10
    assert got == LIST_KEYS and pages == 3

    # With a delimiter the server must return NextMarker when truncated.
    page = s3.list_objects(Bucket=listing, Delimiter="/", MaxKeys=1)
    assert page["IsTruncated"] is True
    assert page["NextMarker"] == "a/"
    assert _prefixes(page) == ["a/"]
    page = s3.list_objects(Bucket=listing, Delimiter="/", MaxKeys=2, Marker=page["NextMarker"])
    assert _prefixes(page) == ["b/"] and _keys(page) == ["top00"]


# ---------------------------------------------------------------- multipart

def _mpu(s3, bucket, key, **kw):
    return s3.create_multipart_upload(Bucket=bucket, Key=key, **kw)["UploadId"]


@pytest.mark.parametrize("ferrite", [1, 4], indirect=True, ids=["1drive", "4drives"])
def test_multipart_upload_complete(s3):
    bucket = "mpu"
    s3.create_bucket(Bucket=bucket)
    parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"!"]
    uid = _mpu(s3, bucket, "big", ContentType="application/x-mp", Metadata={"kind": "multipart"})

    listed = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("big", uid)]

    etags = []
    for i, p in enumerate(parts_data, start=1):
        r = s3.upload_part(Bucket=bucket, Key="big", UploadId=uid, PartNumber=i, Body=p)
        assert r["ETag"] == md5_etag(p), f"part {i}"
        etags.append(r["ETag"])

    lp = s3.list_parts(Bucket=bucket, Key="big", UploadId=uid)
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in lp["Parts"]] == \
        [(i, len(d), e) for i, (d, e) in enumerate(zip(parts_data, etags), start=1)]

    r = s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]})
    assert r["ETag"].endswith('-3"'), r["ETag"]
    assert r["ETag"] == multipart_etag(parts_data)

    data = b"".join(parts_data)
    h = s3.head_object(Bucket=bucket, Key="big")
    assert h["ContentLength"] == len(data)
    assert h["ETag"] == r["ETag"]
    assert h["ContentType"] == "application/x-mp"
    assert h["Metadata"] == {"kind": "multipart"}
    body = get_bytes(s3, bucket, "big")
    assert len(body) == len(data) and body == data
    # A range across the part 1 / part 2 boundary.
    assert get_bytes(s3, bucket, "big", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}") == \
        data[5 * MiB - 10:5 * MiB + 10]
    assert get_bytes(s3, bucket, "big", Range="bytes=-2") == data[-2:]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_transfer_manager_upload_download(s3, bucket, tmp_path):
    """boto3's upload_file/download_file with its defaults (CRC32 checksums, 8 MiB parts,
    concurrent part uploads and ranged downloads)."""
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(20 * MiB + 12345)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)
    s3.upload_file(str(src), bucket, "tm/obj.bin", Config=cfg)
    h = s3.head_object(Bucket=bucket, Key="tm/obj.bin")
    assert h["ContentLength"] == len(data)
    assert h["ETag"] == multipart_etag(data, 8 * MiB), h["ETag"]
    dst = tmp_path / "dst.bin"
    s3.download_file(bucket, "tm/obj.bin", str(dst), Config=cfg)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_multipart_abort(s3, bucket):
    uid = _mpu(s3, bucket, "aborted")
    s3.upload_part(Bucket=bucket, Key="aborted", UploadId=uid, PartNumber=1, Body=b"x" * 1000)
    assert status(s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=uid)) == 204
    expect_error("NoSuchUpload", 404, s3.list_parts, Bucket=bucket, Key="aborted", UploadId=uid)
    expect_error("NoSuchUpload", 404, s3.upload_part, Bucket=bucket, Key="aborted", UploadId=uid,
                 PartNumber=2, Body=b"y")
    expect_error("NoSuchUpload", 404, s3.complete_multipart_upload, Bucket=bucket, Key="aborted",
                 UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": md5_etag(b"x" * 1000)}]})
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="aborted")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_multipart_invalid_part_order(s3, bucket):
    uid = _mpu(s3, bucket, "order")
    e = [s3.upload_part(Bucket=bucket, Key="order", UploadId=uid, PartNumber=n,
                        Body=os.urandom(5 * MiB))["ETag"] for n in (1, 2)]
    expect_error("InvalidPartOrder", 400, s3.complete_multipart_upload, Bucket=bucket, Key="order",
                 UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e[1]},
                                                          {"PartNumber": 1, "ETag": e[0]}]})
    expect_error("InvalidPart", 400, s3.complete_multipart_upload, Bucket=bucket, Key="order",
                 UploadId=uid, MultipartUpload={"Parts": [
                     {"PartNumber": 1, "ETag": e[0]},
                     {"PartNumber": 2, "ETag": '"0123456789abcdef0123456789abcdef"'}]})
    expect_error("InvalidPart", 400, s3.complete_multipart_upload, Bucket=bucket, Key="order",
                 UploadId=uid, MultipartUpload={"Parts": [
                     {"PartNumber": 1, "ETag": e[0]}, {"PartNumber": 3, "ETag": e[1]}]})
    # The upload is still usable after failed completes.
    r = s3.complete_multipart_upload(Bucket=bucket, Key="order", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e[0]}, {"PartNumber": 2, "ETag": e[1]}]})
    assert r["ETag"].endswith('-2"')


def test_multipart_entity_too_small(s3, bucket):
    uid = _mpu(s3, bucket, "small")
    e = [s3.upload_part(Bucket=bucket, Key="small", UploadId=uid, PartNumber=n,
                        Body=os.urandom(1 * MiB))["ETag"] for n in (1, 2)]
    expect_error("EntityTooSmall", 400, s3.complete_multipart_upload, Bucket=bucket, Key="small",
                 UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e[0]},
                                                          {"PartNumber": 2, "ETag": e[1]}]})
    s3.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=uid)


# ---------------------------------------------------------------- tagging

def test_object_tagging(s3, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"tagged")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []
    tags = [{"Key": "project", "Value": "ferrite"}, {"Key": "tier", "Value": "hot data"}]
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": tags})
    got = s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"]
    assert sorted(got, key=lambda t: t["Key"]) == tags
    assert status(s3.delete_object_tagging(Bucket=bucket, Key="t")) == 204
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []
    assert get_bytes(s3, bucket, "t") == b"tagged"

    s3.put_object(Bucket=bucket, Key="t2", Body=b"x", Tagging="a=1&b=two%20words")
    got = s3.get_object_tagging(Bucket=bucket, Key="t2")["TagSet"]
    assert sorted(got, key=lambda t: t["Key"]) == [{"Key": "a", "Value": "1"},
                                                     {"Key": "b", "Value": "two words"}]
    expect_error("NoSuchKey", 404, s3.get_object_tagging, Bucket=bucket, Key="missing")
    assert s3.get_object(Bucket=bucket, Key="t2").get("TagCount") == 2


# ---------------------------------------------------------------- auth

def test_wrong_credentials(ferrite, s3, bucket):
    bad = ferrite.client(secret_key="not-the-right-secret")
    expect_error("SignatureDoesNotMatch", 403, bad.list_buckets)
    expect_error("SignatureDoesNotMatch", 403, bad.put_object, Bucket=bucket, Key="k", Body=b"x")
    expect_error("SignatureDoesNotMatch", 403, bad.get_object, Bucket=bucket, Key="k")
    unknown = ferrite.client(access_key="NOSUCHACCESSKEY", secret_key="whatever")
    expect_error("InvalidAccessKeyId", 403, unknown.list_buckets)
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="k")  # nothing was written


def test_anonymous_request_denied(ferrite, bucket, s3):
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(f"{ferrite.endpoint}/{bucket}/private", timeout=30)
    assert ei.value.code == 403, ei.value.read()


def test_presigned_urls(s3, bucket):
    data = os.urandom(10 * KiB)
    s3.put_object(Bucket=bucket, Key="pre/signed obj", Body=data)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre/signed obj"},
                                    ExpiresIn=300)
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        assert resp.read() == data

    # Presigned PUT.
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre/put"},
                                        ExpiresIn=300)
    req = urllib.request.Request(put_url, data=b"via presigned put", method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    assert get_bytes(s3, bucket, "pre/put") == b"via presigned put"

    # Tampered signature.
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, ("0" if v[0] != "0" else "1") + v[1:]) if k == "X-Amz-Signature" else (k, v)
             for k, v in query]
    bad = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    assert bad != url
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(bad, timeout=30)
    assert ei.value.code == 403

    expired = s3.generate_presigned_url("get_object",
                                        Params={"Bucket": bucket, "Key": "pre/signed obj"}, ExpiresIn=1)
    time.sleep(2)
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(expired, timeout=30)
    body = ei.value.read()
    assert ei.value.code == 403, body
    assert b"AccessDenied" in body, body


# ---------------------------------------------------------------- checksums

def test_checksum_sha256(s3, bucket):
    data = os.urandom(200 * KiB + 1)
    want = b64(hashlib.sha256(data).digest())
    r = s3.put_object(Bucket=bucket, Key="sha", Body=data, ChecksumAlgorithm="SHA256")
    assert r.get("ChecksumSHA256") == want
    g = s3.get_object(Bucket=bucket, Key="sha", ChecksumMode="ENABLED")
    assert g["Body"].read() == data  # botocore also validates the checksum while reading
    assert g.get("ChecksumSHA256") == want, {k: v for k, v in g.items() if k != "Body"}
    h = s3.head_object(Bucket=bucket, Key="sha", ChecksumMode="ENABLED")
    assert h.get("ChecksumSHA256") == want


def test_checksum_crc32c(s3, bucket):
    data = os.urandom(64 * KiB + 5)
    want = b64(crc32c(data).to_bytes(4, "big"))
    kw = {"ChecksumAlgorithm": "CRC32C"}
    if not HAS_CRT:
        # botocore computes CRC32C only with awscrt; supply the header ourselves
        # (same bytes on the wire: x-amz-sdk-checksum-algorithm + x-amz-checksum-crc32c).
        kw["ChecksumCRC32C"] = want
    r = s3.put_object(Bucket=bucket, Key="crc", Body=data, **kw)
    assert r.get("ChecksumCRC32C") == want
    g = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert g["Body"].read() == data
    assert g.get("ChecksumCRC32C") == want, {k: v for k, v in g.items() if k != "Body"}


def test_bad_checksums_rejected(s3, bucket):
    data = b"payload whose digest we lie about"
    wrong_md5 = b64(hashlib.md5(b"something else").digest())
    expect_error("BadDigest", 400, s3.put_object, Bucket=bucket, Key="bad", Body=data,
                 ContentMD5=wrong_md5)
    wrong_sha = b64(hashlib.sha256(b"something else").digest())
    expect_error("BadDigest", 400, s3.put_object, Bucket=bucket, Key="bad", Body=data,
                 ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong_sha)
    expect_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="bad")
    # A correct Content-MD5 is accepted.
    s3.put_object(Bucket=bucket, Key="good", Body=data, ContentMD5=b64(hashlib.md5(data).digest()))
    assert get_bytes(s3, bucket, "good") == data
