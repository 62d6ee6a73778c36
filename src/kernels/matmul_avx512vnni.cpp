// The matmul kernels for AVX-512 with VNNI: 16-row tiles, u8 x s8 products with vpdpbusd
// (64 multiply-adds per instruction), 8 tokens per register tile.
#include "kernels/matmul_fq.h"
#include "kernels/matmul_simd_avx512.h"
#include "kernels/nm_sparse_kernels.h"
#include "kernels/sparse_q4_kernels.h"

namespace frugal::kernels {

const KernelTable& avx512vnni_kernel_table() {
  static const KernelTable table = [] {
    KernelTable t = make_kernel_table<SimdAvx512<true>>(Isa::kAvx512Vnni);
    t.quant_rows[kKernelSparseQ8] = sparse_q8_avx512_supported() ? sparse_q8_rows_avx512 : sparse_q8_rows_avx2;
    add_fq_kernels<SimdAvx512<true>>(t);
    t.quant_rows[kKernelSparseQ4] = sparse_q8_avx512_supported() ? sparse_q4_rows_avx512 : sparse_q4_rows_avx2;
    t.quant_rows[kKernelNmSparse] = sparse_q8_avx512_supported() ? nm_rows_avx512 : nm_rows_avx2;
    return t;
  }();
  return table;
}

}  // namespace frugal::kernels
