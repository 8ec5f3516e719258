"""Truncated BPTT: one chunk is full BPTT, shorter chunks cut every gradient at their start."""

import pytest
import torch

from src.models.losses import masked_loss
from src.models.sequence_model import SequenceModel
from src.models.tbptt import train_in_chunks

LENGTH = 12


def every_step_model(cell: str, implementation: str = "torch") -> SequenceModel:
    torch.manual_seed(0)
    return SequenceModel(
        cell, 3, 4, 8, num_layers=2, head="every_step", implementation=implementation
    )


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(5, LENGTH, dtype=torch.bool)
    mask[0, 9:] = False  # a shorter sequence: its padding never counts
    return {
        "x": torch.randn(5, LENGTH, 3, generator=generator),
        "y": torch.randint(0, 4, (5, LENGTH), generator=generator),
        "mask": mask,
    }


def loss_fn(output, target, mask):
    return masked_loss("classification", output, target, mask)


def chunk_gradients(model, data, steps):
    gradients = []

    def optimize(loss):
        model.zero_grad()
        loss.backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters()})

    _, loss = train_in_chunks(model, data, steps, loss_fn, optimize)
    return gradients, loss


@pytest.mark.parametrize("implementation", ["torch", "fused"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_one_chunk_of_the_whole_length_gives_exactly_the_full_bptt_gradients(cell, implementation):
    model, data = every_step_model(cell, implementation), batch()
    (chunked,), loss = chunk_gradients(model, data, LENGTH)
    model.zero_grad()
    full = loss_fn(model(data["x"]), data["y"], data["mask"])
    full.backward()
    assert loss.item() == full.item()
    for name, parameter in model.named_parameters():
        assert torch.equal(chunked[name], parameter.grad), name


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_no_gradient_reaches_past_the_chunk(cell):
    model, data = every_step_model(cell), batch()
    data["x"].requires_grad_(True)
    # Only the last chunk's steps have targets: their loss may move only that chunk's inputs.
    data["mask"] = torch.zeros_like(data["mask"])
    data["mask"][:, 8:] = True

    def optimize(loss):
        loss.backward()

    train_in_chunks(model, data, 4, loss_fn, optimize)
    grad = data["x"].grad.abs().sum(dim=(0, 2))
    assert (grad[:8] == 0).all()
    assert (grad[8:] > 0).all()
    # Without truncation the same loss reaches the first steps.
    data["x"].grad = None
    loss_fn(model(data["x"]), data["y"], data["mask"]).backward()
    assert (data["x"].grad.abs().sum(dim=(0, 2))[:8] > 0).all()


def test_the_optimizer_steps_once_per_chunk_and_the_loss_counts_every_step_once():
    model, data = every_step_model("gru"), batch()
    gradients, loss = chunk_gradients(model, data, 5)
    assert len(gradients) == 3  # chunks of 5, 5 and 2 steps
    with torch.no_grad():
        whole = loss_fn(model(data["x"]), data["y"], data["mask"])
    assert loss.item() == pytest.approx(whole.item(), rel=1e-5)


def test_a_last_step_head_is_trained_on_the_last_chunk_only():
    torch.manual_seed(0)
    model = SequenceModel("lstm", 3, 1, 8)
    data = {"x": torch.randn(4, LENGTH, 3), "y": torch.randn(4, 1)}
    steps = []

    def optimize(loss):
        steps.append(loss)

    output, _ = train_in_chunks(
        model, data, 5, lambda o, t, m: torch.nn.functional.mse_loss(o, t), optimize
    )
    assert len(steps) == 1
    with torch.no_grad():
        assert torch.allclose(output, model(data["x"]), atol=1e-6)


def test_chunks_outside_the_sequence_are_refused():
    model, data = every_step_model("gru"), batch()
    with pytest.raises(ValueError, match=r"model.tbptt_steps=0 must be in \[1, 12\]"):
        train_in_chunks(model, data, 0, loss_fn, lambda loss: None)
    with pytest.raises(ValueError, match=r"model\.tbptt_steps=13"):
        train_in_chunks(model, data, 13, loss_fn, lambda loss: None)


def test_the_masked_loss_ignores_steps_outside_the_mask():
    output = torch.zeros(1, 3, 2)
    output[0, 2] = torch.tensor([10.0, -10.0])  # very wrong at the masked step
    target = torch.tensor([[0, 1, 1]])
    mask = torch.tensor([[True, True, False]])
    assert masked_loss("classification", output, target, mask).item() == pytest.approx(
        torch.log(torch.tensor(2.0)).item()
    )
