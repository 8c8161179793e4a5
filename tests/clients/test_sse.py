"""Server-side encryption with boto3: SSE-S3, SSE-KMS, SSE-C (boto3 computes the key MD5),
multipart and ranges, bucket default encryption, and the awscli's --sse flags."""
import base64
import hashlib
import os

import pytest
from botocore.exceptions import ClientError

from conftest import aws_cmd, client_env, run

KMS_KEYS = "k1:" + base64.b64encode(bytes([1] * 32)).decode() + ",k2:" + base64.b64encode(bytes([2] * 32)).decode()


@pytest.fixture
def enc_server(ferrite_factory):
    return ferrite_factory(drives=4, env={"FERRITE_KMS_SECRET_KEY": KMS_KEYS, "FERRITE_SSE_C_ALLOW_HTTP": "on"})


def _code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_sse_s3_and_kms_round_trips_with_ranges_and_multipart(enc_server):
    s3 = enc_server.client()
    s3.create_bucket(Bucket="enc")
    body = os.urandom(2_345_678)
    put = s3.put_object(Bucket="enc", Key="s3", Body=body, ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    assert put["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    put = s3.put_object(Bucket="enc", Key="kms", Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId="k2")
    assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == "k2"
    for key in ("s3", "kms"):
        got = s3.get_object(Bucket="enc", Key=key)
        assert got["Body"].read() == body
        assert got["ContentLength"] == len(body)
        part = s3.get_object(Bucket="enc", Key=key, Range="bytes=65530-1000000")["Body"].read()
        assert part == body[65530:1000001]
    # upload_file switches to multipart above 8 MiB; ExtraArgs carries the SSE request.
    big = os.urandom(17 * 1024 * 1024 + 5)
    path = enc_server.base / "big.bin"
    path.write_bytes(big)
    s3.upload_file(str(path), "enc", "big", ExtraArgs={"ServerSideEncryption": "AES256"})
    head = s3.head_object(Bucket="enc", Key="big")
    assert head["ServerSideEncryption"] == "AES256" and head["ContentLength"] == len(big)
    assert s3.get_object(Bucket="enc", Key="big")["Body"].read() == big
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="enc", Key="x", Body=b"1", ServerSideEncryption="aws:kms", SSEKMSKeyId="missing")
    assert _code(e) == "KMS.NotFoundException"


def test_sse_c_with_boto3_computing_the_key_md5(enc_server):
    s3 = enc_server.client()
    s3.create_bucket(Bucket="ssec")
    key = os.urandom(32)
    other = os.urandom(32)
    body = os.urandom(300_000)
    s3.put_object(Bucket="ssec", Key="k", Body=body, SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    got = s3.get_object(Bucket="ssec", Key="k", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert got["Body"].read() == body
    assert got["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(key).digest()).decode()
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ssec", Key="k", SSECustomerAlgorithm="AES256", SSECustomerKey=other)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ssec", Key="k")
    assert _code(e) == "InvalidRequest"


def test_bucket_default_encryption_and_the_aws_cli(enc_server):
    s3 = enc_server.client()
    s3.create_bucket(Bucket="deflt")
    s3.put_bucket_encryption(
        Bucket="deflt",
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )
    rules = s3.get_bucket_encryption(Bucket="deflt")["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    src = enc_server.base / "f.txt"
    src.write_bytes(b"hello encrypted world\n" * 1000)
    env = client_env(enc_server)
    endpoint = ["--endpoint-url", enc_server.endpoint]
    run(aws_cmd() + endpoint + ["s3", "cp", str(src), "s3://deflt/f.txt"], env)
    assert s3.head_object(Bucket="deflt", Key="f.txt")["ServerSideEncryption"] == "AES256"
    run(aws_cmd() + endpoint + ["s3", "cp", str(src), "s3://deflt/kms.txt", "--sse", "aws:kms", "--sse-kms-key-id", "k1"], env)
    head = s3.head_object(Bucket="deflt", Key="kms.txt")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == "k1"
    out = enc_server.base / "back.txt"
    run(aws_cmd() + endpoint + ["s3", "cp", "s3://deflt/kms.txt", str(out)], env)
    assert out.read_bytes() == src.read_bytes()
    s3.delete_bucket_encryption(Bucket="deflt")
    with pytest.raises(ClientError) as e:
        s3.get_bucket_encryption(Bucket="deflt")
    assert _code(e) == "ServerSideEncryptionConfigurationNotFoundError"
