"""Refuse impossible configs at start, before any work, with a message that names key and fix.

Hydra refuses unknown groups and keys (src/config/hints.py explains them); this adds types,
ranges and relations between values, which plain YAML cannot express. It is the one place for
each rule, and it needs only OmegaConf: a refused value answers before torch loads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.config.errors import ConfigError, SweepError

MNIST_TRAIN_SIZE = 60_000
# numpy's and Lightning's seeds are 32-bit; torch.Generator's 64-bit.
MAX_SEED = 2**32 - 1
# torch.set_num_threads takes a C int; no machine runs more threads than this usefully.
MAX_THREADS = 4096
MAX_DATA_SEED = 2**63 - 1
# Larger sizes overflow torch's 64-bit shapes and float arithmetic on the sizes.
MAX_SIZE = 2**63 - 1
ABSENT = object()


@dataclass(frozen=True)
class Rule:
    key: str
    kind: type
    check: Callable[[Any], bool] | None = None
    expected: str = ""  # reads after "must be"
    nullable: bool = False


def size(value: int) -> bool:
    return 0 < value <= MAX_SIZE


def at_least_zero(value: float) -> bool:
    return value >= 0


def positive(value: float) -> bool:
    return value > 0


def between(low: int, high: int) -> Callable[[Any], bool]:
    return lambda value: low <= value <= high


def choice(key: str, *options: str) -> Rule:
    return Rule(key, str, lambda value: value in options, f"among {', '.join(options)}")


# The options of keys whose values a constructor also checks for its Python callers: they read
# these names, so each rule is written once.
CELLS = ("rnn", "lstm", "gru")
INITS = ("keras", "chrono", "torch")
# init=chrono draws memory times in [2, chrono_max_lag] steps (src/models/sequence_model.py).
CHRONO_MIN_LAG = 3
IMPLEMENTATIONS = ("torch", "fused")
HEADS = ("last", "every_step")
REGIMES = ("fixed", "online")
MNIST_MODES = ("row", "pixel", "permuted")
MULTIPLY_VARIANTS = ("classic", "paper_1997")
ADDING_VARIANTS = ("paper_1997", "modern")
TEMPORAL_ORDER_VARIANTS = ("6a", "6b")

SIZE = "> 0 (and below 2**63)"
RULES = (
    # data.mode first: model.input_size is looked up by it.
    choice("data.mode", *MNIST_MODES),
    Rule("seed", int, between(0, MAX_SEED), f"in [0, {MAX_SEED}]"),
    Rule(
        "num_threads",
        int,
        between(1, MAX_THREADS),
        f"in [1, {MAX_THREADS}] (or null for torch's default)",
        nullable=True,
    ),
    Rule("sweep.fail_fast", bool),
    Rule("steps_per_call", int, size, SIZE),
    choice("model.cell", *CELLS),
    Rule("model.input_size", int, size, SIZE),
    Rule("model.output_size", int, size, SIZE),
    Rule("model.hidden_size", int, size, SIZE),
    Rule("model.num_layers", int, size, SIZE),
    Rule("model.dropout", float, lambda v: 0 <= v < 1, "in [0, 1)"),
    Rule("model.bidirectional", bool),
    choice("model.init", *INITS),
    choice("model.implementation", *IMPLEMENTATIONS),
    Rule("optimizer.lr", float, positive, "> 0"),
    Rule("optimizer.weight_decay", float, at_least_zero, ">= 0"),
    Rule("optimizer.momentum", float, at_least_zero, ">= 0"),
    Rule("data.batch_size", int, size, SIZE),
    Rule("data.num_sequences", int, size, SIZE),
    Rule("data.seq_len", int, size, SIZE + " (null only for data=chars)", nullable=True),
    choice("data.regime", *REGIMES),
    choice("data.targets", "per_sequence", "per_step"),
    choice("model.head", *HEADS),
    Rule("model.tbptt_steps", int, size, SIZE + " (or null for full BPTT)", nullable=True),
    Rule(
        "model.chrono_max_lag",
        int,
        lambda v: v >= CHRONO_MIN_LAG,
        f">= {CHRONO_MIN_LAG} (or null)",
        nullable=True,
    ),
    Rule("data.num_train", int, size, SIZE),
    Rule("data.num_val", int, size, SIZE),
    Rule("data.num_test", int, size, SIZE),
    Rule("data.categories", int, lambda v: 2 <= v <= MAX_SIZE, ">= 2 (two symbols at least)"),
    Rule("data.to_copy", int, size, SIZE),
    Rule("data.lag", int, size, SIZE),
    Rule("data.val_fraction", float, lambda v: 0 <= v < 1, "in [0, 1)"),
    Rule("data.test_fraction", float, lambda v: 0 <= v < 1, "in [0, 1)"),
    Rule("data.inclusive_tolerance", bool),
    Rule("data.num_fit", int, size, SIZE),
    Rule("data.tolerance", float, positive, "> 0"),
    Rule("data.seed", int, between(0, MAX_DATA_SEED), "in [0, 2**63)"),
    Rule("data.val_size", int, size, SIZE),
    choice("data.val_split", "first", "random"),
    Rule("data.split_seed", int, between(0, MAX_DATA_SEED), "in [0, 2**63)"),
    Rule("data.permutation_seed", int, between(0, MAX_DATA_SEED), "in [0, 2**63)"),
    Rule("data.train_subset", int, size, SIZE + " (or null for all)", nullable=True),
    Rule("data.augment_shift", int, between(0, 27), "in [0, 27] pixels (0: no shift)"),
    Rule(
        "data.monitor", str, lambda v: v.startswith("val/"), "named val/... (a validation metric)"
    ),
    choice("data.monitor_mode", "min", "max"),
    Rule("trainer.max_epochs", int, lambda v: v >= 1 or v == -1, ">= 1 (or -1 for no limit)"),
    Rule("trainer.min_epochs", int, at_least_zero, ">= 0"),
    Rule("trainer.num_nodes", int, size, SIZE),
    Rule("trainer.log_every_n_steps", int, size, SIZE),
    Rule("trainer.check_val_every_n_epoch", int, size, SIZE, nullable=True),
    Rule("trainer.gradient_clip_val", float, at_least_zero, ">= 0 (or null)", nullable=True),
    choice("test_ckpt", "best", "last"),
)


def _kind_ok(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _value(cfg: DictConfig, key: str) -> Any:
    """The resolved value at `key` (ABSENT if the config has no such key)."""
    try:
        return OmegaConf.select(cfg, key, default=ABSENT)
    except OmegaConfBaseException as error:
        reason = str(error).splitlines()[0]
        raise ConfigError(
            f"{key} cannot be resolved: {reason}. Fix: give {key} a plain value, or an "
            "interpolation ${...} of a key that exists."
        ) from None


def _check_rule(cfg: DictConfig, rule: Rule) -> None:
    value = _value(cfg, rule.key)
    if value is ABSENT or (value is None and rule.nullable):
        return
    if not _kind_ok(value, rule.kind):
        raise ConfigError(
            f"{rule.key} must be {rule.kind.__name__}, got {value!r} ({type(value).__name__}). "
            f"Fix: {rule.key}=<{rule.kind.__name__}>"
        )
    if rule.kind is float and isinstance(value, int) and abs(value) > MAX_SIZE:
        # An integer beyond 64 bits: torch (the LR monitor, for one) cannot hold it.
        raise ConfigError(
            f"{rule.key}={value!r} is an integer too large for torch (64 bits at most). Fix: "
            f"give {rule.key} as a float (1e-3), or a smaller value."
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{rule.key}={value!r} is not a finite number. Fix: {rule.key}=<number>")
    if rule.check is not None and not rule.check(value):
        raise ConfigError(
            f"{rule.key}={value!r} is not allowed: it must be {rule.expected}. "
            f"Fix: set {rule.key} to a value {rule.expected}."
        )


def _has(data: DictConfig, *keys: str) -> bool:
    return all(key in data for key in keys)


def _check_multiply_splits(data: DictConfig) -> None:
    if data.num_fit >= data.num_sequences:
        raise ConfigError(
            f"data.num_fit={data.num_fit} leaves no test sequences out of "
            f"data.num_sequences={data.num_sequences}. Fix: make data.num_fit smaller than "
            "data.num_sequences."
        )
    num_val = round(data.num_fit * data.val_fraction)
    if num_val < 1 or num_val >= data.num_fit:
        raise ConfigError(
            f"data.val_fraction={data.val_fraction} of data.num_fit={data.num_fit} gives "
            f"{num_val} validation sequences. Fix: choose data.val_fraction so that both "
            "training and validation get at least one."
        )


def _check_multiply_length(data: DictConfig) -> None:
    if data.seq_len is None:
        raise ConfigError("data.seq_len is null. Fix: data.seq_len=<int> (classic: 100).")
    if data.get("variant") == "paper_1997" and data.seq_len < 20:
        raise ConfigError(
            f"data.variant=paper_1997 needs data.seq_len >= 20, got {data.seq_len}. "
            "Fix: data.seq_len=20 or more, or data.variant=classic."
        )
    if data.seq_len < 2:
        raise ConfigError(
            f"data.seq_len={data.seq_len} has no room for the two marked steps of the "
            "multiplication problem. Fix: data.seq_len=2 or more."
        )


VARIANTS = {
    "multiply": MULTIPLY_VARIANTS,
    "adding": ADDING_VARIANTS,
    "temporal_order": TEMPORAL_ORDER_VARIANTS,
}
# The shortest length each task's positions fit in, by task and variant.
MIN_SEQ_LEN = {("adding", "paper_1997"): 20, ("adding", "modern"): 2, ("temporal_order", None): 10}
# Tasks whose sequences vary in length, by variant (None: every variant).
VARIABLE_LENGTH = {("multiply", "paper_1997"), ("adding", "paper_1997"), ("temporal_order", None)}


def _check_variant(data: DictConfig) -> None:
    options = VARIANTS.get(data.get("name"))
    if options is None or "variant" not in data or data.variant in options:
        return
    raise ConfigError(
        f"data.variant={data.variant!r} is not a variant of data={data.name}: it must be among "
        f"{', '.join(options)}. Fix: data.variant=<one of them>."
    )


def _check_task_length(data: DictConfig) -> None:
    name, variant = data.get("name"), data.get("variant")
    least = MIN_SEQ_LEN.get((name, variant), MIN_SEQ_LEN.get((name, None)))
    if least is None or data.get("seq_len") is None or data.seq_len >= least:
        return
    which = f"data={name}" + (f" (data.variant={variant})" if variant else "")
    raise ConfigError(
        f"data.seq_len={data.seq_len} is too short for {which}: its marked positions need "
        f"data.seq_len >= {least}. Fix: data.seq_len={least} or more."
    )


def _check_copy_sizes(data: DictConfig) -> None:
    inputs, classes = data.categories + 2, data.categories + 1
    if data.input_size != inputs or data.num_classes != classes:
        raise ConfigError(
            f"data.categories={data.categories} makes {inputs} input symbols and {classes} "
            f"target classes (blank, categories, delimiter), but data.input_size="
            f"{data.input_size} and data.num_classes={data.num_classes}. Fix: "
            f"data.categories={data.categories} data.input_size={inputs} "
            f"data.num_classes={classes}."
        )


def sequence_steps(data: DictConfig) -> int | None:
    """The steps of the task's longest sequence, where the config fixes them."""
    if _has(data, "lag", "to_copy"):
        return data.lag + 2 * data.to_copy
    if "mode" in data:
        return 28 if data.mode == "row" else 784
    seq_len = data.get("seq_len")
    if seq_len is None:
        return None
    return seq_len + seq_len // 10 if _variable_length(data) else seq_len


def _variable_length(data: DictConfig) -> bool:
    name = data.get("name")
    return (name, data.get("variant")) in VARIABLE_LENGTH or (name, None) in VARIABLE_LENGTH


def _check_head(cfg: DictConfig) -> None:
    head = _value(cfg, "model.head")
    if head is ABSENT:
        return
    targets = cfg.data.get("targets", "per_sequence")
    if head == "every_step" and targets == "per_sequence":
        raise ConfigError(
            f"model.head=every_step, but data={cfg.data.get('name')} has one target per "
            "sequence, read at its end: the other steps have nothing to learn. Fix: "
            "model.head=last."
        )
    if head == "last" and targets == "per_step":
        raise ConfigError(
            f"model.head=last, but data={cfg.data.get('name')} has a target at every step. "
            "Fix: model.head=every_step (the task's default: drop the override)."
        )


def _check_tbptt(cfg: DictConfig) -> None:
    steps = _value(cfg, "model.tbptt_steps")
    if steps in (ABSENT, None):
        return
    if _value(cfg, "model.bidirectional") is True:
        raise ConfigError(
            "model.tbptt_steps needs a unidirectional model: a bidirectional one reads whole "
            "sequences. Fix: model.bidirectional=false, or model.tbptt_steps=null."
        )
    data = cfg.data
    length = sequence_steps(data)
    if length is not None and steps > length:
        raise ConfigError(
            f"model.tbptt_steps={steps} is longer than the sequences of data={data.get('name')} "
            f"({length} steps). Fix: model.tbptt_steps between 1 and {length}, or null for full "
            "backpropagation."
        )
    name, variant = data.get("name"), data.get("variant")
    if _variable_length(data) and _value(cfg, "model.head") != "every_step":
        raise ConfigError(
            f"model.tbptt_steps with data={name}"
            + (f" (data.variant={variant})" if variant else "")
            + ": its sequences differ in length and its target is read at each one's end, "
            "which truncated BPTT's fixed chunks cannot follow. Fix: a fixed-length variant "
            "(data=multiply data.variant=classic, data=adding data.variant=modern), or "
            "model.tbptt_steps=null."
        )


def _check_chrono(cfg: DictConfig) -> None:
    lag = _value(cfg, "model.chrono_max_lag")  # ABSENT in a config older than the key
    if _value(cfg, "model.init") == "chrono" and (lag is None or lag is ABSENT):
        raise ConfigError(
            "model.init=chrono draws each unit's memory time up to model.chrono_max_lag steps, "
            "which is not set. Fix: model.chrono_max_lag=<the longest lag of the task, in steps> "
            "(e.g. its sequence length)."
        )


def _check_mnist_splits(data: DictConfig) -> None:
    if data.val_size >= MNIST_TRAIN_SIZE:
        raise ConfigError(
            f"data.val_size={data.val_size} leaves no training images out of "
            f"{MNIST_TRAIN_SIZE}. Fix: choose a smaller data.val_size (classic: 5000)."
        )
    left = MNIST_TRAIN_SIZE - data.val_size
    subset = data.get("train_subset")
    if subset is not None and subset > left:
        raise ConfigError(
            f"data.train_subset={subset} is more than the {left} training images that "
            f"data.val_size={data.val_size} leaves. Fix: data.train_subset={left} or less, or "
            "null for all of them."
        )


def _check_model_fits_data(cfg: DictConfig) -> None:
    """The model's input and output sizes are the data's: any other value fails only later,
    inside the first forward pass or metric update."""
    for side, what in (("input_size", "features a step"), ("output_size", "outputs")):
        model_size = _value(cfg, f"model.{side}")
        data_size = _value(cfg, f"data.{side}")
        if ABSENT in (model_size, data_size) or model_size == data_size:
            continue
        raise ConfigError(
            f"model.{side}={model_size!r} does not fit the data: data={cfg.data.get('name')} "
            f"has {data_size!r} {what} (data.{side}). Fix: drop the model.{side} override; it "
            f"follows the data."
        )


def _check_precision(cfg: DictConfig) -> None:
    if str(OmegaConf.select(cfg, "trainer.precision", default="")) == "16-true":
        raise ConfigError(
            "trainer.precision=16-true keeps the weights in float16, where Adam's eps=1e-8 "
            "rounds to 0: the loss becomes NaN within a few steps. Fix: "
            "trainer.precision=bf16-mixed (or bf16-true, 16-mixed, 32-true, 64-true)."
        )


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError on the first problem found."""
    _check_variant(cfg.data)  # first: the data's sizes are looked up by it
    for rule in RULES:
        _check_rule(cfg, rule)
    _check_model_fits_data(cfg)
    _check_precision(cfg)
    data = cfg.data
    if _has(data, "num_fit", "num_sequences", "val_fraction"):
        _check_multiply_splits(data)
    if _has(data, "num_fit", "seq_len"):
        _check_multiply_length(data)
    _check_task_length(data)
    if _has(data, "categories", "input_size", "num_classes"):
        _check_copy_sizes(data)
    _check_head(cfg)
    _check_tbptt(cfg)
    _check_chrono(cfg)
    if _has(data, "val_size"):
        _check_mnist_splits(data)
    _check_fits_in_memory(cfg)
    if "monitor" not in data:
        raise ConfigError("data.monitor is missing. Fix: data.monitor=val/<metric>.")


DIRECTION_OF_MODE = {"min": "minimize", "max": "maximize"}
# Weight matrices per cell: torch keeps (input, recurrent, two biases) for each gate.
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# Bytes one parameter takes in training: float32 weights, gradients and Adam's two moments.
TRAINING_BYTES_PER_PARAMETER = 16
GIB = 2**30


def parameter_count(model: DictConfig) -> int:
    """The parameters of the SequenceModel that `model` describes, counted without building it."""
    gates, hidden = GATES[model.cell], model.hidden_size
    directions = 2 if model.get("bidirectional") else 1

    def layer(inputs: int) -> int:
        return directions * gates * (hidden * inputs + hidden * hidden + 2 * hidden)

    stacked = (model.num_layers - 1) * layer(hidden * directions)
    head = hidden * directions * model.output_size + model.output_size
    return layer(model.input_size) + stacked + head


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_fits_in_memory(cfg: DictConfig) -> None:
    """Refuse what could only end in an allocation failure or a crash: a model, or a generated
    data set, larger than this machine's memory."""
    memory = physical_memory()
    model = cfg.get("model")
    if memory is None or model is None or model.get("cell") not in GATES:
        return
    try:
        need = parameter_count(model) * TRAINING_BYTES_PER_PARAMETER
    except (OmegaConfBaseException, TypeError):
        return  # a value left unset (???) is reported where it is used
    if need > memory:
        raise ConfigError(
            f"model.hidden_size={model.hidden_size}, model.num_layers={model.num_layers} and "
            f"model.input_size={model.input_size} make a model of "
            f"{parameter_count(model):.3g} parameters, about {need / GIB:,.0f} GiB to train; "
            f"this machine has {memory / GIB:,.0f} GiB. Fix: a smaller model.hidden_size or "
            "model.num_layers."
        )
    data = cfg.data
    if _has(data, "num_sequences", "seq_len") and not (
        OmegaConf.is_missing(data, "num_sequences") or OmegaConf.is_missing(data, "seq_len")
    ):
        need = data.num_sequences * data.seq_len * 2 * 4  # (marker, value) in float32
        if need > memory:
            raise ConfigError(
                f"data.num_sequences={data.num_sequences} of data.seq_len={data.seq_len} steps "
                f"take about {need / GIB:,.0f} GiB; this machine has {memory / GIB:,.0f} GiB. "
                "Fix: fewer or shorter sequences."
            )


def check_sweep(cfg: DictConfig) -> None:
    """An Optuna sweep over the monitored metric must go the way that metric improves."""
    if not HydraConfig.initialized():
        return
    sweeper = HydraConfig.get().sweeper
    if "optuna" not in str(sweeper.get("_target_", "")):
        return
    if cfg.get("optimized_metric") != cfg.data.monitor:
        return
    expected = DIRECTION_OF_MODE[cfg.data.monitor_mode]
    if str(sweeper.direction) != expected:
        raise SweepError(
            f"hydra.sweeper.direction={sweeper.direction} but {cfg.data.monitor} improves with "
            f"data.monitor_mode={cfg.data.monitor_mode}: set hydra.sweeper.direction={expected}, "
            "or use the hparams_search preset of this task (multiply_optuna, mnist_optuna)."
        )
