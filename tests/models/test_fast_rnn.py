"""FastRNN against torch.nn.RNN/LSTM/GRU: outputs, states and every gradient, both backends."""

import contextlib
import shutil
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from src.models import fast_rnn, fused_build
from src.models.fast_rnn import FastRNN, Mode
from src.models.sequence_model import GATES

TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
MODES: list[Mode] = ["rnn", "lstm", "gru"]


@pytest.fixture(params=["native", "torchscript"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "native":
        if fast_rnn._native() is None:
            # Where a compiler is at hand (CI, every dev machine), the build must work.
            assert shutil.which(fused_build.compiler()) is None, "the C++ loops did not build"
            pytest.skip("no C++ compiler here")
    else:
        monkeypatch.setattr(fast_rnn, "_native", lambda: None)
    return request.param


def pair(mode: Mode, layers: int, dtype: torch.dtype, size: tuple[int, int] = (3, 5)):
    torch.manual_seed(0)
    ref = TORCH[mode](*size, layers, batch_first=True).to(dtype)
    fast = FastRNN(mode, *size, num_layers=layers).to(dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def run(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out, state = module(x)
    return out, list(state) if isinstance(state, tuple) else [state]


def compare(
    mode: Mode, layers: int, dtype: torch.dtype, steps: int, batch: int = 4, **tol: float
) -> None:
    ref, fast = pair(mode, layers, dtype)
    x = torch.randn(batch, steps, 3, dtype=dtype)
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, states_ref = run(ref, x_ref)
    out_fast, states_fast = run(fast, x_fast)
    assert out_fast.shape == out_ref.shape and len(states_fast) == len(states_ref)
    for a, b in zip([out_fast, *states_fast], [out_ref, *states_ref], strict=True):
        torch.testing.assert_close(a, b, **tol)
    grads = [torch.randn_like(t) for t in [out_ref, *states_ref]]
    torch.autograd.backward([out_ref, *states_ref], grads)
    torch.autograd.backward([out_fast, *states_fast], grads)

    # Backward sums in another order than autograd: gradients agree to rtol of their largest
    # element (a weight's gradient sums batch x steps terms; its small elements lose digits).
    def close_grad(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
        atol = max(tol["atol"], tol["rtol"] * b.abs().max().item())
        msg = lambda m: f"{name}: {m}"  # noqa: E731
        torch.testing.assert_close(a, b, rtol=tol["rtol"], atol=atol, msg=msg)

    close_grad(x_fast.grad, x_ref.grad, "input")
    for (name, p), (name_ref, p_ref) in zip(
        fast.named_parameters(), ref.named_parameters(), strict=True
    ):
        assert name == name_ref
        close_grad(p.grad, p_ref.grad, name)


def compare_layer(mode: Mode, steps: int, batch: int, **tol: float) -> None:
    """One layer of the loops (_Layer, any dtype they take) against torch.nn's, in float64."""
    torch.manual_seed(0)
    ref = TORCH[mode](3, 5, 1).double()
    x = torch.randn(steps, batch, 3, dtype=torch.float64)
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = [p.detach().clone().requires_grad_() for p in ref.all_weights[0]]
    out_ref, state_ref = ref(x_ref)
    out_fast = fast_rnn._Layer.apply(mode, x_fast, weights[0], weights[2], weights[1], weights[3])
    outs_ref = [out_ref, state_ref[1][0]] if mode == "lstm" else [out_ref]
    outs_fast = list(out_fast) if mode == "lstm" else [out_fast]
    for a, b in zip(outs_fast, outs_ref, strict=True):
        torch.testing.assert_close(a, b, **tol)
    grads = [torch.randn_like(t) for t in outs_ref]
    torch.autograd.backward(outs_ref, grads)
    torch.autograd.backward(outs_fast, grads)
    torch.testing.assert_close(x_fast.grad, x_ref.grad, **tol)
    for p, p_ref in zip(weights, ref.all_weights[0], strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, **tol)


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# FastRNN itself hands float64 to torch's kernels, so the loops' float64 is checked a layer down.
# 13 rows on 2 threads: blocks of 7 and 6 rows, each running the whole time loop on its own.
@pytest.mark.parametrize("batch", [4, 13])
@pytest.mark.parametrize("steps", [7, 1])
@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_float64(backend: str, mode: Mode, steps: int, batch: int) -> None:
    with threads(2):
        compare_layer(mode, steps, batch, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch", [4, 13])
@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_float32(backend: str, mode: Mode, batch: int) -> None:
    with threads(2):
        compare(mode, 2, torch.float32, 20, batch=batch, rtol=1e-5, atol=1e-6)


def fused_loops(mode: Mode, batch: int, steps: int = 9, hidden: int = 24) -> list[torch.Tensor]:
    """Every output of the C++ forward and backward loops on seeded inputs."""
    ops = fast_rnn._native()
    gates = GATES[mode]
    gen = torch.Generator().manual_seed(0)
    gi = torch.randn(steps, batch, gates * hidden, generator=gen)
    w = torch.randn(gates * hidden, hidden, generator=gen) / hidden**0.5
    b = torch.randn(gates * hidden, generator=gen)
    dhs = torch.randn(steps, batch, hidden, generator=gen)
    w_t = w.t().contiguous()
    if mode == "rnn":
        ops.rnn_forward(gi, w_t, b)
        return [gi, ops.rnn_backward(dhs, gi, w)]
    if mode == "lstm":
        hs, c = ops.lstm_forward(gi, w_t, b)
        dcn = torch.randn(batch, hidden, generator=gen)
        return [hs, gi, c, ops.lstm_backward(dhs, dcn, gi, c, w)]
    hs, ns = ops.gru_forward(gi, w_t, b)
    return [hs, gi, ns, *ops.gru_backward(dhs, hs, gi, ns, w)]


@pytest.mark.parametrize("backend", ["native"], indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_the_loops_give_the_same_bits_on_any_number_of_threads(backend: str, mode: Mode) -> None:
    with threads(1):
        serial = fused_loops(mode, batch=37)
    for count in (2, 3):
        with threads(count):
            parallel = fused_loops(mode, batch=37)
        for a, b in zip(parallel, serial, strict=True):
            assert torch.equal(a, b), f"{count} threads differ from 1 by {(a - b).abs().max()}"


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(backend: str, mode: Mode) -> None:
    torch.manual_seed(0)
    gates = GATES[mode]
    h, i = 3, 2
    args = [
        torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        for shape in [(4, 2, i), (gates * h, i), (gates * h,), (gates * h, h), (gates * h,)]
    ]
    assert torch.autograd.gradcheck(lambda *a: fast_rnn._Layer.apply(mode, *a), args)


@pytest.mark.parametrize("mode", MODES)
def test_parameters_and_init_like_torch(mode: Mode) -> None:
    ref, fast = TORCH[mode](3, 16, 2, batch_first=True), FastRNN(mode, 3, 16, 2)
    assert [(n, p.shape) for n, p in fast.named_parameters()] == [
        (n, p.shape) for n, p in ref.named_parameters()
    ]
    for p in fast.parameters():
        assert p.abs().max() <= 16**-0.5 and p.std() > 0.5 * 16**-0.5 / 3**0.5
    ref.load_state_dict(fast.state_dict())  # and the other way round


@pytest.mark.parametrize("mode", MODES)
def test_dropout(mode: Mode) -> None:
    torch.manual_seed(0)
    fast = FastRNN(mode, 3, 8, num_layers=2, dropout=0.5)
    plain = FastRNN(mode, 3, 8, num_layers=2)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(4, 6, 3)
    fast.eval()
    torch.testing.assert_close(fast(x)[0], plain(x)[0])
    fast.train()
    out = fast(x)[0]
    assert not torch.allclose(out, plain(x)[0])
    out.sum().backward()
    assert all(p.grad is not None for p in fast.parameters())
    # Dropout between layers only: with one layer training mode changes nothing.
    single = FastRNN(mode, 3, 8, dropout=0.5).train()
    torch.testing.assert_close(single(x)[0], single.eval()(x)[0])


@pytest.mark.parametrize("mode", MODES)
def test_torch_fallback_path_matches(mode: Mode) -> None:
    # The path used for non-CPU inputs, checked on CPU.
    _, fast = pair(mode, 2, torch.float64)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    out, states = run(fast, x)
    out_t, state_t = fast._torch_forward(x)
    torch.testing.assert_close(out_t, out)
    for a, b in zip(state_t if isinstance(state_t, tuple) else [state_t], states, strict=True):
        torch.testing.assert_close(a, b)


def test_learns_sign_of_first_input() -> None:
    torch.manual_seed(0)
    rnn, head = FastRNN("gru", 1, 16), nn.Linear(16, 1)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(300):
        x = torch.randn(32, 10, 1)
        target = (x[:, 0] > 0).float()
        loss = nn.functional.binary_cross_entropy_with_logits(head(rnn(x)[0][:, -1]), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.2 * sum(losses[:20]) / 20


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        FastRNN("gru", 3, 4)(torch.randn(2, 3))
    with pytest.raises(ValueError):
        FastRNN("cell", 3, 4)  # type: ignore[arg-type]


def test_the_build_cache_is_keyed_by_what_the_binary_depends_on(monkeypatch):
    key = fused_build.build_key()
    assert fused_build.build_directory(key).name == f"seqlab_fused_{key}"
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert fused_build.build_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(fused_build, "_cpu", lambda: "model name : another CPU")
    assert fused_build.build_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(fused_build, "BASE_FLAGS", [*fused_build.BASE_FLAGS, "-O2"])
    assert fused_build.build_key() != key


def test_without_a_compiler_the_torchscript_loops_take_over(monkeypatch, caplog):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    fused_build.load_fused_ops.cache_clear()
    try:
        assert fused_build.load_fused_ops() is None
    finally:
        fused_build.load_fused_ops.cache_clear()
    assert "using TorchScript" in caplog.text and "no C++ compiler" in caplog.text
