// float32 GEMMs of the CPU kernels through torch's BLAS (MKL in the official wheels), threaded by us.
//
// MKL's own threading leaves the second thread mostly idle on the GEMMs of small feature maps (a 49 x 192 x
// 1152 GEMM: 228 us on 2 threads, 243 us on 1), so gemm_rows_split splits the work across at::parallel_for
// and calls BLAS single-threaded inside it (MKL runs sequentially inside an OpenMP parallel region).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "cpu_kernels.h"
#include "fastzoo/cpu_vec.h"

// torch's CPU build exports its BLAS (ATen's own cpublas calls it); weak, so a build without it
// falls back to at::mm on the same buffers.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));

namespace fastzoo {
namespace cpu {
namespace {

#if FZ_AVX2
using V = Vectorized<float>;
constexpr int64_t L = V::size();

// The lanes of s[0..3] summed: {sum s[0], sum s[1], sum s[2], sum s[3]}.
inline __m128 hsum4(const V (&s)[4]) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// c[p, o] = a[p, :] . w[o, :] for P (1 or 2) rows of a: dot products, four weight rows per pass sharing
// each load of a. With one or two rows the GEMM is a matrix-vector product bound by streaming w (the
// classifiers: 2.4-5 MB), where MKL's sgemv reached ~11 GB/s from DRAM (one thread: 0.56 ms for
// mobilenet_v3_small's two) and a plain streaming pass over w ~35 GB/s.
template <int P>
void gemv_rows(const float* a, int64_t lda, const float* w, int64_t K, int64_t Cout, float* c, int64_t ldc) {
  constexpr int U = P == 1 ? 2 : 1;  // accumulator sets over alternate vectors of K: 8 FMA chains in flight
  int64_t o = 0;
  for (; o + 4 <= Cout; o += 4) {
    V acc[U][P][4];
    for (int u = 0; u < U; ++u)
      for (int p = 0; p < P; ++p)
        for (int r = 0; r < 4; ++r) acc[u][p][r] = V(0.f);
    const float* wo = w + o * K;
    int64_t k = 0;
    auto step = [&](int u, auto load) {
      V av[P], wv[4];
      for (int p = 0; p < P; ++p) av[p] = load(a + p * lda + k);
      for (int r = 0; r < 4; ++r) wv[r] = load(wo + r * K + k);
      for (int p = 0; p < P; ++p)
        for (int r = 0; r < 4; ++r) acc[u][p][r] = at::vec::fmadd(av[p], wv[r], acc[u][p][r]);
    };
    const auto full = [](const float* q) { return V::loadu(q); };
    for (; k + U * L <= K;)
      for (int u = 0; u < U; ++u, k += L) step(u, full);
    for (; k + L <= K; k += L) step(0, full);
    if (k < K) step(0, [n = K - k](const float* q) { return V(load_n(q, n)); });
    for (int u = 1; u < U; ++u)
      for (int p = 0; p < P; ++p)
        for (int r = 0; r < 4; ++r) acc[0][p][r] = acc[0][p][r] + acc[u][p][r];
    for (int p = 0; p < P; ++p) _mm_storeu_ps(c + p * ldc + o, hsum4(acc[0][p]));
  }
  for (; o < Cout; ++o)
    for (int p = 0; p < P; ++p) {
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += a[p * lda + k] * w[o * K + k];
      c[p * ldc + o] = s;
    }
}
#endif

}  // namespace

void gemm_rows(const float* a, int64_t lda, const float* w, int64_t P, int64_t K, int64_t Cout, float* c,
               int64_t ldc) {
  if (P == 0 || Cout == 0) return;
#if FZ_AVX2
  if (P <= 2 && cpu_has_avx2()) {
    if (P == 1) gemv_rows<1>(a, lda, w, K, Cout, c, ldc);
    else gemv_rows<2>(a, lda, w, K, Cout, c, ldc);
    return;
  }
#endif
  if (P == 1) {  // one row: its stride is free, but BLAS rejects (and skips) lda < K or ldc < Cout
    lda = std::max(lda, K);
    ldc = std::max(ldc, Cout);
  }
  if (sgemm_ != nullptr) {
    // column-major view: c^T (Cout x P) = w (Cout x K, stored as K x Cout) ^T @ a^T (K x P)
    const char ta = 'T', tb = 'N';
    const int m = static_cast<int>(Cout), n = static_cast<int>(P), k = static_cast<int>(K);
    const int la = static_cast<int>(K), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
    // c zeroed here and accumulated into (beta 1): MKL's own beta-0 pass (sgemm_mscale) was 8% of
    // mobilenet_v3_small at batch 1, memset is cheaper (interleaved A/B: -3% on the four models)
    if (ldc == Cout) {
      std::memset(c, 0, sizeof(float) * P * Cout);
    } else {
      for (int64_t p = 0; p < P; ++p) std::memset(c + p * ldc, 0, sizeof(float) * Cout);
    }
    const float one = 1.f;
    sgemm_(&ta, &tb, &m, &n, &k, &one, w, &la, a, &lb, &one, c, &lc);
    return;
  }
  const auto f = at::TensorOptions().dtype(at::kFloat);
  at::Tensor ct = at::from_blob(c, {P, Cout}, {ldc, 1}, f);
  at::mm_out(ct, at::from_blob(const_cast<float*>(a), {P, K}, {lda, 1}, f),
             at::from_blob(const_cast<float*>(w), {Cout, K}, {K, 1}, f).t());
}

void gemm_rows_split(const float* a, int64_t lda, const float* w, int64_t P, int64_t K, int64_t Cout, float* c,
                     int64_t ldc) {
  const int64_t threads = at::get_num_threads();
  // rows when each thread gets at least 64 of them, else blocks of 16 output channels (two AVX2 vectors)
  const bool by_rows = P >= 64 * threads || Cout < 32;
  const int64_t units = by_rows ? P : (Cout + 15) / 16;
  const int64_t grain = std::max<int64_t>(1, (units + threads - 1) / threads);
  at::parallel_for(0, units, grain, [&](int64_t b, int64_t e) {
    const int64_t p0 = by_rows ? b : 0, p1 = by_rows ? e : P;
    const int64_t o0 = by_rows ? 0 : b * 16, o1 = by_rows ? Cout : std::min(Cout, e * 16);
    gemm_rows(a + p0 * lda, lda, w + o0 * K, p1 - p0, K, o1 - o0, c + p0 * ldc + o0, ldc);
  });
}

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END
