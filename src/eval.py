"""Evaluate a trained checkpoint on a split, with the config its run was trained with.

    python -m src.eval ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt
    python -m src.eval paths.run_dir=outputs/runs/<run> ckpt_path=last split=val
    python -m src.eval ckpt_path=<file> data.seed=7         # freshly generated test data

Prints the metrics and writes them to metrics.json (default: <run dir>/eval/<ckpt>-<split>/).
On the test split of the trained data they equal what training reported for that checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.cli_errors import exit_on_user_error
from src.instantiation import instantiate_group
from src.override_hints import run_main
from src.restore import RestoredRun, restore_run
from src.run_dir import write_json


def command_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def evaluate(command: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Test the checkpoint on `command.split`; returns the metrics and writes metrics.json."""
    if command.get("num_threads"):
        torch.set_num_threads(command.num_threads)
    run = restore_run(command, overrides)
    L.seed_everything(run.cfg.seed, verbose=False)
    # The chosen split is served as the test split, so Lightning's test loop evaluates it.
    run.datamodule.splits = {**run.datamodule.splits, "test": run.datamodule.splits[command.split]}
    trainer: L.Trainer = instantiate_group(
        run.cfg.trainer,
        "trainer",
        # One process, whatever the run trained with: a DDP launch would re-run this command
        # per rank, each writing metrics.json.
        devices=1,
        num_nodes=1,
        strategy="auto",
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    tested = trainer.test(run.module, datamodule=run.datamodule, verbose=False)[0]
    metrics = {f"{command.split}/{key.split('/', 1)[1]}": float(v) for key, v in tested.items()}
    results = {
        **metrics,
        "checkpoint": str(run.checkpoint),
        "split": command.split,
        "overrides": [o for o in overrides if not o.startswith("ckpt_path=")],
    }
    output_dir = Path(command.output_dir or eval_dir(run, command.split))
    write_json(output_dir / "metrics.json", results)
    print_metrics(run, metrics, output_dir / "metrics.json")
    return results


def eval_dir(run: RestoredRun, split: str) -> Path:
    return run.home / "eval" / f"{run.checkpoint.stem}-{split}"


def print_metrics(run: RestoredRun, metrics: dict[str, float], written: Path) -> None:
    lines = [f"seqlab: {run.cfg.model.cell} on {run.cfg.data.name}, checkpoint {run.checkpoint}"]
    lines += [f"  {key:<28} {value:.6g}" for key, value in sorted(metrics.items())]
    lines.append(f"  {'written to':<28} {written}")
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        evaluate(cfg, command_overrides())


if __name__ == "__main__":
    run_main(main, "eval")
