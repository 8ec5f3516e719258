"""Evaluate a trained checkpoint on a split, with the config its run was trained with.

    python -m src.eval ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt
    python -m src.eval paths.run_dir=outputs/runs/<run> ckpt_path=last split=val
    python -m src.eval ckpt_path=<file> data.seed=7         # freshly generated test data

Prints the metrics and writes them to metrics.json (default: <run dir>/eval/<ckpt>-<split>/).
On the test split of the trained data they equal what training reported for that checkpoint.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from src.config import CONF_DIR
from src.config.cli import run_main
from src.config.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        from src.training.evaluation import command_overrides, evaluate

        evaluate(cfg, command_overrides())


def cli() -> None:
    """The console script `seqlab-eval`."""
    run_main(main, "src.eval", "eval", __doc__ or "", of_a_checkpoint=True)


if __name__ == "__main__":
    cli()
