// Activation math shared by the CPU and CUDA kernels (__host__ __device__), so the
// CPU tests execute exactly the per-element math the GPU runs.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#if defined(__CUDACC__)
#define FZ_HD __host__ __device__ __forceinline__
#else
#define FZ_HD inline
#endif

namespace fastzoo {

// Order matches fastzoo/activations.py ACTIVATIONS; the schema takes the name.
enum class Act : int32_t {
  Identity = 0, ReLU = 1, ReLU6 = 2, HardSwish = 3, HardSigmoid = 4, SiLU = 5, Sigmoid = 6, GELU = 7,
};

// Computed in the accumulate type (float for fp16/bf16/fp32, double for fp64).
template <typename T>
FZ_HD T apply_act(T v, Act act) {
  using std::erf;
  using std::exp;
  switch (act) {
    case Act::Identity: return v;
    case Act::ReLU: return v < T(0) ? T(0) : v;  // NaN stays NaN, as in torch
    case Act::ReLU6: return v < T(0) ? T(0) : (v > T(6) ? T(6) : v);
    case Act::HardSwish: {
      T r = v + T(3);
      r = r < T(0) ? T(0) : (r > T(6) ? T(6) : r);
      return v * r / T(6);
    }
    case Act::HardSigmoid: {
      T r = v + T(3);
      r = r < T(0) ? T(0) : (r > T(6) ? T(6) : r);
      return r / T(6);
    }
    case Act::SiLU: return v / (T(1) + exp(-v));
    case Act::Sigmoid: return T(1) / (T(1) + exp(-v));
    case Act::GELU: return T(0.5) * v * (T(1) + erf(v * T(0.70710678118654752440)));
  }
  return v;
}

inline Act parse_act(const std::string& name) {
  static const char* names[] = {"identity", "relu", "relu6", "hardswish", "hardsigmoid", "silu", "sigmoid", "gelu"};
  for (int i = 0; i < 8; ++i)
    if (name == names[i]) return static_cast<Act>(i);
  return static_cast<Act>(-1);
}

inline bool valid_act(Act a) { return static_cast<int32_t>(a) >= 0 && static_cast<int32_t>(a) < 8; }

}  // namespace fastzoo
