"""A trained checkpoint on one split: its metrics (`python -m src.eval`) or its predictions for
every sample as CSV (`python -m src.predict`), with the config its run was trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.atomic import atomic_write_text, write_json
from src.config.errors import ConfigError
from src.config.instantiate import instantiate_group
from src.data.chars import greedy_continuation
from src.models.inference import SplitOutputs, predict_split
from src.training.restore import RestoredRun, restore_run


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


def per_step_csv(task: str, outputs: SplitOutputs) -> str:
    """One row per sequence and step: the target and the prediction (classes, or for multilabel
    the possible next symbols as 0/1 strings)."""
    lines = ["index,step,target,prediction"]
    for index, (target, output) in enumerate(zip(outputs.targets, outputs.outputs, strict=True)):
        if task == "multilabel":
            wanted = ["".join(str(int(v)) for v in row) for row in target.tolist()]
            predicted = ["".join(str(int(v > 0)) for v in row) for row in output.tolist()]
        else:
            wanted, predicted = target.tolist(), output.argmax(dim=-1).tolist()
        lines += [
            f"{index},{step},{w},{p}"
            for step, (w, p) in enumerate(zip(wanted, predicted, strict=True))
        ]
    return "\n".join(lines) + "\n"


def predictions_csv(task: str, outputs: SplitOutputs) -> str:
    if outputs.outputs.dim() == 3:
        return per_step_csv(task, outputs)
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


def write_continuation(run: RestoredRun, prompt: str, length: int) -> str:
    """The greedy continuation of `prompt` by a character model (data=chars): printed."""
    if run.cfg.data.get("name") != "chars":
        raise ConfigError(
            f"prompt= continues a text, which only a data=chars model can: this checkpoint is "
            f"of data={run.cfg.data.get('name')}. Fix: drop prompt=, or give a chars checkpoint."
        )
    text = greedy_continuation(run.module.net, prompt, length)
    print(f"seqlab: {prompt!r} continues as {text!r}")
    return text


def write_predictions(command: DictConfig, overrides: list[str]) -> Path | str:
    if command.get("num_threads"):
        torch.set_num_threads(command.num_threads)
    run = restore_run(command, overrides)
    if command.get("prompt") is not None:
        return write_continuation(run, str(command.prompt), int(command.length))
    outputs = predict_split(run.module, run.datamodule, command.split)
    default = run.home / "predictions" / f"{run.checkpoint.stem}-{command.split}.csv"
    path = Path(command.output or default)
    atomic_write_text(path, predictions_csv(run.cfg.data.task, outputs))
    print(f"seqlab: {len(outputs.targets)} {command.split} predictions written to {path}")
    return path
