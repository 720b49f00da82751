// Rows in register tiles of a compile-time height, for the GEMM kernels (gemm_epilogue.cpp, gemm_bf16.cpp) and
// the stems' pixels (conv_few_channels512.cpp).
#pragma once
#include <cstdint>

namespace fastzoo {
namespace cpu {

// The last n < R + 1 rows from row p as one tile of height n: f.template operator()<n>(p).
template <int R, typename F>
inline void last_row_tile(int64_t p, int64_t n, F& f) {
  if constexpr (R > 0) {
    if (n == R) f.template operator()<R>(p);
    else last_row_tile<R - 1>(p, n, f);
  }
}

// Rows [p, P): tiles of MR rows, then what is left as one shorter tile; f.template operator()<height>(row).
template <int MR, typename F>
inline void row_tiles(int64_t p, int64_t P, F&& f) {
  for (; p + MR <= P; p += MR) f.template operator()<MR>(p);
  last_row_tile<MR - 1>(p, P - p, f);
}

}  // namespace cpu
}  // namespace fastzoo
