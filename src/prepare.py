"""Fetch or generate a task's data into its cache, without training: the DVC data stages.

    python -m src.prepare data=mnist       # data/mnist/raw/*.gz and data/mnist/mnist.pt
    python -m src.prepare data=multiply    # data/multiply/<variant>-n...-seed....pt

It composes conf/train.yaml exactly as `python -m src.train` does and calls the DataModule's
`prepare_data`, which training calls too (and then finds everything in place).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from src.config import CONF_DIR
from src.config.checks import check_config
from src.config.cli import run_main
from src.config.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        check_config(cfg)
        from hydra.utils import instantiate

        instantiate(cfg.data, shuffle_seed=cfg.seed).prepare_data()
    print(f"seqlab: {cfg.data.name} data ready under {cfg.paths.data_dir}", flush=True)


def cli() -> None:
    """The console script `seqlab-prepare`."""
    run_main(main, "src.prepare", "train", __doc__ or "")


if __name__ == "__main__":
    cli()
