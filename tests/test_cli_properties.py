"""Property tests of the command line itself: whatever a user types or points it at, a command
ends in exit 0, or in one line on stderr and a non-zero status; never a traceback, and never a
half-written file.

Each command runs in this process, as its console script does (tests/conftest.run_command). The
inputs: random override strings, values of the wrong type for every checked key, unknown
groups and options, random files as checkpoints (for train, eval and predict), and random bytes
as data caches: 295 per run of the suite, and `SEQLAB_FUZZ_SCALE=10` tries ten times as many.
A run that the input leaves valid trains one batch of the quick config, into a temporary
directory. `pytest --hypothesis-show-statistics` gives the number of inputs tried.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from src.config import config_groups
from src.config.checks import RULES
from src.data.tensor_cache import load_cache
from tests.conftest import QUICK, Done, run_command

# Whatever comes first, these come last and win: a run the input leaves valid is one batch.
ONE_BATCH = [
    *QUICK,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
]
# Keys the inputs leave alone: where files go, and what keeps a valid run to one batch.
UNTOUCHED = ("paths", "profile", "data.seq_len", "data.num_sequences", "data.num_fit", "trainer.")

# SEQLAB_FUZZ_SCALE=10 tries ten times as many inputs of each kind.
FUZZ_SCALE = int(os.environ.get("SEQLAB_FUZZ_SCALE", "1"))


def tries(count: int) -> settings:
    return settings(
        max_examples=count * FUZZ_SCALE,
        deadline=timedelta(seconds=60),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One data directory for every input: its multiplication cache is made once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory) -> Path:
    """A real checkpoint of a quick run, to damage."""
    output = tmp_path_factory.mktemp("run")
    done = run_command("src.train", *ONE_BATCH, *paths(output, data_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = (output / "runs").iterdir()
    return run_dir / "checkpoints" / "last.ckpt"


def paths(output: Path, data_dir: Path) -> list[str]:
    return [f"paths.output_dir={output}", f"paths.data_dir={data_dir}"]


@contextlib.contextmanager
def fresh_directory() -> Iterator[Path]:
    """A fresh output directory for each input: a pytest fixture would be one per test, shared
    by every input hypothesis tries."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def assert_ends_well(done: Done, *folders: Path) -> None:
    """Exit 0, or exactly one `seqlab:` line on stderr and a non-zero status; no traceback,
    and no temporary file left in `folders`."""
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.startswith("seqlab:")]
        assert len(said) == 1, done.stderr[-3000:]
        assert done.stderr.strip().splitlines()[-1] == said[0]
    for folder in folders:
        assert not [p for p in folder.rglob("*.tmp")], list(folder.rglob("*"))


def train(workspace: Path, data_dir: Path, *overrides: str) -> Done:
    return run_command("src.train", *overrides, *ONE_BATCH, *paths(workspace, data_dir))


def assert_refused_leaves_nothing(done: Done, workspace: Path) -> None:
    """A refused config leaves no run directory behind (a run that fails later keeps its own)."""
    if "seqlab: config error" in done.stderr:
        assert not (workspace / "runs").exists(), list((workspace / "runs").iterdir())


# The harness's own data overrides (QUICK) are the multiplication problem's keys, which another
# task refuses, one line each: not the input's mistake. Hypothesis draws such strings from the
# string literals of the code loaded ("data=mnist"), so it finds them.
OTHER_TASKS = tuple(f"data={task}" for task in config_groups()["data"] if task != "multiply")
OVERRIDE_TEXT = st.text(
    alphabet=st.sampled_from("abcdeilmnoprstuz._/=+~,:[]{}()'\"$ \\-*0123456789é"),
    min_size=1,
    max_size=24,
).filter(lambda text: not text.lstrip("+~").startswith((*UNTOUCHED, *OTHER_TASKS)))


@tries(200)
@given(override=OVERRIDE_TEXT)
def test_any_override_string_ends_in_exit_0_or_one_line(override, data_dir):
    with fresh_directory() as workspace:
        done = train(workspace, data_dir, override)
        assert_ends_well(done, workspace, data_dir)
        assert_refused_leaves_nothing(done, workspace)


CHECKED_KEYS = [rule.key for rule in RULES if not rule.key.startswith(UNTOUCHED)]
WRONG_VALUES = st.one_of(
    st.sampled_from(["abc", "null", "true", "[]", "[1,2]", "{a:1}", "-1", "0", "1e400", "nan"]),
    st.sampled_from(["inf", "-inf", "'3'", "2**70", "1_000", "0x10", "${seed}", "${nope}"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False).map(repr),
    st.text(alphabet="abcxyz019.-", min_size=1, max_size=6),
)


# A model between these sizes is a valid config that fits in memory, but building it alone can
# take minutes (hidden_size=9564: the orthogonal init's QR of a 28,692 x 9,564 matrix), past the
# test's deadline. Larger ones are refused by the memory check at once, and stay in the test.
MODEL_SIZE_KEYS = ("model.hidden_size", "model.num_layers")
SLOW_BUT_VALID_SIZES = range(1025, 2**20 + 1)


def too_slow_to_try(key: str, value: str) -> bool:
    return key in MODEL_SIZE_KEYS and value.isdigit() and int(value) in SLOW_BUT_VALID_SIZES


@tries(30)
@given(key=st.sampled_from(CHECKED_KEYS), value=WRONG_VALUES)
def test_a_value_of_any_type_for_any_key_ends_in_exit_0_or_one_line(key, value, data_dir):
    assume(not too_slow_to_try(key, value))
    with fresh_directory() as workspace:
        done = train(workspace, data_dir, f"{key}={value}")
        assert_ends_well(done, workspace, data_dir)
        assert_refused_leaves_nothing(done, workspace)


NAME = st.text(alphabet="abcdefghilmnoprstuvz_", min_size=1, max_size=10)


@tries(20)
@given(
    group=st.one_of(NAME, st.sampled_from(["model", "optimizer", "scheduler", "callbacks"])),
    option=NAME,
    nested=st.booleans(),
)
def test_an_unknown_group_or_option_is_refused_in_one_line(group, option, nested, data_dir):
    with fresh_directory() as workspace:
        key = f"{group}/{option}" if nested else group
        done = train(workspace, data_dir, f"{key}={option}")
        assert done.returncode != 0
        assert_ends_well(done, workspace, data_dir)
        assert not (workspace / "runs").exists()


def damaged(original: bytes, data: st.DataObject) -> bytes:
    how = data.draw(st.sampled_from(["random", "truncated", "flipped"]))
    if how == "random":
        return data.draw(st.binary(max_size=2048))
    if how == "truncated":
        return original[: data.draw(st.integers(0, len(original) - 1))]
    position = data.draw(st.integers(0, len(original) - 1))
    return original[:position] + bytes([original[position] ^ 0xFF]) + original[position + 1 :]


@tries(30)
@given(data=st.data(), command=st.sampled_from(["src.eval", "src.predict", "src.train"]))
def test_any_file_as_a_checkpoint_ends_in_one_line(data, command, data_dir, checkpoint):
    with fresh_directory() as workspace:
        path = workspace / "given.ckpt"
        path.write_bytes(damaged(checkpoint.read_bytes(), data))
        if command == "src.train":
            done = train(workspace, data_dir, f"ckpt_path={path}")
        else:
            done = run_command(command, f"ckpt_path={path}", *paths(workspace, data_dir))
        # A flipped byte in a part torch never reads can leave the checkpoint usable: then exit 0.
        assert_ends_well(done, workspace, data_dir)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A data directory holding the quick config's multiplication cache."""
    data_dir = tmp_path_factory.mktemp("prepared")
    done = run_command("src.prepare", *QUICK, f"paths.data_dir={data_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    return data_dir


@tries(15)
@given(data=st.data())
def test_random_bytes_as_a_data_cache_are_rebuilt(data, prepared):
    with fresh_directory() as workspace:
        data_dir = workspace / "data"
        shutil.copytree(prepared, data_dir)
        (cache,) = data_dir.rglob("*.pt")
        good = load_cache(cache, None, rebuild="")
        assert good is not None
        cache.write_bytes(damaged(cache.read_bytes(), data))

        again = run_command("src.prepare", *QUICK, f"paths.data_dir={data_dir}")
        assert again.returncode == 0, again.stderr[-2000:]
        assert_ends_well(again, data_dir)
        rebuilt = load_cache(cache, None, rebuild="")
        assert rebuilt is not None and rebuilt.keys() == good.keys()
        assert all(torch.equal(rebuilt[name], good[name]) for name in good)
