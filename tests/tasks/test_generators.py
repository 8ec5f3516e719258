"""Each generated task follows its source's rules, and the same seed gives the same bytes."""

import math

import numpy as np
import pytest
import torch

from src.data import adding, copy_memory, reber, temporal_order
from src.data.chars import CharsDataModule, decode, encode, read_text
from src.data.in_memory import epoch_seed
from src.data.synthetic import mark_two_1997, rng


def marked_values(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    markers, values = x[..., 0], x[..., 1]
    marked = (markers == 1.0).nonzero()
    assert torch.equal(marked[0::2, 0], torch.arange(len(x)))  # exactly two marks a sequence
    first, second = marked[0::2, 1], marked[1::2, 1]
    rows = torch.arange(len(x))
    return first, values[rows, first], values[rows, second]


def test_the_adding_problem_follows_the_1997_rules():
    data = adding.generate_paper_1997(3000, 100, seed=4)
    lengths, x = data["lengths"], data["x"]
    assert lengths.min() == 100 and lengths.max() == 110
    first, x1, x2 = marked_values(x)
    assert (first < 10).all()
    values = x[..., 1]
    steps = torch.arange(x.shape[1])
    valid = steps[None, :] < lengths[:, None]
    assert values[valid].min() >= -1 and values[valid].max() <= 1 and values[valid].min() < -0.99
    assert (x[~valid] == 0).all()
    rows = torch.arange(len(x))
    assert (x[rows, lengths - 1, 0] == -1).all()
    # A marked first pair has X1 = 0; it is marked 1 instead of -1.
    assert ((first != 0) | (x1 == 0)).all() and (first == 0).any()
    assert ((first == 0) | (x[:, 0, 0] == -1)).all()
    assert torch.allclose(data["y"].squeeze(1), 0.5 + (x1 + x2) / 4)


def test_the_modern_adding_problem_marks_one_step_in_each_half():
    data = adding.generate_modern(2000, 50, seed=1)
    markers = data["x"][..., 0]
    assert (markers[:, :25].sum(1) == 1).all() and (markers[:, 25:].sum(1) == 1).all()
    _, x1, x2 = marked_values(data["x"])
    assert torch.allclose(data["y"].squeeze(1), x1 + x2)
    # Predicting the mean, 1, scores the baseline MSE of 1/6.
    assert ((data["y"] - 1) ** 2).mean().item() == pytest.approx(adding.BASELINE_MSE_MODERN, 0.05)


def test_the_second_mark_is_uniform_over_the_first_t_half_minus_one_unmarked_steps():
    first, second = mark_two_1997(rng(0), 100_000, 100)
    rank = second - (second > first)
    assert (second != first).all()
    counts = np.bincount(rank)
    assert len(counts) == 49 and counts.min() > 0.8 * counts.mean()


@pytest.mark.parametrize("variant", ["6a", "6b"])
def test_temporal_order_puts_x_or_y_at_the_papers_positions(variant):
    data = temporal_order.generate(variant, 2000, 100, seed=2)
    symbols = data["x"].argmax(-1)
    lengths = data["lengths"]
    rows = torch.arange(len(lengths))
    assert (symbols[:, 0] == temporal_order.START).all()
    assert (symbols[rows, lengths - 1] == temporal_order.TRIGGER).all()
    relevant = (symbols == temporal_order.X) | (symbols == temporal_order.Y)
    positions = relevant.nonzero()[:, 1].view(len(rows), -1)
    windows = temporal_order.WINDOWS[variant]
    assert positions.shape[1] == len(windows)
    for column, (low, high) in enumerate(windows):
        assert positions[:, column].min() == low and positions[:, column].max() == high
    # The class spells the relevant symbols' order in binary, X = 0 and Y = 1, first the first.
    bits = (symbols[rows[:, None], positions] == temporal_order.Y).long()
    expected = sum(bits[:, k] << (len(windows) - 1 - k) for k in range(len(windows)))
    assert torch.equal(data["y"], expected)
    assert set(data["y"].tolist()) == set(range(temporal_order.num_classes(variant)))
    assert (data["x"][~(torch.arange(data["x"].shape[1])[None] < lengths[:, None])] == 0).all()


def test_temporal_order_positions_scale_with_the_length():
    data = temporal_order.generate("6a", 500, 200, seed=0)
    symbols = data["x"].argmax(-1)
    positions = ((symbols == 4) | (symbols == 5)).nonzero()[:, 1].view(500, 2)
    assert positions[:, 0].min() >= 20 and positions[:, 0].max() <= 40
    assert positions[:, 1].min() >= 100 and positions[:, 1].max() <= 120


def reber_string(text: str) -> np.ndarray:
    return np.array([reber.SYMBOLS.index(c) for c in text])


def is_reber(text: str) -> bool:
    state = 1
    if text[0] != "B" or text[-1] != "E":
        return False
    for symbol in text[1:-1]:
        edges = dict((reber.SYMBOLS[s], n) for s, n in reber.EDGES.get(state, ()))
        if symbol not in edges:
            return False
        state = edges[symbol]
    return state == 6


def test_embedded_reber_strings_follow_the_grammar():
    strings = reber.embedded_strings(rng(5), 500)
    texts = ["".join(reber.SYMBOLS[s] for s in string) for string in strings]
    for text in texts:
        assert text[0] == "B" and text[-1] == "E" and text[1] == text[-2] and text[1] in "TP"
        assert is_reber(text[2:-2]), text
    assert {t[1] for t in texts} == {"T", "P"}
    assert len(set(texts)) > 100


def test_next_symbol_sets_are_the_grammars_by_hand():
    # B T B T X S E T E: after each prefix, the symbols that may come next.
    sets = reber.next_symbol_sets(reber_string("BTBTXSETE"))
    named = ["".join(sorted(reber.SYMBOLS[i] for i in np.nonzero(row)[0])) for row in sets]
    assert named == ["PT", "B", "PT", "SX", "SX", "E", "T", "E"]


def test_reber_batches_mask_padding_and_mark_the_penultimate_prediction():
    encoded = reber.encode([reber_string("BTBTXSETE"), reber_string("BPBPVVEPE")])
    assert encoded["mask"].sum(1).tolist() == [8, 8]
    key = encoded["key_mask"].nonzero()[:, 1].tolist()
    assert key == [6, 6]  # after the inner E: predict the repeated T or P
    assert encoded["y"][1, 6].nonzero().flatten().tolist() == [reber.P]


def test_reber_test_strings_are_not_training_strings(tmp_path):
    module = reber.ReberDataModule(num_train=256, num_val=256, num_test=256, seed=1997)
    sets = module.fixed_sets()

    def strings(split):
        return {
            tuple(row[: int(n)].argmax(-1).tolist())
            for row, n in zip(sets[split]["x"], sets[split]["lengths"], strict=True)
        }

    assert len(sets["test"]["x"]) == 256
    assert not strings("test") & strings("train") and not strings("val") & strings("train")


def test_the_copy_task_layout_and_its_memoryless_baseline():
    data = copy_memory.generate(100, lag=20, categories=8, to_copy=10, seed=3)
    x, y = data["x"].argmax(-1), data["y"]
    assert x.shape == (100, 40)
    assert ((x[:, :10] >= 1) & (x[:, :10] <= 8)).all()
    assert (x[:, 10:29] == 0).all() and (x[:, 29] == 9).all() and (x[:, 30:] == 0).all()
    assert (y[:, :30] == 0).all() and torch.equal(y[:, 30:], x[:, :10])
    assert data["key_mask"].sum(1).eq(10).all() and data["key_mask"][:, 30:].all()
    expected = 10 * math.log(8) / (100 + 20)
    assert copy_memory.memoryless_cross_entropy(8, 10, 100) == pytest.approx(expected)


def test_the_copy_task_refuses_fewer_than_two_categories():
    with pytest.raises(ValueError, match="categories >= 2"):
        copy_memory.generate(4, lag=10, categories=1, to_copy=3, seed=0)


@pytest.mark.parametrize(
    "draw",
    [
        lambda seed: adding.generate_paper_1997(50, 30, seed),
        lambda seed: adding.generate_modern(50, 30, seed),
        lambda seed: temporal_order.generate("6b", 50, 30, seed),
        lambda seed: copy_memory.generate(50, 15, 8, 5, seed),
        lambda seed: reber.encode(reber.embedded_strings(rng(seed), 50)),
    ],
    ids=["adding", "adding-modern", "temporal-order", "copy", "reber"],
)
def test_the_same_seed_gives_the_same_bytes(draw):
    a, b, c = draw(11), draw(11), draw(12)
    for name in a:
        assert a[name].numpy().tobytes() == b[name].numpy().tobytes(), name
    assert any(not torch.equal(a[n], c[n]) for n in a if a[n].shape == c[n].shape)


def test_epoch_seeds_differ_from_each_other_and_from_the_fixed_seed():
    seeds = {epoch_seed(7, epoch) for epoch in range(100)}
    assert len(seeds) == 100 and 7 not in seeds
    assert epoch_seed(7, 3) == epoch_seed(7, 3)


def test_chars_windows_predict_the_next_character():
    module = CharsDataModule(text="hello")
    splits = module.build_splits()
    (x,), (y,) = splits["train"].tensors["x"], splits["train"].tensors["y"]
    assert decode(x.argmax(-1)) == "hell" and decode(y) == "ello"
    assert decode(encode("héllo")) == "héllo"


def test_a_long_text_is_cut_into_train_val_and_test_windows(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("abcdefghij" * 100)
    module = CharsDataModule(text=None, text_file=str(path), seq_len=10)
    sizes = {name: len(split) for name, split in module.build_splits().items()}
    assert sizes == {"train": 89, "val": 5, "test": 5}


def test_an_empty_text_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"empty or one character long.*data\.text="):
        read_text("", None)
    with pytest.raises(FileNotFoundError, match=r"data\.text_file=.*does not exist"):
        read_text(None, "/nonexistent/text.txt")
