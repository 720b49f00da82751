// dwconv_bn_act, NCHW float32 with padding K//2 at stride 1 (K 3 or 5) or 2 (K 3), in AVX-512 (where the CPU has
// it): a plane at a time, each output row as 16-wide vectors read straight from x. A tile of R output rows x one
// vector builds each of its input rows' vectors once per kernel column (a shifted unaligned load; at stride 2 the
// even or odd floats of two loads, by a permute) and uses it for every output row of the tile it reaches; vectors
// at the image's left or right edge load with a mask (lanes outside the image read zeros and are not read at all,
// so nothing before or past x is touched), rows above or below it are skipped. No scratch, no padding copy, no
// transposes: one thread, stride 1, a standalone microbenchmark (not kept), 144x56x56 k3 145 us against 300 for
// the op in a loop, 88x28x28 k3 21 against 40, 384x14x14 k3 26 against 82. Planes up to 8x8 at K 3: two rows
// per vector (row_pairs). At stride 1, K 3 a last column of at most 8 lanes as 8-lane vectors (tile8).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <vector>

#include "cpu_kernels.h"
#include "parallel_tasks.h"
#include "fastzoo/dwconv_math.h"
#include "fastzoo/cpu_vec.h"
#include "vec512.h"

namespace fastzoo {
namespace cpu {

#if FZ_AVX2
// This file's kernels also use AVX-512VL (8-lane masked loads and stores, ymm16-31): every AVX-512 CPU but the
// Xeon Phi has it, and without it the channel groups take these shapes.
#undef FZ_AVX512
#define FZ_AVX512 __attribute__((target("avx,avx2,fma,f16c,avx512f,avx512vl")))
namespace {

// Output rows per tile: 4 (4 accumulators, and with K 5 its 25 weight vectors, in registers); on planes of at most
// 14 output rows 7, two tiles for 14 rows instead of four, and with K 5 each weight read by its FMA (an embedded
// broadcast) instead of held in a register. In-process A/B against 4 rows, 2 threads: K 5 240x14x14 batch 1
// 0.89x, batch 32 0.87x (7 rows with the weights in registers, spilled: 0.91x / 0.90x); K 3 on 14 output rows
// batch 1 0.96-0.97x, batch 32 0.85-0.93x; on 28 and 56 rows batch 1 0.97-0.99x but batch 32 1.08-1.18x slower,
// so those keep 4; 8 rows no better than 7.
constexpr int kRows = 4, kSmallRows = 7, kSmallPlaneRows = 14;

// A plane's geometry: input rows ldx floats apart, output dense (OH x OW).
struct Plane {
  int64_t ldx, H, W, OH, OW;
};

// The loads of one 16-wide vector of output columns from c0: masked where its taps reach past the image's left
// or right edge (mk[kw][j]: the lanes of the j-th of the S loads of kernel column kw whose input column is
// inside), and the output lanes inside the image (om).
template <int K, int S>
struct Column {
  int64_t c0;
  bool masked;
  __mmask16 mk[K][S];
  __mmask16 om;
};

template <int K, int S>
std::vector<Column<K, S>> columns(const Plane& p) {
  constexpr int64_t pad = K / 2;
  std::vector<Column<K, S>> out;
  for (int64_t c0 = 0; c0 < p.OW; c0 += 16) {
    Column<K, S> c{c0, false, {}, lanes(0, p.OW - c0)};
    for (int64_t kw = 0; kw < K; ++kw)
      for (int64_t j = 0; j < S; ++j) {  // load j reads input columns S * c0 + kw - pad + 16 j + l
        const int64_t first = S * c0 + kw - pad + 16 * j;
        c.mk[kw][j] = lanes(-first, p.W - first);
        c.masked |= c.mk[kw][j] != 0xFFFF;
      }
    c.masked |= c.om != 0xFFFF;
    out.push_back(c);
  }
  return out;
}

// Load j of kernel column kw: input columns S * c0 + kw - pad + 16 j on (row: the first of them for kw 0).
template <int K, int S, bool MASKED>
FZ_AVX512 __attribute__((always_inline)) inline __m512 tap_load(const float* row, int kw, int j,
                                                                const Column<K, S>& c) {
  return MASKED ? _mm512_maskz_loadu_ps(c.mk[kw][j], row + kw + 16 * j) : _mm512_loadu_ps(row + kw + 16 * j);
}

// The input vectors of one row for the 16 output columns of c, kernel column by kernel column. At stride 2 (K 3):
// the even and the odd floats of two loads from input column 2 c0 - 1 (kernel columns 0 and 1), and the even ones
// a lane on with the float after them (column 2): 2 loads, 2 permutes and an align per row instead of 6 loads
// and 3 permutes (a permute of two loads per kernel column), batch 1 0.80-0.92x, batch 32 0.83-0.96x
// (in-process A/B, 2 threads, 7 shapes).
template <int K, int S, bool MASKED>
FZ_AVX512 __attribute__((always_inline)) inline void row_vectors(const float* row, const Column<K, S>& c,
                                                                 __m512 (&v)[K]) {
  if constexpr (S == 1) {
#pragma GCC unroll 7
    for (int kw = 0; kw < K; ++kw) v[kw] = tap_load<K, S, MASKED>(row, kw, 0, c);
  } else {
    static_assert(K == 3, "stride 2 for K 3 only");
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512 a = tap_load<K, S, MASKED>(row, 0, 0, c), b = tap_load<K, S, MASKED>(row, 0, 1, c);
    v[0] = _mm512_permutex2var_ps(a, even, b);
    v[1] = _mm512_permutex2var_ps(a, _mm512_add_epi32(even, _mm512_set1_epi32(1)), b);
    // input column 2 c0 + 31: lane 14 of kernel column 2's second load
    const __m512 next = _mm512_maskz_loadu_ps(MASKED ? (c.mk[2][1] >> 14) & 1 : 1, row + 32);
    v[2] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(next), _mm512_castps_si512(v[0]), 1));
  }
}

// acc + v * w[0], w[0] broadcast by the FMA itself (vfmadd231ps with a {1to16} memory operand): no register per
// weight. Inline assembly makes the memory operand certain; a compiler may hoist broadcasts out of the loops into
// registers, which with 7 accumulators spill (weights in registers: 0.91x / 0.90x against 0.89x / 0.87x).
FZ_AVX512 __attribute__((always_inline)) inline __m512 fma_bcast(__m512 v, const float* w, __m512 acc) {
  asm("vfmadd231ps %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(v), "m"(*w));
  return acc;
}

// The weights of a plane times its BN scale (the accumulators start at the BN shift, so no FMA per output vector
// applies the BN): K*K vectors in registers (wv), or with MB read from ws by each FMA.
template <int K, bool MB>
struct Weights {
  __m512 wv[MB ? 1 : K * K];
  alignas(64) float ws[MB ? K * K : 1];
  FZ_AVX512 __attribute__((always_inline)) inline Weights(const float* w, float sc) {
#pragma GCC unroll 49
    for (int t = 0; t < K * K; ++t) {
      if constexpr (MB) ws[t] = w[t] * sc;
      else wv[t] = _mm512_set1_ps(w[t] * sc);
    }
  }
  FZ_AVX512 __attribute__((always_inline)) inline __m512 fma(__m512 v, int t, __m512 acc) const {
    if constexpr (MB) return fma_bcast(v, ws + t, acc);
    else return _mm512_fmadd_ps(v, wv[t], acc);
  }
};

// act(v) of an accumulator that already holds the BN's output. Hardswish as v * clamp(v / 6 + 1/2, 0, 1): one
// multiply less than vact512's v * clamp(v + 3, 0, 6) * (1/6) (on Zen 4 vmulps takes the FMA pipes, vmaxps /
// vminps do not); NaN stays NaN (max and min pass their second operand). With the BN folded, in-process A/B
// against the unfolded kernel, 2 threads: batch 1 0.91-0.97x (144x56x56 0.91x), batch 32 0.96-0.98x (16x112x112
// s2 1.04x, 72x56x56 s2 1.00x).
template <Act A>
FZ_AVX512 __attribute__((always_inline)) inline __m512 folded_act(__m512 v) {
  if constexpr (A == Act::HardSwish || A == Act::HardSigmoid) {
    const __m512 r = _mm512_min_ps(_mm512_set1_ps(1.f), _mm512_max_ps(_mm512_setzero_ps(),
        _mm512_fmadd_ps(v, _mm512_set1_ps(1.f / 6.f), _mm512_set1_ps(0.5f))));
    return A == Act::HardSwish ? _mm512_mul_ps(v, r) : r;
  } else {
    return vact512<A>(v);
  }
}

// folded_act for 8 lanes (tile8). vact's hardswish there instead: 144x56x56 batch 1 1.03x slower (two A/Bs)
template <Act A>
FZ_AVX512 __attribute__((always_inline)) inline __m256 folded_act8(__m256 v) {
  if constexpr (A == Act::HardSwish || A == Act::HardSigmoid) {
    const __m256 r = _mm256_min_ps(_mm256_set1_ps(1.f), _mm256_max_ps(_mm256_setzero_ps(),
        _mm256_fmadd_ps(v, _mm256_set1_ps(1.f / 6.f), _mm256_set1_ps(0.5f))));
    return A == Act::HardSwish ? _mm256_mul_ps(v, r) : r;
  } else {
    return vact<A>(Vectorized<float>(v));
  }
}

// Output rows [oh0, oh0 + R) of column c: act(vh + taps * scaled weights). Each input row's vector of kernel
// column kw is built once and used by every output row of the tile it reaches (input row S * oh0 - pad + r is
// kernel row r - S * i of output row oh0 + i). EDGE: the tile's input rows may lie above or below the image
// (skipped) and its output rows past the last (not stored).
template <int K, int S, int R, bool MB, bool MASKED, bool EDGE, Act A>
FZ_AVX512 __attribute__((always_inline)) inline void tile(const float* x, const Plane& p, const Weights<K, MB>& wt,
                                                          __m512 vh, float* y, int64_t oh0,
                                                          const Column<K, S>& c) {
  constexpr int pad = K / 2;
  __m512 acc[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) acc[i] = vh;
#pragma GCC unroll 16
  for (int r = 0; r < S * (R - 1) + K; ++r) {
    const int64_t ih = S * oh0 + r - pad;
    if (EDGE && (ih < 0 || ih >= p.H)) continue;
    __m512 v[K];
    row_vectors<K, S, MASKED>(x + ih * p.ldx + S * c.c0 - pad, c, v);
#pragma GCC unroll 7
    for (int kw = 0; kw < K; ++kw)
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i)
        if (r - S * i >= 0 && r - S * i < K) acc[i] = wt.fma(v[kw], (r - S * i) * K + kw, acc[i]);
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    if (EDGE && oh0 + i >= p.OH) break;
    const __m512 o = folded_act<A>(acc[i]);
    float* d = y + (oh0 + i) * p.OW + c.c0;
    if (MASKED) _mm512_mask_storeu_ps(d, c.om, o);
    else _mm512_storeu_ps(d, o);
  }
}

// tile for a plane's last column where at most 8 of its lanes are inside the image, at stride 1, K 3 (56-wide
// rows: 3 full vectors and 8 columns): 8-lane vectors, two of whose FMAs take the pipes of one 16-lane FMA on
// Zen 4, so the half-empty vector no longer costs a full one. Lanes as tile's first 8 (the column's masks' low
// bytes), the weights the low halves of the broadcast ones. In-process A/B against the 16-lane last column, 2
// threads: 144x56x56 batch 1 0.94x (two runs), batch 32 0.95-0.99x.
template <int R, bool EDGE, Act A>
FZ_AVX512 __attribute__((always_inline)) inline void tile8(const float* x, const Plane& p, const Weights<3, false>& wt,
                                                           __m512 vh16, float* y, int64_t oh0,
                                                           const Column<3, 1>& c) {
  const __m256 vh = _mm512_castps512_ps256(vh16);  // the broadcast values' low halves
  __m256 acc[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) acc[i] = vh;
#pragma GCC unroll 16
  for (int r = 0; r < R + 2; ++r) {
    const int64_t ih = oh0 + r - 1;
    if (EDGE && (ih < 0 || ih >= p.H)) continue;
    const float* row = x + ih * p.ldx + c.c0 - 1;
    __m256 v[3];
#pragma GCC unroll 3
    for (int kw = 0; kw < 3; ++kw) {
      const __mmask8 m = static_cast<__mmask8>(c.mk[kw][0]);
      v[kw] = m == 0xFF ? _mm256_loadu_ps(row + kw) : _mm256_maskz_loadu_ps(m, row + kw);
    }
#pragma GCC unroll 3
    for (int kw = 0; kw < 3; ++kw)
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i)
        if (r - i >= 0 && r - i < 3)
          acc[i] = _mm256_fmadd_ps(v[kw], _mm512_castps512_ps256(wt.wv[(r - i) * 3 + kw]), acc[i]);
  }
  const __mmask8 om = static_cast<__mmask8>(c.om);
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    if (EDGE && oh0 + i >= p.OH) break;
    const __m256 o = folded_act8<A>(acc[i]);
    float* d = y + (oh0 + i) * p.OW + c.c0;
    if (om == 0xFF) _mm256_storeu_ps(d, o);
    else _mm256_mask_storeu_ps(d, om, o);
  }
}

// The tiles of output rows [oh, oh + R) across the plane's columns, one after the other while their input rows
// are in cache (column by column down the whole plane, 144x56x56 k3 at batch 32 ran 1.18x slower than the
// channel groups).
template <int K, int S, int R, bool MB, bool EDGE, Act A>
FZ_AVX512 __attribute__((always_inline)) inline void row_of_tiles(const float* x, const Plane& p,
                                                                  const Weights<K, MB>& wt, __m512 vh,
                                                                  float* y, int64_t oh, const Column<K, S>* cols,
                                                                  int64_t ncols, bool tail8) {
  const int64_t n = ncols - tail8;
  for (int64_t b = 0; b < n; ++b) {
    if (cols[b].masked) tile<K, S, R, MB, true, EDGE, A>(x, p, wt, vh, y, oh, cols[b]);
    else tile<K, S, R, MB, false, EDGE, A>(x, p, wt, vh, y, oh, cols[b]);
  }
  if constexpr (K == 3 && S == 1 && !MB)
    if (tail8) tile8<R, EDGE, A>(x, p, wt, vh, y, oh, cols[n]);
}

// One plane: x into y, weights w (K*K), BN scale and shift sc, sh. The tiles whose input rows all lie inside the
// image run without the row checks.
template <int K, int S, int R, bool MB, Act A>
FZ_AVX512 __attribute__((noinline)) void plane(const float* x, const Plane& p, const float* w, float sc, float sh,
                                               float* y, const Column<K, S>* cols, int64_t ncols, bool tail8) {
  constexpr int64_t pad = K / 2;
  static_assert(S * R >= pad, "the second tile's input rows start inside the image");
  const Weights<K, MB> wt(w, sc);
  const __m512 vh = _mm512_set1_ps(sh);
  row_of_tiles<K, S, R, MB, true, A>(x, p, wt, vh, y, 0, cols, ncols, tail8);
  int64_t oh = R;
  for (; S * (oh + R - 1) + pad < p.H; oh += R)
    row_of_tiles<K, S, R, MB, false, A>(x, p, wt, vh, y, oh, cols, ncols, tail8);
  for (; oh < p.OH; oh += R) row_of_tiles<K, S, R, MB, true, A>(x, p, wt, vh, y, oh, cols, ncols, tail8);
}

// f(i, n, c) for each plane i = n * C + c of the N * C, with the activation a template constant (f's first
// argument): runs of planes of at least ~64K multiply-adds (plane_fmas each), taken with work stealing
// (parallel_tasks).
template <typename F>
void for_each_plane(int64_t N, int64_t C, int64_t plane_fmas, Act act, const F& f) {
  const int64_t NC = N * C, per = items_per_task(NC, std::max<int64_t>(1, 65536 / plane_fmas));
  with_act(act, [&](auto A) {
    parallel_tasks((NC + per - 1) / per, [&] {
      return [&](int64_t t) {
        for (int64_t i = t * per, e = std::min(NC, (t + 1) * per); i < e; ++i) f(A, i, i / C, i % C);
      };
    });
  });
}

template <int K, int S>
void run_planes(const float* x, Strides4 xs, const float* w, const float* sc, const float* sh, float* y, int64_t N,
                int64_t C, const Plane& p, Act act) {
  const std::vector<Column<K, S>> cols = columns<K, S>(p);
  const int64_t OHW = p.OH * p.OW;
  const int64_t ncols = static_cast<int64_t>(cols.size());
  const bool small = p.OH <= kSmallPlaneRows;
  const bool tail8 = K == 3 && S == 1 && p.OW - cols.back().c0 <= 8;
  for_each_plane(N, C, OHW * K * K, act, [&](auto A, int64_t i, int64_t n, int64_t c) {
    constexpr Act AA = decltype(A)::value;
    const float* xp = x + n * xs.n + c * xs.c;
    const float* wc = w + c * K * K;
    const Column<K, S>* cs = cols.data();
    if (small) plane<K, S, kSmallRows, K == 5, AA>(xp, p, wc, sc[c], sh[c], y + i * OHW, cs, ncols, tail8);
    else plane<K, S, kRows, false, AA>(xp, p, wc, sc[c], sh[c], y + i * OHW, cs, ncols, tail8);
  });
}

// Small planes, rows 6-8 wide and at most 8 of them, stride 1, K 3: two rows per vector (one 7-wide row filled 7
// of 16 lanes). The rows of a plane are contiguous, so one load at input row s covers rows s and s + 1, each lane
// of it masked by its own column and row (ms[r][kw], r = s + pad): every load is used by each of the plane's NV
// output vectors it reaches (kernel row s + pad - 2 j of vector j). Against the channel groups (in-process A/Bs,
// 2 threads): K 3 batch 1 0.79-0.90x, batch 32 0.66-0.84x (7x7, 8x8, 6x6 planes); K 5 1.00-1.09x, so not K 5.
template <int K, int NV, Act A>
FZ_AVX512 __attribute__((noinline)) void row_pairs(const float* x, int64_t W, const float* w, float sc, float sh,
                                                   float* y, const __mmask16* ms, const __mmask16* om) {
  constexpr int pad = K / 2, NS = 2 * (NV - 1) + K;
  const Weights<K, false> wt(w, sc);
  const __m512 vh = _mm512_set1_ps(sh);
  __m512 acc[NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) acc[j] = vh;
#pragma GCC unroll 16
  for (int r = 0; r < NS; ++r)
#pragma GCC unroll 5
    for (int kw = 0; kw < K; ++kw) {
      const __m512 v = _mm512_maskz_loadu_ps(ms[r * K + kw], x + (r - pad) * W + kw - pad);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j)
        if (r - 2 * j >= 0 && r - 2 * j < K) acc[j] = wt.fma(v, (r - 2 * j) * K + kw, acc[j]);
    }
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) _mm512_mask_storeu_ps(y + 2 * j * W, om[j], folded_act<A>(acc[j]));
}

template <int K, int NV>
void run_row_pairs(const float* x, Strides4 xs, const float* w, const float* sc, const float* sh, float* y, int64_t N,
                   int64_t C, int64_t H, int64_t W, Act act) {
  constexpr int64_t pad = K / 2, NS = 2 * (NV - 1) + K;
  __mmask16 ms[NS * K], om[NV];
  for (int64_t r = 0; r < NS; ++r)
    for (int64_t kw = 0; kw < K; ++kw) {
      unsigned m = 0;
      for (int64_t l = 0; l < 2 * W; ++l) {
        const int64_t ih = r - pad + l / W, iw = l % W + kw - pad;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W) m |= 1u << l;
      }
      ms[r * K + kw] = static_cast<__mmask16>(m);
    }
  for (int64_t j = 0; j < NV; ++j) om[j] = lanes(0, std::min<int64_t>(2 * W, (H - 2 * j) * W));
  for_each_plane(N, C, H * W * K * K, act, [&](auto A, int64_t i, int64_t n, int64_t c) {
    row_pairs<K, NV, decltype(A)::value>(x + n * xs.n + c * xs.c, W, w + c * K * K, sc[c], sh[c], y + i * H * W, ms,
                                         om);
  });
}

// row_pairs: K 3 on planes of rows 6-8 wide, at most 8 rows, contiguous.
bool row_pairs_apply(const at::Tensor& x, int64_t K, int64_t stride) {
  const int64_t H = x.size(2), W = x.size(3);
  return K == 3 && stride == 1 && W >= 6 && W <= 8 && H <= 8 && x.stride(2) == W;
}

}  // namespace

// Against the channel groups and planes, in-process A/Bs, 2 threads, each call after an eager one, at stride 1 (19
// shapes of rows 8-112 wide): batch 1 0.58-0.95x on rows of 9 or more, batch 32 0.59-0.90x (8x8 planes 1.13x);
// 7x7 planes 1.0-1.3x slower at both (a row fills 7 of 16 lanes): those go to row_pairs (K 3) or stay on the
// channel groups (K 5). At stride 2, K 3 (7 shapes): batch 1 0.70-0.90x, batch 32 0.68-0.98x; K 5 batch 1
// 1.04-1.08x slower (batch 32 0.86-0.95x), so not K 5.
bool dw_nchw_rows512_applies(const at::Tensor& x, int64_t K, int64_t stride, int64_t pad) {
  return x.scalar_type() == at::kFloat && (stride == 1 || (stride == 2 && K == 3)) && (K == 3 || K == 5) &&
         pad == K / 2 && ((x.size(3) - 1) / stride + 1 > 8 || row_pairs_apply(x, K, stride)) && x.stride(3) == 1 &&
         cpu_has_avx512f() && __builtin_cpu_supports("avx512vl");
}

void dw_nchw_rows512(const at::Tensor& x, const at::Tensor& weight, const float* sc, const float* sh, int64_t stride,
                     Act act, at::Tensor& out) {
  const at::Tensor w = weight.contiguous();
  const Strides4 xs{x.stride(0), x.stride(1), x.stride(2), 1};
  const Plane p{x.stride(2), x.size(2), x.size(3), out.size(2), out.size(3)};
  const int64_t K = weight.size(3);
  if (row_pairs_apply(x, K, stride)) {
    const auto run = std::array{run_row_pairs<3, 1>, run_row_pairs<3, 2>, run_row_pairs<3, 3>, run_row_pairs<3, 4>};
    run[(x.size(2) + 1) / 2 - 1](x.const_data_ptr<float>(), xs, w.const_data_ptr<float>(), sc, sh,
                                 out.data_ptr<float>(), x.size(0), x.size(1), x.size(2), x.size(3), act);
    return;
  }
  auto run = K == 5 ? run_planes<5, 1> : stride == 1 ? run_planes<3, 1> : run_planes<3, 2>;
  run(x.const_data_ptr<float>(), xs, w.const_data_ptr<float>(), sc, sh, out.data_ptr<float>(), x.size(0), x.size(1),
      p, act);
}
#else
bool dw_nchw_rows512_applies(const at::Tensor&, int64_t, int64_t, int64_t) { return false; }
void dw_nchw_rows512(const at::Tensor&, const at::Tensor&, const float*, const float*, int64_t, Act, at::Tensor&) {
  TORCH_CHECK(false, "dw_nchw_rows512: built without AVX-512");
}
#endif

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END
