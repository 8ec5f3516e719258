import json

import pytest
import torch

from src.config.errors import ConfigError
from src.data.in_memory import TensorBatchSampler
from src.tracking.run_dir import RUN_DIR_ENV_VAR, create_run_dir, is_launch_rank_zero
from src.training.run import train
from tests.conftest import CONF, run_cli, run_command

# 441 test sequences and 50 validation sequences: neither divides by the 2 ranks.
ODD_SPLITS = [
    "data.seq_len=10",
    "data.num_sequences=691",
    "data.num_fit=250",
    "num_threads=1",
    "trainer.max_epochs=2",
]
RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


@pytest.fixture
def clean_rank_env(monkeypatch):
    for name in (*RANK_VARS, RUN_DIR_ENV_VAR):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.slow
def test_ddp_cpu_evaluates_every_sequence_once_and_trains_as_one_process(tmp_path, compose_cfg):
    result = run_cli(
        "trainer=ddp_cpu",
        *ODD_SPLITS,
        f"paths.output_dir={tmp_path / 'ddp'}",
        "trainer.enable_progress_bar=false",
        "~callbacks.model_summary",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "ddp" / "runs").iterdir()
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    # Rank 1 writes nothing: train.log holds one process's log.
    assert (run_dir / "train.log").read_text().count("run directory:") == 1
    ddp = json.loads((run_dir / "metrics.json").read_text())
    assert (ddp["test_samples"], ddp["val_samples"]) == (441, 50)
    correct = ddp["test/tolerance_accuracy"] * 441
    assert correct == pytest.approx(round(correct), abs=1e-3)
    assert ddp["test/loss"] == pytest.approx(ddp["test/mse"], rel=1e-6)

    # data.batch_size is global, so 2 ranks take the same steps as one process.
    single = train(compose_cfg("trainer=cpu", *ODD_SPLITS))
    for key in ("test/mse", "test/mae", "test/tolerance_accuracy", "best_val/mse"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-4), key


def test_a_multirun_with_ddp_stops_at_once_and_says_what_to_use(tmp_path):
    result = run_command(
        "src.train", "-m", "trainer=ddp_cpu", "seed=1,2", f"paths.output_dir={tmp_path}"
    )
    assert result.returncode == 2
    assert "multirun" in result.stderr and "one job per command" in result.stderr
    assert "hydra/launcher=slurm" in result.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


def test_ddp_that_would_rerun_another_program_is_refused(compose_cfg):
    # Here the command line is pytest's: re-running it for rank 1 would run the tests again.
    with pytest.raises(ConfigError, match=r"python -m src\.train"):
        train(compose_cfg("trainer=ddp_cpu", *ODD_SPLITS))


def test_spawning_strategies_whose_results_would_be_lost_are_refused(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match="use trainer=ddp"):
        train(compose_cfg("trainer=ddp_cpu", "trainer.strategy=ddp_spawn", *ODD_SPLITS))
    assert not (tmp_path / "outputs").exists()


def test_the_global_batch_must_divide_by_the_world_size(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.batch_size=33 .* divide by 2"):
        train(compose_cfg("trainer=ddp_cpu", "data.batch_size=33", *ODD_SPLITS))
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("world_size", [2, 4])
def test_the_ranks_kth_batches_together_are_the_single_process_kth_batch(world_size):
    num_samples, global_batch = 103, 8
    single = list(TensorBatchSampler(num_samples, global_batch, shuffle=True, seed=5))
    shards = [
        list(
            TensorBatchSampler(
                num_samples,
                global_batch // world_size,
                shuffle=True,
                seed=5,
                rank=rank,
                world_size=world_size,
                even_shards=True,
            )
        )
        for rank in range(world_size)
    ]
    full_steps = num_samples // global_batch
    for step in range(full_steps):
        together = torch.cat([shard[step] for shard in shards])
        assert sorted(together.tolist()) == sorted(single[step].tolist())


@pytest.mark.parametrize(
    ("env", "rank_zero"),
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),
        ({"RANK": "3", "LOCAL_RANK": "0"}, False),
        ({"LOCAL_RANK": "1"}, False),
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
        ({"LOCAL_RANK": "1", "SLURM_PROCID": "0"}, False),
        ({"SLURM_PROCID": "2"}, False),
    ],
)
def test_rank_zero_is_read_from_what_launchers_set(clean_rank_env, env, rank_zero):
    for name, value in env.items():
        clean_rank_env.setenv(name, value)
    assert is_launch_rank_zero() is rank_zero


def test_ranks_above_zero_use_rank_zeros_directory_and_create_nothing(
    clean_rank_env, compose_cfg, tmp_path
):
    shared = tmp_path / "rank0-dir"
    clean_rank_env.setenv("LOCAL_RANK", "1")
    clean_rank_env.setenv(RUN_DIR_ENV_VAR, str(shared))
    assert create_run_dir(compose_cfg()) == shared
    clean_rank_env.delenv(RUN_DIR_ENV_VAR)
    clean_rank_env.setenv("RANK", "1")
    create_run_dir(compose_cfg())
    assert not shared.exists() and not (tmp_path / "outputs").exists()


def test_every_trainer_preset_composes(compose_cfg):
    presets = {p.stem for p in (CONF / "trainer").glob("*.yaml")}
    assert {"cpu", "gpu", "ddp", "ddp_cpu", "ddp_multinode"} <= presets
    cfg = compose_cfg("trainer=ddp_multinode")
    assert (cfg.trainer.strategy, cfg.trainer.num_nodes, cfg.trainer.devices) == ("ddp", 2, 4)
    assert compose_cfg("trainer=ddp_cpu").trainer.devices == 2


@pytest.mark.slow
def test_a_loss_diverged_on_one_rank_stops_every_rank(tmp_path):
    # Rank 1's weights go NaN after batch 14, so its loss at batch 15, where the guard reads, is
    # NaN while rank 0's is not yet: both ranks must stop there, not rank 1 alone.
    done = run_cli(
        "trainer=ddp_cpu",
        "num_threads=1",
        "steps_per_call=1",
        "data.seq_len=10",
        "data.num_sequences=1300",
        "data.num_fit=1280",
        "trainer.max_epochs=1",
        f"paths.run_dir={tmp_path / 'run'}",
        "+callbacks.poison._target_=tests.conftest.PoisonWeights",
        "+callbacks.poison.epoch=0",
        "+callbacks.poison.batch=14",
        "+callbacks.poison.rank=1",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "the training loss became nan at epoch 0, batch 15" in done.stderr
    assert "the training loss became NaN or infinite on another rank in epoch 0" in done.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
