"""`python -m src.repro`: DVC stages over the DAG, several at a time, in a real DVC repository.

The pipeline here is three tiny stages: `left` and `right` are independent, `join` reads both.
Each stage records when its command started and ended, which shows what ran side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.repro import Pipeline, resolve_targets
from tests.test_dvc import GIT_IDENTITY

pytestmark = pytest.mark.slow

STAMP = (
    "import json, sys, time; start = time.time(); time.sleep({sleep}); "
    "json.dump([start, time.time()], open(sys.argv[1], 'w'))"
)


def stage(out: str, sleep: float, deps: list[str] = ()) -> dict:
    command = STAMP.format(sleep=sleep)
    return {"cmd": f'python -c "{command}" {out}', "deps": list(deps), "outs": [out]}


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    env = {
        **os.environ,
        **GIT_IDENTITY,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=env)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True, env=env)
    stages = {
        "left": stage("left.json", 2.0),
        "right": stage("right.json", 2.0),
        "join": stage("join.json", 0.0, ["left.json", "right.json"]),
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return tmp_path, env


def repro(repo: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess:
    root, env = repo
    return subprocess.run(
        [sys.executable, "-m", "src.repro", *args],
        cwd=root,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=120,
    )


def interval(root: Path, name: str) -> tuple[float, float]:
    start, end = json.loads((root / f"{name}.json").read_text())
    return start, end


def test_independent_stages_run_side_by_side_and_dependents_wait(repo):
    root = repo[0]
    result = repro(repo, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    left, right, join = (interval(root, name) for name in ("left", "right", "join"))
    assert left[0] < right[1] and right[0] < left[1], "left and right did not overlap"
    assert join[0] >= max(left[1], right[1]), "join started before what it reads was written"
    assert set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) == {
        "left",
        "right",
        "join",
    }
    assert "all 3 stages done" in result.stdout

    again = repro(repo, "--jobs", "2")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(": up to date") == 3
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=root,
        env=repo[1],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(status.stdout) == {}


def test_one_job_runs_the_stages_one_after_another(repo):
    root = repo[0]
    result = repro(repo, "--jobs", "1", "join")
    assert result.returncode == 0, result.stderr
    left, right = interval(root, "left"), interval(root, "right")
    assert left[1] <= right[0] or right[1] <= left[0]


def test_a_failed_stage_stops_its_dependents_and_says_which(repo):
    root = repo[0]
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    pipeline["stages"]["left"]["cmd"] = "python -c \"raise SystemExit('left broke')\""
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    result = repro(repo, "--jobs", "2")
    assert result.returncode == 1
    assert "left: FAILED" in result.stdout
    assert "left broke" in result.stderr  # the failed stage's own output
    assert "stage left failed; 1 stage(s) not run" in result.stderr
    assert not (root / "join.json").exists()
    assert (root / "right.json").exists()  # it was already running, and finished


def test_targets_name_stages_or_matrix_groups_and_bring_what_they_need():
    pipeline = Pipeline(
        ["data", "train@a", "train@b", "report", "other"],
        {
            "data": set(),
            "train@a": {"data"},
            "train@b": {"data"},
            "report": {"train@a", "train@b"},
            "other": set(),
        },
    )
    assert resolve_targets(pipeline, ["report"]) == ["data", "train@a", "train@b", "report"]
    assert resolve_targets(pipeline, ["train"]) == ["data", "train@a", "train@b"]
    assert resolve_targets(pipeline, []) == pipeline.order
    with pytest.raises(SystemExit, match=r"no stage named trian in dvc\.yaml\. Fix: one of data"):
        resolve_targets(pipeline, ["trian"])


def test_outside_a_dvc_repository_it_says_where_to_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "src.repro"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "is not a DVC repository. Fix: run python -m src.repro from the" in result.stderr
    assert "Traceback" not in result.stderr
