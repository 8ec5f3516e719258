"""The run's loggers (conf/logger): built into the run directory, fed the run's plots, closed.

Every logger gets `save_dir=<run_dir>`; those whose constructor also takes `resume_step` learn
that the run continues an earlier one from the checkpoint written at that step (None: a fresh
run). Lightning's loggers write from rank zero only, and so does everything here.

`RunCSVLogger` is kept because Lightning's CSVLogger (2.6) deletes metrics.csv when a logger
starts in a directory that has one, so a resumed run would lose its history, and rewrites it in
place, so a kill at that moment loses every row.
"""

from __future__ import annotations

import csv
import inspect
import io
import logging
import sys
from pathlib import Path
from typing import Any

import matplotlib.image
from hydra.utils import get_object
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from src.atomic import atomic_write_text, staged
from src.config.errors import ConfigError
from src.config.instantiate import REFUSALS, instantiate_group, refusal_message
from src.tracking.run_dir import CHECKPOINT_DIRNAME

log = logging.getLogger(__name__)

WANDB_RUN_ID_FILE = "wandb_run_id"


def build_loggers(
    cfg: DictConfig,
    run_dir: Path,
    resume_step: int | None = None,
    resume_row: dict[str, float] | None = None,
) -> list[Logger]:
    """The loggers of conf/logger. A resumed run gives the step of its checkpoint and the epoch
    row stored in it (training/callbacks.py, EpochRowInCheckpoints)."""
    resumed = {"resume_step": resume_step, "resume_row": resume_row}
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        if logger_cfg is None:
            continue
        target = get_object(logger_cfg._target_)
        extra = {key: value for key, value in resumed.items() if _takes(target, key)}
        logger = instantiate_group(logger_cfg, "logger", save_dir=str(run_dir), **extra)
        if isinstance(logger, TensorBoardLogger):
            _open_writer_now(logger)
        loggers.append(logger)
    return loggers


def _open_writer_now(logger: TensorBoardLogger) -> None:
    """TensorBoard's writer takes the logger's extra options only when first used, in the
    middle of fitting: open it here, so an option it refuses is a config error at start."""
    try:
        logger.experiment  # noqa: B018
    except REFUSALS as error:
        raise ConfigError(refusal_message("logger", error)) from None


def _takes(target: Any, parameter: str) -> bool:
    return parameter in inspect.signature(target).parameters


class _AtomicCSVWriter(ExperimentWriter):
    """Lightning's CSV writer deletes metrics.csv when it starts and rewrites it in place when
    a column appears, so a run killed at either moment loses its history. This one keeps every
    row and writes the whole file anew through a temporary file and a rename."""

    def __init__(self, log_dir: str) -> None:
        self.rows: list[dict[str, Any]] = []
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        pass  # keep the file: it is replaced whole at the first save

    def log_hparams(self, params: dict[str, Any]) -> None:
        # hparams.yaml is written when they change, through a temporary file and a rename;
        # Lightning's writer rewrites it in place at every save, a YAML dump of the whole config
        # that cost about 1 % of a short epoch.
        self.hparams.update(params)
        with staged(Path(self.log_dir) / self.NAME_HPARAMS_FILE) as tmp:
            save_hparams_to_yaml(tmp, self.hparams)

    def save(self) -> None:
        if not self.metrics:
            return
        self._record_new_keys()
        self.rows.extend(self.metrics)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.metrics_keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(Path(self.metrics_file_path), text.getvalue())
        self.metrics = []


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run keeps the rows logged before its
    checkpoint (Lightning's deletes the file) and drops those of the epochs it repeats."""

    def __init__(
        self,
        save_dir: str,
        resume_step: int | None = None,
        resume_row: dict[str, float] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(save_dir, **options)
        self._resume_step = resume_step
        self._resume_row = resume_row

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        metrics_csv = Path(self.log_dir) / "metrics.csv"
        resumed = self._resume_step is not None and metrics_csv.is_file()
        kept = _rows_before(metrics_csv, self._resume_step) if resumed else []  # type: ignore[arg-type]
        if self._resume_row is not None and not _has_row(kept, self._resume_row):
            kept.append(dict(self._resume_row))  # killed before Lightning logged it
        self._experiment = _AtomicCSVWriter(log_dir=self.log_dir)
        for row in kept:
            self._experiment.log_metrics(row, step=int(row.pop("step")))  # type: ignore[arg-type]
        self._experiment.save()
        return self._experiment


def _rows_before(metrics_csv: Path, step: int) -> list[dict[str, str]]:
    """The rows logged before `step`, as written (values stay the text they were)."""
    with metrics_csv.open(newline="") as handle:
        rows = [
            {name: value for name, value in row.items() if value} for row in csv.DictReader(handle)
        ]
    return [row for row in rows if int(row.get("step", step)) < step]


def _has_row(rows: list[dict[str, Any]], row: dict[str, Any]) -> bool:
    return any(
        r.get("step") is not None and int(r["step"]) == row["step"] and row.keys() <= r.keys()
        for r in rows
    )


class WandbRunLogger(WandbLogger):
    """Lightning's WandbLogger, plus what a seqlab run needs of it.

    - A resumed run continues the same W&B run: the run's id is kept next to its checkpoints.
    - When online mode cannot reach the server (no key, no network) the run goes on offline,
      into `<run_dir>/wandb`, and says how to upload it later, instead of failing.
    """

    def __init__(self, save_dir: str, resume_step: int | None = None, **options: Any) -> None:
        run_id = _stored_run_id(Path(save_dir)) if resume_step is not None else None
        if run_id is not None:
            options["id"] = run_id
        super().__init__(save_dir=save_dir, **options)
        # Lightning passes `anonymous=None`, which wandb only warns about.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        import wandb

        try:
            return WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]
        except wandb.errors.Error as error:
            if self._wandb_init.get("mode") == "offline":
                raise
            reason = str(error).strip().splitlines()[0]
            self._wandb_init["mode"] = "offline"
            run = WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]
            run_folder = Path(run.dir).parent
            print(
                f"seqlab: W&B cannot log online ({reason}); logging offline to {run_folder}. "
                f"Upload it later with: wandb sync {run_folder}",
                file=sys.stderr,
                flush=True,
            )
            return run

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if checkpoint_callback.dirpath:
            id_file = Path(checkpoint_callback.dirpath) / WANDB_RUN_ID_FILE
            run_id = self.experiment.id + "\n"
            if not id_file.is_file() or id_file.read_text() != run_id:
                atomic_write_text(id_file, run_id)
        super().after_save_checkpoint(checkpoint_callback)

    def _scan_and_log_checkpoints(self, checkpoint_callback: Any) -> None:
        # Lightning tags as `best` whatever file a callback calls its best. For the callback
        # without a monitor, which writes last.ckpt, that is last.ckpt, which, logged after
        # best.ckpt, would take the alias from it: last.ckpt is logged as `latest` only.
        if checkpoint_callback.monitor is not None:
            super()._scan_and_log_checkpoints(checkpoint_callback)
            return
        import wandb

        path = Path(checkpoint_callback.best_model_path or "")
        if not path.is_file() or self._logged_model_time.get(str(path)) == path.stat().st_mtime:
            return
        self._checkpoint_name = self._checkpoint_name or f"model-{self.experiment.id}"
        metadata = {"original_filename": path.name, "monitor": None}
        artifact = wandb.Artifact(name=self._checkpoint_name, type="model", metadata=metadata)
        artifact.add_file(str(path), name="model.ckpt", policy=self.add_file_policy)
        self.experiment.log_artifact(artifact, aliases=["latest"])
        self._logged_model_time[str(path)] = path.stat().st_mtime


def _stored_run_id(run_dir: Path) -> str | None:
    id_file = run_dir / CHECKPOINT_DIRNAME / WANDB_RUN_ID_FILE
    return id_file.read_text().strip() if id_file.is_file() else None


@rank_zero_only
def log_images(loggers: list[Logger], images: dict[str, Path]) -> None:
    """Send PNGs to the loggers that take images (W&B, TensorBoard, DVCLive)."""
    for logger in loggers:
        for name, path in images.items():
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"plots/{name}", images=[str(path)])
            elif isinstance(logger, TensorBoardLogger):
                pixels = matplotlib.image.imread(path)
                logger.experiment.add_image(f"plots/{name}", pixels, dataformats="HWC")
            elif _is_dvclive(logger):
                logger.experiment.log_image(f"{name}.png", path)


def _is_dvclive(logger: Logger) -> bool:
    # dvclive is imported only by runs that use it.
    dvclive_lightning = sys.modules.get("dvclive.lightning")
    return dvclive_lightning is not None and isinstance(logger, dvclive_lightning.DVCLiveLogger)


def finish_loggers(loggers: list[Logger], *, failed: bool) -> None:
    """Close the W&B run, so the next job of a multirun starts its own."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
            # finish() returns before W&B's service has written the run to disk; stopping the
            # service waits for it, so the run's files are complete when train() returns.
            wandb.teardown()
