import json
import struct
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
import wandb
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from src.tracking.loggers import _AtomicCSVWriter
from src.training.run import train
from tests.conftest import QUICK

# Read the records of an offline W&B run from its `.wandb` file (what `wandb sync` uploads).
#
# The file is a 7-byte header (":W&B", magic, version) and then LevelDB-log chunks in 32 KiB
# blocks: crc32 (4 bytes), length (2, little-endian), type (1: full, 2: first, 3: middle, 4: last).
BLOCK = 32 * 1024
FILE_HEADER = 7
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    offset, pending = FILE_HEADER, b""
    while offset + CHUNK_HEADER <= len(data):
        if BLOCK - offset % BLOCK < CHUNK_HEADER:
            offset += BLOCK - offset % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + CHUNK_HEADER])
        chunk = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
        else:
            return


def read_records(wandb_file: Path) -> list[wandb_internal_pb2.Record]:
    records = []
    for payload in _payloads(wandb_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


TWO_EPOCHS = ["trainer.max_epochs=2", *QUICK]


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def records_by_kind(run: Path) -> dict[str, list]:
    (wandb_file,) = run.glob("*.wandb")
    kinds: dict[str, list] = {}
    for record in read_records(wandb_file):
        kinds.setdefault(record.WhichOneof("record_type"), []).append(record)
    return kinds


def history_keys(records: list) -> Counter:
    return Counter(
        item.key or "/".join(item.nested_key) for record in records for item in record.history.item
    )


def test_wandb_offline_run_holds_history_config_and_checkpoint_artifact(
    compose_cfg, tmp_path, wandb_offline
):
    run_dir = tmp_path / "run"
    cfg = compose_cfg(
        "logger=wandb",
        f"paths.run_dir={run_dir}",
        "logger.wandb.group=sweep-a",
        "logger.wandb.tags=[smoke,gru]",
        *TWO_EPOCHS,
    )
    train(cfg)

    (run,) = offline_runs(run_dir)
    records = records_by_kind(run)
    (start,) = records["run"]
    assert start.run.display_name == "gru-multiply"
    assert start.run.project == "seqlab"
    assert start.run.run_group == "sweep-a"
    assert list(start.run.tags) == ["smoke", "gru"]
    assert (run_dir / "checkpoints" / "wandb_run_id").read_text().strip() == start.run.run_id

    config = {
        item.key: json.loads(item.value_json) for r in records["config"] for item in r.config.update
    }
    assert config["model"]["cell"] == "gru" and config["seed"] == 42

    logged = history_keys(records["history"])
    assert logged["val/mse"] == 2 and logged["train/loss"] == 2 and logged["test/mse"] == 1
    assert {"plots/learning_curves/_type", "plots/predictions/_type"} <= set(logged)

    artifacts = [r.artifact for r in records["artifact"]]
    assert {a.type for a in artifacts} == {"model"}
    # An alias names one version: the last one logged with it.
    best = [a for a in artifacts if "best" in a.aliases][-1]
    latest = [a for a in artifacts if "latest" in a.aliases][-1]
    for artifact, name in ((best, "best.ckpt"), (latest, "last.ckpt")):
        (entry,) = artifact.manifest.contents
        assert entry.path == "model.ckpt"
        assert Path(entry.local_path).read_bytes() == (run_dir / "checkpoints" / name).read_bytes()
    assert wandb.run is None


def test_wandb_goes_offline_with_a_message_when_it_cannot_log_online(
    compose_cfg, tmp_path, wandb_offline, monkeypatch, capsys
):
    monkeypatch.setenv("WANDB_MODE", "online")  # and no API key anywhere
    run_dir = tmp_path / "run"
    train(compose_cfg("logger=wandb", f"paths.run_dir={run_dir}", "trainer.max_epochs=1", *QUICK))
    message = capsys.readouterr().err
    assert "W&B cannot log online" in message and "wandb sync" in message
    assert len(offline_runs(run_dir)) == 1


def test_jobs_in_one_process_get_their_own_wandb_runs(compose_cfg, tmp_path, wandb_offline):
    # A Hydra multirun runs its jobs one after another in one process.
    for job in ("0", "1"):
        train(compose_cfg("logger=wandb", f"paths.run_dir={tmp_path / job}", *TWO_EPOCHS))
        assert wandb.run is None
    ids = {
        records_by_kind(run)["run"][0].run.run_id
        for job in ("0", "1")
        for run in offline_runs(tmp_path / job)
    }
    assert len(ids) == 2


def test_tensorboard_event_files_hold_metrics_config_and_plots(compose_cfg, tmp_path):
    run_dir = tmp_path / "run"
    train(compose_cfg("logger=tensorboard", f"paths.run_dir={run_dir}", *TWO_EPOCHS))
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert [e.step for e in events.Scalars("val/mse")] == sorted(
        e.step for e in events.Scalars("val/mse")
    )
    assert len(events.Scalars("val/mse")) == 2 and len(events.Scalars("test/mse")) == 1
    assert {"plots/learning_curves", "plots/predictions"} <= set(tags["images"])
    assert "cell: gru" in (run_dir / "tensorboard" / "hparams.yaml").read_text()


def test_many_loggers_write_side_by_side_and_dvclive_leaves_the_repository_alone(
    compose_cfg, tmp_path, wandb_offline, monkeypatch
):
    repository = tmp_path / "repository"
    repository.mkdir()
    subprocess.run(["git", "init", "-q", str(repository)], check=True)
    monkeypatch.chdir(repository)
    run_dir = tmp_path / "run"
    train(compose_cfg("logger=many", f"paths.run_dir={run_dir}", *TWO_EPOCHS))

    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert sum(1 for row in rows[1:] if row.split(",")[rows[0].split(",").index("val/mse")]) == 2
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    val_mse = (run_dir / "dvclive" / "plots" / "metrics" / "val" / "mse.tsv").read_text()
    assert len(val_mse.splitlines()) == 3  # header and two epochs
    assert "cell: gru" in (run_dir / "dvclive" / "params.yaml").read_text()
    assert (run_dir / "dvclive" / "plots" / "images" / "predictions.png").is_file()
    assert len(offline_runs(run_dir)) == 1
    assert not (repository / ".dvc").exists() and not (repository / "dvc.yaml").exists()
    status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == ""


def test_plots_are_written_for_the_tested_checkpoint(compose_cfg, tmp_path):
    run_dir = tmp_path / "run"
    train(compose_cfg(f"paths.run_dir={run_dir}", *TWO_EPOCHS))
    for name in ("learning_curves.png", "predictions.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.glob(".*.png"))  # no temporary file left behind
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1


def test_the_csv_writer_replaces_hparams_whole_and_only_when_they_change(tmp_path):
    writer = _AtomicCSVWriter(str(tmp_path))
    hparams = tmp_path / writer.NAME_HPARAMS_FILE
    writer.log_hparams({"cell": "gru"})
    written = hparams.stat()
    for step in range(3):
        writer.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
        writer.save()
    assert hparams.stat().st_mtime_ns == written.st_mtime_ns, "a metrics save rewrote hparams"
    writer.log_hparams({"lr": 0.1})
    assert "cell: gru" in hparams.read_text() and "lr: 0.1" in hparams.read_text()
    assert hparams.stat().st_ino != written.st_ino, "rewritten in place, not renamed over"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hparams.yaml", "metrics.csv"]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 4
