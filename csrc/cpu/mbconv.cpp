// mbconv and fused_mbconv on CPU: whole inverted-residual blocks, composed from the CPU kernels directly.
//
// mbconv fast path (four passes over the expanded tensor):
//   1. expand GEMM (ATen) into a channels_last buffer + one fused epilogue pass (BN + act);
//   2. depthwise + BN + act (channels_last, vectorized over C) that also accumulates the per-channel sums
//      of its output (the SE means, no extra read);
//   3. the SE FCs (tiny GEMMs);
//   4. projection: the SE gate folded into per-sample projection weights (one bmm; one GEMM at batch 1)
//      when that is cheaper than gating the activation (H*W >= Cout), else the gate applied in place and
//      one GEMM; then one epilogue pass (BN + residual).
// fused_mbconv fast path: a direct conv for few input channels (conv_few_channels.cpp: the stems), else
// at::convolution with the BN scale folded into the weights and the shift as bias, the activation in place
// (vectorized); then the projection GEMM + epilogue (+ residual).
// Generic path (cpu_fastpath() false): the ops' generic paths composed.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu_kernels.h"
#include "fastzoo/checks.h"

namespace fastzoo {
namespace cpu {
namespace {

inline bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// A 1x1 conv + folded BN stage of a block (expand or project): checks it, returns its output channels.
int64_t check_pw_stage(const std::string& op, const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale,
                       const at::Tensor& shift, const std::string& stage, int64_t cin) {
  const std::string wn = stage + "_weight", sn = stage + "_scale", bn = stage + "_shift";
  check_pw_weight_shape(op, x, w, wn.c_str(), cin);
  check_vec(op, x, scale, sn.c_str(), w.size(0));
  check_vec(op, x, shift, bn.c_str(), w.size(0));
  return w.size(0);
}

// A 1x1 weight as the tiled path reads it, (Cout, Cin) row-major: the weight itself where it is contiguous, 2-d
// or (Cout, Cin, 1, 1) (a reshape through the dispatcher cost ~0.5 us per weight and batch-1 step), else a copy.
at::Tensor rows_of(const at::Tensor& w) { return w.is_contiguous() ? w : pw_matrix(w); }

}  // namespace

at::Tensor mbconv_cpu(const at::Tensor& x, const std::optional<at::Tensor>& expand_weight,
                      const std::optional<at::Tensor>& expand_scale, const std::optional<at::Tensor>& expand_shift,
                      const at::Tensor& dw_weight, const at::Tensor& dw_scale, const at::Tensor& dw_shift,
                      const std::optional<at::Tensor>& se_w1, const std::optional<at::Tensor>& se_b1,
                      const std::optional<at::Tensor>& se_w2, const std::optional<at::Tensor>& se_b2,
                      const at::Tensor& project_weight, const at::Tensor& project_scale,
                      const at::Tensor& project_shift, int64_t stride, c10::string_view act_name,
                      c10::string_view se_act_name, c10::string_view se_gate_name, bool residual) {
  const std::string op = "mbconv";
  check_input4d(op, x);
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int ne = given(expand_weight) + given(expand_scale) + given(expand_shift);
  TORCH_CHECK(ne == 0 || ne == 3, op, ": expected expand_weight, expand_scale and expand_shift all given or all None");
  const bool has_expand = ne == 3;
  const int ns = given(se_w1) + given(se_b1) + given(se_w2) + given(se_b2);
  TORCH_CHECK(ns == 0 || ns == 4, op, ": expected se_w1, se_b1, se_w2 and se_b2 all given or all None");
  const bool has_se = ns == 4;

  const int64_t Cmid =
      has_expand ? check_pw_stage(op, x, *expand_weight, *expand_scale, *expand_shift, "expand", Cin) : Cin;
  check_dw_args(op, x, Cmid, dw_weight, dw_scale, dw_shift, "dw_weight", "dw_scale", "dw_shift");
  if (has_se) check_se_args(op, x, Cmid, *se_w1, *se_b1, *se_w2, *se_b2, "se_");
  const int64_t Cout = check_pw_stage(op, x, project_weight, project_scale, project_shift, "project", Cmid);
  check_stride(op, stride);
  const Act act = check_act(op, "act", std::string(act_name));
  const Act se_act = check_act(op, "se_act", std::string(se_act_name));
  const Act se_gate_act = check_act(op, "se_gate", std::string(se_gate_name));
  TORCH_CHECK(!residual || (stride == 1 && Cout == Cin), op,
              ": residual=True needs stride 1 and as many output as input channels, got stride ", stride, ", Cin=",
              Cin, ", Cout=", Cout);
  const int64_t K = dw_weight.size(3), pad = K / 2;
  TORCH_CHECK(H + 2 * pad >= K && W + 2 * pad >= K, op, ": input x of spatial size (", H, ", ", W,
              ") is smaller than the depthwise kernel size ", K);
  const int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
  at::Tensor out = new_output({N, Cout, OH, OW}, x.options(), out_format(x));
  if (out.numel() == 0) return out;

  if (!use_fast()) {  // the generic paths of the ops, composed
    at::Tensor h = x;
    if (has_expand) h = pwconv_bn_act_cpu(h, *expand_weight, *expand_scale, *expand_shift, act_name, std::nullopt);
    h = dwconv_bn_act_cpu(h, dw_weight, dw_scale, dw_shift, stride, -1, act_name);
    if (has_se) h = squeeze_excite_cpu(h, *se_w1, *se_b1, *se_w2, *se_b2, se_act_name, se_gate_name);
    return pwconv_bn_act_cpu(h, project_weight, project_scale, project_shift, "identity",
                             residual ? std::optional<at::Tensor>(x) : std::nullopt);
  }

  // The per-channel vectors in the accumulate dtype, once for whichever path runs.
  const at::Tensor esc = has_expand ? to_acc(*expand_scale, x) : at::Tensor();
  const at::Tensor esh = has_expand ? to_acc(*expand_shift, x) : at::Tensor();
  const at::Tensor dsc = to_acc(dw_scale, x), dsh = to_acc(dw_shift, x);
  const at::Tensor psc = to_acc(project_scale, x), psh = to_acc(project_shift, x);
  const at::Tensor ew = has_expand ? rows_of(*expand_weight) : at::Tensor(), pw = rows_of(project_weight);
  {
    SeArgs se;
    if (has_se) se = SeArgs{*se_w1, *se_b1, *se_w2, *se_b2, se_act, se_gate_act};
    if (mbconv_tiled(x, ew, esc, esh, dw_weight, dsc, dsh, has_se ? &se : nullptr, pw, psc, psh, stride, act,
                     residual, out))
      return out;
  }
  // (views of ew and pw, already contiguous: a non-contiguous weight is copied once)
  const at::Tensor ew2d = has_expand ? pw_matrix(ew) : at::Tensor(), pw2d = pw_matrix(pw);
  // 1. expand GEMM + BN + act into a channels_last buffer
  at::Tensor h1 = x;
  if (has_expand) {
    h1 = at::empty({N, Cmid, H, W}, x.options(), at::MemoryFormat::ChannelsLast);
    pw_bn_act_fast(x, ew2d, esc, esh, nullptr, act, h1);
  }
  // 2. depthwise + BN + act (+ the SE sums)
  const bool h1_cl = h1.stride(1) == 1 || Cmid == 1;
  at::Tensor h2 = at::empty({N, Cmid, OH, OW}, x.options(),
                            h1_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  at::Tensor means;
  if (has_se) {
    at::Tensor sums = at::empty({N, Cmid}, x.options().dtype(acc_dtype(x)));
    if (dw_fast(h1, dw_weight, dsc, dsh, stride, pad, act, h2, &sums)) {
      means = sums.div_(static_cast<double>(OH * OW));
    } else {
      if (!dw_fast(h1, dw_weight, dsc, dsh, stride, pad, act, h2, nullptr))
        dw_generic(h1, dw_weight, dsc, dsh, stride, pad, act, h2);
      means = se_means(h2, true);
    }
  } else if (!dw_fast(h1, dw_weight, dsc, dsh, stride, pad, act, h2, nullptr)) {
    dw_generic(h1, dw_weight, dsc, dsh, stride, pad, act, h2);
  }
  // 3 + 4. SE FCs, projection (gate folded into the weights or applied in place) + BN + residual
  const int64_t P = OH * OW;
  const bool h2_cl = h2.stride(1) == 1 && h2.stride(3) == Cmid;  // dense channels_last
  if (!has_se) {
    pw_bn_act_fast(h2, pw2d, psc, psh, residual ? &x : nullptr, Act::Identity, out);
    return out;
  }
  const at::Tensor g = se_gate(means, *se_w1, *se_b1, *se_w2, *se_b2, se_act, se_gate_act);  // (N, Cmid)
  // bf16 gates the rows and projects them through its own GEMM: the gate folded into the weights went to at::mm
  // (efficientnet_b0's six SE blocks that float32 runs as a channel split, 0.22 ms each at batch 1; 1.04x the model)
  const bool bf16_gemm = x.scalar_type() == at::kBFloat16 && cpu_has_avx512bf16();
  if (P >= Cout && (h2_cl || h2.is_contiguous()) && !bf16_gemm) {
    if (N == 1) {  // one GEMM, threaded by us (a batch-1 bmm runs on one thread), the gate packed in
      const at::Tensor g0 = g[0];
      pw_bn_act_fast(h2, pw2d, psc, psh, residual ? &x : nullptr, Act::Identity, out, &g0);
      return out;
    }
    const at::Tensor wps = (pw2d.to(g.scalar_type()).unsqueeze(0) * g.unsqueeze(1)).to(x.scalar_type());
    const at::Tensor hpc = h2_cl ? h2.as_strided({N, P, Cmid}, {P * Cmid, Cmid, 1})
                                 : h2.as_strided({N, P, Cmid}, {Cmid * P, 1, P});
    if (out.is_contiguous()) {
      at::Tensor ov = out.as_strided({N, Cout, P}, {Cout * P, P, 1});
      at::bmm_out(ov, wps, hpc.transpose(1, 2));
    } else {
      at::Tensor ov = out.as_strided({N, P, Cout}, {P * Cout, Cout, 1});
      at::bmm_out(ov, hpc, wps.transpose(1, 2));
    }
  } else {
    se_apply_gate(h2, g, h2, true);
    pw_bn_act_fast(h2, pw2d, psc, psh, residual ? &x : nullptr, Act::Identity, out);
    return out;
  }
  pw_epilogue_inplace(out, psc, psh, residual ? &x : nullptr, Act::Identity, true);
  return out;
}

// at::convolution, in float32 where x is bf16 / fp16 with one output column at stride 2: there oneDNN (torch 2.14.1,
// on session 32's AMX Xeon) returns wrong values, errors the size of the outputs (105 of 1764 shapes tried, each
// stride 2 with one output column); at that size the float32 detour costs nothing.
static at::Tensor kxk_conv(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                           int64_t stride, int64_t pad, int64_t OW) {
  if ((x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf) && stride > 1 && OW == 1)
    return at::convolution(x.to(at::kFloat), w.to(at::kFloat),
                           bias ? std::optional<at::Tensor>(bias->to(at::kFloat)) : std::nullopt, {stride, stride},
                           {pad, pad}, {1, 1}, false, {0, 0}, 1).to(x.scalar_type());
  return at::convolution(x, w, bias, {stride, stride}, {pad, pad}, {1, 1}, false, {0, 0}, 1);
}

at::Tensor fused_mbconv_cpu(const at::Tensor& x, const at::Tensor& conv_weight, const at::Tensor& conv_scale,
                            const at::Tensor& conv_shift, const std::optional<at::Tensor>& project_weight,
                            const std::optional<at::Tensor>& project_scale,
                            const std::optional<at::Tensor>& project_shift, int64_t stride, c10::string_view act_name,
                            bool residual) {
  const std::string op = "fused_mbconv";
  check_input4d(op, x);
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  check_same(op, x, conv_weight, "conv_weight");
  TORCH_CHECK(conv_weight.dim() != 4 || conv_weight.size(1) == Cin, op, ": input x has ", Cin,
              " channels but conv_weight ", conv_weight.sizes(), " expects ", conv_weight.size(1));
  TORCH_CHECK(conv_weight.dim() == 4 && conv_weight.size(1) == Cin && conv_weight.size(2) == conv_weight.size(3) &&
                  conv_weight.size(0) > 0,
              op, ": expected conv_weight of shape (Cmid, ", Cin, ", K, K) for Cin=", Cin, ", got ",
              conv_weight.sizes());
  const int64_t K = conv_weight.size(3), Cmid = conv_weight.size(0), pad = K / 2;
  TORCH_CHECK(K % 2 == 1, op, ": expected an odd kernel size K in conv_weight, got K=", K);
  check_vec(op, x, conv_scale, "conv_scale", Cmid);
  check_vec(op, x, conv_shift, "conv_shift", Cmid);
  const int np = given(project_weight) + given(project_scale) + given(project_shift);
  TORCH_CHECK(np == 0 || np == 3, op,
              ": expected project_weight, project_scale and project_shift all given or all None");
  const bool has_proj = np == 3;
  at::Tensor pw2d;
  int64_t Cout = Cmid;
  if (has_proj) {
    Cout = check_pw_stage(op, x, *project_weight, *project_scale, *project_shift, "project", Cmid);
    pw2d = pw_matrix(*project_weight);
  }
  check_stride(op, stride);
  const Act act = check_act(op, "act", std::string(act_name));
  TORCH_CHECK(!residual || (stride == 1 && Cout == Cin), op,
              ": residual=True needs stride 1 and as many output as input channels, got stride ", stride, ", Cin=",
              Cin, ", Cout=", Cout);
  TORCH_CHECK(H + 2 * pad >= K && W + 2 * pad >= K, op, ": input x of spatial size (", H, ", ", W,
              ") is smaller than the kernel size ", K);
  const int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
  const auto fmt = out_format(x);
  if (N == 0) return at::empty({N, Cout, OH, OW}, x.options(), fmt);

  const bool fast = use_fast();
  const at::Tensor csc = to_acc(conv_scale, x), csh = to_acc(conv_shift, x);
  at::Tensor h;
  // Fold the BN scale into the weights when they are smaller than the conv's output (stems: one tiny
  // pass); otherwise one epilogue pass over the output beats rescaling big weights on every call.
  if (fast && conv_few_channels(x, conv_weight, csc, csh, stride, act,
                        h = has_proj ? at::empty({N, Cmid, OH, OW}, x.options(), fmt)
                                     : new_output({N, Cmid, OH, OW}, x.options(), fmt))) {
    // direct conv (stems)
  } else if (fast && conv_weight.numel() <= N * Cmid * OH * OW) {
    const at::Tensor wf = (conv_weight.to(csc.scalar_type()) * csc.view({Cmid, 1, 1, 1})).to(x.scalar_type())
                              .contiguous(conv_weight.suggest_memory_format());
    h = kxk_conv(x, wf, conv_shift.to(x.scalar_type()), stride, pad, OW);
    act_inplace(h, act, true);
  } else if (fast) {
    h = kxk_conv(x, conv_weight, std::nullopt, stride, pad, OW);
    pw_epilogue_inplace(h, csc, csh, nullptr, act, true);
  } else {
    h = kxk_conv(x, conv_weight, std::nullopt, stride, pad, OW);
    pw_epilogue_inplace(h, csc, csh, nullptr, act, false);
  }
  if (has_proj) {
    if (!fast)
      return pwconv_bn_act_cpu(h, *project_weight, *project_scale, *project_shift, "identity",
                               residual ? std::optional<at::Tensor>(x) : std::nullopt);
    at::Tensor out = new_output({N, Cout, OH, OW}, x.options(), fmt);
    pw_bn_act_fast(h, pw2d, to_acc(*project_scale, x), to_acc(*project_shift, x), residual ? &x : nullptr,
                   Act::Identity, out);
    return out;
  }
  if (!h.is_contiguous(fmt)) h = h.contiguous(fmt);
  if (residual) h.add_(x);
  return h;
}

}  // namespace cpu
}  // namespace fastzoo

TORCH_LIBRARY_IMPL(fastzoo, CPU, m) {
  m.impl("mbconv", &fastzoo::cpu::mbconv_cpu);
  m.impl("fused_mbconv", &fastzoo::cpu::fused_mbconv_cpu);
}
