"""Whatever file is given as a checkpoint, loading it ends in a CheckpointError that says what is
wrong, never in an exception from deep inside torch's unpickler."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.training.checkpoints import CheckpointError, load_checkpoint

EXAMPLES = 300
# Each example writes its own file name over the last one; sharing tmp_path is harmless.
TMP_PATH_IS_SHARED = [HealthCheck.function_scoped_fixture]


@pytest.mark.parametrize(
    "content",
    [b"hello world\n", b"hello", b"x", b"", b"\x80\x02}q\x00.", b"PK\x03\x04garbage"],
    ids=["text", "hello", "one-byte", "empty", "pickle-of-a-dict", "zip-magic"],
)
def test_a_file_that_is_no_checkpoint_is_refused_in_one_sentence(tmp_path: Path, content: bytes):
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"model\.ckpt") as refused:
        load_checkpoint(path)
    assert "\n" not in str(refused.value)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(content=st.binary(max_size=2048))
def test_random_bytes_as_a_checkpoint_end_in_a_checkpoint_error(tmp_path: Path, content: bytes):
    path = tmp_path / "random.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def _real_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, buffer)
    return buffer.getvalue()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_a_damaged_real_checkpoint_loads_whole_or_is_refused(tmp_path: Path, data):
    original = bytearray(_real_checkpoint())
    start = data.draw(st.integers(0, len(original) - 1))
    length = data.draw(st.integers(1, 64))
    original[start : start + length] = data.draw(st.binary(min_size=length, max_size=length))
    cut = data.draw(st.integers(1, len(original)))
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(bytes(original[:cut]))
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError:
        return
    assert torch.equal(checkpoint["state_dict"]["w"], torch.ones(3))  # nothing silently wrong


def test_the_real_checkpoint_of_the_damage_test_loads(tmp_path: Path):
    path = tmp_path / "whole.ckpt"
    path.write_bytes(_real_checkpoint())
    assert zipfile.is_zipfile(path) and load_checkpoint(path)["epoch"] == 0
