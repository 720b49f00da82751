// The cache-tiled mbconv fast path (float32, or bf16 where the CPU has AVX512-BF16; dense channels_last in and
// out). bf16 runs its GEMMs in bf16 (gemm_bf16_bn_act) and keeps the expanded rows and the depthwise in float32.
//
// Per sample and strip of output rows, the expanded rows the strip needs (its rows plus the depthwise
// halo) are computed into a per-thread buffer, go through BN + act, the depthwise conv + BN + act and
// the projection GEMM + BN (+ residual) while they are still in cache: the expanded tensor, the block's
// largest (3-6x its input), never goes to memory. With squeeze-excite the gate needs the means of the
// whole depthwise output, so pass 1 stores that output (and per-strip channel sums, reduced in strip
// order, not as threads finish: the same result every run) and pass 2 gates and projects it strip by strip.
// Small maps at batch 1, where strips would recompute too much halo, run as one piece per image with the
// channels split across threads instead (image_split_channels).
// GEMMs: gemm_packed_bn_act (the BN + act epilogue in registers; weights packed once per call, or once for
// all calls in a BlockChain), one call per strip, single-threaded inside parallel_tasks.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <vector>

#include "cpu_kernels.h"
#include "huge_pages.h"
#include "parallel_tasks.h"
#include "fastzoo/cpu_vec.h"

namespace fastzoo {
namespace cpu {
namespace {

constexpr int64_t kStripFloats = 64 * 1024;  // per-thread working set of a strip at batch 1: 256 KiB

// With a sample per thread or more, strips as large as the L2 cache: a 1 MiB working set on this 1 MiB-L2
// machine ran batch 32 5-12% faster than 256 KiB (mobilenet_v2, v3_large, efficientnet_b0; interleaved A/B),
// while at batch 1 it lost on efficientnet_b0 (+8%), where 256 KiB stays.
int64_t batched_strip_floats() {
  static const int64_t floats = [] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return std::clamp<int64_t>(l2 > 0 ? l2 / static_cast<int64_t>(sizeof(float)) : kStripFloats, kStripFloats,
                               8 * kStripFloats);
  }();
  return floats;
}
// The largest buffer kept for the next call, 64 MiB: efficientnet_b0 at batch 32 needs up to 51 MiB for its SE
// blocks' dw output, which as fresh memory per call (above glibc's 32 MiB mmap threshold) page-faulted 36k
// times per forward (keeping it: batch 32 -13%, interleaved A/B). Held by the calling thread until it exits.
constexpr int64_t kScratchMax = 16 * 1024 * 1024;

// d[c] = w[c] * g[c] (d may be w)
void gate_rows_to(const float* w, const float* g, float* d, int64_t C) {
  using V = Vectorized<float>;
  constexpr int64_t L = V::size();
  int64_t c = 0;
  for (; c + L <= C; c += L) (V::loadu(w + c) * V::loadu(g + c)).store(d + c);
  for (; c < C; ++c) d[c] = w[c] * g[c];
}

// How many parts to cut each of N images' `len` rows (or pixels) into, at least `parts`: part p of an image is
// [len * p / parts, len * (p + 1) / parts), so parts differ by one row at most, and parallel_tasks starts
// thread i on the parts [tasks * i / threads, tasks * (i + 1) / threads). More parts where that leaves the
// busiest thread fewer rows: 14 rows in parts of at most 6 (6 + 6 + 2) gave one thread 12 and the other 2, at
// batch 1 one part per image left the other thread idle; 4 parts of 3-4 rows give each 7.
int64_t balanced_parts(int64_t N, int64_t len, int64_t parts, int64_t threads) {
  auto busiest = [&](int64_t k) {  // the most rows a thread's run of parts holds
    const int64_t tasks = N * k;
    auto rows_before = [&](int64_t t) { return t / k * len + len * (t % k) / k; };  // rows of tasks [0, t)
    int64_t most = 0;
    for (int64_t i = 0; i < threads; ++i)
      most = std::max(most, rows_before(tasks * (i + 1) / threads) - rows_before(tasks * i / threads));
    return most;
  };
  int64_t best = parts;
  for (int64_t k = parts + 1, last = std::min(len, parts + 2 * threads); k <= last; ++k)
    if (busiest(k) < busiest(best)) best = k;
  return best;
}

inline const float* fp(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; }

// Buffers of the calling thread kept between calls (they only grow): no allocation, page faults or zero fill
// per call (zero-filled std::vectors were 3% of mobilenet_v3_large at batch 1). Slots 0-1: a strip's buffers
// (any thread) or an image's (the caller, channel split); 2: a channel-split worker's own, or the SE path's
// dw output (the caller, strips); 3-4: the caller's packed expansion and projection weights (strips, or the
// channel split's projection by pixel rows); 5: a thread's gated projection weights (strips with SE); 6: the
// caller's per-strip SE sums; 7: a thread's bf16 rows for the projection (bf16 blocks); 8-9: the caller's SE means
// and gate; 10: the caller's expanded image (strips of one image expanded first).
float* scratch(int slot, int64_t n) {
  thread_local at::Tensor bufs[11];  // from 1 MiB in huge pages (huge_pages.h)
  at::Tensor& b = bufs[slot];
  if (!b.defined() || b.numel() < n) b = huge_page_empty(n, at::TensorOptions().dtype(at::kFloat));
  return b.data_ptr<float>();
}
// The same slots holding n 16-bit values (packed bf16 weights, bf16 rows).
uint16_t* scratch16(int slot, int64_t n) { return reinterpret_cast<uint16_t*>(scratch(slot, (n + 1) / 2)); }

// The SE gate (N, C) from the means m (N, C): into the caller's scratch by se_gate_f32 (no ATen call), else
// through se_gate, kept alive in `keep`.
const float* se_gate_of(const float* m, int64_t N, int64_t C, const SeArgs& se, at::Tensor& keep) {
  float* g = scratch(9, N * C);
  if (se_gate_f32(m, N, C, se, g)) return g;
  keep = se_gate(at::from_blob(const_cast<float*>(m), {N, C}, at::kFloat), se.w1, se.b1, se.w2, se.b2, se.act,
                 se.gate);
  return keep.const_data_ptr<float>();
}

// w (Cout x K) times the gate packed for gemm_packed_bn_act into this thread's scratch slot (pack_jobs: split
// across the threads outside a parallel region); from w's prepacked panels `pre` where there are some (then
// only the gate is applied).
const float* packed(int slot, const at::Tensor& w, const float* gate, const float* pre) {
  if (pre != nullptr && gate == nullptr) return pre;
  float* wp = scratch(slot, packed_panels_size(w.size(1), w.size(0)));
  pack_jobs({{&w, gate, wp, pre}});
  return wp;
}

// One image, channels split across threads: expand + BN + act, dw + BN + act (+ the SE sums) for blocks
// of the expanded channels, a block per task; the SE gate; then the projection for a block of output channels per
// thread. The gate multiplies the dw output's rows where they are fewer than the output channels (7x7 maps: 49
// rows of 1152 against 192-320 weight columns: 2-3% off such a block, interleaved A/B) and the projection reads the
// prepacked weights as they are; otherwise it is folded into the weights, each thread packing the panels it uses
// one at a time (packing all of them on the calling thread was a tenth of a 7x7 block, the other thread waiting).
void image_split_channels(const float* xn, const at::Tensor& ew2d, const at::Tensor& esc, const at::Tensor& esh,
                          const at::Tensor& wkc, const at::Tensor& dsc, const at::Tensor& dsh, const SeArgs* se,
                          const at::Tensor& pw2d, const at::Tensor& psc, const at::Tensor& psh, int64_t Cin,
                          int64_t H, int64_t W, int64_t Cmid, int64_t Cout, int64_t K, int64_t stride, int64_t OH,
                          int64_t OW, Act act, bool residual, float* on) {
  constexpr int64_t CB = 16;  // channel blocks of two AVX2 vectors: one panel of the packed weights
  const int64_t HW = H * W, OP = OH * OW, KK = K * K;
  const bool has_expand = ew2d.defined();
  float* ebuf = has_expand ? scratch(0, HW * Cmid) : nullptr;
  float* dbuf = scratch(1, OP * Cmid);
  float* sums = se ? scratch(8, Cmid) : nullptr;
  if (se) std::fill_n(sums, Cmid, 0.f);
  const float* in = has_expand ? ebuf : xn;
  const float* wk = fp(wkc);
  const float* ew_pre = has_expand ? prepacked_panels(ew2d) : nullptr;
  const float* pw_pre = prepacked_panels(pw2d);
  auto expand_dw = [&](int64_t c0, int64_t nc, float* wslice) {
    if (has_expand)
      gemm_bn_act(xn, Cin, ew2d.const_data_ptr<float>() + c0 * Cin, ew_pre ? ew_pre + c0 * Cin : nullptr, nullptr,
                  HW, Cin, nc, ebuf + c0, Cmid, fp(esc) + c0, fp(esh) + c0, nullptr, 0, act);
    for (int64_t k = 0; k < KK; ++k) std::copy_n(wk + k * Cmid + c0, nc, wslice + k * nc);
    dw_rows_f32(in + c0, Strides4{0, 1, W * Cmid, Cmid}, wslice, fp(dsc) + c0, fp(dsh) + c0,
                dbuf + c0, Strides4{0, 1, OW * Cmid, Cmid}, nc, H, W, OH, OW, K, stride, K / 2, act, 0, OH,
                se ? sums + c0 : nullptr);
  };
  // About four tasks per thread, taken with work stealing: one run of blocks per thread (at::parallel_for)
  // left a thread waiting at the end whenever the other was held up (7x7 1152-channel blocks 0.88-0.92x, the
  // models 0.97x / 0.95x at batch 1; eight per thread: 14x14 480 channels in 16-channel tasks 1.11x).
  const int64_t threads = at::get_num_threads(), panels = (Cmid + CB - 1) / CB;
  const int64_t per = std::max<int64_t>(1, panels / (4 * threads));  // panels per task
  parallel_tasks((panels + per - 1) / per, [&] {
    return [&, wslice = scratch(2, KK * per * CB)](int64_t t) {  // a task's columns of the (K*K, Cmid) weights
      const int64_t c0 = t * per * CB;
      expand_dw(c0, std::min(Cmid, c0 + per * CB) - c0, wslice);
    };
  });
  at::Tensor g;
  const float* gp = nullptr;
  if (se) {
    for (int64_t c = 0; c < Cmid; ++c) sums[c] /= static_cast<float>(OP);
    gp = se_gate_of(sums, 1, Cmid, *se, g);
  }
  if (gp && OP < Cout) {  // gate the rows (see above)
    at::parallel_for(0, OP, (OP + threads - 1) / threads, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) gate_rows_to(dbuf + p * Cmid, gp, dbuf + p * Cmid, Cmid);
    });
    gp = nullptr;
  }
  const int64_t blocks = (Cout + CB - 1) / CB;
  if (blocks % threads == 0) {  // blocks of output channels per thread
    at::parallel_for(0, blocks, 1, [&](int64_t b, int64_t e) {
      const int64_t o0 = b * CB, no = std::min(Cout, e * CB) - o0;
      gemm_bn_act(dbuf, Cmid, pw2d.const_data_ptr<float>() + o0 * Cmid, pw_pre ? pw_pre + o0 * Cmid : nullptr, gp,
                  OP, Cmid, no, on + o0, Cout, fp(psc) + o0, fp(psh) + o0, residual ? xn + o0 : nullptr, Cin,
                  Act::Identity);
    });
    return;
  }
  // Output channels that do not split evenly (40 = 16 + 16 + 8 left one thread a quarter of the work):
  // rows of pixels per thread.
  const float* pw = packed(4, pw2d, gp, pw_pre);
  at::parallel_for(0, OP, (OP + threads - 1) / threads, [&](int64_t p0, int64_t p1) {
    gemm_packed_bn_act(dbuf + p0 * Cmid, Cmid, pw, p1 - p0, Cmid, Cout, on + p0 * Cout, Cout, fp(psc), fp(psh),
                       residual ? xn + p0 * Cin : nullptr, Cin, Act::Identity);
  });
}

}  // namespace

bool mbconv_tiled(const at::Tensor& x, const at::Tensor& ew2d, const at::Tensor& esc, const at::Tensor& esh,
                  const at::Tensor& dw_weight, const at::Tensor& dsc, const at::Tensor& dsh, const SeArgs* se,
                  const at::Tensor& pw2d, const at::Tensor& psc, const at::Tensor& psh, int64_t stride, Act act,
                  bool residual, at::Tensor& out) {
  const auto cl = at::MemoryFormat::ChannelsLast;
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  if ((x.scalar_type() != at::kFloat && !(bf16 && cpu_has_avx512bf16())) || !x.is_contiguous(cl) ||
      !out.is_contiguous(cl) || dw_weight.scalar_type() != x.scalar_type() || pw2d.scalar_type() != x.scalar_type())
    return false;
  const bool has_expand = ew2d.defined();
  const bool stage_in = has_expand || bf16;  // the dw input staged in a float32 buffer (expanded or converted)
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cmid = dw_weight.size(0), Cout = pw2d.size(0), K = dw_weight.size(3), pad = K / 2;
  const int64_t OH = out.size(2), OW = out.size(3);
  const int64_t threads = at::get_num_threads();

  // Strips of rows: the expanded rows of a strip (with halo) and its dw output fit the per-thread budget, a
  // whole image when it nearly fits, at least `threads` tasks. Where that would recompute too much halo
  // (small maps at batch 1), a small image runs in one piece with its channels split across threads, and
  // anything else goes to the untiled path.
  const int64_t row_floats = (stage_in ? stride * W * Cmid : 0) + OW * Cmid;
  const int64_t budget = N >= threads ? batched_strip_floats() : kStripFloats;
  int64_t R = std::clamp<int64_t>(budget / std::max<int64_t>(1, row_floats), 1, OH);
  if (OH * row_floats <= 2 * kStripFloats) R = OH;
  // A whole image fits one strip, but there are fewer images than threads: for wide blocks, split the image's
  // channels rather than cut it into strips only to feed the threads, which recomputes halo rows (A/B at
  // batch 1, 7x7: 192 -> 1152 -> 320 k3 0.67 -> 0.48 ms, 160 -> 960 -> 160 0.29 -> 0.26 ms; but 80 -> 200
  // -> 80 at 14x14 0.12 -> 0.16 ms and 24 -> 96 k5 s2 0.12 -> 0.32 ms, so not below 512 channels).
  const bool feed_only = has_expand && R == OH && N < threads && Cmid >= 512;
  int64_t strips = (OH + R - 1) / R;
  if (N * strips < threads) strips = std::min(OH, (threads + N - 1) / N);
  // too much halo where a strip's expanded rows exceed 1.5x its own
  auto halo_too_big_at = [&](int64_t parts) {
    const int64_t r = (OH + parts - 1) / parts;
    return has_expand && parts > 1 && (r * stride + K - stride) > 3 * r * stride / 2;
  };
  // more, shorter strips where that evens out the threads' shares, unless it makes the halo too big (at
  // batch 32 it sent efficientnet_b0's 14x14 k5 blocks to the untiled path: +11%)
  if (const int64_t sb = balanced_parts(N, OH, strips, threads); !halo_too_big_at(sb) || halo_too_big_at(strips))
    strips = sb;
  R = (OH + strips - 1) / strips;  // the longest strip
  // A thread's run of consecutive strips computes the shared halo rows once (see pass 1), so only its first
  // strip recomputes any: too much where that exceeds half the run's own expanded rows.
  const int64_t run_rows = std::max<int64_t>(1, N * strips / threads) * R * stride;
  const bool run_halo_too_big = has_expand && strips > 1 && 2 * (K - stride) > run_rows;
  // An image small enough to split by channels runs that way where its strips would be short (the weights,
  // read once per strip, are then the larger traffic: 14x14 -> 7x7 672 channels k5 0.41 ms split, 0.49 ms in
  // strips); a larger one runs in strips unless even its threads' runs recompute too much halo (28x28 240
  // channels k5 in 4-row strips: 0.43 ms, untiled 0.57 ms).
  const bool can_split = N < threads && OH * row_floats <= 4 * kStripFloats;
  const bool too_few_strips = N * strips < threads;  // a thread left without one
  const bool split_channels = can_split && (feed_only || halo_too_big_at(strips) || too_few_strips);
  if (!split_channels && (run_halo_too_big || too_few_strips)) return false;
  if (split_channels && bf16) return false;  // the channel split is float32 only

  // dw weights as (K*K, Cmid), the layout the channels_last depthwise kernel reads
  const at::Tensor wkc = dw_weight_kc(dw_weight, at::kFloat);
  const float* xp = bf16 ? nullptr : x.const_data_ptr<float>();
  float* op = bf16 ? nullptr : out.data_ptr<float>();
  const c10::BFloat16* xb = bf16 ? x.const_data_ptr<c10::BFloat16>() : nullptr;
  c10::BFloat16* ob = bf16 ? out.data_ptr<c10::BFloat16>() : nullptr;
  const Strides4 xs{H * W * Cin, 1, W * Cin, Cin};
  const int64_t OP = OH * OW;

  if (split_channels) {
    for (int64_t n = 0; n < N; ++n)
      image_split_channels(xp + n * xs.n, ew2d, esc, esh, wkc, dsc, dsh, se, pw2d, psc, psh, Cin, H, W, Cmid, Cout,
                           K, stride, OH, OW, act, residual, op + n * OP * Cout);
    return true;
  }

  // The weights packed into the caller's scratch. With SE, the projection's gate is folded into its packed
  // weights where that is less work than gating the Cmid-wide rows of the dw output: fewer output channels
  // than pixels, as in nearly every block (packed in pass 2, per image by each thread).
  // But a float32 image alone with at most 4 pixels per output channel (14x14 maps) gates the rows, each task
  // its own: its gated weights, packed by both threads in a region of their own and read whole by both, cost
  // a region and, where the VM puts the two vCPUs on different core complexes, one thread's half of them read
  // from the other's cache. In-process A/B (ad hoc, caches flushed before each forward): efficientnet_b0
  // 1.020-1.025x in such phases, 1.002-1.006x in the others; mobilenet_v3_large 1.010x; gating rows at every
  // map size instead: 1.04-1.06x there but 0.989-1.000x in the others.
  // bf16 gates its packed bf16 weights per image the same way (gate_panels_bf16), or else the rows as it
  // converts them for the projection.
  const bool gate_weights = se && Cout < OP && !(N == 1 && !bf16 && OP <= 4 * Cout);
  // (a BlockChain's are packed already: prepacked_panels)
  const float* ew_pre = has_expand && !bf16 ? prepacked_panels(ew2d) : nullptr;
  const float* pw_pre = bf16 ? nullptr : prepacked_panels(pw2d);
  const float* ewp = ew_pre;
  const float* pwp = gate_weights && !bf16 ? nullptr : pw_pre;
  std::vector<PackJob> jobs;
  if (has_expand && !ewp && !bf16) {
    jobs.push_back({&ew2d, nullptr, scratch(3, packed_panels_size(Cin, Cmid))});
    ewp = jobs.back().wp;
  }
  if (!gate_weights && !pwp && !bf16) {
    jobs.push_back({&pw2d, nullptr, scratch(4, packed_panels_size(Cmid, Cout))});
    pwp = jobs.back().wp;
  }
  pack_jobs(jobs);
  auto packed_bf16 = [&](int slot, const at::Tensor& w) {
    if (const uint16_t* pre = prepacked_panels_bf16(w)) return pre;
    uint16_t* wp = scratch16(slot, packed_panels_bf16_size(w.size(1), w.size(0)));
    pack_panels_bf16(w, wp);
    return static_cast<const uint16_t*>(wp);
  };
  const uint16_t* ew16 = bf16 && has_expand ? packed_bf16(3, ew2d) : nullptr;
  const uint16_t* pw16 = bf16 ? packed_bf16(4, pw2d) : nullptr;
  // The two stages whose data types differ. Image n's rows [r0, r1) expanded (+ BN + act; bf16 without an
  // expansion: converted) into e, float32 rows W * Cmid apart:
  auto expand_rows = [&](int64_t n, int64_t r0, int64_t r1, float* e) {
    const int64_t at = (n * H + r0) * W * Cin, P = (r1 - r0) * W;
    if (!bf16)
      gemm_packed_bn_act(xp + at, Cin, ewp, P, Cin, Cmid, e, Cmid, fp(esc), fp(esh), nullptr, 0, act);
    else if (has_expand)
      gemm_bf16_bn_act(xb + at, Cin, ew16, P, Cin, Cmid, e, Cmid, fp(esc), fp(esh), nullptr, 0, act);
    else
      rows_to_f32(xb + at, P, Cin, Cin, e, Cmid);
  };
  // P bf16 rows a projected by the packed weights w16 (+ BN (+ residual)) into the output pixels q.. (of all images)
  auto project_bf16 = [&](const c10::BFloat16* a, int64_t P, int64_t q, const uint16_t* w16) {
    gemm_bf16_bn_act(a, Cmid, w16, P, Cmid, Cout, ob + q * Cout, Cout, fp(psc), fp(psh),
                     residual ? xb + q * Cin : nullptr, Cin, Act::Identity);
  };
  // P dw-output rows d projected (+ BN (+ residual)) into the output pixels q.. (of all images): float32 with the
  // packed weights wp, bf16 (d float32, or bf16 with SE) with the rows times `gate` (when not null) converted first.
  auto project_rows = [&](const auto* d, int64_t P, int64_t q, const float* wp, const float* gate) {
    if constexpr (std::is_same_v<decltype(d), const float*>) {
      if (!bf16) {
        gemm_packed_bn_act(d, Cmid, wp, P, Cmid, Cout, op + q * Cout, Cout, fp(psc), fp(psh),
                           residual ? xp + q * Cin : nullptr, Cin, Act::Identity);
        return;
      }
    }
    auto* a = reinterpret_cast<c10::BFloat16*>(scratch16(7, P * Cmid));
    rows_to_bf16(d, P, Cmid, Cmid, gate, a, Cmid);
    project_bf16(a, P, q, pw16);
  };
  // pass 1: expand + BN + act + depthwise + BN + act per strip; without SE, the projection right away
  // with SE: the dw output (N, OH, OW, Cmid), the calling thread's scratch up to kScratchMax floats (a fresh
  // buffer per call page-faulted ~950 times per efficientnet_b0 forward at batch 1), and the per-strip sums.
  // bf16 keeps that output in bf16 (hb), rounded strip by strip: at batch 32 it goes to memory and back (up to
  // 51 MiB a block in float32; bf16 efficientnet_b0 1.09x faster so, mobilenet_v3_large 1.03x, in-process A/B).
  at::Tensor h2t;
  float* hp = nullptr;
  c10::BFloat16* hb = nullptr;
  float* sums = nullptr;  // (N, strips, Cmid), in the caller's scratch: no ATen calls between the passes
  if (se) {
    const int64_t floats = bf16 ? (N * OP * Cmid + 1) / 2 : N * OP * Cmid;
    if (floats <= kScratchMax) {
      hp = scratch(2, floats);
    } else {
      h2t = at::empty({N, OH, OW, Cmid}, x.options().dtype(bf16 ? at::kBFloat16 : at::kFloat));
      hp = static_cast<float*>(h2t.data_ptr());
    }
    if (bf16) hb = reinterpret_cast<c10::BFloat16*>(std::exchange(hp, nullptr));
    sums = scratch(6, N * strips * Cmid);
    std::fill_n(sums, N * strips * Cmid, 0.f);
  }
  // A thread runs consecutive strips, forwards in its own run and backwards in those it takes from the end
  // of another's: the expanded rows a strip shares with the one before (the depthwise halo, K - stride rows)
  // are moved in its buffer instead of computed again (mobilenet_v2 at batch 1 expanded 1.3-1.5x the rows of
  // its 56x56 to 14x14 blocks).
  const int64_t max_rows = std::min<int64_t>(H, (R - 1) * stride + K);
  // One image in strips: next to each inner end of a thread's run, (K - stride + 1) / 2 halo rows are expanded
  // by both threads. Where that is much work (efficientnet_b0's 14x14 112 -> 672 k5 blocks: 2 rows beyond a
  // thread's 7, 2.1 M multiply-adds) and the whole expanded image fits the threads' caches, the image is
  // expanded first, in row parts across the threads, and pass 1 reads it: one region more, no row expanded
  // twice. Those blocks 1.10-1.11x, efficientnet_b0 1.014-1.015x; from 0.5 M multiply-adds also its 14x14 k3
  // and 28x28 k5 blocks 1.03-1.06x (the model 1.003-1.005x more), mobilenet_v2's 14x14 576-channel blocks
  // 1.03-1.06x (1.004x), mobilenet_v3_large's 480-channel one 1.03x (1.002-1.004x). In-process A/Bs, 400-500
  // forwards each, in fast phases; in this VM's slow phases 0.88-1.02x per block, the models 0.997-1.004x. With
  // no threshold, mobilenet_v3_large's 56x56 24 -> 72 block (0.1 M multiply-adds of halo) lost: 0.89x.
  float* ebig = nullptr;
  if (N == 1 && threads > 1 && has_expand && !bf16 && strips > 1 && H * W * Cmid <= 4 * kStripFloats &&
      (K - stride + 1) / 2 * W * Cin * Cmid >= (int64_t{1} << 19)) {
    ebig = scratch(10, H * W * Cmid);
    const int64_t parts = balanced_parts(1, H, 2 * threads, threads);
    parallel_tasks(parts, [&] {
      return [&](int64_t t) { expand_rows(0, H * t / parts, H * (t + 1) / parts, ebig + H * t / parts * W * Cmid); };
    });
  }
  parallel_tasks(N * strips, [&] {
    float* dbuf = hp ? nullptr : scratch(1, R * OW * Cmid);
    float* ebuf = stage_in && !ebig ? scratch(0, max_rows * W * Cmid) : nullptr;
    // ebuf holds the expanded rows [kept0, kept1) of image kept_n
    return [&, dbuf, ebuf, kept_n = int64_t{-1}, kept0 = int64_t{0}, kept1 = int64_t{0}](int64_t t) mutable {
      const int64_t n = t / strips, oh0 = OH * (t % strips) / strips, oh1 = OH * (t % strips + 1) / strips;
      // input rows the strip reads: [ih0, ih1)
      const int64_t ih0 = std::max<int64_t>(0, oh0 * stride - pad);
      const int64_t ih1 = std::min<int64_t>(H, (oh1 - 1) * stride - pad + K);
      const float* dw_in = xp ? xp + n * xs.n : nullptr;
      Strides4 ins = xs;
      if (ebig) {
        dw_in = ebig;
        ins = Strides4{0, 1, W * Cmid, Cmid};
      } else if (stage_in) {
        const int64_t row = W * Cmid;
        // the rows [ov0, ov1) of ebuf's last strip move to their place; the rest is computed
        int64_t ov0 = ih0, ov1 = ih0;
        if (kept_n == n && std::max(ih0, kept0) < std::min(ih1, kept1)) {
          ov0 = std::max(ih0, kept0), ov1 = std::min(ih1, kept1);
          if (ih0 != kept0)
            std::memmove(ebuf + (ov0 - ih0) * row, ebuf + (ov0 - kept0) * row, sizeof(float) * (ov1 - ov0) * row);
        }
        auto expand = [&](int64_t r0, int64_t r1) {
          if (r1 > r0) expand_rows(n, r0, r1, ebuf + (r0 - ih0) * row);
        };
        expand(ih0, ov0);
        expand(ov1, ih1);
        kept_n = n, kept0 = ih0, kept1 = ih1;
        dw_in = ebuf - ih0 * row;  // so that image row ih is at dw_in + ih * W * Cmid
        ins = Strides4{0, 1, W * Cmid, Cmid};
      }
      float* d = hp ? hp + n * OP * Cmid : dbuf - oh0 * OW * Cmid;
      const Strides4 ds{0, 1, OW * Cmid, Cmid};
      float* s = se ? sums + t * Cmid : nullptr;
      dw_rows_f32(dw_in, ins, fp(wkc), fp(dsc), fp(dsh), d, ds, Cmid, H, W, OH, OW, K, stride, pad, act, oh0, oh1, s,
                  bf16);
      if (hb) rows_to_bf16(dbuf, (oh1 - oh0) * OW, Cmid, Cmid, nullptr, hb + (n * OP + oh0 * OW) * Cmid, Cmid);
      else if (!se) project_rows(dbuf, (oh1 - oh0) * OW, n * OP + oh0 * OW, pwp, nullptr);
    };
  });
  if (!se) return true;

  // pass 2: the gate from the means, then gate + projection + BN (+ residual) per strip of pixels
  float* mp = scratch(8, N * Cmid);
  for (int64_t n = 0; n < N; ++n) {  // the strips' sums in strip order
    float* m = mp + n * Cmid;
    const float* sn = sums + n * strips * Cmid;
    for (int64_t c = 0; c < Cmid; ++c) {
      float v = sn[c];
      for (int64_t t = 1; t < strips; ++t) v += sn[t * Cmid + c];
      m[c] = v / static_cast<float>(OP);
    }
  }
  at::Tensor g;
  const float* gp = se_gate_of(mp, N, Cmid, *se, g);
  const int64_t PB = std::clamp<int64_t>(budget / std::max<int64_t>(1, Cmid + Cout), 1, OP);
  const int64_t chunks = balanced_parts(N, OP, (OP + PB - 1) / PB, threads);
  // Gated weights: each thread packs its own, per image. One image's packed by both threads in a region of its
  // own, then read whole by both, ran slower: efficientnet_b0 1.000-1.004x, mobilenet_v3_large 1.004-1.009x
  // (in-process A/B, caches flushed before each forward, bit-identical).
  parallel_tasks(N * chunks, [&] {
    return [&, wp = pwp, w16 = static_cast<uint16_t*>(nullptr), packed_n = int64_t{-1}](int64_t t) mutable {
      const int64_t n = t / chunks, p0 = OP * (t % chunks) / chunks, P = OP * (t % chunks + 1) / chunks - p0;
      if (hb) {
        const c10::BFloat16* h = hb + (n * OP + p0) * Cmid;
        if (!gate_weights) return project_rows(h, P, n * OP + p0, nullptr, gp + n * Cmid);
        if (n != packed_n) {
          if (!w16) w16 = scratch16(5, packed_panels_bf16_size(Cmid, Cout));
          gate_panels_bf16(pw16, Cmid, Cout, gp + n * Cmid, w16);
          packed_n = n;
        }
        return project_bf16(h, P, n * OP + p0, w16);
      }
      float* d = hp + (n * OP + p0) * Cmid;
      if (!gate_weights) {
        for (int64_t p = 0; p < P; ++p) gate_rows_to(d + p * Cmid, gp + n * Cmid, d + p * Cmid, Cmid);
      } else if (n != packed_n) {
        wp = packed(5, pw2d, gp + n * Cmid, pw_pre);
        packed_n = n;
      }
      project_rows(d, P, n * OP + p0, wp, nullptr);
    };
  });
  return true;
}

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END
