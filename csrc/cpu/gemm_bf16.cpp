// bfloat16 1x1-conv GEMMs with float32 accumulation and the BN + act (+ residual) epilogue in registers, where
// the CPU has AVX512-BF16 (cpu_has_avx512bf16). vdpbf16ps takes two bf16 products per float32 lane, 32
// multiply-adds per instruction: on this Zen 4 116.7 G/s on one core against 57.1 for vfmadd231ps on float32
// (a standalone loop, not kept), so bf16 models run their GEMMs at twice the float32 rate.
//
// Weights are packed as panels of 16 output channels; row j of a panel holds, per channel o, the pair
// (w[o, 2j], w[o, 2j+1]) (an odd K's last pair padded with 0), and a[p, 2j..2j+1] is broadcast as one dword:
// lane o of vdpbf16ps then adds a[p, 2j] w[o, 2j] + a[p, 2j+1] w[o, 2j+1]. Tiles of 8 rows x one panel, one
// zmm accumulator per row, as tile512 (gemm_epilogue.cpp) does for float32. SiLU in the epilogue at bfloat16's
// precision (silu512_bf16), also where the output is float32: the expanded rows a bf16 mbconv's depthwise reads,
// whose output is rounded to bf16 (efficientnet_b0 in bf16 with the depthwise's SiLU so too: 1.04x at batch 1,
// 1.05-1.06x at batch 32, interleaved A/B).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "cpu_kernels.h"
#include "row_tiles.h"
#include "fastzoo/cpu_vec.h"
#include "vec512.h"
#include "vec512_bf16.h"

namespace fastzoo {
namespace cpu {

#if FZ_AVX2
namespace {

constexpr int kRowsBf16 = 8;

// c rows 0.. MR of the panel's channels in mask m = act(a rows @ panel * sc + sh (+ r)).
template <int MR, Act A, typename Out>
FZ_BF16 __attribute__((noinline)) void tile_bf16(const uint16_t* a, int64_t lda, const uint16_t* wp, int64_t K,
                                                 Out* c, int64_t ldc, const float* sc, const float* sh,
                                                 const uint16_t* r, int64_t ldr, __mmask16 m) {
  __m512 acc[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  const int64_t K2 = K / 2;
  for (int64_t j = 0; j < K2; ++j) {
    const __m512bh w = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + 32 * j));
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
      acc[i] = dp_bcast(acc[i], a + i * lda + 2 * j, w);
  }
  if (K & 1) {  // the last channel alone
    const __m512bh w = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + 32 * K2));
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
      acc[i] = dp_last(acc[i], a + i * lda + K - 1, w);
  }
  const __m512 vs = _mm512_maskz_loadu_ps(m, sc), vh = _mm512_maskz_loadu_ps(m, sh);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) bn_act_store16<A>(c + i * ldc, acc[i], vs, vh, r ? r + i * ldr : nullptr, m);
}

template <Act A, typename Out>
void panel_rows_bf16(const uint16_t* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, Out* c, int64_t ldc,
                     const float* sc, const float* sh, const uint16_t* r, int64_t ldr, __mmask16 m) {
  auto tile_at = [&]<int MR>(int64_t p) {
    tile_bf16<MR, A, Out>(a + p * lda, lda, wp, K, c + p * ldc, ldc, sc, sh, r ? r + p * ldr : nullptr, ldr, m);
  };
  row_tiles<kRowsBf16>(0, P, tile_at);
}

template <typename Out>
void gemm_bf16_impl(const c10::BFloat16* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout,
                    Out* c, int64_t ldc, const float* sc, const float* sh, const c10::BFloat16* r, int64_t ldr,
                    Act act) {
  const auto* a16 = reinterpret_cast<const uint16_t*>(a);
  const auto* r16 = reinterpret_cast<const uint16_t*>(r);
  if (K % 2 == 0 && P >= 16 && cpu_has_amx_bf16()) {  // whole blocks of 16 rows through AMX, the rest below
    const int64_t done = P / 16 * 16;
    gemm_amx_bf16_bn_act(a16, lda, wp, done, K, Cout, c, ldc, sc, sh, r16, ldr, act);
    a16 += done * lda, c += done * ldc, r16 = r16 ? r16 + done * ldr : nullptr, P -= done;
    if (P == 0) return;
  }
  const int64_t K2 = (K + 1) / 2;
  // blocks of rows (~16 KiB of a, at most 96 rows) through every panel, as gemm_packed_bn_act does for large a
  // (its one block for a of at most 256 KiB has not been measured here)
  const int64_t rows = std::clamp<int64_t>(8192 / std::max<int64_t>(1, K) / kRowsBf16 * kRowsBf16, kRowsBf16,
                                           12 * kRowsBf16);
  with_act(act, [&](auto A_) {
    constexpr Act A = decltype(A_)::value;
    for (int64_t p0 = 0; p0 < P; p0 += rows) {
      const int64_t mrows = std::min(rows, P - p0);
      for (int64_t o0 = 0; o0 < Cout; o0 += 16) {
        const int64_t n = std::min<int64_t>(16, Cout - o0);
        const __mmask16 m = lanes(0, n);
        panel_rows_bf16<A, Out>(a16 + p0 * lda, lda, wp + o0 * 2 * K2, mrows, K, c + p0 * ldc + o0, ldc, sc + o0,
                                sh + o0, r16 ? r16 + p0 * ldr + o0 : nullptr, ldr, m);
      }
    }
  });
}

}  // namespace

bool cpu_has_avx512bf16() {
  static const bool yes = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && cpu_has_avx512f();
  return yes;
}

void gemm_bf16_bn_act(const c10::BFloat16* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout,
                      float* c, int64_t ldc, const float* sc, const float* sh, const c10::BFloat16* r, int64_t ldr,
                      Act act) {
  gemm_bf16_impl(a, lda, wp, P, K, Cout, c, ldc, sc, sh, r, ldr, act);
}

void gemm_bf16_bn_act(const c10::BFloat16* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout,
                      c10::BFloat16* c, int64_t ldc, const float* sc, const float* sh, const c10::BFloat16* r,
                      int64_t ldr, Act act) {
  gemm_bf16_impl(a, lda, wp, P, K, Cout, reinterpret_cast<uint16_t*>(c), ldc, sc, sh, r, ldr, act);
}

template <typename In>
FZ_BF16 inline void rows_to_bf16_impl(const In* x, int64_t P, int64_t C, int64_t ldx, const float* gate,
                                      c10::BFloat16* y, int64_t ldy) {
  for (int64_t p = 0; p < P; ++p) {
    const In* xp = x + p * ldx;
    auto* yp = reinterpret_cast<uint16_t*>(y + p * ldy);
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
      const __mmask16 m = lanes(0, C - c0);
      __m512 v;
      if constexpr (std::is_same_v<In, float>) v = _mm512_maskz_loadu_ps(m, xp + c0);
      else v = bf16_to_f32(_mm256_maskz_loadu_epi16(m, xp + c0));
      if (gate) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, gate + c0));
      store16(yp + c0, v, m);
    }
  }
}

FZ_BF16 void rows_to_bf16(const float* x, int64_t P, int64_t C, int64_t ldx, const float* gate, c10::BFloat16* y,
                          int64_t ldy) {
  rows_to_bf16_impl(x, P, C, ldx, gate, y, ldy);
}

FZ_BF16 void rows_to_bf16(const c10::BFloat16* x, int64_t P, int64_t C, int64_t ldx, const float* gate,
                          c10::BFloat16* y, int64_t ldy) {
  rows_to_bf16_impl(reinterpret_cast<const uint16_t*>(x), P, C, ldx, gate, y, ldy);
}

FZ_BF16 void act_bf16_inplace(c10::BFloat16* x, int64_t n, Act act) {
  auto* p = reinterpret_cast<uint16_t*>(x);
  with_act(act, [&](auto A_) {
    constexpr Act A = decltype(A_)::value;
    at::parallel_for(0, (n + 15) / 16, 2048, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const __mmask16 m = lanes(0, n - 16 * i);
        store16(p + 16 * i, vact512_bf16<A>(bf16_to_f32(_mm256_maskz_loadu_epi16(m, p + 16 * i))), m);
      }
    });
  });
}

FZ_BF16 void gate_panels_bf16(const uint16_t* wp, int64_t K, int64_t Cout, const float* gate, uint16_t* dst) {
  const int64_t K2 = (K + 1) / 2, panels = (Cout + 15) / 16;
  for (int64_t j = 0; j < K2; ++j) {
    uint32_t g[2] = {0, 0};  // gate[2j], gate[2j + 1] (0 past an odd K's end): lanes 2i and 2i + 1
    std::memcpy(g, gate + 2 * j, sizeof(float) * (2 * j + 1 < K ? 2 : 1));
    const __m512 gv = _mm512_castsi512_ps(_mm512_set1_epi64(static_cast<int64_t>((uint64_t{g[1]} << 32) | g[0])));
    for (int64_t p = 0; p < panels; ++p) {
      const __m512i v = _mm512_loadu_si512(wp + (p * K2 + j) * 32);
      const __m512 lo = _mm512_mul_ps(bf16_to_f32(_mm512_castsi512_si256(v)), gv);
      const __m512 hi = _mm512_mul_ps(bf16_to_f32(_mm512_extracti64x4_epi64(v, 1)), gv);
      _mm512_storeu_si512(dst + (p * K2 + j) * 32, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
    }
  }
}

FZ_BF16 void rows_to_f32(const c10::BFloat16* x, int64_t P, int64_t C, int64_t ldx, float* y, int64_t ldy) {
  for (int64_t p = 0; p < P; ++p) {
    const auto* xp = reinterpret_cast<const uint16_t*>(x + p * ldx);
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
      const __mmask16 m = lanes(0, C - c0);
      _mm512_mask_storeu_ps(y + p * ldy + c0, m, bf16_to_f32(_mm256_maskz_loadu_epi16(m, xp + c0)));
    }
  }
}
#else
bool cpu_has_avx512bf16() { return false; }
void gemm_bf16_bn_act(const c10::BFloat16*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, float*, int64_t,
                      const float*, const float*, const c10::BFloat16*, int64_t, Act) {
  TORCH_CHECK(false, "gemm_bf16_bn_act: built without AVX2");
}
void gemm_bf16_bn_act(const c10::BFloat16*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, c10::BFloat16*,
                      int64_t, const float*, const float*, const c10::BFloat16*, int64_t, Act) {
  TORCH_CHECK(false, "gemm_bf16_bn_act: built without AVX2");
}
void rows_to_bf16(const float*, int64_t, int64_t, int64_t, const float*, c10::BFloat16*, int64_t) {
  TORCH_CHECK(false, "rows_to_bf16: built without AVX2");
}
void rows_to_bf16(const c10::BFloat16*, int64_t, int64_t, int64_t, const float*, c10::BFloat16*, int64_t) {
  TORCH_CHECK(false, "rows_to_bf16: built without AVX2");
}
void rows_to_f32(const c10::BFloat16*, int64_t, int64_t, int64_t, float*, int64_t) {
  TORCH_CHECK(false, "rows_to_f32: built without AVX2");
}
void act_bf16_inplace(c10::BFloat16*, int64_t, Act) { TORCH_CHECK(false, "act_bf16_inplace: built without AVX2"); }
void gate_panels_bf16(const uint16_t*, int64_t, int64_t, const float*, uint16_t*) {
  TORCH_CHECK(false, "gate_panels_bf16: built without AVX2");
}
#endif

int64_t packed_panels_bf16_size(int64_t K, int64_t Cout) { return (Cout + 15) / 16 * 16 * ((K + 1) / 2 * 2); }

void pack_panels_bf16(const at::Tensor& w2d, uint16_t* wp) {
  const at::Tensor w = w2d.to(at::kBFloat16).contiguous();
  const int64_t Cout = w.size(0), K = w.size(1), K2 = (K + 1) / 2;
  const auto* src = reinterpret_cast<const uint16_t*>(w.const_data_ptr<c10::BFloat16>());
  std::fill_n(wp, packed_panels_bf16_size(K, Cout), uint16_t{0});
  for (int64_t o = 0; o < Cout; ++o) {
    uint16_t* panel = wp + (o / 16) * 32 * K2 + 2 * (o % 16);
    for (int64_t k = 0; k < K; ++k) panel[32 * (k / 2) + (k & 1)] = src[o * K + k];
  }
}

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END
