"""Tests for src.data.idx: round trips, clear refusals of malformed files, fuzzing, real MNIST."""

from __future__ import annotations

import contextlib
import gzip
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import zlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.idx import (
    MAX_DECOMPRESSED_BYTES,
    IDXError,
    load_images,
    load_labels,
    parse_idx,
    read_idx,
)
from tests.conftest import REPO, SHARED_MNIST

MNIST_DIR = SHARED_MNIST


def idx_bytes(
    arr: np.ndarray, *, type_code: int = 0x08, dims: tuple[int, ...] | None = None
) -> bytes:
    dims = arr.shape if dims is None else dims
    header = bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    return header + arr.astype(np.uint8).tobytes()


def write(path: Path, data: bytes, *, compress: bool | None = None) -> Path:
    compress = path.suffix == ".gz" if compress is None else compress
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def images(n: int = 3, h: int = 28, w: int = 28) -> np.ndarray:
    return np.arange(n * h * w, dtype=np.int64).reshape(n, h, w).astype(np.uint8)


@pytest.mark.parametrize("fname", ["x-images.gz", "x-images"])
def test_round_trip_images(tmp_path: Path, fname: str) -> None:
    arr = images()
    out = load_images(write(tmp_path / fname, idx_bytes(arr)))
    assert out.dtype == np.uint8 and out.shape == (3, 28, 28)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 7  # must be writable


def test_round_trip_labels(tmp_path: Path) -> None:
    arr = np.array([0, 9, 3, 3], dtype=np.uint8)
    out = load_labels(write(tmp_path / "l.gz", idx_bytes(arr)))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, arr)


def test_plain_file_named_gz_and_empty_dims(tmp_path: Path) -> None:
    arr = np.zeros((0, 5), np.uint8)
    assert read_idx(write(tmp_path / "plain.gz", idx_bytes(arr), compress=False)).shape == (0, 5)


def test_concatenated_gzip_members(tmp_path: Path) -> None:
    data = idx_bytes(images(2))
    path = tmp_path / "multi.gz"
    path.write_bytes(gzip.compress(data[:100]) + gzip.compress(data[100:]))
    np.testing.assert_array_equal(read_idx(path), images(2))


def refused(path: Path, *fragments: str) -> None:
    with pytest.raises(IDXError) as info:
        load_images(path) if "images" in path.name else load_labels(path)
    msg = str(info.value)
    assert path.name in msg
    for fragment in fragments:
        assert fragment in msg


def test_wrong_magic(tmp_path: Path) -> None:
    data = b"\x01\x00" + idx_bytes(images())[2:]
    refused(write(tmp_path / "images.gz", data), "magic")


def test_wrong_type_code(tmp_path: Path) -> None:
    refused(write(tmp_path / "images.gz", idx_bytes(images(), type_code=0x0D)), "type code 0x0d")


def test_truncated_data(tmp_path: Path) -> None:
    data = idx_bytes(images(2))[:-10]
    refused(write(tmp_path / "images", data), "truncated: expected 1568 bytes of data, found 1558")


def test_trailing_bytes(tmp_path: Path) -> None:
    refused(write(tmp_path / "images.gz", idx_bytes(images(1)) + b"xyz"), "3 trailing bytes")


def test_short_and_header_truncated(tmp_path: Path) -> None:
    refused(write(tmp_path / "images", b"\x00\x00"), "too short")
    refused(write(tmp_path / "images", idx_bytes(images())[:9]), "truncated header")


def test_bad_ndim(tmp_path: Path) -> None:
    refused(write(tmp_path / "images", b"\x00\x00\x08\x04" + bytes(16)), "dimensions 4")
    refused(write(tmp_path / "images", b"\x00\x00\x08\x00"), "dimensions 0")


def test_images_wrong_ndim(tmp_path: Path) -> None:
    refused(write(tmp_path / "images.gz", idx_bytes(np.zeros(5, np.uint8))), "3 dimensions", "1")


def test_images_wrong_dims(tmp_path: Path) -> None:
    refused(write(tmp_path / "images.gz", idx_bytes(images(2, 28, 27))), "28x28", "28x27")


def test_labels_wrong_ndim(tmp_path: Path) -> None:
    refused(write(tmp_path / "labels.gz", idx_bytes(images(1))), "1 dimension", "found 3")


def test_labels_out_of_range(tmp_path: Path) -> None:
    arr = np.array([1, 2, 10, 255], np.uint8)
    refused(write(tmp_path / "labels.gz", idx_bytes(arr)), "2 labels outside 0..9", "10 at index 2")


def test_corrupt_gzip(tmp_path: Path) -> None:
    blob = bytearray(gzip.compress(idx_bytes(images())))
    blob[len(blob) // 2] ^= 0xFF
    refused(write(tmp_path / "images.gz", bytes(blob), compress=False), "corrupt gzip")


def test_truncated_gzip(tmp_path: Path) -> None:
    blob = gzip.compress(idx_bytes(images()))[:-20]
    refused(write(tmp_path / "images.gz", blob, compress=False), "truncated gzip")


def peak_bytes_while(call: Callable[[], object]) -> int:
    """The peak of Python and NumPy allocations (NumPy reports to tracemalloc) during call()."""
    tracemalloc.start()
    try:
        with contextlib.suppress(IDXError):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Parsing a small file may cost its size a few times over plus one read chunk, never the claim.
SMALL_FILE_PEAK = 4 << 20


def test_lying_header_is_refused_before_allocating(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros(10, np.uint8), dims=(2**31, 28, 28))
    path = write(tmp_path / "images.gz", data)
    refused(path, "truncated: expected 1683627180032 bytes")
    assert peak_bytes_while(lambda: load_images(path)) < SMALL_FILE_PEAK


RLIMITED_PARSE = """
import resource, struct, sys
import numpy as np
from src.data.idx import IDXError, load_images, parse_idx

with open("/proc/self/statm") as f:
    in_use = int(f.read().split()[0]) * resource.getpagesize()
limit = in_use + (256 << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    np.ones(512 << 20, np.uint8)
    sys.exit("the address-space limit does not hold")
except MemoryError:
    pass
for load in (lambda: parse_idx(bytes.fromhex(sys.argv[1]), name="liar"),
             lambda: load_images(sys.argv[2])):
    try:
        load()
    except IDXError as e:
        print(e)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_lying_header_is_refused_under_an_address_space_limit(tmp_path: Path) -> None:
    """In a child process that cannot map more than 256 MiB beyond what it has: a header
    claiming 2^31 x 2^31 bytes, or 2^31 images, is refused with IDXError, not MemoryError."""
    liar = idx_bytes(np.zeros(64, np.uint8), dims=(2**31, 2**31))
    images_file = write(
        tmp_path / "images.gz", idx_bytes(np.zeros(9, np.uint8), dims=(2**31, 28, 28))
    )
    result = subprocess.run(
        [sys.executable, "-c", RLIMITED_PARSE, liar.hex(), str(images_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "liar: truncated: expected 4611686018427387904 bytes of data, found 64",
        "images.gz: truncated: expected 1683627180032 bytes of data, found 9",
    ]


def test_gzip_bomb_is_refused(tmp_path: Path) -> None:
    comp = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    blob = b"".join(comp.compress(zeros) for _ in range(MAX_DECOMPRESSED_BYTES >> 20)) + (
        comp.compress(b"\0") + comp.flush()
    )
    refused(write(tmp_path / "images.gz", blob, compress=False), "more than 134217728 bytes")


# Not a speed check: generous enough for a loaded machine, it turns a hang into a failure.
HANG_GUARD = timedelta(seconds=5)


def only_idx_errors(data: bytes) -> None:
    try:
        parse_idx(data, name="fuzz")
    except IDXError as e:
        assert "fuzz" in str(e)


@settings(max_examples=200, deadline=HANG_GUARD)
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_idx_error(data: bytes) -> None:
    only_idx_errors(data)
    only_idx_errors(b"\x00\x00\x08" + data)


VALID = idx_bytes(images(2, 3, 4))


@settings(max_examples=200, deadline=HANG_GUARD)
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=4),
    st.integers(0, len(VALID) + 8),
    st.binary(max_size=8),
)
def test_mutated_header_only_raises_idx_error(
    edits: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(VALID)
    for i, value in edits:
        data[i % 16] = value  # bias towards the header, where the interesting checks are
    only_idx_errors(bytes(data[:cut]) + tail)


@settings(max_examples=200, deadline=HANG_GUARD)
@given(st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 80))
def test_mutated_gzip_only_raises_idx_error(pos: int, value: int, cut: int) -> None:
    blob = bytearray(gzip.compress(VALID))
    blob[pos % len(blob)] = value
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / "fuzz.gz", bytes(blob[: len(blob) - cut]), compress=False)
        try:
            read_idx(path)
        except IDXError as e:
            assert "fuzz.gz" in str(e)


@settings(max_examples=150, deadline=HANG_GUARD)
@given(
    st.just(0x08) | st.integers(0, 255),
    st.none() | st.integers(0, 255),  # None: the number of dims given, so the header is coherent
    st.lists(st.integers(0, 2**32 - 1), max_size=4),
    st.binary(max_size=64),
    st.booleans(),
)
def test_any_header_is_parsed_or_refused_without_allocating_its_claim(
    type_code: int, ndim: int | None, dims: list[int], body: bytes, compress: bool
) -> None:
    ndim = len(dims) if ndim is None else ndim
    header = bytes([0, 0, type_code, ndim]) + struct.pack(f">{len(dims)}I", *dims)
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / "fuzz", header + body, compress=compress)
        try:
            arr = read_idx(path)
        except IDXError as e:
            assert "fuzz" in str(e)
        else:  # only a header that tells the truth parses
            assert (type_code, ndim) == (0x08, len(dims)) and arr.shape == tuple(dims)
            assert arr.tobytes() == body
        assert peak_bytes_while(lambda: read_idx(path)) < SMALL_FILE_PEAK


@pytest.mark.real_data
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="no local MNIST copy")
def test_real_mnist() -> None:
    train_x = load_images(MNIST_DIR / "train-images-idx3-ubyte.gz")
    train_y = load_labels(MNIST_DIR / "train-labels-idx1-ubyte.gz")
    test_x = load_images(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    test_y = load_labels(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert train_x.shape == (60000, 28, 28) and train_y.shape == (60000,)
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
    counts = np.bincount(train_y, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
