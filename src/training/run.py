"""One training run: build the DataModule, the LightningModule and the Trainer from a checked
config, fit, test, and leave metrics.json, the plots and the checkpoints in the run directory.

`train(cfg)` is what `python -m src.train` calls once its config has been composed and checked;
tests and notebooks call it with a composed config too.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from src.atomic import atomic_write_text, remove_stale_temporaries, write_json
from src.config.checks import check_config, check_sweep
from src.config.errors import ConfigError
from src.config.instantiate import instantiate_group
from src.models.module import SequenceModule
from src.models.sequence_model import count_parameters, network_config
from src.tracking.loggers import build_loggers, finish_loggers, log_images
from src.tracking.outputs import save_run_plots
from src.tracking.run_dir import (
    CHECKPOINT_DIRNAME,
    create_run_dir,
    discard_if_made_here,
    is_launch_rank_zero,
    release,
)
from src.training.callbacks import EpochRowInCheckpoints, EpochTimer, EvaluatedSamples
from src.training.checkpoints import AtomicCheckpointIO
from src.training.distributed import check_distributed
from src.training.divergence import DivergenceGuard
from src.training.resume import ResumePoint, resume_point
from src.training.signals import GracefulStop
from src.training.threads import configure_threads

log = logging.getLogger("seqlab")
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def setup_logging(run_dir: Path | None) -> None:
    """Log to stdout and, given a run directory, to its train.log."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        if getattr(handler, "seqlab", False):
            root.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if run_dir is not None:
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    for handler in handlers:
        handler.seqlab = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    # Lightning gives its loggers a console handler of their own, and stops them propagating,
    # when it is imported before any handler exists: its lines then missed train.log.
    for name in LIGHTNING_LOGGERS:
        lightning_logger = logging.getLogger(name)
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)
        lightning_logger.propagate = True


def log_to_file(text: str) -> None:
    """Add `text` to train.log only (it has been printed already)."""
    record = logging.LogRecord("seqlab", logging.INFO, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and getattr(handler, "seqlab", False):
            handler.handle(record)


def save_config(cfg: DictConfig, run_dir: Path, *, with_overrides: bool = True) -> None:
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if with_overrides and HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
        atomic_write_text(run_dir / "overrides.yaml", OmegaConf.to_yaml(overrides))


def command_line_keys() -> list[str] | None:
    """The config keys and groups set on the command line of this Hydra job (None: no job)."""
    if not HydraConfig.initialized():
        return None
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return [override.key_or_group for override in overrides]


# Trainer settings that count Lightning's calls of training_step, other than at these values.
# Calls of several batches would change what they mean, so a run that sets one trains a batch
# per call. (limit_train_batches is counted in batches by the DataModule instead.)
COUNT_CALLS = {
    "fast_dev_run": (None, False, 0),
    "overfit_batches": (None, 0, 0.0),
    "max_steps": (None, -1),
    "val_check_interval": (None, 1.0),  # the float: the integer 1 is "after every batch"
    "accumulate_grad_batches": (None, 1),
}


def _neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    # By type too: 1 and 1.0 mean different things to val_check_interval.
    return any(value is n or (type(value) is type(n) and value == n) for n in neutral)


def settings_counting_calls(cfg: DictConfig) -> list[str]:
    trainer = cfg.get("trainer") or {}
    return [
        f"trainer.{key}={trainer.get(key)}"
        for key, neutral in COUNT_CALLS.items()
        if not _neutral(trainer.get(key), neutral)
    ]


def steps_per_call_of(cfg: DictConfig) -> int:
    """Batches per call of training_step: the config's; 1 for a config from before the key (a
    resumed run trains as it did) or one with a trainer setting that counts calls."""
    if settings_counting_calls(cfg):
        return 1
    return int(cfg.get("steps_per_call") or 1)


def optimizes_itself(cfg: DictConfig) -> bool:
    """Whether the module steps the optimizer itself (Lightning's manual optimization)."""
    return bool(cfg.model.get("tbptt_steps")) or steps_per_call_of(cfg) > 1


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    steps_per_call = steps_per_call_of(cfg)
    extra: dict[str, Any] = {}
    if steps_per_call > 1:
        # Lightning would count the calls, not the batches: the DataModule ends the epoch.
        extra["train_batch_limit"] = cfg.trainer.get("limit_train_batches")
    return instantiate_group(
        cfg.data, "data", shuffle_seed=cfg.seed, steps_per_call=steps_per_call, **extra
    )


def trainer_overrides(cfg: DictConfig) -> dict[str, Any]:
    """What the Trainer gets instead of the config's own values, and why."""
    overrides: dict[str, Any] = {}
    if optimizes_itself(cfg):
        # Lightning refuses to clip for a module that optimizes itself: the module clips.
        overrides["gradient_clip_val"] = None
    steps_per_call = steps_per_call_of(cfg)
    if steps_per_call == 1:
        return overrides
    # Lightning counts calls of training_step; the config counts batches.
    limit = cfg.trainer.get("limit_train_batches")
    if limit not in (None, 0, 0.0):
        overrides["limit_train_batches"] = None  # the DataModule's (build_datamodule)
    every = cfg.trainer.get("log_every_n_steps")
    if every:
        overrides["log_every_n_steps"] = max(1, every // steps_per_call)
    return overrides


def build_module(cfg: DictConfig) -> SequenceModule:
    scheduler = instantiate_group(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    tbptt_steps = cfg.model.get("tbptt_steps")
    steps_per_call = steps_per_call_of(cfg)
    module = SequenceModule(
        instantiate_group(network_config(cfg.model), "model"),
        task=cfg.data.task,
        optimizer=instantiate_group(cfg.optimizer, "optimizer"),
        scheduler=scheduler,
        monitor=cfg.data.monitor,
        tolerance=cfg.data.get("tolerance"),
        inclusive_tolerance=cfg.data.get("inclusive_tolerance", True),
        num_classes=cfg.data.get("num_classes"),
        metrics=tuple(cfg.data.get("metrics") or ()),
        tbptt_steps=tbptt_steps,
        steps_per_call=steps_per_call,
        batch_size=cfg.data.batch_size,
        # Dropout is the model's only draw from the generator while training.
        batch_seed=cfg.seed if cfg.model.get("dropout") else None,
        # A module that optimizes itself clips as the trainer would.
        gradient_clip_val=(cfg.trainer.get("gradient_clip_val") if optimizes_itself(cfg) else None),
        gradient_clip_algorithm=cfg.trainer.get("gradient_clip_algorithm") or "norm",
    )
    # As hyperparameters, the config goes into every checkpoint (a run can be resumed or
    # evaluated from its checkpoint alone) and reaches every logger (W&B config, TensorBoard
    # hparams, ...).
    module.save_hyperparameters(OmegaConf.to_container(cfg, resolve=True))
    return module


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    resume_command = f"python -m src.train paths.run_dir={run_dir} ckpt_path=last"
    callbacks: list[L.Callback] = [
        EpochTimer(),
        EvaluatedSamples(),
        EpochRowInCheckpoints(),
        # The guard first: a stop on a signal must never save a diverged model.
        DivergenceGuard(),
        GracefulStop(run_dir / CHECKPOINT_DIRNAME / "last.ckpt", resume_command),
    ]
    for callback_cfg in (cfg.get("callbacks") or {}).values():
        if callback_cfg is None:
            continue
        if "ProgressBar" in callback_cfg._target_ and not cfg.trainer.enable_progress_bar:
            continue
        if callback_cfg._target_.endswith("ModelCheckpoint"):
            callbacks.append(
                instantiate_group(
                    callback_cfg, "callbacks", dirpath=str(run_dir / CHECKPOINT_DIRNAME)
                )
            )
        else:
            callbacks.append(instantiate_group(callback_cfg, "callbacks"))
    return callbacks


def _checkpoint_callback(trainer: L.Trainer, monitor: str | None) -> ModelCheckpoint | None:
    """The ModelCheckpoint of `monitor` (data.monitor: best.ckpt; None: last.ckpt)."""
    return next((c for c in trainer.checkpoint_callbacks if c.monitor == monitor), None)  # type: ignore[union-attr]


def _test_checkpoint(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    monitor = cfg.data.monitor if cfg.test_ckpt == "best" else None
    checkpoint = _checkpoint_callback(trainer, monitor)
    if checkpoint is None or trainer.fast_dev_run:
        return None
    path = checkpoint.best_model_path
    if not path:
        log.warning("no %s checkpoint was saved; testing the final weights", cfg.test_ckpt)
        return None
    return path


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def print_summary(cfg: DictConfig, results: dict[str, Any], run_dir: Path) -> None:
    lines = [
        f"seqlab: {cfg.model.cell} on {cfg.data.name}, {results['num_params']:,} parameters, "
        f"{results['epochs']} epochs, {_seconds(results['train_epoch_seconds'])} per epoch",
    ]
    for key in sorted(k for k in results if k.startswith("test/")):
        lines.append(f"  {key:<28} {results[key]:.6g}")
    lines.append(f"  {'run directory':<28} {run_dir}")
    lines.append(f"  {'tested checkpoint':<28} {results['test_checkpoint'] or '(final weights)'}")
    print("\n".join(lines), flush=True)
    log_to_file("\n".join(lines))


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Fit, test, write metrics.json; return the results (also what sweepers read).
    `extra_callbacks` join the config's, for code that calls train() itself (a benchmark)."""
    check_config(cfg)
    resume = resume_point(cfg, command_line_keys())
    if resume is not None:
        cfg = resume.config  # the run as it was, with what a resume may change
    check_sweep(cfg)
    threads = configure_threads(cfg.get("num_threads"))
    L.seed_everything(cfg.seed, workers=True)
    call_note = None
    counting = settings_counting_calls(cfg)
    if counting and int(cfg.get("steps_per_call") or 1) > 1:
        call_note = (
            f"one batch per call of training_step, not steps_per_call={cfg.steps_per_call}: "
            f"{', '.join(counting)} counts calls"
        )
        with open_dict(cfg):
            cfg.steps_per_call = 1  # what the run does, in its saved config and checkpoints
    # Built before the run directory, so a config a library refuses leaves no directory behind.
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)

    run_dir = create_run_dir(cfg, resuming=resume is not None)
    try:
        return _run_in(
            run_dir, cfg, module, datamodule, resume, threads, call_note, extra_callbacks
        )
    finally:
        release(run_dir)


def _run_in(
    run_dir: Path,
    cfg: DictConfig,
    module: SequenceModule,
    datamodule: L.LightningDataModule,
    resume: ResumePoint | None,
    threads: int,
    call_note: str | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
) -> dict[str, Any]:
    # Under DDP only global rank 0 writes files; the other ranks log to stdout.
    writes_files = is_launch_rank_zero()
    setup_logging(run_dir if writes_files else None)
    if writes_files:
        # A resumed run keeps the overrides.yaml of the command that started it.
        save_config(cfg, run_dir, with_overrides=resume is None)
    writer = "" if writes_files else "; a rank > 0, which writes nothing"
    log.info("run directory: %s (%d torch threads%s)", run_dir, threads, writer)
    if call_note is not None:
        log.info(call_note)
    if resume is not None:
        if resume.fallback_note:
            log.warning(resume.fallback_note)
        if writes_files:
            remove_stale_temporaries(run_dir)
        log.info("resuming from %s (logged step %d)", resume.path, resume.logged_step)

    try:
        callbacks = [*build_callbacks(cfg, run_dir), *extra_callbacks]
        loggers = build_loggers(
            cfg,
            run_dir,
            resume_step=resume.logged_step if resume is not None else None,
            resume_row=resume.epoch_row if resume is not None else None,
        )
        trainer: L.Trainer = instantiate_group(
            cfg.trainer,
            "trainer",
            callbacks=callbacks,
            logger=loggers or False,
            default_root_dir=str(run_dir),
            **trainer_overrides(cfg),
        )
        check_distributed(cfg, trainer)
    except ConfigError:
        discard_if_made_here(run_dir)  # refused before it started: leave nothing behind
        raise
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    try:
        results = _fit_and_test(cfg, trainer, module, datamodule, resume, run_dir)
    except BaseException:
        finish_loggers(loggers, failed=True)
        raise
    finish_loggers(loggers, failed=False)
    return results


def _fit_and_test(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: SequenceModule,
    datamodule: L.LightningDataModule,
    resume: ResumePoint | None,
    run_dir: Path,
) -> dict[str, Any]:
    ckpt_path = resume.path if resume is not None else None
    fit_start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    fit_seconds = time.perf_counter() - fit_start

    test_checkpoint = _test_checkpoint(cfg, trainer)
    test_metrics = trainer.test(
        module, datamodule=datamodule, ckpt_path=test_checkpoint, weights_only=True
    )[0]

    timer = next(c for c in trainer.callbacks if isinstance(c, EpochTimer))
    evaluated = next(c for c in trainer.callbacks if isinstance(c, EvaluatedSamples))
    checkpoint = _checkpoint_callback(trainer, cfg.data.monitor)
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    results: dict[str, Any] = {
        **{key: float(value) for key, value in test_metrics.items()},
        f"best_{cfg.data.monitor}": float(best_score) if best_score is not None else None,
        "num_params": count_parameters(module.net),
        "epochs": trainer.current_epoch,
        # None when no whole epoch ran here (a resumed run that had already finished).
        "train_epoch_seconds": (
            statistics.median(timer.train_epoch_seconds) if timer.train_epoch_seconds else None
        ),
        # Wall time of fitting in this process, validation included (a resumed run: since resuming).
        "fit_seconds": fit_seconds,
        "test_checkpoint": test_checkpoint,
        "val_samples": evaluated.val_samples,
        "test_samples": evaluated.test_samples,
    }
    # On every rank: compute() gathers the counts of all ranks, a collective.
    confusion = module.test_confusion.compute() if module.test_confusion is not None else None
    if trainer.is_global_zero:
        plots = save_run_plots(cfg, module, datamodule, trainer.loggers, run_dir, confusion)
        log_images(trainer.loggers, plots)
        write_json(run_dir / "metrics.json", results)
        print_summary(cfg, results, run_dir)
    return results
