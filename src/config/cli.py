"""How every seqlab command starts: a fast --help, then Hydra, then hints on a refused override.

Hydra's own --help composes the config once for every option of every group (about 130
compositions here, seconds on a small machine); this --help reads the groups from conf/'s files
and answers at once. `--hydra-help` still shows Hydra's. Everything else goes to the command's
@hydra.main function unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from src.config import config_groups

HINT_PREFIX = "seqlab: config error: "
HELP_FLAGS = ("--help", "-h")
RESUME_HINT = {"src.train": " (with paths.run_dir=<its run directory> ckpt_path=last to resume)"}


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


def run_main(main: Callable[[], object], command: str, config_name: str, usage: str) -> None:
    """Run a @hydra.main function as the command `command` (src.train, ...)."""
    argv: Sequence[str] = sys.argv[1:]
    if any(flag in argv for flag in HELP_FLAGS):
        print(help_text(command, usage))
        return
    try:
        main()
    except KeyboardInterrupt:
        # A run in training saves and stops on the first Ctrl+C (training/signals.py); this is a
        # Ctrl+C anywhere else, or the second one. Every file is written atomically.
        print(
            f"seqlab: interrupted (Ctrl+C); no file is left half-written. Run the same command "
            f"again to go on{RESUME_HINT.get(command, '')}.",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    except SystemExit as done:
        if done.code == 1:  # Hydra's status for a config it could not compose
            from src.config.hints import unknown_override_messages

            for line in unknown_override_messages(config_name, argv):
                print(HINT_PREFIX + line, file=sys.stderr)
        raise
