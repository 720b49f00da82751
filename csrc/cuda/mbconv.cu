// mbconv on CUDA, the kernel of its own: the SE gate folded into per-sample projection weights,
// wn[n, o, i] = se_apply(w[o, i], gate[n, i]), so that the projection is one batched GEMM over the dw output
// as is (ops_cuda.cpp composes the whole block; see the design there). Grid-stride over wn, consecutive
// threads on consecutive i (coalesced on w, wn and gate).
#include "device_utils.cuh"

namespace fastzoo {
namespace cuda {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
fold_gate_kernel(const scalar_t* __restrict__ w, const acc_t* __restrict__ gate, scalar_t* __restrict__ wn,
                 int64_t numel, int64_t Cout, int64_t Cin) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = i % Cin, oi = i % (Cout * Cin), n = i / (Cout * Cin);
    wn[i] = static_cast<scalar_t>(se_apply<acc_t>(static_cast<acc_t>(w[oi]), gate[n * Cin + k]));
  }
}

}  // namespace

void fold_gate_launch(DType dt, const void* w, const void* gate, void* wn, int64_t N, int64_t Cout, int64_t Cin,
                      int sms, cudaStream_t stream) {
  const int64_t numel = N * Cout * Cin;
  if (numel == 0) return;
  dispatch_dtype(dt, "mbconv", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_type<scalar_t>;
    fold_gate_kernel<scalar_t, acc_t><<<elementwise_blocks(numel, sms), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(w), static_cast<const acc_t*>(gate), static_cast<scalar_t*>(wn), numel, Cout,
        Cin);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace fastzoo
