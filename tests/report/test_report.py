"""The report sets each suite task's scores beside its source's figure."""

import json

from omegaconf import OmegaConf

from src.report.markdown import runs_table
from src.report.runs import load_study
from src.report.suite import suite_section
from src.training.run import train


def test_the_suite_table_gives_the_rule_the_seeds_and_the_papers_figure(compose_cfg, tmp_path):
    root = tmp_path / "study"
    for seed in (1, 2):
        run_dir = root / "adding" / "lstm" / f"seed{seed}"
        train(compose_cfg("data=adding", "model=lstm", f"seed={seed}", "profile=quick",
                          f"paths.run_dir={run_dir}"))  # fmt: skip
    study = {"cells": ["lstm"], "multiply_seeds": [], "mnist_seeds": [], "tasks": ["adding"],
             "task_seeds": [1, 2]}  # fmt: skip
    runs = load_study(study, root)
    assert [(r.task, r.cell, r.seed) for r in runs] == [
        ("adding", "lstm", 1),
        ("adding", "lstm", 2),
    ]
    text = "\n".join(suite_section(["adding"], ["lstm"], runs))
    scores = [json.loads((r.path / "metrics.json").read_text()) for r in runs]
    mean = 100 * sum(s["test/tolerance_accuracy"] for s in scores) / 2
    assert "Adding problem (1997, experiment 4): |error| < 0.04 at the end" in text
    assert f"| lstm | {mean:.1f}% ± " in text and "2 seeds" in text
    assert "1 wrong of 2,560" in text and "Table 7" in text
    assert OmegaConf.load(runs[0].path / "config.yaml").data.name == "adding"
    assert "| adding | lstm | 1 |" in "\n".join(runs_table(runs))
    assert suite_section([], ["lstm"], runs) == []
