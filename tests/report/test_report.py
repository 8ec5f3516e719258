"""The report from real runs: both protocols side by side, intervals, comparisons, results.json."""

import json

import pytest
from omegaconf import OmegaConf

from src.report.__main__ import write_report
from src.report.markdown import criterion_met, protocol_line, runs_table, task_section
from src.report.runs import MissingRunError, Run, load_study
from src.report.stats import summarise
from src.training.run import train
from tests.conftest import QUICK, command

CELLS, PROTOCOLS, SEEDS = ("rnn", "gru"), ("classic", "best"), (1, 2)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """8 quick runs: 2 cells x 2 protocols x 2 seeds on a small multiplication problem."""
    root = tmp_path_factory.mktemp("study")
    data_dir = tmp_path_factory.mktemp("data")
    for protocol in PROTOCOLS:
        for cell in CELLS:
            for seed in SEEDS:
                run_dir = root / "multiply" / protocol / cell / f"seed{seed}"
                train(command("train", f"experiment=multiply_{protocol}", *QUICK, f"model={cell}",
                              f"seed={seed}", f"paths.run_dir={run_dir}",
                              f"paths.data_dir={data_dir}", "trainer.enable_progress_bar=false",
                              "~callbacks.model_summary"))  # fmt: skip
    return root


def study(tasks=()) -> dict:
    return {"cells": list(CELLS), "protocols": list(PROTOCOLS), "multiply_seeds": list(SEEDS),
            "mnist_seeds": [], "tasks": list(tasks), "task_seeds": list(SEEDS)}  # fmt: skip


def test_runs_are_found_by_task_protocol_cell_and_seed(study_dir):
    runs = load_study(study(), study_dir)
    assert [(r.protocol, r.cell, r.seed) for r in runs] == [
        (p, c, s) for p in PROTOCOLS for c in CELLS for s in SEEDS
    ]
    assert {r.config["protocol"] for r in runs if r.protocol == "best"} == {"best"}
    with pytest.raises(MissingRunError, match=r"seed3/metrics.json is missing: run `dvc repro`"):
        load_study({**study(), "multiply_seeds": [1, 3]}, study_dir)


def test_the_table_sets_both_protocols_beside_the_published_figure(study_dir):
    runs = load_study(study(), study_dir)
    text = "\n".join(task_section("multiply", list(PROTOCOLS), list(CELLS), runs))
    header = "| cell | parameters (ours / Keras) | classic protocol | best protocol | published |"
    assert header in text
    gru_best = summarise(r.metrics["test/tolerance_accuracy"] for r in runs
                         if (r.protocol, r.cell) == ("best", "gru"))  # fmt: skip
    assert f"{100 * gru_best.mean:.1f}% ± {100 * gru_best.ci95:.1f}" in text
    assert "| gru | 8,671 / 8,671 |" in text and "98.9-99.3%" in text
    assert "* classic protocol: gru - rnn: " in text
    assert "* best against classic: rnn best - classic: " in text and "gru best - classic" in text
    assert "| multiply | best | gru | 2 |" in "\n".join(runs_table(runs))


def test_write_report_leaves_markdown_figures_and_every_seed_in_results_json(study_dir, tmp_path):
    params, study_file = tmp_path / "params.yaml", tmp_path / "study.yaml"
    OmegaConf.save({"profile": "quick"}, params)
    OmegaConf.save({"study": study()}, study_file)
    report = write_report(params, study_file, tmp_path / "reports", study_dir)

    text = report.read_text()
    assert "Quick profile" in text and "**multiply, best**:" in text
    assert "cosine" in text.split("**multiply, best**:")[1].splitlines()[0].lower()
    results = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert len(results["runs"]) == 8
    record = next(
        r for r in results["runs"] if (r["protocol"], r["cell"], r["seed"]) == ("best", "gru", 2)
    )
    metrics = json.loads((study_dir / "multiply/best/gru/seed2/metrics.json").read_text())
    score = metrics["test/tolerance_accuracy"]
    assert record["score"] == score == record["test"]["test/tolerance_accuracy"]
    assert record["epochs"] == 2 and record["fit_seconds"] > 0
    summary = next(s for s in results["summaries"] if (s["protocol"], s["cell"]) == ("best", "gru"))
    assert summary["seeds"] == [1, 2] and summary["n"] == 2 and summary["ci95"] >= 0
    for figure in ("curves_multiply", "predictions_multiply"):
        assert (tmp_path / "reports" / "figures" / f"{figure}.png").stat().st_size > 10_000


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_the_protocol_line_names_a_chrono_init_where_a_cell_has_gates_to_open(cell, tmp_path):
    config = OmegaConf.to_container(
        command("train", "experiment=adding_best", f"model={cell}", "model.init=chrono"),
        resolve=True,
    )
    run = Run("adding", "best", cell, 1, tmp_path, {}, config)  # type: ignore[arg-type]
    line = protocol_line([run])
    assert ("chrono init up to 100 steps" in line) == (cell == "lstm")
    assert "fresh training sequences every epoch (online)" in line


@pytest.mark.parametrize("shift", [0, 2])
def test_the_protocol_line_names_shifted_training_digits_where_a_run_had_them(shift, tmp_path):
    config = OmegaConf.to_container(
        command("train", "experiment=mnist_best", f"data.augment_shift={shift}"), resolve=True
    )
    run = Run("mnist", "best", "gru", 1, tmp_path, {}, config)  # type: ignore[arg-type]
    moved = "training digits moved up to 2 pixels each way, anew every epoch"
    assert (moved in protocol_line([run])) == (shift == 2)


def test_the_suite_counts_the_seeds_that_get_every_test_sequence_right(tmp_path):
    def run(protocol: str, cell: str, seed: int, score: float) -> Run:
        return Run("reber", protocol, cell, seed, tmp_path, {"test/sequence_acc": score}, {})

    runs = [run("classic", "gru", 1, 1.0), run("classic", "gru", 2, 0.999),
            run("best", "gru", 1, 1.0), run("best", "gru", 2, 1.0)]  # fmt: skip
    lines = criterion_met("reber", ["classic", "best"], ["rnn", "gru"], runs)
    assert (
        lines[0]
        == "Seeds that meet the source's criterion (every step of every test string right):"
    )
    assert lines[2:4] == ["* classic protocol: gru 1 of 2.", "* best protocol: gru 2 of 2."]
    assert criterion_met("multiply", ["best"], ["gru"], runs) == []
