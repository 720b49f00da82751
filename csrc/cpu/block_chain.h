// A chain of fused CPU ops run back to back in one call from Python (fastzoo.layers.BlockSequence): at
// batch 1 the Python module path and the dispatcher cost ~50 us per block, as much as a small block's math.
#pragma once
#include <ATen/ATen.h>

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "huge_pages.h"

namespace fastzoo {
namespace cpu {

class BlockChain {
 public:
  // Appends op `op` (mbconv, fused_mbconv, pwconv_bn_act or dwconv_bn_act, or global_avg_pool: the mean over
  // H and W as (N, C, 1, 1), no arguments) with its schema's arguments
  // after x, split by kind in schema order: tensors (None allowed where the schema has Tensor?), ints
  // (bools as 0/1), strings. Checks the counts; the op itself checks the values when it runs.
  void add(const std::string& op, std::vector<std::optional<at::Tensor>> tensors, std::vector<int64_t> ints,
           std::vector<std::string> strs);
  // x through every op in order, each calling the CPU kernel directly (no dispatcher, no autograd).
  at::Tensor run(const at::Tensor& x) const;
  size_t size() const { return steps_.size(); }

  // A weight of a step in the layout its kernel reads, in the chain's huge-page arena, made again when the
  // weight's data pointer or version changes: a float32 1x1 conv's packed panels (prepacked_panels), a bf16
  // one's (prepacked_panels_bf16), a float32 depthwise conv's (K*K, C) copy (dw_weight_kc), a classifier
  // Linear's float32 weight transposed (head_pool_linear), or a plain copy of any other tensor argument (BN
  // scales and shifts, SE weights), which the step then runs with in its place (argument `arg`).
  struct Packed {
    enum class Kind { Panels, PanelsBf16, DwKC, Transposed, Copy } kind;
    at::Tensor w;
    const void* data = nullptr;
    int64_t version = -1;
    at::Tensor packed;
    size_t arg = 0;  // Copy: the argument it stands in for
  };

 private:
  enum class Op { MBConv, FusedMBConv, PwConv, DwConv, GlobalAvgPool };
  struct Step {
    Op op;
    // the arguments; a Copy kind's copy in place of the original, which its Packed keeps
    mutable std::vector<std::optional<at::Tensor>> t;
    std::vector<int64_t> i;
    std::vector<std::string> s;
    mutable std::vector<Packed> packed;
    // a pwconv_bn_act followed by global_avg_pool and a pwconv_bn_act on the pooled values (a classifier head):
    // run() may run the three as one head_pool_linear
    bool head = false;
  };
  // (re)packs what of step st changed, into arena_
  void refresh(const Step& st) const;
  // steps k, k + 1 and k + 2 (a head) on x by head_pool_linear, or an undefined tensor where it does not apply
  at::Tensor run_head(size_t k, const at::Tensor& x) const;
  mutable HugePageArena arena_;  // holds every Packed's packed tensor
  std::vector<Step> steps_;
  // the ping-pong output buffers (flat, grown as needed) of the steps but the last; one run at a time
  mutable at::Tensor buffers_[2];
  mutable std::mutex running_;
};

}  // namespace cpu
}  // namespace fastzoo
