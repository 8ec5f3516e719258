"""Tests for src.data.mnist_files against a local HTTP server and local mirrors (no internet)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.idx import IDXError, load_images, load_labels
from src.data.mnist_files import (
    MIRROR_ENV_VAR,
    MNIST_SHA256,
    STALE_PART_SECONDS,
    MNISTFetchError,
    decompressed_sha256,
    fetch_mnist,
)
from tests.conftest import REPO, SHARED_MNIST

MNIST_DIR = SHARED_MNIST
NAMES = list(MNIST_SHA256)


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _fake_content(name: str) -> bytes:
    rng = np.random.default_rng(len(name) + name.startswith("t10k"))
    if "images" in name:
        return _idx(rng.integers(0, 256, (5, 28, 28), dtype=np.uint8))
    return _idx(rng.integers(0, 10, 5, dtype=np.uint8))


CONTENT = {name: _fake_content(name) for name in NAMES}
BLOBS = {name: gzip.compress(data, mtime=0) for name, data in CONTENT.items()}
CHECKSUMS = {name: hashlib.sha256(data).hexdigest() for name, data in CONTENT.items()}


def corrupted(blob: bytes) -> bytes:
    """The same gzip file with one byte of its CRC flipped: complete, but damaged."""
    damaged = bytearray(blob)
    damaged[-8] ^= 0xFF
    return bytes(damaged)


class Server(ThreadingHTTPServer):
    """Serves BLOBS under /<mirror>/<name>; `plan[mirror]` lists behaviours, the last repeats."""

    plan: dict[str, list[str]]
    requests: list[str]
    release: threading.Event

    def url(self, mirror: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{mirror}"


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        mirror, _, name = self.path.lstrip("/").partition("/")
        plan = self.server.plan.setdefault(mirror, ["good"])
        mode = plan.pop(0) if len(plan) > 1 else plan[0]
        if name not in BLOBS or mode == "404":
            return self.send_error(404)
        if mode == "500":
            return self.send_error(500)
        if mode == "slow":  # nothing, not even the status line, until the client times out
            self.server.release.wait(5)
        blob = BLOBS[name]
        body = {
            "html": b"<!DOCTYPE html><html><body>Service unavailable</body></html>",
            "short": blob[: len(blob) // 2],  # a whole response, of a truncated file
            "cut": blob[: len(blob) // 2],  # hangs up before Content-Length is reached
            "stall": blob[: len(blob) // 2],  # stops sending mid-body
            "corrupt": corrupted(blob),
            "wrong": BLOBS[NAMES[(NAMES.index(name) + 1) % len(NAMES)]],
        }.get(mode, blob)
        self.send_response(200)
        self.send_header("Content-Length", str(len(blob if mode in ("cut", "stall") else body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may have timed out and hung up
            self.wfile.write(body)
            if mode == "stall":
                self.server.release.wait(5)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(("127.0.0.1", 0), Handler)
    srv.plan, srv.requests, srv.release = {}, [], threading.Event()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def mirror_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mirror"
    d.mkdir()
    for name, blob in BLOBS.items():
        (d / name).write_bytes(blob)
    return d


@pytest.fixture
def raw_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(MIRROR_ENV_VAR, raising=False)
    return tmp_path / "raw"


def fetch(raw_dir: Path, mirrors: list[str], **kwargs: object) -> dict[str, Path]:
    kwargs = {"checksums": CHECKSUMS, "backoff": 0.0, "progress": False, **kwargs}
    return fetch_mnist(raw_dir, mirrors, **kwargs)  # type: ignore[arg-type]


def assert_fetched(raw_dir: Path, paths: dict[str, Path]) -> None:
    assert paths == {name: raw_dir / name for name in NAMES}
    for name, path in paths.items():
        assert gzip.decompress(path.read_bytes()) == CONTENT[name]
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(NAMES)  # no *.part left


def test_decompressed_sha256(mirror_dir: Path, tmp_path: Path) -> None:
    assert decompressed_sha256(mirror_dir / NAMES[0]) == CHECKSUMS[NAMES[0]]
    (tmp_path / "plain").write_bytes(CONTENT[NAMES[0]])
    with pytest.raises(IDXError, match="plain: not gzip"):
        decompressed_sha256(tmp_path / "plain")


@settings(max_examples=100, deadline=timedelta(seconds=5))  # the deadline only catches hangs
@given(st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 40), st.binary(max_size=16))
def test_damaged_gzip_only_raises_idx_error(pos: int, value: int, cut: int, tail: bytes) -> None:
    blob = bytearray(BLOBS[NAMES[1]])
    blob[pos % len(blob)] = value
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.gz"
        path.write_bytes(bytes(blob[: len(blob) - cut]) + tail)
        try:
            decompressed_sha256(path)
        except IDXError as e:
            assert str(e).startswith("fuzz.gz: ")


def test_first_good_mirror_wins(server: Server, raw_dir: Path) -> None:
    assert_fetched(raw_dir, fetch(raw_dir, [server.url("a"), server.url("b")]))
    assert sorted(server.requests) == sorted(f"/a/{n}" for n in NAMES)


def test_falls_back_past_bad_mirror(server: Server, raw_dir: Path) -> None:
    server.plan["bad"] = ["404"]
    assert_fetched(raw_dir, fetch(raw_dir, [server.url("bad/"), server.url("good")]))
    assert sum(r.startswith("/bad/") for r in server.requests) == len(NAMES)  # 404: no retry


@pytest.mark.parametrize("as_url", [False, True])
def test_local_mirror_first(server: Server, raw_dir: Path, mirror_dir: Path, as_url: bool) -> None:
    local = mirror_dir.as_uri() if as_url else str(mirror_dir)
    assert_fetched(raw_dir, fetch(raw_dir, [server.url("a")], local_mirror=local))
    assert server.requests == []


def test_env_var_mirror(
    server: Server, raw_dir: Path, mirror_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV_VAR, str(mirror_dir))
    assert_fetched(raw_dir, fetch(raw_dir, [server.url("a")]))
    assert server.requests == []


def test_existing_verified_files_skip_network(server: Server, raw_dir: Path) -> None:
    raw_dir.mkdir()
    for name, blob in BLOBS.items():
        (raw_dir / name).write_bytes(gzip.compress(gzip.decompress(blob), compresslevel=1))
    before = {p.name: p.stat().st_mtime_ns for p in raw_dir.iterdir()}
    fetch(raw_dir, [server.url("a")])
    assert server.requests == []
    assert {p.name: p.stat().st_mtime_ns for p in raw_dir.iterdir()} == before


def test_corrupt_existing_file_is_replaced(server: Server, raw_dir: Path) -> None:
    raw_dir.mkdir()
    (raw_dir / NAMES[0]).write_bytes(BLOBS[NAMES[0]][:-8])
    (raw_dir / NAMES[1]).write_bytes(BLOBS[NAMES[2]])
    for name in NAMES[2:]:
        (raw_dir / name).write_bytes(BLOBS[name])
    assert_fetched(raw_dir, fetch(raw_dir, [server.url("a")]))
    assert sorted(server.requests) == sorted([f"/a/{NAMES[0]}", f"/a/{NAMES[1]}"])


# Each way a mirror can fail, and the reason the failure is reported with.
HTTP_FAULTS = {
    "404": "HTTP 404",
    "500": "HTTP 500",
    "html": "not gzip (starts with b'<!DOCTYPE html>",
    "short": "truncated gzip stream",
    "cut": "short body: connection closed after",
    "corrupt": "corrupt gzip stream",
    "wrong": "checksum mismatch",
    "slow": "timeout after 0.3s",
    "stall": "timeout after 0.3s",
}


@pytest.mark.parametrize("mode", HTTP_FAULTS)
def test_each_http_fault_falls_through_to_the_next_mirror(
    server: Server, raw_dir: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    server.plan["bad"] = [mode]
    caplog.set_level(logging.WARNING, logger="src.data.mnist_files")
    paths = fetch(raw_dir, [server.url("bad"), server.url("good")], retries=1, timeout=0.3)
    assert_fetched(raw_dir, paths)
    for name in NAMES:
        assert server.requests.index(f"/bad/{name}") < server.requests.index(f"/good/{name}")
        assert f"{server.url('bad')}/{name}: {HTTP_FAULTS[mode]}" in caplog.text


LOCAL_FAULTS = {
    "truncated": (lambda name: BLOBS[name][:-20], "truncated gzip stream"),
    "corrupt": (lambda name: corrupted(BLOBS[name]), "corrupt gzip stream"),
    "empty": (lambda name: b"", "empty file"),
    "uncompressed": (lambda name: CONTENT[name], "not gzip"),
    "wrong": (lambda name: BLOBS[NAMES[NAMES.index(name) - 1]], "checksum mismatch"),
}


@pytest.mark.parametrize("fault", LOCAL_FAULTS)
def test_each_bad_local_file_falls_through_to_the_http_mirror(
    server: Server, raw_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    damage, reason = LOCAL_FAULTS[fault]
    local = tmp_path / "local"
    local.mkdir()
    for name in NAMES:
        (local / name).write_bytes(damage(name))
    before = {p.name: p.read_bytes() for p in local.iterdir()}
    caplog.set_level(logging.WARNING, logger="src.data.mnist_files")
    assert_fetched(raw_dir, fetch(raw_dir, [server.url("good")], local_mirror=str(local)))
    assert sorted(server.requests) == sorted(f"/good/{n}" for n in NAMES)
    for name in NAMES:
        assert f"{local / name}: {reason}" in caplog.text
    assert {p.name: p.read_bytes() for p in local.iterdir()} == before  # the mirror is only read


def test_all_sources_failing(server: Server, raw_dir: Path, tmp_path: Path) -> None:
    for mode in HTTP_FAULTS:
        server.plan[mode] = [mode]
    empty = tmp_path / "empty"
    empty.mkdir()
    mirrors = [server.url(m) for m in HTTP_FAULTS] + ["ftp://example.invalid/mnist"]
    with pytest.raises(MNISTFetchError) as info:
        fetch(raw_dir, mirrors, local_mirror=str(empty), retries=2, timeout=0.3)
    lines = str(info.value).splitlines()
    name = NAMES[0]
    reasons = [
        f"{empty / name}: file not found",
        *(f"{server.url(mode)}/{name}: {reason}" for mode, reason in HTTP_FAULTS.items()),
        f"ftp://example.invalid/mnist/{name}: unsupported URL scheme",
    ]
    assert lines[0] == f"Could not obtain a verified copy of {name}. Sources tried:"
    # One line per source, in the order they were tried, each with its reason.
    assert len(lines) == len(reasons) + 2
    for line, reason in zip(lines[1:], reasons, strict=False):
        assert line.startswith(f"  - {reason}")
    assert MIRROR_ENV_VAR in lines[-1] and str(raw_dir) in lines[-1]
    for transient in ("500", "cut", "slow", "stall"):  # retried, and said so
        assert server.requests.count(f"/{transient}/{name}") == 2
        assert any(line.startswith(f"  - {server.url(transient)}/") for line in lines)
        assert any(
            f"{server.url(transient)}/{name}:" in ln and "(2 attempts)" in ln for ln in lines
        )
    assert server.requests.count(f"/404/{name}") == 1
    assert list(raw_dir.iterdir()) == []  # no partial file, no temporary file
    assert list(empty.iterdir()) == []


FETCH_IN_CHILD = """
import json, sys
from src.data.mnist_files import fetch_mnist
fetch_mnist(sys.argv[1], [sys.argv[2]], checksums=json.loads(sys.argv[3]), progress=False)
"""


def default_sigint() -> None:
    """A child starts with SIGINT at its default, whatever the test process set it to (an ignored
    SIGINT is inherited, and Python then raises no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fetch_in_child_until_part_written(raw_dir: Path, mirror: str) -> subprocess.Popen[bytes]:
    """A child fetching NAMES[0] from `mirror` (which stalls mid-body), once it has made its
    temporary file."""
    checksums = json.dumps({NAMES[0]: CHECKSUMS[NAMES[0]]})
    child = subprocess.Popen(
        [sys.executable, "-c", FETCH_IN_CHILD, str(raw_dir), mirror, checksums],
        cwd=REPO,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    return wait_until_part_written(child, raw_dir)


def wait_until_part_written(
    child: subprocess.Popen[bytes], raw_dir: Path, seconds: float = 20
) -> subprocess.Popen[bytes]:
    """`child`, once it has made a temporary file in `raw_dir` (bounded: fails rather than
    hangs if none ever appears)."""
    for _ in range(int(seconds / 0.02)):
        if (raw_dir.is_dir() and any(raw_dir.glob(".*.part"))) or child.poll() is not None:
            break
        time.sleep(0.02)
    assert child.poll() is None, child.communicate()[1].decode()
    return child


def test_an_interrupted_fetch_leaves_nothing(server: Server, raw_dir: Path) -> None:
    server.plan["stall"] = ["stall"]
    child = fetch_in_child_until_part_written(raw_dir, server.url("stall"))
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode != 0 and b"KeyboardInterrupt" in stderr
    assert list(raw_dir.iterdir()) == []


def test_a_killed_fetchs_part_is_removed_once_stale(server: Server, raw_dir: Path) -> None:
    server.plan["stall"] = ["stall"]
    child = fetch_in_child_until_part_written(raw_dir, server.url("stall"))
    child.kill()  # no chance to clean up
    child.communicate(timeout=30)
    (part,) = raw_dir.iterdir()
    fresh = raw_dir / f".{NAMES[1]}.another-fetch-running.part"
    fresh.write_bytes(b"\x1f\x8b")
    aged = time.time() - STALE_PART_SECONDS - 60
    os.utime(part, (aged, aged))
    paths = fetch(raw_dir, [server.url("good")])
    assert not part.exists() and fresh.exists()
    fresh.unlink()
    assert_fetched(raw_dir, paths)


def test_no_sources_configured(raw_dir: Path) -> None:
    with pytest.raises(MNISTFetchError, match=f"{MIRROR_ENV_VAR} unset") as info:
        fetch(raw_dir, [])
    assert NAMES[0] in str(info.value) and "copy them into" in str(info.value)


def test_unreachable_mirror_is_skipped_for_later_files(
    server: Server, raw_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as srv:
        dead = f"http://127.0.0.1:{srv.server_address[1]}/x"  # port closed once this exits
    caplog.set_level(logging.INFO, logger="src.data.mnist_files")
    assert_fetched(raw_dir, fetch(raw_dir, [dead, server.url("a")], retries=2))
    assert sum(dead in r.getMessage() and "Fetching" in r.getMessage() for r in caplog.records) == 1
    assert "connection failed" in caplog.text


def test_retries_500_then_good(server: Server, raw_dir: Path) -> None:
    server.plan["flaky"] = ["500", "500", "good"]
    assert_fetched(raw_dir, fetch(raw_dir, [server.url("flaky")], retries=3))
    assert server.requests.count(f"/flaky/{NAMES[0]}") == 3


@pytest.mark.real_data
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="no local MNIST copy")
def test_real_mnist_from_local_mirror(tmp_path: Path) -> None:
    paths = fetch_mnist(tmp_path, mirrors=[], local_mirror=str(MNIST_DIR), progress=False)
    assert set(paths) == set(MNIST_SHA256)
    assert load_images(paths["t10k-images-idx3-ubyte.gz"]).shape == (10000, 28, 28)
    assert load_labels(paths["train-labels-idx1-ubyte.gz"]).shape == (60000,)
    shutil.rmtree(tmp_path)


def test_ctrl_c_while_prepare_fetches_ends_in_one_line_and_leaves_nothing(
    server: Server, tmp_path: Path
) -> None:
    server.plan["stall"] = ["stall"]
    raw_dir = tmp_path / "data" / "mnist" / "raw"
    env = {k: v for k, v in os.environ.items() if k != MIRROR_ENV_VAR}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "src.prepare",
            "data=mnist",
            f"data.mirrors=[{server.url('stall')}]",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    wait_until_part_written(child, raw_dir, seconds=60)  # the command imports first
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130
    assert "Traceback" not in stderr.decode()
    assert stderr.decode().strip().splitlines()[-1].startswith("seqlab: interrupted (Ctrl+C)")
    assert list(raw_dir.iterdir()) == []
