// The ATen side of the fastzoo CUDA operators: argument checks, output allocation (in x's memory format),
// the cuBLAS / cuDNN calls through ATen, the composition of mbconv / fused_mbconv, and the registration
// TORCH_LIBRARY_IMPL(fastzoo, CUDA, ...). The kernels are in the .cu files next to this one, behind the raw
// launch functions of cuda_kernels.h; keeping ATen out of the .cu files keeps the CUDA build short
// (this file is parsed once by the host compiler instead of three times per .cu by nvcc).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "cuda_kernels.h"
#include "fastzoo/activation.h"
#include "fastzoo/checks.h"
#include "fastzoo/dwconv_math.h"

namespace fastzoo {
namespace cuda {
namespace {

Strides4 strides4(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }
Dims4 dims4(const at::Tensor& t) { return {t.size(0), t.size(1), t.size(2), t.size(3)}; }

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float;
    case at::kDouble: return DType::Double;
    case at::kHalf: return DType::Half;
    case at::kBFloat16: return DType::BFloat16;
    default: TORCH_CHECK(false, "fastzoo CUDA kernels: unsupported dtype ", t.scalar_type());
  }
}

// Accumulate dtype: float64 for float64 x, float32 otherwise (= at::opmath_type).
at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// A per-channel vector in the accumulate dtype (no copy when it already is).
at::Tensor acc_vec(const at::Tensor& v, at::ScalarType x_dtype) { return v.to(acc_dtype(x_dtype)).contiguous(); }

bool is_cl(const at::Tensor& t) { return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast; }

// Same layout as y (dense in its format): then indexable by y's linear index.
bool same_layout(const at::Tensor& a, const at::Tensor& y) {
  for (int d = 0; d < 4; ++d)
    if (a.size(d) != 1 && a.stride(d) != y.stride(d)) return false;
  return true;
}

Act act_arg(const char* op, const char* arg, std::string_view name) { return check_act(op, arg, std::string(name)); }

void check_cuda(const char* op, const at::Tensor& t, const char* arg) {
  TORCH_CHECK(t.is_cuda(), op, ": expected ", arg, " to be a CUDA tensor, got ", t.device());
}

// Streaming multiprocessors of the current device (cached per device).
int sm_count() {
  static int cache[64] = {0};
  const int dev = c10::cuda::current_device();
  if (dev >= 0 && dev < 64 && cache[dev] > 0) return cache[dev];
  int v = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
  if (v <= 0) v = 80;
  if (dev >= 0 && dev < 64) cache[dev] = v;
  return v;
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Can dims (a outer, b inner) be merged into one with a single stride? Returns that stride in `s`.
bool merge2(int64_t za, int64_t sa, int64_t zb, int64_t sb, int64_t& s) {
  if (za == 1) { s = sb; return true; }
  if (zb == 1) { s = sa; return true; }
  if (sa == zb * sb) { s = sb; return true; }
  return false;
}

void check_w2d(const char* op, const at::Tensor& x, const at::Tensor& w, const char* arg, int64_t rows, int64_t cols) {
  check_same(op, x, w, arg);
  TORCH_CHECK((w.dim() == 2 || (w.dim() == 4 && w.size(2) == 1 && w.size(3) == 1)) &&
                  (rows < 0 || w.size(0) == rows) && w.size(1) == cols,
              op, ": expected ", arg, " of shape (", rows < 0 ? std::string("Cout") : std::to_string(rows), ", ",
              cols, ") or (", rows < 0 ? std::string("Cout") : std::to_string(rows), ", ", cols, ", 1, 1), got ",
              w.sizes());
}

int all_or_none(const char* op, const char* what, std::initializer_list<const std::optional<at::Tensor>*> ts) {
  int n = 0;
  for (auto* t : ts) n += t->has_value() ? 1 : 0;
  TORCH_CHECK(n == 0 || n == static_cast<int>(ts.size()), op, ": expected all or none of the ", what,
              " tensors, got ", n, " of ", ts.size());
  return n;
}

// ---- building blocks -----------------------------------------------------------------------------

// out (N, Cout, H, W), dense in its format, = conv1x1(x, w2d) through cuBLAS, no intermediate:
//   channels_last: x viewed as (N*H*W, Cin), out (N*H*W, Cout) = x2d @ W^T (one at::mm);
//   NCHW: x viewed as (N, Cin, H*W), out (N, Cout, H*W) = W @ x[n] (one at::bmm, W broadcast with stride 0).
// Strides that no GEMM view can express (e.g. a spatially sliced x) are copied first: cuBLAS needs it.
void pw_gemm_out(const at::Tensor& x, const at::Tensor& w2d, at::Tensor& out) {
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), Cout = w2d.size(0);
  if (out.numel() == 0) return;
  if (Cin == 0) {
    out.zero_();
    return;
  }
  int64_t s_hw = 0, s_nhw = 0;
  if (is_cl(out)) {
    at::Tensor x2d;
    if (merge2(H, x.stride(2), W, x.stride(3), s_hw) && merge2(N, x.stride(0), H * W, s_hw, s_nhw))
      x2d = x.as_strided({N * H * W, Cin}, {s_nhw, x.stride(1)});
    else
      x2d = x.contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({N * H * W, Cin});
    at::Tensor o2d = out.as_strided({N * H * W, Cout}, {Cout, 1});
    at::mm_out(o2d, x2d, w2d.t());
  } else {
    at::Tensor x3;
    if (merge2(H, x.stride(2), W, x.stride(3), s_hw))
      x3 = x.as_strided({N, Cin, H * W}, {x.stride(0), x.stride(1), s_hw});
    else
      x3 = x.contiguous().view({N, Cin, H * W});
    at::Tensor o3 = out.view({N, Cout, H * W});
    if (N == 1) {
      at::Tensor o2 = o3.select(0, 0);
      at::mm_out(o2, w2d, x3.select(0, 0));
    } else {
      at::bmm_out(o3, w2d.unsqueeze(0).expand({N, Cout, Cin}), x3);
    }
  }
}

// In place: y = act(y * scale + shift + residual).
void pw_epilogue(at::Tensor& y, const at::Tensor& scale_acc, const at::Tensor& shift_acc, const at::Tensor* res,
                 Act act) {
  pw_epilogue_launch(dtype_of(y), y.data_ptr(), dims4(y), is_cl(y), scale_acc.const_data_ptr(),
                     shift_acc.const_data_ptr(), res ? res->const_data_ptr() : nullptr,
                     res ? strides4(*res) : Strides4{0, 0, 0, 0}, res != nullptr && same_layout(*res, y), act,
                     sm_count(), stream());
}

// In place: y = act(y) + residual.
void act_residual(at::Tensor& y, const at::Tensor* res, Act act) {
  act_residual_launch(dtype_of(y), y.data_ptr(), dims4(y), is_cl(y), res ? res->const_data_ptr() : nullptr,
                      res ? strides4(*res) : Strides4{0, 0, 0, 0}, res != nullptr && same_layout(*res, y), act,
                      sm_count(), stream());
}

// y (preallocated, dense in x's format) = act(dwconv(x) * scale + shift); optional SE sums.
void dwconv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale_acc, const at::Tensor& shift_acc,
            int64_t stride, int64_t pad, Act act, at::Tensor& y, at::Tensor* se_sums) {
  const at::Tensor wc = w.contiguous();  // (C, 1, K, K), small
  dwconv_launch(dtype_of(x), x.const_data_ptr(), strides4(x), dims4(x), wc.const_data_ptr(),
                static_cast<int>(w.size(3)), static_cast<int>(stride), static_cast<int>(pad),
                scale_acc.const_data_ptr(), shift_acc.const_data_ptr(), act, y.data_ptr(), strides4(y), y.size(2),
                y.size(3), is_cl(y), se_sums ? se_sums->data_ptr() : nullptr, sm_count(), stream());
}

// gate (N, C) accumulate dtype = gate_act(w2 @ act(w1 @ (sums * inv_hw) + b1) + b2).
at::Tensor se_gate(const at::Tensor& sums, double inv_hw, const at::Tensor& w1, const at::Tensor& b1,
                   const at::Tensor& w2, const at::Tensor& b2, Act act, Act gate) {
  const int64_t N = sums.size(0), C = sums.size(1), Cs = w1.size(0);
  const at::Tensor w1c = w1.reshape({Cs, C}).contiguous(), w2c = w2.reshape({C, Cs}).contiguous();
  const at::ScalarType xt = w1.scalar_type();
  const at::Tensor b1a = acc_vec(b1, xt), b2a = acc_vec(b2, xt);
  at::Tensor hidden = at::empty({N, Cs}, sums.options());
  at::Tensor g = at::empty({N, C}, sums.options());
  fc_rows_launch(dtype_of(w1), sums.const_data_ptr(), inv_hw, w1c.const_data_ptr(), b1a.const_data_ptr(), N, Cs, C,
                 act, hidden.data_ptr(), stream());
  fc_rows_launch(dtype_of(w1), hidden.const_data_ptr(), 1.0, w2c.const_data_ptr(), b2a.const_data_ptr(), N, C, Cs,
                 gate, g.data_ptr(), stream());
  return g;
}

void se_apply(const at::Tensor& x, const at::Tensor& gate, at::Tensor& y) {
  se_apply_launch(dtype_of(y), x.const_data_ptr(), strides4(x), same_layout(x, y), y.data_ptr(), dims4(y), is_cl(y),
                  gate.const_data_ptr(), sm_count(), stream());
}

void check_se(const char* op, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
              const at::Tensor& b2, int64_t C, const char* n1, const char* nb1, const char* n2, const char* nb2) {
  check_w2d(op, x, w1, n1, -1, C);
  const int64_t Cs = w1.size(0);
  check_w2d(op, x, w2, n2, C, Cs);
  check_vec(op, x, b1, nb1, Cs);
  check_vec(op, x, b2, nb2, C);
}

int64_t conv_out(int64_t in, int64_t k, int64_t stride, int64_t pad) { return (in + 2 * pad - k) / stride + 1; }

}  // namespace

// ---- the operators -------------------------------------------------------------------------------

at::Tensor dwconv_bn_act_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                              const at::Tensor& shift, int64_t stride, int64_t padding, std::string_view act) {
  const char* op = "dwconv_bn_act";
  check_input4d(op, x);
  check_cuda(op, x, "x");
  const Act a = act_arg(op, "act", act);
  const int64_t C = x.size(1);
  check_same(op, x, weight, "weight");
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 && weight.size(2) == weight.size(3) &&
                  weight.size(3) % 2 == 1,
              op, ": expected weight of shape (", C, ", 1, K, K) with K odd, got ", weight.sizes());
  check_vec(op, x, scale, "scale", C);
  check_vec(op, x, shift, "shift", C);
  check_stride(op, stride);
  const int64_t K = weight.size(3);
  const int64_t pad = padding < 0 ? K / 2 : padding;
  const int64_t OH = conv_out(x.size(2), K, stride, pad), OW = conv_out(x.size(3), K, stride, pad);
  TORCH_CHECK(OH > 0 && OW > 0, op, ": input ", x.sizes(), " too small for kernel ", K, " with padding ", pad);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({x.size(0), C, OH, OW}, x.options().memory_format(out_format(x)));
  if (y.numel() == 0) return y;
  dwconv(x, weight, acc_vec(scale, x.scalar_type()), acc_vec(shift, x.scalar_type()), stride, pad, a, y, nullptr);
  return y;
}

at::Tensor pwconv_bn_act_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                              const at::Tensor& shift, std::string_view act,
                              const std::optional<at::Tensor>& residual) {
  const char* op = "pwconv_bn_act";
  check_input4d(op, x);
  check_cuda(op, x, "x");
  const Act a = act_arg(op, "act", act);
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  check_w2d(op, x, weight, "weight", -1, Cin);
  const int64_t Cout = weight.size(0);
  check_vec(op, x, scale, "scale", Cout);
  check_vec(op, x, shift, "shift", Cout);
  if (residual.has_value()) {
    check_same(op, x, *residual, "residual");
    TORCH_CHECK(residual->dim() == 4 && residual->size(0) == N && residual->size(1) == Cout &&
                    residual->size(2) == H && residual->size(3) == W,
                op, ": expected residual of shape (", N, ", ", Cout, ", ", H, ", ", W, "), got ", residual->sizes());
  }
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({N, Cout, H, W}, x.options().memory_format(out_format(x)));
  if (y.numel() == 0) return y;
  pw_gemm_out(x, weight.reshape({Cout, Cin}), y);
  pw_epilogue(y, acc_vec(scale, x.scalar_type()), acc_vec(shift, x.scalar_type()),
              residual.has_value() ? &*residual : nullptr, a);
  return y;
}

at::Tensor squeeze_excite_cuda(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                               const at::Tensor& w2, const at::Tensor& b2, std::string_view act,
                               std::string_view gate) {
  const char* op = "squeeze_excite";
  check_input4d(op, x);
  check_cuda(op, x, "x");
  const Act a = act_arg(op, "act", act);
  const Act g = act_arg(op, "gate", gate);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  check_se(op, x, w1, b1, w2, b2, C, "w1", "b1", "w2", "b2");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({N, C, H, W}, x.options().memory_format(out_format(x)));
  if (y.numel() == 0) return y;
  at::Tensor sums = at::zeros({N, C}, x.options().dtype(acc_dtype(x.scalar_type())));
  channel_sums_launch(dtype_of(x), x.const_data_ptr(), strides4(x), dims4(x), is_cl(x), sums.data_ptr(), sm_count(),
                      stream());
  const at::Tensor gt = se_gate(sums, 1.0 / static_cast<double>(H * W), w1, b1, w2, b2, a, g);
  se_apply(x, gt, y);
  return y;
}

at::Tensor channel_shuffle_cuda(const at::Tensor& x, int64_t groups) {
  const char* op = "channel_shuffle";
  check_input4d(op, x);
  check_cuda(op, x, "x");
  const int64_t C = x.size(1);
  TORCH_CHECK(groups > 0 && C % groups == 0, op, ": expected groups to be a positive divisor of the ", C,
              " channels, got ", groups);
  (void)dtype_of(x);  // the four floating dtypes of the op contract
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(out_format(x)));
  if (y.numel() == 0) return y;
  channel_shuffle_launch(static_cast<int>(x.element_size()), x.const_data_ptr(), strides4(x), dims4(x), groups,
                         is_cl(y), y.data_ptr(), sm_count(), stream());
  return y;
}

// mbconv: 4 passes over the expanded tensor instead of ~15:
//   1. expand: cuBLAS GEMM straight into h1 + the in-place BN/act epilogue kernel (skipped without expand);
//   2. the depthwise kernel h1 -> h2 (BN, act) that also accumulates the SE sums per (n, c);
//   3. SE: two tiny FC kernels on the (N, Cexp) sums -> gate (skipped without SE);
//   4. the projection with the gate applied, then the BN (+ residual) epilogue kernel:
//        Cout < OH*OW: the gate is folded into per-sample weights W[o, i] * gate[n, i] (N*Cout*Cexp elements,
//          fewer than the activation's N*Cexp*OH*OW) and the projection is one batched GEMM over h2 as is;
//        otherwise: the gate is applied to h2 in place (one more pass), then the plain projection GEMM.
at::Tensor mbconv_cuda(const at::Tensor& x, const std::optional<at::Tensor>& expand_weight,
                       const std::optional<at::Tensor>& expand_scale, const std::optional<at::Tensor>& expand_shift,
                       const at::Tensor& dw_weight, const at::Tensor& dw_scale, const at::Tensor& dw_shift,
                       const std::optional<at::Tensor>& se_w1, const std::optional<at::Tensor>& se_b1,
                       const std::optional<at::Tensor>& se_w2, const std::optional<at::Tensor>& se_b2,
                       const at::Tensor& project_weight, const at::Tensor& project_scale,
                       const at::Tensor& project_shift, int64_t stride, std::string_view act,
                       std::string_view se_act, std::string_view se_gate_name, bool residual) {
  const char* op = "mbconv";
  check_input4d(op, x);
  check_cuda(op, x, "x");
  const Act a = act_arg(op, "act", act);
  const Act sa = act_arg(op, "se_act", se_act);
  const Act sg = act_arg(op, "se_gate", se_gate_name);
  check_stride(op, stride);
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const bool expand = all_or_none(op, "expand (expand_weight, expand_scale, expand_shift)",
                                  {&expand_weight, &expand_scale, &expand_shift}) > 0;
  const bool se = all_or_none(op, "SE (se_w1, se_b1, se_w2, se_b2)", {&se_w1, &se_b1, &se_w2, &se_b2}) > 0;
  int64_t Cexp = Cin;
  if (expand) {
    check_w2d(op, x, *expand_weight, "expand_weight", -1, Cin);
    Cexp = expand_weight->size(0);
    check_vec(op, x, *expand_scale, "expand_scale", Cexp);
    check_vec(op, x, *expand_shift, "expand_shift", Cexp);
  }
  check_same(op, x, dw_weight, "dw_weight");
  TORCH_CHECK(dw_weight.dim() == 4 && dw_weight.size(0) == Cexp && dw_weight.size(1) == 1 &&
                  dw_weight.size(2) == dw_weight.size(3) && dw_weight.size(3) % 2 == 1,
              op, ": expected dw_weight of shape (", Cexp, ", 1, K, K) with K odd, got ", dw_weight.sizes());
  check_vec(op, x, dw_scale, "dw_scale", Cexp);
  check_vec(op, x, dw_shift, "dw_shift", Cexp);
  if (se) check_se(op, x, *se_w1, *se_b1, *se_w2, *se_b2, Cexp, "se_w1", "se_b1", "se_w2", "se_b2");
  check_w2d(op, x, project_weight, "project_weight", -1, Cexp);
  const int64_t Cout = project_weight.size(0);
  check_vec(op, x, project_scale, "project_scale", Cout);
  check_vec(op, x, project_shift, "project_shift", Cout);
  const int64_t K = dw_weight.size(3), pad = K / 2;
  const int64_t OH = conv_out(H, K, stride, pad), OW = conv_out(W, K, stride, pad);
  TORCH_CHECK(OH > 0 && OW > 0, op, ": input ", x.sizes(), " too small for the ", K, "x", K, " depthwise conv");
  TORCH_CHECK(!residual || (stride == 1 && Cout == Cin), op,
              ": residual=True needs stride 1 and as many output as input channels, got stride ", stride, ", ", Cin,
              " -> ", Cout, " channels");

  const c10::cuda::CUDAGuard guard(x.device());
  const at::MemoryFormat fmt = out_format(x);
  const at::ScalarType xt = x.scalar_type();
  at::Tensor out = at::empty({N, Cout, OH, OW}, x.options().memory_format(fmt));
  if (out.numel() == 0) return out;

  at::Tensor h1 = x;
  if (expand) {
    h1 = at::empty({N, Cexp, H, W}, x.options().memory_format(fmt));
    pw_gemm_out(x, expand_weight->reshape({Cexp, Cin}), h1);
    pw_epilogue(h1, acc_vec(*expand_scale, xt), acc_vec(*expand_shift, xt), nullptr, a);
  }
  at::Tensor h2 = at::empty({N, Cexp, OH, OW}, x.options().memory_format(fmt));
  at::Tensor sums;
  if (se) sums = at::zeros({N, Cexp}, x.options().dtype(acc_dtype(xt)));
  dwconv(h1, dw_weight, acc_vec(dw_scale, xt), acc_vec(dw_shift, xt), stride, pad, a, h2, se ? &sums : nullptr);
  h1 = at::Tensor();  // the expanded input is no longer needed

  const at::Tensor wp = project_weight.reshape({Cout, Cexp});
  if (se) {
    const at::Tensor gate = se_gate(sums, 1.0 / static_cast<double>(OH * OW), *se_w1, *se_b1, *se_w2, *se_b2, sa, sg);
    const int64_t P = OH * OW;
    if (Cout < P) {
      at::Tensor wn = at::empty({N, Cout, Cexp}, x.options());
      const at::Tensor wpc = wp.contiguous();
      fold_gate_launch(dtype_of(x), wpc.const_data_ptr(), gate.const_data_ptr(), wn.data_ptr(), N, Cout, Cexp,
                       sm_count(), stream());
      if (fmt == at::MemoryFormat::ChannelsLast) {
        at::Tensor hv = h2.as_strided({N, P, Cexp}, {P * Cexp, Cexp, 1});
        at::Tensor ov = out.as_strided({N, P, Cout}, {P * Cout, Cout, 1});
        at::bmm_out(ov, hv, wn.transpose(1, 2));
      } else {
        at::Tensor ov = out.view({N, Cout, P});
        at::bmm_out(ov, wn, h2.view({N, Cexp, P}));
      }
    } else {
      se_apply(h2, gate, h2);  // in place
      pw_gemm_out(h2, wp, out);
    }
  } else {
    pw_gemm_out(h2, wp, out);
  }
  pw_epilogue(out, acc_vec(project_scale, xt), acc_vec(project_shift, xt), residual ? &x : nullptr, Act::Identity);
  return out;
}

// fused_mbconv: at::convolution (cuDNN) with the BN scale folded into the KxK weights (in the accumulate type)
// and the shift as bias, the act kernel in place, then the projection GEMM + BN (+ residual) epilogue; without
// a projection, act + residual in one kernel.
at::Tensor fused_mbconv_cuda(const at::Tensor& x, const at::Tensor& conv_weight, const at::Tensor& conv_scale,
                             const at::Tensor& conv_shift, const std::optional<at::Tensor>& project_weight,
                             const std::optional<at::Tensor>& project_scale,
                             const std::optional<at::Tensor>& project_shift, int64_t stride, std::string_view act,
                             bool residual) {
  const char* op = "fused_mbconv";
  check_input4d(op, x);
  check_cuda(op, x, "x");
  const Act a = act_arg(op, "act", act);
  check_stride(op, stride);
  const int64_t N = x.size(0), Cin = x.size(1);
  check_same(op, x, conv_weight, "conv_weight");
  TORCH_CHECK(conv_weight.dim() != 4 || conv_weight.size(1) == Cin, op, ": input x has ", Cin,
              " channels but conv_weight ", conv_weight.sizes(), " expects ", conv_weight.size(1));
  TORCH_CHECK(conv_weight.dim() == 4 && conv_weight.size(1) == Cin && conv_weight.size(2) == conv_weight.size(3) &&
                  conv_weight.size(3) % 2 == 1,
              op, ": expected conv_weight of shape (Cmid, ", Cin, ", K, K) with K odd, got ", conv_weight.sizes());
  const int64_t Cmid = conv_weight.size(0), K = conv_weight.size(3);
  check_vec(op, x, conv_scale, "conv_scale", Cmid);
  check_vec(op, x, conv_shift, "conv_shift", Cmid);
  const bool project = all_or_none(op, "projection (project_weight, project_scale, project_shift)",
                                   {&project_weight, &project_scale, &project_shift}) > 0;
  int64_t Cout = Cmid;
  if (project) {
    check_w2d(op, x, *project_weight, "project_weight", -1, Cmid);
    Cout = project_weight->size(0);
    check_vec(op, x, *project_scale, "project_scale", Cout);
    check_vec(op, x, *project_shift, "project_shift", Cout);
  }
  TORCH_CHECK(!residual || (stride == 1 && Cout == Cin), op,
              ": residual=True needs stride 1 and as many output as input channels, got stride ", stride, ", ", Cin,
              " -> ", Cout, " channels");
  const int64_t pad = K / 2;
  const int64_t OH = conv_out(x.size(2), K, stride, pad), OW = conv_out(x.size(3), K, stride, pad);
  TORCH_CHECK(OH > 0 && OW > 0, op, ": input ", x.sizes(), " too small for the ", K, "x", K, " conv");

  const c10::cuda::CUDAGuard guard(x.device());
  const at::MemoryFormat fmt = out_format(x);
  const at::ScalarType xt = x.scalar_type();
  if (N == 0) return at::empty({0, Cout, OH, OW}, x.options().memory_format(fmt));

  const at::ScalarType acc = acc_dtype(xt);
  const at::Tensor wf = (conv_weight.to(acc) * conv_scale.to(acc).view({-1, 1, 1, 1})).to(xt).contiguous(fmt);
  const at::Tensor bias = conv_shift.to(xt);
  at::Tensor h = at::convolution(x, wf, bias, {stride, stride}, {pad, pad}, {1, 1}, false, {0, 0}, 1);
  if (!h.is_contiguous(fmt)) h = h.contiguous(fmt);  // cuDNN already returns x's format

  if (!project) {
    act_residual(h, residual ? &x : nullptr, a);
    return h;
  }
  act_residual(h, nullptr, a);
  at::Tensor out = at::empty({N, Cout, OH, OW}, x.options().memory_format(fmt));
  pw_gemm_out(h, project_weight->reshape({Cout, Cmid}), out);
  pw_epilogue(out, acc_vec(*project_scale, xt), acc_vec(*project_shift, xt), residual ? &x : nullptr, Act::Identity);
  return out;
}

}  // namespace cuda
}  // namespace fastzoo

TORCH_LIBRARY_IMPL(fastzoo, CUDA, m) {
  m.impl("dwconv_bn_act", &fastzoo::cuda::dwconv_bn_act_cuda);
  m.impl("pwconv_bn_act", &fastzoo::cuda::pwconv_bn_act_cuda);
  m.impl("squeeze_excite", &fastzoo::cuda::squeeze_excite_cuda);
  m.impl("channel_shuffle", &fastzoo::cuda::channel_shuffle_cuda);
  m.impl("mbconv", &fastzoo::cuda::mbconv_cuda);
  m.impl("fused_mbconv", &fastzoo::cuda::fused_mbconv_cuda);
}
