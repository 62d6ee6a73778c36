// Vectorized elementary functions on 8 floats (AVX2; included only by AVX2 files and their tests):
// exp for softmax, SiLU and GELU, where a scalar std::exp per element was the largest cost of
// prefill.
#pragma once

#include <immintrin.h>

namespace frugal {

// e^x with the Cephes expf scheme: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial,
// 2^n by building the exponent bits. Relative error ~2e-7 on [-87, 88]; inputs below -87.3
// (including -inf) give 0, above 88.7 give +inf.
inline __m256 exp8(__m256 x) {
  const __m256 max_input = _mm256_set1_ps(88.7f);
  const __m256 min_input = _mm256_set1_ps(-87.3f);
  const __m256 underflow = _mm256_cmp_ps(x, min_input, _CMP_LT_OQ);
  const __m256 overflow = _mm256_cmp_ps(x, max_input, _CMP_GT_OQ);
  x = _mm256_max_ps(_mm256_min_ps(x, max_input), min_input);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n ln2, with ln2 split in two for precision.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // n is in [-126, 128]: 2^n = (n + 127) << 23, split in two factors so n = 128 stays finite.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(ni, 1);
  const __m256 two_half = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  const __m256 two_rest =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
  __m256 result = _mm256_mul_ps(_mm256_mul_ps(p, two_half), two_rest);
  result = _mm256_andnot_ps(underflow, result);
  return _mm256_blendv_ps(result, _mm256_set1_ps(__builtin_inff()), overflow);
}

}  // namespace frugal
