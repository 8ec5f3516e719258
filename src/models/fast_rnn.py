"""Fast CPU recurrences (tanh RNN, LSTM, GRU) with a hand-written BPTT backward.

`FastRNN` is a drop-in for batch-first, unidirectional `nn.RNN`/`nn.LSTM`/`nn.GRU` (same
parameters, init and results). Per layer, the input projection of all steps is one matmul and an
autograd Function runs the time loop, forward and backward, with weight gradients as one matmul
after the loop. The loops are C++ operators (csrc/fused_rnn.cpp, built on first use by
torch.utils.cpp_extension: fused_build.py), or TorchScript where no compiler is at hand.
Non-CPU inputs, autocast and dtypes other than float32 use torch's own kernels (cuDNN).
"""

import functools
import logging
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from src.models.fused_build import load_fused_ops

log = logging.getLogger(__name__)
_NOTED: set[str] = set()


def _note_float32_only(dtype: torch.dtype) -> None:
    """Say once per process why the fused loops step aside (autocast, or weights not float32)."""
    reason = "autocast" if torch.is_autocast_enabled("cpu") else str(dtype)
    if reason not in _NOTED:
        _NOTED.add(reason)
        log.info("model.implementation=fused runs float32 only: %s uses torch's kernels", reason)


Mode = Literal["rnn", "lstm", "gru"]
_TORCH_MODES = {"rnn": "RNN_TANH", "lstm": "LSTM", "gru": "GRU"}

# Layout inside the kernels is time-major: gi [T, B, G*H] (input projection incl. b_ih),
# hs [T, B, H]; every per-step slice [t] is then contiguous. Both backends keep the same tensors
# for backward: rnn (hs,), lstm (hs, activated gates, c), gru (hs, [r, z, W_hn h + b_hn], n).


def _rnn_fwd(gi: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    pre = gi + b_hh
    hs = torch.empty_like(pre)
    wt = w_hh.t()
    torch.tanh(pre[0], out=hs[0])
    for t in range(1, pre.size(0)):
        torch.tanh(pre[t].addmm_(hs[t - 1], wt), out=hs[t])
    return hs


def _rnn_bwd(dhs: Tensor, hs: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor]:
    k = 1 - hs * hs
    dg = torch.empty_like(hs)
    n = hs.size(0)
    dh = dhs[n - 1]
    for t in range(n - 1, 0, -1):
        dh = torch.addmm(dhs[t - 1], torch.mul(dh, k[t], out=dg[t]), w_hh)
    torch.mul(dh, k[0], out=dg[0])
    return dg, dg


def _lstm_fwd(gi: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    n, h = gi.size(0), w_hh.size(1)
    pre = gi + b_hh
    a = torch.empty_like(pre)  # activated gates i, f, g, o
    c = torch.empty((n, gi.size(1), h), dtype=gi.dtype, device=gi.device)
    hs = torch.empty_like(c)
    wt = w_hh.t()
    for t in range(n):
        p = pre[t]
        if t > 0:
            p.addmm_(hs[t - 1], wt)
        at = torch.sigmoid(p, out=a[t])
        g = torch.tanh(p[:, 2 * h : 3 * h], out=at[:, 2 * h : 3 * h])
        if t == 0:
            ct = torch.mul(at[:, :h], g, out=c[0])
        else:
            ct = torch.addcmul(at[:, h : 2 * h] * c[t - 1], at[:, :h], g, out=c[t])
        torch.mul(at[:, 3 * h :], torch.tanh(ct), out=hs[t])
    return hs, a, c


def _lstm_bwd(
    dhs: Tensor, dcn: Tensor, hs: Tensor, a: Tensor, c: Tensor, w_hh: Tensor
) -> tuple[Tensor, Tensor]:
    n, b, h = hs.size(0), hs.size(1), hs.size(2)
    i, f, g, o = a[..., :h], a[..., h : 2 * h], a[..., 2 * h : 3 * h], a[..., 3 * h :]
    tc = torch.tanh(c)
    cprev = torch.cat((torch.zeros_like(c[:1]), c[:-1]))
    kh = o * (1 - tc * tc)  # dc += dh * kh
    kc = torch.stack((g * i * (1 - i), cprev * f * (1 - f), i * (1 - g * g)), 2)  # d{i,f,g}/dc
    ko = tc * o * (1 - o)
    dg = torch.empty((n, b, 4, h), dtype=hs.dtype, device=hs.device)
    dh, dc = dhs[n - 1], dcn
    for t in range(n - 1, -1, -1):
        dc = torch.addcmul(dc, dh, kh[t])
        dgt = dg[t]
        torch.mul(dc.unsqueeze(1), kc[t], out=dgt[:, :3])
        torch.mul(dh, ko[t], out=dgt[:, 3])
        if t > 0:
            dh = torch.addmm(dhs[t - 1], dgt.view(b, 4 * h), w_hh)
            dc = dc * f[t]
    dg = dg.view(n, b, 4 * h)
    return dg, dg


def _gru_fwd(gi: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    n, b, h = gi.size(0), gi.size(1), w_hh.size(1)
    # Per step g holds r, z (preactivations, then sigmoid in place) and W_hn h + b_hn.
    g = torch.cat((gi[:, :, : 2 * h] + b_hh[: 2 * h], b_hh[2 * h :].expand(n, b, h)), 2)
    gin = gi[:, :, 2 * h :]
    ns = torch.empty((n, b, h), dtype=gi.dtype, device=gi.device)
    hs = torch.empty_like(ns)
    wt = w_hh.t()
    ht = torch.zeros_like(ns[0])
    for t in range(n):
        gt = g[t]
        if t > 0:
            gt.addmm_(ht, wt)
        gt[:, : 2 * h].sigmoid_()
        nt = torch.tanh(torch.addcmul(gin[t], gt[:, :h], gt[:, 2 * h :]), out=ns[t])
        ht = torch.addcmul(nt, gt[:, h : 2 * h], ht - nt, out=hs[t])
    return hs, g, ns


def _gru_bwd(dhs: Tensor, hs: Tensor, g: Tensor, ns: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor]:
    n, b, h = hs.size(0), hs.size(1), hs.size(2)
    r, z, ghn = g[..., :h], g[..., h : 2 * h], g[..., 2 * h :]
    hprev = torch.cat((torch.zeros_like(hs[:1]), hs[:-1]))
    kn = (1 - z) * (1 - ns * ns)  # d(n preactivation)/dh
    # d(r, z, W_hn h + b_hn)/dh: the gradient of the recurrent projection is dh * k
    k = torch.stack((kn * ghn * r * (1 - r), (hprev - ns) * z * (1 - z), kn * r), 2)
    dgh = torch.empty_like(k)
    dh = torch.empty_like(hs)
    dh[n - 1] = dhs[n - 1]
    for t in range(n - 1, 0, -1):
        dgt = torch.mul(dh[t].unsqueeze(1), k[t], out=dgh[t]).view(b, 3 * h)
        torch.addmm(torch.addcmul(dhs[t - 1], dh[t], z[t]), dgt, w_hh, out=dh[t - 1])
    torch.mul(dh[0].unsqueeze(1), k[0], out=dgh[0])
    dgh = dgh.view(n, b, 3 * h)
    dgi = dgh.clone()
    dgi[:, :, 2 * h :] = dh * kn
    return dgi, dgh


def _script(fn: Callable[..., Any]) -> Callable[..., Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(fn)
    except Exception:  # TorchScript missing or broken: the eager loop gives the same results
        return fn


@functools.cache
def _kernels() -> dict[str, Callable[..., Any]]:
    fns = (_rnn_fwd, _rnn_bwd, _lstm_fwd, _lstm_bwd, _gru_fwd, _gru_bwd)
    return {fn.__name__[1:]: _script(fn) for fn in fns}


@functools.cache
def _native() -> Any | None:
    """The C++ loops (torch.ops.seqlab_fused), or None (then TorchScript) where they cannot be
    built, loaded or verified."""
    ops = load_fused_ops()
    if ops is None:
        return None
    try:
        # Guard against a BLAS of another integer width: a tiny case must match the torch loop.
        gen = torch.Generator().manual_seed(0)
        for dtype in (torch.float32, torch.float64):
            gi, w = (torch.randn(s, generator=gen, dtype=dtype) for s in ((3, 2, 9), (9, 3)))
            want = _gru_fwd(gi, w, w[:, 0])[0]
            torch.testing.assert_close(_forward(ops, "gru", gi, w, w[:, 0].contiguous())[0], want)
    except Exception as exc:
        log.warning("FastRNN: the C++ loops disagree with torch (%s); using TorchScript", exc)
        return None
    return ops


def _forward(
    native: Any | None, mode: str, gi: Tensor, w_hh: Tensor, b_hh: Tensor
) -> tuple[Tensor, ...]:
    if native is None:
        out = _kernels()[f"{mode}_fwd"](gi, w_hh, b_hh)
        return (out,) if mode == "rnn" else out
    w_t = w_hh.t().contiguous()  # [H, G*H]: the faster BLAS orientation for small sizes
    gi = gi.contiguous()
    # gi is a temporary of the caller: it becomes hs (rnn) or the saved gates (lstm, gru).
    if mode == "rnn":
        native.rnn_forward(gi, w_t, b_hh)
        return (gi,)
    hs, other = getattr(native, f"{mode}_forward")(gi, w_t, b_hh)
    return (hs, gi, other)


def _backward(
    native: Any | None, mode: str, dhs: Tensor, dcn: Tensor, saved: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """-> gradients of the input projection gi and of the recurrent one (W_hh h + b_hh), which
    differ for GRU only; saved = forward tensors + [w_hh]."""
    if native is None:
        bwd = _kernels()[f"{mode}_bwd"]
        return bwd(dhs, dcn, *saved) if mode == "lstm" else bwd(dhs, *saved)
    if mode == "rnn":
        hs, w_hh = saved
        dg = native.rnn_backward(dhs, hs, w_hh)
        return dg, dg
    if mode == "lstm":
        _, a, c, w_hh = saved
        dg = native.lstm_backward(dhs, dcn, a, c, w_hh)
        return dg, dg
    hs, g, ns, w_hh = saved
    dgi, dgh = native.gru_backward(dhs, hs, g, ns, w_hh)
    return dgi, dgh


class _Layer(torch.autograd.Function):
    """One layer: x [T, B, I], w_ih, b_ih, w_hh, b_hh -> hs [T, B, H] (LSTM: hs, c_n)."""

    @staticmethod
    def forward(
        ctx: Any, mode: str, x: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor
    ) -> Any:
        n, b = x.size(0), x.size(1)
        gi = torch.addmm(b_ih, x.reshape(n * b, -1), w_ih.t()).view(n, b, -1)
        w_hh, b_hh = w_hh.contiguous(), b_hh.contiguous()
        native = _native() if gi.dtype in (torch.float32, torch.float64) else None
        saved = _forward(native, mode, gi, w_hh, b_hh)
        ctx.mode, ctx.native = mode, native
        ctx.save_for_backward(x, w_ih, *saved, w_hh)
        return (saved[0], saved[2][-1].clone()) if mode == "lstm" else saved[0]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dhs: Tensor, dcn: Tensor | None = None) -> Any:
        x, w_ih, *saved = ctx.saved_tensors
        dhs = dhs.contiguous()
        dcn = dcn.contiguous() if dcn is not None else dhs[0]
        dgi, dgh = _backward(ctx.native, ctx.mode, dhs, dcn, saved)
        need, gi2 = ctx.needs_input_grad, dgi.flatten(0, 1)
        # Products in this orientation are much faster in MKL for these tall-skinny shapes; step
        # 0 adds nothing to dW_hh as h_{-1} = 0.
        dx = w_ih.t().mm(gi2.t()).t().reshape(x.shape) if need[1] else None
        dw_ih = x.reshape(gi2.size(0), -1).t().mm(gi2).t() if need[2] else None
        db_ih = gi2.sum(0)
        dw_hh = saved[0][:-1].flatten(0, 1).t().mm(dgh[1:].flatten(0, 1)).t() if need[4] else None
        db_hh = dgh.flatten(0, 1).sum(0) if ctx.mode == "gru" else db_ih
        return None, dx, dw_ih, db_ih, dw_hh, db_hh


class FastRNN(nn.RNNBase):
    """Batch-first, unidirectional RNN (tanh) / LSTM / GRU with bias (fused from a zero state).

    Parameters, their names, gate order and init are those of the torch module, so state dicts
    load both ways. forward(x [B, T, I]) -> (output [B, T, H], h_n [L, B, H] or (h_n, c_n)).
    """

    def __init__(
        self,
        mode: Mode,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        if mode not in _TORCH_MODES:
            raise ValueError(f"unknown mode {mode!r}; available: {', '.join(_TORCH_MODES)}")
        with warnings.catch_warnings():
            # Dropout with one layer is a no-op, as in torch; no need to warn about it.
            warnings.filterwarnings("ignore", message="dropout option adds dropout")
            super().__init__(
                _TORCH_MODES[mode], input_size, hidden_size, num_layers, True, True, dropout
            )
        self.kind = mode
        self.nonlinearity = "tanh"  # what nn.RNN.forward reads

    def forward(
        self, x: Tensor, hx: Tensor | tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        if x.dim() != 3 or x.size(-1) != self.input_size:
            raise ValueError(f"expected input [B, T, {self.input_size}], got {list(x.shape)}")
        if hx is not None:
            # The fused loops start from zeros; a carried state (truncated BPTT's later chunks)
            # takes torch's kernels, on the same parameters.
            return _TORCH_MODULES[self.kind].forward(self, x, hx)
        if x.device.type != "cpu":
            return self._torch_forward(x)
        if torch.is_autocast_enabled("cpu") or x.dtype != torch.float32:
            _note_float32_only(x.dtype)
            return self._torch_forward(x)
        inp = x.transpose(0, 1).contiguous()
        h_n, c_n = [], []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._flat_weights[4 * k : 4 * k + 4]
            if self.kind == "lstm":
                inp, c = _Layer.apply("lstm", inp, w_ih, b_ih, w_hh, b_hh)
                c_n.append(c)
            else:
                inp = _Layer.apply(self.kind, inp, w_ih, b_ih, w_hh, b_hh)
            h_n.append(inp[-1])
            if self.dropout > 0 and self.training and k < self.num_layers - 1:
                inp = torch.nn.functional.dropout(inp, self.dropout, True)
        out = inp.transpose(0, 1).contiguous()
        h = torch.stack(h_n)
        return (out, (h, torch.stack(c_n))) if self.kind == "lstm" else (out, h)

    def _torch_forward(self, x: Tensor) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        """torch's own kernels (cuDNN on GPU, oneDNN for the LSTM on CPU): torch.nn's module
        forward on these same parameters."""
        return _TORCH_MODULES[self.kind].forward(self, x)

    # nn.LSTM.forward calls these LSTM methods of self; the RNN's and GRU's are RNNBase's.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size

    def check_forward_args(self, *args: Any) -> None:
        _TORCH_MODULES[self.kind].check_forward_args(self, *args)

    def permute_hidden(self, *args: Any) -> Any:
        return _TORCH_MODULES[self.kind].permute_hidden(self, *args)


# FastRNN is an nn.RNNBase with the attributes each of these forwards reads.
_TORCH_MODULES: dict[str, Any] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
