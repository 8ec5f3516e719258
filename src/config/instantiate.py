"""Build an object from a config group, turning a library's refusal into a ConfigError.

A mistake such as `trainer.precision=99`, `trainer.accelerator=gpu` without a GPU or
`optimizer._target_=nope.Adam` otherwise ends in Hydra's InstantiationException around the
library's error. As a ConfigError it ends the command with one line that names the group, the
library's reason and where to look for the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from src.config import CONF_DIR
from src.config.errors import ConfigError

# What a library raises for arguments it refuses; anything else is not the config's fault.
REFUSALS = (ValueError, TypeError, ImportError, MisconfigurationException, OmegaConfBaseException)


def _stand_in_parameters() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(1))]


def _probe_optimizer(factory: Callable[..., Any]) -> None:
    factory(_stand_in_parameters())


def _probe_scheduler(factory: Callable[..., Any]) -> None:
    factory(torch.optim.SGD(_stand_in_parameters(), lr=0.1))


# Factories (`_partial_: true`) refuse bad arguments only when Lightning calls them, deep inside
# fit; calling each once on a stand-in here reports the mistake before any work.
PROBES: dict[str, Callable[[Callable[..., Any]], None]] = {
    "optimizer": _probe_optimizer,
    "scheduler": _probe_scheduler,
}


def instantiate_group(node: DictConfig, group: str, **kwargs: Any) -> Any:
    """`instantiate(node, **kwargs)` for the config group `group` (trainer, model, ...)."""
    try:
        built = instantiate(node, **kwargs)
        probe = PROBES.get(group)
        if probe is not None and callable(built):
            probe(built)
    except ConfigError:
        raise
    except InstantiationException as error:
        refused = instantiation_refusal(error, group)
        if refused is None:
            raise
        raise refused from None
    except REFUSALS as error:
        raise ConfigError(refusal_message(group, error)) from None
    return built


def instantiation_refusal(
    error: InstantiationException, group: str | None = None
) -> ConfigError | None:
    """The ConfigError for a library's refusal of the node of `group` (None: the group of the
    node's full key, as Hydra's message names it); None for an error that is not a refusal."""
    cause = error.__cause__
    if cause is not None and not isinstance(cause, REFUSALS):
        return None
    group = group or _full_key_group(str(error))
    return ConfigError(refusal_message(group, cause or error))


def _full_key_group(message: str) -> str:
    match = re.search(r"^full_key: ([^.\s]+)", message, re.MULTILINE)
    return match.group(1) if match else "config"


def refusal_message(group: str, error: BaseException) -> str:
    reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    options = group_options(group)
    choose = f" or choose another {group}=<option> ({', '.join(options)})" if options else ""
    return (
        f"{group}: the config was refused: {reason or type(error).__name__} "
        f"({type(error).__name__}). Fix the {group}.* keys that the reason names (see them "
        f"with --cfg job --package {group}){choose}."
    )


def group_options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
