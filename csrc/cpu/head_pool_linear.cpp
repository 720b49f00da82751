// A classifier head in one parallel region: a 1x1 conv + BN + act, the global average pool and a Linear
// (+ act), as BlockChain runs the last steps of efficientnet, mobilenet_v2 and mobilenet_v3 at small batches.
//
// Each task takes 16-channel panels of the conv's output, pools them as soon as they are computed and adds their
// share of the Linear at once (a rank-16 update of the logits from 16 rows of the Linear's transposed weight):
// no pool step, no conv output in memory, and the Linear's weights (5 MB for 1280 -> 1000, from DRAM) read panel
// by panel between the conv's FMAs instead of all after them. efficientnet_b0's head: 0.39 ms against 0.43 for
// the three steps; the weights' reads still follow each panel's FMAs rather than overlap them (prefetching them a
// panel ahead was slower). Each task sums into its own partial logits, added in task order at the end: the
// result does not depend on which thread ran a task.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <vector>

#include "cpu_kernels.h"
#include "parallel_tasks.h"
#include "fastzoo/cpu_vec.h"

namespace fastzoo {
namespace cpu {
namespace {

// The conv's input (all images, float32 rows) at most this many floats: the tasks each read all of it once
// per panel, so it must stay in the L2 cache (at batch 32 the GEMM of the step-by-step path, which reads
// each weight once for all images, wins).
constexpr int64_t kMaxInputFloats = 64 * 1024;

bool is_f32_vec(const at::Tensor& t, int64_t n) {
  return t.defined() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == n;
}

// acc[o] += sum_i w[i * ld + o] * v[i] over i < rows, o < n
void add_rows(float* acc, const float* w, int64_t ld, const float* v, int64_t rows, int64_t n) {
  using V = Vectorized<float>;
  constexpr int64_t L = V::size();
  for (int64_t o = 0; o < n; o += L) {
    const int64_t m = std::min(L, n - o);
    V a = V::loadu(acc + o, m);
    for (int64_t i = 0; i < rows; ++i) a = at::vec::fmadd(V::loadu(w + i * ld + o, m), V(v[i]), a);
    a.store(acc + o, m);
  }
}

}  // namespace

at::Tensor head_pool_linear(const at::Tensor& x, const at::Tensor& w1, const float* w1_panels,
                            const at::Tensor& sc1, const at::Tensor& sh1, Act act1, const at::Tensor& w2t,
                            const at::Tensor& sc2, const at::Tensor& sh2, Act act2) {
  if (!use_fast() || w1_panels == nullptr || x.scalar_type() != at::kFloat || x.dim() != 4 ||
      !x.is_contiguous(at::MemoryFormat::ChannelsLast) || w1.scalar_type() != at::kFloat || w1.dim() != 4 ||
      w2t.scalar_type() != at::kFloat || w2t.dim() != 2 || !w2t.is_contiguous())
    return {};
  const int64_t N = x.size(0), Cin = x.size(1), P = x.size(2) * x.size(3);
  const int64_t Cmid = w1.size(0), Cout = w2t.size(1);
  if (N == 0 || P == 0 || N * P * Cin > kMaxInputFloats || w1.size(1) != Cin || w1.size(2) * w1.size(3) != 1 ||
      w2t.size(0) != Cmid || !is_f32_vec(sc1, Cmid) || !is_f32_vec(sh1, Cmid) || !is_f32_vec(sc2, Cout) ||
      !is_f32_vec(sh2, Cout))
    return {};
  RECORD_FUNCTION("fastzoo::chain::head_pool_linear", c10::ArrayRef<const c10::IValue>{});
  const float *xp = x.const_data_ptr<float>(), *wt = w2t.const_data_ptr<float>();
  const float *s1 = sc1.const_data_ptr<float>(), *h1 = sh1.const_data_ptr<float>();
  const int64_t panels = (Cmid + 15) / 16;
  // about four tasks per thread: work stealing evens out a thread held up, and few partial logits to add
  const int64_t per = std::max<int64_t>(1, panels / (4 * at::get_num_threads()));
  const int64_t tasks = (panels + per - 1) / per;
  thread_local std::vector<float> partial;  // the tasks' partial logits, (tasks, N, Cout)
  partial.resize(std::max<int64_t>(partial.size(), tasks * N * Cout));
  float* parts = partial.data();
  parallel_tasks(tasks, [&] {
    thread_local std::vector<float> conv;  // a panel's conv output, (P, 16)
    conv.resize(std::max<int64_t>(conv.size(), P * 16));
    return [&](int64_t t) {
      float* acc = parts + t * N * Cout;
      std::fill_n(acc, N * Cout, 0.f);
      for (int64_t j = t * per, last = std::min(panels, (t + 1) * per); j < last; ++j) {
        const int64_t o0 = 16 * j, n = std::min<int64_t>(16, Cmid - o0);
        for (int64_t img = 0; img < N; ++img) {
          gemm_packed_bn_act(xp + img * P * Cin, Cin, w1_panels + o0 * Cin, P, Cin, n, conv.data(), 16, s1 + o0,
                             h1 + o0, nullptr, 0, act1);
          float mean[16];  // summed in pixel order, as global_avg_pool does
          std::copy_n(conv.data(), n, mean);
          for (int64_t p = 1; p < P; ++p)
            for (int64_t i = 0; i < n; ++i) mean[i] += conv[p * 16 + i];
          for (int64_t i = 0; i < n; ++i) mean[i] /= static_cast<float>(P);
          add_rows(acc + img * Cout, wt + o0 * Cout, Cout, mean, n, Cout);
        }
      }
    };
  });
  const float *s2 = sc2.const_data_ptr<float>(), *h2 = sh2.const_data_ptr<float>();
  at::Tensor out = new_output({N, Cout, 1, 1}, x.options(), at::MemoryFormat::Contiguous);
  float* op = out.data_ptr<float>();
  for (int64_t t = 1; t < tasks; ++t)
    for (int64_t i = 0; i < N * Cout; ++i) parts[i] += parts[t * N * Cout + i];
  for (int64_t i = 0; i < N * Cout; ++i) op[i] = apply_act<float>(parts[i] * s2[i % Cout] + h2[i % Cout], act2);
  return out;
}

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END
