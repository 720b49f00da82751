// The stems' direct conv (conv_few_channels.cpp) in AVX-512: float32 by vfmadd231ps, bfloat16 by vdpbf16ps on
// pairs of patch values (float32 accumulation), where the CPU has them.
//
// A tile of up to PX output pixels x NV zmm vectors of output channels stays in registers; per patch value
// (float32) or pair of values (bf16) the NV weight vectors are loaded once and each pixel's value is broadcast
// into its FMAs. A pixel's patch is K runs of K*Cin values, contiguous in a channels_last x: interior pixels read
// them in place, border pixels (and any other layout) from gathered patches with zeros in the padding. A run's
// odd last value goes alone (dp_last): a pair never reads past the run, so no value outside the patch meets a
// zero weight (an inf there would give NaN).
//
// mobilenet_v3's 3 -> 16 k3 s2 stem at batch 32, two threads, in-process A/B (ad hoc): float32 0.73x the AVX2
// kernel's time (its 8-float accumulators: ~75 cycles per pixel for 432 multiply-adds), bf16 0.87x oneDNN's
// conv + the activation pass it needed; whole models 0.97-0.99x (float32 batch 32, bf16 batch 32 except
// mobilenet_v3_large at par). With the inputs in cache the bf16 kernel runs its vdpbf16ps at one per cycle and
// spends about as long again on the rest (epilogue, stores, borders); at batch 32 writing the output adds ~20%.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <vector>

#include "cpu_kernels.h"
#include "row_tiles.h"
#include "fastzoo/cpu_vec.h"
#include "vec512.h"
#include "vec512_bf16.h"

namespace fastzoo {
namespace cpu {

#if FZ_AVX2
namespace {

constexpr int64_t kMaxVecs = 4;    // output vectors per pass: 64 channels
constexpr int64_t kMaxPatch = 80;  // the largest K * K * Cin taken (5x5x3 = 75), as the AVX2 kernel

// pixels per tile for NV output vectors: PX * NV accumulators, NV weights and a broadcast in 32 zmm registers
template <int NV>
constexpr int kPixels = NV == 1 ? 8 : NV == 2 ? 6 : 4;

// The packed weights: per run r (kh) and step s (a value, or a pair of values in bf16), Vtot vectors of 16
// output channels, BN scale folded in (rounded to bf16 once, as the oneDNN path rounds its folded weights).
// float32: w[((r * RL + e) * Vtot + v) * 16 + l]; bf16: the pair (w[.., 2s], w[.., 2s + 1]) at
// ((r * S + s) * Vtot + v) * 32 + 2 l, S = ceil(RL / 2), 0 past the run.
//
// Elem<T>::tile: PX output pixels (patch runs at a[p] + r * ldr, RL values each) x NV vectors of channels into
// y + p * ldy, nc of them valid, = act(patch . w + sh), a function of its own compiled for T's instructions.
template <typename T>
struct Elem;

// each pixel's accumulators start at the BN shift
template <int NV, int PX>
FZ_AVX512 __attribute__((always_inline)) inline void start(__m512 (&acc)[PX][NV], const float* sh, int64_t nc) {
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const __m512 h = _mm512_maskz_loadu_ps(lanes(0, nc - 16 * v), sh + 16 * v);
#pragma GCC unroll 8
    for (int p = 0; p < PX; ++p) acc[p][v] = h;
  }
}

template <>
struct Elem<float> {
  static constexpr int64_t kPack = 1;
  template <int NV, int PX, Act A, int Kc, int RLc>
  FZ_AVX512 __attribute__((noinline)) static void tile(const float* const* a, int64_t K_, int64_t RL_, int64_t ldr,
                                                       const float* wp, int64_t ws, const float* sh, float* y,
                                                       int64_t ldy, int64_t nc) {
    __m512 acc[PX][NV];
    start(acc, sh, nc);
    const int64_t K = Kc ? Kc : K_, RL = RLc ? RLc : RL_;
#pragma GCC unroll 8
    for (int64_t r = 0; r < K; ++r)
#pragma GCC unroll 32
      for (int64_t e = 0; e < RL; ++e, wp += ws) {
        __m512 w[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) w[v] = _mm512_loadu_ps(wp + 16 * v);
#pragma GCC unroll 8
        for (int p = 0; p < PX; ++p) {
          const __m512 b = _mm512_set1_ps(a[p][r * ldr + e]);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_fmadd_ps(b, w[v], acc[p][v]);
        }
      }
#pragma GCC unroll 8
    for (int p = 0; p < PX; ++p)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        _mm512_mask_storeu_ps(y + p * ldy + 16 * v, lanes(0, nc - 16 * v), vact512<A>(acc[p][v]));
  }
};

template <>
struct Elem<uint16_t> {
  static constexpr int64_t kPack = 2;
  template <int NV, int PX, Act A, int Kc, int RLc>
  FZ_BF16 __attribute__((noinline)) static void tile(const uint16_t* const* a, int64_t K_, int64_t RL_, int64_t ldr,
                                                     const uint16_t* wp, int64_t ws, const float* sh, uint16_t* y,
                                                     int64_t ldy, int64_t nc) {
    __m512 acc[PX][NV];
    start(acc, sh, nc);
    const int64_t K = Kc ? Kc : K_, RL = RLc ? RLc : RL_;
#pragma GCC unroll 8
    for (int64_t r = 0; r < K; ++r) {
#pragma GCC unroll 16
      for (int64_t s = 0; s < RL / 2; ++s, wp += ws) {
        __m512bh w[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) w[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + 32 * v));
#pragma GCC unroll 8
        for (int p = 0; p < PX; ++p) {
          const uint16_t* q = a[p] + r * ldr + 2 * s;
          if constexpr (NV == 1) {
            acc[p][0] = dp_bcast(acc[p][0], q, w[0]);
          } else {  // one broadcast for NV instructions
            int32_t pair;
            std::memcpy(&pair, q, sizeof pair);
            const __m512bh b = reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair));
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_dpbf16_ps(acc[p][v], b, w[v]);
          }
        }
      }
      if (RL & 1) {
        __m512bh w[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) w[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + 32 * v));
#pragma GCC unroll 8
        for (int p = 0; p < PX; ++p)
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[p][v] = dp_last(acc[p][v], a[p] + r * ldr + RL - 1, w[v]);
        wp += ws;
      }
    }
#pragma GCC unroll 8
    for (int p = 0; p < PX; ++p)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) store16(y + p * ldy + 16 * v, vact512_bf16<A>(acc[p][v]), lanes(0, nc - 16 * v));
  }
};

struct Geometry {
  Strides4 xs;
  int64_t Cin, H, W, C, OW, K, stride, pad;
  int64_t ws;  // elements between the packed weights' steps: Vtot vectors
};

// One output row oh of image x for the NV vectors of channels from c0 into y (the row).
template <typename T, int NV, Act A, int Kc, int RLc>
void row(const T* x, const Geometry& g, const T* wp, const float* sh, T* y, int64_t c0, int64_t oh, T* patch) {
  constexpr int PX = kPixels<NV>;
  const int64_t K = g.K, RL = K * g.Cin, ih0 = oh * g.stride - g.pad, nc = g.C - c0;
  auto tile = [&]<int P>(const T* const* a, int64_t ldr, int64_t ow) {
    Elem<T>::template tile<NV, P, A, Kc, RLc>(a, K, RL, ldr, wp + c0 * Elem<T>::kPack, g.ws, sh + c0,
                                              y + ow * g.C + c0, g.C, nc);
  };
  // x's (kw, ci) runs are contiguous (channels_last): interior pixels read them in place
  const bool rows_in = ih0 >= 0 && ih0 + K <= g.H && g.xs.c == 1 && g.xs.w == g.Cin;
  const int64_t OW = g.OW, ow_lo = rows_in ? std::min(OW, (g.pad + g.stride - 1) / g.stride) : OW;
  const int64_t ow_hi = rows_in ? std::max(ow_lo, std::min(OW, (g.W - K + g.pad) / g.stride + 1)) : OW;
  auto in_place = [&]<int P>(int64_t ow) {
    const T* a[P];
    for (int p = 0; p < P; ++p) a[p] = x + ih0 * g.xs.h + ((ow + p) * g.stride - g.pad) * g.Cin;
    tile.template operator()<P>(a, g.xs.h, ow);
  };
  auto gathered = [&]<int P>(int64_t ow) {  // each patch gathered as K runs of RL, zeros in the padding
    const T* a[P];
    for (int p = 0; p < P; ++p) {
      T* q = patch + p * K * RL;
      a[p] = q;
      for (int64_t kh = 0; kh < K; ++kh) {
        const int64_t ih = ih0 + kh;
        for (int64_t kw = 0; kw < K; ++kw) {
          const int64_t iw = (ow + p) * g.stride - g.pad + kw;
          const bool in = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
          const T* xi = x + ih * g.xs.h + iw * g.xs.w;
          for (int64_t ci = 0; ci < g.Cin; ++ci) *q++ = in ? xi[ci * g.xs.c] : T(0);
        }
      }
    }
    tile.template operator()<P>(a, RL, ow);
  };
  row_tiles<PX>(0, ow_lo, gathered);
  row_tiles<PX>(ow_lo, ow_hi, in_place);
  row_tiles<PX>(ow_hi, OW, gathered);
}

template <typename T, Act A, int Kc, int RLc>
void row_any(int nv, const T* x, const Geometry& g, const T* wp, const float* sh, T* y, int64_t c0, int64_t oh,
             T* patch) {
  switch (nv) {
    case 1: return row<T, 1, A, Kc, RLc>(x, g, wp, sh, y, c0, oh, patch);
    case 2: return row<T, 2, A, Kc, RLc>(x, g, wp, sh, y, c0, oh, patch);
    case 3: return row<T, 3, A, Kc, RLc>(x, g, wp, sh, y, c0, oh, patch);
    default: return row<T, 4, A, Kc, RLc>(x, g, wp, sh, y, c0, oh, patch);
  }
}

// w[c, ci, kh, kw] * scale[c] packed as Elem<T> reads it (float32 weights, T's element type)
template <typename T>
std::vector<T> pack(const at::Tensor& weight, const float* sc, int64_t Vtot) {
  const at::Tensor wc = weight.to(at::kFloat).contiguous();
  const float* w = wc.const_data_ptr<float>();
  const int64_t C = weight.size(0), Cin = weight.size(1), K = weight.size(3), RL = K * Cin;
  constexpr int64_t kP = Elem<T>::kPack;
  const int64_t S = (RL + kP - 1) / kP;
  std::vector<T> out(K * S * Vtot * 16 * kP, T(0));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t kh = 0; kh < K; ++kh)
      for (int64_t e = 0; e < RL; ++e) {  // e = kw * Cin + ci
        const float v = w[((c * Cin + e % Cin) * K + kh) * K + e / Cin] * sc[c];
        const int64_t at = ((kh * S + e / kP) * Vtot * 16 + c) * kP + e % kP;
        if constexpr (std::is_same_v<T, float>)
          out[at] = v;
        else
          out[at] = c10::BFloat16(v).x;
      }
  return out;
}

template <typename T>
void run(const at::Tensor& x, const at::Tensor& weight, const float* sc, const float* sh, int64_t stride, Act act,
         at::Tensor& out) {
  const int64_t N = x.size(0), C = weight.size(0), K = weight.size(3), OH = out.size(2);
  const int64_t Vtot = (C + 15) / 16;
  const std::vector<T> wp = pack<T>(weight, sc, Vtot);
  const Geometry g{{x.stride(0), x.stride(1), x.stride(2), x.stride(3)}, x.size(1), x.size(2), x.size(3), C,
                   out.size(3), K, stride, K / 2, Vtot * 16 * Elem<T>::kPack};
  const T* xp = static_cast<const T*>(x.const_data_ptr());
  T* yp = static_cast<T*>(out.data_ptr());
  // the 3x3 RGB stems with their loops unrolled at compile time
  const bool k3rgb = K == 3 && g.Cin == 3;
  with_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    at::parallel_for(0, N * OH, 1, [&](int64_t b, int64_t e) {
      T patch[kMaxPatch * kPixels<1>];
      for (int64_t r = b; r < e; ++r)
        for (int64_t v0 = 0; v0 < Vtot; v0 += kMaxVecs) {
          const int nv = static_cast<int>(std::min(kMaxVecs, Vtot - v0));
          const T* xn = xp + r / OH * g.xs.n;
          T* y = yp + r * g.OW * C;
          if (k3rgb)
            row_any<T, A, 3, 9>(nv, xn, g, wp.data(), sh, y, v0 * 16, r % OH, patch);
          else
            row_any<T, A, 0, 0>(nv, xn, g, wp.data(), sh, y, v0 * 16, r % OH, patch);
        }
    });
  });
}

}  // namespace

bool conv_few_channels512(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                          const at::Tensor& shift, int64_t stride, Act act, at::Tensor& out) {
  const int64_t C = weight.size(0), OH = out.size(2), OW = out.size(3);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  if (!(bf16 ? cpu_has_avx512bf16() : x.scalar_type() == at::kFloat && cpu_has_avx512f()) ||
      weight.scalar_type() != x.scalar_type() || out.scalar_type() != x.scalar_type() ||
      scale.scalar_type() != at::kFloat || shift.scalar_type() != at::kFloat ||
      weight.size(1) * weight.size(2) * weight.size(3) > kMaxPatch || out.stride(1) != 1 || out.stride(3) != C ||
      out.stride(2) != OW * C || out.stride(0) != OH * OW * C)
    return false;
  const at::Tensor sc = scale.contiguous(), sh = shift.contiguous();
  if (bf16)
    run<uint16_t>(x, weight, sc.const_data_ptr<float>(), sh.const_data_ptr<float>(), stride, act, out);
  else
    run<float>(x, weight, sc.const_data_ptr<float>(), sh.const_data_ptr<float>(), stride, act, out);
  return true;
}

#else
bool conv_few_channels512(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, Act,
                          at::Tensor&) {
  return false;
}
#endif

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END
