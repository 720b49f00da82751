#include "block_chain.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <vector>

#include "cpu_kernels.h"

namespace fastzoo {
namespace cpu {

void BlockChain::add(const std::string& op, std::vector<std::optional<at::Tensor>> tensors,
                     std::vector<int64_t> ints, std::vector<std::string> strs) {
  struct Kind {
    const char* name;
    Op op;
    size_t tensors, ints, strs;
  };
  static const Kind kinds[] = {{"mbconv", Op::MBConv, 13, 2, 3},
                               {"fused_mbconv", Op::FusedMBConv, 6, 2, 1},
                               {"pwconv_bn_act", Op::PwConv, 4, 0, 1},
                               {"dwconv_bn_act", Op::DwConv, 3, 2, 1},
                               {"global_avg_pool", Op::GlobalAvgPool, 0, 0, 0}};
  for (const Kind& k : kinds) {
    if (op != k.name) continue;
    TORCH_CHECK(tensors.size() == k.tensors && ints.size() == k.ints && strs.size() == k.strs,
                "BlockChain.add: ", op, " takes ", k.tensors, " tensors, ", k.ints, " ints and ", k.strs,
                " strings after x, got ", tensors.size(), ", ", ints.size(), " and ", strs.size());
    Step step{k.op, std::move(tensors), std::move(ints), std::move(strs), {}};
    // weights packed at the first run: the 1x1 convs' (mbconv's expansion and projection, fused_mbconv's
    // projection, pwconv_bn_act's) and the depthwise convs' (as float32 (K*K, C), for 16-bit weights too: a bf16
    // model's mbconv transposed them on every call, 1% of efficientnet_b0's bf16 forward at batch 1)
    using Kind = Packed::Kind;
    std::vector<std::pair<size_t, Kind>> packs;
    if (k.op == Op::MBConv) packs = {{0, Kind::Panels}, {3, Kind::DwKC}, {10, Kind::Panels}};
    if (k.op == Op::FusedMBConv) packs = {{3, Kind::Panels}};
    if (k.op == Op::PwConv) packs = {{0, Kind::Panels}};
    if (k.op == Op::DwConv) packs = {{0, Kind::DwKC}};
    for (auto [i, kind] : packs) {
      const auto& w = step.t[i];
      if (!w.has_value() || !w->defined() || !w->device().is_cpu() || w->dim() != 4 || w->numel() == 0) continue;
      if (kind == Kind::Panels && w->scalar_type() == at::kBFloat16 && cpu_has_avx512bf16())
        kind = Kind::PanelsBf16;
      else if (w->scalar_type() != at::kFloat &&
               !(kind == Kind::DwKC && (w->scalar_type() == at::kBFloat16 || w->scalar_type() == at::kHalf)))
        continue;
      if (kind != Kind::DwKC ? w->size(2) * w->size(3) == 1 : w->size(1) == 1)
        step.packed.push_back(Packed{kind, *w});
    }
    // the other CPU tensors copied (the packed ones' kernels find them by the original's data pointer):
    // together in the arena's huge pages instead of scattered over 4 KiB ones (in-process A/B at batch 1:
    // efficientnet_b0 and mobilenet_v2 1.008x)
    for (size_t i = 0; i < step.t.size(); ++i) {
      const auto& w = step.t[i];
      if (!w.has_value() || !w->defined() || !w->device().is_cpu() || w->numel() == 0) continue;
      if (std::none_of(step.packed.begin(), step.packed.end(), [&](const Packed& p) { return p.w.is_same(*w); }))
        step.packed.push_back(Packed{Kind::Copy, *w, nullptr, -1, {}, i});
    }
    // a classifier head: the Linear's weight also transposed, for head_pool_linear
    const size_t n = steps_.size();
    if (k.op == Op::PwConv && n >= 2 && steps_[n - 1].op == Op::GlobalAvgPool && steps_[n - 2].op == Op::PwConv &&
        !step.packed.empty() && step.packed[0].kind == Kind::Panels) {
      step.packed.push_back(Packed{Kind::Transposed, step.packed[0].w});
      steps_[n - 2].head = true;
    }
    steps_.push_back(std::move(step));
    return;
  }
  TORCH_CHECK(false, "BlockChain.add: unknown op '", op,
              "'; expected mbconv, fused_mbconv, pwconv_bn_act, dwconv_bn_act or global_avg_pool");
}

namespace {
// The buffer the next new_output() call of this thread hands out, set by BlockChain::run per step.
thread_local at::Tensor* t_armed = nullptr;
// The running step's packed weights, for prepacked_panels and prepacked_dw_kc.
thread_local const void* t_packed = nullptr;

std::vector<int64_t> strides_of(at::IntArrayRef sizes, at::MemoryFormat format) {
  std::vector<int64_t> st(sizes.size(), 1);
  if (format == at::MemoryFormat::ChannelsLast && sizes.size() == 4) {
    const int64_t C = sizes[1], H = sizes[2], W = sizes[3];
    return {H * W * C, 1, W * C, C};
  }
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 2; d >= 0; --d) st[d] = st[d + 1] * sizes[d + 1];
  return st;
}
}  // namespace

at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format) {
  at::Tensor* buf = t_armed;
  t_armed = nullptr;  // one output per step
  if (buf == nullptr) return at::empty(sizes, options, format);
  const int64_t numel = c10::multiply_integers(sizes);
  if (!buf->defined() || buf->numel() < numel || buf->dtype() != options.dtype() || buf->device() != options.device()) {
    // a normal tensor even in inference mode: a later run outside it (no_grad) writes into it too
    c10::InferenceMode normal(false);
    *buf = huge_page_empty(numel, options);
  }
  return buf->as_strided(sizes, strides_of(sizes, format));
}

void BlockChain::refresh(const Step& st) const {
  for (Packed& p : st.packed) {
    const int64_t version = p.w.is_inference() ? 0 : static_cast<int64_t>(p.w._version());
    if (p.w.const_data_ptr() == p.data && version == p.version) continue;
    at::Tensor fresh;
    if (p.kind == Packed::Kind::Copy) {
      fresh = p.w;
    } else if (p.kind == Packed::Kind::DwKC) {
      fresh = dw_weight_kc(p.w, at::kFloat);
    } else if (p.kind == Packed::Kind::Transposed) {
      fresh = p.w.reshape({p.w.size(0), -1}).t().contiguous();
    } else if (p.kind == Packed::Kind::PanelsBf16) {
      const at::Tensor w2d = p.w.reshape({p.w.size(0), -1});
      fresh = at::empty({packed_panels_bf16_size(w2d.size(1), w2d.size(0))}, w2d.options());
      pack_panels_bf16(w2d, reinterpret_cast<uint16_t*>(fresh.data_ptr<c10::BFloat16>()));
    } else {
      const at::Tensor w2d = p.w.reshape({p.w.size(0), -1}).contiguous();
      fresh = at::empty({packed_panels_size(w2d.size(1), w2d.size(0))}, w2d.options());
      pack_jobs({{&w2d, nullptr, fresh.data_ptr<float>()}});
    }
    // into the arena: in place where a weight changed in place (the same shape), else a new copy
    if (p.packed.defined() && p.packed.sizes() == fresh.sizes() && p.packed.dtype() == fresh.dtype())
      p.packed.copy_(fresh);
    else
      p.packed = arena_.copy_of(fresh);
    if (p.kind == Packed::Kind::Copy) st.t[p.arg] = p.packed;
    p.data = p.w.const_data_ptr();
    p.version = version;
  }
}

namespace {
// w's packed copy of that kind among a step's, or null
const BlockChain::Packed* find_packed(const std::vector<BlockChain::Packed>* packed, const at::Tensor& w,
                                      BlockChain::Packed::Kind kind) {
  if (packed == nullptr || !w.defined()) return nullptr;
  for (const auto& p : *packed)
    if (p.kind == kind && p.data == w.const_data_ptr() && p.w.numel() == w.numel() && p.w.size(0) == w.size(0) &&
        w.scalar_type() == p.w.scalar_type() && w.is_contiguous())
      return &p;
  return nullptr;
}
// the running step's
const BlockChain::Packed* prepacked(const at::Tensor& w, BlockChain::Packed::Kind kind) {
  return find_packed(static_cast<const std::vector<BlockChain::Packed>*>(t_packed), w, kind);
}
}  // namespace

const float* prepacked_panels(const at::Tensor& w) {
  const BlockChain::Packed* p = prepacked(w, BlockChain::Packed::Kind::Panels);
  return p ? p->packed.const_data_ptr<float>() : nullptr;
}

const uint16_t* prepacked_panels_bf16(const at::Tensor& w) {
  const BlockChain::Packed* p = prepacked(w, BlockChain::Packed::Kind::PanelsBf16);
  return p ? reinterpret_cast<const uint16_t*>(p->packed.const_data_ptr<c10::BFloat16>()) : nullptr;
}

at::Tensor prepacked_dw_kc(const at::Tensor& w) {
  const BlockChain::Packed* p = prepacked(w, BlockChain::Packed::Kind::DwKC);
  return p ? p->packed : at::Tensor();
}

namespace {
// x (N, C, H, W) averaged over H and W into (N, C, 1, 1): a classifier head's adaptive average pool to 1x1.
// Dense channels_last float32 or bf16 (the chain's layouts) summed in float32 row by row in pixel order, as
// ATen's channels_last kernel does, and rounded once; anything else through ATen. (bf16 through ATen converted
// the whole input to float32 first: 0.3 ms of mobilenet_v3_small's 17 ms forward at batch 32.)
template <typename T>
void pool_images(const T* xp, T* op, int64_t N, int64_t P, int64_t C) {
  at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
    std::vector<float> acc(C);
    for (int64_t n = b; n < e; ++n) {
      const T* xn = xp + n * P * C;
      for (int64_t c = 0; c < C; ++c) acc[c] = static_cast<float>(xn[c]);
      for (int64_t p = 1; p < P; ++p)
        for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<float>(xn[p * C + c]);
      for (int64_t c = 0; c < C; ++c) op[n * C + c] = static_cast<T>(acc[c] / static_cast<float>(P));
    }
  });
}

at::Tensor global_avg_pool(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, "global_avg_pool: expected a 4-d input, got ", x.dim(), " dimensions");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = H * W;
  at::Tensor out = new_output({N, C, 1, 1}, x.options(), at::MemoryFormat::Contiguous);
  const bool own = P > 0 && x.stride(1) == 1 && x.stride(3) == C && x.stride(2) == W * C && x.stride(0) == P * C;
  if (own && x.scalar_type() == at::kFloat)
    pool_images(x.const_data_ptr<float>(), out.data_ptr<float>(), N, P, C);
  else if (own && x.scalar_type() == at::kBFloat16)
    pool_images(x.const_data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>(), N, P, C);
  else
    out.copy_(x.mean({2, 3}, true));
  return out;
}
}  // namespace

at::Tensor BlockChain::run_head(size_t k, const at::Tensor& x) const {
  const Step &conv = steps_[k], &linear = steps_[k + 2];
  if (conv.t[3].has_value() || linear.t[3].has_value()) return {};  // residuals: not a classifier head
  refresh(linear);
  const at::Tensor w2 = linear.t[0].value_or(at::Tensor());
  const Packed* wt = find_packed(&linear.packed, w2, Packed::Kind::Transposed);
  const Act act1 = parse_act(conv.s[0]), act2 = parse_act(linear.s[0]);
  // the Linear a 1x1 conv (head_pool_linear checks the rest; the step-by-step path reports what does not fit)
  if (wt == nullptr || !valid_act(act1) || !valid_act(act2) || w2.dim() != 4 || w2.size(2) * w2.size(3) != 1)
    return {};
  const at::Tensor& w1 = *conv.t[0];
  return head_pool_linear(x, w1, prepacked_panels(w1), *conv.t[1], *conv.t[2], act1, wt->packed, *linear.t[1],
                          *linear.t[2], act2);
}

at::Tensor BlockChain::run(const at::Tensor& x0) const {
  std::lock_guard<std::mutex> lock(running_);  // the buffers belong to one run at a time
  struct Disarm {  // also when an op throws: no later new_output() of this thread may hand out a buffer
    ~Disarm() { t_armed = nullptr, t_packed = nullptr; }
  } disarm;
  at::Tensor x = x0;
  for (size_t k = 0; k < steps_.size(); ++k) {
    const Step& st = steps_[k];
    // outputs but the last in buffer k % 2: step k reads buffer (k - 1) % 2 (or x0) and writes the other;
    // the last output is fresh memory, the caller's to keep
    t_armed = k + 1 < steps_.size() ? &buffers_[k % 2] : nullptr;
    t_packed = nullptr;
    refresh(st);
    t_packed = &st.packed;
    const auto& t = st.t;
    // a None where the schema wants a Tensor: the op's own check reports it by name
    auto T = [&](size_t k) { return t[k].has_value() ? *t[k] : at::Tensor(); };
    // each step a range of its own in torch.profiler (a flag check when no profiler runs)
    static const char* const names[] = {"fastzoo::chain::mbconv", "fastzoo::chain::fused_mbconv",
                                        "fastzoo::chain::pwconv_bn_act", "fastzoo::chain::dwconv_bn_act",
                                        "fastzoo::chain::global_avg_pool"};
    if (st.head && k + 2 < steps_.size()) {  // this step, the pool and the Linear in one region where they can
      t_armed = k + 3 < steps_.size() ? &buffers_[k % 2] : nullptr;  // the output of step k + 2
      if (at::Tensor y = run_head(k, x); y.defined()) {
        x = y;
        k += 2;
        continue;
      }
      t_armed = k + 1 < steps_.size() ? &buffers_[k % 2] : nullptr;
    }
    RECORD_FUNCTION(names[static_cast<int>(st.op)], c10::ArrayRef<const c10::IValue>{});
    switch (st.op) {
      case Op::MBConv:
        x = mbconv_cpu(x, t[0], t[1], t[2], T(3), T(4), T(5), t[6], t[7], t[8], t[9], T(10), T(11), T(12), st.i[0],
                       st.s[0], st.s[1], st.s[2], st.i[1] != 0);
        break;
      case Op::FusedMBConv:
        x = fused_mbconv_cpu(x, T(0), T(1), T(2), t[3], t[4], t[5], st.i[0], st.s[0], st.i[1] != 0);
        break;
      case Op::PwConv:
        x = pwconv_bn_act_cpu(x, T(0), T(1), T(2), st.s[0], t[3]);
        break;
      case Op::DwConv:
        x = dwconv_bn_act_cpu(x, T(0), T(1), T(2), st.i[0], st.i[1], st.s[0]);
        break;
      case Op::GlobalAvgPool:
        x = global_avg_pool(x);
        break;
    }
  }
  return x;
}

}  // namespace cpu
}  // namespace fastzoo
