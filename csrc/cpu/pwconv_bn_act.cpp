// pwconv_bn_act on CPU: act(conv1x1(x, weight) * scale + shift + residual).
//
// The GEMM goes through BLAS / ATen (at::mm_out, oneDNN/MKL) straight into the output buffer:
//   channels_last x whose (N, H, W) collapse: one (N*H*W, Cin) x (Cin, Cout) GEMM (float32: gemm_rows_split);
//   otherwise, when (H, W) collapse: one GEMM per sample ((H*W, Cin) or (Cin, H*W) views, no copy);
//   other strides: at::matmul on the permuted view (ATen may copy).
// Then ONE epilogue pass in place: fast = vectorized over C (channels_last) or over H*W (NCHW), the
// activation a template constant; generic = fastzoo::pw_epilogue per element, any strides.
// float32 channels_last with 3 or more pixels: no separate pass, the packed-weight GEMM applies the
// epilogue in registers (pw_packed_cl; pw_bn_act_fast picks the path for this op and mbconv's untiled one).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu_kernels.h"
#include "fastzoo/checks.h"
#include "fastzoo/dwconv_math.h"

namespace fastzoo {
namespace cpu {

void check_pw_weight_shape(const std::string& op, const at::Tensor& x, const at::Tensor& weight, const char* wname,
                           int64_t cin) {
  check_same(op, x, weight, wname);
  const bool ok = (weight.dim() == 2 || (weight.dim() == 4 && weight.size(2) == 1 && weight.size(3) == 1)) &&
                  weight.size(1) == cin && weight.size(0) > 0;
  TORCH_CHECK(ok, op, ": expected ", wname, " of shape (Cout, ", cin, ") or (Cout, ", cin, ", 1, 1) for ", cin,
              " input channels, got ", weight.sizes());
}

at::Tensor pw_matrix(const at::Tensor& weight) { return weight.reshape({weight.size(0), -1}).contiguous(); }

at::Tensor check_pw_weight(const std::string& op, const at::Tensor& x, const at::Tensor& weight, const char* wname,
                           int64_t cin) {
  check_pw_weight_shape(op, x, weight, wname, cin);
  return pw_matrix(weight);
}

namespace {

// (rows, cols) view of x with the given element strides, offset in elements.
inline at::Tensor view2d(const at::Tensor& t, int64_t rows, int64_t cols, int64_t srow, int64_t scol, int64_t off) {
  return t.as_strided({rows, cols}, {srow, scol}, t.storage_offset() + off);
}

// (N, H, W) of a channels_last-like t collapse to rows `row` elements apart (channels unit-stride): the row
// stride, or 0 when they do not.
int64_t cl_row_stride(const at::Tensor& t) {
  const int64_t N = t.size(0), H = t.size(2), W = t.size(3), sw = t.stride(3);
  if (t.stride(1) != 1 && t.size(1) > 1) return 0;
  if (H > 1 && t.stride(2) != W * sw) return 0;
  if (N > 1 && t.stride(0) != H * W * sw) return 0;
  return sw >= t.size(1) ? sw : 0;
}

template <typename scalar_t>
void epilogue_generic(at::Tensor& out, const at::Tensor& sc, const at::Tensor& sh, const at::Tensor* res, Act act) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = out.size(0), C = out.size(1), H = out.size(2), W = out.size(3);
  const Strides4 os{out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  const Strides4 rs = res ? Strides4{res->stride(0), res->stride(1), res->stride(2), res->stride(3)}
                          : Strides4{0, 0, 0, 0};
  scalar_t* op = out.data_ptr<scalar_t>();
  const scalar_t* rp = res ? res->const_data_ptr<scalar_t>() : nullptr;
  const acc_t* scp = sc.const_data_ptr<acc_t>();
  const acc_t* shp = sh.const_data_ptr<acc_t>();
  at::parallel_for(0, N * C * H, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, W)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t h = i % H, c = (i / H) % C, n = i / (H * C);
      for (int64_t w = 0; w < W; ++w) {
        scalar_t* o = op + n * os.n + c * os.c + h * os.h + w * os.w;
        const acc_t r = rp ? static_cast<acc_t>(rp[n * rs.n + c * rs.c + h * rs.h + w * rs.w]) : acc_t(0);
        *o = static_cast<scalar_t>(pw_epilogue<acc_t>(static_cast<acc_t>(*o), scp[c], shp[c], r, act));
      }
    }
  });
}

}  // namespace

void pw_gemm(const at::Tensor& x, const at::Tensor& w2d, at::Tensor& out) {
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), Cout = w2d.size(0);
  const int64_t HW = H * W;
  const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  const at::Tensor wT = w2d.t();  // (Cin, Cout) view
  const bool out_cl = out.stride(1) == 1 && out.stride(3) == Cout && out.stride(2) == W * Cout &&
                      out.stride(0) == HW * Cout;
  const bool out_nchw = out.is_contiguous();
  const bool hw_ok = H == 1 || sh == W * sw;  // (H, W) collapse to one dimension of stride sw
  // 1x1 maps (the classifiers, as pwconv on (N, C, 1, 1)): rows of Cin channels sn apart, whichever layout
  const bool pixels = HW == 1 && sc == 1 && out.stride(1) == 1 && out.stride(0) == Cout;
  if (pixels && x.scalar_type() == at::kFloat && w2d.scalar_type() == at::kFloat && (sn >= Cin || N == 1)) {
    gemm_rows_split(x.const_data_ptr<float>(), sn, w2d.const_data_ptr<float>(), N, Cin, Cout, out.data_ptr<float>(),
                    Cout);
    return;
  }
  const int64_t lda = cl_row_stride(x);
  if (lda && cl_row_stride(out) == Cout && x.scalar_type() == at::kFloat && w2d.scalar_type() == at::kFloat) {
    gemm_rows_split(x.const_data_ptr<float>(), lda, w2d.const_data_ptr<float>(), N * HW, Cin, Cout,
                    out.data_ptr<float>(), Cout);
    return;
  }
  if (out_cl && sc == 1 && hw_ok && (N == 1 || sn == HW * sw)) {
    at::Tensor o2 = view2d(out, N * HW, Cout, Cout, 1, 0);
    at::mm_out(o2, view2d(x, N * HW, Cin, sw, sc, 0), wT);
    return;
  }
  if (hw_ok && (out_cl || out_nchw)) {
    for (int64_t n = 0; n < N; ++n) {
      const at::Tensor xn = view2d(x, HW, Cin, sw, sc, n * sn);  // (HW, Cin)
      if (out_cl) {
        at::Tensor on = view2d(out, HW, Cout, Cout, 1, n * HW * Cout);
        at::mm_out(on, xn, wT);
      } else {
        at::Tensor on = view2d(out, Cout, HW, HW, 1, n * Cout * HW);
        at::mm_out(on, w2d, xn.t());
      }
    }
    return;
  }
  // Strides the views above cannot express (ATen may copy x here).
  out.permute({0, 2, 3, 1}).copy_(at::matmul(x.permute({0, 2, 3, 1}), wT));
}

void pw_epilogue_fast(at::Tensor& out, const at::Tensor& sc, const at::Tensor& sh, const at::Tensor* res, Act act);

namespace {

// float32, x, out and residual with channels_last rows, 3 or more pixels (1-2 are matrix-vector products,
// gemm_rows'): the packed-weight GEMM with the epilogue in registers, split by pixel rows, or by 16-channel
// weight panels (each thread packing its own, one at a time) when there are fewer than 64 rows per thread.
// With a gate (K float32 values), w2d's columns times it, folded in as the weights are packed.
// False (nothing written) where it does not apply.
bool pw_packed_cl(const at::Tensor& x, const at::Tensor& w2d, const at::Tensor& sc, const at::Tensor& sh,
                  const at::Tensor* res, Act act, at::Tensor& out, const float* gate) {
  if (x.scalar_type() != at::kFloat || w2d.scalar_type() != at::kFloat) return false;
  const int64_t P = x.size(0) * x.size(2) * x.size(3), K = x.size(1), Cout = w2d.size(0);
  const int64_t lda = cl_row_stride(x), ldr = res ? cl_row_stride(*res) : 0;
  if (P < 3 || lda == 0 || cl_row_stride(out) != Cout || (res && ldr == 0)) return false;
  const float *a = x.const_data_ptr<float>(), *w = w2d.const_data_ptr<float>();
  const float* r = res ? res->const_data_ptr<float>() : nullptr;
  const float *scp = sc.const_data_ptr<float>(), *shp = sh.const_data_ptr<float>();
  float* c = out.data_ptr<float>();
  const int64_t threads = at::get_num_threads(), blocks = (Cout + 15) / 16;
  const float* pre = prepacked_panels(w2d);  // a BlockChain's weights, packed already
  if (P >= 64 * threads || blocks < threads || gate) {
    thread_local std::vector<float> panels;  // the calling thread's packed weights, read by all
    const float* wp = gate ? nullptr : pre;
    if (wp == nullptr) {
      panels.resize(std::max<int64_t>(panels.size(), packed_panels_size(K, Cout)));
      pack_jobs({{&w2d, gate, panels.data(), pre}});
      wp = panels.data();
    }
    at::parallel_for(0, P, std::max<int64_t>(16, (P + threads - 1) / threads), [&](int64_t p0, int64_t p1) {
      gemm_packed_bn_act(a + p0 * lda, lda, wp, p1 - p0, K, Cout, c + p0 * Cout, Cout, scp, shp,
                         r ? r + p0 * ldr : nullptr, ldr, act);
    });
  } else {
    at::parallel_for(0, blocks, (blocks + threads - 1) / threads, [&](int64_t b, int64_t e) {
      const int64_t o0 = b * 16, n = std::min(Cout, e * 16) - o0;
      gemm_bn_act(a, lda, w + o0 * K, pre ? pre + o0 * K : nullptr, nullptr, P, K, n, c + o0, Cout, scp + o0,
                  shp + o0, r ? r + o0 : nullptr, ldr, act);
    });
  }
  return true;
}

// bf16, x, out and residual with channels_last rows: the bf16 GEMM with the epilogue in registers (gemm_bf16.cpp),
// split by pixel rows, or by 16-channel panels when there are fewer than 16 rows per thread. No gate. False
// (nothing written) where it does not apply.
bool pw_packed_cl_bf16(const at::Tensor& x, const at::Tensor& w2d, const at::Tensor& sc, const at::Tensor& sh,
                       const at::Tensor* res, Act act, at::Tensor& out) {
  const auto bf16 = at::kBFloat16;
  if (x.scalar_type() != bf16 || w2d.scalar_type() != bf16 || out.scalar_type() != bf16 ||
      (res && res->scalar_type() != bf16) || sc.scalar_type() != at::kFloat || !cpu_has_avx512bf16())
    return false;
  // rows of channels: channels_last ones, or on 1x1 maps (the classifiers) the samples in either layout
  auto row_stride = [](const at::Tensor& t) {
    if (t.size(2) * t.size(3) != 1 || (t.stride(1) != 1 && t.size(1) > 1)) return cl_row_stride(t);
    return t.size(0) == 1 ? t.size(1) : t.stride(0) >= t.size(1) ? t.stride(0) : 0;
  };
  const int64_t P = x.size(0) * x.size(2) * x.size(3), K = x.size(1), Cout = w2d.size(0);
  const int64_t lda = row_stride(x), ldr = res ? row_stride(*res) : 0;
  if (lda == 0 || row_stride(out) != Cout || (res && ldr == 0)) return false;
  const uint16_t* wp = prepacked_panels_bf16(w2d);  // a BlockChain's weights, packed already
  thread_local std::vector<uint16_t> panels;  // else the calling thread's, read by all
  if (wp == nullptr) {
    panels.resize(std::max<int64_t>(panels.size(), packed_panels_bf16_size(K, Cout)));
    pack_panels_bf16(w2d, panels.data());
    wp = panels.data();
  }
  const c10::BFloat16* a = x.const_data_ptr<c10::BFloat16>();
  const c10::BFloat16* r = res ? res->const_data_ptr<c10::BFloat16>() : nullptr;
  const float *scp = sc.const_data_ptr<float>(), *shp = sh.const_data_ptr<float>();
  c10::BFloat16* c = out.data_ptr<c10::BFloat16>();
  const int64_t threads = at::get_num_threads(), blocks = (Cout + 15) / 16, K2 = (K + 1) / 2;
  if (P >= 16 * threads || blocks < threads) {
    at::parallel_for(0, P, std::max<int64_t>(8, (P + threads - 1) / threads), [&](int64_t p0, int64_t p1) {
      gemm_bf16_bn_act(a + p0 * lda, lda, wp, p1 - p0, K, Cout, c + p0 * Cout, Cout, scp, shp,
                       r ? r + p0 * ldr : nullptr, ldr, act);
    });
  } else {
    at::parallel_for(0, blocks, (blocks + threads - 1) / threads, [&](int64_t b, int64_t e) {
      const int64_t o0 = b * 16, n = std::min(Cout, e * 16) - o0;
      gemm_bf16_bn_act(a, lda, wp + o0 * 2 * K2, P, K, n, c + o0, Cout, scp + o0, shp + o0, r ? r + o0 : nullptr,
                       ldr, act);
    });
  }
  return true;
}

}  // namespace

void pw_epilogue_inplace(at::Tensor& out, const at::Tensor& scale_acc, const at::Tensor& shift_acc,
                         const at::Tensor* residual, Act act, bool fast) {
  if (out.numel() == 0) return;
  if (fast && use_fast()) {
    const int64_t C = out.size(1), H = out.size(2), W = out.size(3);
    const bool out_cl = out.stride(1) == 1 && out.stride(3) == C && out.stride(2) == W * C &&
                        out.stride(0) == H * W * C;
    const bool out_nchw = out.is_contiguous();
    bool ok = false;
    if (out_cl && !out_nchw)
      ok = residual == nullptr || residual->stride(1) == 1 || C == 1;
    else if (out_nchw)
      ok = residual == nullptr || (residual->stride(3) == 1 && residual->stride(2) == W) || H * W == 1;
    if (ok) {
      pw_epilogue_fast(out, scale_acc, shift_acc, residual, act);
      return;
    }
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "pwconv_bn_act_epilogue", [&] {
    epilogue_generic<scalar_t>(out, scale_acc, shift_acc, residual, act);
  });
}

void pw_bn_act_fast(const at::Tensor& x, const at::Tensor& w2d, const at::Tensor& scale_acc,
                    const at::Tensor& shift_acc, const at::Tensor* residual, Act act, at::Tensor& out,
                    const at::Tensor* gate) {
  const float* g = gate && gate->scalar_type() == at::kFloat && gate->is_contiguous()
                       ? gate->const_data_ptr<float>() : nullptr;
  if ((!gate || g) && pw_packed_cl(x, w2d, scale_acc, shift_acc, residual, act, out, g)) return;
  if (!gate && pw_packed_cl_bf16(x, w2d, scale_acc, shift_acc, residual, act, out)) return;
  pw_gemm(x, gate ? (w2d.to(gate->scalar_type()) * gate->reshape({1, -1})).to(x.scalar_type()) : w2d, out);
  pw_epilogue_inplace(out, scale_acc, shift_acc, residual, act, true);
}

at::Tensor pwconv_bn_act_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                             const at::Tensor& shift, c10::string_view act_name,
                             const std::optional<at::Tensor>& residual) {
  const std::string op = "pwconv_bn_act";
  check_input4d(op, x);
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const at::Tensor w2d = check_pw_weight(op, x, weight, "weight", Cin);
  const int64_t Cout = w2d.size(0);
  check_vec(op, x, scale, "scale", Cout);
  check_vec(op, x, shift, "shift", Cout);
  const Act act = check_act(op, "act", std::string(act_name));
  const at::Tensor* res = nullptr;
  if (residual.has_value() && residual->defined()) {
    check_same(op, x, *residual, "residual");
    TORCH_CHECK(residual->dim() == 4 && residual->size(0) == N && residual->size(1) == Cout &&
                    residual->size(2) == H && residual->size(3) == W,
                op, ": expected residual of shape (", N, ", ", Cout, ", ", H, ", ", W, "), got ", residual->sizes());
    res = &*residual;
  }
  at::Tensor out = new_output({N, Cout, H, W}, x.options(), out_format(x));
  if (out.numel() == 0) return out;
  const at::Tensor sc = to_acc(scale, x), sh = to_acc(shift, x);
  if (use_fast()) {
    pw_bn_act_fast(x, w2d, sc, sh, res, act, out);
    return out;
  }
  // Generic: the GEMM result (N, H, W, Cout) from ATen, then the shared per-element epilogue.
  out.permute({0, 2, 3, 1}).copy_(at::matmul(x.permute({0, 2, 3, 1}), w2d.t()));
  pw_epilogue_inplace(out, sc, sh, res, act, false);
  return out;
}

}  // namespace cpu
}  // namespace fastzoo

// ------------------------------------------------------------------------------------------------
#include "fastzoo/cpu_vec.h"

namespace fastzoo {
namespace cpu {
namespace {

template <typename scalar_t, Act A, bool RES>
void epi_cl(scalar_t* o, const acc_of<scalar_t>* sc, const acc_of<scalar_t>* sh, const scalar_t* r, Strides4 rs,
            int64_t N, int64_t C, int64_t H, int64_t W) {
  using V = VecA<scalar_t>;
  constexpr int64_t L = V::size();
  const int64_t P = N * H * W;
  at::parallel_for(0, P, std::max<int64_t>(1, 8192 / C), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      scalar_t* op = o + p * C;
      const scalar_t* rp = nullptr;
      if constexpr (RES) {
        const int64_t w = p % W, h = (p / W) % H, n = p / (W * H);
        rp = r + n * rs.n + h * rs.h + w * rs.w;
      }
      int64_t c = 0;
      for (; c + L <= C; c += L) {
        V v = at::vec::fmadd(vload(op + c), V::loadu(sc + c), V::loadu(sh + c));
        if constexpr (RES) v = v + vload(rp + c);
        vstore(op + c, vact<A>(v));
      }
      if (c < C) {
        const int64_t k = C - c;
        V v = at::vec::fmadd(vload(op + c, k), V::loadu(sc + c, k), V::loadu(sh + c, k));
        if constexpr (RES) v = v + vload(rp + c, k);
        vstore(op + c, vact<A>(v), k);
      }
    }
  });
}

template <typename scalar_t, Act A, bool RES>
void epi_nchw(scalar_t* o, const acc_of<scalar_t>* sc, const acc_of<scalar_t>* sh, const scalar_t* r, Strides4 rs,
              int64_t N, int64_t C, int64_t HW) {
  using V = VecA<scalar_t>;
  constexpr int64_t L = V::size();
  at::parallel_for(0, N * C, std::max<int64_t>(1, 8192 / HW), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t c = i % C, n = i / C;
      scalar_t* op = o + i * HW;
      const scalar_t* rp = RES ? r + n * rs.n + c * rs.c : nullptr;
      const V vs(sc[c]), vh(sh[c]);
      int64_t j = 0;
      for (; j + L <= HW; j += L) {
        V v = at::vec::fmadd(vload(op + j), vs, vh);
        if constexpr (RES) v = v + vload(rp + j);
        vstore(op + j, vact<A>(v));
      }
      if (j < HW) {
        const int64_t k = HW - j;
        V v = at::vec::fmadd(vload(op + j, k), vs, vh);
        if constexpr (RES) v = v + vload(rp + j, k);
        vstore(op + j, vact<A>(v), k);
      }
    }
  });
}

}  // namespace

void pw_epilogue_fast(at::Tensor& out, const at::Tensor& sc, const at::Tensor& sh, const at::Tensor* res, Act act) {
  const int64_t N = out.size(0), C = out.size(1), H = out.size(2), W = out.size(3);
  const bool nchw = out.is_contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "pwconv_bn_act_epilogue", [&] {
    using acc_t = acc_of<scalar_t>;
    scalar_t* o = out.data_ptr<scalar_t>();
    const acc_t* scp = sc.const_data_ptr<acc_t>();
    const acc_t* shp = sh.const_data_ptr<acc_t>();
    const scalar_t* rp = res ? res->const_data_ptr<scalar_t>() : nullptr;
    const Strides4 rs = res ? Strides4{res->stride(0), res->stride(1), res->stride(2), res->stride(3)}
                            : Strides4{0, 0, 0, 0};
    with_act(act, [&](auto A) {
      constexpr Act a = decltype(A)::value;
      if (nchw) {
        if (rp) epi_nchw<scalar_t, a, true>(o, scp, shp, rp, rs, N, C, H * W);
        else epi_nchw<scalar_t, a, false>(o, scp, shp, rp, rs, N, C, H * W);
      } else {
        if (rp) epi_cl<scalar_t, a, true>(o, scp, shp, rp, rs, N, C, H, W);
        else epi_cl<scalar_t, a, false>(o, scp, shp, rp, rs, N, C, H, W);
      }
    });
  });
}

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END

TORCH_LIBRARY_IMPL(fastzoo, CPU, m) { m.impl("pwconv_bn_act", &fastzoo::cpu::pwconv_bn_act_cpu); }
