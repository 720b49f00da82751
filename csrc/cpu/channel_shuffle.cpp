// channel_shuffle on CPU: output channel co reads input channel (co % g) * (C / g) + co / g.
//
// Fast paths: channels_last (x.stride(1) == 1): per pixel, a gather of C through a precomputed table
// (an interleave of the two halves for groups=2); NCHW output with contiguous
// input planes: one memcpy per (n, c) plane. Generic: fastzoo::shuffle_src_channel per element, any strides.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "cpu_kernels.h"
#include "fastzoo/checks.h"
#include "fastzoo/dwconv_math.h"

namespace fastzoo {
namespace cpu {
namespace {

template <typename scalar_t>
void shuffle_generic(const at::Tensor& x, int64_t groups, at::Tensor& out) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const Strides4 xs{x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const Strides4 os{out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, N * C * H, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, W)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t h = i % H, co = (i / H) % C, n = i / (H * C);
      const int64_t ci = shuffle_src_channel(co, C, groups);
      const scalar_t* src = xp + n * xs.n + ci * xs.c + h * xs.h;
      scalar_t* dst = op + n * os.n + co * os.c + h * os.h;
      for (int64_t w = 0; w < W; ++w) dst[w * os.w] = src[w * xs.w];
    }
  });
}

template <typename scalar_t>
void shuffle_cl(const at::Tensor& x, int64_t groups, at::Tensor& out) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t sn = x.stride(0), sh = x.stride(2), sw = x.stride(3);
  const int64_t per = C / groups;
  std::vector<int64_t> src(C);
  for (int64_t co = 0; co < C; ++co) src[co] = shuffle_src_channel(co, C, groups);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const int64_t* sp = src.data();
  at::parallel_for(0, N * H * W, std::max<int64_t>(1, 16384 / C), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t w = p % W, h = (p / W) % H, n = p / (W * H);
      const scalar_t* xr = xp + n * sn + h * sh + w * sw;
      scalar_t* orow = op + p * C;
      if (groups == 2) {  // ShuffleNet: out[2j] = x[j], out[2j+1] = x[per + j]
        for (int64_t j = 0; j < per; ++j) {
          orow[2 * j] = xr[j];
          orow[2 * j + 1] = xr[per + j];
        }
      } else {
        for (int64_t co = 0; co < C; ++co) orow[co] = xr[sp[co]];
      }
    }
  });
}

template <typename scalar_t>
void shuffle_planes(const at::Tensor& x, int64_t groups, at::Tensor& out) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const int64_t sn = x.stride(0), sc = x.stride(1);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, N * C, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, HW)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t n = i / C, co = i % C;
      std::memcpy(op + i * HW, xp + n * sn + shuffle_src_channel(co, C, groups) * sc, HW * sizeof(scalar_t));
    }
  });
}

}  // namespace

at::Tensor channel_shuffle_cpu(const at::Tensor& x, int64_t groups) {
  const std::string op = "channel_shuffle";
  check_input4d(op, x);
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(groups > 0, op, ": expected groups > 0, got ", groups);
  TORCH_CHECK(C % groups == 0, op, ": expected groups to divide the channel count C=", C, ", got groups=", groups);
  at::Tensor out = at::empty(x.sizes(), x.options(), out_format(x));
  if (out.numel() == 0) return out;
  const bool out_cl = out.stride(1) == 1 && out.stride(3) == C && out.stride(2) == W * C &&
                      out.stride(0) == H * W * C;
  const bool out_nchw = out.is_contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "channel_shuffle", [&] {
    if (cpu_fastpath() && out_cl && !out_nchw && x.stride(1) == 1)
      shuffle_cl<scalar_t>(x, groups, out);
    else if (cpu_fastpath() && out_nchw && x.stride(3) == 1 && (H == 1 || x.stride(2) == W))
      shuffle_planes<scalar_t>(x, groups, out);
    else
      shuffle_generic<scalar_t>(x, groups, out);
  });
  return out;
}

}  // namespace cpu
}  // namespace fastzoo

TORCH_LIBRARY_IMPL(fastzoo, CPU, m) { m.impl("channel_shuffle", &fastzoo::cpu::channel_shuffle_cpu); }
