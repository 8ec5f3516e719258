"""The source tree keeps its shape: DVC stages depend on every module they run, and imports go
one way, from the entry points down to the data."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
ENTRY_POINTS = {"src.train", "src.eval", "src.predict", "src.prepare", "src.repro"}
# Each package may import only the packages below it (and itself).
LAYERS = {
    "src.atomic": set(),
    "src.config": {"src.atomic"},
    "src.data": {"src.atomic", "src.config"},
    "src.models": {"src.atomic", "src.config", "src.data"},
    "src.tracking": {"src.atomic", "src.config", "src.data", "src.models"},
    "src.sweeps": {"src.atomic", "src.config"},
    "src.training": {"src.atomic", "src.config", "src.data", "src.models", "src.tracking"},
    "src.report": {
        "src.atomic",
        "src.config",
        "src.data",
        "src.models",
        "src.tracking",
        "src.training",
    },
}


def module_file(module: str) -> Path | None:
    path = REPO / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every src module `path` imports, at the top or inside a function (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name.startswith("src") and module_file(name)}
    return found


def closure(module: str) -> set[Path]:
    """The files of `module` and of everything it imports, transitively, with the packages'
    __init__ files that Python runs on the way."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imported_modules(path))
    return seen


def conf_targets() -> set[str]:
    """Modules that conf/ names as `_target_` (Hydra imports them when it instantiates)."""
    targets = set()
    for path in (REPO / "conf").rglob("*.yaml"):
        for match in re.finditer(r"_target_:\s*(src\.[\w.]+)\.\w+", path.read_text()):
            targets.add(match.group(1))
    return targets


def stage_specs() -> dict[str, dict]:
    """Each stage's definition; a foreach stage's is its `do` body."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def stage_commands() -> dict[str, str]:
    return {name: spec["cmd"] for name, spec in stage_specs().items()}


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(stage_commands()))
def test_every_module_a_stage_runs_is_among_its_deps(stage):
    spec = stage_specs()[stage]
    (entry,) = re.findall(r"python -m (src[\w.]*)", spec["cmd"])
    modules = {entry}
    if entry == "src.train":  # Hydra instantiates what conf/ names: loggers, callbacks, data
        modules |= conf_targets()
    files = set().union(*(closure(module) for module in modules))
    if entry == "src.report":  # `python -m` runs the package's __main__
        files |= closure("src.report.__main__")
    # An empty package marker runs nothing; one that gains code must be listed like any module.
    files = {path for path in files if path.read_text().strip() or path.name != "__init__.py"}
    missing = sorted(p.relative_to(REPO).as_posix() for p in files if not covered(p, spec["deps"]))
    assert not missing, f"stage {stage} runs these modules but does not depend on them: {missing}"


def test_the_deps_test_sees_a_missing_module():
    deps = ["src/train.py", "src/config", "src/data"]
    files = closure("src.train")
    assert not all(covered(path, deps) for path in files)
    assert covered(SRC / "config" / "checks.py", deps)


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


@pytest.mark.parametrize(
    "path", sorted(SRC.rglob("*.py")), ids=lambda p: p.relative_to(SRC).as_posix()
)
def test_imports_go_one_way(path):
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = package_of(module)
    if module in ENTRY_POINTS or package not in LAYERS:
        return
    allowed = LAYERS[package] | {package}
    wrong = sorted(
        name for name in imported_modules(path) if package_of(name) not in allowed and name != "src"
    )
    assert not wrong, f"{module} imports {wrong}; {package} may import only {sorted(allowed)}"


def test_no_module_imports_an_entry_point():
    importers = {
        path.relative_to(REPO).as_posix(): sorted(imported_modules(path) & ENTRY_POINTS)
        for path in SRC.rglob("*.py")
    }
    assert {path: names for path, names in importers.items() if names} == {}


def test_the_command_line_composes_and_checks_before_any_heavy_import():
    heavy = ("torch", "lightning", "wandb", "dvclive", "matplotlib", "optuna", "dvc")
    for entry in ENTRY_POINTS:
        top_level = {
            alias.name.split(".")[0]
            for node in ast.parse(module_file(entry).read_text()).body
            for alias in getattr(node, "names", [])
            if isinstance(node, ast.Import)
        } | {
            node.module.split(".")[0]
            for node in ast.parse(module_file(entry).read_text()).body
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not top_level & set(heavy), (entry, top_level & set(heavy))
