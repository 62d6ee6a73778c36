// calibrated_quantize_model: a float re-implementation of one decoder block over many calibration
// sequences at once (the same graph as model/transformer.cpp, without a KV cache), with a Hessian
// H = 2XᵀX collected at the input of each group of matrices just before they are quantized.
#include "compress/calibrated_quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "base/thread_pool.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "compress/w8a8.h"

namespace frugal {
namespace {

using compress::GptqHessian;
using compress::HessianAccumulator;
using compress::QuantTarget;

std::vector<float> dequantize_matrix(const WeightMatrix& w) {
  std::vector<float> out(static_cast<size_t>(w.rows * w.cols));
  for (int64_t r = 0; r < w.rows; ++r) w.traits->dequantize_row(w.row(r), out.data() + r * w.cols, w.cols);
  return out;
}

WeightMatrix float_view(const std::vector<float>& values, int64_t rows, int64_t cols) {
  WeightMatrix m;
  m.traits = &type_traits(DType::F32);
  m.data = reinterpret_cast<const uint8_t*>(values.data());
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = static_cast<size_t>(cols) * sizeof(float);
  return m;
}

// One matrix being quantized: its GGUF name, float weights (replaced by the quantized values).
struct Working {
  std::string name;
  std::vector<float> values;
  int64_t rows = 0, cols = 0;
};

}  // namespace

EncodedTensor encode_quantized(const compress::QuantizedMatrix& m) {
  if (m.target.is_format) return EncodedTensor{m.target.type, m.data, {}};
  const std::optional<DType> type = compress::generic_storage_type(m.target.generic, m.cols);
  FRUGAL_CHECK(type.has_value());
  return EncodedTensor{*type, m.data.empty() ? compress::encode_generic_matrix(m) : m.data, {}};
}

Result<std::map<std::string, EncodedTensor>> calibrated_quantize_model(const Model& model, const std::vector<int32_t>& calibration,
                                                                 const CalibratedOptions& options,
                                                                 const std::function<void(int64_t, int64_t)>& on_layer) {
  const ModelConfig& c = model.config();
  const int64_t chunk = options.chunk;
  const int64_t n_seq = static_cast<int64_t>(calibration.size()) / chunk;
  if (n_seq < 1) {
    return Status::error("calibration text has " + std::to_string(calibration.size()) + " tokens; at least " +
                         std::to_string(chunk) + " are needed");
  }
  const CalibratedMethod method = options.method;
  const bool int8_method = method == CalibratedMethod::kSmoothQuant || method == CalibratedMethod::kW8A8 ||
                           method == CalibratedMethod::kLlmInt8;
  if (!int8_method && !options.target_for) return Status::error("GPTQ/AWQ need a quantization target");
  const int64_t n = n_seq * chunk;
  const int64_t embd = c.n_embd, qd = c.q_dim(), kvd = c.kv_dim(), ff = c.n_ff, hd = c.head_dim;
  ThreadPool pool(options.n_threads);
  const int64_t widest = std::max({embd, qd, ff});
  std::vector<uint8_t> workspace(matmul_workspace_bytes(widest, chunk, pool.size()));

  // Hidden states of all calibration tokens; they flow through the quantized blocks.
  std::vector<float> x(static_cast<size_t>(n * embd)), a(static_cast<size_t>(n * std::max(embd, qd)));
  std::vector<float> q(static_cast<size_t>(n * qd)), k(static_cast<size_t>(n * kvd)), v(static_cast<size_t>(n * kvd));
  std::vector<float> o(static_cast<size_t>(n * qd)), g(static_cast<size_t>(n * ff)), u(static_cast<size_t>(n * ff));
  const WeightMatrix& embedding = model.token_embedding();
  for (int64_t t = 0; t < n; ++t) {
    embedding.traits->dequantize_row(embedding.row(calibration[t]), x.data() + t * embd, embd);
    for (int64_t i = 0; i < embd; ++i) x[t * embd + i] *= c.embedding_scale;
  }
  const std::vector<float> inv_freq = rope_inverse_frequencies(c, false);
  const std::vector<float> inv_freq_windowed = rope_inverse_frequencies(c, true);

  std::map<std::string, EncodedTensor> out;
  // y = x W^T over all tokens, in batches of one sequence (bounded workspace).
  auto multiply = [&](const Working& w, const float* in, float* result) {
    const WeightMatrix view = float_view(w.values, w.rows, w.cols);
    for (int64_t s = 0; s < n_seq; ++s) {
      matmul(view, in + s * chunk * w.cols, w.cols, chunk, result + s * chunk * w.rows, w.rows, workspace.data(),
             workspace.size(), pool);
    }
  };
  // Sum over the calibration tokens of x^2 per input column (n rows of `cols`).
  auto column_square_sums = [&](const float* in, int64_t cols) {
    std::vector<float> sums(cols, 0.0f);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t j = 0; j < cols; ++j) sums[j] += in[t * cols + j] * in[t * cols + j];
    }
    return sums;
  };
  // GPTQ on one group of matrices sharing the input `in` (n rows of `cols`).
  auto gptq_group = [&](std::vector<Working*> group, const float* in, int64_t cols) -> Status {
    HessianAccumulator accumulator(cols);
    accumulator.add(in, n);
    const std::vector<double> hessian = accumulator.hessian();
    FRUGAL_ASSIGN_OR_RETURN(GptqHessian prepared, compress::gptq_prepare(hessian.data(), cols, options.gptq));
    for (Working* w : group) {
      auto result = compress::gptq_quantize(w->values.data(), w->rows, w->cols, prepared, options.target_for(w->name, w->cols),
                                            options.gptq);
      if (!result) return Status::error("GPTQ on '" + w->name + "': " + result.status().message());
      out[w->name] = encode_quantized(result->quantized);
      w->values = std::move(result->quantized.values);
    }
    return Status::ok();
  };
  // AWQ on a group sharing `in`: returns the scales; the group's values become Q(W·s) (to be used
  // with inputs divided by s) and their encodings are stored. The scales are searched for the
  // first matrix's target; a matrix with another target (a mixed layout such as llama.cpp's
  // Q3_K_M) is then fitted to its own target with the same scales.
  auto awq_group = [&](std::vector<Working*> group, const float* in, int64_t cols) -> Result<std::vector<float>> {
    std::vector<compress::AwqWeight> weights;
    for (Working* w : group) weights.push_back({w->values.data(), w->rows});
    const QuantTarget target = options.target_for(group[0]->name, cols);
    auto result = compress::awq_quantize(weights, cols, in, n, target, options.awq);
    if (!result) return Status::error("AWQ on '" + group[0]->name + "': " + result.status().message());
    std::vector<float> importance;
    for (size_t i = 0; i < group.size(); ++i) {
      Working& w = *group[i];
      const QuantTarget own = options.target_for(w.name, cols);
      if (own.name() != target.name()) {
        if (importance.empty()) {
          // E[x^2] / s^2: the weight of a scaled-domain error in the output.
          importance = column_square_sums(in, cols);
          for (int64_t j = 0; j < cols; ++j) importance[j] /= result->scales[j] * result->scales[j];
        }
        std::vector<float> scaled(w.values);
        for (int64_t r = 0; r < w.rows; ++r) {
          for (int64_t j = 0; j < cols; ++j) scaled[r * cols + j] *= result->scales[j];
        }
        result->quantized[i] = compress::quantize_matrix(own, scaled.data(), w.rows, cols, importance.data(),
                                                         compress::GridFit::kSearch);
      }
      out[w.name] = encode_quantized(result->quantized[i]);
      w.values = std::move(result->quantized[i].values);
    }
    return std::move(result->scales);
  };
  // Activation-weighted round-to-nearest (importance = the sum of squares of each input column).
  auto weighted_rtn = [&](Working& w, const float* in) {
    const std::vector<float> importance = column_square_sums(in, w.cols);
    auto quantized = compress::quantize_matrix(options.target_for(w.name, w.cols), w.values.data(), w.rows, w.cols,
                                               importance.data(), compress::GridFit::kSearch);
    out[w.name] = encode_quantized(quantized);
    w.values = std::move(quantized.values);
  };
  auto store_f32 = [&](const std::string& name, const std::vector<float>& values, std::vector<int64_t> dims) {
    std::vector<uint8_t> bytes(values.size() * sizeof(float));
    std::memcpy(bytes.data(), values.data(), bytes.size());
    out[name] = EncodedTensor{DType::F32, std::move(bytes), std::move(dims)};
  };
  // Vector-wise int8 (SmoothQuant, W8A8, LLM.int8()); LLM.int8() also stores the outlier part.
  auto int8_matrix = [&](Working& w, const std::vector<int32_t>& outliers) {
    compress::Int8Matrix m = compress::quantize_int8_per_channel(w.values.data(), w.rows, w.cols, outliers);
    out[w.name] = EncodedTensor{DType::Q8_0, std::move(m.q8_0), {}};
    if (!outliers.empty()) {
      const std::string stem = w.name.substr(0, w.name.size() - std::string(".weight").size());
      store_f32(stem + ".outlier_columns", std::vector<float>(outliers.begin(), outliers.end()),
                {static_cast<int64_t>(outliers.size())});
      std::vector<uint8_t> bytes(m.outlier_weight.size() * sizeof(uint16_t));
      std::memcpy(bytes.data(), m.outlier_weight.data(), bytes.size());
      out[stem + ".outlier_weight"] = EncodedTensor{DType::F16, std::move(bytes), {static_cast<int64_t>(outliers.size()), w.rows}};
    }
    w.values = std::move(m.values);
  };
  // Quantizes a group of matrices sharing the input `in` (n x cols) with the chosen method and
  // returns the per-column scales s the method multiplied the weights by (the caller divides the
  // input by s where it comes from); all ones for methods that do not rescale.
  auto quantize_group = [&](std::vector<Working*> group, const float* in, int64_t cols) -> Result<std::vector<float>> {
    std::vector<float> ones(cols, 1.0f);
    switch (method) {
      case CalibratedMethod::kGptq:
        FRUGAL_RETURN_IF_ERROR(gptq_group(group, in, cols));
        return ones;
      case CalibratedMethod::kAwq:
        return awq_group(group, in, cols);
      case CalibratedMethod::kW8A8:
        for (Working* w : group) int8_matrix(*w, {});
        return ones;
      case CalibratedMethod::kLlmInt8: {
        const std::vector<int32_t> outliers =
            compress::outlier_columns(compress::column_abs_max(in, n, cols), options.outlier_threshold);
        for (Working* w : group) int8_matrix(*w, outliers);
        return ones;
      }
      case CalibratedMethod::kSmoothQuant: {
        std::vector<const float*> data;
        std::vector<int64_t> rows;
        for (Working* w : group) {
          data.push_back(w->values.data());
          rows.push_back(w->rows);
        }
        std::vector<float> s = compress::smoothquant_scales(compress::column_abs_max(in, n, cols),
                                                            compress::weight_column_abs_max(data, rows, cols), options.smooth_alpha);
        for (Working* w : group) {
          for (int64_t r = 0; r < w->rows; ++r) {
            for (int64_t j = 0; j < cols; ++j) w->values[r * cols + j] *= s[j];
          }
          int8_matrix(*w, {});
        }
        return s;
      }
    }
    return ones;
  };
  // Methods whose scales are folded into the preceding norm (and, for down, into up's rows).
  const bool rescales = method == CalibratedMethod::kAwq || method == CalibratedMethod::kSmoothQuant;

  const float attention_scale = c.attention_scale > 0 ? c.attention_scale : 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t kv_group = c.n_head / c.n_head_kv;
  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    const LayerWeights& lw = model.layers()[layer];
    const std::string p = "blk." + std::to_string(layer) + ".";
    Working wq{p + "attn_q.weight", dequantize_matrix(lw.wq), lw.wq.rows, lw.wq.cols};
    Working wk{p + "attn_k.weight", dequantize_matrix(lw.wk), lw.wk.rows, lw.wk.cols};
    Working wv{p + "attn_v.weight", dequantize_matrix(lw.wv), lw.wv.rows, lw.wv.cols};
    Working wo{p + "attn_output.weight", dequantize_matrix(lw.wo), lw.wo.rows, lw.wo.cols};
    Working wg{p + "ffn_gate.weight", dequantize_matrix(lw.w_gate), lw.w_gate.rows, lw.w_gate.cols};
    Working wu{p + "ffn_up.weight", dequantize_matrix(lw.w_up), lw.w_up.rows, lw.w_up.cols};
    Working wd{p + "ffn_down.weight", dequantize_matrix(lw.w_down), lw.w_down.rows, lw.w_down.cols};

    // Divides the norm's weight and the activations it produced by the scales (the norm now
    // emits x / s) and stores the norm.
    auto fold_into_norm = [&](const std::string& name, std::vector<float> norm, const std::vector<float>& scales) {
      for (int64_t i = 0; i < embd; ++i) norm[i] /= scales[i];
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t i = 0; i < embd; ++i) a[t * embd + i] /= scales[i];
      }
      store_f32(name, norm, {});
    };
    for (int64_t t = 0; t < n; ++t) rms_norm(x.data() + t * embd, lw.attn_norm.data(), c.rms_eps, embd, a.data() + t * embd);
    FRUGAL_ASSIGN_OR_RETURN(std::vector<float> qkv_scales, quantize_group({&wq, &wk, &wv}, a.data(), embd));
    if (rescales) fold_into_norm(p + "attn_norm.weight", lw.attn_norm, qkv_scales);
    multiply(wq, a.data(), q.data());
    multiply(wk, a.data(), k.data());
    multiply(wv, a.data(), v.data());
    const bool windowed = c.layer_is_windowed[layer];
    const float* freq = windowed ? inv_freq_windowed.data() : inv_freq.data();
    for (int64_t t = 0; t < n; ++t) {
      if (c.qk_norm) {
        for (int64_t h = 0; h < c.n_head; ++h) rms_norm(q.data() + t * qd + h * hd, lw.q_norm.data(), c.rms_eps, hd, q.data() + t * qd + h * hd);
        for (int64_t h = 0; h < c.n_head_kv; ++h) rms_norm(k.data() + t * kvd + h * hd, lw.k_norm.data(), c.rms_eps, hd, k.data() + t * kvd + h * hd);
      }
      rope(q.data() + t * qd, c.n_head, hd, c.rope_dim, t % chunk, freq, c.rope_style);
      rope(k.data() + t * kvd, c.n_head_kv, hd, c.rope_dim, t % chunk, freq, c.rope_style);
    }
    // Causal attention inside each calibration sequence.
    pool.parallel_for(n * c.n_head, 16, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t t = task / c.n_head, h = task % c.n_head, kv_head = h / kv_group;
        const int64_t start = t - t % chunk, pos = t % chunk;
        const int64_t first = windowed ? std::max<int64_t>(0, pos - c.sliding_window + 1) : 0;
        attend_one_head(q.data() + t * qd + h * hd, k.data() + start * kvd + kv_head * hd, v.data() + start * kvd + kv_head * hd,
                        kvd, first, pos, hd, attention_scale, o.data() + t * qd + h * hd);
      }
    });
    // The attention output has no foldable predecessor under grouped-query attention (V's rows
    // are shared by several heads): AWQ uses an activation-weighted RTN fit, SmoothQuant plain
    // vector-wise int8.
    if (method == CalibratedMethod::kAwq) {
      weighted_rtn(wo, o.data());
    } else if (method == CalibratedMethod::kSmoothQuant) {
      int8_matrix(wo, {});
    } else {
      FRUGAL_RETURN_IF_ERROR(quantize_group({&wo}, o.data(), qd).status());
    }
    multiply(wo, o.data(), a.data());
    for (int64_t t = 0; t < n; ++t) {
      float* row = a.data() + t * embd;
      if (c.post_norms) rms_norm(row, lw.post_attn_norm.data(), c.rms_eps, embd, row);
      for (int64_t i = 0; i < embd; ++i) x[t * embd + i] += row[i];
      rms_norm(x.data() + t * embd, lw.ffn_norm.data(), c.rms_eps, embd, row);
    }
    auto gated = [&]() {  // g = act(a Wg^T) * (a Wu^T)
      multiply(wg, a.data(), g.data());
      multiply(wu, a.data(), u.data());
      for (int64_t t = 0; t < n; ++t) {
        if (c.ffn_activation == Activation::kGeluTanh) {
          geglu(g.data() + t * ff, u.data() + t * ff, ff);
        } else {
          swiglu(g.data() + t * ff, u.data() + t * ff, ff);
        }
      }
    };
    if (rescales) {
      // down's scales are found on the float FFN and folded into up's rows before gate and up
      // are quantized (the down input is act(gate) * up, linear in up).
      gated();
      FRUGAL_ASSIGN_OR_RETURN(std::vector<float> down_scales, quantize_group({&wd}, g.data(), ff));
      for (int64_t r = 0; r < ff; ++r) {
        for (int64_t i = 0; i < embd; ++i) wu.values[r * embd + i] /= down_scales[r];
      }
      FRUGAL_ASSIGN_OR_RETURN(std::vector<float> gate_up_scales, quantize_group({&wg, &wu}, a.data(), embd));
      fold_into_norm(p + "ffn_norm.weight", lw.ffn_norm, gate_up_scales);
      gated();
    } else {
      FRUGAL_RETURN_IF_ERROR(quantize_group({&wg, &wu}, a.data(), embd).status());
      gated();
      FRUGAL_RETURN_IF_ERROR(quantize_group({&wd}, g.data(), ff).status());
    }
    multiply(wd, g.data(), a.data());
    for (int64_t t = 0; t < n; ++t) {
      float* row = a.data() + t * embd;
      if (c.post_norms) rms_norm(row, lw.post_ffn_norm.data(), c.rms_eps, embd, row);
      for (int64_t i = 0; i < embd; ++i) x[t * embd + i] += row[i];
    }
    if (on_layer) on_layer(layer + 1, c.n_layer);
  }
  return out;
}

}  // namespace frugal
