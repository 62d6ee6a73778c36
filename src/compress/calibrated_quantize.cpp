// calibrated_quantize_model: the calibration text runs through the model's own decoder blocks
// (compress/calibration.h); an observer quantizes each group of matrices when the block reaches
// their input (Q, K, V; O; gate, up; down) and substitutes the quantized values, so the rest of
// the block and every later layer see the quantized outputs.
#include "compress/calibrated_quantize.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "compress/calibration.h"
#include "compress/w8a8.h"
#include "io/gguf_names.h"

namespace frugal {
namespace {

using compress::FloatMatrix;
using compress::GptqHessian;
using compress::HessianAccumulator;
using compress::QuantTarget;
using names::BlockMatrix;

// One matrix being quantized: its GGUF name, float weights (replaced by the quantized values).
struct Working {
  std::string name;
  FloatMatrix m;
  WeightMatrix view;  // what the block multiplies by
  void refresh() { view = m.view(); }
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
                                                                 const std::function<void(int64_t, int64_t)>& on_layer,
                                                                 const CalibratedLayerSink& sink) {
  const ModelConfig& c = model.config();
  const CalibratedMethod method = options.method;
  const bool int8_method = method == CalibratedMethod::kSmoothQuant || method == CalibratedMethod::kW8A8 ||
                           method == CalibratedMethod::kLlmInt8;
  if (!int8_method && !options.target_for) return Status::error("GPTQ/AWQ need a quantization target");
  FRUGAL_ASSIGN_OR_RETURN(std::unique_ptr<compress::CalibrationPass> pass,
                          compress::CalibrationPass::make(model, calibration, options.chunk, options.n_threads));
  const int64_t n = pass->tokens();
  const int64_t embd = c.n_embd;

  // The compressors share the calibration pass's threads (they run between its matmuls).
  compress::GptqOptions gptq = options.gptq;
  gptq.pool = &pass->pool();
  compress::AwqOptions awq = options.awq;
  awq.pool = &pass->pool();
  std::map<std::string, EncodedTensor> out;
  // Progress in estimated millions of multiply-adds, reported after every group of matrices, so
  // the bar's rate and ETA are honest from the first group on: on a 1B model GPTQ spends most of
  // a layer on the 8192-wide down projection (its n^3 factorization and rows x n^2 sweep), which
  // a count of weights would rate like gate or up. The forward pass adds tokens x weights.
  auto group_cost = [&](int64_t rows, int64_t cols, bool attention_output) -> double {
    const double r = static_cast<double>(rows), k = static_cast<double>(cols), t = static_cast<double>(n);
    double cost = t * r * k;  // the forward pass through these matrices
    if (method == CalibratedMethod::kGptq) {
      cost += t * k * k / 2 + k * k * k / 2 + r * k * k / 2;  // X^T X, Cholesky + inverse, sweep
    } else if (method == CalibratedMethod::kAwq && !attention_output) {
      // Gram matrix, and each scale candidate's output error over min(tokens, cols) sketch rows.
      cost += t * k * k / 2 + (options.awq.alpha_grid + 2) * r * k * static_cast<double>(std::min(n, cols));
    }
    return cost / 1e6;
  };
  double cost_total = 0.0, cost_done = 0.0;
  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    const LayerWeights& lw = model.layers()[layer];
    auto rows = [&](BlockMatrix m) { return lw.matrix(m).rows; };
    cost_total += group_cost(rows(BlockMatrix::kQ) + rows(BlockMatrix::kK) + rows(BlockMatrix::kV), lw.matrix(BlockMatrix::kQ).cols, false);
    cost_total += group_cost(rows(BlockMatrix::kAttnOutput), lw.matrix(BlockMatrix::kAttnOutput).cols, true);
    cost_total += group_cost(rows(BlockMatrix::kGate) + rows(BlockMatrix::kUp), lw.matrix(BlockMatrix::kGate).cols, false);
    cost_total += group_cost(rows(BlockMatrix::kDown), lw.matrix(BlockMatrix::kDown).cols, false);
  }
  auto progress = [&](double cost) {
    cost_done += cost;
    if (on_layer) on_layer(static_cast<int64_t>(cost_done), static_cast<int64_t>(cost_total));
  };
  progress(0.0);
  compress::WorkingLayer working;
  auto matrix = [&](BlockMatrix m) { return Working{working.name(m), std::move(working.matrix(m)), {}}; };
  // Puts a quantized matrix back into the layer the forward pass multiplies by.
  auto put_back = [&](Working& w, BlockMatrix m) { working.matrix(m) = std::move(w.m); };
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
    // The accumulator's sum and H are freed as soon as they are used: at width 8192 each is
    // 0.5 GB, and only U (float) is needed for the sweep.
    GptqHessian prepared;
    {
      std::vector<double> hessian;
      {
        HessianAccumulator accumulator(cols);
        accumulator.add(in, n, 0, &pass->pool());
        hessian = accumulator.hessian();
      }
      FRUGAL_ASSIGN_OR_RETURN(prepared, compress::gptq_prepare(hessian.data(), cols, gptq));
    }
    for (Working* w : group) {
      auto result = compress::gptq_quantize(w->m.values.data(), w->m.rows, w->m.cols, prepared, options.target_for(w->name, w->m.cols),
                                            gptq);
      if (!result) return Status::error("GPTQ on '" + w->name + "': " + result.status().message());
      out[w->name] = encode_quantized(result->quantized);
      w->m.values = std::move(result->quantized.values);
    }
    return Status::ok();
  };
  // AWQ on a group sharing `in`: returns the scales; the group's values become Q(W·s) (to be used
  // with inputs divided by s) and their encodings are stored. The scales are searched for the
  // first matrix's target; a matrix with another target (a mixed layout such as llama.cpp's
  // Q3_K_M) is then fitted to its own target with the same scales.
  auto awq_group = [&](std::vector<Working*> group, const float* in, int64_t cols) -> Result<std::vector<float>> {
    std::vector<compress::AwqWeight> weights;
    for (Working* w : group) weights.push_back({w->m.values.data(), w->m.rows});
    const QuantTarget target = options.target_for(group[0]->name, cols);
    auto result = compress::awq_quantize(weights, cols, in, n, target, awq);
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
        std::vector<float> scaled(w.m.values);
        for (int64_t r = 0; r < w.m.rows; ++r) {
          for (int64_t j = 0; j < cols; ++j) scaled[r * cols + j] *= result->scales[j];
        }
        result->quantized[i] = compress::quantize_matrix(own, scaled.data(), w.m.rows, cols, importance.data(),
                                                         compress::GridFit::kSearch, &pass->pool());
      }
      out[w.name] = encode_quantized(result->quantized[i]);
      w.m.values = std::move(result->quantized[i].values);
    }
    return std::move(result->scales);
  };
  // Activation-weighted round-to-nearest (importance = the sum of squares of each input column).
  auto weighted_rtn = [&](Working& w, const float* in) {
    const std::vector<float> importance = column_square_sums(in, w.m.cols);
    auto quantized = compress::quantize_matrix(options.target_for(w.name, w.m.cols), w.m.values.data(), w.m.rows, w.m.cols,
                                               importance.data(), compress::GridFit::kSearch, &pass->pool());
    out[w.name] = encode_quantized(quantized);
    w.m.values = std::move(quantized.values);
  };
  auto store_f32 = [&](const std::string& name, const std::vector<float>& values, std::vector<int64_t> dims) {
    std::vector<uint8_t> bytes(values.size() * sizeof(float));
    std::memcpy(bytes.data(), values.data(), bytes.size());
    out[name] = EncodedTensor{DType::F32, std::move(bytes), std::move(dims)};
  };
  // Vector-wise int8 (SmoothQuant, W8A8, LLM.int8()); LLM.int8() also stores the outlier part.
  auto int8_matrix = [&](Working& w, const std::vector<int32_t>& outliers) {
    compress::Int8Matrix m = compress::quantize_int8_per_channel(w.m.values.data(), w.m.rows, w.m.cols, outliers);
    out[w.name] = EncodedTensor{DType::Q8_0, std::move(m.q8_0), {}};
    if (!outliers.empty()) {
      const std::string stem = names::weight_stem(w.name);
      store_f32(stem + names::kOutlierColumnsSuffix, std::vector<float>(outliers.begin(), outliers.end()),
                {static_cast<int64_t>(outliers.size())});
      std::vector<uint8_t> bytes(m.outlier_weight.size() * sizeof(uint16_t));
      std::memcpy(bytes.data(), m.outlier_weight.data(), bytes.size());
      out[stem + names::kOutlierWeightSuffix] =
          EncodedTensor{DType::F16, std::move(bytes), {static_cast<int64_t>(outliers.size()), w.m.rows}};
    }
    w.m.values = std::move(m.values);
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
          data.push_back(w->m.values.data());
          rows.push_back(w->m.rows);
        }
        std::vector<float> s = compress::smoothquant_scales(compress::column_abs_max(in, n, cols),
                                                            compress::weight_column_abs_max(data, rows, cols), options.smooth_alpha);
        for (Working* w : group) {
          for (int64_t r = 0; r < w->m.rows; ++r) {
            for (int64_t j = 0; j < cols; ++j) w->m.values[r * cols + j] *= s[j];
          }
          int8_matrix(*w, {});
        }
        return s;
      }
    }
    return ones;
  };
  // Quantizes the matrices reading one block input and puts them back; returns the scales.
  auto quantize_input = [&](std::initializer_list<BlockMatrix> which, const float* in, int64_t cols) -> Result<std::vector<float>> {
    std::vector<Working> group;
    for (BlockMatrix m : which) group.push_back(matrix(m));
    std::vector<Working*> pointers;
    for (Working& w : group) pointers.push_back(&w);
    auto scales = quantize_group(pointers, in, cols);
    int64_t rows = 0;
    for (const Working& w : group) rows += w.m.rows;
    progress(group_cost(rows, cols, false));
    size_t i = 0;
    for (BlockMatrix m : which) put_back(group[i++], m);
    return scales;
  };
  // Methods whose scales are folded into the preceding norm (and, for down, into up's rows).
  const bool rescales = method == CalibratedMethod::kAwq || method == CalibratedMethod::kSmoothQuant;
  // Divides the norm's weight and the activations it produced by the scales (the norm now emits
  // x / s) and stores the norm.
  auto fold_into_norm = [&](const std::string& name, std::vector<float> norm, const std::vector<float>& scales, float* x) {
    for (int64_t i = 0; i < embd; ++i) norm[i] /= scales[i];
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < embd; ++i) x[t * embd + i] /= scales[i];
    }
    store_f32(name, norm, {});
  };

  std::vector<float> saved_hidden;
  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    const LayerWeights& lw = model.layers()[layer];
    working.load(model, layer);
    bool probe = false;  // the float FFN pass that finds down's scales (rescaling methods)
    working.set_hook([&](BlockInput input, float* x, int64_t rows, int64_t cols) -> Status {
      FRUGAL_CHECK(rows == n);
      switch (input) {
        case BlockInput::kAttention: {
          FRUGAL_ASSIGN_OR_RETURN(std::vector<float> s, quantize_input({BlockMatrix::kQ, BlockMatrix::kK, BlockMatrix::kV}, x, cols));
          if (rescales) fold_into_norm(names::block_tensor(layer, names::BlockTensor::kAttnNorm), lw.attn_norm, s, x);
          return Status::ok();
        }
        case BlockInput::kAttentionOutput: {
          // The attention output has no foldable predecessor under grouped-query attention (V's
          // rows are shared by several heads): AWQ uses an activation-weighted RTN fit,
          // SmoothQuant plain vector-wise int8.
          Working wo = matrix(BlockMatrix::kAttnOutput);
          if (method == CalibratedMethod::kAwq) {
            weighted_rtn(wo, x);
          } else if (method == CalibratedMethod::kSmoothQuant) {
            int8_matrix(wo, {});
          } else {
            std::vector<Working*> group = {&wo};
            auto s = quantize_group(group, x, cols);
            if (!s) return s.status();
          }
          progress(group_cost(wo.m.rows, wo.m.cols, true));
          put_back(wo, BlockMatrix::kAttnOutput);
          return Status::ok();
        }
        case BlockInput::kFfn: {
          if (probe) return Status::ok();
          FRUGAL_ASSIGN_OR_RETURN(std::vector<float> s, quantize_input({BlockMatrix::kGate, BlockMatrix::kUp}, x, cols));
          if (rescales) fold_into_norm(names::block_tensor(layer, names::BlockTensor::kFfnNorm), lw.ffn_norm, s, x);
          return Status::ok();
        }
        case BlockInput::kFfnHidden: {
          if (rescales && !probe) return Status::ok();  // down was quantized in the probe pass
          FRUGAL_ASSIGN_OR_RETURN(std::vector<float> s, quantize_input({BlockMatrix::kDown}, x, cols));
          if (probe) {
            // down's scales are found on the float FFN and folded into up's rows before gate and
            // up are quantized (the down input is act(gate) * up, linear in up).
            FloatMatrix& up = working.matrix(BlockMatrix::kUp);
            for (int64_t r = 0; r < up.rows; ++r) {
              for (int64_t i = 0; i < up.cols; ++i) up.values[r * up.cols + i] /= s[r];
            }
          }
          return Status::ok();
        }
      }
      return Status::ok();
    });
    FRUGAL_RETURN_IF_ERROR(pass->attention(layer, &working));
    if (rescales) {
      saved_hidden.assign(pass->hidden(), pass->hidden() + n * embd);
      probe = true;
      FRUGAL_RETURN_IF_ERROR(pass->ffn(layer, &working));
      probe = false;
      std::copy(saved_hidden.begin(), saved_hidden.end(), pass->hidden());
    }
    FRUGAL_RETURN_IF_ERROR(pass->ffn(layer, &working));
    if (sink) FRUGAL_RETURN_IF_ERROR(sink(out, layer + 1));
  }
  return out;
}

}  // namespace frugal
