"""Every task of the suite is learned by a small model in seconds, through the whole pipeline."""

import pytest

from src.training.run import train
from tests.conftest import run_command

SMALL = ["num_threads=1", "trainer.deterministic=true"]

CASES = {
    "chars": (["data=chars", "trainer.max_epochs=40", "optimizer.lr=0.05"], "test/acc", 1.0),
    "adding": (
        ["data=adding", "data.seq_len=20", "data.num_train=1024", "data.num_test=256",
         "data.num_val=256", "trainer.max_epochs=15", "data.batch_size=16"],
        "test/tolerance_accuracy",
        0.5,
    ),
    "temporal_order": (
        ["data=temporal_order", "data.seq_len=10", "data.num_train=1024", "data.num_test=256",
         "data.num_val=256", "trainer.max_epochs=10", "data.batch_size=16"],
        "test/acc",
        0.95,
    ),
    "reber": (["data=reber", "trainer.max_epochs=60", "optimizer.lr=0.01"], "test/step_acc", 0.95),
    "copy": (
        ["data=copy", "data.lag=5", "data.to_copy=3", "data.categories=4", "data.input_size=6",
         "data.num_classes=5", "data.num_train=2048", "data.num_test=256", "data.num_val=256",
         "trainer.max_epochs=15", "optimizer.lr=0.01"],
        "test/key_acc",
        0.9,
    ),
}  # fmt: skip


@pytest.mark.parametrize("task", CASES)
def test_a_small_gru_learns_the_task(compose_cfg, task):
    overrides, metric, least = CASES[task]
    results = train(compose_cfg(*overrides, *SMALL))
    print(task, {k: round(v, 4) for k, v in results.items() if k.startswith("test/")})
    assert results[metric] >= least, results


def test_predict_continues_a_prompt_with_what_the_chars_model_learned(compose_cfg, tmp_path):
    run_dir = tmp_path / "hello"
    cfg = compose_cfg(*CASES["chars"][0], *SMALL, f"paths.run_dir={run_dir}")
    train(cfg)
    done = run_command(
        "src.predict", f"ckpt_path={run_dir}/checkpoints/best.ckpt", "prompt=hell", "length=1"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'hell' continues as 'o'" in done.stdout
    # Every step's prediction of a split, as CSV.
    done = run_command("src.predict", f"ckpt_path={run_dir}/checkpoints/best.ckpt")
    rows = (run_dir / "predictions" / "best-test.csv").read_text().splitlines()
    assert rows[0] == "index,step,target,prediction" and len(rows) == 5
    assert all(row.split(",")[2] == row.split(",")[3] for row in rows[1:])
    refused = run_command("src.predict", f"ckpt_path={run_dir}/checkpoints/best.ckpt", "prompt=")
    assert refused.returncode != 0 and "prompt" in refused.stderr
