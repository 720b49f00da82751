// dwconv_bn_act on CUDA: depthwise KxK conv + folded BN (scale, shift) + activation.
//
// Thread mapping (block 32 x 8 = 256 threads), each thread computes TW = 4 (stride 1) or 2 (stride 2)
// consecutive outputs along ow of one (n, c) plane, reading each input row segment into registers once
// (dw_tile_acc, taps from shared memory); K in {3, 5, 7} and stride in {1, 2} are template values for
// float32/float16/bfloat16; any other K, and float64, run the same tiling with dw_point per output (fewer
// instantiations, shorter builds):
//   channels_last output: threadIdx.x = channel within a 32-channel tile (consecutive threads read and
//     write consecutive channels: coalesced), threadIdx.y + grid-y stride loop over the (oh, ow-tile)s of
//     sample n; blockIdx.x = (n, channel tile).
//   NCHW output: one warp per (n, c) plane (taps loaded once per warp), lanes over the plane's
//     (oh, ow-tile)s (consecutive lanes on consecutive ow tiles), grid-y splits big planes.
// Optionally accumulates the per-(n, c) sums of the stored outputs (the SE squeeze of mbconv): block
// (channels_last) or warp (NCHW) reduction, then one atomicAdd per block/warp and channel.
// __launch_bounds__(256, 4): at most 64 registers (4 blocks, 50% occupancy per SM) and no spills.
#include "device_utils.cuh"

namespace fastzoo {
namespace cuda {
namespace {

// Outputs per thread along ow: 4 at stride 1 (input row segment of K + 3 registers), 2 at stride 2
// (K + 2 registers; 4 would need K + 6 and spills at 64 registers for K = 7).
template <int K, int S>
constexpr int dw_tile_w() { return S == 2 ? 2 : 4; }

template <typename scalar_t, typename acc_t, int K, int S>
__global__ void __launch_bounds__(kThreads, 4)  // 64 registers: 4 blocks (50% occupancy) per SM, no spills
dwconv_kernel(const scalar_t* __restrict__ x, Strides4 xs, int C, int H, int W,
              const scalar_t* __restrict__ w, int k_rt, int s_rt, int pad,
              const acc_t* __restrict__ scale, const acc_t* __restrict__ shift, Act act,
              scalar_t* __restrict__ y, Strides4 ys, int OH, int OW, int tiles_w, int c_tiles, int planes,
              acc_t* __restrict__ se_sums, bool cl) {
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int tiles = OH * tiles_w;
  const PlaneMap pm = plane_map(cl, C, c_tiles, planes);
  const int n = pm.n, c = pm.c, j0 = pm.start, jstep = pm.step;
  const bool active = pm.active;
  constexpr int kTW = dw_tile_w<K, S>();
  acc_t se = acc_t(0);
  if constexpr (K > 0) {
    // Taps in shared memory: channels_last [tap][32 channels] (lane tx reads its own bank),
    // NCHW [8 planes][tap] (a warp reads one address: broadcast).
    __shared__ acc_t wsm[K * K * 32];
    const int ws = cl ? 32 : 1;
    acc_t* wmine = cl ? wsm + tx : wsm + ty * (K * K);
    if (cl) {
      if (active)
        for (int i = ty; i < K * K; i += 8) wmine[i * 32] = static_cast<acc_t>(w[static_cast<int64_t>(c) * (K * K) + i]);
    } else {
      if (active)
        for (int i = tx; i < K * K; i += 32) wmine[i] = static_cast<acc_t>(w[static_cast<int64_t>(c) * (K * K) + i]);
    }
    __syncthreads();
    if (active) {
      const scalar_t* xp = x + n * xs.n + c * xs.c;
      scalar_t* yp = y + n * ys.n + c * ys.c;
      const acc_t sc = scale[c], sf = shift[c];
      for (int j = j0; j < tiles; j += jstep) {
        const int oh = j / tiles_w;
        const int ow0 = (j - oh * tiles_w) * kTW;
        acc_t acc[kTW];
        dw_tile_acc<K, S, kTW, scalar_t, acc_t>(xp, xs.h, xs.w, H, W, wmine, ws, oh * S - pad, ow0 * S - pad, acc);
        scalar_t* yr = yp + static_cast<int64_t>(oh) * ys.h;
#pragma unroll
        for (int t = 0; t < kTW; ++t) {
          if (ow0 + t < OW) {
            const scalar_t v = static_cast<scalar_t>(dw_epilogue<acc_t>(acc[t], sc, sf, act));
            yr[static_cast<int64_t>(ow0 + t) * ys.w] = v;
            se += static_cast<acc_t>(v);
          }
        }
      }
    }
  } else {  // any other K / stride (and float64): dw_point per output, same tiling
    if (active) {
      const acc_t sc = scale[c], sf = shift[c];
      scalar_t* yp = y + n * ys.n + c * ys.c;
      for (int j = j0; j < tiles; j += jstep) {
        const int oh = j / tiles_w;
        const int ow0 = (j - oh * tiles_w) * kTW;
        scalar_t* yr = yp + static_cast<int64_t>(oh) * ys.h;
        for (int t = 0; t < kTW && ow0 + t < OW; ++t) {
          const scalar_t v = static_cast<scalar_t>(
              dw_point<scalar_t, acc_t>(x, xs, H, W, w, k_rt, s_rt, pad, n, c, oh, ow0 + t, sc, sf, act));
          yr[static_cast<int64_t>(ow0 + t) * ys.w] = v;
          se += static_cast<acc_t>(v);
        }
      }
    }
  }
  if (se_sums == nullptr) return;  // uniform over the grid
  if (cl) {
    __shared__ acc_t red[8][33];
    red[ty][tx] = se;
    __syncthreads();
    if (ty == 0 && active) {
      acc_t s = acc_t(0);
#pragma unroll
      for (int i = 0; i < 8; ++i) s += red[i][tx];
      atomicAdd(se_sums + static_cast<int64_t>(n) * C + c, s);
    }
  } else {
    se = warp_sum(se);
    if (tx == 0 && active) atomicAdd(se_sums + static_cast<int64_t>(n) * C + c, se);
  }
}

template <typename scalar_t, int K, int S>
void launch_typed(const void* x, Strides4 xs, Dims4 xd, const void* w, int k, int s, int pad, const void* scale,
                  const void* shift, Act act, void* y, Strides4 ys, int64_t OH, int64_t OW, bool cl, void* se_sums,
                  int sms, cudaStream_t stream) {
  using acc_t = acc_type<scalar_t>;
  constexpr int kTW = dw_tile_w<K, S>();
  const int64_t N = xd.n, C = xd.c;
  const int64_t tiles_w = (OW + kTW - 1) / kTW;
  const int64_t tiles = OH * tiles_w;
  TORCH_CHECK(tiles < (int64_t(1) << 31) && N * C < (int64_t(1) << 31) && xd.h < (int64_t(1) << 31) &&
                  xd.w < (int64_t(1) << 31),
              "dwconv_bn_act: tensor too large for the CUDA kernel's 32-bit tile indices");
  const int64_t target_blocks = static_cast<int64_t>(sms) * 16;  // ~4 waves of 4 blocks per SM
  const int64_t c_tiles = (C + 31) / 32;
  int64_t gx, gy;
  if (cl) {
    gx = N * c_tiles;
    gy = std::min<int64_t>((tiles + 7) / 8, std::max<int64_t>(1, target_blocks / std::max<int64_t>(gx, 1)));
  } else {
    gx = (N * C + 7) / 8;
    gy = std::min<int64_t>((tiles + 31) / 32, std::max<int64_t>(1, target_blocks / std::max<int64_t>(gx, 1)));
  }
  gy = std::max<int64_t>(1, std::min<int64_t>(gy, 65535));
  TORCH_CHECK(gx < (int64_t(1) << 31), "dwconv_bn_act: tensor too large for the CUDA grid");
  dwconv_kernel<scalar_t, acc_t, K, S><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(32, 8), 0,
                                         stream>>>(
      static_cast<const scalar_t*>(x), xs, static_cast<int>(C), static_cast<int>(xd.h), static_cast<int>(xd.w),
      static_cast<const scalar_t*>(w), k, s, pad, static_cast<const acc_t*>(scale), static_cast<const acc_t*>(shift),
      act, static_cast<scalar_t*>(y), ys, static_cast<int>(OH), static_cast<int>(OW), static_cast<int>(tiles_w),
      static_cast<int>(c_tiles), static_cast<int>(N * C), static_cast<acc_t*>(se_sums), cl);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void dwconv_launch(DType dt, const void* x, Strides4 xs, Dims4 xd, const void* w, int k, int s, int pad,
                   const void* scale, const void* shift, Act act, void* y, Strides4 ys, int64_t OH, int64_t OW,
                   bool cl, void* se_sums, int sms, cudaStream_t stream) {
  if (xd.n == 0 || xd.c == 0 || OH <= 0 || OW <= 0) return;
  dispatch_dtype(dt, "dwconv_bn_act", [&](auto tag) {
    using scalar_t = decltype(tag);
#define FZ_DW_ARGS x, xs, xd, w, k, s, pad, scale, shift, act, y, ys, OH, OW, cl, se_sums, sms, stream
    if constexpr (!std::is_same_v<scalar_t, double>) {  // float64 (a testing dtype): the generic path only
      if (k == 3 && s == 1) return launch_typed<scalar_t, 3, 1>(FZ_DW_ARGS);
      if (k == 3 && s == 2) return launch_typed<scalar_t, 3, 2>(FZ_DW_ARGS);
      if (k == 5 && s == 1) return launch_typed<scalar_t, 5, 1>(FZ_DW_ARGS);
      if (k == 5 && s == 2) return launch_typed<scalar_t, 5, 2>(FZ_DW_ARGS);
      if (k == 7 && s == 1) return launch_typed<scalar_t, 7, 1>(FZ_DW_ARGS);
      if (k == 7 && s == 2) return launch_typed<scalar_t, 7, 2>(FZ_DW_ARGS);
    }
    return launch_typed<scalar_t, 0, 0>(FZ_DW_ARGS);
#undef FZ_DW_ARGS
  });
}

}  // namespace cuda
}  // namespace fastzoo
