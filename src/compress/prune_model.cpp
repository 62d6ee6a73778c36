// prune_model: the plan, the layer-by-layer pruning observer, the dense encoding of the pruned
// matrices and the atomic write (see prune_model.h).
#include "compress/prune_model.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>

#include "base/check.h"
#include "base/timer.h"
#include "compress/calibration.h"
#include "compress/gptq.h"
#include "compress/methods.h"
#include "compress/quantize_model.h"
#include "compress/structured_prune.h"
#include "io/gguf_names.h"
#include "io/gguf_writer.h"
#include "io/text_file.h"
#include "tensor/nm_sparse.h"
#include "tensor/sparse_q4.h"
#include "tensor/sparse_q8.h"
#include "tensor/weight_codec.h"

namespace frugal {
namespace {

using compress::FloatMatrix;
using names::BlockMatrix;

// Types whose encoding of 0 decodes to exactly 0 (no block minimum / offset), from their codec.
bool stores_exact_zero(DType t) { return weight_codec(t).exact_zero; }

std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g%%", std::round(fraction * 1000.0) / 10.0);
  return buf;
}

// Rows of a llama.cpp (or float) type through the traits' own encoder.
Result<EncodedTensor> encode_rows(DType type, const std::string& name, const float* values, int64_t rows, int64_t cols) {
  // The sparse families fit their capacity or N:M pattern to this matrix (the codec's fit).
  if (const auto fit = weight_codec(type).fit) {
    std::string why;
    const auto fitted = fit(type, values, rows, cols, &why);
    if (!fitted) return Status::error("tensor '" + name + "' cannot be stored as " + type_traits(type).name + ": " + why);
    type = *fitted;
  }
  const TypeTraits& to = type_traits(type);
  if (cols % to.block_size != 0) {
    return Status::error("tensor '" + name + "' has rows of " + std::to_string(cols) + " elements, not a multiple of the " + to.name +
                         " block size");
  }
  EncodedTensor encoded{type, {}, {}};
  const size_t stride = row_bytes(to, cols);
  encoded.bytes.resize(stride * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) to.quantize_row(values + r * cols, encoded.bytes.data() + static_cast<size_t>(r) * stride, cols);
  return encoded;
}

}  // namespace

Result<PrunePlan> PrunePlan::make(const PruneOptions& o) {
  const compress::MethodInfo* info = compress::find_method(o.method, compress::MethodKind::kPrune);
  if (info == nullptr) {
    return Status::error("unknown pruning method '" + o.method + "' (choose one of: " +
                         compress::method_names(compress::MethodKind::kPrune, ", ") + ")");
  }
  if (is_structured_method(o.method)) {
    return Status::error(o.method + " removes whole blocks or channels: it is run by structured_prune_model (compress/structured_prune.h)");
  }
  PrunePlan plan;
  plan.method = o.method;
  plan.needs_calibration = info->needs_calibration;
  FRUGAL_ASSIGN_OR_RETURN(plan.pattern, compress::SparsityPattern::parse(o.pattern));
  if (!plan.pattern.is_n_m() && o.sparsity < 0 && o.layer_sparsity.empty()) {
    return Status::error("--sparsity is needed with the unstructured pattern (the fraction of weights to zero, e.g. 0.5)");
  }
  FRUGAL_ASSIGN_OR_RETURN(plan.sparsity, compress::check_sparsity(o.layer_sparsity.empty() ? o.sparsity : std::max(0.0, o.sparsity),
                                                                  plan.pattern));
  if (!o.layer_sparsity.empty()) {
    if (plan.pattern.is_n_m()) return Status::error("per-layer sparsities need the unstructured pattern");
    for (size_t i = 0; i < o.layer_sparsity.size(); ++i) {
      auto s = compress::check_sparsity(o.layer_sparsity[i], plan.pattern);
      if (!s) return Status::error("layer " + std::to_string(i) + ": " + s.status().message());
    }
    plan.layer_sparsity = o.layer_sparsity;
  }
  if (o.bits != 0 && (o.bits < 2 || o.bits > 8)) return Status::error("--bits must be 2 to 8");
  bool quantized_format = false;
  if (!o.format.empty()) {
    FRUGAL_ASSIGN_OR_RETURN(const DType type, parse_format(o.format));
    // A sparse format (sparse-q8/q4, nm-q8/q4) stores the pruned weights' values itself: SparseGPT
    // prunes in float and the format's encoder quantizes the kept values (the joint sweep's GPTQ
    // grids are the dense types').
    const bool sparse_format = is_bitmask_sparse(type) || is_nm_sparse(type);
    quantized_format = type != DType::F32 && type != DType::F16 && type != DType::BF16 && !sparse_format;
  }
  if (o.bits != 0 && o.method != "sparsegpt") {
    return Status::error("--bits (joint pruning and quantization) works with sparsegpt only; " + o.method +
                         " stores its zeros in --format TYPE");
  }
  if (o.bits != 0 && !o.format.empty()) return Status::error("--bits and --format exclude each other");
  plan.joint_quantization = o.method == "sparsegpt" && (o.bits != 0 || quantized_format);
  if (o.calibration_tokens < 1 || o.sequence_length < 1) return Status::error("calibration tokens and sequence length must be positive");
  if (!(o.percdamp >= 0.0)) return Status::error("dampening must be >= 0");
  plan.description = o.method + " " +
                     (plan.layer_sparsity.empty() ? percent(plan.sparsity) : std::string("per-layer")) + " " + plan.pattern.name();
  return plan;
}

int64_t count_zeros(const GgufTensorInfo& t) {
  const int64_t cols = t.dims.empty() ? 0 : t.dims[0];
  if (cols <= 0) return 0;
  const int64_t rows = t.element_count() / cols;
  std::vector<float> row(static_cast<size_t>(cols));
  int64_t zeros = 0;
  const size_t stride = row_bytes(*t.traits, cols);
  for (int64_t r = 0; r < rows; ++r) {
    t.traits->dequantize_row(t.data + static_cast<size_t>(r) * stride, row.data(), cols);
    for (float v : row) zeros += v == 0.0f;
  }
  return zeros;
}

namespace {

// The quantization plan the pruned values are stored with, or null when each matrix keeps its
// type (or Q8_0 when its type cannot store an exact zero).
Result<std::unique_ptr<QuantizePlan>> storage_plan(const PruneOptions& o, const PrunePlan& plan) {
  if (!plan.joint_quantization && o.format.empty()) return std::unique_ptr<QuantizePlan>();
  QuantizeOptions q;
  q.method = plan.joint_quantization ? "gptq" : "rtn";
  q.format = o.format;
  q.bits = o.bits != 0 ? o.bits : 4;
  q.group = o.group;
  q.symmetric = o.symmetric;
  q.group_fallback = true;
  FRUGAL_ASSIGN_OR_RETURN(QuantizePlan resolved, QuantizePlan::make(q));
  return std::make_unique<QuantizePlan>(std::move(resolved));
}

// Whether any block matrix will be stored in another type than the input's: decided before
// pruning, because the streamed output's header (with or without general.file_type) is
// written before the first pruned matrix exists. Mirrors `store` in prune_block_matrices.
Result<bool> pruned_types_change(const Model& model, const PruneOptions& o, const PrunePlan& plan) {
  FRUGAL_ASSIGN_OR_RETURN(std::unique_ptr<QuantizePlan> storage, storage_plan(o, plan));
  for (int64_t layer = 0; layer < model.config().n_layer; ++layer) {
    for (BlockMatrix m : names::kBlockMatrices) {
      const WeightMatrix& w = model.layers()[layer].matrix(m);
      DType type = stores_exact_zero(w.traits->type) ? w.traits->type : DType::Q8_0;
      if (storage) {
        const std::string name = names::block_prefix(layer) + names::block_tensor_suffix(names::block_tensor_of(m));
        FRUGAL_ASSIGN_OR_RETURN(const compress::QuantTarget target, storage->target_for(name, w.cols));
        if (!target.is_format) return true;  // frugal's generic group types never equal an input type
        type = target.type;
      }
      if (type != w.traits->type) return true;
    }
  }
  return false;
}

}  // namespace

Result<std::map<std::string, EncodedTensor>> prune_block_matrices(const Model& model, const std::vector<int32_t>& calibration,
                                                                  const PruneOptions& o, const PrunePlan& plan,
                                                                  const std::function<void(int64_t, int64_t)>& on_layer,
                                                                  const PrunedLayerSink& sink) {
  const ModelConfig& c = model.config();
  if (!plan.layer_sparsity.empty() && static_cast<int64_t>(plan.layer_sparsity.size()) != c.n_layer) {
    return Status::error(std::to_string(plan.layer_sparsity.size()) + " per-layer sparsities for a model of " + std::to_string(c.n_layer) +
                         " layers");
  }
  // How the pruned values are stored (see prune_model.h).
  FRUGAL_ASSIGN_OR_RETURN(std::unique_ptr<QuantizePlan> storage, storage_plan(o, plan));
  compress::GptqOptions gptq;
  gptq.percdamp = o.percdamp;
  if (plan.pattern.is_n_m()) {
    for (const LayerWeights& lw : model.layers()) {
      for (BlockMatrix m : names::kBlockMatrices) {
        if (lw.matrix(m).cols % plan.pattern.m != 0) {
          return Status::error("pattern " + plan.pattern.name() + " needs rows that are a multiple of " + std::to_string(plan.pattern.m) +
                               "; a block matrix has rows of " + std::to_string(lw.matrix(m).cols));
        }
      }
    }
  }

  std::map<std::string, EncodedTensor> out;
  // Stores matrix m of the working layer (already pruned, or pruned and quantized when
  // `quantized` holds the joint result).
  auto store = [&](compress::WorkingLayer& working, BlockMatrix m, const WeightMatrix& stored) -> Status {
    const FloatMatrix& f = working.matrix(m);
    const std::string& name = working.name(m);
    if (storage) {
      FRUGAL_ASSIGN_OR_RETURN(const compress::QuantTarget target, storage->target_for(name, f.cols));
      if (target.is_format) {
        FRUGAL_ASSIGN_OR_RETURN(out[name], encode_rows(target.type, name, f.values.data(), f.rows, f.cols));
      } else {
        out[name] = encode_quantized(compress::quantize_matrix(target, f.values.data(), f.rows, f.cols, nullptr, compress::GridFit::kMinMax));
      }
      return Status::ok();
    }
    const DType type = stores_exact_zero(stored.traits->type) ? stored.traits->type : DType::Q8_0;
    FRUGAL_ASSIGN_OR_RETURN(out[name], encode_rows(type, name, f.values.data(), f.rows, f.cols));
    return Status::ok();
  };
  // Prunes the matrices reading one block input x (n rows of cols) and stores them.
  auto prune_input = [&](compress::WorkingLayer& working, BlockInput input, const float* x, int64_t n, int64_t cols) -> Status {
    const int64_t layer = working.layer();
    const double sparsity = plan.sparsity_of(layer);
    const LayerWeights& lw = model.layers()[layer];
    std::vector<float> norms;
    compress::GptqHessian prepared;
    if (plan.method == "wanda") norms = compress::column_norms(x, n, cols);
    if (plan.method == "sparsegpt") {
      std::vector<double> hessian;
      {
        // Freed before the factorization (0.5 GB each at width 8192).
        compress::HessianAccumulator accumulator(cols, compress::HessianAccumulator::Precision::kFloat32);
        accumulator.add(x, n, 0, gptq.pool);
        hessian = accumulator.hessian();
      }
      FRUGAL_ASSIGN_OR_RETURN(prepared, compress::gptq_prepare(hessian.data(), cols, gptq));
    }
    for (BlockMatrix m : matrices_reading(input)) {
      FloatMatrix& f = working.matrix(m);
      const std::string& name = working.name(m);
      if (plan.method == "sparsegpt") {
        if (plan.joint_quantization) {
          FRUGAL_ASSIGN_OR_RETURN(const compress::QuantTarget target, storage->target_for(name, f.cols));
          compress::GptqOptions joint = gptq;
          joint.sparsity = sparsity;
          joint.sparsity_n = plan.pattern.n;
          joint.sparsity_m = plan.pattern.m;
          auto result = compress::gptq_quantize(f.values.data(), f.rows, f.cols, prepared, target, joint);
          if (!result) return Status::error("SparseGPT on '" + name + "': " + result.status().message());
          out[name] = encode_quantized(result->quantized);
          f.values = std::move(result->quantized.values);
          continue;
        }
        compress::SparseGptOptions sparsegpt;
        sparsegpt.pool = gptq.pool;
        auto result = compress::sparsegpt_prune(f.values.data(), f.rows, f.cols, prepared, sparsity, plan.pattern, sparsegpt);
        if (!result) return Status::error("SparseGPT on '" + name + "': " + result.status().message());
      } else {
        compress::prune_by_score(f.values.data(), f.rows, f.cols, norms.empty() ? nullptr : norms.data(), sparsity, plan.pattern);
      }
      FRUGAL_RETURN_IF_ERROR(store(working, m, lw.matrix(m)));
    }
    return Status::ok();
  };

  compress::WorkingLayer working;
  if (on_layer) on_layer(0, c.n_layer);  // starts the progress clock before the first layer's work
  if (!plan.needs_calibration) {
    // Magnitude looks at the weights alone.
    for (int64_t layer = 0; layer < c.n_layer; ++layer) {
      working.load(model, layer);
      for (BlockInput input : {BlockInput::kAttention, BlockInput::kAttentionOutput, BlockInput::kFfn, BlockInput::kFfnHidden}) {
        FRUGAL_RETURN_IF_ERROR(prune_input(working, input, nullptr, 0, 0));
      }
      if (sink) FRUGAL_RETURN_IF_ERROR(sink(out));
      if (on_layer) on_layer(layer + 1, c.n_layer);
    }
    return out;
  }
  if (calibration.size() < 16) {
    return Status::error(plan.method + " needs calibration text: " + std::to_string(calibration.size()) + " tokens given, at least 16 needed");
  }
  FRUGAL_ASSIGN_OR_RETURN(std::unique_ptr<compress::CalibrationPass> pass,
                          compress::CalibrationPass::make(model, calibration, std::min(o.sequence_length, static_cast<int64_t>(calibration.size())),
                                                          o.n_threads));
  // The compressors share the calibration pass's threads (they run between its matmuls).
  gptq.pool = &pass->pool();
  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    working.load(model, layer);
    // Each input is pruned when the block reaches it, so the later matrices of the block and all
    // later layers see the outputs of the pruned ones (sequential, as both papers do).
    working.set_hook([&](BlockInput input, float* x, int64_t n, int64_t cols) { return prune_input(working, input, x, n, cols); });
    FRUGAL_RETURN_IF_ERROR(pass->layer(layer, &working));
    if (sink) FRUGAL_RETURN_IF_ERROR(sink(out));
    if (on_layer) on_layer(layer + 1, c.n_layer);
  }
  return out;
}

Result<PruneReport> prune_model(const std::string& input, const std::string& output, const PruneOptions& options,
                                const std::function<void(int64_t, int64_t, const std::string&)>& on_progress) {
  FRUGAL_ASSIGN_OR_RETURN(const PrunePlan plan, PrunePlan::make(options));
  if (input == output) return Status::error("output must differ from the input file");
  Timer timer;
  FRUGAL_ASSIGN_OR_RETURN(auto model, Model::load(input));
  std::vector<int32_t> tokens;
  if (plan.needs_calibration) {
    if (options.calibration_path.empty()) return Status::error(options.method + " needs calibration text (--calib FILE)");
    FRUGAL_ASSIGN_OR_RETURN(std::string text, read_text_file(options.calibration_path));
    if (text.empty()) return Status::error("calibration file '" + options.calibration_path + "' is empty");
    tokens = model->tokenizer().encode(text, true, false);
    if (static_cast<int64_t>(tokens.size()) > options.calibration_tokens) tokens.resize(static_cast<size_t>(options.calibration_tokens));
  }
  const GgufFile& file = model->file();
  FRUGAL_ASSIGN_OR_RETURN(const bool types_changed, pruned_types_change(*model, options, plan));
  GgufWriter writer(file.alignment());
  for (const auto& [key, value] : file.metadata()) {
    // The file type names the input's layout; a changed layout is "mixed" (key left out).
    if (key == names::kFileTypeKey && types_changed) continue;
    writer.set_value(key, value);
  }
  writer.set_string(names::kPruneMethodKey, options.method);
  writer.set_float32(names::kPruneSparsityKey, static_cast<float>(plan.sparsity));
  writer.set_string(names::kPrunePatternKey, plan.pattern.name());
  PruneReport report;
  report.description = plan.description;
  int64_t params = 0;
  // Streamed (issue 14): the header goes out first; after each layer, every tensor up to the
  // first one not yet available is written in file order (input tensors copied, pruned ones
  // moved out of the map and freed), and the input's pages are released once consumed. Memory:
  // one layer's pruned matrices plus the calibration pass, not the whole output model.
  for (const GgufTensorInfo& t : file.tensors()) writer.declare(t.name, t.dims);
  FRUGAL_RETURN_IF_ERROR(writer.begin(output));
  const std::vector<GgufTensorInfo>& tensors = file.tensors();
  std::set<std::string> to_prune;
  for (int64_t layer = 0; layer < model->config().n_layer; ++layer) {
    for (BlockMatrix m : names::kBlockMatrices) {
      to_prune.insert(names::block_prefix(layer) + names::block_tensor_suffix(names::block_tensor_of(m)));
    }
  }
  size_t next = 0;
  bool pruning_done = false;  // then a block matrix the method left alone is copied as it is
  auto drain = [&](std::map<std::string, EncodedTensor>& pruned) -> Status {
    for (; next < tensors.size(); ++next) {
      const GgufTensorInfo& t = tensors[next];
      auto it = pruned.find(t.name);
      if (it == pruned.end()) {
        if (!pruning_done && to_prune.count(t.name) != 0) break;  // its layer is not done yet
        params += t.element_count();
        report.bytes_in += t.bytes;
        FRUGAL_RETURN_IF_ERROR(writer.write_next(t.traits->type, t.data, t.bytes));
        file.release(t);
        report.bytes_out += t.bytes;
        continue;
      }
      params += t.element_count();
      report.bytes_in += t.bytes;
      // Count the zeros as stored (after encoding).
      GgufTensorInfo encoded = t;
      encoded.traits = &type_traits(it->second.type);
      encoded.data = it->second.bytes.data();
      report.zeros += count_zeros(encoded);
      report.weights_in_pruned += t.element_count();
      ++report.tensors_pruned;
      report.bytes_out += it->second.bytes.size();
      FRUGAL_RETURN_IF_ERROR(writer.write_next(it->second.type, it->second.bytes.data(), it->second.bytes.size()));
      pruned.erase(it);
      file.release(t);
    }
    return Status::ok();
  };
  FRUGAL_ASSIGN_OR_RETURN(auto rest, prune_block_matrices(*model, tokens, options, plan, [&](int64_t done, int64_t total) {
                            if (on_progress) on_progress(done, total, "layer " + std::to_string(done));
                          }, drain));
  pruning_done = true;
  FRUGAL_RETURN_IF_ERROR(drain(rest));
  if (next != tensors.size()) return Status::error("internal: pruning left '" + tensors[next].name + "' unwritten");
  if (on_progress) on_progress(1, 1, "writing " + output);
  FRUGAL_RETURN_IF_ERROR(writer.finish());
  report.bits_per_weight = 8.0 * static_cast<double>(report.bytes_out) / static_cast<double>(params);
  report.seconds = timer.seconds();
  return report;
}

}  // namespace frugal
