// channel_shuffle on CUDA: an index-mapping copy, instantiated per element size (2, 4, 8 bytes), not per dtype.
// Grid-stride loop over the output in its memory order (channels_last: consecutive threads = consecutive
// output channels of one pixel, whose sources lie in the same pixel's channel vector; NCHW: consecutive
// threads = consecutive W, coalesced on both sides); source channel from shuffle_src_channel, input read
// through its 4 strides.
#include "device_utils.cuh"

namespace fastzoo {
namespace cuda {
namespace {

template <typename T>
__global__ void __launch_bounds__(kThreads)
channel_shuffle_kernel(const T* __restrict__ x, Strides4 xs, T* __restrict__ y, int64_t numel, int64_t C, int64_t H,
                       int64_t W, int64_t groups, bool cl) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Idx4 q = unflatten(i, C, H, W, cl);
    q.c = shuffle_src_channel(q.c, C, groups);
    y[i] = x[offset(xs, q)];
  }
}

template <typename T>
void launch(const void* x, Strides4 xs, Dims4 d, int64_t groups, bool cl, void* y, int64_t numel, int sms,
            cudaStream_t stream) {
  channel_shuffle_kernel<T><<<elementwise_blocks(numel, sms), kThreads, 0, stream>>>(
      static_cast<const T*>(x), xs, static_cast<T*>(y), numel, d.c, d.h, d.w, groups, cl);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void channel_shuffle_launch(int elem_size, const void* x, Strides4 xs, Dims4 d, int64_t groups, bool cl, void* y,
                            int sms, cudaStream_t stream) {
  const int64_t numel = d.n * d.c * d.h * d.w;
  if (numel == 0) return;
  switch (elem_size) {
    case 2: return launch<uint16_t>(x, xs, d, groups, cl, y, numel, sms, stream);
    case 4: return launch<uint32_t>(x, xs, d, groups, cl, y, numel, sms, stream);
    case 8: return launch<uint64_t>(x, xs, d, groups, cl, y, numel, sms, stream);
  }
  TORCH_CHECK(false, "channel_shuffle: unsupported element size ", elem_size);
}

}  // namespace cuda
}  // namespace fastzoo
