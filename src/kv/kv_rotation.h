// Walsh–Hadamard rotation of attention heads around a quantized KV cache. Keys and values have a
// few outlier channels; one block-absmax scale per 32 elements then spends its range on them and
// rounds the rest coarsely. Rotating every head by the orthonormal Hadamard matrix H spreads each
// outlier over the whole head before quantization (QuaRot, Ashkboos et al. 2024, arXiv:2404.00456;
// QuIP#, Tseng et al. 2024), and attention is unchanged in exact arithmetic:
//   (H q)·(H k) = q·k   and   Σ p_i H v_i = H (Σ p_i v_i),  so the output is H⁻¹ = H applied once.
// llama.cpp does the same for quantized caches (its attn_rot_k / attn_rot_v); measured on
// SmolLM2-135M it cuts the q4_0 cache's KL divergence about 3× (bench/results/kv_cache.md).
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace frugal {

// Whether heads of head_dim are rotated when stored as `type`: block-quantized types only (f16
// loses nothing to outliers), and head_dim a power of two (the fast transform's recursion).
bool kv_rotation_applies(KvType type, int64_t head_dim);

// x ← H x for the normalized Sylvester–Hadamard matrix of order n (a power of two), in place, by
// the fast Walsh–Hadamard transform: log2(n) butterfly stages, n·log2(n) additions. H is
// symmetric and orthonormal, so the transform is its own inverse.
void hadamard_transform(float* x, int64_t n);

// The transform on each of n_heads consecutive heads of head_dim elements.
void hadamard_transform_heads(float* x, int64_t n_heads, int64_t head_dim);

}  // namespace frugal
