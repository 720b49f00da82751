// AVX-512F helpers of the CPU kernels, for code that runs only where cpu_has_avx512f(): functions marked
// FZ_AVX512 are compiled for AVX-512F on their own, whatever the global flags (the rest of the extension stays
// AVX2, which every CPU the wheels support runs). Include after fastzoo/cpu_vec.h, inside its AVX2 region.
#pragma once
#include <algorithm>

#include "fastzoo/cpu_vec.h"

#if FZ_AVX2
#define FZ_AVX512 __attribute__((target("avx,avx2,fma,f16c,avx512f")))

namespace fastzoo {
namespace cpu {

// lanes l of [0, 16) with lo <= l < hi (lanes(0, n): the first n, all 16 for n >= 16)
inline __mmask16 lanes(int64_t lo, int64_t hi) {
  lo = std::clamp<int64_t>(lo, 0, 16), hi = std::clamp<int64_t>(hi, 0, 16);
  return hi > lo ? static_cast<__mmask16>(((1u << hi) - 1) & ~((1u << lo) - 1)) : 0;
}

// v * sigmoid(v) = v / (1 + exp(-v)). exp(-v) with v clamped above at 87.34 (so +inf gives +inf, not NaN): -v =
// n ln2 + r, |r| <= ln2 / 2, 2^n by vscalefps, e^r by a polynomial (Horner, fitted for relative error). Below
// -88.7, 2^n overflows to inf and the result is a signed zero (the true value is under 3e-37 in magnitude), so
// there is no lower clamp; a NaN v gives NaN through the division, -inf NaN (as ATen's silu).
// - float32 (BF16_GRADE false, silu512): degree 5, ln2 in one float inside the FMA (its 1.9e-9 error times n):
//   2.5e-7 relative up to |v| = 30, 4.0e-7 down to -85 (against float64, every 97th float). 10 vector ops and a
//   divide per 16 floats: 0.19 ns per float against 0.22 with the lower clamp and ln2 in two parts (2.5e-7
//   throughout; efficientnet_b0 1.014-1.015x, in-process A/B) and 0.30 for the degree-7 Cephes form (one
//   core, a standalone loop).
// - values that end in bfloat16 (8 significant bits, a half-ulp of 2^-9; silu512_bf16): degree 3 (minimax on
//   |r| <= ln2 / 2): relative error 1.0e-4, 1.45x the speed of the float32 form (the same loop). inf and NaN as
//   the float32 form.
template <bool BF16_GRADE>
FZ_AVX512 inline __m512 silu512_grade(__m512 v) {
  const __m512 vc = _mm512_min_ps(v, _mm512_set1_ps(87.33654475f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(vc, _mm512_set1_ps(-1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmsub_ps(n, _mm512_set1_ps(0.6931471805599453f), vc);  // -vc - n ln2
  __m512 p;
  if constexpr (BF16_GRADE) {
    p = _mm512_fmadd_ps(_mm512_set1_ps(0.1651797592639923f), r, _mm512_set1_ps(0.5041304230690002f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.000195860862732f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  } else {
    p = _mm512_set1_ps(8.312525227665901e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1890114545822144e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6667114198207855e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.99992311000824e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  }
  return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.f), _mm512_scalef_ps(p, n)));
}
FZ_AVX512 inline __m512 silu512(__m512 v) { return silu512_grade<false>(v); }
FZ_AVX512 inline __m512 silu512_bf16(__m512 v) { return silu512_grade<true>(v); }

// act(v) for a compile-time A, NaN in v giving NaN as vact's: vmaxps / vminps with v as the second operand.
// Sigmoid and GELU run vact on each 8-float half.
template <Act A>
FZ_AVX512 inline __m512 vact512(__m512 v) {
  const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.f);
  if constexpr (A == Act::Identity) {
    return v;
  } else if constexpr (A == Act::ReLU) {
    return _mm512_max_ps(zero, v);
  } else if constexpr (A == Act::ReLU6) {
    return _mm512_min_ps(six, _mm512_max_ps(zero, v));
  } else if constexpr (A == Act::HardSwish || A == Act::HardSigmoid) {
    const __m512 r = _mm512_min_ps(six, _mm512_max_ps(zero, _mm512_add_ps(v, _mm512_set1_ps(3.f))));
    const __m512 sixth = _mm512_set1_ps(1.f / 6.f);
    if constexpr (A == Act::HardSwish) return _mm512_mul_ps(_mm512_mul_ps(v, r), sixth);
    else return _mm512_mul_ps(r, sixth);
  } else if constexpr (A == Act::SiLU) {
    return silu512(v);
  } else {
    const __m256 lo = vact<A>(Vectorized<float>(_mm512_castps512_ps256(v)));
    const __m256 hi = vact<A>(Vectorized<float>(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
  }
}

// vact512 for values that end in bfloat16 (bf16 kernels' epilogues): SiLU as silu512_bf16.
template <Act A>
FZ_AVX512 inline __m512 vact512_bf16(__m512 v) {
  if constexpr (A == Act::SiLU) return silu512_bf16(v);
  else return vact512<A>(v);
}

}  // namespace cpu
}  // namespace fastzoo
#endif
