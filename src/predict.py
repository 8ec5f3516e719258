"""Write a trained checkpoint's predictions for every sample of a split to CSV.

    python -m src.predict ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt
    python -m src.predict paths.run_dir=outputs/runs/<run> ckpt_path=best split=val

Columns: multiplication problem: index, target, prediction, abs_error; MNIST: index, true_label,
predicted_label, prob_0 ... prob_9. Default file: <run dir>/predictions/<ckpt>-<split>.csv.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from src.config import CONF_DIR
from src.config.cli import run_main
from src.config.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        from src.training.evaluation import command_overrides, write_predictions

        write_predictions(cfg, command_overrides())


def cli() -> None:
    """The console script `seqlab-predict`."""
    run_main(main, "src.predict", "predict", __doc__ or "", of_a_checkpoint=True)


if __name__ == "__main__":
    cli()
