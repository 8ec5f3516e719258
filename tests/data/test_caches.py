"""Damaged data caches (the multiplication data, MNIST's mnist.pt): detected, rebuilt with a
warning and replaced atomically, or refused with a clear message when they cannot be."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from src.data.mnist import MNISTDataModule
from src.data.multiply import MultiplicationDataModule, generate
from src.data.tensor_cache import CacheError, load_cache
from tests.conftest import write_fake_mnist


def flip_byte_of(needle: bytes) -> Callable[[Path], None]:
    """Flip one byte inside `needle`, the raw bytes of a cached tensor: torch.load still reads
    the file, only the checksum can tell."""

    def damage(path: Path) -> None:
        blob = bytearray(path.read_bytes())
        at = blob.find(needle)
        assert at >= 0, "the tensor's bytes are not stored as such"
        blob[at + len(needle) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))

    return damage


def damages(needle: bytes) -> dict[str, Callable[[Path], None]]:
    def write(data: bytes) -> Callable[[Path], None]:
        return lambda path: path.write_bytes(data)

    return {
        "truncated": lambda path: path.write_bytes(path.read_bytes()[:1000]),
        "garbage": write(b"<html>not a tensor file</html>" * 10),
        "empty": write(b""),
        "flipped byte": flip_byte_of(needle),
        "old layout": lambda path: torch.save({"params": {}, "tensors": {}}, path),
        "other object": lambda path: torch.save([1, 2, 3], path),
    }


MULTIPLY = {"num_sequences": 300, "num_fit": 250, "seq_len": 10}
EXPECTED = generate("classic", 300, 10, seed=1997)
MULTIPLY_DAMAGES = damages(EXPECTED.targets.numpy().tobytes())


def multiply_module(cache: Path) -> MultiplicationDataModule:
    return MultiplicationDataModule(**MULTIPLY, cache_file=cache)


def assert_intact_cache_alone(cache: Path) -> None:
    """The cache reads back without a warning and nothing else (no temporary file) is beside it."""
    assert load_cache(cache, None, rebuild="-") is not None
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]


@pytest.mark.parametrize("damage", MULTIPLY_DAMAGES)
def test_damaged_multiply_cache_is_regenerated_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    cache = tmp_path / "multiply" / "data.pt"
    multiply_module(cache).prepare_data()
    MULTIPLY_DAMAGES[damage](cache)
    caplog.set_level(logging.INFO, logger="src.data.tensor_cache")
    dm = multiply_module(cache)
    dm.prepare_data()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(str(cache)) and warnings[0].endswith("regenerating it")
    caplog.clear()
    dm.setup("fit")  # reads the regenerated file back, silently
    assert caplog.records == []
    assert torch.equal(dm.splits["test"].tensors["y"], EXPECTED.targets[250:])
    assert_intact_cache_alone(cache)


def test_multiply_cache_damaged_after_prepare_is_regenerated_by_setup(tmp_path: Path) -> None:
    cache = tmp_path / "data.pt"
    dm = multiply_module(cache)
    dm.prepare_data()
    MULTIPLY_DAMAGES["truncated"](cache)
    dm.setup("fit")
    assert torch.equal(dm.splits["train"].tensors["x"], EXPECTED.inputs[:200])
    assert_intact_cache_alone(cache)


def test_a_cache_that_cannot_be_replaced_is_refused_clearly(tmp_path: Path) -> None:
    # A directory where the cache file should be: unreadable, and no rename can replace it.
    cache = tmp_path / "multiply" / "data.pt"
    (cache / "something").mkdir(parents=True)
    with pytest.raises(CacheError) as info:
        multiply_module(cache).prepare_data()
    msg = str(info.value)
    assert f"cannot write the data cache {cache}" in msg and f"remove {cache}" in msg
    assert [p.name for p in cache.parent.iterdir()] == ["data.pt"]  # no temporary file left
    assert [p.name for p in cache.iterdir()] == ["something"]


@pytest.fixture
def mnist(tmp_path: Path) -> Callable[[], MNISTDataModule]:
    mirror = tmp_path / "mirror"
    checksums = write_fake_mnist(mirror, train=60, test=20)
    return lambda: MNISTDataModule(
        data_dir=tmp_path / "data", local_mirror=str(mirror), checksums=checksums, val_size=10
    )


def mnist_damages(dm: MNISTDataModule) -> dict[str, Callable[[Path], None]]:
    labels = torch.load(dm.cache_path, weights_only=True)["tensors"]["train_labels"]
    return damages(labels.numpy().tobytes())


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "flipped byte", "old layout"])
@pytest.mark.parametrize("found_by", ["prepare_data", "setup"])
def test_damaged_mnist_cache_is_rebuilt_from_the_raw_files(
    mnist: Callable[[], MNISTDataModule],
    caplog: pytest.LogCaptureFixture,
    damage: str,
    found_by: str,
) -> None:
    dm = mnist()
    dm.prepare_data()
    dm.setup("fit")
    expected = {split: ds.tensors["y"] for split, ds in dm.splits.items()}
    raw = {p.name: p.read_bytes() for p in (dm.root / "raw").iterdir()}
    mnist_damages(dm)[damage](dm.cache_path)
    caplog.set_level(logging.WARNING, logger="src.data")
    dm = mnist()
    if found_by == "prepare_data":
        dm.prepare_data()
    dm.setup("fit")
    (warning,) = (r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert warning.startswith(str(dm.cache_path))
    assert warning.endswith("rebuilding it from the verified MNIST files")
    assert {split: ds.tensors["y"].tolist() for split, ds in dm.splits.items()} == {
        split: y.tolist() for split, y in expected.items()
    }
    assert sorted(p.name for p in dm.root.iterdir()) == ["mnist.pt", "raw"]
    assert {p.name: p.read_bytes() for p in (dm.root / "raw").iterdir()} == raw
    assert load_cache(dm.cache_path, None, rebuild="-") is not None
