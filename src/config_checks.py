"""Refuse impossible configs at start, before any work, with a message that names key and fix.

Hydra already refuses unknown groups and keys; this adds types, ranges and relations between
values, which plain YAML cannot express.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

MNIST_TRAIN_SIZE = 60_000


class ConfigError(ValueError):
    """A user mistake in the config; the message says which key and how to fix it."""


@dataclass(frozen=True)
class Rule:
    key: str
    kind: type
    check: Callable[[Any], bool] | None = None
    expected: str = ""
    nullable: bool = False


def positive(value: float) -> bool:
    return value > 0


def one_of(*options: str) -> Callable[[Any], bool]:
    return lambda value: value in options


RULES = (
    # data.mode first: model.input_size is looked up by it.
    Rule("data.mode", str, one_of("row", "pixel", "permuted"), "one of row, pixel, permuted"),
    Rule("seed", int),
    Rule("model.cell", str, one_of("rnn", "lstm", "gru"), "one of rnn, lstm, gru"),
    Rule("model.input_size", int, positive, "> 0"),
    Rule("model.output_size", int, positive, "> 0"),
    Rule("model.hidden_size", int, positive, "> 0"),
    Rule("model.num_layers", int, positive, "> 0"),
    Rule("model.dropout", float, lambda v: 0 <= v < 1, "in [0, 1)"),
    Rule("model.bidirectional", bool),
    Rule("model.init", str, one_of("keras", "torch"), "one of keras, torch"),
    Rule("model.implementation", str, one_of("torch", "fused"), "one of torch, fused"),
    Rule("optimizer.lr", float, positive, "> 0"),
    Rule("data.batch_size", int, positive, "> 0"),
    Rule("data.num_sequences", int, positive, "> 0"),
    Rule("data.seq_len", int, positive, "> 0"),
    Rule("data.num_fit", int, positive, "> 0"),
    Rule("data.val_fraction", float, lambda v: 0 < v < 1, "in (0, 1)"),
    Rule("data.tolerance", float, positive, "> 0"),
    Rule("data.variant", str, one_of("classic", "paper_1997"), "one of classic, paper_1997"),
    Rule("data.val_size", int, positive, "> 0"),
    Rule("data.val_split", str, one_of("first", "random"), "one of first, random"),
    Rule("data.train_subset", int, positive, "> 0 (or null for all)", nullable=True),
    Rule("trainer.max_epochs", int, lambda v: v >= 1 or v == -1, ">= 1 (or -1 for no limit)"),
    Rule("test_ckpt", str, one_of("best", "last"), "one of best, last"),
)


def _kind_ok(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_rule(cfg: DictConfig, rule: Rule) -> None:
    if OmegaConf.select(cfg, rule.key, default="<absent>") == "<absent>":
        return
    value = OmegaConf.select(cfg, rule.key)
    if value is None and rule.nullable:
        return
    if not _kind_ok(value, rule.kind):
        raise ConfigError(
            f"{rule.key} must be {rule.kind.__name__}, got {value!r} ({type(value).__name__}). "
            f"Fix: {rule.key}=<{rule.kind.__name__}>"
        )
    if rule.check is not None and not rule.check(value):
        raise ConfigError(f"{rule.key}={value!r} is out of range: it must be {rule.expected}.")


def _check_multiply_splits(data: DictConfig) -> None:
    if data.num_fit >= data.num_sequences:
        raise ConfigError(
            f"data.num_fit={data.num_fit} leaves no test sequences out of "
            f"data.num_sequences={data.num_sequences}: make data.num_fit smaller than "
            "data.num_sequences."
        )
    num_val = round(data.num_fit * data.val_fraction)
    if num_val < 1 or num_val >= data.num_fit:
        raise ConfigError(
            f"data.val_fraction={data.val_fraction} of data.num_fit={data.num_fit} gives "
            f"{num_val} validation sequences: choose data.val_fraction so that both training "
            "and validation get at least one."
        )
    if data.get("variant") == "paper_1997" and data.seq_len < 20:
        raise ConfigError(f"data.variant=paper_1997 needs data.seq_len >= 20, got {data.seq_len}.")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError on the first problem found."""
    for rule in RULES:
        _check_rule(cfg, rule)
    data = cfg.data
    if "num_fit" in data:
        _check_multiply_splits(data)
    if "val_size" in data and data.val_size >= MNIST_TRAIN_SIZE:
        raise ConfigError(
            f"data.val_size={data.val_size} leaves no training images out of "
            f"{MNIST_TRAIN_SIZE}: choose a smaller data.val_size (classic: 5000)."
        )
    monitor = data.get("monitor", "")
    if not monitor.startswith("val/"):
        raise ConfigError(f"data.monitor={monitor!r} must name a validation metric (val/...).")
