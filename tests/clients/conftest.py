"""Shared fixtures for the real-client test suite.

Every test gets its own Ferrite server on fresh drive directories under
``tmp_path``; the server is always stopped at teardown.  The server binary is
``$FERRITE_BIN`` (default ``<repo>/target/debug/ferrite``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

REPO = Path(__file__).resolve().parents[2]
FERRITE_BIN = os.environ.get("FERRITE_BIN") or str(REPO / "target" / "debug" / "ferrite")
ROOT_USER = os.environ.get("FERRITE_ROOT_USER") or "ferriteadmin"
ROOT_PASSWORD = os.environ.get("FERRITE_ROOT_PASSWORD") or "ferriteadmin"
REGION = "us-east-1"
START_TIMEOUT = 30.0
# Attempts with a new port when another process took the chosen one first.
PORT_ATTEMPTS = 5
HEAL_STATUS_PATH = "/ferrite/admin/v1/heal"

# Variables that could point clients somewhere else or change their defaults.
# Checksum settings are removed so the clients run with their *defaults*
# (request_checksum_calculation=when_supported): the server must handle them.
_SCRUB_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CA_BUNDLE",  # Debian rclone 1.60 fails with LoadCustomCABundleError otherwise
    "AWS_REQUEST_CHECKSUM_CALCULATION",
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
    "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
)


def _scrubbed_environ() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


# Make in-process boto3 independent of whatever ~/.aws or AWS_* the machine has.
for _k in _SCRUB_ENV:
    os.environ.pop(_k, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:  # pragma: no cover - diagnostic only
        return f"<cannot read {path}: {e}>"
    text = data[-limit:].decode("utf-8", "replace")
    if len(data) > limit:
        text = f"...[{len(data) - limit} bytes cut]...\n" + text
    return text


def free_port() -> int:
    """A port no one listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signed_get(endpoint: str, path: str, cafile: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
    """One GET signed with the root credentials (SigV4): its status and body."""
    req = AWSRequest(method="GET", url=endpoint + path)
    S3SigV4Auth(Credentials(ROOT_USER, ROOT_PASSWORD), "s3", REGION).add_auth(req)
    handlers = [urllib.request.ProxyHandler({})]
    if cafile is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(req.url, headers=dict(req.headers.items())), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def serves_drives(endpoint: str, drives: list, cafile: str | None = None) -> bool:
    """Whether the server at ``endpoint`` answers with the heal status of exactly ``drives``
    (so a process that took the port meanwhile is not mistaken for ours)."""
    try:
        status, body = signed_get(endpoint, HEAL_STATUS_PATH, cafile)
        listed = [d["path"] for d in json.loads(body)["drives"]] if status == 200 else None
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return listed == [str(d) for d in drives]


def wait_until_serving(proc: subprocess.Popen, endpoint: str, drives: list, timeout: float = START_TIMEOUT,
                       cafile: str | None = None) -> int | None:
    """Waits until the server answers for its drives. Returns None then, or the exit code
    of a server that exited first; raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            return rc
        if serves_drives(endpoint, drives, cafile):
            return None
        time.sleep(0.05)
    raise TimeoutError(f"{endpoint} did not answer within {timeout:.0f}s")


class FerriteServer:
    """One ferrite server process over a fixed set of drive directories."""

    def __init__(self, base: Path, drives: list[Path], parity: int | None = None,
                 extra_args: list[str] | None = None, env: dict | None = None):
        self.base = base
        self.drives = drives
        self.parity = parity
        self.extra_args = list(extra_args or [])
        self.env_overrides = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.endpoint: str | None = None
        self.port: int | None = None
        self.generation = 0
        self.stdout_log: Path | None = None
        self.stderr_log: Path | None = None
        self.logs: list[tuple[Path, Path]] = []

    # ---- lifecycle -------------------------------------------------------
    def command(self, address: str) -> list[str]:
        cmd = [FERRITE_BIN, "server", "--address", address]
        if self.parity is not None:
            cmd += ["--parity", str(self.parity)]
        cmd += self.extra_args
        cmd += [str(d) for d in self.drives]
        return cmd

    def start(self, address: str = "127.0.0.1:0") -> "FerriteServer":
        """Starts the server and waits until it answers. Port 0 means a free port (a port
        another process took first is retried with a new one)."""
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        if not os.path.exists(FERRITE_BIN):
            pytest.fail(f"ferrite binary not found at {FERRITE_BIN} (build it or set FERRITE_BIN)")
        host, port = address.rsplit(":", 1)
        attempts = PORT_ATTEMPTS if port == "0" else 1
        for _ in range(attempts):
            chosen = f"{host}:{free_port()}" if port == "0" else address
            if self._start_on(chosen):
                return self
        pytest.fail(f"ferrite could not listen on any of {attempts} ports\n{self.log_text()}", pytrace=False)

    def _launch(self, address: str) -> list[str]:
        """Starts the process, its log (stdout) and stderr written straight to files."""
        self.generation += 1
        self.stdout_log = self.base / f"ferrite.{self.generation}.stdout.log"
        self.stderr_log = self.base / f"ferrite.{self.generation}.stderr.log"
        self.logs.append((self.stdout_log, self.stderr_log))
        env = _scrubbed_environ()
        env.setdefault("RUST_BACKTRACE", "1")
        env["FERRITE_ROOT_USER"] = ROOT_USER
        env["FERRITE_ROOT_PASSWORD"] = ROOT_PASSWORD
        env.update(self.env_overrides)
        cmd = self.command(address)
        with open(self.stdout_log, "wb") as stdout_f, open(self.stderr_log, "wb") as stderr_f:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout_f, stderr=stderr_f,
                                         env=env, cwd=str(self.base))
        return cmd

    def _start_on(self, address: str) -> bool:
        """True once the server on ``address`` answers; False when the port was taken."""
        cmd = self._launch(address)
        endpoint = f"http://{address}"
        try:
            rc = wait_until_serving(self.proc, endpoint, self.drives)
        except TimeoutError as e:
            self._kill_proc()
            pytest.fail(f"{e}\ncommand: {' '.join(cmd)}\n"
                        f"--- stdout ---\n{_tail(self.stdout_log)}\n--- stderr ---\n{_tail(self.stderr_log)}",
                        pytrace=False)
        if rc is None:
            self.endpoint = endpoint
            self.port = int(address.rsplit(":", 1)[1])
            return True
        if "cannot listen" in _tail(self.stderr_log):
            return False
        pytest.fail(f"server exited with code {rc} before serving\ncommand: {' '.join(cmd)}\n"
                    f"--- stdout ---\n{_tail(self.stdout_log)}\n--- stderr ---\n{_tail(self.stderr_log)}",
                    pytrace=False)

    def _kill_proc(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout``). Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_proc()
        return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL the server: simulates a crash / power cut of the process."""
        assert self.proc is not None
        self._kill_proc()

    def restart(self, kill: bool = False, address: str = "127.0.0.1:0") -> "FerriteServer":
        """Stop (gracefully, or with SIGKILL if ``kill``) and start again on the same drives.

        The port normally changes: use ``self.endpoint`` / ``self.client()`` afterwards.
        """
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start(address)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- clients ---------------------------------------------------------
    def client(self, access_key: str = ROOT_USER, secret_key: str = ROOT_PASSWORD, **config):
        return make_s3_client(self.endpoint, access_key, secret_key, **config)

    def client_env(self) -> dict:
        """Environment for subprocess clients (aws CLI, rclone)."""
        return client_env(self)

    def log_text(self) -> str:
        parts = []
        for out, err in self.logs:
            parts.append(f"--- {out.name} ---\n{_tail(out, 3000)}")
            parts.append(f"--- {err.name} ---\n{_tail(err, 8000)}")
        return "\n".join(parts)


def make_s3_client(endpoint: str, access_key: str = ROOT_USER, secret_key: str = ROOT_PASSWORD,
                   max_attempts: int = 1, read_timeout: float = 60, connect_timeout: float = 10,
                   max_pool_connections: int = 10):
    """A boto3 S3 client: SigV4, path style, us-east-1, no retries (retries would hide bugs)."""
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
    )
    cfg = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": max_attempts, "mode": "standard"},
        read_timeout=read_timeout,
        connect_timeout=connect_timeout,
        max_pool_connections=max_pool_connections,
    )
    return session.client("s3", endpoint_url=endpoint, config=cfg)


def client_env(server: FerriteServer) -> dict:
    env = _scrubbed_environ()
    env.update(
        AWS_ACCESS_KEY_ID=ROOT_USER,
        AWS_SECRET_ACCESS_KEY=ROOT_PASSWORD,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_PAGER="",
    )
    env.pop("AWS_CA_BUNDLE", None)
    return env


@pytest.fixture
def ferrite_factory(tmp_path, request):
    """``start(drives=1, parity=None, extra_args=None)`` -> running FerriteServer.

    Each call makes fresh, empty drive directories under tmp_path.
    """
    servers: list[FerriteServer] = []
    request.node._ferrite_servers = servers

    def start(drives: int = 1, parity: int | None = None, extra_args=None, env=None) -> FerriteServer:
        n = len(servers)
        base = tmp_path / f"srv{n}"
        base.mkdir()
        paths = []
        for i in range(drives):
            d = base / f"drive{i}"
            d.mkdir()
            paths.append(d)
        srv = FerriteServer(base, paths, parity=parity, extra_args=extra_args, env=env)
        servers.append(srv)
        return srv.start()

    yield start

    for srv in servers:
        srv.stop(timeout=10)


@pytest.fixture
def ferrite(ferrite_factory, request) -> FerriteServer:
    """A running server.  Drive count from indirect parametrization (default 1)."""
    drives = getattr(request, "param", 1)
    return ferrite_factory(drives=drives)


@pytest.fixture
def s3(ferrite):
    return ferrite.client()


@pytest.fixture
def cli_env(ferrite) -> dict:
    return client_env(ferrite)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        servers = getattr(item, "_ferrite_servers", None) or []
        for i, srv in enumerate(servers):
            try:
                state = "running" if srv.running() else f"exited rc={srv.proc.returncode if srv.proc else None}"
                rep.sections.append((f"ferrite server {i} ({state}) logs", srv.log_text()))
            except Exception as e:  # pragma: no cover
                rep.sections.append((f"ferrite server {i} logs", f"<unavailable: {e}>"))


# ---- small helpers shared by tests --------------------------------------------

def run(cmd: list[str], env: dict, timeout: float = 300, cwd=None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a client command; on failure the assertion shows command, rc, stdout and stderr."""
    try:
        cp = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"command timed out after {timeout}s: {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{(e.stdout or b'')[-4000:].decode('utf-8', 'replace')}\n"
            f"--- stderr ---\n{(e.stderr or b'')[-4000:].decode('utf-8', 'replace')}",
            pytrace=False,
        )
    if check and cp.returncode != 0:
        pytest.fail(describe(cp), pytrace=False)
    return cp


def describe(cp: subprocess.CompletedProcess, limit: int = 6000) -> str:
    def t(b):
        s = (b or b"").decode("utf-8", "replace")
        return s if len(s) <= limit else "..." + s[-limit:]
    return (f"command failed (rc={cp.returncode}): {' '.join(map(str, cp.args))}\n"
            f"--- stdout ---\n{t(cp.stdout)}\n--- stderr ---\n{t(cp.stderr)}")


def aws_cmd() -> list[str]:
    """The aws CLI from the same interpreter/venv as the tests."""
    return [sys.executable, "-m", "awscli"]


def rclone_bin() -> str:
    path = shutil.which("rclone")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("rclone is not installed (required in CI; scripts/test installs it)", pytrace=False)
        pytest.skip("rclone not installed (set CI=1 to make this a failure)")
    return path


def make_tree(root: Path, count: int, seed: int, max_size: int = 12 * 1024) -> dict[str, bytes]:
    """Write ``count`` small random files in nested directories; return {posix relpath: bytes}.

    Includes an empty file and files at depths 1..4.
    """
    import random

    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    dirs = ["", "a", "a/b", "a/b/c", "a/b/c/d", "docs", "docs/2024", "img", "img/raw", "z"]
    i = 0
    while len(files) < count:
        d = dirs[i % len(dirs)]
        name = f"f{i:04d}.{rng.choice(['txt', 'bin', 'dat', 'json'])}"
        rel = f"{d}/{name}" if d else name
        size = 0 if i == 0 else rng.randint(1, max_size)
        files[rel] = rng.randbytes(size)
        i += 1
    # Files an hour old: `aws s3 sync` re-uploads when the local mtime is newer than the
    # (second-granular) LastModified, which would race with files written just now.
    old = time.time() - 3600
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (old, old))
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def compare_trees(expected: dict[str, bytes], actual: dict[str, bytes]) -> list[str]:
    problems = []
    for k in sorted(set(expected) - set(actual)):
        problems.append(f"missing: {k}")
    for k in sorted(set(actual) - set(expected)):
        problems.append(f"unexpected: {k}")
    for k in sorted(set(expected) & set(actual)):
        if expected[k] != actual[k]:
            problems.append(f"content differs: {k} (expected {len(expected[k])} bytes, got {len(actual[k])})")
    return problems


def multipart_etag(data_or_parts, part_size: int | None = None) -> str:
    """S3 ETag of a multipart object: md5(concat(md5(part)))-N, quoted."""
    import hashlib

    if part_size is not None:
        parts = [data_or_parts[i:i + part_size] for i in range(0, len(data_or_parts), part_size)]
    else:
        parts = list(data_or_parts)
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'
