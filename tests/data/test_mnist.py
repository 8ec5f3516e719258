import signal

import pytest
import torch
from omegaconf import open_dict

from src.data.in_memory import OnlineDataset
from src.data.mnist import MNISTDataModule, as_sequence, pixel_permutation, shifted
from src.data.mnist_files import MNISTFetchError
from src.training.checkpoints import load_checkpoint
from src.training.run import train
from src.training.signals import RunInterrupted
from tests.conftest import NAMES, SHARED_MNIST, Interrupted, write_fake_mnist


def datamodule(tmp_path, mirror, checksums, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(
        data_dir=tmp_path / "data", local_mirror=str(mirror), checksums=checksums, **kwargs
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize(
    ("mode", "shape"), [("row", (16, 28, 28)), ("pixel", (16, 784, 1)), ("permuted", (16, 784, 1))]
)
def test_each_mode_gives_its_sequence_shape(tmp_path, fake_mnist, mode, shape):
    dm = datamodule(tmp_path, *fake_mnist, mode=mode, val_size=50, batch_size=16)
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["x"].shape == shape
    assert batch["x"].dtype == torch.float32
    assert batch["x"].min() >= 0.0 and batch["x"].max() <= 1.0
    assert batch["y"].dtype == torch.int64


def test_permutation_is_fixed_by_its_seed_and_reorders_pixels():
    assert torch.equal(pixel_permutation(3), pixel_permutation(3))
    assert not torch.equal(pixel_permutation(3), pixel_permutation(4))
    assert sorted(pixel_permutation(3).tolist()) == list(range(784))
    images = torch.arange(784, dtype=torch.float32).mul(255 / 783).round().view(1, 28, 28)
    pixels = as_sequence(images.to(torch.uint8), "pixel")
    permuted = as_sequence(images.to(torch.uint8), "permuted", pixel_permutation(3))
    torch.testing.assert_close(permuted[0, :, 0], pixels[0, pixel_permutation(3), 0])


def test_split_sizes_first_and_random(tmp_path, fake_mnist):
    dm = datamodule(tmp_path, *fake_mnist, val_size=50)
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 250, "val": 50, "test": 100}
    cache = torch.load(dm.cache_path, weights_only=True)["tensors"]
    assert torch.equal(dm.splits["val"].tensors["y"], cache["train_labels"][:50])
    shuffled = datamodule(tmp_path, *fake_mnist, val_size=50, val_split="random", split_seed=1)
    assert not torch.equal(shuffled.splits["val"].tensors["y"], cache["train_labels"][:50])
    subset = datamodule(tmp_path, *fake_mnist, val_size=50, train_subset=100)
    assert len(subset.splits["train"]) == 100


def test_cache_is_rebuilt_when_the_files_change(tmp_path):
    mirror = tmp_path / "mirror"
    dm = datamodule(tmp_path, mirror, write_fake_mnist(mirror, train=300), val_size=50)
    assert len(dm.splits["train"]) == 250
    dm = datamodule(tmp_path, mirror, write_fake_mnist(mirror, train=200), val_size=50)
    assert len(dm.splits["train"]) == 150


def test_corrupt_mirror_file_is_refused_and_nothing_is_cached(tmp_path, fake_mnist):
    mirror, checksums = fake_mnist
    path = mirror / NAMES["train_labels"]
    path.write_bytes(path.read_bytes()[:-8])
    dm = MNISTDataModule(data_dir=tmp_path / "data", local_mirror=str(mirror), checksums=checksums)
    with pytest.raises(MNISTFetchError) as info:
        dm.prepare_data()
    assert f"{path}: truncated gzip stream" in str(info.value)
    # The file fetched before the bad one stays (verified); nothing partial, no cache.
    assert [p.name for p in dm.root.iterdir()] == ["raw"]
    assert [p.name for p in (dm.root / "raw").iterdir()] == [NAMES["train_images"]]


def translated(image: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """`image` moved `down` rows and `right` columns (negative: up, left), zeros moved in."""
    height, width = image.shape
    moved = torch.zeros_like(image)
    moved[max(down, 0) : height + min(down, 0), max(right, 0) : width + min(right, 0)] = image[
        max(-down, 0) : height - max(down, 0), max(-right, 0) : width - max(right, 0)
    ]
    return moved


def test_shifted_moves_each_image_whole_by_at_most_max_shift_and_fills_in_background():
    images = torch.randint(1, 256, (300, 7, 9), dtype=torch.uint8)
    moved = shifted(images, 2, torch.Generator().manual_seed(0))
    offsets = set()
    for image, result in zip(images, moved, strict=True):
        matches = [
            (down, right)
            for down in range(-2, 3)
            for right in range(-2, 3)
            if torch.equal(result, translated(image, down, right))
        ]
        assert len(matches) == 1  # nonzero pixels: only one offset can give this image
        offsets.update(matches)
    assert len(offsets) == 25  # every offset of up to 2 pixels along each axis occurs
    again = shifted(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(again, moved)


def test_augmented_training_digits_move_anew_each_epoch_by_seed_and_evaluation_never(
    tmp_path, fake_mnist
):
    plain = datamodule(tmp_path, *fake_mnist, val_size=50)
    augmented = datamodule(tmp_path, *fake_mnist, val_size=50, augment_shift=2, shuffle_seed=3)
    train = augmented.splits["train"]
    assert isinstance(train, OnlineDataset)
    fixed = plain.splits["train"].tensors
    epoch0 = dict(train.tensors)
    train.set_epoch(1)
    epoch1 = dict(train.tensors)
    assert not torch.equal(epoch0["x"], fixed["x"])
    assert not torch.equal(epoch1["x"], epoch0["x"])
    assert torch.equal(epoch1["y"], fixed["y"])  # the labels stay with their digits
    # A module with the same seed (a resumed run) draws the same epoch; another seed does not.
    for seed, same in ((3, True), (4, False)):
        other = datamodule(tmp_path, *fake_mnist, val_size=50, augment_shift=2, shuffle_seed=seed)
        other.splits["train"].set_epoch(1)
        assert torch.equal(other.splits["train"].tensors["x"], epoch1["x"]) is same
    for split in ("val", "test"):
        for name, tensor in plain.splits[split].tensors.items():
            assert torch.equal(augmented.splits[split].tensors[name], tensor)


def test_an_augmented_run_interrupted_and_resumed_ends_like_an_uninterrupted_one(
    compose_cfg, tmp_path, fake_mnist
):
    mirror, checksums = fake_mnist
    overrides = [
        "data=mnist",
        f"data.local_mirror={mirror}",
        "data.val_size=50",
        "data.batch_size=25",
        "data.augment_shift=2",
        "model.hidden_size=8",
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        "num_threads=1",
    ]

    def config(run_dir, *extra):
        cfg = compose_cfg(*overrides, f"paths.run_dir={run_dir}", *extra)
        with open_dict(cfg):
            cfg.data.checksums = checksums
        return cfg

    full, part = tmp_path / "full", tmp_path / "part"
    expected = train(config(full))
    with pytest.raises(Interrupted):
        train(
            config(
                part,
                "+callbacks.interrupt._target_=tests.conftest.InterruptAtEpoch",
                "+callbacks.interrupt.epoch=2",
            )
        )
    resumed = train(config(part, "ckpt_path=last"))
    assert resumed["test/loss"] == expected["test/loss"]
    ends = [load_checkpoint(run / "checkpoints" / "last.ckpt") for run in (full, part)]
    for name, tensor in ends[0]["state_dict"].items():
        assert torch.equal(tensor, ends[1]["state_dict"][name]), name


@pytest.mark.slow
def test_a_small_gru_learns_digits_row_by_row(compose_cfg, tmp_path, fake_mnist):
    mirror, checksums = fake_mnist
    cfg = compose_cfg(
        "data=mnist",
        f"data.local_mirror={mirror}",
        "data.val_size=50",
        "data.batch_size=25",
        "model.hidden_size=32",
        "optimizer.lr=0.01",
        "trainer.max_epochs=8",
        "num_threads=1",
    )
    with open_dict(cfg):
        cfg.data.checksums = checksums
    results = train(cfg)
    assert results["test/acc"] > 0.8
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    csv = (run_dir / "confusion_matrix.csv").read_text().splitlines()
    assert len(csv) == 11
    assert sum(int(n) for row in csv[1:] for n in row.split(",")[1:]) == 100
    assert (run_dir / "confusion_matrix.png").stat().st_size > 1000


def test_a_run_stopped_mid_epoch_saves_its_place_in_the_epoch(compose_cfg, tmp_path, fake_mnist):
    # The resumed run starts after the last batch it trained on, which the DataModule counts:
    # a signal in call 1 of two batches each stops after batch 3 (0-based), four batches in.
    mirror, checksums = fake_mnist
    run_dir = tmp_path / "run"
    cfg = compose_cfg(
        "data=mnist",
        f"data.local_mirror={mirror}",
        "data.val_size=50",
        "data.batch_size=25",
        "model.hidden_size=8",
        "trainer.max_epochs=2",
        "num_threads=1",
        "steps_per_call=2",
        f"paths.run_dir={run_dir}",
        "+callbacks.signal._target_=tests.conftest.SignalAtBatch",
        "+callbacks.signal.epoch=1",
        "+callbacks.signal.batch=1",
        f"+callbacks.signal.signum={int(signal.SIGTERM)}",
    )
    with open_dict(cfg):
        cfg.data.checksums = checksums
    with pytest.raises(RunInterrupted, match="after epoch 1, batch 3"):
        train(cfg)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    (loader_state,) = last["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state == {"epoch": 1, "batches_done": 4}


@pytest.mark.real_data
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no MNIST mirror at ../shared/datasets/mnist")
def test_real_mnist_through_the_local_mirror(tmp_path):
    dm = MNISTDataModule(data_dir=tmp_path / "data", local_mirror=str(SHARED_MNIST))
    dm.prepare_data()
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 55000, "val": 5000, "test": 10000}
    counts = torch.bincount(dm.splits["test"].tensors["y"], minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    mean = dm.splits["train"].tensors["x"].float().mean() / 255
    assert 0.12 < mean < 0.14
