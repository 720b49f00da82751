// Vector helpers of the CPU fast paths (at::vec::Vectorized over the accumulate type).
//
// Include this header LAST in a .cpp, after every ATen/torch header, and put FZ_VEC_END after the
// vectorized code: on x86-64 the code in between is compiled for AVX2+FMA+F16C (at::vec's AVX2
// implementation, namespace at::vec::AVX2) whatever the global compiler flags are. Call it only when
// fastzoo::cpu_has_avx2() is true (the entry points check; otherwise the generic path runs), and keep
// static initializers (TORCH_LIBRARY_IMPL) after FZ_VEC_END.
#pragma once
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#include "fastzoo/activation.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FASTZOO_NO_AVX2)
#define FZ_AVX2 1
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif
#pragma GCC push_options
#pragma GCC target("avx,avx2,fma,f16c")
// g++ does not define the feature macros for a target pragma; at::vec and sleef.h test them.
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define FZ_VEC_END _Pragma("GCC pop_options")
#else
#define FZ_AVX2 0
#define FZ_VEC_END
#endif

#include <ATen/cpu/vec/vec.h>

#if FZ_AVX2
// If this fails, an earlier header pulled in ATen/cpu/vec without AVX2: include cpu_vec.h earlier.
static_assert(std::is_same_v<at::vec::Vectorized<float>, at::vec::AVX2::Vectorized<float>>,
              "fastzoo/cpu_vec.h: at::vec was included before the AVX2 region");
#endif

namespace fastzoo {
namespace cpu {

using at::vec::Vectorized;

template <typename T>
using acc_of = at::opmath_type<T>;
template <typename T>
using VecA = Vectorized<acc_of<T>>;  // the accumulate vector for storage type T

// Load VecA<T>::size() elements of T (converted to the accumulate type).
template <typename T>
inline VecA<T> vload(const T* p) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    return VecA<T>::loadu(p);
#if FZ_AVX2
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    __m256 o;
    at::vec::cvtbf16_fp32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), o);
    return o;
  } else if constexpr (std::is_same_v<T, c10::Half>) {
    __m256 o;
    at::vec::cvtfp16_fp32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), o);
    return o;
#endif
  } else {
    constexpr int L = VecA<T>::size();
    acc_of<T> tmp[L];
    for (int i = 0; i < L; ++i) tmp[i] = static_cast<acc_of<T>>(p[i]);
    return VecA<T>::loadu(tmp);
  }
}

#if FZ_AVX2
// Lanes [0, n) of p[0:8], zeros past them (n clamped to [0, 8]); reads nothing past p[n - 1]. A masked load
// (unlike the masked store, not microcoded on AMD) instead of Vectorized::loadu(p, n)'s copy through memory.
inline __m256 load_n(const float* p, int64_t n) {
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(n, 0, 8))),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_maskload_ps(p, mask);
}

// The 8x8 block m[r][0..8) transposed in registers: m[k] becomes {m[0][k], ..., m[7][k]}.
inline void transpose8(__m256 (&m)[8]) {
  const __m256 a0 = _mm256_unpacklo_ps(m[0], m[1]), a1 = _mm256_unpackhi_ps(m[0], m[1]);
  const __m256 a2 = _mm256_unpacklo_ps(m[2], m[3]), a3 = _mm256_unpackhi_ps(m[2], m[3]);
  const __m256 a4 = _mm256_unpacklo_ps(m[4], m[5]), a5 = _mm256_unpackhi_ps(m[4], m[5]);
  const __m256 a6 = _mm256_unpacklo_ps(m[6], m[7]), a7 = _mm256_unpackhi_ps(m[6], m[7]);
  const __m256 b0 = _mm256_shuffle_ps(a0, a2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 b1 = _mm256_shuffle_ps(a0, a2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 b2 = _mm256_shuffle_ps(a1, a3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 b3 = _mm256_shuffle_ps(a1, a3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 b4 = _mm256_shuffle_ps(a4, a6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 b5 = _mm256_shuffle_ps(a4, a6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 b6 = _mm256_shuffle_ps(a5, a7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 b7 = _mm256_shuffle_ps(a5, a7, _MM_SHUFFLE(3, 2, 3, 2));
  m[0] = _mm256_permute2f128_ps(b0, b4, 0x20);
  m[1] = _mm256_permute2f128_ps(b1, b5, 0x20);
  m[2] = _mm256_permute2f128_ps(b2, b6, 0x20);
  m[3] = _mm256_permute2f128_ps(b3, b7, 0x20);
  m[4] = _mm256_permute2f128_ps(b0, b4, 0x31);
  m[5] = _mm256_permute2f128_ps(b1, b5, 0x31);
  m[6] = _mm256_permute2f128_ps(b2, b6, 0x31);
  m[7] = _mm256_permute2f128_ps(b3, b7, 0x31);
}
#endif

// Load n < size() elements, zero the rest.
template <typename T>
inline VecA<T> vload(const T* p, int64_t n) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
#if FZ_AVX2
    if constexpr (std::is_same_v<T, float>) return load_n(p, n);
#endif
    return VecA<T>::loadu(p, n);
  } else {
    constexpr int L = VecA<T>::size();
    T tmp[L];
    for (int i = 0; i < L; ++i) tmp[i] = i < n ? p[i] : T(0);
    return vload(tmp);
  }
}

// Store the first n <= size() lanes of v. Not Vectorized::store(p, n): on AVX2 that is vmaskmovps, which AMD
// Zen runs microcoded (it was 60% of squeeze_excite on 7x7 NCHW planes); here at most three plain stores.
template <typename A>
inline void store_n(A* p, Vectorized<A> v, int64_t n) {
#if FZ_AVX2
  if constexpr (std::is_same_v<A, float>) {
    if (n >= 8) return v.store(p);
    __m128 part = _mm256_castps256_ps128(v);
    if (n >= 4) {
      _mm_storeu_ps(p, part);
      part = _mm256_extractf128_ps(v, 1);
      p += 4;
      n -= 4;
    }
    if (n >= 2) {
      _mm_storel_pi(reinterpret_cast<__m64*>(p), part);
      part = _mm_movehl_ps(part, part);
      p += 2;
      n -= 2;
    }
    if (n >= 1) _mm_store_ss(p, part);
    return;
  }
#endif
  A tmp[Vectorized<A>::size()];
  v.store(tmp);
  for (int64_t i = 0; i < n; ++i) p[i] = tmp[i];
}

template <typename T>
inline void vstore(T* p, VecA<T> v) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    v.store(p);
#if FZ_AVX2
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), at::vec::cvtfp32_bf16(__m256(v)));
  } else if constexpr (std::is_same_v<T, c10::Half>) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), at::vec::cvtfp32_fp16(__m256(v)));
#endif
  } else {
    constexpr int L = VecA<T>::size();
    acc_of<T> tmp[L];
    v.store(tmp);
    for (int i = 0; i < L; ++i) p[i] = static_cast<T>(tmp[i]);
  }
}

template <typename T>
inline void vstore(T* p, VecA<T> v, int64_t n) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    store_n(p, v, n);
  } else {
    constexpr int L = VecA<T>::size();
    T tmp[L];
    vstore(tmp, v);
    for (int64_t i = 0; i < n; ++i) p[i] = tmp[i];
  }
}

// The value a store to T and a load back would give (rounding of the 16-bit types).
template <typename T>
inline VecA<T> vround(VecA<T> v) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    return v;
  } else {
    constexpr int L = VecA<T>::size();
    T tmp[L];
    vstore(tmp, v);
    return vload(tmp);
  }
}

// max(v, lo) and min(v, hi), NaN in v giving NaN (as torch's clamps). For float, vmaxps / vminps with v as
// the second operand (they return it when either is NaN): at::vec's maximum / minimum add a compare and a
// blend per call, a third of a k3 depthwise conv's epilogue.
template <typename V>
inline V vmax_nan(V v, typename V::value_type lo) {
#if FZ_AVX2
  if constexpr (std::is_same_v<V, Vectorized<float>>) return _mm256_max_ps(_mm256_set1_ps(lo), v);
#endif
  return at::vec::maximum(v, V(lo));
}
template <typename V>
inline V vmin_nan(V v, typename V::value_type hi) {
#if FZ_AVX2
  if constexpr (std::is_same_v<V, Vectorized<float>>) return _mm256_min_ps(_mm256_set1_ps(hi), v);
#endif
  return at::vec::minimum(v, V(hi));
}

// r where v is a number, NaN where v is NaN (exp_u20 turns NaN into a number).
template <typename V>
inline V keep_nan(V v, V r) {
#if FZ_AVX2
  if constexpr (std::is_same_v<V, Vectorized<float>>)
    return _mm256_or_ps(r, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));  // all-ones lanes are NaN
#endif
  return V::blendv(r, v, v.isnan());
}

// Vectorized activation, A a compile-time constant (no switch in the inner loop).
template <Act A, typename V>
inline V vact(V v) {
  using S = typename V::value_type;
  if constexpr (A == Act::Identity) {
    return v;
  } else if constexpr (A == Act::ReLU) {
    return vmax_nan(v, S(0));
  } else if constexpr (A == Act::ReLU6) {
    return vmin_nan(vmax_nan(v, S(0)), S(6));
  } else if constexpr (A == Act::HardSwish) {
    // * (1/6), not / 6: vdivps was a fifth of a stem's time; the two differ by at most an ulp
    const V r = vmin_nan(vmax_nan(v + V(S(3)), S(0)), S(6));
    return v * r * V(S(1) / S(6));
  } else if constexpr (A == Act::HardSigmoid) {
    const V r = vmin_nan(vmax_nan(v + V(S(3)), S(0)), S(6));
    return r * V(S(1) / S(6));
  } else if constexpr (A == Act::SiLU) {
    // exp_u20: ATen's inline polynomial exp (<= 20 ulp); Sleef's exp, out of line, was 8% of efficientnet's
    // time at batch 1
    return keep_nan(v, v / (V(S(1)) + v.neg().exp_u20()));
  } else if constexpr (A == Act::Sigmoid) {
    return keep_nan(v, V(S(1)) / (V(S(1)) + v.neg().exp_u20()));
  } else {  // GELU, exact erf
    return V(S(0.5)) * v * (V(S(1)) + (v * V(S(0.70710678118654752440))).erf());
  }
}

// Calls f(std::integral_constant<Act, a>{}) : the activation becomes a template constant.
template <typename F>
inline decltype(auto) with_act(Act a, F&& f) {
  switch (a) {
    case Act::ReLU: return f(std::integral_constant<Act, Act::ReLU>{});
    case Act::ReLU6: return f(std::integral_constant<Act, Act::ReLU6>{});
    case Act::HardSwish: return f(std::integral_constant<Act, Act::HardSwish>{});
    case Act::HardSigmoid: return f(std::integral_constant<Act, Act::HardSigmoid>{});
    case Act::SiLU: return f(std::integral_constant<Act, Act::SiLU>{});
    case Act::Sigmoid: return f(std::integral_constant<Act, Act::Sigmoid>{});
    case Act::GELU: return f(std::integral_constant<Act, Act::GELU>{});
    case Act::Identity:
    default: return f(std::integral_constant<Act, Act::Identity>{});
  }
}

}  // namespace cpu
}  // namespace fastzoo
