import math

import pytest
import torch

from src.models.sequence_model import SequenceModel, count_parameters, keras_parameter_count


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("implementation", ["torch", "fused"])
def test_output_shape(cell, bidirectional, implementation):
    model = SequenceModel(
        cell, 2, 3, 8, 2, bidirectional=bidirectional, implementation=implementation
    )
    assert model(torch.randn(5, 7, 2)).shape == (5, 3)


def test_classic_parameter_counts():
    counts = {c: count_parameters(SequenceModel(c, 2, 1, 30, 2)) for c in ("rnn", "lstm", "gru")}
    # torch keeps two bias vectors per gate, Keras one (except its GRU): the GRU counts agree.
    assert counts == {"rnn": 2911, "lstm": 11551, "gru": 8671}
    keras = {c: keras_parameter_count(c, 2, 30, 2, 1) for c in ("rnn", "lstm", "gru")}
    assert keras == {"rnn": 2851, "lstm": 11311, "gru": 8671}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_after_a_sequence_end_is_never_read(cell, bidirectional):
    torch.manual_seed(0)
    model = SequenceModel(cell, 2, 1, 6, 2, bidirectional=bidirectional).eval()
    x = torch.randn(3, 9, 2)
    lengths = torch.tensor([9, 5, 7])
    padded = x.clone()
    for row, length in enumerate(lengths):
        padded[row, length:] = 99.0
    batched = model(padded, lengths)
    one_by_one = torch.cat([model(x[i : i + 1, : lengths[i]]) for i in range(3)])
    torch.testing.assert_close(batched, one_by_one)


def test_keras_init_scheme():
    model = SequenceModel("lstm", 2, 1, 4, 1, init="keras")
    rnn = model.rnn
    # One orthogonal kernel over all four gates, as Keras draws it: orthonormal columns.
    weight_hh = rnn.weight_hh_l0
    torch.testing.assert_close(weight_hh.T @ weight_hh, torch.eye(4), atol=1e-5, rtol=0)
    # Not one orthogonal block per gate, which would give a squared norm of 4 x 4 = 16.
    assert weight_hh.square().sum().item() == pytest.approx(4.0, abs=1e-4)
    assert torch.equal(rnn.bias_hh_l0, torch.zeros(16))
    assert torch.equal(rnn.bias_ih_l0[4:8], torch.ones(4))
    assert (torch.cat([rnn.bias_ih_l0[:4], rnn.bias_ih_l0[8:]]) == 0).all()
    assert torch.equal(model.head.bias, torch.zeros(1))


@pytest.mark.parametrize("implementation", ["torch", "fused"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chrono_init_opens_the_memory_gates_over_time_scales_up_to_the_max_lag(
    cell, implementation
):
    torch.manual_seed(0)
    model = SequenceModel(cell, 2, 1, 64, 2, init="chrono", chrono_max_lag=100,
                          implementation=implementation)  # fmt: skip
    for layer in range(2):
        bias = getattr(model.rnn, f"bias_ih_l{layer}")
        keep = bias[64:128]  # LSTM: forget gate; GRU: update gate
        assert ((keep >= 0) & (keep <= math.log(99) + 1e-6)).all()
        assert keep.std() > 0.5  # many time scales, not one
        if cell == "lstm":
            torch.testing.assert_close(bias[:64], -keep)
        assert torch.equal(getattr(model.rnn, f"bias_hh_l{layer}"), torch.zeros_like(bias))


@pytest.mark.parametrize("implementation", ["torch", "fused"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_chrono_initialised_cell_still_remembers_an_input_50_steps_later(cell, implementation):
    torch.manual_seed(0)
    x = torch.zeros(256, 51, 2)
    x[:, 0] = torch.randn(256, 2)
    memory = {}
    for init in ("keras", "chrono"):
        torch.manual_seed(1)
        model = SequenceModel(cell, 2, 1, 32, 1, init=init, chrono_max_lag=100,
                              implementation=implementation)  # fmt: skip
        with torch.no_grad():
            output, _ = model.rnn(x)
        # How much of the first step's state is left after 50 steps of no input.
        memory[init] = (output[:, 50].norm() / output[:, 0].norm()).item()
    assert memory["chrono"] > 3 * memory["keras"]


def test_chrono_init_needs_its_max_lag():
    with pytest.raises(ValueError, match="chrono_max_lag >= 3"):
        SequenceModel("lstm", 2, 1, 4, init="chrono")


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="available"):
        SequenceModel("gur", 2, 1, 4)
    with pytest.raises(ValueError, match="available"):
        SequenceModel("gru", 2, 1, 4, init="he")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_fused_implementation_gives_torch_results(cell):
    torch.manual_seed(0)
    reference = SequenceModel(cell, 2, 1, 8, 2, implementation="torch")
    fused = SequenceModel(cell, 2, 1, 8, 2, implementation="fused")
    fused.load_state_dict(reference.state_dict())
    x, lengths = torch.randn(4, 12, 2), torch.tensor([12, 7, 9, 12])
    for model_lengths in (None, lengths):
        torch.testing.assert_close(fused(x, model_lengths), reference(x, model_lengths))
