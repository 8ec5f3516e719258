"""How every seqlab command starts: a fast --help, then Hydra, then hints on a refused override.

Hydra's own --help composes the config once for every option of every group (about 130
compositions here, seconds on a small machine); this --help reads the groups from conf/'s files
and answers at once. `--hydra-help` still shows Hydra's. Everything else goes to the command's
@hydra.main function unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.config import config_groups
from src.config.errors import CommandFailed
from src.config.held_stderr import HeldStream, one_line

HINT_PREFIX = "seqlab: config error: "
HELP_FLAGS = ("--help", "-h")
RESUME_HINT = {"src.train": " (with paths.run_dir=<its run directory> ckpt_path=last to resume)"}
# The command run_main runs now (`src.train`, ...), for a sweep's plan of how to run it again.
_running: list[str] = []


def running_command() -> str:
    return _running[-1] if _running else "src.train"


def help_text(command: str, usage: str) -> str:
    lines = [usage.strip(), "", "Config groups (conf/; choose with group=option):"]
    for group, options in config_groups().items():
        lines.append(f"  {group:<22} {', '.join(options)}")
    lines += [
        "",
        f"`python -m {command} --cfg job` prints the composed config; `--cfg job --package "
        "model` one group of it.",
        "`--hydra-help` shows Hydra's own flags (multirun -m, shell completion -sc, ...).",
    ]
    return "\n".join(lines)


def checkpoint_choices(argv: Sequence[str]) -> list[str]:
    """`argv` with the checkpoint's own task and cell (`data=...`, `model=...`) where it names
    none, so that eval and predict compose, and check every override against, the config the
    checkpoint was trained with rather than conf/'s defaults."""
    values = dict(arg.split("=", 1) for arg in argv if "=" in arg and not arg.startswith("-"))
    ckpt_path, run_dir = values.get("ckpt_path"), values.get("paths.run_dir")
    if not ckpt_path:
        return list(argv)
    path = Path(run_dir or ".") / "checkpoints" / f"{ckpt_path}.ckpt"
    if ckpt_path not in ("best", "last"):
        path = Path(ckpt_path)
    saved = _saved_config(path)
    choices = {"data": ("data", "name"), "model": ("model", "cell")}
    added = [
        f"{group}={saved[node][key]}"
        for group, (node, key) in choices.items()
        if group not in values and isinstance(saved.get(node), dict) and key in saved[node]
    ]
    return [*argv, *added]


def _saved_config(path: Path) -> dict[str, Any]:
    """The config of the run that wrote the checkpoint at `path`; {} when there is none to read
    (the command then says why, in its own words)."""
    config_file = path.parent.parent / "config.yaml"
    try:
        if path.parent.name == "checkpoints" and config_file.is_file():
            loaded = OmegaConf.to_container(OmegaConf.load(config_file))
        else:  # a checkpoint outside its run directory holds the config itself
            import torch

            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            loaded = checkpoint.get("hyper_parameters", {})
    except Exception:  # unreadable in any way: restore_run reports it in one line
        return {}
    return loaded if isinstance(loaded, dict) else {}


def run_main(
    main: Callable[[], object],
    command: str,
    config_name: str,
    usage: str,
    *,
    of_a_checkpoint: bool = False,
) -> None:
    """Run a @hydra.main function as the command `command` (src.train, ...); a command
    `of_a_checkpoint` (eval, predict) composes with the checkpoint's own task and cell."""
    argv: Sequence[str] = sys.argv[1:]
    if of_a_checkpoint and not any(flag in argv for flag in HELP_FLAGS):
        argv = checkpoint_choices(argv)
        sys.argv[1:] = argv
    if any(flag in argv for flag in HELP_FLAGS):
        print(help_text(command, usage))
        return
    _running.append(command)
    held = HeldStream(sys.stderr)
    sys.stderr = held  # type: ignore[assignment]
    try:
        main()
    except KeyboardInterrupt:
        held.release()
        # A run in training saves and stops on the first Ctrl+C (training/signals.py); this is a
        # Ctrl+C anywhere else, or the second one. Every file is written atomically.
        print(
            f"seqlab: interrupted (Ctrl+C); no file is left half-written. Run the same command "
            f"again to go on{RESUME_HINT.get(command, '')}.",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    except CommandFailed:
        raise  # explained on stderr already
    except Exception as error:
        # Hydra raises, rather than reports, a refusal when a tracer is set (a debugger,
        # coverage, hypothesis); HYDRA_FULL_ERROR=1 keeps the traceback for those who want it.
        if not held.holding or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _explain_refusal(str(error) or repr(error), config_name, argv)
        raise SystemExit(1) from None
    except SystemExit as done:
        if done.code == 1 and held.holding:  # Hydra's status for a config it could not compose
            _explain_refusal(held.take(), config_name, argv)
        elif done.code == 2 and held.holding:  # argparse's, for a flag it does not know
            print(_argparse_error(held.take(), command), file=sys.stderr)
        raise
    finally:
        held.release()
        if sys.stderr is held:
            sys.stderr = held.stream
        _running.pop()


def _argparse_error(text: str, command: str) -> str:
    errors = [line.split("error: ", 1)[1] for line in text.splitlines() if "error: " in line]
    what = errors[-1] if errors else one_line(text)
    return f"seqlab: command-line error: {what} (`python -m {command} --help` lists the options)"


def _explain_refusal(hydra_text: str, config_name: str, argv: Sequence[str]) -> None:
    """One line per mistake for a command line Hydra refused: seqlab's explanation where it has
    one, else Hydra's own message in one line."""
    from src.config.hints import unknown_override_messages

    hints = unknown_override_messages(config_name, argv)
    if hints:
        for line in hints:
            print(HINT_PREFIX + line, file=sys.stderr)
    elif "Traceback (most recent call last)" in hydra_text:
        # Hydra could not compose the command line; its last line says why.
        lines = [line for line in hydra_text.splitlines() if line.strip()]
        reason = [line for line in lines if "HYDRA_FULL_ERROR" not in line][-1]
        print(f"{HINT_PREFIX}{reason} (HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
    elif hydra_text.strip():
        print(HINT_PREFIX + one_line(hydra_text), file=sys.stderr)
