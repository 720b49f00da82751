// A direct KxK conv + BN + act for few input channels (the 3-channel stems), float32, channels_last out.
//
// Inside a model at batch 1, at::convolution (oneDNN) + the BN/act pass took 0.3-0.9 ms for the 3 -> 16/32
// stems at 224x224 (torch profiler), 22 MFLOP; run hot in a loop this kernel is at par or ahead (3 -> 16
// k3 s2: 100 us vs 116 us). Each output pixel gathers its K*K*Cin patch (read in place for interior pixels)
// and accumulates patch[j] * w[j, :] over vectors of output channels held in registers, the BN scale
// folded into the weights and the shift the accumulators' start; one pass, the activation at the store.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "cpu_kernels.h"
#include "fastzoo/cpu_vec.h"

namespace fastzoo {
namespace cpu {
namespace {

using V = Vectorized<float>;
constexpr int64_t L = V::size();
constexpr int64_t kMaxVecs = 8;    // accumulators per pixel: 64 output channels
constexpr int64_t kMaxPatch = 80;  // the largest K * K * Cin taken (5x5x3 = 75)

// Accumulates PX output pixels: acc[p][v] += a_p[j] * wt[j, c0 + v * L ...] for j < KKC, where pixel p's
// patch value j is at a_p[j] (contiguous runs in x for interior pixels, the gathered patch at borders).
template <int NV, int PX>
C10_ALWAYS_INLINE void accumulate(const float* const* a, int64_t runs, int64_t run_len, int64_t run_stride,
                                  const float* wt, int64_t Cpad, V (&acc)[PX][NV]) {
  for (int64_t r = 0; r < runs; ++r) {
    for (int64_t i = 0; i < run_len; ++i) {
      const float* w = wt + (r * run_len + i) * Cpad;
      V b[PX];
      for (int p = 0; p < PX; ++p) b[p] = V(a[p][r * run_stride + i]);
      for (int v = 0; v < NV; ++v) {
        const V wv = V::loadu(w + v * L);
        for (int p = 0; p < PX; ++p) acc[p][v] = at::vec::fmadd(b[p], wv, acc[p][v]);
      }
    }
  }
}

// One output row: NV vectors of output channels starting at column c0 of wt (KKC x Cpad) and sh.
template <int NV, Act A>
void row(const float* x, Strides4 xs, const float* wt, int64_t Cpad, const float* sh, float* y, int64_t C,
         int64_t c0, int64_t Cin, int64_t H, int64_t W, int64_t OW, int64_t K, int64_t stride, int64_t pad,
         int64_t oh, float* patch) {
  constexpr int PX = NV <= 2 ? 4 : NV <= 4 ? 2 : 1;  // pixels sharing each weight load: accumulators fit
  const int64_t KKC = K * K * Cin, nc = std::min<int64_t>(NV * L, C - c0);
  const int64_t ih0 = oh * stride - pad;
  // x's (kw, ci) runs are contiguous (channels_last): interior pixels read them in place
  const bool rows_in = ih0 >= 0 && ih0 + K <= H && xs.c == 1 && xs.w == Cin;
  const int64_t ow_lo = rows_in ? std::min(OW, (pad + stride - 1) / stride) : OW;
  const int64_t ow_hi = rows_in ? std::max(ow_lo, std::min(OW, (W - K + pad) / stride + 1)) : OW;
  auto store = [&](const V (&acc)[NV], int64_t ow) {
    float* o = y + ow * C + c0;
    for (int v = 0; v < NV; ++v) {
      const int64_t k = std::min<int64_t>(L, nc - v * L);
      if (k == L) vact<A>(acc[v]).store(o + v * L);
      else if (k > 0) store_n(o + v * L, vact<A>(acc[v]), k);
    }
  };
  auto init = [&](V (&acc)[NV]) {
    for (int v = 0; v < NV; ++v) acc[v] = V::loadu(sh + c0 + v * L);
  };
  auto border = [&](int64_t ow) {  // the patch gathered, zeros in the padding
    int64_t j = 0;
    for (int64_t kh = 0; kh < K; ++kh) {
      const int64_t ih = ih0 + kh;
      for (int64_t kw = 0; kw < K; ++kw) {
        const int64_t iw = ow * stride - pad + kw;
        const bool in = ih >= 0 && ih < H && iw >= 0 && iw < W;
        const float* p = x + ih * xs.h + iw * xs.w;
        for (int64_t ci = 0; ci < Cin; ++ci) patch[j++] = in ? p[ci * xs.c] : 0.f;
      }
    }
    V acc[1][NV];
    init(acc[0]);
    const float* a[1] = {patch};
    accumulate<NV, 1>(a, 1, KKC, 0, wt + c0, Cpad, acc);
    store(acc[0], ow);
  };
  for (int64_t ow = 0; ow < ow_lo; ++ow) border(ow);
  int64_t ow = ow_lo;
  for (; ow + PX <= ow_hi; ow += PX) {
    V acc[PX][NV];
    const float* a[PX];
    for (int p = 0; p < PX; ++p) {
      init(acc[p]);
      a[p] = x + ih0 * xs.h + ((ow + p) * stride - pad) * xs.w;
    }
    accumulate<NV, PX>(a, K, K * Cin, xs.h, wt + c0, Cpad, acc);
    for (int p = 0; p < PX; ++p) store(acc[p], ow + p);
  }
  for (; ow < OW; ++ow) border(ow);
}

template <Act A>
void row_any(int nv, const float* x, Strides4 xs, const float* wt, int64_t Cpad, const float* sh, float* y,
             int64_t C, int64_t c0, int64_t Cin, int64_t H, int64_t W, int64_t OW, int64_t K, int64_t stride,
             int64_t pad, int64_t oh, float* patch) {
  switch (nv) {
#define FZ_ROW(n) \
  case n: return row<n, A>(x, xs, wt, Cpad, sh, y, C, c0, Cin, H, W, OW, K, stride, pad, oh, patch);
    FZ_ROW(1) FZ_ROW(2) FZ_ROW(3) FZ_ROW(4) FZ_ROW(5) FZ_ROW(6) FZ_ROW(7) FZ_ROW(8)
#undef FZ_ROW
  }
}

}  // namespace

bool conv_few_channels(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                       const at::Tensor& shift, int64_t stride, Act act, at::Tensor& out) {
  if (conv_few_channels512(x, weight, scale, shift, stride, act, out)) return true;
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t C = weight.size(0), K = weight.size(3), pad = K / 2, OH = out.size(2), OW = out.size(3);
  const int64_t KKC = K * K * Cin;
  const bool out_cl = out.stride(1) == 1 && out.stride(3) == C && out.stride(2) == OW * C;
  if (x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat || !out_cl || KKC > kMaxPatch ||
      out.stride(0) != OH * OW * C)
    return false;
  // wt (KKC, Cpad): w[c, ci, kh, kw] * scale[c] at row (kh * K + kw) * Cin + ci, columns padded to vectors
  const int64_t Cpad = (C + L - 1) / L * L;
  std::vector<float> wt(KKC * Cpad, 0.f), sh(Cpad, 0.f);
  const at::Tensor wc = weight.contiguous();
  const float* w = wc.const_data_ptr<float>();
  const float* sc = scale.const_data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    sh[c] = shift.const_data_ptr<float>()[c];
    for (int64_t ci = 0; ci < Cin; ++ci)
      for (int64_t k = 0; k < K * K; ++k) wt[(k * Cin + ci) * Cpad + c] = w[(c * Cin + ci) * K * K + k] * sc[c];
  }
  const Strides4 xs{x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const float* xp = x.const_data_ptr<float>();
  float* yp = out.data_ptr<float>();
  const int64_t nvec = Cpad / L;
  // SiLU in AVX-512 over each finished row where the CPU has it (efficientnet's stem), as the depthwise kernel
  const bool silu512 = act == Act::SiLU && cpu_has_avx512f();
  at::parallel_for(0, N * OH, 1, [&](int64_t b, int64_t e) {
    float patch[kMaxPatch];
    with_act(silu512 ? Act::Identity : act, [&](auto a) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t n = r / OH, oh = r % OH;
        for (int64_t v0 = 0; v0 < nvec; v0 += kMaxVecs)
          row_any<decltype(a)::value>(static_cast<int>(std::min(kMaxVecs, nvec - v0)), xp + n * xs.n, xs, wt.data(),
                                      Cpad, sh.data(), yp + r * OW * C, C, v0 * L, Cin, H, W, OW, K, stride, pad,
                                      oh, patch);
        if (silu512) silu_rows_avx512(yp + r * OW * C, OW, C, C, nullptr);
      }
    });
  });
  return true;
}

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END
