// squeeze_excite on CUDA, the kernel side: x * gate(w2 @ act(w1 @ mean_hw(x) + b1) + b2) in four launches
// (ops_cuda.cpp strings them together):
//   1. channel_sums_kernel: per-(n, c) sums over H*W into an accumulate-type (N, C) buffer.
//        channels_last: block 32 channels x 8 pixel rows (consecutive threads = consecutive channels,
//        coalesced), grid-y splits the pixels, block reduction, one atomicAdd per block and channel.
//        NCHW: one warp per (n, c) plane, lanes over consecutive pixels, warp reduction + atomicAdd.
//   2./3. fc_rows_kernel (twice): out[n, r] = act(W[r, :] . in[n, :] * in_scale + b[r]); a group of
//        G = pow2 >= min(K, 32) lanes per row (no idle lanes for the narrow second FC), grid (rows, N).
//   4. se_apply_kernel: y = x * gate[n, c], grid-stride over y in its memory order (may run in place).
#include "device_utils.cuh"

namespace fastzoo {
namespace cuda {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
channel_sums_kernel(const scalar_t* __restrict__ x, Strides4 xs, int C, int HW, int W, int c_tiles, int planes,
                    acc_t* __restrict__ sums, bool cl) {
  const int tx = threadIdx.x, ty = threadIdx.y;
  const PlaneMap pm = plane_map(cl, C, c_tiles, planes);
  const int n = pm.n, c = pm.c, p0 = pm.start, pstep = pm.step;
  const bool active = pm.active;
  acc_t s = acc_t(0);
  if (active) {
    const scalar_t* xp = x + n * xs.n + c * xs.c;
    for (int p = p0; p < HW; p += pstep) {
      const int h = p / W, w = p - h * W;
      s += static_cast<acc_t>(xp[h * xs.h + w * xs.w]);
    }
  }
  if (cl) {
    __shared__ acc_t red[8][33];
    red[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && active) {
      acc_t t = acc_t(0);
#pragma unroll
      for (int i = 0; i < 8; ++i) t += red[i][tx];
      atomicAdd(sums + static_cast<int64_t>(n) * C + c, t);
    }
  } else {
    s = warp_sum(s);
    if (tx == 0 && active) atomicAdd(sums + static_cast<int64_t>(n) * C + c, s);
  }
}

// out[n, r] = act(sum_k W[r, k] * (in[n, k] * in_scale) + b[r]); G lanes per row (G power of two <= 32).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
fc_rows_kernel(const acc_t* __restrict__ in, acc_t in_scale, const scalar_t* __restrict__ Wt,
               const acc_t* __restrict__ b, int R, int K, int G, Act act, acc_t* __restrict__ out) {
  const int n = blockIdx.y;
  const int lane = threadIdx.x & 31;
  const int rows_per_block = (kThreads / 32) * (32 / G);
  const int r = blockIdx.x * rows_per_block + (threadIdx.x >> 5) * (32 / G) + lane / G;
  const int k0 = lane % G;
  const acc_t* inn = in + static_cast<int64_t>(n) * K;
  acc_t d = acc_t(0);
  if (r < R) {
    const scalar_t* wr = Wt + static_cast<int64_t>(r) * K;
    for (int k = k0; k < K; k += G) d += static_cast<acc_t>(wr[k]) * (inn[k] * in_scale);
  }
  for (int o = G / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);  // uniform: G is per launch
  if (r < R && k0 == 0) out[static_cast<int64_t>(n) * R + r] = apply_act<acc_t>(d + b[r], act);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
se_apply_kernel(const scalar_t* x, Strides4 xs, bool x_dense, scalar_t* y,  // y may alias x (in place)
                int64_t numel,
                int64_t C, int64_t H, int64_t W, bool cl, const acc_t* __restrict__ gate) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Idx4 q = unflatten(i, C, H, W, cl);
    const acc_t v = static_cast<acc_t>(x[x_dense ? i : offset(xs, q)]);
    y[i] = static_cast<scalar_t>(se_apply<acc_t>(v, gate[q.n * C + q.c]));
  }
}

int group_lanes(int64_t K) {
  int g = 1;
  while (g < 32 && g < K) g <<= 1;
  return g;
}

}  // namespace

void channel_sums_launch(DType dt, const void* x, Strides4 xs, Dims4 xd, bool cl, void* sums, int sms,
                         cudaStream_t stream) {
  const int64_t N = xd.n, C = xd.c, HW = xd.h * xd.w;
  if (N * C * HW == 0) return;
  TORCH_CHECK(N * C < (int64_t(1) << 31) && HW < (int64_t(1) << 31),
              "squeeze_excite: tensor too large for the CUDA kernel's 32-bit indices");
  const int64_t c_tiles = (C + 31) / 32;
  const int64_t target_blocks = static_cast<int64_t>(sms) * 16;
  int64_t gx, gy;
  if (cl) {
    gx = N * c_tiles;
    gy = std::min<int64_t>((HW + 7) / 8, std::max<int64_t>(1, target_blocks / gx));
  } else {
    gx = (N * C + 7) / 8;
    gy = std::min<int64_t>((HW + 31) / 32, std::max<int64_t>(1, target_blocks / gx));
  }
  gy = std::max<int64_t>(1, std::min<int64_t>(gy, 65535));
  dispatch_dtype(dt, "squeeze_excite", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_type<scalar_t>;
    channel_sums_kernel<scalar_t, acc_t><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(32, 8),
                                           0, stream>>>(
        static_cast<const scalar_t*>(x), xs, static_cast<int>(C), static_cast<int>(HW), static_cast<int>(xd.w),
        static_cast<int>(c_tiles), static_cast<int>(N * C), static_cast<acc_t*>(sums), cl);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void fc_rows_launch(DType dt, const void* in, double in_scale, const void* W, const void* b, int64_t N, int64_t R,
                    int64_t K, Act act, void* out, cudaStream_t stream) {
  if (N == 0 || R == 0) return;
  const int G = group_lanes(K);
  const int64_t rows_per_block = (kThreads / 32) * (32 / G);
  TORCH_CHECK(N <= 65535, "squeeze_excite: batch too large for the CUDA FC kernel (", N, " > 65535)");
  TORCH_CHECK(R < (int64_t(1) << 31) && K < (int64_t(1) << 31), "squeeze_excite: FC too large");
  const dim3 grid(static_cast<unsigned>((R + rows_per_block - 1) / rows_per_block), static_cast<unsigned>(N));
  dispatch_dtype(dt, "squeeze_excite", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_type<scalar_t>;
    fc_rows_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
        static_cast<const acc_t*>(in), static_cast<acc_t>(in_scale), static_cast<const scalar_t*>(W),
        static_cast<const acc_t*>(b), static_cast<int>(R), static_cast<int>(K), G, act, static_cast<acc_t*>(out));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void se_apply_launch(DType dt, const void* x, Strides4 xs, bool x_dense, void* y, Dims4 d, bool cl, const void* gate,
                     int sms, cudaStream_t stream) {
  const int64_t numel = d.n * d.c * d.h * d.w;
  if (numel == 0) return;
  dispatch_dtype(dt, "squeeze_excite", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_type<scalar_t>;
    se_apply_kernel<scalar_t, acc_t><<<elementwise_blocks(numel, sms), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(x), xs, x_dense, static_cast<scalar_t*>(y), numel, d.c, d.h, d.w, cl,
        static_cast<const acc_t*>(gate));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace fastzoo
