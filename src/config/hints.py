"""Explain a command-line override that names no key or group of the config.

Hydra refuses `model.hiden_size=3` with "Key 'hiden_size' is not in struct" and `modle=gru` the
same way, without saying what the node does have. Hydra reports these (and exits 1) before any
task function runs and offers no hook for the message, so `src.config.cli.run_main` wraps the
@hydra.main function: when it exits with Hydra's status 1, the overrides are checked against the
config composed with the command's group choices (a second composition, on this failure path
only), and each unknown key is explained on one stderr line: the closest match, the keys the
node has, and the fixed override.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

# Private: Hydra's own parser of its command line, so that the hints read the overrides exactly
# as Hydra did. Hydra has no public parser, nor a hook for its error message.
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.config import CONF_DIR, config_groups


def unknown_override_messages(config_name: str, argv: Sequence[str]) -> list[str]:
    """One message per override of `argv` that names no key or group of the config."""
    args, _ = get_args_parser().parse_known_args(list(argv))
    if args.shell_completion:
        return []  # `-sc install=bash` names no config key
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException:
        return []  # Hydra's own message says what does not parse.
    with _hydra(CONF_DIR):
        groups = _user_groups()
        config = _compose_groups(args.config_name or config_name, overrides, groups)
        if config is None:
            return []
        messages = [_explain(override, config, groups) for override in overrides]
    return [message for message in messages if message]


class _hydra:
    """Hydra initialised on `conf_dir`, whatever a failed @hydra.main left initialised."""

    def __init__(self, conf_dir: Path) -> None:
        self.conf_dir = conf_dir

    def __enter__(self) -> None:
        GlobalHydra.instance().clear()
        self.context = initialize_config_dir(str(self.conf_dir), version_base="1.3")
        self.context.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.context.__exit__(*exc)


def _user_groups() -> list[str]:
    return sorted(group for group in config_groups() if not group.startswith("hydra"))


def _group_options(group: str) -> list[str]:
    options = GlobalHydra.instance().config_loader().get_group_options(group)
    return [option for option in options if not option.startswith("_")]  # _base: a parent


def _is_group_choice(override: Override, groups: list[str]) -> bool:
    return override.key_or_group in groups or override.key_or_group.startswith("hydra/")


def _usable_group_choice(override: Override) -> bool:
    """A group choice that composes: an existing option, or null, or a deletion."""
    if override.is_sweep_override():
        return False
    if override.is_delete() or override.value() is None:
        return True
    return override.get_value_element_as_str() in _group_options(override.key_or_group)


def _compose_groups(
    config_name: str, overrides: list[Override], groups: list[str]
) -> dict[str, Any] | None:
    """The config as the command's group choices compose it, as plain containers."""
    choices = [o for o in overrides if _is_group_choice(o, groups) and _usable_group_choice(o)]
    try:
        config = compose(config_name, overrides=[o.input_line for o in choices if o.input_line])
    except (HydraException, OmegaConfBaseException):
        return None
    return OmegaConf.to_container(config, resolve=False)  # type: ignore[return-value]


def _explain(override: Override, config: Mapping[str, Any], groups: list[str]) -> str | None:
    key = override.key_or_group
    if not key:
        return (
            f"the override '{override.input_line}' names no key before '='. "
            "Fix: key=value (or +key=value to add a key)."
        )
    if override.is_add() or override.is_force_add() or key.startswith("hydra"):
        return None  # Adding keys is what + is for; Hydra's own keys are Hydra's to check.
    if key in groups:
        return None if _usable_group_choice(override) else _unknown_option(override)
    if "/" in key:
        return _unknown_group(key, groups)
    return _unknown_key(override, config, groups)


def _unknown_option(override: Override) -> str | None:
    if override.is_sweep_override():
        return None  # Hydra names the option of a sweep that does not compose
    group, option = override.key_or_group, override.get_value_element_as_str()
    options = _group_options(group)
    match = _closest(option, options)
    fix = f" Fix: {group}={match}" if match else ""
    return (
        f"{group} has no option '{option}'{_did_you_mean(option, options)}; its options: "
        f"{', '.join(options)}.{fix}"
    )


def _unknown_group(group: str, groups: list[str]) -> str:
    return (
        f"there is no config group '{group}'{_did_you_mean(group, groups)}; "
        f"the groups: {', '.join(groups)}."
    )


def _unknown_key(override: Override, config: Mapping[str, Any], groups: list[str]) -> str | None:
    parts = override.key_or_group.split(".")
    node: Any = config
    for depth, part in enumerate(parts):
        parent = ".".join(parts[:depth])
        if not isinstance(node, Mapping):
            return f"{parent} is a value, not a node with keys: set it as {parent}=<value>."
        if part not in node:
            return _missing_key_message(override, parent, part, list(node), groups)
        node = node[part]
    return None


def _missing_key_message(
    override: Override, parent: str, leaf: str, keys: list[str], groups: list[str]
) -> str:
    at_root = not parent
    candidates = sorted(set(keys) | set(groups)) if at_root else sorted(keys)
    match = _closest(leaf, candidates)
    where = "the config" if at_root else parent
    what = "key or group" if at_root else "key"
    listing = f"its keys: {', '.join(sorted(keys))}"
    if at_root:
        listing += f"; its groups (group=option): {', '.join(groups)}"
    fix = _fix(override, parent, match)
    return f"{where} has no {what} '{leaf}'{_did_you_mean(leaf, candidates)}; {listing}.{fix}"


def _fix(override: Override, parent: str, match: str | None) -> str:
    line = override.input_line or ""
    if match is not None:
        return f" Fix: {line.replace(override.key_or_group, _dotted(parent, match), 1)}"
    if override.is_delete():
        return ""
    return f" To add a key that is not there, use +{line}"


def _dotted(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _closest(word: str, candidates: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _did_you_mean(word: str, candidates: list[str]) -> str:
    match = _closest(word, candidates)
    return f" (did you mean {match}?)" if match is not None else ""
