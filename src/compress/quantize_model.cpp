// quantize_model: per-tensor re-encoding with llama.cpp's fallback rule for rows that do not
// fit a 256-element K-quant super-block, so the output loads in llama.cpp.
#include "compress/quantize_model.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <vector>

#include "base/timer.h"
#include "io/gguf.h"
#include "io/gguf_names.h"
#include "io/gguf_writer.h"
#include "io/text_file.h"
#include "compress/calibrated_quantize.h"
#include "compress/methods.h"
#include "compress/w8a8.h"
#include "model/model.h"
#include "tensor/generic_group.h"
#include "tensor/nm_sparse.h"
#include "tensor/sparse_q4.h"
#include "tensor/sparse_q8.h"
#include "tensor/weight_codec.h"

namespace frugal {
namespace {

// LLAMA_FTYPE id for a uniform model of type t (general.file_type), from its codec.
int64_t file_type_for(DType t) {
  const WeightCodec* codec = find_weight_codec(static_cast<uint32_t>(t));
  return codec != nullptr ? codec->llama_file_type : -1;
}

// Type a matrix with rows of `cols` is stored in: `target`, or llama-quantize's 32-element
// fallback when the row length is not a multiple of the target's block (K-quants on 576-wide rows).
DType storage_type_for(DType target, int64_t cols) {
  return cols % type_traits(target).block_size == 0 ? target : weight_codec(target).short_rows;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Inputs frugal quantize cannot re-encode without changing what the model computes. An LLM.int8()
// file keeps the outlier columns of its matrices in separate fp16 tensors (the int8 matrices hold
// zeros there); re-encoding the int8 matrices alone would drop those columns, and the calibrated
// methods see only the int8 part. Re-quantizing a SmoothQuant or W8A8 file is fine: its q8_0
// weights are the model (SmoothQuant's smoothing lives in the norms, exactly folded), and only the
// run-time activation mode changes with the output's method.
Status check_requantizable(const GgufFile& file, const std::string& path) {
  for (const GgufTensorInfo& t : file.tensors()) {
    if (ends_with(t.name, ".outlier_columns") || ends_with(t.name, ".outlier_weight")) {
      return Status::error("'" + path + "' is an LLM.int8() file (outlier tensor '" + t.name +
                           "'): re-quantizing it would lose its fp16 outlier columns; quantize the model it was made from instead");
    }
  }
  return Status::ok();
}

bool is_quantizable_weight(const GgufTensorInfo& t) {
  // 2-D matrices only: norms and biases stay in float (they are tiny and sensitive).
  return t.dims.size() == 2 && t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
}

}  // namespace

Result<DType> parse_format(const std::string& name) {
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
  };
  const std::string wanted = lower(name);
  std::string list;
  // Every codec's name and alias (a family name such as sparse-q8 stands for the whole family: its
  // capacity or pattern is fitted to each matrix when it is encoded), then its members' names.
  for (const WeightCodec& codec : weight_codecs()) {
    if (codec.name != nullptr && (wanted == lower(codec.name) || (codec.alias != nullptr && wanted == codec.alias))) {
      return codec.type;
    }
    if (codec.name != nullptr && !codec.members_by_name) list += (list.empty() ? "" : ", ") + std::string(codec.name);
    if (!codec.members_by_name) continue;
    for (const TypeTraits& member : codec.members()) {
      if (wanted == member.name) return member.type;
    }
  }
  return Status::error("unknown format '" + name + "' (choose one of: " + list +
                       ", or frugal's fq<bits>[s]_g<group> such as fq3_g128, fq4s_g64, sparse-q8, sparse-q4, nm-q8 or nm-q4)");
}

Result<QuantizePlan> QuantizePlan::make(const QuantizeOptions& o) {
  if (compress::find_method(o.method, compress::MethodKind::kQuantize) == nullptr) {
    return Status::error("unknown method '" + o.method + "' (choose one of: " +
                         compress::method_names(compress::MethodKind::kQuantize, ", ") + ")");
  }
  QuantizePlan plan;
  plan.options_ = o;
  plan.int8_method_ = o.method == "smoothquant" || o.method == "w8a8" || o.method == "llm-int8";
  if (plan.int8_method_) {
    if (o.bits != 8) return Status::error(o.method + " stores 8-bit weights; --bits " + std::to_string(o.bits) + " is not supported");
    if (!o.format.empty() && o.format != "q8_0" && o.format != "Q8_0") {
      return Status::error(o.method + " stores int8 rows in q8_0 blocks; --format " + o.format + " is not supported");
    }
    if (!o.types_from.empty()) return Status::error("--types-from works with rtn, gptq and awq, not " + o.method);
    if (!o.tensor_types.empty()) return Status::error("presets work with rtn, gptq and awq; " + o.method + " stores q8_0 only");
    if (!(o.smooth_alpha >= 0.0f && o.smooth_alpha <= 1.0f)) return Status::error("--alpha must be in [0, 1]");
    if (!(o.outlier_threshold > 0.0f)) return Status::error("--threshold must be positive");
    plan.format_ = DType::Q8_0;
    plan.description_ = "int8 per-channel (q8_0 blocks) x int8 per-token activations";
    if (o.method == "llm-int8") plan.description_ += ", outlier columns in fp16";
    return plan;
  }
  if (!o.tensor_types.empty()) {
    if (!o.format.empty() || !o.types_from.empty()) return Status::error("a preset excludes --format and --types-from");
    plan.reference_types_ = o.tensor_types;
    if (o.file_type) {
      GgufValue v;
      v.type = GgufType::kUint32;
      v.uint_value = *o.file_type;
      v.int_value = *o.file_type;
      plan.reference_file_type_ = v;
    }
    plan.description_ = o.tensor_types_label.empty() ? std::string("per-tensor types") : o.tensor_types_label;
    return plan;
  }
  if (!o.types_from.empty()) {
    if (!o.format.empty()) return Status::error("--types-from and --format exclude each other");
    FRUGAL_ASSIGN_OR_RETURN(auto reference, GgufFile::open(o.types_from));
    for (const GgufTensorInfo& t : reference->tensors()) plan.reference_types_[t.name] = t.traits->type;
    if (const GgufValue* v = reference->find(names::kFileTypeKey)) plan.reference_file_type_ = *v;
    plan.description_ = "tensor types of " + o.types_from;
    return plan;
  }
  if (!o.format.empty()) {
    FRUGAL_ASSIGN_OR_RETURN(const DType type, parse_format(o.format));
    if (const auto generic = generic_group_format(type)) {
      plan.generic_ = compress::GenericGridSpec{generic->bits, generic->group, generic->symmetric};
      plan.description_ = type_traits(type).name;
      return plan;
    }
    if (!compress::format_grid_supported(type) && o.method != "rtn") {
      return Status::error(o.method + " cannot target " + type_traits(type).name + " (a quantized llama.cpp type is needed)");
    }
    plan.format_ = type;
    plan.description_ = type_traits(type).name;
    return plan;
  }
  if (o.bits < 2 || o.bits > 8) return Status::error("--bits must be 2 to 8");
  // bits/group/symmetry mapped onto the llama.cpp layout that stores exactly that grid.
  std::optional<DType> llama;
  if (o.group == 32 && o.bits == 8 && o.symmetric) llama = DType::Q8_0;
  if (o.group == 32 && o.bits == 5) llama = o.symmetric ? DType::Q5_0 : DType::Q5_1;
  if (o.group == 32 && o.bits == 4) llama = o.symmetric ? DType::Q4_0 : DType::Q4_1;
  if (llama) {
    plan.format_ = llama;
    plan.description_ = type_traits(*llama).name;
    return plan;
  }
  if (o.group != -1 && o.group != 32 && o.group != 64 && o.group != 128 && o.group != 256) {
    return Status::error("--group must be 32, 64, 128, 256 or -1 (one scale per output channel), got " + std::to_string(o.group));
  }
  plan.generic_ = compress::GenericGridSpec{o.bits, o.group, o.symmetric};
  plan.per_channel_int8_ = o.group == -1 && o.bits == 8 && o.symmetric && o.method == "rtn";
  plan.description_ = plan.per_channel_int8_ ? std::string("int8 per-channel (q8_0 blocks)")
                                             : compress::QuantTarget::generic_grid(o.bits, o.group, o.symmetric).name();
  return plan;
}

Result<compress::QuantTarget> QuantizePlan::target_for(const std::string& name, int64_t cols) const {
  using compress::QuantTarget;
  if (!reference_types_.empty()) {
    auto it = reference_types_.find(name);
    if (it == reference_types_.end()) {
      return Status::error("tensor '" + name + "' is missing from " + (options_.types_from.empty() ? description_ : options_.types_from));
    }
    if (!compress::format_grid_supported(it->second) && options_.method != "rtn") {
      return Status::error((options_.types_from.empty() ? description_ : options_.types_from) + " stores '" + name + "' as " + type_traits(it->second).name + ", which " +
                           options_.method + " cannot target");
    }
    return QuantTarget::format(it->second);
  }
  if (format_) return QuantTarget::format(storage_type_for(*format_, cols));
  compress::GenericGridSpec spec = generic_;
  if (spec.group_size > 0 && cols % spec.group_size != 0) {
    if (!options_.group_fallback) {
      return Status::error("--group " + std::to_string(spec.group_size) + " does not divide the row length " + std::to_string(cols) +
                           " of '" + name + "' (pass --group-fallback to use the largest of 256/128/64/32 that divides it)");
    }
    int64_t g = spec.group_size;
    while (g > 32 && cols % g != 0) g /= 2;
    if (cols % g != 0) return Status::error("no group of 32 or more divides the row length " + std::to_string(cols) + " of '" + name + "'");
    spec.group_size = g;
  }
  const QuantTarget target = QuantTarget::generic_grid(spec.bits, spec.group_size, spec.symmetric);
  FRUGAL_RETURN_IF_ERROR(compress::check_target(target, cols));
  return target;
}

Result<QuantizeReport> quantize_model(const std::string& input, const std::string& output, const QuantizeOptions& options,
                                      const std::function<void(int64_t, int64_t, const std::string&)>& on_tensor) {
  FRUGAL_ASSIGN_OR_RETURN(const QuantizePlan plan, QuantizePlan::make(options));
  // The token embedding (also the output head when tied) keeps its type unless
  // --embedding-format or --types-from names one.
  DType embedding_type = DType::F32;
  const bool keep_embedding = options.embedding_format.empty() && options.types_from.empty() && options.tensor_types.empty();
  if (!options.embedding_format.empty()) {
    FRUGAL_ASSIGN_OR_RETURN(embedding_type, parse_format(options.embedding_format));
  } else if (!options.types_from.empty() || !options.tensor_types.empty()) {
    FRUGAL_ASSIGN_OR_RETURN(const compress::QuantTarget target, plan.target_for(names::kTokenEmbedding, 0));
    embedding_type = target.type;
  }
  if (input == output) return Status::error("output must differ from the input file");
  // The input is opened by the loader `frugal run` uses, so a file it refuses (bad hyper-parameters,
  // a missing or mis-shaped tensor, a broken vocabulary) is refused here before any work, instead
  // of being re-encoded into another file nothing can load.
  FRUGAL_ASSIGN_OR_RETURN(std::shared_ptr<Model> model, Model::load(input));
  const GgufFile* file = &model->file();
  FRUGAL_RETURN_IF_ERROR(check_requantizable(*file, input));
  const auto& tensors = file->tensors();
  // Every target is resolved before any work, so a bad group or layout fails fast.
  Timer timer;
  QuantizeReport report;
  std::map<std::string, compress::QuantTarget> targets;
  for (const GgufTensorInfo& t : tensors) {
    if (!is_quantizable_weight(t) || t.name == names::kTokenEmbedding) continue;
    FRUGAL_ASSIGN_OR_RETURN(const compress::QuantTarget target, plan.target_for(t.name, t.dims[0]));
    const bool format_fell_back = plan.uniform_format() && target.is_format && target.type != *plan.uniform_format();
    const bool group_fell_back = !target.is_format && target.generic.group_size != plan.generic_group();
    if (format_fell_back || group_fell_back) ++report.fallbacks;
    targets.emplace(t.name, target);
  }

  // Calibrated methods choose the quantized values of the block matrices; the rest is RTN.
  std::map<std::string, EncodedTensor> calibrated;
  std::vector<int32_t> tokens;
  CalibratedOptions calibrated_options;
  if (options.method != "rtn") {
    if (options.calibration_path.empty()) return Status::error(options.method + " needs calibration text (--calib FILE)");
    FRUGAL_ASSIGN_OR_RETURN(std::string text, read_text_file(options.calibration_path));
    if (text.empty()) return Status::error("calibration file '" + options.calibration_path + "' is empty");
    tokens = model->tokenizer().encode(text, true, false);
    calibrated_options.chunk = std::min<int64_t>(512, options.calibration_tokens);
    calibrated_options.n_threads = options.n_threads;
    calibrated_options.gptq.act_order = options.act_order;
    // AWQ searches scales and clipping with the importance-weighted grid fit rather than the
    // paper's min/max quantizer, on a coarser grid to keep the time down. On SmolLM2 in
    // llama.cpp's Q3_K_M layout (4 chunks of WikiText-2): KLD 0.085 with the min/max quantizer
    // and 20+20 grid points, 0.070 with the search fit and 10+10, 0.070 with the search fit and
    // 20+20 at 1.8x the time.
    calibrated_options.awq.fit = compress::GridFit::kSearch;
    calibrated_options.awq.alpha_grid = 10;
    calibrated_options.awq.clip_grid = 10;
    calibrated_options.smooth_alpha = options.smooth_alpha;
    calibrated_options.outlier_threshold = options.outlier_threshold;
    calibrated_options.method = options.method == "awq"           ? CalibratedMethod::kAwq
                                : options.method == "gptq"        ? CalibratedMethod::kGptq
                                : options.method == "smoothquant" ? CalibratedMethod::kSmoothQuant
                                : options.method == "w8a8"        ? CalibratedMethod::kW8A8
                                                                  : CalibratedMethod::kLlmInt8;
    calibrated_options.target_for = [&](const std::string& name, int64_t) { return targets.at(name); };
    if (static_cast<int64_t>(tokens.size()) > options.calibration_tokens) tokens.resize(options.calibration_tokens);
  }
  GgufWriter writer(file->alignment());
  // Keys that describe the input's encoding are not copied but set for the output below: a
  // per-token flag from a W8A8 input would make a q4_K output unloadable, and the input's file
  // type would misname the output's.
  for (const auto& [key, value] : file->metadata()) {
    if (key == names::kFileTypeKey || key == names::kActivationQuantKey || key.rfind(names::kQuantizeKeyPrefix, 0) == 0) continue;
    writer.set_value(key, value);
  }
  if (plan.reference_file_type()) {
    writer.set_value(names::kFileTypeKey, *plan.reference_file_type());
  } else if (const std::optional<DType> uniform = plan.per_channel_int8() ? std::optional<DType>(DType::Q8_0) : plan.uniform_format()) {
    if (const int64_t ftype = file_type_for(*uniform); ftype >= 0) {
      writer.set_uint32(names::kFileTypeKey, static_cast<uint32_t>(ftype));
    }
  }
  // Otherwise (frugal's generic group types) there is no LLAMA_FTYPE for the layout: the key is
  // left out, which is what llama.cpp expects of a file whose type it has to guess.
  writer.set_string(names::kQuantizeMethodKey, options.method);
  writer.set_string(names::kQuantizeFormatKey, plan.description());
  if (plan.int8_method()) writer.set_string(names::kActivationQuantKey, "per_token");

  int64_t params = 0;
  std::vector<float> values;
  bool calibrating = false;  // progress then counts layers, not tensors
  auto done_one = [&](size_t i) {
    if (on_tensor && !calibrating) on_tensor(static_cast<int64_t>(i + 1), static_cast<int64_t>(tensors.size()), tensors[i].name);
  };
  // Writes tensor i: its calibrated result from `results` (then freed), else RTN or a copy.
  auto emit = [&](size_t i, std::map<std::string, EncodedTensor>& results) -> Status {
    const GgufTensorInfo& t = tensors[i];
    params += t.element_count();
    report.bytes_in += t.bytes;
    if (auto it = results.find(t.name); it != results.end()) {
      // A calibrated matrix, or a norm rescaled by AWQ/SmoothQuant.
      report.bytes_out += it->second.bytes.size();
      ++(t.dims.size() == 1 ? report.tensors_kept : report.tensors_quantized);
      FRUGAL_RETURN_IF_ERROR(writer.write_next(it->second.type, it->second.bytes.data(), it->second.bytes.size()));
      results.erase(it);
      file->release(t);
      done_one(i);
      return Status::ok();
    }
    const bool is_embedding = t.name == names::kTokenEmbedding;
    if (!is_quantizable_weight(t) || (is_embedding && keep_embedding)) {
      FRUGAL_RETURN_IF_ERROR(writer.write_next(static_cast<DType>(t.type_id), t.data, t.bytes));
      file->release(t);
      report.bytes_out += t.bytes;
      ++report.tensors_kept;
      done_one(i);
      return Status::ok();
    }
    const int64_t cols = t.dims[0], rows = t.element_count() / cols;
    values.resize(static_cast<size_t>(rows * cols));
    const TypeTraits& from = *t.traits;
    for (int64_t r = 0; r < rows; ++r) from.dequantize_row(t.data + static_cast<size_t>(r) * row_bytes(from, cols), values.data() + r * cols, cols);
    EncodedTensor encoded;
    const compress::QuantTarget target =
        is_embedding ? compress::QuantTarget::format(storage_type_for(embedding_type, cols)) : targets.at(t.name);
    if (!is_embedding && plan.per_channel_int8()) {
      encoded = EncodedTensor{DType::Q8_0, compress::quantize_int8_per_channel(values.data(), rows, cols).q8_0, {}};
    } else if (target.is_format) {
      // Formats go through the traits' own encoder (also F16/F32 from --types-from).
      const TypeTraits& to = type_traits(target.type);
      if (cols % to.block_size != 0) {
        return Status::error("tensor '" + t.name + "' has rows of " + std::to_string(cols) + " elements, not a multiple of the " +
                             to.name + " block size");
      }
      // The sparse families fit their capacity or N:M pattern to this matrix (the codec's fit).
      DType stored_type = target.type;
      if (const auto fit = weight_codec(target.type).fit) {
        std::string why;
        const auto fitted = fit(target.type, values.data(), rows, cols, &why);
        if (fitted) {
          stored_type = *fitted;
        } else if (names::parse_block_matrix(t.name)) {
          return Status::error("tensor '" + t.name + "' cannot be stored as " + to.name + ": " + why);
        } else {
          // The output head and other matrices outside the blocks are not pruned: they keep the
          // dense type of the same value width.
          stored_type = nm_pattern(target.type).bits == 8 ? DType::Q8_0 : DType::Q4_0;
        }
      }
      const TypeTraits& stored = type_traits(stored_type);
      encoded.type = stored.type;
      encoded.bytes.resize(static_cast<size_t>(rows) * row_bytes(stored, cols));
      for (int64_t r = 0; r < rows; ++r) {
        stored.quantize_row(values.data() + r * cols, encoded.bytes.data() + static_cast<size_t>(r) * row_bytes(stored, cols), cols);
      }
    } else {
      encoded = encode_quantized(compress::quantize_matrix(target, values.data(), rows, cols, nullptr, compress::GridFit::kMinMax));
    }
    report.bytes_out += encoded.bytes.size();
    FRUGAL_RETURN_IF_ERROR(writer.write_next(encoded.type, encoded.bytes.data(), encoded.bytes.size()));
    file->release(t);
    ++report.tensors_quantized;
    done_one(i);
    return Status::ok();
  };
  // Streaming output (issue 14): the header goes to disk first and tensors follow in file order
  // as soon as they exist: with a calibrated method, after each layer everything up to the first
  // tensor of a layer not yet done. Memory holds one tensor (RTN) or one layer's results, never
  // the output model. LLM.int8() adds outlier tensors whose presence and shapes are known only
  // after calibration, so for it the results of all layers are collected before writing.
  size_t next = 0;
  auto drain = [&](std::map<std::string, EncodedTensor>& results, int64_t layers_done) -> Status {
    for (; next < tensors.size(); ++next) {
      if (auto block = names::parse_block_tensor(tensors[next].name); block && block->first >= layers_done) break;
      FRUGAL_RETURN_IF_ERROR(emit(next, results));
    }
    return Status::ok();
  };
  constexpr int64_t kAllLayers = INT64_MAX;
  auto calibrate = [&](const CalibratedLayerSink& sink) -> Result<std::map<std::string, EncodedTensor>> {
    calibrating = true;
    auto result = calibrated_quantize_model(*model, tokens, calibrated_options, [&](int64_t done, int64_t total) {
      if (on_tensor) on_tensor(done, total, "layers: million multiply-adds " + std::to_string(done));
    }, sink);
    calibrating = false;
    return result;
  };
  for (const GgufTensorInfo& t : tensors) writer.declare(t.name, t.dims);
  std::vector<std::string> added;
  if (options.method == "rtn") {
    FRUGAL_RETURN_IF_ERROR(writer.begin(output));
    FRUGAL_RETURN_IF_ERROR(drain(calibrated, kAllLayers));
  } else if (calibrated_options.method != CalibratedMethod::kLlmInt8) {
    FRUGAL_RETURN_IF_ERROR(writer.begin(output));
    FRUGAL_ASSIGN_OR_RETURN(calibrated, calibrate(drain));
    FRUGAL_RETURN_IF_ERROR(drain(calibrated, kAllLayers));
    // A result for a tensor already written (RTN'd before its calibrated value existed) would be
    // lost silently; the methods only produce a layer's own tensors, and this keeps it so.
    if (!calibrated.empty()) return Status::error("internal: calibrated result for '" + calibrated.begin()->first + "' came after it was written");
  } else {
    FRUGAL_ASSIGN_OR_RETURN(calibrated, calibrate(nullptr));
    for (const auto& [name, tensor] : calibrated) {
      if (file->find_tensor(name) == nullptr) {
        writer.declare(name, tensor.dims);
        added.push_back(name);
      }
    }
    FRUGAL_RETURN_IF_ERROR(writer.begin(output));
    FRUGAL_RETURN_IF_ERROR(drain(calibrated, kAllLayers));
  }
  // Tensors the method added (LLM.int8() outlier parts).
  for (const std::string& name : added) {
    const EncodedTensor& tensor = calibrated.at(name);
    report.bytes_out += tensor.bytes.size();
    FRUGAL_RETURN_IF_ERROR(writer.write_next(tensor.type, tensor.bytes.data(), tensor.bytes.size()));
  }
  FRUGAL_RETURN_IF_ERROR(writer.finish());
  report.bits_per_weight = 8.0 * static_cast<double>(report.bytes_out) / static_cast<double>(params);
  report.seconds = timer.seconds();
  return report;
}

}  // namespace frugal
