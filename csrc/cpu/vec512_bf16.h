// AVX512-BF16 helpers of the bf16 kernels, for code that runs only where cpu_has_avx512bf16(): functions marked
// FZ_BF16 are compiled for it on their own, as FZ_AVX512 (vec512.h). Include after vec512.h.
#pragma once
#include <type_traits>

#include "vec512.h"

#if FZ_AVX2
#define FZ_BF16 __attribute__((target("avx,avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")))

namespace fastzoo {
namespace cpu {

FZ_BF16 inline __m512 bf16_to_f32(__m256i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

// acc += the pair a[0..1] (broadcast from memory inside the instruction) . w: GCC otherwise broadcasts into a
// register first, one more instruction per row and pair (bf16 efficientnet_b0 and mobilenet_v2 at batch 32 1.05x
// slower that way, in-process A/B)
FZ_BF16 __attribute__((always_inline)) inline __m512 dp_bcast(__m512 acc, const uint16_t* a, __m512bh w) {
  asm("vdpbf16ps %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const uint32_t*>(a)));
  return acc;
}

// acc += (a[0], 0) . w: a lone last element, its pair's upper half 0 (never read past a row)
FZ_BF16 __attribute__((always_inline)) inline __m512 dp_last(__m512 acc, const uint16_t* a, __m512bh w) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(_mm512_set1_epi32(*a)), w);
}

// c[0..16) in mask m = v, as float32 (Out float) or rounded to bf16 (a 16-bit Out)
template <typename Out>
FZ_BF16 inline void store16(Out* c, __m512 v, __mmask16 m) {
  if constexpr (std::is_same_v<Out, float>)
    _mm512_mask_storeu_ps(c, m, v);
  else
    _mm256_mask_storeu_epi16(c, m, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
}

// The bf16 GEMMs' epilogue (gemm_bf16.cpp, gemm_amx_bf16.cpp): c[0..16) in mask m = act(acc * vs + vh (+ the bf16
// residual at r, when r is not null))
template <Act A, typename Out>
FZ_BF16 __attribute__((always_inline)) inline void bn_act_store16(Out* c, __m512 acc, __m512 vs, __m512 vh,
                                                                  const uint16_t* r, __mmask16 m) {
  __m512 v = _mm512_fmadd_ps(acc, vs, vh);
  if (r) v = _mm512_add_ps(v, bf16_to_f32(_mm256_maskz_loadu_epi16(m, r)));
  store16(c, vact512_bf16<A>(v), m);
}

}  // namespace cpu
}  // namespace fastzoo
#endif
