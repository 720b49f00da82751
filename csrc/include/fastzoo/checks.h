// Argument checks shared by the CPU and CUDA kernels: each error names the argument and
// what was expected (the Python API checks the same things first; these guard direct
// torch.ops.fastzoo.* calls).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "fastzoo/activation.h"

namespace fastzoo {

inline Act check_act(const std::string& op, const char* arg, const std::string& name) {
  Act a = parse_act(name);
  TORCH_CHECK(valid_act(a), op, ": unknown activation ", arg, "='", name,
              "'; expected one of identity, relu, relu6, hardswish, hardsigmoid, silu, sigmoid, gelu");
  return a;
}

inline void check_input4d(const std::string& op, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, op, ": expected input x to be 4-D (N, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": expected input x to be floating point, got ",
              x.scalar_type());
}

inline void check_same(const std::string& op, const at::Tensor& x, const at::Tensor& t, const char* arg) {
  TORCH_CHECK(t.device() == x.device(), op, ": expected ", arg, " on ", x.device(), " (the device of x), got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": expected ", arg, " to have dtype ", x.scalar_type(),
              " (the dtype of x), got ", t.scalar_type());
}

// Per-channel vectors (BN scale/shift, SE biases): x's dtype or float32, `numel` elements.
inline void check_vec(const std::string& op, const at::Tensor& x, const at::Tensor& t, const char* arg,
                      int64_t numel) {
  TORCH_CHECK(t.device() == x.device(), op, ": expected ", arg, " on ", x.device(), " (the device of x), got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type() || t.scalar_type() == at::kFloat, op, ": expected ", arg,
              " to have dtype ", x.scalar_type(), " or float32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.numel() == numel, op, ": expected ", arg, " of shape (", numel, "), got ",
              t.sizes());
}

inline void check_stride(const std::string& op, int64_t stride) {
  TORCH_CHECK(stride == 1 || stride == 2, op, ": expected stride 1 or 2, got ", stride);
}

// Memory format of the output: the one x is in (channels_last stays channels_last).
inline at::MemoryFormat out_format(const at::Tensor& x) { return x.suggest_memory_format(); }

}  // namespace fastzoo
