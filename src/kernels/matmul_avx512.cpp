// The matmul kernels for AVX-512 F/BW/VL/DQ without VNNI: 16-row tiles, u8 x s8 products with
// vpmaddubsw + vpmaddwd, 8 tokens per register tile.
#include "kernels/matmul_fq.h"
#include "kernels/matmul_simd_avx512.h"
#include "kernels/nm_sparse_kernels.h"
#include "kernels/sparse_q4_kernels.h"

namespace frugal::kernels {

const KernelTable& avx512_kernel_table() {
  static const KernelTable table = [] {
    KernelTable t = make_kernel_table<SimdAvx512<false>>(Isa::kAvx512);
    t.quant_rows[kKernelSparseQ8] = sparse_q8_rows_avx2;
    add_fq_kernels<SimdAvx512<false>>(t);
    t.quant_rows[kKernelSparseQ4] = sparse_q4_rows_avx2;
    t.quant_rows[kKernelNmSparse] = nm_rows_avx2;
    return t;
  }();
  return table;
}

}  // namespace frugal::kernels
