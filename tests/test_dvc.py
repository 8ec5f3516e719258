"""The DVC pipeline end to end, at the quick profile, in a fresh clone of this repository.

One clone and one `dvc repro` serve the tests below, which run in file order: the first checks
what the repro produced, the next ones change one thing at a time. MNIST comes from a small fake
mirror (SEQLAB_MNIST_MIRROR) whose digests the clone's conf/data/mnist.yaml states.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, write_fake_mnist

pytestmark = pytest.mark.slow

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "seqlab tests",
    "GIT_AUTHOR_EMAIL": "tests@seqlab.invalid",
    "GIT_COMMITTER_NAME": "seqlab tests",
    "GIT_COMMITTER_EMAIL": "tests@seqlab.invalid",
}


# A guard against a hang, not a timing: the first `dvc repro` runs some 40 stages one after
# another, and on a 2-core machine shared with other test workers that took over 10 minutes.
TIMEOUT_SECONDS = 1800


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output[-4000:]}"
    return output


def dvc(repo: Path, env: dict[str, str], *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], repo, env)


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def clone_working_tree(dest: Path, env: dict[str, str]) -> None:
    """A git clone of this repository with the working tree's uncommitted changes on top."""
    run(["git", "clone", "--quiet", str(REPO), str(dest)], REPO, env)
    listed = run(["git", "ls-files", "-z", "-co", "--exclude-standard"], REPO, env)
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for name in filter(None, run(["git", "ls-files", "-z", "-d"], REPO, env).split("\0")):
        (dest / name).unlink(missing_ok=True)


def quick_study_clone(
    repo: Path,
    checksums: dict,
    env: dict[str, str],
    protocols: str = "[classic, best]",
    tasks: str = "[chars]",
) -> None:
    """A clone of this repository whose study runs at the quick profile on the fake MNIST, one
    seed per cell, with `tasks` alone of the task suite."""
    clone_working_tree(repo, env)
    mnist_conf = repo / "conf" / "data" / "mnist.yaml"
    mnist_text = mnist_conf.read_text().replace(
        "checksums: null", f"checksums: {json.dumps(checksums)}"
    )
    # The fake mirror holds 1,500 training images: validate on 500 of them, not MNIST's 5,000.
    mnist_conf.write_text(mnist_text.replace("val_size: 5000", "val_size: 500"))
    # This repository's default becomes the quick profile, so plain `dvc exp run -S ...`
    # (which recomposes from the defaults) stays quick too; one seed per cell.
    train_conf = repo / "conf" / "train.yaml"
    train_conf.write_text(train_conf.read_text().replace("profile: full", "profile: quick"))
    study_conf = repo / "conf" / "study.yaml"
    study_text = study_conf.read_text().replace("[1, 2, 3, 4, 5]", "[1]")
    study_text = study_text.replace("protocols: [classic, best]", f"protocols: {protocols}")
    study_text, replaced = re.subn(r"(?m)^  tasks: \[.*\]$", f"  tasks: {tasks}", study_text)
    assert replaced == 1, "conf/study.yaml has no `tasks: [...]` line"
    study_conf.write_text(study_text)
    run([sys.executable, "-m", "src.config.params"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "--quiet", "-m", "quick profile, fake MNIST"], repo, env)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dvc_study")
    repo, mirror = root / "repo", root / "mirror"
    env = {
        **os.environ,
        **GIT_IDENTITY,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SEQLAB_MNIST_MIRROR": str(mirror),
        "DVC_NO_ANALYTICS": "1",
    }
    checksums = write_fake_mnist(mirror, train=1500, test=200)
    quick_study_clone(repo, checksums, env)
    return {
        "repo": repo,
        "env": env,
        "checksums": checksums,
        "first_repro": dvc(repo, env, "repro"),
    }


def test_repro_runs_every_stage_and_writes_metrics_plots_and_report(study):
    repo, env = study["repo"], study["env"]
    stages = set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
    assert {"prepare_mnist", "prepare_multiply", "report", "train"} <= stages
    assert "prepare_task@chars" in stages
    for protocol in ("classic", "best"):
        for stage in ("train_multiply@", "train_mnist@", "train_task@chars-"):
            assert {f"{stage}{protocol}-{cell}-1" for cell in ("rnn", "lstm", "gru")} <= stages
    assert stages_run(study["first_repro"]) == stages
    assert (repo / "data" / "multiply" / "study.pt").is_file()
    assert (repo / "data" / "mnist" / "mnist.pt").is_file()

    metrics = json.loads(dvc(repo, env, "metrics", "show", "--json"))
    files = next(iter(metrics.values()))["data"]
    assert len(files) == 19  # 3 cells x 3 tasks x 2 protocols, and the train stage
    for protocol in ("classic", "best"):
        gru = files[f"runs/study/multiply/{protocol}/gru/seed1/metrics.json"]["data"]
        assert 0 <= gru["test/tolerance_accuracy"] <= 1 and gru["num_params"] == 8671
    best = yaml.safe_load((repo / "runs/study/multiply/best/gru/seed1/config.yaml").read_text())
    assert best["protocol"] == "best" and best["trainer"]["max_epochs"] == 2  # quick wins
    assert (repo / "runs/study/mnist/classic/lstm/seed1/checkpoints/best.ckpt").is_file()

    dvc(repo, env, "plots", "show", "--out", "plots")
    assert "val/loss" in (repo / "plots" / "index.html").read_text()
    assert "report" in dvc(repo, env, "dag")

    report = (repo / "reports" / "results.md").read_text()
    assert "Quick profile" in report
    for row in ("| rnn | 2,911 / 2,851 |", "| lstm |", "| gru | 8,671 / 8,671 |", "97.27%"):
        assert row in report
    assert "94.8-95.9% (1997 paper: 99.45%)" in report
    for figure in ("curves_multiply", "curves_mnist", "predictions_multiply"):
        assert (repo / "reports" / "figures" / f"{figure}.png").stat().st_size > 10_000
        assert f"figures/{figure}.png" in report
    assert "### Next-character prediction: test `test/acc`" in report
    assert "Seeds that meet the source's criterion (every next character" in report
    results = json.loads((repo / "reports" / "results.json").read_text())
    assert len(results["runs"]) == 18 and len(results["summaries"]) == 18


def without_timings(row: dict) -> dict:
    # Seconds differ from run to run, and the tested checkpoint's path from clone to clone.
    return {
        k: v
        for k, v in row.items()
        if "time" not in k and "seconds" not in k and k != "test_checkpoint"
    }


def test_the_parallel_repro_gives_every_run_the_serial_numbers(study, tmp_path):
    serial, env = study["repo"], study["env"]
    parallel = tmp_path / "repo"
    # One protocol and no suite task keep the test short; the serial study ran them all.
    quick_study_clone(parallel, study["checksums"], env, protocols="[best]", tasks="[]")
    output = run([sys.executable, "-m", "src.repro", "--jobs", "2", "report"], parallel, env)
    assert "all 9 stages done" in output  # 2 prepare, 6 training, the report

    runs = sorted((serial / "runs" / "study").glob("m*/best/*/*/metrics.json"))
    assert len(runs) == 6
    for serial_metrics in runs:
        run_dir = serial_metrics.parent.relative_to(serial)
        expected = without_timings(json.loads(serial_metrics.read_text()))
        got = without_timings(json.loads((parallel / run_dir / "metrics.json").read_text()))
        assert got == expected, run_dir
        with (
            open(serial / run_dir / "csv" / "metrics.csv") as a,
            open(parallel / run_dir / "csv" / "metrics.csv") as b,
        ):
            assert [without_timings(r) for r in csv.DictReader(b)] == [
                without_timings(r) for r in csv.DictReader(a)
            ], run_dir
    # Every stage but `train` (not a target) is recorded in dvc.lock as up to date.
    assert set(json.loads(dvc(parallel, env, "status", "--json"))) == {"train"}


def test_second_repro_is_a_no_op(study):
    output = dvc(study["repo"], study["env"], "repro")
    assert stages_run(output) == set()
    assert "up to date" in output


def stages_changed_by(repo: Path, env: dict[str, str], path: Path, addition: str) -> set[str]:
    """The stages `dvc status` finds changed while `path` has `addition` at its end."""
    original = path.read_text()
    path.write_text(original + addition)
    try:
        return set(json.loads(dvc(repo, env, "status", "--json")))
    finally:
        path.write_text(original)


def test_a_param_change_reruns_only_its_dependents(study):
    repo, env = study["repo"], study["env"]
    # The train stage alone reads the seed from params.yaml; study runs set their own.
    run([sys.executable, "-m", "src.config.params", "seed=7"], repo, env)
    assert stages_run(dvc(repo, env, "repro")) == {"train"}

    # A conf/ edit reaches exactly the runs that compose that file.
    changed = stages_changed_by(repo, env, repo / "conf" / "model" / "rnn.yaml", "init: torch\n")
    assert changed == {
        f"{stage}{protocol}-rnn-1"
        for stage in ("train_multiply@", "train_mnist@", "train_task@chars-")
        for protocol in ("classic", "best")
    }  # fmt: skip
    # A protocol's file reaches that protocol's runs of its task.
    best = repo / "conf" / "experiment" / "multiply_best.yaml"
    changed = stages_changed_by(repo, env, best, "# edited\n")
    assert changed == {f"train_multiply@best-{cell}-1" for cell in ("rnn", "lstm", "gru")}


def test_exp_run_composes_params_runs_and_is_listed(study):
    repo, env = study["repo"], study["env"]
    output = dvc(repo, env, "exp", "run", "-S", "model=lstm", "-S", "data=multiply")
    assert stages_run(output) == {"train"}
    assert "cell: lstm" in (repo / "params.yaml").read_text()
    assert "profile: quick" in (repo / "params.yaml").read_text()

    shown = json.loads(dvc(repo, env, "exp", "show", "--json"))
    experiments = [exp for commit in shown for exp in (commit.get("experiments") or [])]
    assert experiments, "dvc exp show lists no experiment"
    latest = experiments[0]["revs"][0]["data"]
    assert latest["params"]["params.yaml"]["data"]["model"]["cell"] == "lstm"
    train_metrics = latest["metrics"]["runs/train/metrics.json"]["data"]
    assert train_metrics["num_params"] == 11551
