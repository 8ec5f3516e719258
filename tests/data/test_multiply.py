import numpy as np
import pytest
import torch

from src.data.multiply import MultiplicationDataModule, generate, split_sizes


@pytest.mark.parametrize("variant", ["classic", "paper_1997"])
def test_exactly_two_marked_steps_and_target_is_their_product(variant):
    data = generate(variant, num_sequences=500, seq_len=100, seed=0)
    markers, values = data.inputs[..., 0], data.inputs[..., 1]
    marked = markers == 1.0
    assert (marked.sum(dim=1) == 2).all()
    products = torch.where(marked, values, torch.ones_like(values)).prod(dim=1, keepdim=True)
    torch.testing.assert_close(data.targets, products)
    # Values in [0, 1); the 1997 rule sets a marked first value to 1.0.
    first_marked = marked[:, :1] & (torch.arange(values.shape[1]) == 0)
    assert ((values >= 0) & ((values < 1) | first_marked)).all()


def test_classic_sequences_have_full_length_and_pairs_spread_uniformly():
    data = generate("classic", num_sequences=20000, seq_len=10, seed=1)
    assert (data.lengths == 10).all()
    assert set(data.inputs[..., 0].unique().tolist()) == {0.0, 1.0}
    positions = data.inputs[..., 0].nonzero()[:, 1]
    counts = torch.bincount(positions, minlength=10).double()
    # 40,000 marks over 10 steps: each step near 4,000.
    assert (counts - 4000).abs().max() < 300


def test_same_seed_same_bytes_other_seed_other_data():
    a = generate("classic", 300, 100, seed=7)
    b = generate("classic", 300, 100, seed=7)
    c = generate("classic", 300, 100, seed=8)
    assert a.inputs.numpy().tobytes() == b.inputs.numpy().tobytes()
    assert a.targets.numpy().tobytes() == b.targets.numpy().tobytes()
    assert not torch.equal(a.inputs, c.inputs)


def test_paper_1997_variant_follows_the_papers_rules():
    seq_len = 100
    data = generate("paper_1997", num_sequences=2000, seq_len=seq_len, seed=3)
    lengths = data.lengths
    assert lengths.min() >= seq_len and lengths.max() <= seq_len + seq_len // 10
    assert len(lengths.unique()) > 5
    markers, values = data.inputs[..., 0], data.inputs[..., 1]
    rows = torch.arange(len(lengths))
    marked = (markers == 1.0).nonzero()
    first, second = marked[0::2, 1], marked[1::2, 1]
    assert (first < 10).all()
    # "One of the first T/2 - 1 still unmarked pairs": its rank among the unmarked steps takes
    # each of the T/2 - 1 values.
    rank = second - (second > first).long()
    assert set(rank.tolist()) == set(range(seq_len // 2 - 1))
    # The first and last step carry -1 unless marked; nothing after the end.
    end = markers[rows, lengths - 1]
    assert (end == -1.0).all()
    start = markers[:, 0]
    assert ((start == -1.0) | (start == 1.0)).all()
    steps = torch.arange(markers.shape[1])
    padding = steps[None, :] >= lengths[:, None]
    assert (markers[padding] == 0).all() and (values[padding] == 0).all()


def test_classic_split_sizes():
    assert split_sizes(3000, 2560, 0.2) == (2048, 512, 440)
    dm = MultiplicationDataModule(seq_len=20)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 2048, "val": 512, "test": 440}
    # The test set is the last 440 sequences of the generated data, in order.
    full = generate("classic", 3000, 20, seed=1997)
    assert torch.equal(dm.splits["test"].tensors["y"], full.targets[2560:])


def test_variable_lengths_travel_with_the_batches():
    dm = MultiplicationDataModule(variant="paper_1997", num_sequences=100, num_fit=80, seq_len=20)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "y", "lengths"}
    assert batch["x"].shape == (32, 22, 2)
    assert np.all(batch["lengths"].numpy() >= 20)


def test_cache_file_is_written_once_read_back_and_regenerated_for_other_params(tmp_path):
    cache = tmp_path / "multiply" / "data.pt"
    dm = MultiplicationDataModule(num_sequences=300, num_fit=250, seq_len=10, cache_file=cache)
    dm.prepare_data()
    written = cache.stat().st_mtime_ns
    dm.setup("fit")
    assert cache.stat().st_mtime_ns == written
    expected = generate("classic", 300, 10, seed=1997)
    assert torch.equal(dm.splits["train"].tensors["x"], expected.inputs[:200])

    other = MultiplicationDataModule(
        num_sequences=300, num_fit=250, seq_len=10, seed=5, cache_file=cache
    )
    other.setup("fit")
    regenerated = generate("classic", 300, 10, seed=5)
    assert torch.equal(other.splits["test"].tensors["y"], regenerated.targets[250:])
    assert torch.load(cache, weights_only=True)["key"]["seed"] == 5
    assert [p.name for p in cache.parent.iterdir()] == ["data.pt"]  # no temporary file left
