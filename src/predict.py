"""Write a trained checkpoint's predictions for every sample of a split to CSV.

    python -m src.predict ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt
    python -m src.predict paths.run_dir=outputs/runs/<run> ckpt_path=best split=val

Columns: multiplication problem: index, target, prediction, abs_error; MNIST: index, true_label,
predicted_label, prob_0 ... prob_9. Default file: <run dir>/predictions/<ckpt>-<split>.csv.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from src.cli_errors import exit_on_user_error
from src.eval import command_overrides
from src.inference import SplitOutputs, predict_split
from src.override_hints import run_main
from src.restore import restore_run
from src.run_dir import atomic_write_text


def predictions_csv(task: str, outputs: SplitOutputs) -> str:
    if task == "regression":
        targets, predictions = outputs.targets.flatten(), outputs.outputs.flatten()
        errors = (predictions - targets).abs()
        lines = ["index,target,prediction,abs_error"]
        lines += [
            f"{i},{t:.9g},{p:.9g},{e:.9g}"
            for i, (t, p, e) in enumerate(
                zip(targets.tolist(), predictions.tolist(), errors.tolist(), strict=True)
            )
        ]
    else:
        probabilities = torch.softmax(outputs.outputs.float(), dim=-1)
        classes = probabilities.shape[-1]
        header = ",".join(f"prob_{c}" for c in range(classes))
        lines = [f"index,true_label,predicted_label,{header}"]
        lines += [
            f"{i},{label},{row.index(max(row))}," + ",".join(f"{p:.6g}" for p in row)
            for i, (label, row) in enumerate(
                zip(outputs.targets.tolist(), probabilities.tolist(), strict=True)
            )
        ]
    return "\n".join(lines) + "\n"


def predict(command: DictConfig, overrides: list[str]) -> Path:
    if command.get("num_threads"):
        torch.set_num_threads(command.num_threads)
    run = restore_run(command, overrides)
    outputs = predict_split(run.module, run.datamodule, command.split)
    default = run.home / "predictions" / f"{run.checkpoint.stem}-{command.split}.csv"
    path = Path(command.output or default)
    atomic_write_text(path, predictions_csv(run.cfg.data.task, outputs))
    print(f"seqlab: {len(outputs.targets)} {command.split} predictions written to {path}")
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        predict(cfg, command_overrides())


if __name__ == "__main__":
    run_main(main, "predict")
