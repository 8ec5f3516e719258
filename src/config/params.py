"""Write params.yaml, the composed default config that DVC reads, or check that it is current.

    python -m src.config.params                # recompose params.yaml (after editing conf/)
    python -m src.config.params --check        # exit 1 with a diff when params.yaml is stale
    python -m src.config.params profile=quick  # compose with overrides, as `dvc exp run -S` does

`dvc repro` never composes: it reads params.yaml as it is, so a params.yaml older than conf/
would silently win. `dvc exp run` composes with DVC's own function (Hydra composition enabled in
.dvc/config); this module calls that same function, so both write identical files.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

from dvc.utils.hydra import compose_and_dump

from src.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / "params.yaml"
CONFIG_DIR = REPO / "conf"
CONFIG_NAME = "train"


def compose_params(overrides: list[str], config_dir: Path = CONFIG_DIR) -> str:
    """params.yaml's text for conf/ with these overrides, as `dvc exp run -S` writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(out, str(config_dir), None, CONFIG_NAME, str(REPO), overrides)
        return out.read_text(encoding="utf-8")


def stale_diff(path: Path, expected: str) -> str:
    """A unified diff from the file to what it should hold; empty when they agree."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = difflib.unified_diff(
        current.splitlines(keepends=True),
        expected.splitlines(keepends=True),
        fromfile=f"{path.name} (as it is)",
        tofile=f"{path.name} (composed from conf/)",
    )
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--params-file", type=Path, default=PARAMS_FILE, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=quick")
    args = parser.parse_args(argv)
    params_file: Path = args.params_file
    expected = compose_params(args.overrides)
    if args.check:
        diff = stale_diff(params_file, expected)
        if diff:
            print(diff, end="")
            command = " ".join(["python -m src.config.params", *args.overrides])
            print(
                f"seqlab: {params_file} is not what conf/ composes to; "
                f"run `{command}` and commit it",
                file=sys.stderr,
            )
            return 1
        print(f"seqlab: {params_file} matches conf/")
        return 0
    atomic_write_text(params_file, expected)
    print(f"seqlab: wrote {params_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
