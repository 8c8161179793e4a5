"""rclone (S3 backend, provider Other) against Ferrite.

rclone is configured purely through RCLONE_CONFIG_FERRITE_* environment variables.
Skipped only when rclone is missing and $CI is unset; in CI a missing rclone fails.
"""

from __future__ import annotations

import os

import pytest

from conftest import REGION, ROOT_PASSWORD, ROOT_USER, compare_trees, describe, make_tree, rclone_bin, read_tree, run

MiB = 1024 * 1024


@pytest.fixture
def rclone(ferrite, cli_env, tmp_path):
    binary = rclone_bin()
    env = dict(cli_env)
    conf = tmp_path / "rclone.conf"
    conf.write_text("")
    env.update(
        RCLONE_CONFIG=str(conf),
        RCLONE_CONFIG_FERRITE_TYPE="s3",
        RCLONE_CONFIG_FERRITE_PROVIDER="Other",
        RCLONE_CONFIG_FERRITE_ENV_AUTH="false",
        RCLONE_CONFIG_FERRITE_ACCESS_KEY_ID=ROOT_USER,
        RCLONE_CONFIG_FERRITE_SECRET_ACCESS_KEY=ROOT_PASSWORD,
        RCLONE_CONFIG_FERRITE_ENDPOINT=ferrite.endpoint,
        RCLONE_CONFIG_FERRITE_REGION=REGION,
        RCLONE_CONFIG_FERRITE_FORCE_PATH_STYLE="true",
    )
    env.pop("AWS_CA_BUNDLE", None)  # Debian rclone 1.60: LoadCustomCABundleError otherwise
    base_flags = [
        "--retries", "1", "--low-level-retries", "1",
        "--contimeout", "10s", "--timeout", "60s",
        # Exercise rclone's multipart path with a modest file.
        "--s3-upload-cutoff", "5Mi", "--s3-chunk-size", "5Mi",
        "--transfers", "4", "--checkers", "8",
    ]

    def rc(*args, check=True, timeout=180):
        return run([binary, *args, *base_flags], env=env, timeout=timeout, check=check)

    return rc


def test_rclone_sync_and_check(rclone, tmp_path):
    local = tmp_path / "local"
    files = make_tree(local, 80, seed=3)
    big = os.urandom(12 * MiB + 123)  # multipart: 5 MiB + 5 MiB + rest
    (local / "big" / "blob.bin").parent.mkdir()
    (local / "big" / "blob.bin").write_bytes(big)
    files["big/blob.bin"] = big

    rclone("mkdir", "ferrite:rbucket")
    rclone("sync", str(local), "ferrite:rbucket/dir")
    rclone("check", str(local), "ferrite:rbucket/dir")

    # Download into a fresh dir: every byte must match.
    down = tmp_path / "down1"
    rclone("copy", "ferrite:rbucket/dir", str(down))
    problems = compare_trees(files, read_tree(down))
    assert not problems, "\n".join(problems[:50])

    # Change local state: same-size content change, a resize, a delete, a new file.
    keys = sorted(k for k, v in files.items() if len(v) > 16 and k != "big/blob.bin")
    same_size = keys[0]
    resized = keys[1]
    deleted = keys[2]
    p = local / same_size
    data = bytearray(p.read_bytes())
    data[0] ^= 0xFF
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    files[same_size] = bytes(data)
    (local / resized).write_bytes(b"resized" * 1000)
    files[resized] = b"resized" * 1000
    (local / deleted).unlink()
    del files[deleted]
    (local / "new" / "added.txt").parent.mkdir()
    (local / "new" / "added.txt").write_bytes(b"brand new file\n")
    files["new/added.txt"] = b"brand new file\n"

    # Negative control: check must notice the differences before the re-sync.
    cp = rclone("check", str(local), "ferrite:rbucket/dir", check=False)
    assert cp.returncode != 0, "rclone check passed although local and remote differ:\n" + describe(cp)
    err = cp.stderr.decode("utf-8", "replace")
    for k in (same_size, resized, deleted, "new/added.txt"):
        assert k in err, f"rclone check did not report {k}:\n{err[-4000:]}"

    rclone("sync", str(local), "ferrite:rbucket/dir")
    rclone("check", str(local), "ferrite:rbucket/dir")

    down = tmp_path / "down2"
    rclone("copy", "ferrite:rbucket/dir", str(down))
    problems = compare_trees(files, read_tree(down))
    assert not problems, "\n".join(problems[:50])

    cp = rclone("lsf", "-R", "--files-only", "ferrite:rbucket/dir")
    assert sorted(cp.stdout.decode().splitlines()) == sorted(files)
