// dwconv_bn_act, NCHW float32 at stride 1, padding K//2, K 3 or 5, in AVX-512 (where the CPU has it): a plane at
// a time, each output row as 16-wide vectors read straight from x. A tile of R output rows x one vector loads
// each of its input rows once per kernel column (a shifted unaligned load) and uses it for every output row of
// the tile it reaches; vectors at the image's left or right edge load with a mask (lanes outside the image
// read zeros and are not read at all, so nothing before or past x is touched), rows above or below it are
// skipped. No scratch, no padding copy, no transposes: one thread, a standalone microbenchmark (not kept),
// 144x56x56 k3 145 us against 300 for the op in a loop, 88x28x28 k3 21 against 40, 384x14x14 k3 26 against 82.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu_kernels.h"
#include "parallel_tasks.h"
#include "fastzoo/dwconv_math.h"
#include "fastzoo/cpu_vec.h"
#include "vec512.h"

namespace fastzoo {
namespace cpu {

#if FZ_AVX2
namespace {

constexpr int kRows = 4;  // output rows per tile: 4 accumulators, and with K 5 its 25 weight vectors, in registers

// The loads of one 16-column vector of the plane: masked where its taps reach past the image's left or right
// edge (mk[kw]: the lanes whose input column is inside), and the output lanes inside the image (om).
template <int K>
struct Column {
  int64_t c0;
  bool masked;
  __mmask16 mk[K];
  __mmask16 om;
};

template <int K>
std::vector<Column<K>> columns(int64_t W) {
  constexpr int64_t pad = K / 2;
  std::vector<Column<K>> out;
  for (int64_t c0 = 0; c0 < W; c0 += 16) {
    Column<K> c{c0, false, {}, static_cast<__mmask16>((1u << std::min<int64_t>(16, W - c0)) - 1)};
    for (int64_t kw = 0; kw < K; ++kw) {  // lanes l with 0 <= c0 + l + kw - pad < W
      const int64_t lo = std::clamp<int64_t>(pad - kw - c0, 0, 16), hi = std::clamp<int64_t>(W - c0 - kw + pad, 0, 16);
      c.mk[kw] = hi > lo ? static_cast<__mmask16>(((1u << hi) - 1) & ~((1u << lo) - 1)) : 0;
      c.masked |= c.mk[kw] != 0xFFFF;
    }
    c.masked |= c.om != 0xFFFF;
    out.push_back(c);
  }
  return out;
}

// Output rows [oh0, oh0 + R) of column c: act(taps * vs + vh). EDGE: the tile's input rows may lie above or
// below the image (skipped) and its output rows past the last (not stored).
template <int K, int R, bool MASKED, bool EDGE, Act A>
FZ_AVX512 __attribute__((always_inline)) inline void tile(const float* x, int64_t ldx, int64_t H, int64_t W,
                                                          const __m512 (&wv)[K * K], __m512 vs, __m512 vh, float* y,
                                                          int64_t oh0, const Column<K>& c) {
  constexpr int pad = K / 2;
  __m512 acc[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int r = 0; r < R + K - 1; ++r) {
    const int64_t ih = oh0 + r - pad;
    if (EDGE && (ih < 0 || ih >= H)) continue;
    const float* row = x + ih * ldx + c.c0 - pad;
#pragma GCC unroll 7
    for (int kw = 0; kw < K; ++kw) {
      const __m512 v = MASKED ? _mm512_maskz_loadu_ps(c.mk[kw], row + kw) : _mm512_loadu_ps(row + kw);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i)
        if (r - i >= 0 && r - i < K) acc[i] = _mm512_fmadd_ps(v, wv[(r - i) * K + kw], acc[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    if (EDGE && oh0 + i >= H) break;
    const __m512 o = vact512<A>(_mm512_fmadd_ps(acc[i], vs, vh));
    float* d = y + (oh0 + i) * W + c.c0;
    if (MASKED) _mm512_mask_storeu_ps(d, c.om, o);
    else _mm512_storeu_ps(d, o);
  }
}

// The tiles of output rows [oh, oh + R) across the plane's columns, one after the other while their input rows
// are in cache (column by column down the whole plane, 144x56x56 k3 at batch 32 ran 1.18x slower than the
// channel groups).
template <int K, bool EDGE, Act A>
FZ_AVX512 __attribute__((always_inline)) inline void row_of_tiles(const float* x, int64_t ldx, int64_t H, int64_t W,
                                                                  const __m512 (&wv)[K * K], __m512 vs, __m512 vh,
                                                                  float* y, int64_t oh, const Column<K>* cols,
                                                                  int64_t ncols) {
  for (int64_t b = 0; b < ncols; ++b) {
    if (cols[b].masked) tile<K, kRows, true, EDGE, A>(x, ldx, H, W, wv, vs, vh, y, oh, cols[b]);
    else tile<K, kRows, false, EDGE, A>(x, ldx, H, W, wv, vs, vh, y, oh, cols[b]);
  }
}

// One plane: x (rows ldx apart) into y (dense H x W), weights w (K*K), BN scale and shift sc, sh. The tiles
// whose input rows all lie inside the image run without the row checks.
template <int K, Act A>
FZ_AVX512 __attribute__((noinline)) void plane(const float* x, int64_t ldx, int64_t H, int64_t W, const float* w,
                                               float sc, float sh, float* y, const Column<K>* cols, int64_t ncols) {
  constexpr int64_t pad = K / 2, R = kRows;
  static_assert(R >= pad, "the second tile's input rows start inside the image");
  __m512 wv[K * K];
#pragma GCC unroll 49
  for (int t = 0; t < K * K; ++t) wv[t] = _mm512_set1_ps(w[t]);
  const __m512 vs = _mm512_set1_ps(sc), vh = _mm512_set1_ps(sh);
  row_of_tiles<K, true, A>(x, ldx, H, W, wv, vs, vh, y, 0, cols, ncols);
  int64_t oh = R;
  for (; oh + R + pad <= H; oh += R) row_of_tiles<K, false, A>(x, ldx, H, W, wv, vs, vh, y, oh, cols, ncols);
  for (; oh < H; oh += R) row_of_tiles<K, true, A>(x, ldx, H, W, wv, vs, vh, y, oh, cols, ncols);
}

template <int K>
void run_planes(const float* x, Strides4 xs, const float* w, const float* sc, const float* sh, float* y, int64_t N,
                int64_t C, int64_t H, int64_t W, Act act) {
  constexpr int64_t KK = K * K;
  const std::vector<Column<K>> cols = columns<K>(W);
  const int64_t NC = N * C, HW = H * W;
  // runs of planes of at least ~64K multiply-adds, about eight runs per thread (work stealing: parallel_tasks)
  const int64_t grain = std::max<int64_t>(1, 65536 / (HW * KK)), threads = at::get_num_threads();
  const int64_t per = std::max(grain, (NC + 8 * threads - 1) / (8 * threads));
  with_act(act, [&](auto A) {
    parallel_tasks((NC + per - 1) / per, [&] {
      return [&](int64_t t) {
        for (int64_t i = t * per, e = std::min(NC, (t + 1) * per); i < e; ++i) {
          const int64_t n = i / C, c = i % C;
          plane<K, decltype(A)::value>(x + n * xs.n + c * xs.c, xs.h, H, W, w + c * KK, sc[c], sh[c], y + i * HW,
                                       cols.data(), static_cast<int64_t>(cols.size()));
        }
      };
    });
  });
}

}  // namespace

// Against the channel groups and planes, in-process A/Bs, 2 threads, each call after an eager one, 19 shapes
// of rows 8-112 wide: batch 1 0.58-0.95x on rows of 9 or more; batch 32 0.59-0.90x (8x8 planes 1.13x); 7x7
// planes 1.0-1.3x slower at both (a row fills 7 of 16 lanes), so those stay on the channel groups.
bool dw_nchw_rows512_applies(const at::Tensor& x, int64_t K, int64_t stride, int64_t pad) {
  return x.scalar_type() == at::kFloat && stride == 1 && (K == 3 || K == 5) && pad == K / 2 && x.size(3) > 8 &&
         x.stride(3) == 1 && cpu_has_avx512f();
}

void dw_nchw_rows512(const at::Tensor& x, const at::Tensor& weight, const float* sc, const float* sh, Act act,
                     at::Tensor& out) {
  const at::Tensor w = weight.contiguous();
  const Strides4 xs{x.stride(0), x.stride(1), x.stride(2), 1};
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto run = weight.size(3) == 3 ? run_planes<3> : run_planes<5>;
  run(x.const_data_ptr<float>(), xs, w.const_data_ptr<float>(), sc, sh, out.data_ptr<float>(), N, C, H, W, act);
}
#else
bool dw_nchw_rows512_applies(const at::Tensor&, int64_t, int64_t, int64_t) { return false; }
void dw_nchw_rows512(const at::Tensor&, const at::Tensor&, const float*, const float*, Act, at::Tensor&) {
  TORCH_CHECK(false, "dw_nchw_rows512: built without AVX-512");
}
#endif

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END
