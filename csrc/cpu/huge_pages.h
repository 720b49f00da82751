// Buffers in 2 MiB pages where Linux grants them (transparent huge pages, which this kernel's default
// "madvise" mode gives only to memory that asks). A batch-1 forward streams its packed weights (efficientnet_b0:
// 21 MB) and its activations and scratch through a few thousand 4 KiB pages, and on these VMs every TLB miss is a
// nested page walk. With them in huge pages, at batch 1 efficientnet_b0 ran 1.038x as fast, mobilenet_v2 1.039x,
// mobilenet_v3_large 1.014x, mobilenet_v3_small 1.012x; at batch 32 efficientnet_b0 1.018x, mobilenet_v3_small
// 1.009x (two copies of a model in one process, one on 4 KiB pages, forwards alternating, 60-1000 each).
// Elsewhere, or where the kernel declines, they are ordinary memory.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace fastzoo {
namespace cpu {

// A flat tensor of numel elements; from 1 MiB in memory of its own, 2 MiB-aligned and madvised for huge pages
// (rounded up to whole ones: under half a page lost), smaller ones from at::empty.
at::Tensor huge_page_empty(int64_t numel, const at::TensorOptions& options);

// Copies of tensors packed one after another into 2 MiB-aligned chunks of huge pages (a BlockChain's packed
// weights: dozens of 10 KB - 1.5 MB tensors, each of which alone would take a whole page or none).
class HugePageArena {
 public:
  // a contiguous copy of t (same sizes and dtype) in the arena
  at::Tensor copy_of(const at::Tensor& t);

 private:
  std::vector<at::Tensor> chunks_;  // uint8, each a huge_page_empty
  int64_t used_ = 0;                // bytes used of the last chunk
};

}  // namespace cpu
}  // namespace fastzoo
