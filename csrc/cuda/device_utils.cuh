// Device-side helpers of the fastzoo CUDA kernels; c10 type headers only (no ATen), see cuda_kernels.h.
#pragma once
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda_kernels.h"
#include "fastzoo/activation.h"
#include "fastzoo/cuda_shared_math.h"
#include "fastzoo/dwconv_math.h"

namespace fastzoo {
namespace cuda {

constexpr int kThreads = 256;

// Accumulate type: double for double, float for float / Half / BFloat16 (= at::opmath_type).
template <typename T>
using acc_type = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Calls f(scalar_t{}) for the runtime dtype.
template <typename F>
void dispatch_dtype(DType dt, const char* name, F&& f) {
  switch (dt) {
    case DType::Float: return f(float{});
    case DType::Double: return f(double{});
    case DType::Half: return f(c10::Half{});
    case DType::BFloat16: return f(c10::BFloat16{});
  }
  TORCH_CHECK(false, name, ": unsupported dtype");
}

// Blocks for a grid-stride elementwise kernel: up to 4 waves of 8 blocks of 256 per SM, never more than the work.
inline unsigned elementwise_blocks(int64_t numel, int sms) {
  const int64_t need = (numel + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(need, static_cast<int64_t>(sms) * 32)));
}

// Element i of a tensor dense in its memory format -> (n, c, h, w).
struct Idx4 {
  int64_t n, c, h, w;
};
__device__ __forceinline__ Idx4 unflatten(int64_t i, int64_t C, int64_t H, int64_t W, bool cl) {
  Idx4 r;
  if (cl) {
    r.c = i % C;
    int64_t p = i / C;
    r.w = p % W;
    p /= W;
    r.h = p % H;
    r.n = p / H;
  } else {
    r.w = i % W;
    int64_t p = i / W;
    r.h = p % H;
    p /= H;
    r.c = p % C;
    r.n = p / C;
  }
  return r;
}

// The two thread mappings of the per-(n, c) kernels (dwconv, channel sums), blocks of 32 x 8 threads:
// channels_last puts threadIdx.x on 32 consecutive channels (coalesced) and threadIdx.y on rows / pixels;
// NCHW puts threadIdx.y on 8 (n, c) planes and threadIdx.x along the plane. `start`/`step` walk the
// within-plane index (output row tiles or pixels) over blockIdx.y.
struct PlaneMap {
  int n, c, start, step;
  bool active;
};
__device__ __forceinline__ PlaneMap plane_map(bool cl, int C, int c_tiles, int planes) {
  PlaneMap m;
  if (cl) {
    m.n = blockIdx.x / c_tiles;
    m.c = (blockIdx.x - m.n * c_tiles) * 32 + threadIdx.x;
    m.active = m.c < C;
    m.start = blockIdx.y * 8 + threadIdx.y;
    m.step = gridDim.y * 8;
  } else {
    const int p = blockIdx.x * 8 + threadIdx.y;
    m.active = p < planes;
    m.n = p / C;
    m.c = p - m.n * C;
    m.start = blockIdx.y * 32 + threadIdx.x;
    m.step = gridDim.y * 32;
  }
  return m;
}

__device__ __forceinline__ int64_t offset(const Strides4& s, const Idx4& i) {
  return i.n * s.n + i.c * s.c + i.h * s.h + i.w * s.w;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace cuda
}  // namespace fastzoo
