#include "huge_pages.h"

#include <algorithm>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastzoo {
namespace cpu {
namespace {
constexpr int64_t kHugePage = int64_t{2} << 20;
constexpr int64_t kChunk = 4 * kHugePage;  // an arena's chunk, or the tensor it copies if larger
}  // namespace

at::Tensor huge_page_empty(int64_t numel, const at::TensorOptions& options) {
  const int64_t bytes = numel * static_cast<int64_t>(options.dtype().itemsize());
#if defined(__linux__)
  if (bytes >= kHugePage / 2 && options.device().is_cpu()) {
    const int64_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    // mapped a page longer, then started at the first 2 MiB boundary: the kernel backs aligned 2 MiB ranges only
    const size_t mapped = static_cast<size_t>(rounded + kHugePage);
    void* base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base != MAP_FAILED) {
      const auto start = (reinterpret_cast<uintptr_t>(base) + kHugePage - 1) & ~static_cast<uintptr_t>(kHugePage - 1);
      madvise(reinterpret_cast<void*>(start), static_cast<size_t>(rounded), MADV_HUGEPAGE);  // a hint: may fail
      return at::from_blob(
          reinterpret_cast<void*>(start), {numel}, [base, mapped](void*) { munmap(base, mapped); }, options);
    }
  }
#endif
  return at::empty({numel}, options);
}

at::Tensor HugePageArena::copy_of(const at::Tensor& t) {
  const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
  const int64_t aligned = (bytes + 63) / 64 * 64;  // every copy 64-byte aligned, as ATen's allocator gives
  if (chunks_.empty() || used_ + aligned > chunks_.back().numel()) {
    chunks_.push_back(huge_page_empty(std::max(kChunk, aligned), at::TensorOptions().dtype(at::kByte)));
    used_ = 0;
  }
  at::Tensor copy = chunks_.back().narrow(0, used_, bytes).view(t.scalar_type());
  used_ += aligned;
  copy.copy_(t.reshape({-1}));
  return copy.view(t.sizes());
}

}  // namespace cpu
}  // namespace fastzoo
