"""Train and test one recurrent model on one task: `python -m src.train` (or `seqlab-train`).

    python -m src.train                                    # GRU, multiplication, classic protocol
    python -m src.train model=lstm data=multiply seed=3 trainer.max_epochs=20
    python -m src.train model=rnn model.hidden_size=64 model.num_layers=3
    python -m src.train model=gru data=mnist               # sequential MNIST, rows
    python -m src.train profile=quick                      # 2 short epochs: does it all run?
    python -m src.train -m model=rnn,lstm,gru seed=1,2,3   # a sweep, one job per combination
    python -m src.sweeps.rerun outputs/multirun/<time>     # its failed jobs, run again
    python -m src.train paths.run_dir=<run dir> ckpt_path=last   # resume an interrupted run
    python -m src.train --cfg job                          # print the composed config

Each run writes to its own directory: config.yaml, train.log, csv/metrics.csv, checkpoints/
{best,last}.ckpt, metrics.json and plots. The config (conf/train.yaml) is composed and checked
before torch or Lightning is imported, so a mistake is answered at once.

Where the code is: src/data (tasks, batches) -> src/models (nn.Module, LightningModule) ->
src/training (the run, callbacks, checkpoints, resume, signals) -> src/tracking (run directory,
loggers, plots); src/config checks the config and explains mistakes.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from src.config import CONF_DIR
from src.config.checks import check_config
from src.config.cli import run_main
from src.config.errors import exit_on_user_error
from src.sweeps.jobs import FailedJob, run_job


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | FailedJob | None:
    """The metric sweepers optimize; in a multirun, a failed job's record instead."""
    return run_job(cfg, checked_run)


def checked_run(cfg: DictConfig) -> dict[str, Any]:
    with exit_on_user_error():
        check_config(cfg)
        # Only a run that trains pays for Lightning's import.
        from src.training.failures import exit_on_run_failure
        from src.training.run import train

        with exit_on_run_failure():
            return train(cfg)


def cli() -> None:
    """The console script `seqlab-train`, which Hydra's shell completion can call."""
    run_main(main, "src.train", "train", __doc__ or "")


if __name__ == "__main__":
    cli()
