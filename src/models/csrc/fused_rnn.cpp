// Time loops of the tanh RNN, LSTM and GRU, forward and BPTT backward, as torch operators
// (torch.ops.seqlab_fused.*). Built by torch.utils.cpp_extension (src/models/fused_build.py).
//
// Layout is time-major and row-major: gi [T, B, G*H] holds every step's input projection
// x W_ih^T + b_ih (one matmul, made by the caller); hs [T, B, H]. The recurrent product of each
// step is one GEMM of the BLAS torch links (MKL or OpenBLAS), the routine ATen's own addmm ends
// in (ATen's cpublas wrapper is not exported, and at::mm costs microseconds a step in dispatch,
// as much as the product itself at these sizes). Gates are summed as torch.nn's cells sum them,
// x W_ih^T + b_ih plus (b_hh + h W_hh^T), in ATen's vectorized arithmetic: sigmoid as torch's
// kernel writes it, 1 / (1 + exp(-x)), with ATen's fast exp (exp_u20; Sleef's exact exp and tanh
// made the forward 1.3-1.5x slower), and tanh(x) = 2 sigmoid(2x) - 1. Outputs agree with torch.nn's
// to float rounding (tests/models/test_fast_rnn.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cstring>
#include <tuple>
#include <utility>

// The Fortran BLAS of libtorch. Integers go as 64-bit: on a little-endian machine an LP64 BLAS
// reads their low 32 bits, the same value below 2**31, and an ILP64 BLAS reads all of them.
extern "C" {
void sgemm_(const char*, const char*, const int64_t*, const int64_t*, const int64_t*,
            const float*, const float*, const int64_t*, const float*, const int64_t*,
            const float*, float*, const int64_t*, size_t, size_t);
void dgemm_(const char*, const char*, const int64_t*, const int64_t*, const int64_t*,
            const double*, const double*, const int64_t*, const double*, const int64_t*,
            const double*, double*, const int64_t*, size_t, size_t);
}

namespace {

using at::Tensor;
template <typename T> using Vec = at::vec::Vectorized<T>;

// out[rows, n] += a[rows, k] @ w[k, n] on row-major arrays: column-major GEMM of the transposes.
void matmul_add(int64_t rows, int64_t k, int64_t n, const float* a, const float* w, float* out) {
  const float one = 1;
  sgemm_("N", "N", &n, &rows, &k, &one, w, &n, a, &k, &one, out, &n, 1, 1);
}
void matmul_add(int64_t rows, int64_t k, int64_t n, const double* a, const double* w,
                double* out) {
  const double one = 1;
  dgemm_("N", "N", &n, &rows, &k, &one, w, &n, a, &k, &one, out, &n, 1, 1);
}

// torch's sigmoid kernel, 1 / (1 + exp(0 - x)), with the fast exp.
template <typename T> Vec<T> sigmoid(Vec<T> x) {
  return (Vec<T>(T(1)) + (Vec<T>(T(0)) - x).exp_u20()).reciprocal();
}
template <typename T> Vec<T> tanh(Vec<T> x) {
  return Vec<T>(T(2)) * sigmoid(x + x) - Vec<T>(T(1));
}

// Apply f to `len` lanes at a time: whole vectors, then one partial vector for the tail.
template <typename T, typename F> void each_vector(int64_t len, F f) {
  constexpr int64_t width = Vec<T>::size();
  int64_t j = 0;
  for (; j + width <= len; j += width) f(j, width);
  if (j < len) f(j, len - j);
}

template <typename T> Vec<T> load(const T* p, int64_t count) {
  return count == Vec<T>::size() ? Vec<T>::loadu(p) : Vec<T>::loadu(p, count);
}
template <typename T> void store(Vec<T> v, T* p, int64_t count) {
  if (count == Vec<T>::size()) {
    v.store(p);
  } else {
    v.store(p, count);
  }
}

// Rows of the batch never meet in a recurrence: row i of step t needs only row i of step t - 1.
// So each thread runs the whole time loop, forward or backward, for its own block of rows, with
// its own single-threaded GEMMs: no fork and join per step. A row's arithmetic does not depend on
// the block it falls in (tests/models/test_fast_rnn.py compares threads), so results do not
// depend on the thread count.
struct Rows {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};

// Rows per thread at least: below that, one thread runs the loop alone.
constexpr int64_t kRowsPerThread = 4;

template <typename Loop> void for_row_blocks(int64_t b, Loop loop) {
  at::parallel_for(0, b, kRowsPerThread,
                   [&](int64_t begin, int64_t end) { loop(Rows{begin, end}); });
}

// The recurrent projection of step t, b_hh + h_{t-1} W_hh^T, into the rows r of hh [b, width]:
// b_hh alone at t = 0. hs holds the states of the steps so far, [t, b, h].
template <typename T>
void recurrent_projection(int64_t t, int64_t b, int64_t h, int64_t width, Rows r, const T* hs,
                          const T* w_t, const T* b_hh, T* hh) {
  for (int64_t i = r.begin; i < r.end; ++i) std::memcpy(hh + i * width, b_hh, width * sizeof(T));
  if (t) {
    matmul_add(r.size(), h, width, hs + (t - 1) * b * h + r.begin * h, w_t,
               hh + r.begin * width);
  }
}

void check(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), name, " must be a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              " must be float32 or float64");
}

// ---- tanh RNN: h_t = tanh(gi_t + (b_hh + h_{t-1} W_hh^T)) ----

template <typename T>
void rnn_forward_loop(int64_t n, int64_t b, int64_t h, Rows r, T* gi, const T* w_t,
                      const T* b_hh, T* hh) {
  for (int64_t t = 0; t < n; ++t) {
    recurrent_projection(t, b, h, h, r, gi, w_t, b_hh, hh);
    T* o = gi + (t * b + r.begin) * h;  // x W_ih^T + b_ih, then h_t
    const T* q = hh + r.begin * h;
    each_vector<T>(r.size() * h, [&](int64_t j, int64_t c) {
      store(tanh<T>(load(o + j, c) + load(q + j, c)), o + j, c);
    });
  }
}

template <typename T>
void rnn_backward_loop(int64_t n, int64_t b, int64_t h, Rows r, const T* dhs, const T* hs,
                       const T* w_hh, T* dg, T* dh) {
  const int64_t m = b * h, first = r.begin * h, count = r.size() * h;
  std::memcpy(dh + first, dhs + (n - 1) * m + first, count * sizeof(T));
  for (int64_t t = n - 1; t >= 0; --t) {
    const T* y = hs + t * m + first;
    T* d = dg + t * m + first;
    for (int64_t j = 0; j < count; ++j) d[j] = dh[first + j] * (T(1) - y[j] * y[j]);
    if (t) {
      std::memcpy(dh + first, dhs + (t - 1) * m + first, count * sizeof(T));
      matmul_add(r.size(), h, h, d, w_hh, dh + first);
    }
  }
}

// ---- LSTM, gates i, f, g, o: c_t = f c_{t-1} + i g, h_t = o tanh(c_t) ----

template <typename T>
void lstm_forward_loop(int64_t n, int64_t b, int64_t h, Rows r, T* a, const T* w_t,
                       const T* b_hh, T* hs, T* c, T* hh) {
  const int64_t m = b * h, g = 4 * h;
  for (int64_t t = 0; t < n; ++t) {
    recurrent_projection(t, b, h, g, r, hs, w_t, b_hh, hh);
    for (int64_t i = r.begin; i < r.end; ++i) {
      T* qi = a + t * b * g + i * g;  // x W_ih^T + b_ih, then the activated gates i, f, g, o
      const T* q = hh + i * g;
      const T* cp = t ? c + (t - 1) * m + i * h : nullptr;
      T *co = c + t * m + i * h, *ho = hs + t * m + i * h;
      each_vector<T>(h, [&](int64_t j, int64_t k) {
        const Vec<T> ig = sigmoid(load(qi + j, k) + load(q + j, k));
        const Vec<T> fg = sigmoid(load(qi + h + j, k) + load(q + h + j, k));
        const Vec<T> gg = tanh<T>(load(qi + 2 * h + j, k) + load(q + 2 * h + j, k));
        const Vec<T> og = sigmoid(load(qi + 3 * h + j, k) + load(q + 3 * h + j, k));
        const Vec<T> ct = cp ? fg * load(cp + j, k) + ig * gg : ig * gg;
        store(ig, qi + j, k), store(fg, qi + h + j, k), store(gg, qi + 2 * h + j, k);
        store(og, qi + 3 * h + j, k), store(ct, co + j, k), store(og * tanh<T>(ct), ho + j, k);
      });
    }
  }
}

template <typename T>
void lstm_backward_loop(int64_t n, int64_t b, int64_t h, Rows r, const T* dhs, const T* dcn,
                        const T* a, const T* c, const T* w_hh, const T* zero, T* dg, T* dh, T* dc,
                        T* tc) {
  const int64_t m = b * h, g = 4 * h, first = r.begin * h, count = r.size() * h;
  std::memcpy(dh + first, dhs + (n - 1) * m + first, count * sizeof(T));
  std::memcpy(dc + first, dcn + first, count * sizeof(T));
  for (int64_t t = n - 1; t >= 0; --t) {
    const T* ct = c + t * m + first;
    each_vector<T>(count, [&](int64_t j, int64_t k) {
      store(tanh<T>(load(ct + j, k)), tc + first + j, k);
    });
    for (int64_t i = r.begin; i < r.end; ++i) {
      const T *qi = a + t * b * g + i * g, *qf = qi + h, *qg = qf + h, *qo = qg + h;
      // zero, not a branch in the inner loop: it then vectorizes
      const T* cp = (t ? c + (t - 1) * m : zero) + i * h;
      const T* tci = tc + i * h;
      T *di = dg + t * b * g + i * g, *df = di + h, *dgg = df + h, *dgo = dgg + h;
      T *dhi = dh + i * h, *dci = dc + i * h;
      for (int64_t j = 0; j < h; ++j) {
        const T ig = qi[j], fg = qf[j], gg = qg[j], og = qo[j], th = tci[j];
        const T dcc = dci[j] + dhi[j] * og * (T(1) - th * th);
        di[j] = dcc * gg * ig * (T(1) - ig);
        df[j] = dcc * cp[j] * fg * (T(1) - fg);
        dgg[j] = dcc * ig * (T(1) - gg * gg);
        dgo[j] = dhi[j] * th * og * (T(1) - og);
        dci[j] = dcc * fg;
      }
    }
    if (t) {
      std::memcpy(dh + first, dhs + (t - 1) * m + first, count * sizeof(T));
      matmul_add(r.size(), g, h, dg + t * b * g + r.begin * g, w_hh, dh + first);
    }
  }
}

// ---- GRU, gates r, z, n: n = tanh(x_n + r (W_hn h + b_hn)), h_t = (h_{t-1} - n) z + n ----

template <typename T>
void gru_forward_loop(int64_t n, int64_t b, int64_t h, Rows r, T* g, const T* w_t, const T* b_hh,
                      T* hs, T* ns, T* hh) {
  const int64_t m = b * h, g3 = 3 * h;
  for (int64_t t = 0; t < n; ++t) {
    recurrent_projection(t, b, h, g3, r, hs, w_t, b_hh, hh);
    for (int64_t i = r.begin; i < r.end; ++i) {
      T* q = g + t * b * g3 + i * g3;  // x W_ih^T + b_ih, then r, z and W_hn h + b_hn
      const T* r_h = hh + i * g3;
      const T* hp = t ? hs + (t - 1) * m + i * h : nullptr;
      T *no = ns + t * m + i * h, *ho = hs + t * m + i * h;
      each_vector<T>(h, [&](int64_t j, int64_t k) {
        const Vec<T> rg = sigmoid(load(q + j, k) + load(r_h + j, k));
        const Vec<T> z = sigmoid(load(q + h + j, k) + load(r_h + h + j, k));
        const Vec<T> hn = load(r_h + 2 * h + j, k);
        const Vec<T> nn = tanh<T>(load(q + 2 * h + j, k) + rg * hn);
        const Vec<T> prev = hp ? load(hp + j, k) : Vec<T>(T(0));
        store(rg, q + j, k), store(z, q + h + j, k), store(hn, q + 2 * h + j, k);
        store(nn, no + j, k), store((prev - nn) * z + nn, ho + j, k);
      });
    }
  }
}

template <typename T>
void gru_backward_loop(int64_t n, int64_t b, int64_t h, Rows rows, const T* dhs, const T* hs,
                       const T* g, const T* ns, const T* w_hh, const T* zero, T* dgi, T* dgh,
                       T* dh, T* dhp) {
  const int64_t m = b * h, g3 = 3 * h, first = rows.begin * h;
  std::memcpy(dh + first, dhs + (n - 1) * m + first, rows.size() * h * sizeof(T));
  for (int64_t t = n - 1; t >= 0; --t) {
    for (int64_t i = rows.begin; i < rows.end; ++i) {
      const T *qr = g + t * b * g3 + i * g3, *qz = qr + h, *qn = qz + h, *nq = ns + t * m + i * h;
      const T* hp = (t ? hs + (t - 1) * m : zero) + i * h;
      const T* dq = (t ? dhs + (t - 1) * m : zero) + i * h;
      const T* dhi = dh + i * h;
      T *ir = dgi + t * b * g3 + i * g3, *iz = ir + h, *in = iz + h;
      T *hr = dgh + t * b * g3 + i * g3, *hz = hr + h, *hn = hz + h, *dpi = dhp + i * h;
      for (int64_t j = 0; j < h; ++j) {
        const T r = qr[j], z = qz[j], nn = nq[j], d = dhi[j], prev = hp[j];
        const T dn = d * (T(1) - z) * (T(1) - nn * nn), dz = d * (prev - nn) * z * (T(1) - z);
        const T dr = dn * qn[j] * r * (T(1) - r);
        ir[j] = hr[j] = dr, iz[j] = hz[j] = dz, in[j] = dn, hn[j] = dn * r;
        dpi[j] = dq[j] + d * z;
      }
    }
    if (t) {
      matmul_add(rows.size(), g3, h, dgh + t * b * g3 + rows.begin * g3, w_hh, dhp + first);
      std::swap(dh, dhp);
    }
  }
}

// ---- the operators: shapes from gi [T, B, G*H] and w_hh [G*H, H] ----

// The forwards overwrite gi, a temporary of the caller, with what backward needs.
void rnn_forward(Tensor& gi, const Tensor& w_t, const Tensor& b_hh) {
  check(gi, "gi"), check(w_t, "w_t"), check(b_hh, "b_hh");
  const int64_t n = gi.size(0), b = gi.size(1), h = w_t.size(0);
  Tensor hh = at::empty({b, h}, gi.options());
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "rnn_forward", [&] {
    for_row_blocks(b, [&](Rows r) {
      rnn_forward_loop<scalar_t>(n, b, h, r, gi.data_ptr<scalar_t>(),
                                 w_t.const_data_ptr<scalar_t>(), b_hh.const_data_ptr<scalar_t>(),
                                 hh.data_ptr<scalar_t>());
    });
  });
}

Tensor rnn_backward(const Tensor& dhs, const Tensor& hs, const Tensor& w) {
  check(dhs, "dhs"), check(hs, "hs"), check(w, "w_hh");
  const int64_t n = hs.size(0), b = hs.size(1), h = hs.size(2);
  Tensor dg = at::empty_like(hs), dh = at::empty({b, h}, hs.options());
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "rnn_backward", [&] {
    for_row_blocks(b, [&](Rows r) {
      rnn_backward_loop<scalar_t>(n, b, h, r, dhs.const_data_ptr<scalar_t>(),
                                  hs.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                  dg.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>());
    });
  });
  return dg;
}

// The LSTM's and GRU's forward: gi becomes the saved gates; -> (hs, c for the LSTM, n for the GRU).
template <typename Loop>
std::tuple<Tensor, Tensor> gated_forward(Tensor& gi, const Tensor& w_t, const Tensor& b_hh,
                                         int64_t gates, Loop loop) {
  check(gi, "gi"), check(w_t, "w_t"), check(b_hh, "b_hh");
  const int64_t n = gi.size(0), b = gi.size(1), h = w_t.size(0);
  Tensor hs = at::empty({n, b, h}, gi.options()), other = at::empty_like(hs);
  Tensor hh = at::empty({b, gates * h}, gi.options());
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "gated_forward", [&] {
    for_row_blocks(b, [&](Rows r) {
      loop(n, b, h, r, gi.data_ptr<scalar_t>(), w_t.const_data_ptr<scalar_t>(),
           b_hh.const_data_ptr<scalar_t>(), hs.data_ptr<scalar_t>(), other.data_ptr<scalar_t>(),
           hh.data_ptr<scalar_t>());
    });
  });
  return {hs, other};
}

std::tuple<Tensor, Tensor> lstm_forward(Tensor& gi, const Tensor& w_t, const Tensor& b_hh) {
  return gated_forward(gi, w_t, b_hh, 4, [](auto... args) { lstm_forward_loop(args...); });
}

std::tuple<Tensor, Tensor> gru_forward(Tensor& gi, const Tensor& w_t, const Tensor& b_hh) {
  return gated_forward(gi, w_t, b_hh, 3, [](auto... args) { gru_forward_loop(args...); });
}

Tensor lstm_backward(const Tensor& dhs, const Tensor& dcn, const Tensor& a, const Tensor& c,
                     const Tensor& w) {
  check(dhs, "dhs"), check(dcn, "dcn"), check(a, "gates"), check(c, "c"), check(w, "w_hh");
  const int64_t n = c.size(0), b = c.size(1), h = c.size(2);
  Tensor dg = at::empty_like(a), dh = at::empty({b, h}, c.options());
  Tensor dc = at::empty_like(dh), tc = at::empty_like(dh), zero = at::zeros_like(dh);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "lstm_backward", [&] {
    for_row_blocks(b, [&](Rows r) {
      lstm_backward_loop<scalar_t>(
          n, b, h, r, dhs.const_data_ptr<scalar_t>(), dcn.const_data_ptr<scalar_t>(),
          a.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
          zero.const_data_ptr<scalar_t>(), dg.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(),
          dc.data_ptr<scalar_t>(), tc.data_ptr<scalar_t>());
    });
  });
  return dg;
}

std::tuple<Tensor, Tensor> gru_backward(const Tensor& dhs, const Tensor& hs, const Tensor& g,
                                        const Tensor& ns, const Tensor& w) {
  check(dhs, "dhs"), check(hs, "hs"), check(g, "gates"), check(ns, "n"), check(w, "w_hh");
  const int64_t n = hs.size(0), b = hs.size(1), h = hs.size(2);
  Tensor dgi = at::empty_like(g), dgh = at::empty_like(g);
  Tensor dh = at::empty({b, h}, hs.options()), dhp = at::empty_like(dh), zero = at::zeros_like(dh);
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "gru_backward", [&] {
    for_row_blocks(b, [&](Rows r) {
      gru_backward_loop<scalar_t>(n, b, h, r, dhs.const_data_ptr<scalar_t>(),
                                  hs.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
                                  ns.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                  zero.const_data_ptr<scalar_t>(), dgi.data_ptr<scalar_t>(),
                                  dgh.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(),
                                  dhp.data_ptr<scalar_t>());
    });
  });
  return {dgi, dgh};
}

}  // namespace

TORCH_LIBRARY(seqlab_fused, m) {
  m.def("rnn_forward(Tensor(a!) gi, Tensor w_t, Tensor b_hh) -> ()");
  m.def("rnn_backward(Tensor dhs, Tensor hs, Tensor w_hh) -> Tensor");
  m.def("lstm_forward(Tensor(a!) gi, Tensor w_t, Tensor b_hh) -> (Tensor, Tensor)");
  m.def("lstm_backward(Tensor dhs, Tensor dcn, Tensor a, Tensor c, Tensor w_hh) -> Tensor");
  m.def("gru_forward(Tensor(a!) gi, Tensor w_t, Tensor b_hh) -> (Tensor, Tensor)");
  m.def("gru_backward(Tensor dhs, Tensor hs, Tensor g, Tensor ns, Tensor w_hh) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(seqlab_fused, CPU, m) {
  m.impl("rnn_forward", rnn_forward);
  m.impl("rnn_backward", rnn_backward);
  m.impl("lstm_forward", lstm_forward);
  m.impl("lstm_backward", lstm_backward);
  m.impl("gru_forward", gru_forward);
  m.impl("gru_backward", gru_backward);
}
