// The CPU kernels of every fastzoo op, callable directly from C++ (mbconv composes them without
// dispatcher round trips), plus the internal pieces the fused blocks share.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <optional>

#include "fastzoo/activation.h"
#include "fastzoo/dwconv_math.h"

namespace fastzoo {

void set_cpu_fastpath(bool enabled);
bool cpu_fastpath();
// The vectorized kernels are built for AVX2+FMA+F16C; without them the generic path runs.
bool cpu_has_avx2();
inline bool use_fast() { return cpu_fastpath() && cpu_has_avx2(); }

namespace cpu {

// ---- the ops (registered for the CPU dispatch key) ----
at::Tensor dwconv_bn_act_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                             const at::Tensor& shift, int64_t stride, int64_t padding, c10::string_view act);
at::Tensor pwconv_bn_act_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                             const at::Tensor& shift, c10::string_view act,
                             const std::optional<at::Tensor>& residual);
at::Tensor squeeze_excite_cpu(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                              const at::Tensor& b2, c10::string_view act, c10::string_view gate);
at::Tensor channel_shuffle_cpu(const at::Tensor& x, int64_t groups);
at::Tensor mbconv_cpu(const at::Tensor& x, const std::optional<at::Tensor>& expand_weight,
                      const std::optional<at::Tensor>& expand_scale, const std::optional<at::Tensor>& expand_shift,
                      const at::Tensor& dw_weight, const at::Tensor& dw_scale, const at::Tensor& dw_shift,
                      const std::optional<at::Tensor>& se_w1, const std::optional<at::Tensor>& se_b1,
                      const std::optional<at::Tensor>& se_w2, const std::optional<at::Tensor>& se_b2,
                      const at::Tensor& project_weight, const at::Tensor& project_scale,
                      const at::Tensor& project_shift, int64_t stride, c10::string_view act,
                      c10::string_view se_act, c10::string_view se_gate, bool residual);
at::Tensor fused_mbconv_cpu(const at::Tensor& x, const at::Tensor& conv_weight, const at::Tensor& conv_scale,
                            const at::Tensor& conv_shift, const std::optional<at::Tensor>& project_weight,
                            const std::optional<at::Tensor>& project_scale,
                            const std::optional<at::Tensor>& project_shift, int64_t stride, c10::string_view act,
                            bool residual);

// ---- internal pieces (no argument checks: callers validated) ----
// Accumulate dtype of x (double for float64, else float) and a per-channel vector converted to it.
inline at::ScalarType acc_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}
// (v itself where it already is: to() and contiguous() through the dispatcher for the six vectors of a batch-1
// mbconv step cost 0.35 us more)
inline at::Tensor to_acc(const at::Tensor& v, const at::Tensor& x) {
  const at::ScalarType acc = acc_dtype(x);
  if (v.scalar_type() == acc && v.is_contiguous()) return v;
  return v.to(acc).contiguous();
}

// Argument checks of the ops (so mbconv/fused_mbconv check their parts with the same messages).
// C: the channels the depthwise conv sees (x's, or the expanded count inside mbconv).
void check_dw_args(const std::string& op, const at::Tensor& x, int64_t C, const at::Tensor& weight,
                   const at::Tensor& scale, const at::Tensor& shift, const char* wname, const char* sname,
                   const char* hname);
// weight (Cout, Cin) or (Cout, Cin, 1, 1) for input channels cin; check_pw_weight also returns it as a contiguous
// (Cout, Cin) matrix (pw_matrix).
void check_pw_weight_shape(const std::string& op, const at::Tensor& x, const at::Tensor& weight, const char* wname,
                           int64_t cin);
at::Tensor check_pw_weight(const std::string& op, const at::Tensor& x, const at::Tensor& weight, const char* wname,
                           int64_t cin);
at::Tensor pw_matrix(const at::Tensor& weight);

// dwconv into `out` (allocated by the caller, N C OH OW, any memory format); scale/shift in the acc dtype.
// sums: when defined, an (N, C) acc-dtype tensor that receives the per-channel sums of the stored output
// (the squeeze-excite means without another pass). Returns false when no fast path handles the strides.
bool dw_fast(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale_acc,
             const at::Tensor& shift_acc, int64_t stride, int64_t pad, Act act, at::Tensor& out,
             at::Tensor* sums);
void dw_generic(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale_acc,
                const at::Tensor& shift_acc, int64_t stride, int64_t pad, Act act, at::Tensor& out);

// out (N, Cout, H, W) = conv1x1(x, w2d) through ATen's GEMM, written into out (any memory format).
void pw_gemm(const at::Tensor& x, const at::Tensor& w2d, at::Tensor& out);
// out = act(conv1x1(x, w2d) * scale + shift (+ residual)) by the fast paths (use_fast()): float32
// channels_last rows through the GEMM with the epilogue in registers, else pw_gemm and one epilogue pass.
// gate (K values, x's accumulate dtype, or null): w2d's columns times it (a batch-1 SE gate).
void pw_bn_act_fast(const at::Tensor& x, const at::Tensor& w2d, const at::Tensor& scale_acc,
                    const at::Tensor& shift_acc, const at::Tensor* residual, Act act, at::Tensor& out,
                    const at::Tensor* gate = nullptr);
// out = act(out * scale + shift + residual) in place; residual optional (N, Cout, H, W), any strides.
void pw_epilogue_inplace(at::Tensor& out, const at::Tensor& scale_acc, const at::Tensor& shift_acc,
                         const at::Tensor* residual, Act act, bool fast);

// Squeeze-excite pieces: per-channel means (N, C) in acc dtype; the gate (N, C) acc from the means;
// out = x * gate (out may alias x).
at::Tensor se_means(const at::Tensor& x, bool fast);
at::Tensor se_gate(const at::Tensor& means, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                   const at::Tensor& b2, Act act, Act gate);
void se_apply_gate(const at::Tensor& x, const at::Tensor& gate, at::Tensor& out, bool fast);
void check_se_args(const std::string& op, const at::Tensor& x, int64_t C, const at::Tensor& w1,
                   const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, const std::string& prefix = "");

// t = act(t) in place (t dense, any memory format).
void act_inplace(at::Tensor& t, Act act, bool fast);

// The depthwise weight (C, 1, K, K) as (K*K, C) in dtype acc, the layout the channels_last kernels read
// (a plain loop: ATen's transposing copy of such small matrices costs tens of microseconds).
at::Tensor dw_weight_kc(const at::Tensor& weight, at::ScalarType acc);

// Depthwise + BN + act (float32, channels_last addressing: pixel (ih, iw) of channel c at
// x + ih * xs.h + iw * xs.w + c) for the output rows [oh0, oh1) of one image; wkc is the weight as
// (K*K, C). sums, when not null, accumulates the per-channel sums of the stored output. bf16_grade: the output
// ends in bfloat16 (a bf16 model's mbconv), so SiLU only needs bfloat16's precision (silu512_bf16).
void dw_rows_f32(const float* x, Strides4 xs, const float* wkc, const float* sc, const float* sh, float* y,
                 Strides4 ys, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t K, int64_t stride,
                 int64_t pad, Act act, int64_t oh0, int64_t oh1, float* sums, bool bf16_grade = false);

// c (P x Cout, rows ldc apart) = a (P x K, rows lda apart) @ w^T, w (Cout x K) row-major, float32 (gemm.cpp):
// one single-threaded BLAS call (for use inside at::parallel_for) ...
void gemm_rows(const float* a, int64_t lda, const float* w, int64_t P, int64_t K, int64_t Cout, float* c,
               int64_t ldc);
// ... or split across the threads (by rows, or by output channels for few rows).
void gemm_rows_split(const float* a, int64_t lda, const float* w, int64_t P, int64_t K, int64_t Cout, float* c,
                     int64_t ldc);

// The 1x1-conv GEMM with its BN + act (+ residual) epilogue in registers (gemm_epilogue.cpp, AVX2 only):
// pack_panels writes w (Cout x K) (times gate[k] when gate is not null) as panels of 16 output channels
// into wp (packed_panels_size floats); panel j, channels 16j.., starts at wp + 16 * j * K. Then
// c (P x Cout, rows ldc apart) = act(a (P x K, rows lda apart) @ w^T * sc + sh (+ r, rows ldr apart)),
// single-threaded (for use inside at::parallel_for); r may be null.
int64_t packed_panels_size(int64_t K, int64_t Cout);
void pack_panels(const float* w, int64_t K, int64_t Cout, const float* gate, float* wp);
// One packed panel (K rows of 16 channels) times gate[k] per row (copied when gate is null).
void gate_panel(const float* src, int64_t K, const float* gate, float* dst);
// Several weights packed at once (pack_panels of each), their panels split across the threads when there
// are many; one parallel region.
struct PackJob {
  const at::Tensor* w;            // (Cout, K), float32, contiguous
  const float* gate;              // or null
  float* wp;                      // packed_panels_size(K, Cout) floats
  const float* panels = nullptr;  // w already packed (prepacked_panels): only the gate is applied
};
void pack_jobs(c10::ArrayRef<PackJob> jobs);
// The packed panels of w (pack_panels, no gate) that the running BlockChain step keeps from call to call,
// or null: a model's 1x1-conv weights are packed once, not per call (packing, a transpose of weights read
// from memory, was 40-90 us of each of mobilenet_v2's 14x14 blocks at batch 1). Only valid on the thread
// running the chain, outside parallel regions.
const float* prepacked_panels(const at::Tensor& w);
// The same for a float32 depthwise weight: its dw_weight_kc(w, kFloat), or an undefined tensor.
at::Tensor prepacked_dw_kc(const at::Tensor& w);
void gemm_packed_bn_act(const float* a, int64_t lda, const float* wp, int64_t P, int64_t K, int64_t Cout, float* c,
                        int64_t ldc, const float* sc, const float* sh, const float* r, int64_t ldr, Act act);
// The same from w itself (times gate[k] when given), packing one panel at a time into a buffer that stays
// in cache while every row uses it: for few rows (small maps at batch 1), where packing all of w first
// wrote and re-read it through memory (6% of efficientnet_b0 at batch 1). pre: w's packed panels where there
// are some (prepacked_panels, offset to w's first channel), read directly, or gated a panel at a time.
void gemm_bn_act(const float* a, int64_t lda, const float* w, const float* pre, const float* gate, int64_t P,
                 int64_t K, int64_t Cout, float* c, int64_t ldc, const float* sc, const float* sh, const float* r,
                 int64_t ldr, Act act);

// bfloat16 1x1-conv GEMMs with float32 accumulation (gemm_bf16.cpp), only where cpu_has_avx512bf16() (AVX-512F
// usable, and AVX512-BF16, BW, VL): pack_panels_bf16 writes w2d (Cout, K), any float dtype, rounded to bf16, as
// panels of 16 channels x K pairs into packed_panels_bf16_size(K, Cout) values; then c = act(a @ w^T * sc + sh
// (+ r)) as gemm_packed_bn_act, a and r bf16, c float32 or bf16, single-threaded.
bool cpu_has_avx512bf16();
int64_t packed_panels_bf16_size(int64_t K, int64_t Cout);
void pack_panels_bf16(const at::Tensor& w2d, uint16_t* wp);
void gemm_bf16_bn_act(const c10::BFloat16* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout,
                      float* c, int64_t ldc, const float* sc, const float* sh, const c10::BFloat16* r, int64_t ldr,
                      Act act);
void gemm_bf16_bn_act(const c10::BFloat16* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout,
                      c10::BFloat16* c, int64_t ldc, const float* sc, const float* sh, const c10::BFloat16* r,
                      int64_t ldr, Act act);
// The same through AMX (gemm_amx_bf16.cpp), which gemm_bf16_bn_act takes for whole blocks of 16 rows where
// cpu_has_amx_bf16() (AMX-BF16, the OS's permission, FASTZOO_NO_AMX not set) and K is even: P a multiple of 16,
// a, r and a bf16 c as uint16_t.
bool cpu_has_amx_bf16();
void gemm_amx_bf16_bn_act(const uint16_t* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout,
                          float* c, int64_t ldc, const float* sc, const float* sh, const uint16_t* r, int64_t ldr,
                          Act act);
void gemm_amx_bf16_bn_act(const uint16_t* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout,
                          uint16_t* c, int64_t ldc, const float* sc, const float* sh, const uint16_t* r, int64_t ldr,
                          Act act);
// P rows of C values, float32 (or bf16) to bf16, times gate[c] when gate is not null; and bf16 to float32.
void rows_to_bf16(const float* x, int64_t P, int64_t C, int64_t ldx, const float* gate, c10::BFloat16* y,
                  int64_t ldy);
void rows_to_bf16(const c10::BFloat16* x, int64_t P, int64_t C, int64_t ldx, const float* gate, c10::BFloat16* y,
                  int64_t ldy);
void rows_to_f32(const c10::BFloat16* x, int64_t P, int64_t C, int64_t ldx, float* y, int64_t ldy);
// dst = packed bf16 panels wp (pack_panels_bf16 of a (Cout, K) weight) with input channel k times gate[k].
void gate_panels_bf16(const uint16_t* wp, int64_t K, int64_t Cout, const float* gate, uint16_t* dst);
// x[i] = act(x[i]) for n bf16 values, computed in float32 (AVX-512), split across the threads.
void act_bf16_inplace(c10::BFloat16* x, int64_t n, Act act);
// A running BlockChain step's bf16 weight packed by pack_panels_bf16, or null (as prepacked_panels).
const uint16_t* prepacked_panels_bf16(const at::Tensor& w);

// AVX-512F on this CPU, and FASTZOO_NO_AVX512 not set: SiLU then runs in AVX-512 (gemm_epilogue.cpp).
bool cpu_has_avx512f();
// y[p * ldy + c] = silu(y[p * ldy + c]) for P pixels of C channels, and sums[c] += their new values when
// sums is not null; bf16_grade: y ends in bfloat16, silu512_bf16 is precise enough. Only where cpu_has_avx512f().
void silu_rows_avx512(float* y, int64_t P, int64_t C, int64_t ldy, float* sums, bool bf16_grade = false);

// dwconv_bn_act of NCHW float32 x (unit-stride rows) into dense NCHW out in AVX-512, padding K//2, K 3 or 5 at
// stride 1, K 3 at stride 2, output rows of 9 or more pixels or K 3 planes up to 8x8 (dwconv_nchw512.cpp); sc and
// sh the BN scale and shift. Only where dw_nchw_rows512_applies.
bool dw_nchw_rows512_applies(const at::Tensor& x, int64_t K, int64_t stride, int64_t pad);
void dw_nchw_rows512(const at::Tensor& x, const at::Tensor& weight, const float* sc, const float* sh, int64_t stride,
                     Act act, at::Tensor& out);

// act(conv(x, weight) * scale + shift) into out, a KxK conv (groups 1, padding K//2) for few input channels
// (K*K*Cin <= 80: the stems), float32 (bf16 through conv_few_channels512), out dense channels_last; scale/shift
// float. False (nothing written) where it does not apply (conv_few_channels.cpp).
bool conv_few_channels(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                       const at::Tensor& shift, int64_t stride, Act act, at::Tensor& out);
// conv_few_channels in AVX-512 (conv_few_channels512.cpp), float32 or bf16 (bf16 weight and out): false where
// the CPU lacks AVX-512F (AVX512-BF16 for bf16) or it does not apply; conv_few_channels tries it first.
bool conv_few_channels512(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                          const at::Tensor& shift, int64_t stride, Act act, at::Tensor& out);

// An op's output tensor: at::empty, or while a BlockChain runs (block_chain.cpp) a view of one of the two
// ping-pong buffers it keeps between runs (no fresh pages to fault in per call). An op calls it once, for
// the tensor it returns.
at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format);

struct SeArgs {
  at::Tensor w1, b1, w2, b2;
  Act act, gate;
};
// se_gate on raw float32 means (N, C) into g (N, C), with no ATen call: cold after a block's kernels, the
// calls around the FCs cost more than a small block's FCs. False (nothing written) unless the fast paths are on
// and the weights and biases are dense float32.
bool se_gate_f32(const float* means, int64_t N, int64_t C, const SeArgs& se, float* g);
// A classifier head in one parallel region (head_pool_linear.cpp): (N, Cout, 1, 1) = act2(mean over pixels of
// act1(conv1x1(x, w1) * sc1 + sh1) @ w2t * sc2 + sh2), for float32 dense channels_last x (N, Cin, H, W) of at most
// 64 Ki floats, w1 (Cmid, Cin, 1, 1) with its packed panels (prepacked_panels), w2t the Linear's weight transposed
// (Cmid, Cout), per-channel vectors float32; the output from new_output. An undefined tensor (nothing computed)
// where it does not apply.
at::Tensor head_pool_linear(const at::Tensor& x, const at::Tensor& w1, const float* w1_panels,
                            const at::Tensor& sc1, const at::Tensor& sh1, Act act1, const at::Tensor& w2t,
                            const at::Tensor& sc2, const at::Tensor& sh2, Act act2);
// The cache-tiled mbconv (mbconv_tiled.cpp): float32 (or bf16 where cpu_has_avx512bf16()), dense channels_last
// x and out; the 1x1 weights ew2d and pw2d contiguous (Cout, Cin) or (Cout, Cin, 1, 1), ew2d undefined when there
// is no expansion; per-channel vectors in float. Returns false (nothing written) where it does not apply.
bool mbconv_tiled(const at::Tensor& x, const at::Tensor& ew2d, const at::Tensor& esc, const at::Tensor& esh,
                  const at::Tensor& dw_weight, const at::Tensor& dsc, const at::Tensor& dsh, const SeArgs* se,
                  const at::Tensor& pw2d, const at::Tensor& psc, const at::Tensor& psh, int64_t stride, Act act,
                  bool residual, at::Tensor& out);

}  // namespace cpu
}  // namespace fastzoo
