"""Fast CPU recurrences (tanh RNN, LSTM, GRU) with a hand-written BPTT backward.

`FastRNN` is a drop-in for batch-first, unidirectional `nn.RNN`/`nn.LSTM`/`nn.GRU` (same
parameters, init and results). Per layer, the input projection of all steps is one matmul and an
autograd Function runs the time loop, forward and backward, with weight gradients as one matmul
after the loop. The loops are C++ (compiled on first use with the system compiler, cached in the
temp dir, calling the BLAS inside torch), or TorchScript where that is unavailable. Non-CPU
inputs use torch's own kernels (cuDNN).
"""

import ctypes
import functools
import glob
import hashlib
import logging
import os
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import _VF, Tensor, nn
from torch.autograd.function import once_differentiable

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


class _Native:
    """The C++ loops; `gemm` maps dtype -> address of the Fortran BLAS ?gemm_ torch links."""

    def __init__(self, lib: ctypes.CDLL, gemm: dict[torch.dtype, int]) -> None:
        self.lib, self.gemm = lib, gemm

    def __call__(self, name: str, n: int, b: int, h: int, *ts: Tensor) -> None:
        dtype = ts[0].dtype
        fn = getattr(self.lib, f"{name}_{'f32' if dtype == torch.float32 else 'f64'}")
        ptrs = (ctypes.c_void_p * len(ts))(*(t.data_ptr() for t in ts))
        fn(ctypes.c_void_p(self.gemm[dtype]), n, b, h, ptrs)


def _blas_symbol(name: str) -> int:
    libs = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.*"))
    for path in [*libs, None]:
        try:
            return ctypes.cast(getattr(ctypes.CDLL(path), name), ctypes.c_void_p).value or 0
        except (OSError, AttributeError):
            continue
    raise RuntimeError(f"BLAS symbol {name} not found")


def _build() -> Path:
    cxx = os.environ.get("CXX", "c++")
    flags = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]
    key = hashlib.sha256("\0".join([_CPP, cxx, *flags]).encode()).hexdigest()[:16]
    # Per-machine (temp) cache: -march=native code must not travel to another CPU.
    cache = Path(tempfile.gettempdir()) / f"seqlab-fast-rnn-{os.getuid()}"
    lib = cache / f"{key}.so"
    if not lib.exists():
        cache.mkdir(mode=0o700, exist_ok=True)
        src, tmp = cache / f"{key}.{os.getpid()}.cpp", cache / f"{key}.{os.getpid()}.so"
        src.write_text(_CPP)
        try:
            cmd = [cxx, *flags, str(src), "-o", str(tmp)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            os.replace(tmp, lib)  # atomic: concurrent builders never load a partial file
        finally:
            src.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
    return lib


@functools.cache
def _native() -> _Native | None:
    """The C++ loops, or None (then TorchScript) if they cannot be built, loaded or verified.
    SEQLAB_FAST_RNN_NATIVE=0 disables them."""
    if os.environ.get("SEQLAB_FAST_RNN_NATIVE", "1") == "0":
        return None
    try:
        gemm = {torch.float32: _blas_symbol("sgemm_"), torch.float64: _blas_symbol("dgemm_")}
        lib = ctypes.CDLL(str(_build()))
        for mode in _TORCH_MODES:
            for name in (f"{mode}_{d}_{t}" for d in ("fwd", "bwd") for t in ("f32", "f64")):
                fn = getattr(lib, name)
                fn.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 3, ctypes.c_void_p]
                fn.restype = None
        native = _Native(lib, gemm)
        # Guard against a BLAS with another ABI: a tiny case must match the torch loop.
        gen = torch.Generator().manual_seed(0)
        for dtype in (torch.float32, torch.float64):
            gi, w = (torch.randn(s, generator=gen, dtype=dtype) for s in ((3, 2, 9), (9, 3)))
            want = _gru_fwd(gi, w, w[:, 0])[0]
            torch.testing.assert_close(
                _forward(native, "gru", gi, w, w[:, 0].contiguous())[0], want
            )
        return native
    except Exception as exc:
        log.warning("FastRNN: C++ loops unavailable (%s); using TorchScript", exc)
        return None


def _forward(
    native: _Native | None, mode: str, gi: Tensor, w_hh: Tensor, b_hh: Tensor
) -> tuple[Tensor, ...]:
    if native is None:
        out = _kernels()[f"{mode}_fwd"](gi, w_hh, b_hh)
        return (out,) if mode == "rnn" else out
    n, b, h = gi.size(0), gi.size(1), w_hh.size(1)
    w_hh = w_hh.t().contiguous()  # [H, G*H]: the faster BLAS orientation for small sizes
    # gi is a temporary of the caller: rnn and lstm overwrite it with hs and the gates.
    if mode == "rnn":
        native("rnn_fwd", n, b, h, gi, w_hh, b_hh, gi)
        return (gi,)
    out = (
        gi.new_empty(n, b, h),
        gi if mode == "lstm" else torch.empty_like(gi),
        gi.new_empty(n, b, h),
    )
    native(f"{mode}_fwd", n, b, h, gi, w_hh, b_hh, gi.new_zeros(b, h), *out)
    return out


def _backward(
    native: _Native | None, mode: str, dhs: Tensor, dcn: Tensor, saved: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """-> gradients of the input projection gi and of the recurrent one (W_hh h + b_hh), which
    differ for GRU only; saved = forward tensors + [w_hh]."""
    if native is None:
        bwd = _kernels()[f"{mode}_bwd"]
        return bwd(dhs, dcn, *saved) if mode == "lstm" else bwd(dhs, *saved)
    n, b, h = dhs.shape
    dh, scratch, zero = dhs.new_empty(b, h), dhs.new_empty(b, h), dhs.new_zeros(b, h)
    dgh = dgi = torch.empty_like(saved[1]) if mode != "rnn" else torch.empty_like(dhs)
    if mode == "rnn":
        native("rnn_bwd", n, b, h, dhs, *saved, dgi, dh)
    elif mode == "lstm":
        native("lstm_bwd", n, b, h, dhs, dcn, *saved, zero, dgi, dh, scratch)
    else:
        dgh = torch.empty_like(dgi)
        native("gru_bwd", n, b, h, dhs, *saved, zero, dgi, dgh, dh, scratch)
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
    """Batch-first, unidirectional RNN (tanh) / LSTM / GRU with bias and zero initial state.

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

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        if x.dim() != 3 or x.size(-1) != self.input_size:
            raise ValueError(f"expected input [B, T, {self.input_size}], got {list(x.shape)}")
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
        """torch's own kernels (cuDNN on GPU), same semantics as the fused path."""
        h0 = x.new_zeros(self.num_layers, x.size(0), self.hidden_size)
        args = (self._flat_weights, True, self.num_layers, self.dropout, self.training, False, True)
        if self.kind == "lstm":
            out, h, c = _VF.lstm(x, (h0, h0), *args)
            return out, (h, c)
        out, h = (_VF.gru if self.kind == "gru" else _VF.rnn_tanh)(x, h0, *args)
        return out, h


_CPP = r"""// Time loops of tanh-RNN / LSTM / GRU, forward and BPTT backward; time-major row-major.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
typedef long long i64;  // BLAS ints passed as 64 bit read right under both LP64 and ILP64
template <typename T>
using Gemm = void (*)(const char*, const char*, const i64*, const i64*, const i64*, const T*,
                      const T*, const i64*, const T*, const i64*, const T*, T*, const i64*,
                      size_t, size_t);

// exp by Cody-Waite reduction and a Taylor polynomial: plain arithmetic, so the loops vectorize.
static inline float fexp(float x) {
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float k = (x * 1.44269504f + 12582912.f) - 12582912.f;
  const float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;
  float p = 1.f / 5040;
  for (float c : {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, .5f, 1.f, 1.f}) p = p * r + c;
  const int32_t e = ((int32_t)k + 127) << 23;
  float s;
  std::memcpy(&s, &e, 4);
  return p * s;
}
static inline double fexp(double x) {
  x = x < -708. ? -708. : (x > 709. ? 709. : x);
  const double k = (x * 1.4426950408889634 + 6755399441055744.) - 6755399441055744.;
  const double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
  double p = 1. / 6227020800;
  for (double c : {1. / 479001600, 1. / 39916800, 1. / 3628800, 1. / 362880, 1. / 40320,
                   1. / 5040, 1. / 720, 1. / 120, 1. / 24, 1. / 6, .5, 1., 1.})
    p = p * r + c;
  const int64_t e = (int64_t)((int32_t)k + 1023) << 52;
  double s;
  std::memcpy(&s, &e, 8);
  return p * s;
}
template <typename T> static inline T sig(T x) { return T(1) / (T(1) + fexp(-x)); }
template <typename T> static inline T th(T x) { return T(1) - T(2) / (T(1) + fexp(T(2) * x)); }

// out[rows, n] += a[rows, k] @ w[k, n], with column-major BLAS on row-major arrays
template <typename T>
static void mm(void* f, i64 rows, i64 k, i64 n, const T* a, const T* w, T* out) {
  const T one = 1;
  ((Gemm<T>)f)("N", "N", &n, &rows, &k, &one, w, &n, a, &k, &one, out, &n, 1, 1);
}
// y[i, :] = x[i, :] + bias for the first `width` of `stride` columns
template <typename T>
static void add_bias(i64 rows, i64 width, i64 stride, const T* x, const T* bias, T* y) {
  for (i64 i = 0; i < rows; ++i)
    for (i64 j = 0; j < width; ++j) y[i * stride + j] = x[i * stride + j] + bias[j];
}

template <typename T> static void rnn_fwd(void* f, i64 n, i64 b, i64 h, void** p) {
  const T *gi = (T*)p[0], *w = (T*)p[1], *bias = (T*)p[2];
  T* hs = (T*)p[3];
  const i64 m = b * h;
  for (i64 t = 0; t < n; ++t) {
    T* o = hs + t * m;
    add_bias(b, h, h, gi + t * m, bias, o);
    if (t) mm(f, b, h, h, o - m, w, o);
    for (i64 i = 0; i < m; ++i) o[i] = th(o[i]);
  }
}

template <typename T> static void rnn_bwd(void* f, i64 n, i64 b, i64 h, void** p) {
  const T *dhs = (T*)p[0], *hs = (T*)p[1], *w = (T*)p[2];
  T *dg = (T*)p[3], *dh = (T*)p[4];
  const i64 m = b * h;
  std::memcpy(dh, dhs + (n - 1) * m, m * sizeof(T));
  for (i64 t = n - 1; t >= 0; --t) {
    const T* y = hs + t * m;
    T* d = dg + t * m;
#pragma GCC ivdep
    for (i64 i = 0; i < m; ++i) d[i] = dh[i] * (T(1) - y[i] * y[i]);
    if (t) {
      std::memcpy(dh, dhs + (t - 1) * m, m * sizeof(T));
      mm(f, b, h, h, d, w, dh);
    }
  }
}

template <typename T> static void lstm_fwd(void* f, i64 n, i64 b, i64 h, void** p) {
  const T *gi = (T*)p[0], *w = (T*)p[1], *bias = (T*)p[2], *zero = (T*)p[3];
  T *hs = (T*)p[4], *a = (T*)p[5], *c = (T*)p[6];
  const i64 m = b * h, g = 4 * h;
  for (i64 t = 0; t < n; ++t) {
    T* at = a + t * b * g;
    add_bias(b, g, g, gi + t * b * g, bias, at);
    if (t) mm(f, b, h, g, hs + (t - 1) * m, w, at);
    for (i64 i = 0; i < b; ++i) {
      T *qi = at + i * g, *qf = qi + h, *qg = qf + h, *qo = qg + h;
      T *co = c + t * m + i * h, *ho = hs + t * m + i * h;
      const T* cp = (t ? c + (t - 1) * m : zero) + i * h;
#pragma GCC ivdep
      for (i64 j = 0; j < h; ++j) {
        const T ig = sig(qi[j]), fg = sig(qf[j]), gg = th(qg[j]), og = sig(qo[j]);
        qi[j] = ig, qf[j] = fg, qg[j] = gg, qo[j] = og;
        co[j] = fg * cp[j] + ig * gg;
        ho[j] = og * th(co[j]);
      }
    }
  }
}

template <typename T> static void lstm_bwd(void* f, i64 n, i64 b, i64 h, void** p) {
  const T *dhs = (T*)p[0], *dcn = (T*)p[1], *a = (T*)p[3], *c = (T*)p[4], *w = (T*)p[5],
          *zero = (T*)p[6];
  T *dg = (T*)p[7], *dh = (T*)p[8], *dc = (T*)p[9];
  const i64 m = b * h, g = 4 * h;
  std::memcpy(dh, dhs + (n - 1) * m, m * sizeof(T));
  std::memcpy(dc, dcn, m * sizeof(T));
  for (i64 t = n - 1; t >= 0; --t) {
    for (i64 i = 0; i < b; ++i) {
      const T *qi = a + t * b * g + i * g, *qf = qi + h, *qg = qf + h, *qo = qg + h;
      const T *ct = c + t * m + i * h, *cp = (t ? c + (t - 1) * m : zero) + i * h;
      T *di = dg + t * b * g + i * g, *df = di + h, *dgg = df + h, *dgo = dgg + h;
      T *dhi = dh + i * h, *dci = dc + i * h;
#pragma GCC ivdep
      for (i64 j = 0; j < h; ++j) {
        const T ig = qi[j], fg = qf[j], gg = qg[j], og = qo[j], tc = th(ct[j]);
        const T dcc = dci[j] + dhi[j] * og * (T(1) - tc * tc);
        di[j] = dcc * gg * ig * (T(1) - ig);
        df[j] = dcc * cp[j] * fg * (T(1) - fg);
        dgg[j] = dcc * ig * (T(1) - gg * gg);
        dgo[j] = dhi[j] * tc * og * (T(1) - og);
        dci[j] = dcc * fg;
      }
    }
    if (t) {
      std::memcpy(dh, dhs + (t - 1) * m, m * sizeof(T));
      mm(f, b, g, h, dg + t * b * g, w, dh);
    }
  }
}

template <typename T> static void gru_fwd(void* f, i64 n, i64 b, i64 h, void** p) {
  const T *gi = (T*)p[0], *w = (T*)p[1], *bias = (T*)p[2], *zero = (T*)p[3];
  T *hs = (T*)p[4], *g = (T*)p[5], *ns = (T*)p[6];
  const i64 m = b * h, g3 = 3 * h;
  for (i64 t = 0; t < n; ++t) {
    T* gt = g + t * b * g3;  // r, z preactivations (then values) and W_hn h + b_hn
    const T* it = gi + t * b * g3;
    add_bias(b, 2 * h, g3, it, bias, gt);
    for (i64 i = 0; i < b; ++i) std::memcpy(gt + i * g3 + 2 * h, bias + 2 * h, h * sizeof(T));
    if (t) mm(f, b, h, g3, hs + (t - 1) * m, w, gt);
    for (i64 i = 0; i < b; ++i) {
      T *qr = gt + i * g3, *qz = qr + h, *no = ns + t * m + i * h, *ho = hs + t * m + i * h;
      const T *qn = qz + h, *x = it + i * g3 + 2 * h, *hp = (t ? hs + (t - 1) * m : zero) + i * h;
#pragma GCC ivdep
      for (i64 j = 0; j < h; ++j) {
        const T r = sig(qr[j]), z = sig(qz[j]), nn = th(x[j] + r * qn[j]);
        qr[j] = r, qz[j] = z, no[j] = nn;
        ho[j] = nn + z * (hp[j] - nn);
      }
    }
  }
}

template <typename T> static void gru_bwd(void* f, i64 n, i64 b, i64 h, void** p) {
  const T *dhs = (T*)p[0], *hs = (T*)p[1], *g = (T*)p[2], *ns = (T*)p[3], *w = (T*)p[4],
          *zero = (T*)p[5];
  T *dgi = (T*)p[6], *dgh = (T*)p[7], *dh = (T*)p[8], *dhp = (T*)p[9];
  const i64 m = b * h, g3 = 3 * h;
  std::memcpy(dh, dhs + (n - 1) * m, m * sizeof(T));
  for (i64 t = n - 1; t >= 0; --t) {
    for (i64 i = 0; i < b; ++i) {
      const T *qr = g + t * b * g3 + i * g3, *qz = qr + h, *qn = qz + h, *nq = ns + t * m + i * h;
      const T *hp = (t ? hs + (t - 1) * m : zero) + i * h;
      const T *dq = (t ? dhs + (t - 1) * m : zero) + i * h, *dhi = dh + i * h;
      T *ir = dgi + t * b * g3 + i * g3, *iz = ir + h, *in = iz + h;
      T *hr = dgh + t * b * g3 + i * g3, *hz = hr + h, *hn = hz + h, *dpi = dhp + i * h;
#pragma GCC ivdep
      for (i64 j = 0; j < h; ++j) {
        const T r = qr[j], z = qz[j], nn = nq[j], d = dhi[j];
        const T dn = d * (T(1) - z) * (T(1) - nn * nn), dz = d * (hp[j] - nn) * z * (T(1) - z);
        const T dr = dn * qn[j] * r * (T(1) - r);
        ir[j] = hr[j] = dr, iz[j] = hz[j] = dz, in[j] = dn, hn[j] = dn * r;
        dpi[j] = dq[j] + d * z;
      }
    }
    if (t) {
      mm(f, b, g3, h, dgh + t * b * g3, w, dhp);
      std::swap(dh, dhp);
    }
  }
}

#define EXPORT(name)                                                        \
  extern "C" void name##_f32(void* f, i64 n, i64 b, i64 h, void** p) {      \
    name<float>(f, n, b, h, p);                                             \
  }                                                                         \
  extern "C" void name##_f64(void* f, i64 n, i64 b, i64 h, void** p) {      \
    name<double>(f, n, b, h, p);                                            \
  }
EXPORT(rnn_fwd) EXPORT(rnn_bwd) EXPORT(lstm_fwd) EXPORT(lstm_bwd) EXPORT(gru_fwd) EXPORT(gru_bwd)
"""
