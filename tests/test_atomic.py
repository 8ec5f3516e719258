import subprocess
import sys

from src.atomic import remove_stale_temporaries
from tests.conftest import REPO

# atomic_write_text, killed between writing its temporary file and renaming it.
KILLED_WRITER = (
    "import os, sys; from pathlib import Path; import src.atomic as atomic; "
    "atomic.publish = lambda tmp, path: os._exit(9); "
    "atomic.atomic_write_text(Path(sys.argv[1]), 'half a row')"
)


def test_the_temporaries_of_killed_writers_are_swept_from_anywhere_in_a_run(tmp_path):
    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(run / "csv" / "metrics.csv")], cwd=REPO
    )
    assert killed.returncode == 9
    (left,) = (run / "csv").iterdir()  # the kill left its temporary, not metrics.csv
    cut_off = [
        left,
        run / ".config.yaml.k2x_9abc.tmp",
        run / "checkpoints" / ".last.ckpt.abcd1234.tmp",
    ]
    # Files that are not a writer's temporaries: a lock, a write probe, another tool's file.
    others = [run / ".seqlab.lock", run / ".write-probe.abcd1234", run / "wandb" / ".a.tmp"]
    for path in [*cut_off[1:], *others]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")

    assert sorted(remove_stale_temporaries(run)) == sorted(cut_off)
    assert not any(path.exists() for path in cut_off)
    assert all(path.exists() for path in others)
