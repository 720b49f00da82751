// Per-output-element math of the depthwise conv + folded BN + activation, shared by the
// CUDA kernel and the CPU generic-stride path (which the CPU tests execute).
#pragma once
#include "fastzoo/activation.h"

namespace fastzoo {

struct Strides4 {  // element strides of an (N, C, H, W) tensor, any memory format
  int64_t n, c, h, w;
};

// One output element y[n, c, oh, ow] in accumulate type acc_t.
template <typename scalar_t, typename acc_t>
FZ_HD acc_t dw_point(const scalar_t* __restrict__ x, Strides4 xs, int64_t H, int64_t W,
                     const scalar_t* __restrict__ w,  // (C, 1, K, K) contiguous
                     int64_t K, int64_t stride, int64_t pad, int64_t n, int64_t c, int64_t oh, int64_t ow,
                     acc_t scale, acc_t shift, Act act) {
  acc_t acc = acc_t(0);
  const scalar_t* xb = x + n * xs.n + c * xs.c;
  const scalar_t* wc = w + c * K * K;
  const int64_t ih0 = oh * stride - pad, iw0 = ow * stride - pad;
  for (int64_t kh = 0; kh < K; ++kh) {
    const int64_t ih = ih0 + kh;
    if (ih < 0 || ih >= H) continue;
    for (int64_t kw = 0; kw < K; ++kw) {
      const int64_t iw = iw0 + kw;
      if (iw < 0 || iw >= W) continue;
      acc += static_cast<acc_t>(xb[ih * xs.h + iw * xs.w]) * static_cast<acc_t>(wc[kh * K + kw]);
    }
  }
  return apply_act<acc_t>(acc * scale + shift, act);
}

// The pointwise epilogue: act(acc * scale + shift + residual).
template <typename acc_t>
FZ_HD acc_t pw_epilogue(acc_t acc, acc_t scale, acc_t shift, acc_t residual, Act act) {
  return apply_act<acc_t>(acc * scale + shift + residual, act);
}

// Squeeze-excite gate applied to one element.
template <typename acc_t>
FZ_HD acc_t se_apply(acc_t v, acc_t gate) { return v * gate; }

// channel_shuffle: the input channel that lands at output channel co.
FZ_HD int64_t shuffle_src_channel(int64_t co, int64_t C, int64_t groups) {
  const int64_t per = C / groups;
  return (co % groups) * per + co / groups;
}

}  // namespace fastzoo
