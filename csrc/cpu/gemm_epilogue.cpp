// float32 1x1-conv GEMMs with the BN + activation (+ residual) epilogue applied in registers (AVX2; the tiles'
// FMAs and SiLU's epilogue in AVX-512 where the CPU has it, as is silu_rows_avx512, the depthwise kernel's SiLU).
//
// c[p, o] = act(sum_k a[p, k] * w[o, k] * sc[o] + sh[o] (+ r[p, o])). The weights are packed per call (or once,
// by a BlockChain: prepacked_panels) into panels of 16 output channels, k-major (pack_panels, with the SE gate
// folded in when given, or gate_panel over packed ones): all of them first for many rows (gemm_packed_bn_act),
// or one panel at a time into a cached buffer for few rows (gemm_bn_act). A 6-row x 16-channel register tile
// broadcasts a[p, k] and takes two FMAs per panel load (with AVX-512, tile512: 8 rows x one zmm). Against
// MKL's sgemm followed by a separate BN + act pass over its output (gemm_rows + an epilogue), one thread,
// shapes of mobilenet_v2's blocks: 224x24x144 32 -> 28 us, 224x144x24 23 -> 16 us, 196x96x576 349 -> 270 us,
// 49x576x96 81 -> 69 us (a standalone C++ microbenchmark, not kept, best of 7; MKL's packing of a and its beta
// pass go, and the output is written once).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu_kernels.h"
#include "row_tiles.h"
#include "fastzoo/cpu_vec.h"
#include "vec512.h"

namespace fastzoo {
namespace cpu {
namespace {

#if FZ_AVX2
using V = Vectorized<float>;
constexpr int64_t kPanel = 16;  // output channels per panel: two AVX2 vectors
constexpr int kRows = 6;        // rows per register tile: 12 accumulators, 2 panel vectors, 1 broadcast

// One MR x (8 * NB) tile: c rows p.. p+MR, the panel's first 8 * NB channels, the last vector `last` wide.
// The activation is a template constant: a lambda capturing the accumulators (with_act here) put them on
// the stack, a store and a reload around every FMA; so did inlining the tile into its caller (ReLU6's).
// The tile's FMAs: acc = a rows p.. p+MR times the panel's first 8 * NB channels. Raw __m256 and every loop
// over i and b fully unrolled: with Vectorized<float> arrays, or loops left rolled, GCC kept the
// accumulators on the stack.
// The epilogue's lines of the tile's MR rows, fetched while the FMAs run: without it a 32x64x56x56 -> 256 conv
// with a residual stalled on the residual's loads from memory (43 vs 27 ms, MKL and a separate pass 29).
template <int MR>
__attribute__((always_inline)) inline void prefetch_epilogue(const float* c, int64_t ldc, const float* r,
                                                             int64_t ldr) {
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    if (r) _mm_prefetch(reinterpret_cast<const char*>(r + i * ldr), _MM_HINT_T0);
  }
}

template <int MR, int NB>
__attribute__((always_inline)) inline void tile_fmas(__m256 (&acc)[MR][NB], const float* a, int64_t lda,
                                                     const float* wp, int64_t K, float* c, int64_t ldc,
                                                     const float* r, int64_t ldr) {
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int b = 0; b < NB; ++b) acc[i][b] = _mm256_setzero_ps();
  prefetch_epilogue<MR>(c, ldc, r, ldr);
  for (int64_t k = 0; k < K; ++k) {
    __m256 w[NB];
#pragma GCC unroll 2
    for (int b = 0; b < NB; ++b) w[b] = _mm256_loadu_ps(wp + k * kPanel + b * 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i * lda + k);
#pragma GCC unroll 2
      for (int b = 0; b < NB; ++b) acc[i][b] = _mm256_fmadd_ps(av, w[b], acc[i][b]);
    }
  }
}

// c = act(acc * sc + sh (+ r)) for the tile's MR rows and 8 * NB channels, the last vector `last` wide.
template <int MR, int NB, Act A>
__attribute__((always_inline)) inline void tile_epilogue(__m256 (&acc)[MR][NB], float* c, int64_t ldc,
                                                         const float* sc, const float* sh, const float* r,
                                                         int64_t ldr, int64_t last) {
#pragma GCC unroll 2
  for (int b = 0; b < NB; ++b) {
    const int64_t n = b == NB - 1 ? last : 8;
    // whole vectors by plain loads (a masked load is slower), the last by a masked one
    auto ld = [n](const float* q) { return n == 8 ? _mm256_loadu_ps(q) : load_n(q, n); };
    const V vs = ld(sc + b * 8), vh = ld(sh + b * 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      V v = at::vec::fmadd(V(acc[i][b]), vs, vh);
      if (r) v = v + V(ld(r + i * ldr + b * 8));
      v = vact<A>(v);
      if (n == 8) v.store(c + i * ldc + b * 8);
      else store_n(c + i * ldc + b * 8, v, n);
    }
  }
}

template <int MR, int NB, Act A>
__attribute__((noinline)) void tile(const float* a, int64_t lda, const float* wp, int64_t K, float* c, int64_t ldc,
                                    const float* sc, const float* sh, const float* r, int64_t ldr, int64_t last) {
  __m256 acc[MR][NB];
  tile_fmas<MR, NB>(acc, a, lda, wp, K, c, ldc, r, ldr);
  tile_epilogue<MR, NB, A>(acc, c, ldc, sc, sh, r, ldr, last);
}

// SiLU tiles of a whole 16-channel panel with the epilogue in AVX-512 where the CPU has it (and
// FASTZOO_NO_AVX512 is not set): a row's 16 channels as one vector, 2^n by vscalefps. SiLU per element 1.6x
// faster than the AVX2 exp_u20 and divide (a standalone microbenchmark, not kept: 2.9 vs 4.5-5.2 ns per 8
// floats, one core); efficientnet_b0 at batch 1 0.95-0.96x (both paths toggled every 6 forwards in one
// process). silu512 and FZ_AVX512: vec512.h.
// c = silu(acc * sc + sh (+ r)) for the tile's MR rows of the panel's 8 + last channels, a row per zmm.
template <int MR>
FZ_AVX512 __attribute__((always_inline)) inline void silu512_epilogue(const __m512 (&acc)[MR], float* c,
                                                                      int64_t ldc, const float* sc, const float* sh,
                                                                      const float* r, int64_t ldr, int64_t last) {
  const __mmask16 m = lanes(0, 8 + last);  // the panel's valid channels
  const __m512 vs = _mm512_maskz_loadu_ps(m, sc), vh = _mm512_maskz_loadu_ps(m, sh);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    __m512 v = _mm512_fmadd_ps(acc[i], vs, vh);
    if (r) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, r + i * ldr));
    _mm512_mask_storeu_ps(c + i * ldc, m, silu512(v));
  }
}

template <int MR>
FZ_AVX512 __attribute__((noinline)) void tile_silu512(const float* a, int64_t lda, const float* wp, int64_t K,
                                                      float* c, int64_t ldc, const float* sc, const float* sh,
                                                      const float* r, int64_t ldr, int64_t last) {
  __m256 acc[MR][2];
  tile_fmas<MR, 2>(acc, a, lda, wp, K, c, ldc, r, ldr);
  __m512 rows[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    rows[i] = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(acc[i][0])),
                                                  _mm256_castps_pd(acc[i][1]), 1));
  silu512_epilogue<MR>(rows, c, ldc, sc, sh, r, ldr, last);
}

// Where the CPU has AVX-512F: tiles of kRows512 rows x the whole 16-channel panel, one zmm accumulator per
// row, a[p, k] broadcast from memory inside the FMA: per k, 9 instructions for 8 x 16 multiply-adds, against
// 20 for 6 x 16 in the AVX2 tile (2 panel loads, 6 broadcasts, 12 FMAs). Bit-identical to
// the AVX2 tiles (same FMA order per output); against them, one thread, in-process A/B: the 1x1 convs of
// efficientnet_b0's blocks 0.80-1.00x, efficientnet_b0 0.92x at batch 1 and 0.90x at batch 32,
// mobilenet_v3_small 0.94x, mobilenet_v2 0.98x (2 threads). 12 rows were no faster, 24 1.1-1.5x slower.
constexpr int kRows512 = 8;

template <int MR>
FZ_AVX512 __attribute__((always_inline)) inline void tile_fmas512(__m512 (&acc)[MR], const float* a, int64_t lda,
                                                                  const float* wp, int64_t K, float* c, int64_t ldc,
                                                                  const float* r, int64_t ldr) {
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  prefetch_epilogue<MR>(c, ldc, r, ldr);
  for (int64_t k = 0; k < K; ++k) {
    const __m512 w = _mm512_loadu_ps(wp + k * kPanel);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[i * lda + k]), w, acc[i]);
  }
}

template <int MR, int NB, Act A>
FZ_AVX512 __attribute__((noinline)) void tile512(const float* a, int64_t lda, const float* wp, int64_t K, float* c,
                                                 int64_t ldc, const float* sc, const float* sh, const float* r,
                                                 int64_t ldr, int64_t last) {
  __m512 acc[MR];
  tile_fmas512<MR>(acc, a, lda, wp, K, c, ldc, r, ldr);
  if constexpr (A == Act::SiLU && NB == 2) {
    silu512_epilogue<MR>(acc, c, ldc, sc, sh, r, ldr, last);
  } else {
    __m256 halves[MR][NB];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      halves[i][0] = _mm512_castps512_ps256(acc[i]);
      if constexpr (NB == 2) halves[i][1] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[i]), 1));
    }
    tile_epilogue<MR, NB, A>(halves, c, ldc, sc, sh, r, ldr, last);
  }
}

template <int NB, Act A>
void panel_rows(const float* a, int64_t lda, const float* wp, int64_t P, int64_t K, float* c, int64_t ldc,
                const float* sc, const float* sh, const float* r, int64_t ldr, int64_t last) {
  const bool silu512 = A == Act::SiLU && NB == 2 && cpu_has_avx512f();
  auto tile_at = [&]<int MR>(int64_t p) {  // rows p.. p+MR
    const float* rp = r ? r + p * ldr : nullptr;
    if (silu512) tile_silu512<MR>(a + p * lda, lda, wp, K, c + p * ldc, ldc, sc, sh, rp, ldr, last);
    else tile<MR, NB, A>(a + p * lda, lda, wp, K, c + p * ldc, ldc, sc, sh, rp, ldr, last);
  };
  // A whole panel, where the CPU has AVX-512F: a zmm per row (tile512). A half panel (8 channels, the last of 24
  // or 40): a ymm per row (AVX2 tile), where a zmm left half its lanes idle; Zen 4 runs two ymm FMAs per cycle or
  // one zmm (in-process A/B at batch 1: efficientnet_b0 1.010x, mobilenet_v2 1.002-1.009x, mobilenet_v3_large
  // 1.009-1.018x, mobilenet_v3_small 1.010x; mobilenet_v2 at batch 32 1.014x). Both in tiles of 8 rows, or of 8
  // and 7 where those cover every row: 49 rows (7x7 maps) as 6 x 8 + 1 left a one-row tile, whose accumulators
  // wait on the FMA latency at every k (efficientnet_b0 1.015x: its 7x7 blocks 1.03-1.04x; mobilenet_v2 1.013x,
  // mobilenet_v3_large 1.006x, mobilenet_v3_small 1.005x; efficientnet_b0 at batch 32 1.007-1.012x). All
  // bit-identical: each output's FMAs in the same order.
  int64_t p = 0;
  if (NB == 1 || cpu_has_avx512f()) {
    auto tile8_at = [&]<int MR>(int64_t p) {
      const float* rp = r ? r + p * ldr : nullptr;
      if constexpr (NB == 2) tile512<MR, NB, A>(a + p * lda, lda, wp, K, c + p * ldc, ldc, sc, sh, rp, ldr, last);
      else tile<MR, NB, A>(a + p * lda, lda, wp, K, c + p * ldc, ldc, sc, sh, rp, ldr, last);
    };
    const int64_t tiles = (P + kRows512 - 1) / kRows512;
    if (P >= (kRows512 - 1) * tiles) {
      for (int64_t t = 0, eights = P - (kRows512 - 1) * tiles; t < tiles; ++t) {
        if (t < eights) tile8_at.template operator()<kRows512>(p);
        else tile8_at.template operator()<kRows512 - 1>(p);
        p += t < eights ? kRows512 : kRows512 - 1;
      }
      return;
    }
    for (; p + kRows512 <= P; p += kRows512) tile8_at.template operator()<kRows512>(p);
  }
  row_tiles<kRows>(p, P, tile_at);
}
#endif

}  // namespace

#if FZ_AVX2
bool cpu_has_avx512f() {
  static const bool yes = __builtin_cpu_supports("avx512f") && !std::getenv("FASTZOO_NO_AVX512");
  return yes;
}

template <bool BF16_GRADE>
FZ_AVX512 static void silu_rows_impl(float* y, int64_t P, int64_t C, int64_t ldy, float* sums) {
  for (int64_t c0 = 0; c0 < C; c0 += 16) {
    const __mmask16 m = lanes(0, C - c0);
    __m512 tot = _mm512_setzero_ps();
    for (int64_t p = 0; p < P; ++p) {
      float* q = y + p * ldy + c0;
      const __m512 v = silu512_grade<BF16_GRADE>(_mm512_maskz_loadu_ps(m, q));
      _mm512_mask_storeu_ps(q, m, v);
      tot = _mm512_add_ps(tot, v);
    }
    if (sums) _mm512_mask_storeu_ps(sums + c0, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, sums + c0), tot));
  }
}

void silu_rows_avx512(float* y, int64_t P, int64_t C, int64_t ldy, float* sums, bool bf16_grade) {
  if (bf16_grade) silu_rows_impl<true>(y, P, C, ldy, sums);
  else silu_rows_impl<false>(y, P, C, ldy, sums);
}
#else
bool cpu_has_avx512f() { return false; }
void silu_rows_avx512(float*, int64_t, int64_t, int64_t, float*, bool) {
  TORCH_CHECK(false, "silu_rows_avx512: built without AVX-512");
}
#endif

int64_t packed_panels_size(int64_t K, int64_t Cout) { return (Cout + 15) / 16 * 16 * K; }

void pack_panels(const float* w, int64_t K, int64_t Cout, const float* gate, float* wp) {
#if FZ_AVX2
  for (int64_t o0 = 0; o0 < Cout; o0 += kPanel) {
    float* dst = wp + o0 * K;  // panel o0 / 16: K rows of 16
    for (int64_t h = 0; h < 2; ++h) {  // the panel's two 8-channel halves
      const int64_t oh = o0 + 8 * h, rows = std::clamp<int64_t>(Cout - oh, 0, 8);
      int64_t k = 0;
      for (; k < K; k += 8) {
        const int64_t kn = std::min<int64_t>(8, K - k);
        __m256 m[8];
        for (int i = 0; i < 8; ++i) {
          const float* q = w + (oh + i) * K + k;
          m[i] = i >= rows ? _mm256_setzero_ps() : kn == 8 ? _mm256_loadu_ps(q) : load_n(q, kn);
        }
        transpose8(m);
        for (int64_t j = 0; j < kn; ++j) {
          __m256 v = m[j];
          if (gate) v = _mm256_mul_ps(v, _mm256_set1_ps(gate[k + j]));
          _mm256_storeu_ps(dst + (k + j) * kPanel + 8 * h, v);
        }
      }
    }
  }
#else
  TORCH_CHECK(false, "pack_panels: built without AVX2");
#endif
}

void gate_panel(const float* src, int64_t K, const float* gate, float* dst) {
#if FZ_AVX2
  if (gate == nullptr) {
    std::memcpy(dst, src, sizeof(float) * kPanel * K);
    return;
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m256 g = _mm256_set1_ps(gate[k]);
    _mm256_storeu_ps(dst + k * kPanel, _mm256_mul_ps(_mm256_loadu_ps(src + k * kPanel), g));
    _mm256_storeu_ps(dst + k * kPanel + 8, _mm256_mul_ps(_mm256_loadu_ps(src + k * kPanel + 8), g));
  }
#else
  TORCH_CHECK(false, "gate_panel: built without AVX2");
#endif
}

// The jobs' weights packed, their 16-channel panels split across the threads when there are many (on the
// calling thread alone, the other waiting, packing was 8% of mobilenet_v2 at batch 1); one parallel region.
void pack_jobs(c10::ArrayRef<PackJob> jobs) {
  std::vector<std::pair<const PackJob*, int64_t>> panels;  // (job, first channel)
  int64_t floats = 0;
  for (const PackJob& j : jobs) {
    for (int64_t o0 = 0; o0 < j.w->size(0); o0 += 16) panels.emplace_back(&j, o0);
    floats += j.w->numel();
  }
  auto range = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const PackJob& j = *panels[i].first;
      const int64_t o0 = panels[i].second, K = j.w->size(1), n = std::min<int64_t>(16, j.w->size(0) - o0);
      if (j.panels)
        gate_panel(j.panels + o0 * K, K, j.gate, j.wp + o0 * K);
      else
        pack_panels(j.w->const_data_ptr<float>() + o0 * K, K, n, j.gate, j.wp + o0 * K);
    }
  };
  const int64_t np = static_cast<int64_t>(panels.size());
  if (floats >= 16384) at::parallel_for(0, np, 1, range);
  else range(0, np);
}

void gemm_packed_bn_act(const float* a, int64_t lda, const float* wp, int64_t P, int64_t K, int64_t Cout, float* c,
                        int64_t ldc, const float* sc, const float* sh, const float* r, int64_t ldr, Act act) {
#if FZ_AVX2
  // Blocks of rows (~16 KiB of a, at most 96 rows: a multiple of both tile heights) through every panel: a
  // block stays in L1 while the panels stream from L2 (panel after panel over all the rows would re-read a
  // from memory per panel on large maps). Where all of a fits in 256 KiB (batch-1 maps of 14x14 and less,
  // short strips), one block of all the rows: the weights, there the larger operand and cold (a model's 21 MB
  // come from DRAM in every forward), are read once each and the rows again per panel from L2; with blocks of
  // rows the first block stalled on every weight line. Per step inside whole forwards (in-process A/B):
  // efficientnet_b0's 7x7 blocks 1.02-1.06x, its head conv 1.10-1.18x; whole chains efficientnet_b0
  // 1.012-1.020x (batch 32 1.015x), mobilenet_v2 1.012x, mobilenet_v3_small 1.008x, mobilenet_v3_large 1.005x.
  const int64_t mr = cpu_has_avx512f() ? kRows512 : kRows;
  const int64_t rows =
      P * K <= 64 * 1024 ? P : std::clamp<int64_t>(4096 / std::max<int64_t>(1, K) / mr * mr, mr, 16 * kRows);
  with_act(act, [&](auto A) {
    constexpr Act a_ = decltype(A)::value;
    for (int64_t p0 = 0; p0 < P; p0 += rows) {
      const int64_t m = std::min(rows, P - p0);
      const float* ab = a + p0 * lda;
      float* cb = c + p0 * ldc;
      for (int64_t o0 = 0; o0 < Cout; o0 += kPanel) {
        const int64_t n = std::min<int64_t>(kPanel, Cout - o0);
        const float* rp = r ? r + p0 * ldr + o0 : nullptr;
        if (n > 8)
          panel_rows<2, a_>(ab, lda, wp + o0 * K, m, K, cb + o0, ldc, sc + o0, sh + o0, rp, ldr, n - 8);
        else
          panel_rows<1, a_>(ab, lda, wp + o0 * K, m, K, cb + o0, ldc, sc + o0, sh + o0, rp, ldr, n);
      }
    }
  });
#else
  TORCH_CHECK(false, "gemm_packed_bn_act: built without AVX2");
#endif
}

void gemm_bn_act(const float* a, int64_t lda, const float* w, const float* pre, const float* gate, int64_t P,
                 int64_t K, int64_t Cout, float* c, int64_t ldc, const float* sc, const float* sh, const float* r,
                 int64_t ldr, Act act) {
#if FZ_AVX2
  if (pre != nullptr && gate == nullptr)
    return gemm_packed_bn_act(a, lda, pre, P, K, Cout, c, ldc, sc, sh, r, ldr, act);
  thread_local std::vector<float> panel;  // one panel at a time, in L1 / L2 while all the rows use it
  if (static_cast<int64_t>(panel.size()) < kPanel * K) panel.resize(kPanel * K);
  with_act(act, [&](auto A) {
    constexpr Act a_ = decltype(A)::value;
    for (int64_t o0 = 0; o0 < Cout; o0 += kPanel) {
      const int64_t n = std::min<int64_t>(kPanel, Cout - o0);
      if (pre)
        gate_panel(pre + o0 * K, K, gate, panel.data());
      else
        pack_panels(w + o0 * K, K, n, gate, panel.data());
      const float* rp = r ? r + o0 : nullptr;
      if (n > 8)
        panel_rows<2, a_>(a, lda, panel.data(), P, K, c + o0, ldc, sc + o0, sh + o0, rp, ldr, n - 8);
      else
        panel_rows<1, a_>(a, lda, panel.data(), P, K, c + o0, ldc, sc + o0, sh + o0, rp, ldr, n);
    }
  });
#else
  TORCH_CHECK(false, "gemm_bn_act: built without AVX2");
#endif
}

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END
