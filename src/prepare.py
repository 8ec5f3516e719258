"""Fetch or generate a task's data into its cache, without training: the DVC data stages.

    python -m src.prepare data=mnist                  # data/mnist/raw/*.gz and data/mnist/mnist.pt
    python -m src.prepare data=multiply profile=quick # data/multiply/<variant>-n...-seed....pt

It composes conf/train.yaml exactly as `python -m src.train` does and calls the DataModule's
`prepare_data`, which training calls too (and then finds everything in place).
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.cli_errors import exit_on_user_error
from src.config_checks import check_config


def prepare(cfg: DictConfig) -> None:
    check_config(cfg)
    instantiate(cfg.data, shuffle_seed=cfg.seed).prepare_data()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        prepare(cfg)
    print(f"seqlab: {cfg.data.name} data ready under {cfg.paths.data_dir}", flush=True)


if __name__ == "__main__":
    main()
