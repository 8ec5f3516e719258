"""The config side of a command: value checks, user errors, override hints, instantiation."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def config_groups() -> dict[str, list[str]]:
    """{group: options} of conf/, read from its files (Hydra's own listing composes the config
    once per option). Options named `_...` are bases that other options extend."""
    groups: dict[str, list[str]] = {}
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if group != "." and not path.stem.startswith("_"):
            groups.setdefault(group, []).append(path.stem)
    return groups
