// Register-tiled depthwise math used by the CUDA dwconv kernel (and by the fused mbconv), written
// __host__ __device__ so the CPU tests can execute it against dw_point / the reference.
// Same tap order as dw_point (kh outer, kw inner); taps that fall into the zero padding add zero.
#pragma once
#include "fastzoo/activation.h"
#include "fastzoo/dwconv_math.h"

namespace fastzoo {

// Accumulators of TW consecutive outputs (oh, ow0 .. ow0 + TW - 1) of one (n, c) plane, before the epilogue.
//   xp: x + n * xs.n + c * xs.c;  sh, sw: x's H and W element strides;
//   w: the K*K taps of channel c, tap i at w[i * ws] (ws = 1 for a (C, 1, K, K) weight; the CUDA kernel
//   keeps them in shared memory with a per-layout stride);  ih0 = oh * S - pad, iw0 = ow0 * S - pad.
template <int K, int S, int TW, typename scalar_t, typename acc_t>
FZ_HD void dw_tile_acc(const scalar_t* __restrict__ xp, int64_t sh, int64_t sw, int H, int W,
                       const acc_t* w, int ws, int ih0, int iw0, acc_t (&acc)[TW]) {
  constexpr int R = (TW - 1) * S + K;  // input columns the TW outputs read
#pragma unroll
  for (int t = 0; t < TW; ++t) acc[t] = acc_t(0);
#pragma unroll
  for (int kh = 0; kh < K; ++kh) {
    const int ih = ih0 + kh;
    if (ih < 0 || ih >= H) continue;
    const scalar_t* row = xp + static_cast<int64_t>(ih) * sh;
    acc_t r[R];
#pragma unroll
    for (int j = 0; j < R; ++j) {
      const int iw = iw0 + j;
      r[j] = (iw >= 0 && iw < W) ? static_cast<acc_t>(row[static_cast<int64_t>(iw) * sw]) : acc_t(0);
    }
#pragma unroll
    for (int kw = 0; kw < K; ++kw)
#pragma unroll
      for (int t = 0; t < TW; ++t) acc[t] += r[t * S + kw] * w[(kh * K + kw) * ws];
  }
}

// The depthwise epilogue, identical to the last line of dw_point: act(acc * scale + shift).
template <typename acc_t>
FZ_HD acc_t dw_epilogue(acc_t acc, acc_t scale, acc_t shift, Act act) {
  return apply_act<acc_t>(acc * scale + shift, act);
}

// fused_mbconv without a projection: act(v) + residual.
template <typename acc_t>
FZ_HD acc_t act_residual(acc_t v, acc_t residual, Act act) {
  return apply_act<acc_t>(v, act) + residual;
}

}  // namespace fastzoo
