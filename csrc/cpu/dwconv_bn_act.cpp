// dwconv_bn_act on CPU: act(depthwise_conv(x, weight) * scale + shift).
//
// Fast paths (AVX2, at::parallel_for over output rows / planes):
//   channels_last (x.stride(1) == 1, output channels_last): vectorized over C, weights repacked (K*K, C);
//     float32 with K 3/5/7 and stride 1/2 in blocks of 8 or 4 pixels with sliding taps (each input vector
//     loaded once per kernel row for all the block's pixels), the rest in register blocks of 4 pixels x 2
//     vectors (each weight vector loaded once for 4 pixels; taps outside the image read a zero row);
//     optional per-channel output sums (mbconv's SE).
//   NCHW output, float32 with unit-stride rows, K 3/5 at stride 1 and K 3 at stride 2, output rows of 9 or more
//     pixels (and K 3 planes up to 8x8, two rows per vector), where the CPU has AVX-512: output rows as 16-wide
//     vectors straight from x (dwconv_nchw512.cpp);
//   NCHW output, float32 contiguous input, K 3/5/7: eight channels of an image at a time turned channels_last
//     in a zero-padded scratch (8x8 transposes), a channel per lane and an accumulator per output pixel, and
//     turned back (dw_nchw_use_groups says where this beats the next path);
//   NCHW output otherwise: per (n, c) plane, the input plane is packed into a zero-padded float scratch
//     (columns split by parity for stride 2) and output rows are vectorized over W in 2x4 / 4x2 register
//     blocks; any input strides.
// Generic path: fastzoo::dw_point per output element, any strides (the CUDA kernel's math).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "cpu_kernels.h"
#include "parallel_tasks.h"
#include "fastzoo/checks.h"
#include "fastzoo/dwconv_math.h"

namespace fastzoo {
namespace cpu {

void check_dw_args(const std::string& op, const at::Tensor& x, int64_t C, const at::Tensor& weight,
                   const at::Tensor& scale, const at::Tensor& shift, const char* wname, const char* sname,
                   const char* hname) {
  check_same(op, x, weight, wname);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 && weight.size(2) == weight.size(3),
              op, ": expected ", wname, " of shape (", C, ", 1, K, K) for C=", C, " channels, got ",
              weight.sizes());
  TORCH_CHECK(weight.size(3) % 2 == 1, op, ": expected an odd kernel size K in ", wname, ", got K=",
              weight.size(3));
  check_vec(op, x, scale, sname, C);
  check_vec(op, x, shift, hname, C);
}

namespace {

template <typename scalar_t>
void dw_generic_impl(const at::Tensor& x, const at::Tensor& w, const at::Tensor& sc, const at::Tensor& sh,
                     int64_t stride, int64_t pad, Act act, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = out.size(0), C = out.size(1), OH = out.size(2), OW = out.size(3);
  const int64_t H = x.size(2), W = x.size(3), K = w.size(3);
  const Strides4 xs{x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const Strides4 os{out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = w.const_data_ptr<scalar_t>();
  const acc_t* scp = sc.const_data_ptr<acc_t>();
  const acc_t* shp = sh.const_data_ptr<acc_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, OW * K * K));
  at::parallel_for(0, N * C * OH, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t oh = i % OH, c = (i / OH) % C, n = i / (OH * C);
      for (int64_t ow = 0; ow < OW; ++ow)
        op[n * os.n + c * os.c + oh * os.h + ow * os.w] = static_cast<scalar_t>(
            dw_point<scalar_t, acc_t>(xp, xs, H, W, wp, K, stride, pad, n, c, oh, ow, scp[c], shp[c], act));
    }
  });
}

}  // namespace

at::Tensor dw_weight_kc(const at::Tensor& weight, at::ScalarType acc) {
  if (acc == at::kFloat)
    if (at::Tensor kept = prepacked_dw_kc(weight); kept.defined()) return kept;  // a BlockChain's
  const int64_t C = weight.size(0), KK = weight.size(2) * weight.size(3);
  const at::Tensor w = weight.contiguous();
  at::Tensor out = at::empty({KK, C}, weight.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, w.scalar_type(), "dw_weight_kc", [&] {
    const scalar_t* src = w.const_data_ptr<scalar_t>();
    AT_DISPATCH_FLOATING_TYPES(acc, "dw_weight_kc_acc", [&] {
      scalar_t* dst = out.data_ptr<scalar_t>();
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < KK; ++k) dst[k * C + c] = static_cast<scalar_t>(src[c * KK + k]);
    });
  });
  return out;
}

void dw_generic(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale_acc,
                const at::Tensor& shift_acc, int64_t stride, int64_t pad, Act act, at::Tensor& out) {
  const at::Tensor w = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dwconv_bn_act_generic", [&] {
    dw_generic_impl<scalar_t>(x, w, scale_acc, shift_acc, stride, pad, act, out);
  });
}

at::Tensor dwconv_bn_act_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                             const at::Tensor& shift, int64_t stride, int64_t padding, c10::string_view act_name) {
  const std::string op = "dwconv_bn_act";
  check_input4d(op, x);
  check_dw_args(op, x, x.size(1), weight, scale, shift, "weight", "scale", "shift");
  check_stride(op, stride);
  const Act act = check_act(op, "act", std::string(act_name));
  const int64_t K = weight.size(3);
  TORCH_CHECK(padding >= -1, op, ": expected padding >= 0 (or -1 for K//2), got ", padding);
  const int64_t pad = padding < 0 ? K / 2 : padding;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
  TORCH_CHECK(H + 2 * pad >= K && W + 2 * pad >= K && OH > 0 && OW > 0, op, ": input x of spatial size (", H, ", ",
              W, ") with padding ", pad, " is smaller than the kernel size ", K);
  at::Tensor out = new_output({N, C, OH, OW}, x.options(), out_format(x));
  if (out.numel() == 0) return out;
  const at::Tensor sc = to_acc(scale, x), sh = to_acc(shift, x);
  if (use_fast() && dw_fast(x, weight, sc, sh, stride, pad, act, out, nullptr)) return out;
  dw_generic(x, weight, sc, sh, stride, pad, act, out);
  return out;
}

}  // namespace cpu
}  // namespace fastzoo

// ------------------------------------------------------------------------------------------------
// Vectorized fast paths (compiled for AVX2; reached only when cpu_has_avx2()).
#include "fastzoo/cpu_vec.h"

namespace fastzoo {
namespace cpu {
namespace {

struct DwShape {
  int64_t N, C, H, W, OH, OW, K, stride, pad;
};

// The float32 channels_last taps of PB output pixels, kernel size K and stride S known at compile time, vector by
// vector of channels: a kernel row's (PB - 1) * S + K input vectors are each loaded once and used by every
// pixel whose window covers them (block_px loads PB * K for the same FMAs), the row's K weight vectors stay in
// registers, and columns outside the image are skipped. x and w: channel 0 of the first of the `rows` kernel rows
// inside the image (input column 0, kernel column 0). The sums of the C / L full channel vectors go to out after
// BN (times sc, plus sh; pixel p at out + p * osw); the caller applies the activation, so this compiles once per
// K, S, PB and EDGE, not per activation, and one call covers all channels. BN here rather than in the caller's
// pass saves that pass where there is no activation left (SiLU, applied in AVX-512 by the caller afterwards):
// efficientnet_b0 1.01-1.02x at batch 1 (in-process A/B, alternating forwards).
template <int K, int S, int PB, bool EDGE>
__attribute__((noinline)) void dw_taps_slide(const float* x, int64_t xsh, int64_t xsw, const float* w, int64_t C,
                                             int64_t rows, int64_t iw0, int64_t W, float* out, int64_t osw,
                                             const float* sc, const float* sh) {
  using V = Vectorized<float>;
  constexpr int64_t L = V::size();
  constexpr int J = (PB - 1) * S + K;  // input columns of the block
  for (int64_t c = 0; c + L <= C; c += L) {
    V a[PB];
#pragma GCC unroll 8
    for (int p = 0; p < PB; ++p) a[p] = V(0.f);
    for (int64_t kh = 0; kh < rows; ++kh) {
      const float* xr = x + kh * xsh + c;
      V wv[K];
#pragma GCC unroll 8
      for (int kw = 0; kw < K; ++kw) wv[kw] = V::loadu(w + (kh * K + kw) * C + c);
#pragma GCC unroll 32
      for (int j = 0; j < J; ++j) {
        const int64_t iw = iw0 + j;
        if (EDGE && (iw < 0 || iw >= W)) continue;
        const V xv = V::loadu(xr + iw * xsw);
#pragma GCC unroll 8
        for (int p = 0; p < PB; ++p)
          if (j - p * S >= 0 && j - p * S < K) a[p] = at::vec::fmadd(xv, wv[j - p * S], a[p]);
      }
    }
    const V vs = V::loadu(sc + c), vh = V::loadu(sh + c);
#pragma GCC unroll 8
    for (int p = 0; p < PB; ++p) at::vec::fmadd(a[p], vs, vh).store(out + p * osw + c);
  }
}

using TapsSlide = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, int64_t, int64_t, float*,
                           int64_t, const float*, const float*);
struct SlideTaps {
  int pb = 0;  // pixels per block of `wide`; 0: no sliding taps for this K and stride
  TapsSlide wide, wide_edge, four, four_edge;
  TapsSlide last[4];  // [p]: the last 1-3 pixels of a row, EDGE (the checks also cover interior pixels)
  TapsSlide seven = nullptr, seven_edge = nullptr;  // blocks of 7 pixels (pb 8 only)
};

// K 3/5/7, stride 1/2. Blocks of 8 pixels at stride 1 (one thread, interleaved A/B against block_px: 0.79-0.90x
// on the mobilenet/efficientnet dw shapes), of 4 at stride 2 (8 was slower there) and for K 7 (8 accumulators,
// 7 weights and an input would take all 16 registers).
template <int K, int S>
SlideTaps slide_taps_for() {
  constexpr int PB = S == 1 && K != 7 ? 8 : 4;
  SlideTaps t{PB,
              dw_taps_slide<K, S, PB, false>,
              dw_taps_slide<K, S, PB, true>,
              dw_taps_slide<K, S, 4, false>,
              dw_taps_slide<K, S, 4, true>,
              {nullptr, dw_taps_slide<K, S, 1, true>, dw_taps_slide<K, S, 2, true>, dw_taps_slide<K, S, 3, true>}};
  if constexpr (PB == 8) t.seven = dw_taps_slide<K, S, 7, false>, t.seven_edge = dw_taps_slide<K, S, 7, true>;
  return t;
}

inline SlideTaps slide_taps(int64_t K, int64_t stride) {
  switch (K * 10 + stride) {
    case 31: return slide_taps_for<3, 1>();
    case 32: return slide_taps_for<3, 2>();
    case 51: return slide_taps_for<5, 1>();
    case 52: return slide_taps_for<5, 2>();
    case 71: return slide_taps_for<7, 1>();
    case 72: return slide_taps_for<7, 2>();
    default: return {};
  }
}

// channels_last: x[n, ih, iw, c] at xs.n*n + xs.h*ih + xs.w*iw + c; y likewise with ys (c stride 1 both).
template <typename scalar_t, Act A, bool SUMS>
struct DwCL {
  using acc_t = acc_of<scalar_t>;
  using V = VecA<scalar_t>;
  static constexpr int64_t L = V::size();

  const scalar_t* x;
  Strides4 xs;
  const acc_t* w;  // (K*K, C)
  const acc_t* sc;
  const acc_t* sh;
  scalar_t* y;
  Strides4 ys;
  DwShape s;
  bool bf16_grade = false;  // the output ends in bfloat16: SiLU as silu512_bf16

  // One pixel's last cnt < L channels from c, taps [kh0, kh1) x [kw0, kw1) (the ones inside the image).
  inline void tail(const scalar_t* xb, scalar_t* yp, int64_t c, int64_t cnt, int64_t kh0, int64_t kh1, int64_t kw0,
                   int64_t kw1, int64_t ih0, int64_t iw0, acc_t* sums) const {
    V acc(acc_t(0));
    const int64_t C = s.C, K = s.K;
    for (int64_t kh = kh0; kh < kh1; ++kh) {
      const scalar_t* xr = xb + (ih0 + kh) * xs.h + c;
      const acc_t* wr = w + kh * K * C + c;
      for (int64_t kw = kw0; kw < kw1; ++kw)
        acc = at::vec::fmadd(vload(xr + (iw0 + kw) * xs.w, cnt), V::loadu(wr + kw * C, cnt), acc);
    }
    const V v = vact<A>(at::vec::fmadd(acc, V::loadu(sc + c, cnt), V::loadu(sh + c, cnt)));
    vstore(yp + c, v, cnt);
    if constexpr (SUMS) store_n(sums + c, V::loadu(sums + c, cnt) + vround<scalar_t>(v), cnt);
  }

  // PB output pixels (ow .. ow+PB-1) x NB channel vectors: each weight vector loaded once per tap for PB
  // pixels. EDGE: some taps fall left or right of the image; those read `zeros` (>= C zero values) instead.
  template <int PB, int NB, bool EDGE>
  inline void block_px(const scalar_t* xb, scalar_t* yp, int64_t c, int64_t kh0, int64_t kh1, int64_t ih0,
                       int64_t iw0, acc_t* sums, const scalar_t* zeros) const {
    V acc[PB][NB];
    for (int p = 0; p < PB; ++p)
      for (int b = 0; b < NB; ++b) acc[p][b] = V(acc_t(0));
    const int64_t C = s.C, K = s.K, xsw = xs.w;
    for (int64_t kh = kh0; kh < kh1; ++kh) {
      const scalar_t* xr = xb + (ih0 + kh) * xs.h + c;
      const acc_t* wr = w + kh * K * C + c;
      for (int64_t kw = 0; kw < K; ++kw) {
        V wv[NB];
        for (int b = 0; b < NB; ++b) wv[b] = V::loadu(wr + kw * C + b * L);
#pragma GCC unroll 4
        for (int p = 0; p < PB; ++p) {
          const int64_t iw = iw0 + p * s.stride + kw;
          const scalar_t* xq = xr + iw * xsw;
          if constexpr (EDGE) xq = (iw >= 0 && iw < s.W) ? xq : zeros + c;
#pragma GCC unroll 2
          for (int b = 0; b < NB; ++b) acc[p][b] = at::vec::fmadd(vload(xq + b * L), wv[b], acc[p][b]);
        }
      }
    }
    for (int b = 0; b < NB; ++b) {
      const int64_t cc = c + b * L;
      const V vs = V::loadu(sc + cc), vh = V::loadu(sh + cc);
      V tot(acc_t(0));
      for (int p = 0; p < PB; ++p) {
        V v = vact<A>(at::vec::fmadd(acc[p][b], vs, vh));
        vstore(yp + p * ys.w + cc, v);
        if constexpr (SUMS) tot = tot + vround<scalar_t>(v);
      }
      if constexpr (SUMS) (V::loadu(sums + cc) + tot).store(sums + cc);
    }
  }

  // The channels from c on (fewer than a vector) of npix pixels from iw0, pixel by pixel.
  inline void channel_tail(const scalar_t* xb, scalar_t* yp, int64_t c, int64_t npix, int64_t kh0, int64_t kh1,
                           int64_t ih0, int64_t iw0, acc_t* sums) const {
    for (int64_t p = 0; p < npix; ++p) {
      const int64_t iw = iw0 + p * s.stride;
      const int64_t kw0 = std::max<int64_t>(0, -iw), kw1 = std::min<int64_t>(s.K, s.W - iw);
      tail(xb, yp + p * ys.w, c, s.C - c, kh0, kh1, kw0, kw1, ih0, iw, sums);
    }
  }

  // float: PB pixels from ow through the sliding taps (the full channel vectors after BN into y), then the act
  // (and the sums) in place; the channel tail pixel by pixel.
  inline void pixels_slide(TapsSlide taps, int64_t PB, const scalar_t* xb, scalar_t* yp, int64_t kh0, int64_t kh1,
                           int64_t ih0, int64_t iw0, acc_t* sums) const {
    if constexpr (std::is_same_v<scalar_t, float>) {
      const int64_t C = s.C, K = s.K;
      taps(xb + (ih0 + kh0) * xs.h, xs.h, xs.w, w + kh0 * K * C, C, kh1 - kh0, iw0, s.W, yp, ys.w, sc, sh);
      int64_t c = 0;
      if constexpr (A == Act::Identity && !SUMS) c = C / L * L;  // nothing left to do on the full vectors
      for (; c + L <= C; c += L) {
        V tot(0.f);
        for (int64_t p = 0; p < PB; ++p) {
          const V v = vact<A>(V::loadu(yp + p * ys.w + c));
          v.store(yp + p * ys.w + c);
          if constexpr (SUMS) tot = tot + v;
        }
        if constexpr (SUMS) (V::loadu(sums + c) + tot).store(sums + c);
      }
      if (c < C) channel_tail(xb, yp, c, PB, kh0, kh1, ih0, iw0, sums);
    }
  }

  // PB pixels from ow: full channel vectors through block_px, the channel tail pixel by pixel.
  template <int PB, bool EDGE>
  inline void pixels(const scalar_t* xb, scalar_t* yp, int64_t kh0, int64_t kh1, int64_t ih0, int64_t iw0,
                     acc_t* sums, const scalar_t* zeros) const {
    const int64_t C = s.C;
    int64_t c = 0;
    for (; c + 2 * L <= C; c += 2 * L) block_px<PB, 2, EDGE>(xb, yp, c, kh0, kh1, ih0, iw0, sums, zeros);
    for (; c + L <= C; c += L) block_px<PB, 1, EDGE>(xb, yp, c, kh0, kh1, ih0, iw0, sums, zeros);
    if (c < C) channel_tail(xb, yp, c, PB, kh0, kh1, ih0, iw0, sums);
  }

  // output rows [r0, r1) of the flattened (n, oh); sums: this chunk's (N, C) partial sums.
  void rows(int64_t r0, int64_t r1, acc_t* sums) const {
    if constexpr (A == Act::SiLU && std::is_same_v<scalar_t, float>) {
      if (cpu_has_avx512f()) {
        // each row without the activation, then SiLU (and the sums) over it in AVX-512 while it is in cache:
        // efficientnet_b0 0.97-0.99x at batch 1 and 32 (both paths toggled every 6 forwards in one process)
        const DwCL<float, Act::Identity, false> linear{x, xs, w, sc, sh, y, ys, s};
        for (int64_t r = r0; r < r1; ++r) {
          linear.rows(r, r + 1, nullptr);
          const int64_t n = r / s.OH, oh = r % s.OH;
          silu_rows_avx512(y + n * ys.n + oh * ys.h, s.OW, s.C, ys.w, SUMS ? sums + n * s.C : nullptr, bf16_grade);
        }
        return;
      }
    }
    const int64_t C = s.C, K = s.K;
    static thread_local std::vector<scalar_t> zero_vec;
    if (static_cast<int64_t>(zero_vec.size()) < C) zero_vec.assign(C, scalar_t(0));
    const scalar_t* zeros = zero_vec.data();
    const SlideTaps slide = std::is_same_v<scalar_t, float> ? slide_taps(K, s.stride) : SlideTaps{};
    // interior columns: every kw tap inside the image
    const int64_t ow_lo = std::min<int64_t>(s.OW, (s.pad + s.stride - 1) / s.stride);
    const int64_t ow_hi = std::max<int64_t>(ow_lo, std::min<int64_t>(s.OW, (s.W - K + s.pad) / s.stride + 1));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / s.OH, oh = r % s.OH;
      const int64_t ih0 = oh * s.stride - s.pad;
      const int64_t kh0 = std::max<int64_t>(0, -ih0), kh1 = std::min<int64_t>(K, s.H - ih0);
      const scalar_t* xb = x + n * xs.n;
      acc_t* sn = SUMS ? sums + n * C : nullptr;
      // blocks of 4 pixels (then 2, 1), or with the sliding taps of slide.pb (then 4, then the last 1-3); blocks
      // reaching past the interior read zeros for the outside taps (the sliding taps skip them)
      // With blocks of 8: blocks of 8 and 7 where those cover the row (14 as 7 + 7, not 8 + 4 + 2; 7 as 7, not
      // 4 + 3), as the GEMM tiles' rows: a block's pixels are its independent FMA chains, and 2-4 of them wait
      // on the FMA latency. Bit-identical; in-process A/B at batch 1: efficientnet_b0 1.003-1.007x,
      // mobilenet_v2 1.001x, mobilenet_v3_large 1.005-1.007x, mobilenet_v3_small 1.018x.
      const int64_t blocks8 = (s.OW + 7) / 8;
      const int64_t eights = slide.seven && s.OW >= 7 * blocks8 ? s.OW - 7 * blocks8 : -1;  // -1: not so
      for (int64_t ow = 0, blk = 0; ow < s.OW; ++blk) {
        const int64_t rest = s.OW - ow;
        const int64_t pb = eights >= 0 ? (blk < eights ? 8 : 7)
                           : slide.pb ? (rest >= slide.pb ? slide.pb : std::min<int64_t>(rest, 4))
                                      : rest >= 4 ? 4 : rest >= 2 ? 2 : 1;
        const bool edge = ow < ow_lo || ow + pb > ow_hi;
        const int64_t iw0 = ow * s.stride - s.pad;
        scalar_t* yp = y + n * ys.n + oh * ys.h + ow * ys.w;
        if (slide.pb) {
          const TapsSlide taps = pb == slide.pb ? (edge ? slide.wide_edge : slide.wide)
                                 : pb == 7      ? (edge ? slide.seven_edge : slide.seven)
                                 : pb == 4      ? (edge ? slide.four_edge : slide.four)
                                                : slide.last[pb];
          pixels_slide(taps, pb, xb, yp, kh0, kh1, ih0, iw0, sn);
        } else if (pb == 4) {
          if (edge) pixels<4, true>(xb, yp, kh0, kh1, ih0, iw0, sn, zeros);
          else pixels<4, false>(xb, yp, kh0, kh1, ih0, iw0, sn, zeros);
        } else if (pb == 2) {
          pixels<2, true>(xb, yp, kh0, kh1, ih0, iw0, sn, zeros);
        } else {
          pixels<1, true>(xb, yp, kh0, kh1, ih0, iw0, sn, zeros);
        }
        ow += pb;
      }
    }
  }
};

template <typename scalar_t>
void dw_cl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& sc, const at::Tensor& sh, DwShape s,
           Act act, at::Tensor& out, at::Tensor* sums) {
  using acc_t = acc_of<scalar_t>;
  // (C, 1, K, K) -> (K*K, C) in the accumulate type
  const at::Tensor wp = dw_weight_kc(weight, sc.scalar_type());
  const Strides4 xs{x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const Strides4 ys{out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  const int64_t rows = s.N * s.OH;
  with_act(act, [&](auto A) {
    constexpr Act a = decltype(A)::value;
    if (sums == nullptr) {
      DwCL<scalar_t, a, false> k{x.const_data_ptr<scalar_t>(), xs, wp.const_data_ptr<acc_t>(),
                                 sc.const_data_ptr<acc_t>(), sh.const_data_ptr<acc_t>(), out.data_ptr<scalar_t>(),
                                 ys, s};
      const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, s.OW * s.C * s.K * s.K));
      at::parallel_for(0, rows, grain, [&](int64_t b, int64_t e) { k.rows(b, e, nullptr); });
    } else {
      DwCL<scalar_t, a, true> k{x.const_data_ptr<scalar_t>(), xs, wp.const_data_ptr<acc_t>(),
                                sc.const_data_ptr<acc_t>(), sh.const_data_ptr<acc_t>(), out.data_ptr<scalar_t>(),
                                ys, s};
      // Deterministic chunks (each with its own partial sums), reduced in chunk order.
      const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
      at::Tensor part = at::zeros({chunks, s.N, s.C}, sc.options());
      acc_t* pp = part.data_ptr<acc_t>();
      at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
        for (int64_t ch = b; ch < e; ++ch)
          k.rows(rows * ch / chunks, rows * (ch + 1) / chunks, pp + ch * s.N * s.C);
      });
      sums->copy_(part.sum(0));
    }
  });
}

#if FZ_AVX2
// out[k * 8 + j] = rows[j][k] for k < n, eight floats per k up to n rounded up to 8 (zeros past n: out must have
// the room); null rows read as zeros. A store per k instead left GCC a memcpy (rep movsq) per chunk.
inline void gather_lanes8(const float* const (&rows)[8], int64_t n, float* out) {
  for (int64_t k = 0; k < n; k += 8) {
    const int64_t m = std::min<int64_t>(8, n - k);
    __m256 r[8];
    for (int j = 0; j < 8; ++j)
      r[j] = !rows[j] ? _mm256_setzero_ps() : m == 8 ? _mm256_loadu_ps(rows[j] + k) : load_n(rows[j] + k, m);
    transpose8(r);
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(out + (k + i) * 8, r[i]);
  }
}

// PX (7 or 8) pixels of an output row of eight channels, from the zero-padded channels_last scratch x (input
// row 0 of the taps, rows pw pixels apart; pixels past the row read its zero padding and are not stored back):
// act(taps * vs + vh) into y. Input column by input column: each input vector is loaded once per kernel row and
// used by every (pixel, kernel column) pair that reads it, the kernel row's K weight vectors in registers (PX + K
// + 1 <= 16). Kernel rows outside the image are skipped (only [kh0, kh1) run), and so are the padding columns
// where the call starts a row (L) or, at stride 1, ends one (R): they read zeros.
template <int K, int S, int PX, bool L, bool R>
__attribute__((noinline)) void taps8_row(const float* x, int64_t pw, const float* wk, int kh0, int kh1, __m256 vs,
                                         __m256 vh, Act act, float* y) {
  constexpr int pad = K / 2, NI = (PX - 1) * S + K;
  static_assert(!R || S == 1, "the right padding is skipped at stride 1");
  __m256 acc[PX];
#pragma GCC unroll 8
  for (int p = 0; p < PX; ++p) acc[p] = _mm256_setzero_ps();
  for (int kh = kh0; kh < kh1; ++kh) {
    const float* xr = x + kh * pw * 8;
    __m256 w[K];
#pragma GCC unroll 7
    for (int kw = 0; kw < K; ++kw) w[kw] = _mm256_loadu_ps(wk + (kh * K + kw) * 8);
#pragma GCC unroll 32
    for (int i = 0; i < NI; ++i) {
      if ((L && i < pad) || (R && i >= NI - pad)) continue;
      const __m256 v = _mm256_loadu_ps(xr + i * 8);
#pragma GCC unroll 7
      for (int kw = 0; kw < K; ++kw) {
        const int d = i - kw;  // pixel d / S reads input column i with kernel column kw
        if (d >= 0 && d % S == 0 && d / S < PX) acc[d / S] = _mm256_fmadd_ps(v, w[kw], acc[d / S]);
      }
    }
  }
  with_act(act, [&](auto A) {
#pragma GCC unroll 8
    for (int p = 0; p < PX; ++p)
      _mm256_storeu_ps(y + p * 8, vact<decltype(A)::value>(Vectorized<float>(_mm256_fmadd_ps(acc[p], vs, vh))));
  });
}

// taps8_row with its edge flags l and r chosen at run time (r at stride 1 only)
template <int K, int S, int PX>
inline void taps8_call(bool l, bool r, const float* x, int64_t pw, const float* wk, int kh0, int kh1, __m256 vs,
                       __m256 vh, Act act, float* y) {
  constexpr bool R = S == 1;
  if (l && r) taps8_row<K, S, PX, true, R>(x, pw, wk, kh0, kh1, vs, vh, act, y);
  else if (l) taps8_row<K, S, PX, true, false>(x, pw, wk, kh0, kh1, vs, vh, act, y);
  else if (r) taps8_row<K, S, PX, false, R>(x, pw, wk, kh0, kh1, vs, vh, act, y);
  else taps8_row<K, S, PX, false, false>(x, pw, wk, kh0, kh1, vs, vh, act, y);
}

// NCHW float32 through channel groups: the plane kernel fills 7 of its 8 lanes on 7- and 14-wide rows, and on 7x7
// planes each output row is one chain of K*K dependent FMAs. Here eight channels of an image at a time are
// turned channels_last in a zero-padded scratch (8x8 transposes in registers), a channel per lane and an
// accumulator per output pixel, and each output row turned back. x and y contiguous.
struct DwGroups {
  const float *x, *weight, *sc, *sh;
  float* y;
  int64_t C, H, W, OH, OW, pad;
  int64_t pw, ph;  // the scratch's padded width and height: every cell the taps read, the image at (pad, pad)
  int64_t owp;     // a row's pixels rounded up to the taps calls'
  Act act;
};

// A task's scratch, offsets in floats: the padded input (ph x pw pixels of 8 channels), then one output row
// (owp + 8 pixels: the back transpose reads whole chunks of 8), the weights ((K*K + 8) x 8: gather_lanes8
// writes whole chunks), the staged output planes (8 x OH*OW, + 8 for the last whole-vector read).
struct GroupScratch {
  int64_t ty, wk, tz, size;
  GroupScratch(const DwGroups& g, int64_t KK)
      : ty(g.ph * g.pw * 8), wk(ty + (g.owp + 8) * 8), tz(wk + (KK + 8) * 8), size(tz + 8 * g.OH * g.OW + 8) {}
};

// Task t's image n and first channel c0 (cnt channels of 8 there), its weights gathered into wk as (K*K, 8), and
// its BN scale and shift as vectors (zero in the lanes past cnt).
struct GroupOf {
  int64_t n, c0, cnt;
  __m256 vs, vh;
  GroupOf(const DwGroups& g, int64_t t, int64_t KK, float* wk) {
    const int64_t G = (g.C + 7) / 8;
    n = t / G;
    c0 = t % G * 8;
    cnt = std::min<int64_t>(8, g.C - c0);
    const float* rows[8];
    alignas(32) float scg[8], shg[8];
    for (int j = 0; j < 8; ++j) {
      rows[j] = j < cnt ? g.weight + (c0 + j) * KK : nullptr;
      scg[j] = j < cnt ? g.sc[c0 + j] : 0.f;
      shg[j] = j < cnt ? g.sh[c0 + j] : 0.f;
    }
    gather_lanes8(rows, KK, wk);
    vs = _mm256_load_ps(scg);
    vh = _mm256_load_ps(shg);
  }
};

// Task t: image t / G, channels 8 * (t % G) on. g by value: a local copy, not reloaded after every store (the
// extension builds with -fno-strict-aliasing).
template <int K, int S, int PX>
void dw_group_task(const DwGroups g, int64_t t, float* buf) {
  constexpr int64_t KK = K * K;
  const int64_t G = (g.C + 7) / 8, HW = g.H * g.W, OHW = g.OH * g.OW;
  // the next task's planes (contiguous; after an image's last group, the next image's first), S input rows of
  // each per output row: batch 32, 1152x7x7 k3 0.61x, 576x7x7 k5 0.92x, 384x14x14 k3 (prefetched at once, not
  // spread) 0.81x (in-process A/Bs)
  const int64_t next_plane = (t + 1) / G * g.C + (t + 1) % G * 8;
  const float* next = g.x + next_plane * HW;
  const GroupScratch sl(g, KK);
  float *tx = buf, *ty = buf + sl.ty, *wk = buf + sl.wk;
  // Small output planes are staged in the scratch and copied out in one run: batch 32, 14x14 0.73-0.81x,
  // 7x7 0.92-1.02x; staged, rows of 28 and 56 were 1.07-1.20x slower (in-process A/Bs).
  float* tz = buf + sl.tz;
  const bool stage = OHW <= 256;
  const GroupOf gr(g, t, KK, wk);
  const int64_t n = gr.n, c0 = gr.c0, cnt = gr.cnt;
  const float* rows[8];
  const float* xn = g.x + (n * g.C + c0) * HW;
  for (int64_t ih = 0; ih < g.H; ++ih) {
    for (int j = 0; j < 8; ++j) rows[j] = j < cnt ? xn + j * HW + ih * g.W : nullptr;
    gather_lanes8(rows, g.W, tx + ((ih + g.pad) * g.pw + g.pad) * 8);
  }
  const __m256 vs = gr.vs, vh = gr.vh;
  float *yn = g.y + (n * g.C + c0) * OHW, *ynext = g.y + next_plane * OHW;
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    {
      const int64_t r0 = oh * S, r1 = oh + 1 == g.OH ? g.H : std::min(g.H, r0 + S);
      for (int j = 0; j < 8; ++j)
        for (int64_t o = r0 * g.W; o < r1 * g.W; o += 16) __builtin_prefetch(next + j * HW + o, 0, 3);
      // and, staged, the next task's output for writing: interleaved with eager calls, batch 32, 96x28x28 s2
      // 0.93x, 576x7x7 k5 0.95x; unstaged, the wide rows ran 1.06-1.14x slower with it
      if (stage)
        for (int64_t o = oh * 8 * g.OW; o < (oh + 1) * 8 * g.OW; o += 16) __builtin_prefetch(ynext + o, 1, 3);
    }
    const int kh0 = static_cast<int>(std::max<int64_t>(0, g.pad - oh * S));
    const int kh1 = static_cast<int>(std::min<int64_t>(K, g.H + g.pad - oh * S));
    for (int64_t ow = 0; ow < g.OW; ow += PX) {
      // the padding columns are skipped where they are the taps' first or (stride 1) last pad columns
      const bool l = ow == 0 && g.pad == K / 2, r = S == 1 && ow + PX == g.OW && g.pad == K / 2;
      taps8_call<K, S, PX>(l, r, tx + (oh * S * g.pw + ow * S) * 8, g.pw, wk, kh0, kh1, vs, vh, g.act, ty + ow * 8);
    }
    for (int64_t p = 0; p < g.OW; p += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(ty + (p + i) * 8);
      transpose8(r);
      // a whole vector where it ends inside the plane (the pixels after it, stored later, overwrite the spill)
      const int64_t m = std::min<int64_t>(8, g.OW - p), at = oh * g.OW + p;
      const bool whole = at + 8 <= OHW;
      for (int64_t j = 0; j < cnt; ++j) {
        float* dst = (stage ? tz : yn) + j * OHW + at;
        if (whole) _mm256_storeu_ps(dst, r[j]);
        else store_n(dst, Vectorized<float>(r[j]), m);
      }
    }
  }
  if (stage) std::memcpy(yn, tz, cnt * OHW * sizeof(float));
}

// Small planes whose rows are whole taps calls at stride 1 (output rows a multiple of 7 wide, padding K/2): the
// calls skip every padding row and column, so the scratch holds the image alone, and the eight planes turn
// channels_last and back as flat runs of H*W floats (8x8 transposes that do not stop at a row's end), the output
// straight into y.
struct FlatScratch {
  int64_t margin, tz, wk, size;  // the taps' base pointer of the first row lies margin floats before the image
  FlatScratch(const DwGroups& g, int64_t KK)
      : margin((g.pad * g.W + g.pad) * 8),
        tz(margin + (g.H * g.W + 7) / 8 * 64),
        wk(tz + (g.OH * g.OW + 7) / 8 * 64),
        size(wk + (KK + 8) * 8) {}
};

inline bool dw_groups_flat(const DwGroups& g, int64_t K, int64_t S) {
  return S == 1 && g.pad == K / 2 && g.OW % 7 == 0 && g.OH * g.OW <= 256;
}

template <int K>
void dw_group_task_flat(const DwGroups g, int64_t t, float* buf) {
  constexpr int64_t KK = K * K;
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  const FlatScratch sl(g, KK);
  float *tx = buf + sl.margin, *tz = buf + sl.tz, *wk = buf + sl.wk;
  const GroupOf gr(g, t, KK, wk);
  const int64_t cnt = gr.cnt;
  const float* xn = g.x + (gr.n * g.C + gr.c0) * HW;
  const float* rows[8];
  for (int j = 0; j < 8; ++j) rows[j] = j < cnt ? xn + j * HW : nullptr;
  gather_lanes8(rows, HW, tx);
  // the next eight planes on, to read, and their output, to write (the next task's, where C is a multiple of 8)
  const float* next = xn + 8 * HW;
  float* yn = g.y + (gr.n * g.C + gr.c0) * OHW;
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    for (int64_t o = oh * 8 * HW / g.OH; o < (oh + 1) * 8 * HW / g.OH; o += 16) __builtin_prefetch(next + o, 0, 3);
    for (int64_t o = oh * 8 * OHW / g.OH; o < (oh + 1) * 8 * OHW / g.OH; o += 16)
      __builtin_prefetch(yn + 8 * OHW + o, 1, 3);
    const int kh0 = static_cast<int>(std::max<int64_t>(0, g.pad - oh));
    const int kh1 = static_cast<int>(std::min<int64_t>(K, g.H + g.pad - oh));
    const float* xr = tx + ((oh - g.pad) * g.W - g.pad) * 8;
    float* yr = tz + oh * g.OW * 8;
    for (int64_t ow = 0; ow < g.OW; ow += 7)
      taps8_call<K, 1, 7>(ow == 0, ow + 7 == g.OW, xr + ow * 8, g.W, wk, kh0, kh1, gr.vs, gr.vh, g.act,
                          yr + ow * 8);
  }
  for (int64_t k = 0; k < OHW; k += 8) {
    __m256 r[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tz + (k + i) * 8);
    transpose8(r);
    const int64_t m = std::min<int64_t>(8, OHW - k);
    for (int64_t j = 0; j < cnt; ++j) {
      if (m == 8) _mm256_storeu_ps(yn + j * OHW + k, r[j]);
      else store_n(yn + j * OHW + k, Vectorized<float>(r[j]), m);
    }
  }
}

template <int K, int S>
void dw_nchw_groups_ks(const float* x, const float* weight, const float* sc, const float* sh, float* y,
                       const DwShape& s, Act act) {
  // pixels per taps call: 7 where they divide the row (14 spilled accumulators: 1.7-2.7x slower), else 8 (the
  // last block of a row reading padding)
  const int64_t PX = s.OW % 7 == 0 ? 7 : 8, OWP = (s.OW + PX - 1) / PX * PX;
  const int64_t pw = std::max({s.W + 2 * s.pad, (OWP - 1) * S + K, s.pad + (s.W + 7) / 8 * 8});
  const int64_t ph = std::max(s.H + 2 * s.pad, (s.OH - 1) * S + K);
  const DwGroups g{x, weight, sc, sh, y, s.C, s.H, s.W, s.OH, s.OW, s.pad, pw, ph, OWP, act};
  const bool flat = dw_groups_flat(g, K, S);
  const auto task = flat ? dw_group_task_flat<K> : PX == 7 ? dw_group_task<K, S, 7> : dw_group_task<K, S, 8>;
  // runs of tasks of at least ~64K multiply-adds
  const int64_t tasks = s.N * ((s.C + 7) / 8);
  const int64_t per = items_per_task(tasks, (65536 + 8 * s.OH * s.OW * K * K - 1) / (8 * s.OH * s.OW * K * K));
  const int64_t scratch = flat ? FlatScratch(g, K * K).size : GroupScratch(g, K * K).size;
  parallel_tasks((tasks + per - 1) / per, [&] {
    // the padding is zeroed once: each task rewrites the same image cells
    return [&, buf = std::vector<float>(scratch, 0.f)](int64_t r) mutable {
      for (int64_t t = r * per; t < std::min(tasks, (r + 1) * per); ++t) task(g, t, buf.data());
    };
  });
}

void dw_nchw_channel_groups(const float* x, const float* weight, const float* sc, const float* sh, float* y,
                            const DwShape& s, Act act) {
  auto run = [&](auto KS) {
    constexpr int k = decltype(KS)::value / 10, stride = decltype(KS)::value % 10;
    dw_nchw_groups_ks<k, stride>(x, weight, sc, sh, y, s, act);
  };
  switch (s.K * 10 + s.stride) {
    case 31: return run(std::integral_constant<int, 31>{});
    case 32: return run(std::integral_constant<int, 32>{});
    case 51: return run(std::integral_constant<int, 51>{});
    case 52: return run(std::integral_constant<int, 52>{});
    case 71: return run(std::integral_constant<int, 71>{});
    case 72: return run(std::integral_constant<int, 72>{});
    default: TORCH_CHECK(false, "dw_nchw_channel_groups: K ", s.K, " stride ", s.stride);
  }
}
#endif

// Where the channel groups run instead of the NCHW planes. In-process A/Bs, 2 threads, the op in a loop, time
// with groups / with planes: 7x7 outputs batch 1 0.59-0.88x, batch 32 0.62-0.88x (576x7x7 k5, 960x7x7 k3,
// 1152x7x7 k3/k5, 96x7x7 k5, 672x14x14 k5 s2, 240x14x14 k3 s2); rows of 28 and 56 batch 1 0.83-0.96x, batch 32
// 0.59-0.95x; 14-wide rows batch 1 0.63-0.84x, batch 32 stride 2 0.81-0.89x, but stride 1 1.13-1.31x slower
// (240x14x14 k5, 384/480x14x14 k3, 672x14x14 k5), so those stay on the planes once the input outgrows L2; and
// with few groups to share out (16x112x112 s2 and 20x7x7 at batch 1: 1.16x, 1.52x) the planes win too.
inline bool dw_nchw_use_groups(const at::Tensor& x, const DwShape& s) {
  if (!FZ_AVX2 || x.scalar_type() != at::kFloat || !x.is_contiguous() || s.C < 8) return false;
  if ((s.K != 3 && s.K != 5 && s.K != 7) || s.N * ((s.C + 7) / 8) < 4 * at::get_num_threads()) return false;
  const bool narrow_rows = s.OW > 8 && s.OW < 28 && s.stride == 1;
  return !narrow_rows || x.numel() * static_cast<int64_t>(sizeof(float)) <= (int64_t{1} << 20);
}

#if FZ_AVX2
// dst[0:roundup(n, 8)] = x[0:n] then zeros: whole-vector stores (a 7-float row in scalars was a seventh of a
// 7x7 plane's time), the tail by a masked load. dst must have the room.
inline void copy_row_zero_tail(const float* x, int64_t n, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, _mm256_loadu_ps(x + k));
  if (k < n) _mm256_storeu_ps(dst + k, load_n(x + k, n - k));
}

// even[k] = x[2k], odd[k] = x[2k + 1] for the W floats of x, then zeros up to a multiple of 8 (the scalar
// tail was most of a 28-wide row's time): even and odd must have the room.
inline void deinterleave_row(const float* x, int64_t W, float* even, float* odd) {
  for (int64_t k = 0; 2 * k < W; k += 8) {
    const bool whole = 2 * k + 16 <= W;
    const __m256 a = whole ? _mm256_loadu_ps(x + 2 * k) : load_n(x + 2 * k, W - 2 * k);
    const __m256 b = whole ? _mm256_loadu_ps(x + 2 * k + 8) : load_n(x + 2 * k + 8, W - 2 * k - 8);
    // per 128-bit half: [a0 a2 b0 b2 | a4 a6 b4 b6]; the 64-bit permute puts a's pairs before b's
    const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)), o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    _mm256_storeu_ps(even + k, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0))));
    _mm256_storeu_ps(odd + k, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0))));
  }
}
#endif

// NCHW output (contiguous); any input strides. Each thread packs a plane into its own zero-padded acc
// scratch (columns split by phase, j % stride, so stride-2 taps are unit-stride loads); only the image cells
// are rewritten per plane, so the padding is zeroed once per thread. Output rows are vectorized over W in
// blocks of up to 2 rows x 4 vectors (4 rows x 2 on narrow planes, 8 x 1 on 7x7): eight independent
// accumulators keep both FMA pipes busy. The stride S and, when it is 3, 5 or 7, the kernel size KT (0: read
// K) are constants: the tap offsets divide by S, and with a run-time tap loop the compiler kept the
// accumulators on the stack, a store-to-load chain per FMA (576x7x7 k5 ran at a fifth of its FMA rate). The
// unrolled taps are instantiated per accumulate type, stride and kernel size only, not per activation and
// storage type too (which made this file a 16-minute, 300 MB compile): the activation is a run-time switch
// per block, and the 16-bit types go through an acc_t plane.
template <typename acc_t, int S, int KT>
struct DwTaps {
  using V = Vectorized<acc_t>;
  static constexpr int64_t L = V::size();
  static constexpr int64_t kMaxVectors = 4;  // per output row and block
  int64_t K, RW, OH, OW;  // RW: width of one phase row of the scratch
  Act act;  // applied by the taps' epilogue

  // R output rows from oh, NB vectors from ow; the last vector holds `last` (<= L) columns.
  template <int R, int NB>
  inline void block(const acc_t* buf, const acc_t* wc, acc_t vsc, acc_t vsh, acc_t* z, int64_t oh, int64_t ow,
                    int64_t last) const {
    const int64_t k = KT ? KT : K;
    // Fewer than 8 accumulators cannot cover the FMA latency: then even and odd kernel rows sum apart.
    constexpr int P = (KT && R * NB <= 4) ? 2 : 1;
    V acc[P][R][NB];
    for (int p = 0; p < P; ++p)
      for (int r = 0; r < R; ++r)
        for (int b = 0; b < NB; ++b) acc[p][r][b] = V(acc_t(0));
    // Kernel column by kernel column: its K weights stay in registers, and each of the (R - 1) * S + K input
    // rows the block reads is loaded once and used by every output row it is a tap of. Tap by tap (a load per
    // FMA), GCC merged the repeated loads of a row and spilled them to the stack: this order ran 240x14x14 k5
    // and 576x7x7 k5 0.89-0.92x, the 14x14 k3 planes 0.94x, the rest 0.97-1.04x (in-process A/B, 2 threads).
    const int64_t rows = (R - 1) * S + k;
#pragma GCC unroll 7
    for (int64_t kw = 0; kw < k; ++kw) {
      V wv[KT ? KT : 1];
      if constexpr (KT != 0) {
#pragma GCC unroll 7
        for (int kh = 0; kh < KT; ++kh) wv[kh] = V(wc[kh * k + kw]);
      }
      const acc_t* q = buf + oh * S * S * RW + (kw % S) * RW + kw / S + ow;
#pragma GCC unroll 16
      for (int64_t t = 0; t < rows; ++t, q += S * RW) {
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b) {
          const V xv = V::loadu(q + b * L);
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) {
            const int64_t kh = t - r * S;
            if (kh < 0 || kh >= k) continue;
            V wk;
            if constexpr (KT != 0) wk = wv[kh];
            else wk = V(wc[kh * k + kw]);
            acc[kh % P][r][b] = at::vec::fmadd(xv, wk, acc[kh % P][r][b]);
          }
        }
      }
    }
    const V vs(vsc), vh(vsh);
    // a switch per block, not an activation template parameter: the taps are compiled once for all of them
    with_act(act, [&](auto A) {
      for (int r = 0; r < R; ++r) {
        acc_t* zr = z + (oh + r) * OW + ow;
        for (int b = 0; b < NB; ++b) {
          V sum = acc[0][r][b];
          if constexpr (P == 2) sum = sum + acc[1][r][b];
          const V v = vact<decltype(A)::value>(at::vec::fmadd(sum, vs, vh));
          // A row's partial last vector is stored whole where the row is one block wide and the vector ends
          // inside the plane: what it writes past the row belongs to later rows, stored after it. In-process
          // A/B, batch 32: 576x7x7 k5 0.90-0.97x, 240x14x14 k5 0.95-0.96x, the other shapes 0.95-1.06x (noise).
          const bool whole = OW <= kMaxVectors * L && (oh + r) * OW + ow + (b + 1) * L <= OH * OW;
          if (b == NB - 1 && last < L && !whole) store_n(zr + b * L, v, last);
          else v.store(zr + b * L);
        }
      }
    });
  }

  template <int R>
  inline void row_block(const acc_t* buf, const acc_t* wc, acc_t vsc, acc_t vsh, acc_t* z, int64_t oh) const {
    for (int64_t ow = 0; ow < OW; ow += kMaxVectors * L) {
      const int64_t cols = std::min<int64_t>(kMaxVectors * L, OW - ow);
      const int64_t nb = (cols + L - 1) / L, last = cols - (nb - 1) * L;
      switch (nb) {
        case 4: block<R, 4>(buf, wc, vsc, vsh, z, oh, ow, last); break;
        case 3: block<R, 3>(buf, wc, vsc, vsh, z, oh, ow, last); break;
        case 2: block<R, 2>(buf, wc, vsc, vsh, z, oh, ow, last); break;
        default: block<R, 1>(buf, wc, vsc, vsh, z, oh, ow, last); break;
      }
    }
  }

  // z (OH x OW) = act(conv(buf, wc) * vsc + vsh)
  void plane(const acc_t* buf, const acc_t* wc, acc_t vsc, acc_t vsh, acc_t* z) const {
    int64_t oh = 0;
    if (OW <= L) {  // one vector per row (7x7): up to 8 rows at once, each its own accumulator
      for (; oh < OH; oh += 8) {
        switch (std::min<int64_t>(8, OH - oh)) {
          case 8: block<8, 1>(buf, wc, vsc, vsh, z, oh, 0, OW); break;
          case 7: block<7, 1>(buf, wc, vsc, vsh, z, oh, 0, OW); break;
          case 6: block<6, 1>(buf, wc, vsc, vsh, z, oh, 0, OW); break;
          case 5: block<5, 1>(buf, wc, vsc, vsh, z, oh, 0, OW); break;
          case 4: block<4, 1>(buf, wc, vsc, vsh, z, oh, 0, OW); break;
          case 3: block<3, 1>(buf, wc, vsc, vsh, z, oh, 0, OW); break;
          case 2: block<2, 1>(buf, wc, vsc, vsh, z, oh, 0, OW); break;
          default: block<1, 1>(buf, wc, vsc, vsh, z, oh, 0, OW); break;
        }
      }
      return;
    }
    if (OW <= 2 * L)  // narrow planes: 4 rows for 8 accumulators
      for (; oh + 4 <= OH; oh += 4) row_block<4>(buf, wc, vsc, vsh, z, oh);
    for (; oh + 2 <= OH; oh += 2) row_block<2>(buf, wc, vsc, vsh, z, oh);
    if (oh < OH) row_block<1>(buf, wc, vsc, vsh, z, oh);
  }
};

// y[0:n] = act(z[0:n]), z in the accumulate type (y may alias z).
template <Act A, typename scalar_t>
void act_span(const acc_of<scalar_t>* z, scalar_t* y, int64_t n) {
  using V = VecA<scalar_t>;
  constexpr int64_t L = V::size();
  int64_t i = 0;
  for (; i + L <= n; i += L) vstore(y + i, vact<A>(V::loadu(z + i)));
  if (i < n) vstore(y + i, vact<A>(vload(z + i, n - i)), n - i);
}

template <typename scalar_t, int S>
void pack_plane(const scalar_t* xb, Strides4 xs, const DwShape& s, int64_t RW, acc_of<scalar_t>* buf) {
  using acc_t = acc_of<scalar_t>;
  const int64_t W = s.W, pad = s.pad, sxw = xs.w;
  for (int64_t ih = 0; ih < s.H; ++ih) {
    acc_t* row = buf + (ih + pad) * S * RW;
    const scalar_t* xr = xb + ih * xs.h;
#if FZ_AVX2
    // whole-vector row copies (RW leaves them the room; what they write past the row is zero, as the padding)
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (sxw == 1 && S == 2) {  // the scalar stride-2 gather was most of a 112x112 plane's time
        deinterleave_row(xr, W, row + (pad & 1) * RW + pad / 2, row + ((pad + 1) & 1) * RW + (pad + 1) / 2);
        continue;
      }
      if (sxw == 1 && S == 1) {
        copy_row_zero_tail(xr, W, row + pad);
        continue;
      }
    }
#endif
    for (int64_t p = 0; p < S; ++p) {
      const int64_t iw0 = ((p - pad) % S + S) % S;  // first column whose padded index is in phase p
      if (iw0 >= W) continue;
      acc_t* dst = row + p * RW + (iw0 + pad) / S;
      const scalar_t* src = xr + iw0 * sxw;
      const int64_t n = (W - iw0 + S - 1) / S, step = S * sxw;
      if (step == 1)
        for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<acc_t>(src[k]);
      else if (step == 2)
        for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<acc_t>(src[2 * k]);
      else
        for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<acc_t>(src[k * step]);
    }
  }
}

template <typename scalar_t, int S, int KT>
void dw_nchw_planes(const scalar_t* x, Strides4 xs, const acc_of<scalar_t>* w, const acc_of<scalar_t>* sc,
                    const acc_of<scalar_t>* sh, scalar_t* y, const DwShape& s, int64_t RW, Act act) {
  using acc_t = acc_of<scalar_t>;
  constexpr bool in_place = std::is_same_v<scalar_t, acc_t>;  // the taps write straight into y
  // float: the taps apply the activation and write y; else they write acc_t planes, which act_span converts
  // per group of consecutive planes (contiguous in y): per 7x7 plane, its tail handling cost as much as
  // its arithmetic
  const DwTaps<acc_t, S, KT> taps{s.K, RW, s.OH, s.OW, in_place ? act : Act::Identity};
  const int64_t plane_size = (s.H + 2 * s.pad) * S * RW, out_size = s.OH * s.OW;
  const int64_t group = in_place ? 1 : std::max<int64_t>(1, 2048 / out_size);
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, out_size * s.K * s.K));
  // Small planes with unit-stride rows fetch the input plane four ahead while this one runs (the hardware
  // prefetcher left the packing waiting on memory): batch 32, 14x14 and 28x28 planes 0.84-0.96x, 7x7 and
  // batch 1 unchanged (in-process A/B, 2 threads). Not for larger planes, where the prefetched plane evicted
  // the current one's rows (144x56x56 1.13x slower).
  const int64_t ahead = xs.w == 1 && s.H * s.W * static_cast<int64_t>(sizeof(scalar_t)) <= 4096 ? 4 : 0;
  // plane i of the N*C; evenly spaced planes (contiguous NCHW) without the two divisions (3% of a 7x7 plane)
  const bool even = xs.n == s.C * xs.c;
  auto input_plane = [&](int64_t i) { return even ? x + i * xs.c : x + i / s.C * xs.n + i % s.C * xs.c; };
  const int64_t buf_size = plane_size + (in_place ? 0 : group * out_size);
  auto planes = [&](int64_t b, int64_t e, std::vector<acc_t>& buf) {
    int64_t c = b % s.C;  // the channel of plane i, counted along
    for (int64_t g = b; g < e; g += group) {
      const int64_t g_end = std::min(e, g + group);
      acc_t* zg;
      if constexpr (in_place) zg = y + g * out_size;
      else zg = buf.data() + plane_size;
      for (int64_t i = g; i < g_end; ++i, c = c + 1 == s.C ? 0 : c + 1) {
        if (ahead && i + ahead < e) {
          const scalar_t* q = input_plane(i + ahead);
          for (int64_t ih = 0; ih < s.H; ++ih)
            for (int64_t o = 0; o < s.W; o += 64 / static_cast<int64_t>(sizeof(scalar_t)))
              __builtin_prefetch(q + ih * xs.h + o, 0, 3);
        }
        pack_plane<scalar_t, S>(input_plane(i), xs, s, RW, buf.data());
        taps.plane(buf.data(), w + c * s.K * s.K, sc[c], sh[c], zg + (i - g) * out_size);
      }
      if (!in_place)
        with_act(act, [&](auto A) { act_span<decltype(A)::value>(zg, y + g * out_size, (g_end - g) * out_size); });
    }
  };
  // About eight runs of planes per thread, taken with work stealing (parallel_tasks): one run per thread
  // (at::parallel_for) left a thread waiting whenever the other was held up. In-process A/B, 2 threads, the op
  // in a loop, the eight bench shapes: batch 32 0.82-1.01x and 0.85-1.07x (two runs), batch 1 0.90-1.03x.
  const int64_t NC = s.N * s.C, per = items_per_task(NC, grain);
  parallel_tasks((NC + per - 1) / per, [&] {
    return [&, buf = std::vector<acc_t>(buf_size, acc_t(0))](int64_t t) mutable {
      planes(t * per, std::min(NC, (t + 1) * per), buf);
    };
  });
}

template <typename scalar_t>
void dw_nchw(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& sc, const at::Tensor& sh, DwShape s,
             Act act, at::Tensor& out) {
  using acc_t = acc_of<scalar_t>;
  constexpr int64_t L = VecA<scalar_t>::size();
  const at::Tensor wa = weight.reshape({s.C, s.K * s.K}).to(sc.scalar_type()).contiguous();
  const auto round_up = [](int64_t v) { return (v + L - 1) / L * L; };
  // a phase row holds the taps of the widest output block, and pack_plane's whole vectors from the row's
  // first image cell
  const int64_t RW = std::max(round_up(s.OW) + (s.K - 1) / s.stride + 1,
                              (s.pad + s.stride - 1) / s.stride + round_up((s.W + s.stride - 1) / s.stride));
  const Strides4 xs{x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const acc_t *wp = wa.const_data_ptr<acc_t>(), *scp = sc.const_data_ptr<acc_t>(), *shp = sh.const_data_ptr<acc_t>();
  scalar_t* yp = out.data_ptr<scalar_t>();
  auto run = [&](auto S, auto KT) {
    dw_nchw_planes<scalar_t, decltype(S)::value, decltype(KT)::value>(xp, xs, wp, scp, shp, yp, s, RW, act);
  };
  auto run_k = [&](auto S) {
    using I = std::integral_constant<int, 0>;
    if constexpr (std::is_same_v<acc_t, float>) {  // double (fp64) keeps the run-time kernel size
      switch (s.K) {
        case 3: return run(S, std::integral_constant<int, 3>{});
        case 5: return run(S, std::integral_constant<int, 5>{});
        case 7: return run(S, std::integral_constant<int, 7>{});
      }
    }
    run(S, I{});
  };
  if (s.stride == 1) run_k(std::integral_constant<int, 1>{});
  else run_k(std::integral_constant<int, 2>{});
}

}  // namespace

void dw_rows_f32(const float* x, Strides4 xs, const float* wkc, const float* sc, const float* sh, float* y,
                 Strides4 ys, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t K, int64_t stride,
                 int64_t pad, Act act, int64_t oh0, int64_t oh1, float* sums, bool bf16_grade) {
  const DwShape s{1, C, H, W, OH, OW, K, stride, pad};
  with_act(act, [&](auto A) {
    constexpr Act a = decltype(A)::value;
    if (sums) DwCL<float, a, true>{x, xs, wkc, sc, sh, y, ys, s, bf16_grade}.rows(oh0, oh1, sums);
    else DwCL<float, a, false>{x, xs, wkc, sc, sh, y, ys, s, bf16_grade}.rows(oh0, oh1, nullptr);
  });
}

bool dw_fast(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale_acc,
             const at::Tensor& shift_acc, int64_t stride, int64_t pad, Act act, at::Tensor& out,
             at::Tensor* sums) {
  const int64_t K = weight.size(3);
  DwShape s{x.size(0), x.size(1), x.size(2), x.size(3), out.size(2), out.size(3), K, stride, pad};
  const bool cl = (x.stride(1) == 1 || s.C == 1) && (out.stride(1) == 1 || s.C == 1);
  const bool nchw_out = out.is_contiguous();
  if (!cl && (sums != nullptr || !nchw_out)) return false;
  if (!cl && dw_nchw_rows512_applies(x, K, stride, pad)) {
    dw_nchw_rows512(x, weight, scale_acc.const_data_ptr<float>(), shift_acc.const_data_ptr<float>(), stride, act,
                    out);
    return true;
  }
  const bool groups = !cl && dw_nchw_use_groups(x, s);
  const at::Tensor w = groups ? weight.contiguous() : weight;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dwconv_bn_act_fast", [&] {
    if (cl)
      dw_cl<scalar_t>(x, weight, scale_acc, shift_acc, s, act, out, sums);
#if FZ_AVX2
    else if (groups)
      dw_nchw_channel_groups(x.const_data_ptr<float>(), w.const_data_ptr<float>(), scale_acc.const_data_ptr<float>(),
                             shift_acc.const_data_ptr<float>(), out.data_ptr<float>(), s, act);
#endif
    else
      dw_nchw<scalar_t>(x, weight, scale_acc, shift_acc, s, act, out);
  });
  return true;
}

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END

TORCH_LIBRARY_IMPL(fastzoo, CPU, m) { m.impl("dwconv_bn_act", &fastzoo::cpu::dwconv_bn_act_cpu); }
