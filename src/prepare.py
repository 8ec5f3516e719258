"""Fetch or generate a task's data into its cache, without training: the DVC data stages.

    python -m src.prepare data=mnist                  # data/mnist/raw/*.gz and data/mnist/mnist.pt
    python -m src.prepare data=multiply profile=quick # data/multiply/<variant>-n...-seed....pt

It composes conf/train.yaml exactly as `python -m src.train` does and calls the DataModule's
`prepare_data`, which training calls too (and then finds everything in place).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.config_checks import ConfigError, check_config
from src.data.idx import IDXError
from src.data.mnist_files import MNISTFetchError


def prepare(cfg: DictConfig) -> None:
    check_config(cfg)
    instantiate(cfg.data, shuffle_seed=cfg.seed).prepare_data()


@contextmanager
def user_errors() -> Iterator[None]:
    """Exit as `python -m src.train` does, without a traceback (neither is a bug): 2 with the
    message for a config mistake, 1 for data that cannot be had."""
    try:
        yield
    except ConfigError as error:
        _exit("config error", error, 2)
    except (MNISTFetchError, IDXError) as error:
        _exit("data error", error, 1)


def _exit(label: str, error: Exception, status: int) -> NoReturn:
    print(f"seqlab: {label}: {error}", file=sys.stderr)
    raise SystemExit(status) from None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    with user_errors():
        prepare(cfg)
    print(f"seqlab: {cfg.data.name} data ready under {cfg.paths.data_dir}", flush=True)


if __name__ == "__main__":
    main()
