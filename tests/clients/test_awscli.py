"""The AWS CLI (v1, from the test venv) against Ferrite."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time

import pytest

from conftest import aws_cmd, compare_trees, describe, make_tree, multipart_etag, read_tree, run

MiB = 1024 * 1024
LS_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+(\d+) (.*)$")


def aws(server, env, *args, timeout=300, check=True):
    return run(aws_cmd() + ["--endpoint-url", server.endpoint, *args], env=env,
               timeout=timeout, check=check)


def ls_recursive(server, env, url) -> dict[str, int]:
    """``aws s3 ls --recursive`` as {key: size}. awscli exits 1 when nothing matches."""
    cp = aws(server, env, "s3", "ls", "--recursive", url, check=False)
    out = cp.stdout.decode("utf-8")
    if cp.returncode not in (0, 1) or (cp.returncode == 1 and out.strip()):
        pytest.fail(describe(cp), pytrace=False)
    listed = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        m = LS_LINE.match(line)
        assert m, f"unparseable `aws s3 ls` line: {line!r}"
        listed[m.group(2)] = int(m.group(1))
    return listed


def make_bucket(server, env, name):
    cp = aws(server, env, "s3", "mb", f"s3://{name}")
    assert f"make_bucket: {name}" in cp.stdout.decode(), cp.stdout


def test_cp_100mib_multipart_roundtrip(ferrite, cli_env, tmp_path, s3):
    make_bucket(ferrite, cli_env, "big")
    data = os.urandom(100 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(data)

    aws(ferrite, cli_env, "s3", "cp", "--only-show-errors", str(src), "s3://big/dir/big.bin")

    # The CLI's defaults: multipart above 8 MiB, 8 MiB parts -> 13 parts.
    head = s3.head_object(Bucket="big", Key="dir/big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == multipart_etag(data, 8 * MiB), head["ETag"]

    dst = tmp_path / "big.down"
    aws(ferrite, cli_env, "s3", "cp", "--only-show-errors", "s3://big/dir/big.bin", str(dst))
    got = dst.read_bytes()
    assert len(got) == len(data)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), \
        "downloaded bytes differ from uploaded bytes"


def test_sync_tree_up_and_down(ferrite, cli_env, tmp_path):
    make_bucket(ferrite, cli_env, "tree")
    up = tmp_path / "up"
    files = make_tree(up, 200, seed=1)

    aws(ferrite, cli_env, "s3", "sync", "--only-show-errors", str(up), "s3://tree/root")

    listed = ls_recursive(ferrite, cli_env, "s3://tree/")
    expected = {f"root/{k}": len(v) for k, v in files.items()}
    assert listed == expected, (
        f"missing={sorted(set(expected) - set(listed))[:20]} "
        f"unexpected={sorted(set(listed) - set(expected))[:20]} "
        f"wrong sizes={[k for k in expected if k in listed and listed[k] != expected[k]][:20]}")

    # A second sync of an unchanged tree must transfer nothing (size and LastModified agree).
    cp = aws(ferrite, cli_env, "s3", "sync", str(up), "s3://tree/root")
    assert cp.stdout.decode().strip() == "", f"second sync re-uploaded:\n{cp.stdout.decode()[:3000]}"

    down = tmp_path / "down"
    down.mkdir()
    aws(ferrite, cli_env, "s3", "sync", "--only-show-errors", "s3://tree/root", str(down))
    problems = compare_trees(files, read_tree(down))
    assert not problems, "\n".join(problems[:50])


def test_ls_and_rm_recursive(ferrite, cli_env, tmp_path):
    make_bucket(ferrite, cli_env, "rmme")
    src = tmp_path / "src"
    files = make_tree(src, 60, seed=2)
    aws(ferrite, cli_env, "s3", "cp", "--only-show-errors", "--recursive", str(src), "s3://rmme/p")
    listed = ls_recursive(ferrite, cli_env, "s3://rmme")
    assert set(listed) == {f"p/{k}" for k in files}

    # Non-recursive listing shows the top-level common prefix.
    cp = aws(ferrite, cli_env, "s3", "ls", "s3://rmme/")
    assert cp.stdout.decode().split() == ["PRE", "p/"], cp.stdout.decode()

    cp = aws(ferrite, cli_env, "s3", "rm", "--recursive", "s3://rmme/")
    deleted = [line for line in cp.stdout.decode().splitlines() if line.startswith("delete: ")]
    assert len(deleted) == len(files), cp.stdout.decode()[:3000]

    assert ls_recursive(ferrite, cli_env, "s3://rmme/") == {}
    aws(ferrite, cli_env, "s3", "rb", "s3://rmme")
    cp = aws(ferrite, cli_env, "s3", "ls", check=False)
    assert "rmme" not in cp.stdout.decode()


def test_s3api_put_and_head_object(ferrite, cli_env, tmp_path):
    make_bucket(ferrite, cli_env, "api")
    data = os.urandom(12345)
    body = tmp_path / "body.bin"
    body.write_bytes(data)
    cp = aws(ferrite, cli_env, "s3api", "put-object", "--bucket", "api", "--key", "x/y.bin",
             "--body", str(body), "--content-type", "application/x-test",
             "--metadata", "owner=alice,purpose=test")
    put = json.loads(cp.stdout)
    md5 = hashlib.md5(data).hexdigest()
    assert put["ETag"] == f'"{md5}"'

    cp = aws(ferrite, cli_env, "s3api", "head-object", "--bucket", "api", "--key", "x/y.bin")
    head = json.loads(cp.stdout)
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == f'"{md5}"'
    assert head["ContentType"] == "application/x-test"
    assert head["Metadata"] == {"owner": "alice", "purpose": "test"}
    assert "LastModified" in head

    cp = aws(ferrite, cli_env, "s3api", "head-object", "--bucket", "api", "--key", "nope", check=False)
    assert cp.returncode != 0
    assert b"404" in cp.stderr or b"Not Found" in cp.stderr, cp.stderr


def test_cp_keys_with_special_characters(ferrite, cli_env, tmp_path):
    make_bucket(ferrite, cli_env, "names")
    src = tmp_path / "src"
    names = ["with space.txt", "plus+sign.txt", "équipe/ünïcödé.txt", "percent%20.txt",
             "eq=uals&amp.txt", "tilde~(paren)!.txt", "dir with space/semi;colon.txt", "star*.txt"]
    files = {}
    for i, n in enumerate(names):
        p = src / n
        p.parent.mkdir(parents=True, exist_ok=True)
        files[n] = f"{i}:{n}".encode() * (i + 1)
        p.write_bytes(files[n])
    aws(ferrite, cli_env, "s3", "cp", "--only-show-errors", "--recursive", str(src), "s3://names/")
    listed = ls_recursive(ferrite, cli_env, "s3://names/")
    assert set(listed) == set(names)
    down = tmp_path / "down"
    aws(ferrite, cli_env, "s3", "cp", "--only-show-errors", "--recursive", "s3://names/", str(down))
    problems = compare_trees(files, read_tree(down))
    assert not problems, "\n".join(problems)


def test_empty_file_upload_does_not_stall_next_put(ferrite, cli_env, tmp_path):
    """An empty file followed by other uploads on the same keep-alive connection.

    The aws CLI (v1, up to at least 1.46.x, which vendors botocore 1.43.62) sends
    ``Expect: 100-continue`` on every PUT, including ``Content-Length: 0``.  If the server
    answers such a PUT with its final response without an interim ``100 Continue``,
    that botocore keeps the early status line on the pooled connection and parses the
    *next* 100-continue PUT's response against it (botocore issue #3755, fixed only in
    standalone botocore >= 1.43.77): the headers fail to parse and the CLI hangs ~60 s
    until the read timeout / idle close.  One connection (max_concurrent_requests = 1)
    makes the sequence deterministic.
    """
    make_bucket(ferrite, cli_env, "empty")
    src = tmp_path / "src"
    src.mkdir()
    (src / "0-empty").write_bytes(b"")
    for i in range(1, 4):
        (src / f"{i}.txt").write_bytes(os.urandom(1000 * i))
    cfg = tmp_path / "aws-config"
    cfg.write_text("[default]\ns3 =\n  max_concurrent_requests = 1\n")
    env = dict(cli_env, AWS_CONFIG_FILE=str(cfg))
    started = time.monotonic()
    aws(ferrite, env, "s3", "cp", "--only-show-errors", "--recursive", str(src), "s3://empty/",
        timeout=120)
    elapsed = time.monotonic() - started
    assert elapsed < 20, (
        f"uploading 4 small files took {elapsed:.0f}s: the PUT after the empty-body PUT stalled "
        "(the server answered `Expect: 100-continue` + `Content-Length: 0` without an interim "
        "`HTTP/1.1 100 Continue`, which the aws CLI's vendored botocore mis-handles)")
    assert ls_recursive(ferrite, env, "s3://empty/") == {"0-empty": 0, "1.txt": 1000, "2.txt": 2000,
                                                         "3.txt": 3000}
