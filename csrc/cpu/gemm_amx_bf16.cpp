// The bf16 GEMMs of gemm_bf16.cpp through AMX, where the CPU has AMX-BF16 and the OS lets this process use its
// tile registers (cpu_has_amx_bf16): one tdpbf16ps multiplies 16 rows x 32 channels by 32 x 16 into float32,
// 16 times vdpbf16ps's work. On session 32's Xeon VM vdpbf16ps ran 1.75 G/s on one core (56 G multiply-adds)
// against 6.2 G/s zmm FMAs (99 G), standalone loops: without AMX its bf16 models were 0.78-0.91x float32, with
// it 1.02-2.21x (BENCHMARKS.md, bf16 session 32). The packed panels are already AMX's B layout
// (per pair of input channels a 64-byte row of 16 (w[o, 2j], w[o, 2j+1])), so a tile of B is 16 rows of a panel.
// A tile is 16 rows of a; the C tiles go through a 4 KiB buffer into the same BN + act (+ residual) epilogue.
#include <ATen/ATen.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <cpuid.h>
#include <cstdlib>

#include "cpu_kernels.h"
#include "fastzoo/cpu_vec.h"
#include "vec512.h"
#include "vec512_bf16.h"

namespace fastzoo {
namespace cpu {

#if FZ_AVX2
#define FZ_AMX __attribute__((target("avx,avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))
namespace {

// Tiles: C of up to 4 panels (0-3), then A and B for 32 input channels (4, 5) and for the last K % 32 (6, 7).
constexpr int kPanels = 4;

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

TileConfig tile_config(int64_t K) {
  TileConfig t;
  const int rem = static_cast<int>(K % 32);
  for (int i = 0; i < 6; ++i) t.rows[i] = 16, t.colsb[i] = 64;
  if (rem) t.rows[6] = 16, t.colsb[6] = static_cast<uint16_t>(2 * rem), t.rows[7] = rem / 2, t.colsb[7] = 64;
  return t;
}

// C tile q += A tile a . B tile b, b loaded from w (the tile numbers are immediates: macros, not functions)
#define FZ_AMX_DP(q, a, b, w) \
  do {                        \
    _tile_loadd(b, (w), 64);  \
    _tile_dpbf16ps(q, a, b);  \
  } while (0)

// 16 rows of a (from a, lda) times the NP panels at wp (K2 pairs each) into tiles 0..NP-1
template <int NP>
FZ_AMX void block_products(const uint16_t* a, int64_t lda, const uint16_t* wp, int64_t K) {
  const int64_t K2 = K / 2;
  if constexpr (NP > 0) _tile_zero(0);
  if constexpr (NP > 1) _tile_zero(1);
  if constexpr (NP > 2) _tile_zero(2);
  if constexpr (NP > 3) _tile_zero(3);
  const int64_t full = K / 32 * 32;
  for (int64_t k0 = 0; k0 < K; k0 += 32) {
    const uint16_t* w = wp + k0 * 16;  // pair row k0 / 2 of panel 0; panel q is 32 * K2 values on
    if (k0 < full) {
      _tile_loadd(4, a + k0, 2 * lda);
      if constexpr (NP > 0) FZ_AMX_DP(0, 4, 5, w);
      if constexpr (NP > 1) FZ_AMX_DP(1, 4, 5, w + 32 * K2);
      if constexpr (NP > 2) FZ_AMX_DP(2, 4, 5, w + 64 * K2);
      if constexpr (NP > 3) FZ_AMX_DP(3, 4, 5, w + 96 * K2);
    } else {
      _tile_loadd(6, a + k0, 2 * lda);
      if constexpr (NP > 0) FZ_AMX_DP(0, 6, 7, w);
      if constexpr (NP > 1) FZ_AMX_DP(1, 6, 7, w + 32 * K2);
      if constexpr (NP > 2) FZ_AMX_DP(2, 6, 7, w + 64 * K2);
      if constexpr (NP > 3) FZ_AMX_DP(3, 6, 7, w + 96 * K2);
    }
  }
}

template <int NP>
FZ_AMX void store_products(float (*buf)[16][16]) {
  if constexpr (NP > 0) _tile_stored(0, buf[0], 64);
  if constexpr (NP > 1) _tile_stored(1, buf[1], 64);
  if constexpr (NP > 2) _tile_stored(2, buf[2], 64);
  if constexpr (NP > 3) _tile_stored(3, buf[3], 64);
}

template <Act A, typename Out>
FZ_AMX void gemm_amx(const uint16_t* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout, Out* c,
                     int64_t ldc, const float* sc, const float* sh, const uint16_t* r, int64_t ldr) {
  const TileConfig cfg = tile_config(K);
  _tile_loadconfig(&cfg);
  alignas(64) float buf[kPanels][16][16];
  for (int64_t p0 = 0; p0 < P; p0 += 16) {
    for (int64_t o0 = 0; o0 < Cout; o0 += 16 * kPanels) {
      const int np = static_cast<int>(std::min<int64_t>(kPanels, (Cout - o0 + 15) / 16));
      const uint16_t* w = wp + o0 * K;  // panel o0 / 16: 16 * K values each
      const uint16_t* ap = a + p0 * lda;
      switch (np) {
        case 1: block_products<1>(ap, lda, w, K); store_products<1>(buf); break;
        case 2: block_products<2>(ap, lda, w, K); store_products<2>(buf); break;
        case 3: block_products<3>(ap, lda, w, K); store_products<3>(buf); break;
        default: block_products<4>(ap, lda, w, K); store_products<4>(buf); break;
      }
      for (int q = 0; q < np; ++q) {
        const int64_t o = o0 + 16 * q;
        const __mmask16 m = lanes(0, Cout - o);
        const __m512 vs = _mm512_maskz_loadu_ps(m, sc + o), vh = _mm512_maskz_loadu_ps(m, sh + o);
        for (int i = 0; i < 16; ++i)
          bn_act_store16<A>(c + (p0 + i) * ldc + o, _mm512_load_ps(buf[q][i]), vs, vh,
                            r ? r + (p0 + i) * ldr + o : nullptr, m);
      }
    }
  }
  _tile_release();
}

// AMX-BF16 and AMX-TILE (CPUID 7.0 EDX bits 22, 24), the OS saving tile state (XCR0 bits 17, 18), and Linux's
// permission for this process (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, Linux 5.16 on)
bool amx_usable() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !((edx >> 22) & 1) || !((edx >> 24) & 1)) return false;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !((ecx >> 27) & 1)) return false;  // OSXSAVE
  unsigned lo, hi;
  asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if (((lo >> 17) & 3) != 3) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

template <typename Out>
void gemm_amx_impl(const uint16_t* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout, Out* c,
                   int64_t ldc, const float* sc, const float* sh, const uint16_t* r, int64_t ldr, Act act) {
  TORCH_CHECK(P % 16 == 0 && K % 2 == 0 && cpu_has_amx_bf16(), "gemm_amx_bf16_bn_act: needs AMX, P % 16 == 0 and "
              "an even K, got P ", P, ", K ", K);
  with_act(act, [&](auto A_) {
    gemm_amx<decltype(A_)::value, Out>(a, lda, wp, P, K, Cout, c, ldc, sc, sh, r, ldr);
  });
}

}  // namespace

bool cpu_has_amx_bf16() {
  static const bool yes = cpu_has_avx512bf16() && !std::getenv("FASTZOO_NO_AMX") && amx_usable();
  return yes;
}

void gemm_amx_bf16_bn_act(const uint16_t* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout,
                          float* c, int64_t ldc, const float* sc, const float* sh, const uint16_t* r, int64_t ldr,
                          Act act) {
  gemm_amx_impl(a, lda, wp, P, K, Cout, c, ldc, sc, sh, r, ldr, act);
}

void gemm_amx_bf16_bn_act(const uint16_t* a, int64_t lda, const uint16_t* wp, int64_t P, int64_t K, int64_t Cout,
                          uint16_t* c, int64_t ldc, const float* sc, const float* sh, const uint16_t* r, int64_t ldr,
                          Act act) {
  gemm_amx_impl(a, lda, wp, P, K, Cout, c, ldc, sc, sh, r, ldr, act);
}
#else
bool cpu_has_amx_bf16() { return false; }
void gemm_amx_bf16_bn_act(const uint16_t*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, float*, int64_t,
                          const float*, const float*, const uint16_t*, int64_t, Act) {
  TORCH_CHECK(false, "gemm_amx_bf16_bn_act: built without AVX2");
}
void gemm_amx_bf16_bn_act(const uint16_t*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, uint16_t*, int64_t,
                          const float*, const float*, const uint16_t*, int64_t, Act) {
  TORCH_CHECK(false, "gemm_amx_bf16_bn_act: built without AVX2");
}
#endif

}  // namespace cpu
}  // namespace fastzoo
FZ_VEC_END
