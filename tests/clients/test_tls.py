"""TLS (--certs-dir) with a self-signed certificate made by the openssl CLI; boto3 verifies it."""
import json
import os
import shutil
import socket
import subprocess

import boto3
import pytest
from botocore.config import Config
from conftest import FERRITE_BIN, free_port, wait_until_serving


@pytest.fixture
def tls_server(tmp_path):
    if shutil.which("openssl") is None:
        pytest.fail("openssl CLI is needed to make the test certificate")
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(certs / "private.key"), "-out", str(certs / "public.crt"),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         # A server certificate, not a CA's: rustls (in `ferrite bench`) refuses a CA
         # certificate presented by a server.
         "-addext", "basicConstraints=critical,CA:FALSE"],
        check=True, capture_output=True)
    # The server is ready when it answers over TLS, checked against its certificate.
    drive = tmp_path / "d1"
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [FERRITE_BIN, "server", "--address", address, "--certs-dir", str(certs), str(drive)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"https://{address}"
    rc = wait_until_serving(proc, endpoint, [drive], cafile=str(certs / "public.crt"))
    assert rc is None, f"server did not start with TLS: exit {rc}"
    yield endpoint, str(certs / "public.crt")
    proc.kill()
    proc.wait()


def _client(endpoint, verify):
    return boto3.client("s3", endpoint_url=endpoint, verify=verify, region_name="us-east-1",
                        aws_access_key_id="ferriteadmin", aws_secret_access_key="ferriteadmin",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def test_https_round_trip_and_plain_http_is_refused(tls_server):
    endpoint, cert = tls_server
    s3 = _client(endpoint, cert)
    s3.create_bucket(Bucket="secure")
    body = os.urandom(3_000_000)
    s3.put_object(Bucket="secure", Key="k", Body=body)
    assert s3.get_object(Bucket="secure", Key="k")["Body"].read() == body
    # A plain-HTTP request to the TLS port gets no HTTP answer, and the server keeps serving.
    host, port = endpoint.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(100)
        except (ConnectionResetError, socket.timeout):
            data = b""
        assert not data.startswith(b"HTTP/")
    assert s3.head_object(Bucket="secure", Key="k")["ContentLength"] == len(body)


def test_bad_certs_dir_refuses_to_start(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "public.crt").write_text("not a certificate")
    (tmp_path / "certs" / "private.key").write_text("not a key")
    out = subprocess.run([FERRITE_BIN, "server", "--address", "127.0.0.1:0", "--certs-dir",
                          str(tmp_path / "certs"), str(tmp_path / "d1")], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "public.crt" in out.stderr


def test_the_load_tool_runs_over_https_and_checks_the_certificate(tls_server):
    endpoint, cert = tls_server
    bench = [FERRITE_BIN, "bench", "put", "--endpoint", endpoint, "--size", "64KiB", "--duration", "1s",
             "--warmup", "0s", "--concurrency", "2", "--json"]
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "FERRITE_CA_FILE")}
    # Trusting the server's certificate: every PUT goes through, and the bucket is removed after.
    out = subprocess.run(bench + ["--ca", cert], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    put = json.loads(out.stdout)["results"][0]
    assert put["op"] == "put" and put["ops"] > 0 and put["errors"] == 0, put
    s3 = _client(endpoint, cert)
    assert s3.list_buckets()["Buckets"] == []
    # Without it the certificate is refused: nothing is sent, and the tool says why.
    out = subprocess.run(bench, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode != 0
    assert "invalid peer certificate" in out.stderr, out.stderr
