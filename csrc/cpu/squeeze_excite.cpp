// squeeze_excite on CPU: x * gate(w2 @ act(w1 @ mean_hw(x) + b1) + b2).
//
// Pass 1: per-channel means in the accumulate type (fast: channels_last vectorized over blocks of 64
// channels per sample, NCHW vectorized over each plane; generic: strided scalar sums).
// The two FCs in float: GEMMs split across the threads (float32 weights) or direct dot products (16-bit
// weights); addmm for float64. Then the activations.
// Pass 2: the gate (fast: vectorized rows; generic: fastzoo::se_apply per element, any strides).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu_kernels.h"
#include "fastzoo/checks.h"
#include "fastzoo/dwconv_math.h"

namespace fastzoo {
namespace cpu {

void check_se_args(const std::string& op, const at::Tensor& x, int64_t C, const at::Tensor& w1,
                   const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, const std::string& prefix) {
  const std::string n_w1 = prefix + "w1", n_b1 = prefix + "b1", n_w2 = prefix + "w2", n_b2 = prefix + "b2";
  check_same(op, x, w1, n_w1.c_str());
  check_same(op, x, w2, n_w2.c_str());
  const bool w1ok = (w1.dim() == 2 || (w1.dim() == 4 && w1.size(2) == 1 && w1.size(3) == 1)) && w1.size(1) == C &&
                    w1.size(0) > 0;
  TORCH_CHECK(w1ok, op, ": expected ", n_w1, " of shape (Cs, ", C, ") or (Cs, ", C, ", 1, 1) for C=", C, ", got ",
              w1.sizes());
  const int64_t Cs = w1.size(0);
  check_vec(op, x, b1, n_b1.c_str(), Cs);
  const bool w2ok =
      (w2.dim() == 2 || (w2.dim() == 4 && w2.size(2) == 1 && w2.size(3) == 1)) && w2.size(0) == C && w2.size(1) == Cs;
  TORCH_CHECK(w2ok, op, ": expected ", n_w2, " of shape (", C, ", ", Cs, ") or (", C, ", ", Cs, ", 1, 1), got ", w2.sizes());
  check_vec(op, x, b2, n_b2.c_str(), C);
}

namespace {

template <typename scalar_t>
void means_generic(const at::Tensor& x, at::Tensor& m) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  acc_t* mp = m.data_ptr<acc_t>();
  const acc_t inv = acc_t(1) / static_cast<acc_t>(H * W);
  at::parallel_for(0, N * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, H * W)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t n = i / C, c = i % C;
      const scalar_t* p = xp + n * sn + c * sc;
      acc_t s = 0;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) s += static_cast<acc_t>(p[h * sh + w * sw]);
      mp[i] = s * inv;
    }
  });
}

template <typename scalar_t>
void apply_generic(const at::Tensor& x, const at::Tensor& g, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const Strides4 xs{x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const Strides4 os{out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const acc_t* gp = g.const_data_ptr<acc_t>();
  at::parallel_for(0, N * C * H, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, W)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t h = i % H, c = (i / H) % C, n = i / (H * C);
      const acc_t gate = gp[n * C + c];
      for (int64_t w = 0; w < W; ++w)
        op[n * os.n + c * os.c + h * os.h + w * os.w] = static_cast<scalar_t>(
            se_apply<acc_t>(static_cast<acc_t>(xp[n * xs.n + c * xs.c + h * xs.h + w * xs.w]), gate));
    }
  });
}

template <typename acc_t>
void act_rows(at::Tensor& t, Act act) {
  acc_t* p = t.data_ptr<acc_t>();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = apply_act<acc_t>(p[i], act);
}

}  // namespace

bool se_means_fast(const at::Tensor& x, at::Tensor& m);
bool se_apply_fast(const at::Tensor& x, const at::Tensor& g, at::Tensor& out);

at::Tensor se_means(const at::Tensor& x, bool fast) {
  at::Tensor m = at::empty({x.size(0), x.size(1)}, x.options().dtype(acc_dtype(x)));
  if (m.numel() == 0) return m;
  if (fast && use_fast() && se_means_fast(x, m)) return m;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "squeeze_excite_means",
                                  [&] { means_generic<scalar_t>(x, m); });
  return m;
}

bool se_gate_fast(const at::Tensor& means, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                  const at::Tensor& b2, Act act, Act gate, at::Tensor& g);

at::Tensor se_gate(const at::Tensor& means, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                   const at::Tensor& b2, Act act, Act gate) {
  if (use_fast()) {
    at::Tensor g = at::empty({means.size(0), w2.size(0)}, means.options());
    if (se_gate_fast(means, w1, b1, w2, b2, act, gate, g)) return g;
  }
  const auto dt = means.scalar_type();
  const at::Tensor w1a = w1.reshape({w1.size(0), w1.size(1)}).to(dt);
  const at::Tensor w2a = w2.reshape({w2.size(0), w2.size(1)}).to(dt);
  at::Tensor s = at::addmm(b1.to(dt), means, w1a.t());
  at::Tensor g = at::empty({means.size(0), w2a.size(0)}, means.options());
  if (dt == at::kDouble) {
    act_rows<double>(s, act);
    at::addmm_out(g, b2.to(dt), s, w2a.t());
    act_rows<double>(g, gate);
  } else {
    act_rows<float>(s, act);
    at::addmm_out(g, b2.to(dt), s, w2a.t());
    act_rows<float>(g, gate);
  }
  return g;
}

void se_apply_gate(const at::Tensor& x, const at::Tensor& gate, at::Tensor& out, bool fast) {
  if (out.numel() == 0) return;
  if (fast && use_fast() && se_apply_fast(x, gate, out)) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "squeeze_excite_apply",
                                  [&] { apply_generic<scalar_t>(x, gate, out); });
}

at::Tensor squeeze_excite_cpu(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                              const at::Tensor& b2, c10::string_view act_name, c10::string_view gate_name) {
  const std::string op = "squeeze_excite";
  check_input4d(op, x);
  check_se_args(op, x, x.size(1), w1, b1, w2, b2);
  const Act act = check_act(op, "act", std::string(act_name));
  const Act gate = check_act(op, "gate", std::string(gate_name));
  at::Tensor out = at::empty(x.sizes(), x.options(), out_format(x));
  if (out.numel() == 0) return out;
  const bool fast = use_fast();
  const at::Tensor g = se_gate(se_means(x, fast), w1, b1, w2, b2, act, gate);
  se_apply_gate(x, g, out, fast);
  return out;
}

}  // namespace cpu
}  // namespace fastzoo

// ------------------------------------------------------------------------------------------------
#include "fastzoo/cpu_vec.h"

namespace fastzoo {
namespace cpu {

// sum_k w[k] * v[k] in float, w in the weights' storage type.
template <typename scalar_t>
inline float dot(const scalar_t* w, const float* v, int64_t n) {
  using V = Vectorized<float>;
  constexpr int64_t L = V::size();
  V a0(0.f), a1(0.f);
  int64_t k = 0;
  for (; k + 2 * L <= n; k += 2 * L) {
    a0 = at::vec::fmadd(vload(w + k), V::loadu(v + k), a0);
    a1 = at::vec::fmadd(vload(w + k + L), V::loadu(v + k + L), a1);
  }
  for (; k + L <= n; k += L) a0 = at::vec::fmadd(vload(w + k), V::loadu(v + k), a0);
  float s = at::vec::vec_reduce_all<float>([](V& x, V& y) { return x + y; }, a0 + a1);
  for (; k < n; ++k) s += static_cast<float>(w[k]) * v[k];
  return s;
}

// p[n, j] = act(p[n, j] + b[j]) for the N rows of M values, vectorized.
static void bias_act_rows(float* p, const float* b, int64_t N, int64_t M, Act act) {
  using V = Vectorized<float>;
  constexpr int64_t L = V::size();
  with_act(act, [&](auto A) {
    constexpr Act a = decltype(A)::value;
    at::parallel_for(0, N, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, M)), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        float* r = p + n * M;
        int64_t j = 0;
        for (; j + L <= M; j += L) vact<a>(V::loadu(r + j) + V::loadu(b + j)).store(r + j);
        if (j < M) store_n(r + j, vact<a>(V::loadu(r + j, M - j) + V::loadu(b + j, M - j)), M - j);
      }
    });
  });
}

// The float32 SE FCs on raw pointers: pg (N, C) = gate(act(pm w1^T + b1) w2^T + b2), the hidden rows in a
// buffer of the calling thread.
static void se_fcs_f32(const float* pm, int64_t N, int64_t C, const float* w1, const float* b1, int64_t Cs,
                       const float* w2, const float* b2, Act act, Act gate, float* pg) {
  thread_local std::vector<float> hidden;
  if (static_cast<int64_t>(hidden.size()) < N * Cs) hidden.resize(N * Cs);
  float* ps = hidden.data();
  // small FCs (weights up to 128 KiB) on the calling thread: splitting them cost more in thread wake-ups
  // than it saved; larger ones stream their weights from L3 faster on every thread
  const auto gemm = N * C * Cs <= (1 << 15) ? gemm_rows : gemm_rows_split;
  gemm(pm, C, w1, N, C, Cs, ps, Cs);
  bias_act_rows(ps, b1, N, Cs, act);
  gemm(ps, Cs, w2, N, Cs, C, pg, C);
  bias_act_rows(pg, b2, N, C, gate);
}

bool se_gate_f32(const float* means, int64_t N, int64_t C, const SeArgs& se, float* g) {
  for (const at::Tensor* t : {&se.w1, &se.b1, &se.w2, &se.b2})
    if (t->scalar_type() != at::kFloat || !t->is_contiguous()) return false;
  if (!use_fast()) return false;
  se_fcs_f32(means, N, C, se.w1.const_data_ptr<float>(), se.b1.const_data_ptr<float>(), se.w1.size(0),
             se.w2.const_data_ptr<float>(), se.b2.const_data_ptr<float>(), se.act, se.gate, g);
  return true;
}

// The SE FCs in float. float32 weights: two GEMMs, split across the threads by output channels where they
// are large enough (per-sample dot products re-read the weights per sample, 1.5x eager's time at batch 32).
// 16-bit weights: direct dot products, converting on the fly.
bool se_gate_fast(const at::Tensor& means, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                  const at::Tensor& b2, Act act, Act gate, at::Tensor& g) {
  if (means.scalar_type() != at::kFloat) return false;
  const int64_t N = means.size(0), C = means.size(1), Cs = w1.size(0);
  if (w2.scalar_type() != w1.scalar_type()) return false;
  const at::Tensor w1c = w1.contiguous(), w2c = w2.contiguous();
  const at::Tensor b1c = b1.to(at::kFloat).contiguous(), b2c = b2.to(at::kFloat).contiguous();
  const at::Tensor mc = means.contiguous();
  const float *pb1 = b1c.const_data_ptr<float>(), *pb2 = b2c.const_data_ptr<float>();
  const float* pm = mc.const_data_ptr<float>();
  float* pg = g.data_ptr<float>();
  if (w1.scalar_type() == at::kFloat) {
    se_fcs_f32(pm, N, C, w1c.const_data_ptr<float>(), pb1, Cs, w2c.const_data_ptr<float>(), pb2, act, gate, pg);
    return true;
  }
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t *pw1 = w1c.const_data_ptr<scalar_t>(), *pw2 = w2c.const_data_ptr<scalar_t>();
    at::parallel_for(0, N, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, C * Cs)), [&](int64_t b, int64_t e) {
      std::vector<float> s(Cs);
      for (int64_t n = b; n < e; ++n) {
        for (int64_t j = 0; j < Cs; ++j)
          s[j] = apply_act<float>(pb1[j] + dot(pw1 + j * C, pm + n * C, C), act);
        for (int64_t c = 0; c < C; ++c)
          pg[n * C + c] = apply_act<float>(pb2[c] + dot(pw2 + c * Cs, s.data(), Cs), gate);
      }
    });
  };
  switch (w1.scalar_type()) {
    case at::kBFloat16: run(c10::BFloat16()); break;
    case at::kHalf: run(c10::Half()); break;
    default: return false;
  }
  return true;
}

// The sums of 8 consecutive planes of len floats (plane k at p + k * len), as one vector.
static inline Vectorized<float> sum8_planes(const float* p, int64_t len) {
  using V = Vectorized<float>;
  constexpr int64_t L = V::size();
  V a[8];
  for (int k = 0; k < 8; ++k) a[k] = V(0.f);
  int64_t j = 0;
  for (; j + L <= len; j += L)
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) a[k] = a[k] + V::loadu(p + k * len + j);
  if (j < len)
    for (int k = 0; k < 8; ++k) a[k] = a[k] + V::loadu(p + k * len + j, len - j);
#if FZ_AVX2
  const __m256 s01 = _mm256_hadd_ps(a[0], a[1]), s23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 s45 = _mm256_hadd_ps(a[4], a[5]), s67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);  // per 128-bit half
  return V(_mm256_permute2f128_ps(s0123, s4567, 0x20)) + V(_mm256_permute2f128_ps(s0123, s4567, 0x31));
#else
  float out[8];
  for (int k = 0; k < 8; ++k) out[k] = at::vec::vec_reduce_all<float>([](V& x, V& y) { return x + y; }, a[k]);
  return V::loadu(out);
#endif
}

bool se_means_fast(const at::Tensor& x, at::Tensor& m) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  const bool cl = sc == 1 && C > 1;
  const bool rows = sw == 1;
  if (!cl && !rows) return false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "squeeze_excite_means", [&] {
    using acc_t = acc_of<scalar_t>;
    using V = VecA<scalar_t>;
    constexpr int64_t L = V::size();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    acc_t* mp = m.data_ptr<acc_t>();
    const acc_t inv = acc_t(1) / static_cast<acc_t>(H * W);
    if (cl) {
      constexpr int64_t NB = 8, CB = NB * L;  // channels per task
      const int64_t nblk = (C + CB - 1) / CB;
      at::parallel_for(0, N * nblk, 1, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          const int64_t n = t / nblk, c0 = (t % nblk) * CB;
          const int64_t cn = std::min<int64_t>(CB, C - c0);
          const scalar_t* base = xp + n * sn + c0;
          V acc[NB];
          for (int k = 0; k < NB; ++k) acc[k] = V(acc_t(0));
          for (int64_t h = 0; h < H; ++h)
            for (int64_t w = 0; w < W; ++w) {
              const scalar_t* p = base + h * sh + w * sw;
              if (cn == CB) {
                for (int k = 0; k < NB; ++k) acc[k] = acc[k] + vload(p + k * L);
              } else {
                for (int k = 0; k * L < cn; ++k) {
                  const int64_t r = std::min<int64_t>(L, cn - k * L);
                  acc[k] = acc[k] + (r == L ? vload(p + k * L) : vload(p + k * L, r));
                }
              }
            }
          for (int k = 0; k * L < cn; ++k) {
            const int64_t r = std::min<int64_t>(L, cn - k * L);
            store_n(mp + n * C + c0 + k * L, acc[k] * V(inv), r);
          }
        }
      });
    } else {
      const bool flat = H == 1 || sh == W;
      const int64_t HW = H * W;
      // contiguous float planes: eight at a time, one accumulator each (no dependency chain of adds), the
      // eight sums reduced together
      const bool by8 = std::is_same_v<scalar_t, float> && x.is_contiguous();
      at::parallel_for(0, N * C, std::max<int64_t>(8, 16384 / std::max<int64_t>(1, HW)), [&](int64_t b, int64_t e) {
        int64_t i = b;
        if (by8)  // scalar_t is float (the casts only make the other types compile)
          for (; i + 8 <= e; i += 8)
            (sum8_planes(reinterpret_cast<const float*>(xp) + i * HW, HW) * Vectorized<float>(float(inv)))
                .store(reinterpret_cast<float*>(mp) + i);
        for (; i < e; ++i) {
          const int64_t n = i / C, c = i % C;
          const scalar_t* p = xp + n * sn + c * sc;
          V acc(acc_t(0));
          const int64_t nr = flat ? 1 : H, len = flat ? H * W : W;
          for (int64_t h = 0; h < nr; ++h) {
            const scalar_t* r = p + h * sh;
            int64_t j = 0;
            for (; j + L <= len; j += L) acc = acc + vload(r + j);
            if (j < len) acc = acc + vload(r + j, len - j);
          }
          acc_t tmp[L];
          acc.store(tmp);
          acc_t s = 0;
          for (int k = 0; k < L; ++k) s += tmp[k];
          mp[i] = s * inv;
        }
      });
    }
  });
  return true;
}

bool se_apply_fast(const at::Tensor& x, const at::Tensor& g, at::Tensor& out) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const bool out_cl = out.stride(1) == 1 && out.stride(3) == C && out.stride(2) == W * C &&
                      out.stride(0) == H * W * C;
  const bool out_nchw = out.is_contiguous();
  const bool cl = out_cl && !out_nchw && x.stride(1) == 1;
  const bool planes = out_nchw && x.stride(3) == 1;
  if (!cl && !planes) return false;
  const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "squeeze_excite_apply", [&] {
    using acc_t = acc_of<scalar_t>;
    using V = VecA<scalar_t>;
    constexpr int64_t L = V::size();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const acc_t* gp = g.const_data_ptr<acc_t>();
    if (cl) {
      const int64_t P = N * H * W, HW = H * W;
      const bool dense = x.is_contiguous(at::MemoryFormat::ChannelsLast);  // as out: pixel p at p * C
      at::parallel_for(0, P, std::max<int64_t>(1, 8192 / C), [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p) {
          const int64_t n = p / HW;  // one division per pixel, not three (they cost as much as 30 vectors)
          const scalar_t* xr = dense ? xp + p * C : xp + n * sn + (p % HW) / W * sh + p % W * sw;
          scalar_t* orow = op + p * C;
          const acc_t* gr = gp + n * C;
          int64_t c = 0;
          for (; c + L <= C; c += L) vstore(orow + c, vload(xr + c) * V::loadu(gr + c));
          if (c < C) vstore(orow + c, vload(xr + c, C - c) * V::loadu(gr + c, C - c), C - c);
        }
      });
    } else {
      const bool flat = H == 1 || sh == W;
      const bool contiguous = x.is_contiguous();
      at::parallel_for(0, N * C, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, H * W)), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const scalar_t* xb = contiguous ? xp + i * H * W : xp + (i / C) * sn + (i % C) * sc;
          const V vg(gp[i]);
          const int64_t nr = flat ? 1 : H, len = flat ? H * W : W;  // a contiguous plane is one row
          for (int64_t h = 0; h < nr; ++h) {
            const scalar_t* xr = xb + h * sh;
            scalar_t* orow = op + i * H * W + h * W;
            int64_t j = 0;
            for (; j + L <= len; j += L) vstore(orow + j, vload(xr + j) * vg);
            if (j < len) vstore(orow + j, vload(xr + j, len - j) * vg, len - j);
          }
        }
      });
    }
  });
  return true;
}

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END

TORCH_LIBRARY_IMPL(fastzoo, CPU, m) { m.impl("squeeze_excite", &fastzoo::cpu::squeeze_excite_cpu); }
