// Grid fitting (min/max and importance-weighted search) and bit-exact block encoding of the GGML
// formats Q8_0..Q6_K and of frugal's generic group grids; see format_grid.h.
#include "compress/format_grid.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "base/check.h"
#include "compress/parallel.h"
#include "tensor/fp16.h"
#include "tensor/generic_group.h"
#include "tensor/quant_blocks.h"
#include "tensor/weight_codec.h"

namespace frugal::compress {
namespace {

using quant::kQK_K;

// How a format turns its stored parameters into sub-block grids: each codec's grid
// (tensor/weight_codec.h, where the code ranges are given).
using Kind = GridKind;

struct FormatSpec {
  DType type;
  int block, sub, qmin, qmax;
  Kind kind;
  int code_min, code_max;  // sub-block scale codes of the two-level formats
  int min_code_max;        // sub-block min codes (0..min_code_max) of the two-level affine formats
};

// The formats with a grid, read once from the codec table.
constexpr size_t kMaxSpecs = 16;
struct SpecTable {
  std::array<FormatSpec, kMaxSpecs> specs{};
  size_t count = 0;
};

const SpecTable& spec_table() {
  static const SpecTable table = [] {
    SpecTable t;
    for (const WeightCodec& c : weight_codecs()) {
      if (c.grid.kind == GridKind::kNone) continue;
      FRUGAL_CHECK(t.count < kMaxSpecs);
      const CodecGrid& g = c.grid;
      t.specs[t.count++] = {c.type, static_cast<int>(type_traits(c.type).block_size), g.sub, g.qmin, g.qmax, g.kind,
                            g.code_min, g.code_max, g.min_code_max};
    }
    return t;
  }();
  return table;
}

const FormatSpec* find_spec(DType type) {
  const SpecTable& t = spec_table();
  for (size_t i = 0; i < t.count; ++i) {
    if (t.specs[i].type == type) return &t.specs[i];
  }
  return nullptr;
}

const FormatSpec& spec_of(DType type) {
  const FormatSpec* s = find_spec(type);
  FRUGAL_CHECK(s != nullptr);
  return *s;
}

bool is_two_level(const FormatSpec& s) {
  return s.kind == Kind::kTwoLevelAffine || s.kind == Kind::kTwoLevelSymmetric;
}

// Nearest code given 1/scale, as the reference encoders compute it: x * (1/d), rounded half to
// even, clamped (clamping before rounding equals rounding before clamping for integer bounds and
// keeps huge quotients out of the int conversion). std::rint rounds like lrintf in the default
// rounding mode but compiles to one instruction (it never sets errno); the clamp is written out
// for the same reason; it also maps NaN to the low end, so a non-finite weight still gets a
// valid code.
inline float clamp_round(float t, float lo, float hi) {
  t = t >= lo ? t : lo;
  t = t <= hi ? t : hi;
  return std::rint(t);
}

inline int nearest_code(float x, float offset, float inv_scale, int qmin, int qmax) {
  return static_cast<int>(clamp_round((x - offset) * inv_scale, static_cast<float>(qmin), static_cast<float>(qmax)));
}

inline float inverse_or_zero(float s) { return s != 0.0f ? 1.0f / s : 0.0f; }

// Sums over i of w q, w q^2 and w x q for the codes q_i = clamp_round((x_i - anchor) * inv + base,
// lo, hi): the statistics every candidate scale of the float fits below needs (about 30
// candidates per group, so this loop is most of the search's time). Eight values per step with
// AVX2 (the project's baseline ISA), the sums in double; the codes are the scalar ones (same
// float operations, rint = round-to-nearest-even, NaN clamped to lo).
struct CodeSums {
  double wq = 0.0, wqq = 0.0, wxq = 0.0;
};

#if defined(__AVX2__)
// Lanes 4*half .. 4*half+3 of v widened to double.
inline __m256d widen_half(__m256 v, int half) {
  return _mm256_cvtps_pd(half == 0 ? _mm256_castps256_ps128(v) : _mm256_extractf128_ps(v, 1));
}

// clamp_round of eight values: clamped to [lo, hi] (NaN to lo: max_ps returns its second operand
// for NaN), rounded half to even.
inline __m256 clamp_round8(__m256 t, __m256 lo, __m256 hi) {
  t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
  return _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
#endif

CodeSums code_sums(const float* x, const float* w, int64_t n, float anchor, float inv, float base, float lo, float hi) {
  CodeSums sums;
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256 anchor_v = _mm256_set1_ps(anchor), inv_v = _mm256_set1_ps(inv), base_v = _mm256_set1_ps(base);
  const __m256 lo_v = _mm256_set1_ps(lo), hi_v = _mm256_set1_ps(hi);
  __m256d wq = _mm256_setzero_pd(), wqq = _mm256_setzero_pd(), wxq = _mm256_setzero_pd();
  for (; i + 8 <= n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    const __m256 q = clamp_round8(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(xv, anchor_v), inv_v), base_v), lo_v, hi_v);
    const __m256 wv = _mm256_loadu_ps(w + i);
    for (int half = 0; half < 2; ++half) {
      const __m256d qd = widen_half(q, half);
      const __m256d wd = widen_half(wv, half);
      const __m256d xd = widen_half(xv, half);
      const __m256d wqd = _mm256_mul_pd(wd, qd);
      wq = _mm256_add_pd(wq, wqd);
      wqq = _mm256_add_pd(wqq, _mm256_mul_pd(wqd, qd));
      wxq = _mm256_add_pd(wxq, _mm256_mul_pd(wqd, xd));
    }
  }
  auto total = [](__m256d v) {
    alignas(32) double lanes[4];
    _mm256_store_pd(lanes, v);
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  };
  sums.wq = total(wq);
  sums.wqq = total(wqq);
  sums.wxq = total(wxq);
#endif
  for (; i < n; ++i) {
    const double q = clamp_round((x[i] - anchor) * inv + base, lo, hi);
    const double wqd = static_cast<double>(w[i]) * q;
    sums.wq += wqd;
    sums.wqq += wqd * q;
    sums.wxq += wqd * x[i];
  }
  return sums;
}

// Weighted squared error of x on grid g with nearest codes.
double grid_error(const AffineGrid& g, const float* x, const float* w, int64_t n) {
  const float inv = inverse_or_zero(g.scale);
  double e = 0.0;
  int64_t i = 0;
#if defined(__AVX2__)
  // Eight values per step (the codes as nearest_code computes them), the error summed in double.
  const __m256 offset_v = _mm256_set1_ps(g.offset), inv_v = _mm256_set1_ps(inv), scale_v = _mm256_set1_ps(g.scale);
  const __m256 lo_v = _mm256_set1_ps(static_cast<float>(g.qmin)), hi_v = _mm256_set1_ps(static_cast<float>(g.qmax));
  __m256d acc = _mm256_setzero_pd();
  for (; i + 8 <= n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    const __m256 q = clamp_round8(_mm256_mul_ps(_mm256_sub_ps(xv, offset_v), inv_v), lo_v, hi_v);
    const __m256 v = _mm256_fmadd_ps(scale_v, q, offset_v);
    const __m256 wv = _mm256_loadu_ps(w + i);
    for (int half = 0; half < 2; ++half) {
      const __m256d xd = widen_half(xv, half);
      const __m256d vd = widen_half(v, half);
      const __m256d wd = widen_half(wv, half);
      const __m256d d = _mm256_sub_pd(xd, vd);
      acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_mul_pd(wd, d), d));
    }
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, acc);
  e = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
#endif
  for (; i < n; ++i) {
    const float v = g.value(nearest_code(x[i], g.offset, inv, g.qmin, g.qmax));
    const double d = static_cast<double>(x[i]) - static_cast<double>(v);
    e += static_cast<double>(w[i]) * d * d;
  }
  return e;
}

// Room for one encoded block of any supported type (Q6_K's 210 bytes is the largest).
constexpr size_t kMaxBlockBytes = 256;
static_assert(sizeof(quant::BlockQ6_K) <= kMaxBlockBytes && sizeof(quant::BlockQ5_K) <= kMaxBlockBytes);

// A stack buffer of ones for blocks quantized without importance.
const float* block_ones() {
  static const std::array<float, kQK_K> ones = [] {
    std::array<float, kQK_K> a{};
    a.fill(1.0f);
    return a;
  }();
  return ones.data();
}

// ---- Float fits of one group of values ----------------------------------------------------------
//
// Both fits follow the approach of ggml's make_qx_quants / make_qkx2_quants (ggml-quants.c): try
// a sweep of inverse scales around the min/max one, round with each, solve the weighted least
// squares scale (and offset) for those codes, keep the best, then re-round and re-solve. The sweep
// also contains a few strongly clipped scales, which matter for low bit widths and long groups
// (the MSE-optimal uniform 3-bit grid for Gaussian weights clips well inside the extremes).

struct FloatFit {
  float scale = 0.0f;
  float offset = 0.0f;
  double error = 0.0;    // weighted squared error of the fitted codes
  double sum_wqq = 0.0;  // sum of w q^2: sensitivity of the error to the scale
  double sum_w = 0.0;    // sum of w: sensitivity to the offset
};

constexpr float kClipFactors[] = {1.15f, 1.3f, 1.5f, 1.75f, 2.0f};

// x ~ scale * q, q in [qmin, qmax] with qmin < 0 < qmax; the scale may be negative (that puts the
// largest-magnitude value on the wider negative side of the code range).
FloatFit fit_symmetric(const float* x, const float* w, int64_t n, int qmin, int qmax) {
  float amax = 0.0f, m = 0.0f;
  double sum_wxx = 0.0, sum_w = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      m = x[i];
    }
    sum_wxx += static_cast<double>(w[i]) * x[i] * x[i];
    sum_w += w[i];
  }
  FloatFit best;
  best.sum_w = sum_w;
  if (amax == 0.0f) return best;

  // The min/max fit itself (m onto qmin), evaluated exactly.
  best.scale = m / static_cast<float>(qmin);
  best.error = grid_error({best.scale, 0.0f, qmin, qmax}, x, w, n);
  best.sum_wqq = 0.0;
  {
    const float inv = 1.0f / best.scale;
    for (int64_t i = 0; i < n; ++i) {
      const int q = nearest_code(x[i], 0.0f, inv, qmin, qmax);
      best.sum_wqq += static_cast<double>(w[i]) * q * q;
    }
  }
  auto consider = [&](float inv) {
    const CodeSums c = code_sums(x, w, n, 0.0f, inv, 0.0f, static_cast<float>(qmin), static_cast<float>(qmax));
    const double sxq = c.wxq, sqq = c.wqq;
    if (!(sqq > 0.0)) return false;
    const double err = std::max(0.0, sum_wxx - sxq * sxq / sqq);
    const float scale = static_cast<float>(sxq / sqq);
    if (err < best.error && scale != 0.0f) {
      best.scale = scale;
      best.error = err;
      best.sum_wqq = sqq;
      return true;
    }
    return false;
  };
  for (int t = -9; t <= 9; ++t) consider((static_cast<float>(qmin) - 0.1f * t) / m);
  for (float f : kClipFactors) consider(f * static_cast<float>(qmin) / m);
  for (int t = -2; t <= 2; ++t) consider((static_cast<float>(qmax) + 0.2f * t) / m);
  for (int iter = 0; iter < 2; ++iter) {
    if (!consider(1.0f / best.scale)) break;
  }
  return best;
}

// x ~ scale * q + offset, q in [0, qmax], scale > 0. With offset_nonpositive the offset is kept
// <= 0, as the K-quants store it as dmin times an unsigned code (ggml keeps the block minimum <= 0
// for the same reason).
FloatFit fit_affine(const float* x, const float* w, int64_t n, int qmax, bool offset_nonpositive) {
  float lo = x[0], hi = x[0];
  double sw = 0.0, swx = 0.0, swxx = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
    sw += w[i];
    swx += static_cast<double>(w[i]) * x[i];
    swxx += static_cast<double>(w[i]) * x[i] * x[i];
  }
  if (offset_nonpositive && lo > 0.0f) lo = 0.0f;
  FloatFit best;
  best.sum_w = sw;
  if (!(hi > lo)) {  // constant values: every code decodes to the offset
    best.offset = lo;
    return best;
  }
  best.scale = (hi - lo) / static_cast<float>(qmax);
  best.offset = lo;
  best.error = grid_error({best.scale, best.offset, 0, qmax}, x, w, n);
  {
    const float inv = 1.0f / best.scale;
    for (int64_t i = 0; i < n; ++i) {
      const int q = nearest_code(x[i], best.offset, inv, 0, qmax);
      best.sum_wqq += static_cast<double>(w[i]) * q * q;
    }
  }
  // Rounds (x - anchor) * inv + base to codes and solves the 2x2 weighted least squares problem
  // for scale and offset.
  auto consider = [&](float anchor, float inv, float base) {
    const CodeSums c = code_sums(x, w, n, anchor, inv, base, 0.0f, static_cast<float>(qmax));
    const double swq = c.wq, swqq = c.wqq, swxq = c.wxq;
    const double det = sw * swqq - swq * swq;
    if (!(det > 1e-12 * sw * swqq)) return false;  // all codes equal: no scale to solve for
    double s = (sw * swxq - swq * swx) / det;
    double o = (swqq * swx - swq * swxq) / det;
    if (offset_nonpositive && o > 0.0) {
      o = 0.0;
      s = swxq / swqq;
    }
    if (!(s > 0.0)) return false;
    const double err = std::max(
        0.0, swxx + s * s * swqq + o * o * sw + 2.0 * s * o * swq - 2.0 * s * swxq - 2.0 * o * swx);
    if (err < best.error && static_cast<float>(s) > 0.0f) {
      best.scale = static_cast<float>(s);
      best.offset = static_cast<float>(o);
      best.error = err;
      best.sum_wqq = swqq;
      return true;
    }
    return false;
  };
  const float range = hi - lo;
  for (int t = 0; t <= 20; ++t) consider(lo, (static_cast<float>(qmax) - 1.0f + 0.1f * t) / range, 0.0f);
  const float mid = 0.5f * (lo + hi);
  for (float f : kClipFactors) consider(mid, f * static_cast<float>(qmax) / range, 0.5f * qmax);
  for (int iter = 0; iter < 2; ++iter) {
    if (!consider(best.offset, 1.0f / best.scale, 0.0f)) break;
  }
  return best;
}

// ---- Two-level (K-quant) parameters -----------------------------------------------------------

// The grid of a K-quant sub-block from the stored d, dmin and codes, computed exactly as the
// decoders do: step = d * sc, shift = dmin * mc, x = step * q - shift.
AffineGrid two_level_grid(const FormatSpec& s, float d, float dmin, int sc, int mc) {
  AffineGrid g;
  g.scale = d * static_cast<float>(sc);
  g.offset = s.kind == Kind::kTwoLevelAffine ? -(dmin * static_cast<float>(mc)) : 0.0f;
  g.qmin = s.qmin;
  g.qmax = s.qmax;
  return g;
}

// Block scale d so that sub-block values v_j ~ d * c_j with integer codes c_j in [cmin, cmax],
// minimizing sum a_j (v_j - d c_j)^2: a few starting points that map the largest-magnitude value
// onto (or slightly past) the wide end of the code range, each refined by alternating rounding
// and least squares (the idea of ggml's make_qp_quants). a_j is how much sub-block j's error grows
// per unit of scale error (sum of w q^2, or sum of w for the mins).
float fit_super_scale(const float* v, const double* a, int n, int cmin, int cmax) {
  float ref = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(v[j]) > std::fabs(ref)) ref = v[j];
  }
  if (ref == 0.0f) return 0.0f;
  // The end of the code range with the larger magnitude takes ref: -32 for Q3_K, 63 for Q4_K.
  const float end = (cmin < 0 && -cmin >= cmax) ? static_cast<float>(cmin) : static_cast<float>(cmax);
  const float sign = end < 0.0f ? -1.0f : 1.0f;
  float best_d = ref / end;
  double best_err = std::numeric_limits<double>::infinity();
  int codes[16];
  auto round_codes = [&](float d) {
    const float inv = 1.0f / d;
    for (int j = 0; j < n; ++j) codes[j] = static_cast<int>(clamp_round(v[j] * inv, static_cast<float>(cmin), static_cast<float>(cmax)));
  };
  auto error_of = [&](float d) {
    double e = 0.0;
    for (int j = 0; j < n; ++j) {
      const double r = static_cast<double>(v[j]) - static_cast<double>(d) * codes[j];
      e += a[j] * r * r;
    }
    return e;
  };
  const float deltas[] = {0.0f, -1.0f, -0.5f, 0.5f, 1.0f, 2.0f};
  for (float delta : deltas) {
    float d = ref / (end + sign * delta);
    for (int iter = 0; iter < 3; ++iter) {
      round_codes(d);
      const double err = error_of(d);
      if (err < best_err) {
        best_err = err;
        best_d = d;
      }
      double num = 0.0, den = 0.0;
      for (int j = 0; j < n; ++j) {
        num += a[j] * v[j] * codes[j];
        den += a[j] * static_cast<double>(codes[j]) * codes[j];
      }
      if (!(den > 0.0)) break;
      const float next = static_cast<float>(num / den);
      if (next == 0.0f || next == d) break;
      d = next;
    }
  }
  return best_d;
}

// The best codes of one sub-block (true weighted error on the final grid) among the rounded float
// fit, its neighbours, and (if given) the current codes.
void choose_sub_codes(const FormatSpec& s, float d, float dmin, const FloatFit& fit,
                      const float* x, const float* w, int16_t* sc, int16_t* mc,
                      bool keep_current_candidate) {
  const bool affine = s.kind == Kind::kTwoLevelAffine;
  const int c0 = d != 0.0f ? static_cast<int>(clamp_round(fit.scale / d, static_cast<float>(s.code_min),
                                                          static_cast<float>(s.code_max)))
                          : 0;
  const int m0 = affine && dmin != 0.0f
                     ? static_cast<int>(clamp_round(-fit.offset / dmin, 0.0f, static_cast<float>(s.min_code_max)))
                     : 0;
  double best = std::numeric_limits<double>::infinity();
  int best_c = c0, best_m = m0;
  if (keep_current_candidate) {
    best = grid_error(two_level_grid(s, d, dmin, *sc, *mc), x, w, s.sub);
    best_c = *sc;
    best_m = *mc;
  }
  const int mspan = affine ? 1 : 0;
  for (int dc = -1; dc <= 1; ++dc) {
    const int c = c0 + dc;
    if (c < s.code_min || c > s.code_max) continue;
    for (int dm = -mspan; dm <= mspan; ++dm) {
      const int mm = m0 + dm;
      if (mm < 0 || mm > (affine ? s.min_code_max : 0)) continue;
      const double e = grid_error(two_level_grid(s, d, dmin, c, mm), x, w, s.sub);
      if (e < best) {
        best = e;
        best_c = c;
        best_m = mm;
      }
    }
  }
  *sc = static_cast<int16_t>(best_c);
  *mc = static_cast<int16_t>(best_m);
}

FloatFit fit_sub(const FormatSpec& s, const float* x, const float* w) {
  return s.kind == Kind::kTwoLevelAffine ? fit_affine(x, w, s.sub, s.qmax, true)
                                         : fit_symmetric(x, w, s.sub, s.qmin, s.qmax);
}

// K-quant search fit: float fit per sub-block, a weighted least-squares fp16 block scale (and
// dmin), then the best codes per sub-block around the rounded ones.
BlockGrid fit_two_level(const FormatSpec& s, const float* x, const float* w) {
  const int nsub = s.block / s.sub;
  FloatFit fits[16];
  float scales[16] = {}, mins[16] = {};
  double scale_weight[16] = {}, min_weight[16] = {};
  for (int j = 0; j < nsub; ++j) {
    fits[j] = fit_sub(s, x + j * s.sub, w + j * s.sub);
    scales[j] = fits[j].scale;
    mins[j] = -fits[j].offset;
    // A tiny floor keeps sub-blocks with zero importance from making the systems singular.
    scale_weight[j] = fits[j].sum_wqq + 1e-30;
    min_weight[j] = fits[j].sum_w + 1e-30;
  }
  BlockGrid g;
  g.type = s.type;
  g.d = float_to_fp16(fit_super_scale(scales, scale_weight, nsub, s.code_min, s.code_max));
  const float d = fp16_to_float(g.d);
  float dmin = 0.0f;
  if (s.kind == Kind::kTwoLevelAffine) {
    g.m = float_to_fp16(fit_super_scale(mins, min_weight, nsub, 0, s.min_code_max));
    dmin = fp16_to_float(g.m);
  }
  for (int j = 0; j < nsub; ++j) {
    choose_sub_codes(s, d, dmin, fits[j], x + j * s.sub, w + j * s.sub, &g.scale_code[j],
                     &g.min_code[j], false);
  }
  return g;
}

// Search fit of the one-scale formats: float fit, parameters rounded to fp16 as stored.
BlockGrid fit_one_level(const FormatSpec& s, const float* x, const float* w) {
  BlockGrid g;
  g.type = s.type;
  if (s.kind == Kind::kScale) {
    g.d = float_to_fp16(fit_symmetric(x, w, s.block, s.qmin, s.qmax).scale);
  } else {
    const FloatFit f = fit_affine(x, w, s.block, s.qmax, false);
    g.d = float_to_fp16(f.scale);
    g.m = float_to_fp16(f.offset);
  }
  return g;
}

double block_error(const BlockGrid& g, const FormatSpec& s, const float* x, const float* w) {
  double e = 0.0;
  for (int j = 0; j < s.block / s.sub; ++j) e += grid_error(sub_grid(g, j), x + j * s.sub, w + j * s.sub, s.sub);
  return e;
}

// Bits of the Q5 formats' high-bit word: bit j is the fifth bit of element j.
void store_qh32(uint32_t bits, uint8_t* qh) {
  for (int i = 0; i < 4; ++i) qh[i] = static_cast<uint8_t>(bits >> (8 * i));
}

}  // namespace

int AffineGrid::nearest(float x) const {
  return nearest_code(x, offset, inverse_or_zero(scale), qmin, qmax);
}

bool format_grid_supported(DType type) { return find_spec(type) != nullptr; }

FormatLayout format_layout(DType type) {
  const FormatSpec& s = spec_of(type);
  FormatLayout l;
  l.block_size = s.block;
  l.sub_size = s.sub;
  l.sub_count = s.block / s.sub;
  l.qmin = s.qmin;
  l.qmax = s.qmax;
  l.two_level = is_two_level(s);
  return l;
}

AffineGrid sub_grid(const BlockGrid& grid, int sub) {
  const FormatSpec& s = spec_of(grid.type);
  FRUGAL_CHECK(sub >= 0 && sub < s.block / s.sub);
  const float d = fp16_to_float(grid.d);
  switch (s.kind) {
    case Kind::kScale:
      return {d, 0.0f, s.qmin, s.qmax};
    case Kind::kScaleMin:
      return {d, fp16_to_float(grid.m), s.qmin, s.qmax};
    case Kind::kTwoLevelAffine:
    case Kind::kTwoLevelSymmetric:
      return two_level_grid(s, d, fp16_to_float(grid.m), grid.scale_code[sub], grid.min_code[sub]);
    case Kind::kNone:
      break;  // formats without a grid have no spec
  }
  return {};
}

BlockGrid fit_block_grid(DType type, const float* x, const float* importance, GridFit fit) {
  const FormatSpec& s = spec_of(type);
  const float* w = importance != nullptr ? importance : block_ones();
  // The min/max grid is read back from the traits' own round-to-nearest encoder, so kMinMax is
  // exactly frugal's RTN and the search can only improve on it.
  alignas(16) uint8_t rtn[kMaxBlockBytes];
  type_traits(type).quantize_row(x, rtn, s.block);
  const BlockGrid minmax = read_block_grid(type, rtn);
  if (fit == GridFit::kMinMax) return minmax;
  const BlockGrid searched = is_two_level(s) ? fit_two_level(s, x, w) : fit_one_level(s, x, w);
  return block_error(searched, s, x, w) < block_error(minmax, s, x, w) ? searched : minmax;
}

void refit_sub_block(BlockGrid& grid, int sub, const float* x, const float* importance) {
  const FormatSpec& s = spec_of(grid.type);
  FRUGAL_CHECK(is_two_level(s));
  FRUGAL_CHECK(sub >= 0 && sub < s.block / s.sub);
  const float* w = importance != nullptr ? importance : block_ones();
  const FloatFit f = fit_sub(s, x, w);
  choose_sub_codes(s, fp16_to_float(grid.d), fp16_to_float(grid.m), f, x, w, &grid.scale_code[sub],
                   &grid.min_code[sub], true);
}

void nearest_codes(const BlockGrid& grid, const float* x, int8_t* q) {
  const FormatSpec& s = spec_of(grid.type);
  for (int j = 0; j < s.block / s.sub; ++j) {
    const AffineGrid g = sub_grid(grid, j);
    const float inv = inverse_or_zero(g.scale);
    for (int i = 0; i < s.sub; ++i) {
      q[j * s.sub + i] = static_cast<int8_t>(nearest_code(x[j * s.sub + i], g.offset, inv, g.qmin, g.qmax));
    }
  }
}

void grid_values(const BlockGrid& grid, const int8_t* q, float* out) {
  const FormatSpec& s = spec_of(grid.type);
  for (int j = 0; j < s.block / s.sub; ++j) {
    const AffineGrid g = sub_grid(grid, j);
    for (int i = 0; i < s.sub; ++i) out[j * s.sub + i] = g.value(q[j * s.sub + i]);
  }
}

void encode_block(const BlockGrid& grid, const int8_t* q, void* out) {
  using namespace quant;
  const FormatSpec& s = spec_of(grid.type);
  for (int e = 0; e < s.block; ++e) FRUGAL_CHECK(q[e] >= s.qmin && q[e] <= s.qmax);
  // Stored codes are q - qmin for the formats that store unsigned codes with an implied shift.
  uint8_t c[kQK_K];
  for (int e = 0; e < s.block; ++e) c[e] = static_cast<uint8_t>(q[e] - s.qmin);
  switch (grid.type) {
    case DType::Q8_0: {
      BlockQ8_0 b;
      b.d = grid.d;
      for (int j = 0; j < kQK8_0; ++j) b.qs[j] = q[j];
      std::memcpy(out, &b, sizeof(b));
      return;
    }
    case DType::Q4_0:
    case DType::Q4_1: {
      // Element j is the low nibble of qs[j], element j + 16 the high one.
      uint8_t qs[16];
      for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(c[j] | (c[j + 16] << 4));
      if (grid.type == DType::Q4_0) {
        BlockQ4_0 b;
        b.d = grid.d;
        std::memcpy(b.qs, qs, 16);
        std::memcpy(out, &b, sizeof(b));
      } else {
        BlockQ4_1 b;
        b.d = grid.d;
        b.m = grid.m;
        std::memcpy(b.qs, qs, 16);
        std::memcpy(out, &b, sizeof(b));
      }
      return;
    }
    case DType::Q5_0:
    case DType::Q5_1: {
      // Low 4 bits as Q4_0; bit 4 of element j is bit j of the little-endian word qh.
      uint8_t qs[16];
      uint32_t qh = 0;
      for (int j = 0; j < 16; ++j) {
        qs[j] = static_cast<uint8_t>((c[j] & 0x0f) | ((c[j + 16] & 0x0f) << 4));
        qh |= static_cast<uint32_t>(c[j] >> 4) << j;
        qh |= static_cast<uint32_t>(c[j + 16] >> 4) << (j + 16);
      }
      if (grid.type == DType::Q5_0) {
        BlockQ5_0 b;
        b.d = grid.d;
        store_qh32(qh, b.qh);
        std::memcpy(b.qs, qs, 16);
        std::memcpy(out, &b, sizeof(b));
      } else {
        BlockQ5_1 b;
        b.d = grid.d;
        b.m = grid.m;
        store_qh32(qh, b.qh);
        std::memcpy(b.qs, qs, 16);
        std::memcpy(out, &b, sizeof(b));
      }
      return;
    }
    case DType::Q2_K: {
      // Element 128h + 32k + l is bits 2k..2k+1 of qs[32h + l]; scales byte = sc | mc << 4.
      BlockQ2_K b;
      for (int i = 0; i < 16; ++i) {
        FRUGAL_CHECK(grid.scale_code[i] >= 0 && grid.scale_code[i] <= 15);
        FRUGAL_CHECK(grid.min_code[i] >= 0 && grid.min_code[i] <= 15);
        b.scales[i] = static_cast<uint8_t>(grid.scale_code[i] | (grid.min_code[i] << 4));
      }
      for (int h = 0; h < 2; ++h) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t* e = c + 128 * h + l;
          b.qs[32 * h + l] = static_cast<uint8_t>(e[0] | (e[32] << 2) | (e[64] << 4) | (e[96] << 6));
        }
      }
      b.d = grid.d;
      b.dmin = grid.m;
      std::memcpy(out, &b, sizeof(b));
      return;
    }
    case DType::Q3_K: {
      // Stored code q + 4: low 2 bits as Q2_K, bit 2 in bit 4h + k of hmask[l] (set = no -4).
      BlockQ3_K b;
      std::memset(&b, 0, sizeof(b));
      int8_t sc[16];
      for (int i = 0; i < 16; ++i) {
        FRUGAL_CHECK(grid.scale_code[i] >= -32 && grid.scale_code[i] <= 31);
        sc[i] = static_cast<int8_t>(grid.scale_code[i]);
      }
      pack_q3_k_scales(sc, b.scales);
      for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 4; ++k) {
          for (int l = 0; l < 32; ++l) {
            const int v = c[128 * h + 32 * k + l];
            b.qs[32 * h + l] |= static_cast<uint8_t>((v & 3) << (2 * k));
            b.hmask[l] |= static_cast<uint8_t>((v >> 2) << (4 * h + k));
          }
        }
      }
      b.d = grid.d;
      std::memcpy(out, &b, sizeof(b));
      return;
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      // Element 64p + l is the low nibble of qs[32p + l], 64p + 32 + l the high one; Q5_K's bit 4
      // sits in bit 2p (resp. 2p + 1) of qh[l]. Scales and mins pack as get_scale_min_k4 reads.
      uint8_t sc[8], mn[8];
      for (int i = 0; i < 8; ++i) {
        FRUGAL_CHECK(grid.scale_code[i] >= 0 && grid.scale_code[i] <= 63);
        FRUGAL_CHECK(grid.min_code[i] >= 0 && grid.min_code[i] <= 63);
        sc[i] = static_cast<uint8_t>(grid.scale_code[i]);
        mn[i] = static_cast<uint8_t>(grid.min_code[i]);
      }
      uint8_t packed[kKScaleSize];
      pack_k4_scales_mins(sc, mn, packed);
      uint8_t qs[kQK_K / 2];
      uint8_t qh[kQK_K / 8] = {};
      for (int p = 0; p < 4; ++p) {
        for (int l = 0; l < 32; ++l) {
          const int lo = c[64 * p + l], hi = c[64 * p + 32 + l];
          qs[32 * p + l] = static_cast<uint8_t>((lo & 0x0f) | ((hi & 0x0f) << 4));
          qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * p)) | ((hi >> 4) << (2 * p + 1)));
        }
      }
      if (grid.type == DType::Q4_K) {
        BlockQ4_K b;
        b.d = grid.d;
        b.dmin = grid.m;
        std::memcpy(b.scales, packed, sizeof(packed));
        std::memcpy(b.qs, qs, sizeof(qs));
        std::memcpy(out, &b, sizeof(b));
      } else {
        BlockQ5_K b;
        b.d = grid.d;
        b.dmin = grid.m;
        std::memcpy(b.scales, packed, sizeof(packed));
        std::memcpy(b.qh, qh, sizeof(qh));
        std::memcpy(b.qs, qs, sizeof(qs));
        std::memcpy(out, &b, sizeof(b));
      }
      return;
    }
    case DType::Q6_K: {
      // Stored code q + 32. Element 128h + 32k + l: low nibble in ql[64h + 32(k & 1) + l] (low
      // nibble for k < 2, high for k >= 2), high 2 bits in bits 2k..2k+1 of qh[32h + l].
      BlockQ6_K b;
      for (int i = 0; i < 16; ++i) {
        FRUGAL_CHECK(grid.scale_code[i] >= -128 && grid.scale_code[i] <= 127);
        b.scales[i] = static_cast<int8_t>(grid.scale_code[i]);
      }
      for (int h = 0; h < 2; ++h) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t* e = c + 128 * h + l;
          b.ql[64 * h + l] = static_cast<uint8_t>((e[0] & 0x0f) | ((e[64] & 0x0f) << 4));
          b.ql[64 * h + 32 + l] = static_cast<uint8_t>((e[32] & 0x0f) | ((e[96] & 0x0f) << 4));
          b.qh[32 * h + l] = static_cast<uint8_t>((e[0] >> 4) | ((e[32] >> 4) << 2) |
                                                  ((e[64] >> 4) << 4) | ((e[96] >> 4) << 6));
        }
      }
      b.d = grid.d;
      std::memcpy(out, &b, sizeof(b));
      return;
    }
    default:
      FRUGAL_CHECK(false);
  }
}

BlockGrid read_block_grid(DType type, const void* block) {
  using namespace quant;
  spec_of(type);
  BlockGrid g;
  g.type = type;
  switch (type) {
    case DType::Q8_0: {
      BlockQ8_0 b;
      std::memcpy(&b, block, sizeof(b));
      g.d = b.d;
      break;
    }
    case DType::Q4_0: {
      BlockQ4_0 b;
      std::memcpy(&b, block, sizeof(b));
      g.d = b.d;
      break;
    }
    case DType::Q5_0: {
      BlockQ5_0 b;
      std::memcpy(&b, block, sizeof(b));
      g.d = b.d;
      break;
    }
    case DType::Q4_1: {
      BlockQ4_1 b;
      std::memcpy(&b, block, sizeof(b));
      g.d = b.d;
      g.m = b.m;
      break;
    }
    case DType::Q5_1: {
      BlockQ5_1 b;
      std::memcpy(&b, block, sizeof(b));
      g.d = b.d;
      g.m = b.m;
      break;
    }
    case DType::Q2_K: {
      BlockQ2_K b;
      std::memcpy(&b, block, sizeof(b));
      g.d = b.d;
      g.m = b.dmin;
      for (int i = 0; i < 16; ++i) {
        g.scale_code[i] = static_cast<int16_t>(b.scales[i] & 0x0f);
        g.min_code[i] = static_cast<int16_t>(b.scales[i] >> 4);
      }
      break;
    }
    case DType::Q3_K: {
      BlockQ3_K b;
      std::memcpy(&b, block, sizeof(b));
      g.d = b.d;
      int8_t sc[16];
      unpack_q3_k_scales(b.scales, sc);
      for (int i = 0; i < 16; ++i) g.scale_code[i] = sc[i];
      break;
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      uint16_t d, dmin;
      uint8_t packed[kKScaleSize];
      if (type == DType::Q4_K) {
        BlockQ4_K b;
        std::memcpy(&b, block, sizeof(b));
        d = b.d;
        dmin = b.dmin;
        std::memcpy(packed, b.scales, sizeof(packed));
      } else {
        BlockQ5_K b;
        std::memcpy(&b, block, sizeof(b));
        d = b.d;
        dmin = b.dmin;
        std::memcpy(packed, b.scales, sizeof(packed));
      }
      g.d = d;
      g.m = dmin;
      for (int i = 0; i < 8; ++i) {
        uint8_t sc, mn;
        unpack_k4_scale_min(packed, i, &sc, &mn);
        g.scale_code[i] = sc;
        g.min_code[i] = mn;
      }
      break;
    }
    case DType::Q6_K: {
      BlockQ6_K b;
      std::memcpy(&b, block, sizeof(b));
      g.d = b.d;
      for (int i = 0; i < 16; ++i) g.scale_code[i] = b.scales[i];
      break;
    }
    default:
      FRUGAL_CHECK(false);
  }
  return g;
}

void quantize_row_weighted(DType type, const float* x, const float* importance, void* out,
                           int64_t n) {
  const FormatSpec& s = spec_of(type);
  const TypeTraits& t = type_traits(type);
  FRUGAL_CHECK(n % s.block == 0);
  uint8_t* dst = static_cast<uint8_t*>(out);
  alignas(16) uint8_t rtn[kMaxBlockBytes];
  int8_t q[kQK_K];
  float mine[kQK_K], theirs[kQK_K];
  for (int64_t b = 0; b < n / s.block; ++b) {
    const float* xb = x + b * s.block;
    const float* wb = importance != nullptr ? importance + b * s.block : nullptr;
    uint8_t* ob = dst + b * t.block_bytes;
    const BlockGrid g = fit_block_grid(type, xb, wb, GridFit::kSearch);
    nearest_codes(g, xb, q);
    encode_block(g, q, ob);
    // Final guard on the decoded bytes themselves: keep the traits encoding if it is better (it
    // can only tie or lose, up to rounding ties in the code choice).
    t.quantize_row(xb, rtn, s.block);
    t.dequantize_row(ob, mine, s.block);
    t.dequantize_row(rtn, theirs, s.block);
    if (weighted_squared_error(xb, theirs, wb, s.block) < weighted_squared_error(xb, mine, wb, s.block)) {
      std::memcpy(ob, rtn, t.block_bytes);
    }
  }
}

double weighted_squared_error(const float* a, const float* b, const float* importance, int64_t n) {
  double e = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    e += (importance != nullptr ? static_cast<double>(importance[i]) : 1.0) * d * d;
  }
  return e;
}

// ---- Generic grids ------------------------------------------------------------------------------

AffineGrid fit_generic_grid(const GenericGridSpec& spec, const float* x, const float* importance,
                            int64_t n, GridFit fit) {
  FRUGAL_CHECK(spec.bits >= 2 && spec.bits <= 8 && n > 0);
  const int qmin = spec.qmin(), qmax = spec.qmax();
  const GenericGroupParams p = generic_group_minmax(x, n, spec.bits, spec.symmetric);
  const AffineGrid minmax{fp16_to_float(p.scale), spec.symmetric ? 0.0f : fp16_to_float(p.offset), qmin, qmax};
  if (fit == GridFit::kMinMax) return minmax;
  std::vector<float> ones;
  const float* w = importance;
  if (w == nullptr) {
    ones.assign(static_cast<size_t>(n), 1.0f);
    w = ones.data();
  }
  // The stored layout keeps fp16 parameters, so the float fit is judged after rounding.
  const FloatFit f = spec.symmetric ? fit_symmetric(x, w, n, qmin, qmax) : fit_affine(x, w, n, qmax, false);
  const AffineGrid searched{fp16_to_float(float_to_fp16(f.scale)), fp16_to_float(float_to_fp16(f.offset)), qmin, qmax};
  return grid_error(searched, x, w, n) < grid_error(minmax, x, w, n) ? searched : minmax;
}

void quantize_row_generic(const GenericGridSpec& spec, const float* x, const float* importance,
                          int64_t n, GridFit fit, int16_t* codes, AffineGrid* grids, float* values) {
  const int64_t len = spec.group_length(n);
  for (int64_t g = 0, start = 0; start < n; ++g, start += len) {
    const int64_t m = std::min(len, n - start);
    const AffineGrid grid = fit_generic_grid(spec, x + start, importance ? importance + start : nullptr, m, fit);
    grids[g] = grid;
    const float inv = inverse_or_zero(grid.scale);
    for (int64_t i = start; i < start + m; ++i) {
      const int q = nearest_code(x[i], grid.offset, inv, grid.qmin, grid.qmax);
      codes[i] = static_cast<int16_t>(q);
      if (values != nullptr) values[i] = grid.value(q);
    }
  }
}

std::optional<DType> generic_storage_type(const GenericGridSpec& spec, int64_t cols) {
  if (cols <= 0) return std::nullopt;
  if (spec.group_size > 0 && spec.group_size < cols) {
    if (cols % spec.group_size != 0) return std::nullopt;
    return generic_group_type(spec.bits, spec.group_size, spec.symmetric);
  }
  for (int64_t group : {256, 128, 64, 32}) {
    if (cols % group == 0) return generic_group_type(spec.bits, group, spec.symmetric);
  }
  return std::nullopt;
}

namespace {

// The fp16 bits of a grid parameter, which must be an fp16 value (checked).
uint16_t exact_fp16(float v) {
  const uint16_t h = float_to_fp16(v);
  FRUGAL_CHECK(fp16_to_float(h) == v || (std::isnan(v) && std::isnan(fp16_to_float(h))));
  return h;
}

}  // namespace

std::vector<uint8_t> encode_generic_matrix(const QuantizedMatrix& m) {
  FRUGAL_CHECK(!m.target.is_format);
  const GenericGridSpec& spec = m.target.generic;
  const std::optional<DType> type = generic_storage_type(spec, m.cols);
  FRUGAL_CHECK(type.has_value());
  const GenericGroupFormat format = *generic_group_format(*type);
  const TypeTraits& traits = type_traits(*type);
  const int64_t blocks = m.cols / format.group;
  const int64_t grid_length = spec.group_length(m.cols);  // format.group, or cols per channel
  const int64_t grids_per_row = spec.group_count(m.cols);
  FRUGAL_CHECK(m.codes.size() == static_cast<size_t>(m.rows * m.cols) &&
               m.grids.size() == static_cast<size_t>(m.rows * grids_per_row));
  std::vector<uint8_t> out(row_bytes(traits, m.cols) * static_cast<size_t>(m.rows));
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const AffineGrid& grid = m.grids[static_cast<size_t>(r * grids_per_row + b * format.group / grid_length)];
      FRUGAL_CHECK(grid.qmin == format.qmin() && grid.qmax == format.qmax());
      GenericGroupParams params;
      params.scale = exact_fp16(grid.scale);
      if (format.symmetric) {
        FRUGAL_CHECK(grid.offset == 0.0f);
      } else {
        params.offset = exact_fp16(grid.offset);
      }
      const size_t block = static_cast<size_t>(r * blocks + b);
      encode_generic_group_block(format, params, m.codes.data() + r * m.cols + b * format.group,
                                 out.data() + block * traits.block_bytes);
    }
  }
  return out;
}

// ---- Targets --------------------------------------------------------------------------------------

QuantTarget QuantTarget::format(DType type) {
  QuantTarget t;
  t.is_format = true;
  t.type = type;
  return t;
}

QuantTarget QuantTarget::generic_grid(int bits, int64_t group_size, bool symmetric) {
  QuantTarget t;
  t.is_format = false;
  t.generic.bits = bits;
  t.generic.group_size = group_size;
  t.generic.symmetric = symmetric;
  return t;
}

int64_t QuantTarget::group_size(int64_t cols) const {
  return is_format ? spec_of(type).block : generic.group_length(cols);
}

int64_t QuantTarget::sub_size(int64_t cols) const {
  return is_format ? spec_of(type).sub : generic.group_length(cols);
}

std::string QuantTarget::name() const {
  if (is_format) return type_traits(type).name;
  std::string s = "int" + std::to_string(generic.bits);
  s += generic.group_size > 0 ? " g" + std::to_string(generic.group_size) : " per-channel";
  s += generic.symmetric ? " sym" : " asym";
  return s;
}

Status check_target(const QuantTarget& target, int64_t cols) {
  if (cols <= 0) return Status::error("quantize: a weight row must have at least one element");
  if (target.is_format) {
    const FormatSpec* s = find_spec(target.type);
    if (s == nullptr) {
      return Status::error(std::string("quantize: no quantization grid for type ") +
                           std::string(ggml_type_name(static_cast<uint32_t>(target.type))));
    }
    if (cols % s->block != 0) {
      return Status::error("quantize: rows of " + std::to_string(cols) + " elements do not split into " +
                           type_traits(target.type).name + " blocks of " + std::to_string(s->block));
    }
    return Status::ok();
  }
  if (target.generic.bits < 2 || target.generic.bits > 8) {
    return Status::error("quantize: generic grids take 2 to 8 bits, not " + std::to_string(target.generic.bits));
  }
  return Status::ok();
}

QuantizedMatrix quantize_matrix(const QuantTarget& target, const float* w, int64_t rows,
                                int64_t cols, const float* importance, GridFit fit, ThreadPool* pool) {
  FRUGAL_CHECK(check_target(target, cols).is_ok());
  QuantizedMatrix m;
  m.target = target;
  m.rows = rows;
  m.cols = cols;
  m.values.resize(static_cast<size_t>(rows * cols));
  if (target.is_format) {
    const TypeTraits& t = type_traits(target.type);
    m.row_bytes = row_bytes(t, cols);
    m.data.resize(m.row_bytes * static_cast<size_t>(rows));
    for_chunks(pool, rows, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        uint8_t* out = m.data.data() + static_cast<size_t>(r) * m.row_bytes;
        if (fit == GridFit::kMinMax) {
          t.quantize_row(w + r * cols, out, cols);
        } else {
          quantize_row_weighted(target.type, w + r * cols, importance, out, cols);
        }
        t.dequantize_row(out, m.values.data() + r * cols, cols);
      }
    });
  } else {
    const int64_t groups = target.generic.group_count(cols);
    m.codes.resize(static_cast<size_t>(rows * cols));
    m.grids.resize(static_cast<size_t>(rows * groups));
    for_chunks(pool, rows, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        quantize_row_generic(target.generic, w + r * cols, importance, cols, fit, m.codes.data() + r * cols,
                             m.grids.data() + r * groups, m.values.data() + r * cols);
      }
    });
    if (const std::optional<DType> type = generic_storage_type(target.generic, cols)) {
      m.row_bytes = row_bytes(type_traits(*type), cols);
      m.data = encode_generic_matrix(m);
    }
  }
  return m;
}

}  // namespace frugal::compress
