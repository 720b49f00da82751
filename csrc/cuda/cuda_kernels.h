// The C++ launch functions of the fastzoo CUDA kernels: raw pointers + strides, no ATen, so that the
// .cu files include only c10 type headers (compile time: an ATen.h + torch/library.h include costs ~60 s
// of CPU per .cu for two archs, ~8 s without). The ATen glue (checks, allocation, cuBLAS/cuDNN calls,
// TORCH_LIBRARY_IMPL) is in ops_cuda.cpp, compiled once by the host compiler.
// All launches go on `stream`, check with C10_CUDA_KERNEL_LAUNCH_CHECK, and return at once for empty work.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "fastzoo/activation.h"
#include "fastzoo/dwconv_math.h"  // Strides4

namespace fastzoo {
namespace cuda {

enum class DType : int32_t { Float = 0, Double = 1, Half = 2, BFloat16 = 3 };

struct Dims4 {  // (N, C, H, W)
  int64_t n, c, h, w;
};

// ---- dwconv_bn_act.cu --------------------------------------------------------------------------
// y = act(dwconv(x, w) * scale + shift): x (N, C, H, W) any strides, w (C, 1, K, K) contiguous, y (N, C, OH, OW)
// with strides ys (cl: y is channels_last, picks the thread mapping). scale/shift: accumulate type (float, or
// double for Double), contiguous. se_sums: nullptr or a zeroed (N, C) accumulate-type buffer that receives the
// per-(n, c) sums of the stored y (the SE squeeze of mbconv).
void dwconv_launch(DType dt, const void* x, Strides4 xs, Dims4 xd, const void* w, int k, int stride, int pad,
                   const void* scale, const void* shift, Act act, void* y, Strides4 ys, int64_t OH, int64_t OW,
                   bool cl, void* se_sums, int sms, cudaStream_t stream);

// ---- pwconv_bn_act.cu --------------------------------------------------------------------------
// In place on y (dense in its format, cl = channels_last): y = act(y * scale + shift + residual).
// res: nullptr or (N, C, H, W) with strides rs (res_dense: same layout as y, indexed linearly).
void pw_epilogue_launch(DType dt, void* y, Dims4 d, bool cl, const void* scale, const void* shift, const void* res,
                        Strides4 rs, bool res_dense, Act act, int sms, cudaStream_t stream);
// In place on y: y = act(y) + residual (res optional, as above).
void act_residual_launch(DType dt, void* y, Dims4 d, bool cl, const void* res, Strides4 rs, bool res_dense, Act act,
                         int sms, cudaStream_t stream);

// ---- squeeze_excite.cu -------------------------------------------------------------------------
// sums (N, C) accumulate type, zeroed by the caller: sums[n, c] += sum_{h, w} x[n, c, h, w]; cl: x's layout.
void channel_sums_launch(DType dt, const void* x, Strides4 xs, Dims4 xd, bool cl, void* sums, int sms,
                         cudaStream_t stream);
// out[n, r] = act(sum_k W[r, k] * (in[n, k] * in_scale) + b[r]); in/out/b accumulate type, W (R, K) contiguous
// in x's dtype.
void fc_rows_launch(DType dt, const void* in, double in_scale, const void* W, const void* b, int64_t N, int64_t R,
                    int64_t K, Act act, void* out, cudaStream_t stream);
// y = x * gate[n, c]; y dense in its format (cl); x any strides (x_dense: same layout as y; y may alias x).
void se_apply_launch(DType dt, const void* x, Strides4 xs, bool x_dense, void* y, Dims4 d, bool cl, const void* gate,
                     int sms, cudaStream_t stream);

// ---- channel_shuffle.cu ------------------------------------------------------------------------
// y (dense in its format) [n, co, h, w] = x[n, shuffle_src_channel(co), h, w]; dtype-agnostic copy.
void channel_shuffle_launch(int elem_size, const void* x, Strides4 xs, Dims4 d, int64_t groups, bool cl, void* y,
                            int sms, cudaStream_t stream);

// ---- mbconv.cu ---------------------------------------------------------------------------------
// wn (N, Cout, Cin) = w (Cout, Cin, contiguous) * gate[n, :] (accumulate type): the SE gate folded into
// per-sample projection weights.
void fold_gate_launch(DType dt, const void* w, const void* gate, void* wn, int64_t N, int64_t Cout, int64_t Cin,
                      int sms, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastzoo
