// quantize_model: per-tensor re-encoding with llama.cpp's fallback rule for rows that do not
// fit a 256-element K-quant super-block, so the output loads in llama.cpp.
#include "compress/quantize_model.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <vector>

#include "base/timer.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/text_file.h"
#include "compress/calibrated_quantize.h"

namespace frugal {
namespace {

// LLAMA_FTYPE id for a uniform model of type t (general.file_type).
int64_t file_type_for(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q8_0: return 7;
    case DType::Q5_0: return 8;
    case DType::Q5_1: return 9;
    case DType::Q2_K: return 10;
    case DType::Q3_K: return 12;
    case DType::Q4_K: return 15;
    case DType::Q5_K: return 17;
    case DType::Q6_K: return 18;
    case DType::BF16: return 32;
    default: return -1;
  }
}

bool is_quantizable_weight(const GgufTensorInfo& t) {
  // 2-D matrices only: norms and biases stay in float (they are tiny and sensitive).
  return t.dims.size() == 2 && t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
}

}  // namespace

Result<DType> parse_format(const std::string& name) {
  static const std::vector<DType> supported = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                                               DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K,
                                               DType::Q4_K, DType::Q5_K, DType::Q6_K};
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
  };
  std::string list;
  for (DType t : supported) {
    if (lower(name) == lower(type_traits(t).name)) return t;
    list += (list.empty() ? "" : ", ") + std::string(type_traits(t).name);
  }
  return Status::error("unknown format '" + name + "' (choose one of: " + list + ")");
}

Result<DType> resolve_format(const QuantizeOptions& o) {
  if (o.method != "rtn" && o.method != "gptq" && o.method != "awq") {
    return Status::error("method '" + o.method + "' is not available yet (available: rtn, gptq, awq)");
  }
  if (!o.format.empty()) return parse_format(o.format);
  // bits/group/symmetry mapped onto the llama.cpp layout that stores exactly that grid.
  if (o.group == 32) {
    if (o.bits == 8 && o.symmetric) return DType::Q8_0;
    if (o.bits == 8) return Status::error("8-bit asymmetric groups of 32 have no llama.cpp layout; use --symmetric (q8_0)");
    if (o.bits == 5) return o.symmetric ? DType::Q5_0 : DType::Q5_1;
    if (o.bits == 4) return o.symmetric ? DType::Q4_0 : DType::Q4_1;
  }
  if (o.group == 16 && o.bits == 6 && o.symmetric) return DType::Q6_K;
  if (o.group == 16 && o.bits == 3 && o.symmetric) return DType::Q3_K;
  if (o.group == 16 && o.bits == 2 && !o.symmetric) return DType::Q2_K;
  if (o.group == 32 && !o.symmetric && (o.bits == 4 || o.bits == 5)) return o.bits == 4 ? DType::Q4_K : DType::Q5_K;
  return Status::error("no storage layout for " + std::to_string(o.bits) + "-bit " + (o.symmetric ? "symmetric" : "asymmetric") +
                       " groups of " + std::to_string(o.group) +
                       " yet; llama.cpp layouts: 8/32 symmetric (q8_0), 5 or 4/32 (q5_0/q5_1, q4_0/q4_1), 6/16 symmetric "
                       "(q6_k), 3/16 symmetric (q3_k), 2/16 asymmetric (q2_k), or pass --format");
}

Result<QuantizeReport> quantize_model(const std::string& input, const std::string& output, const QuantizeOptions& options,
                                      const std::function<void(int64_t, int64_t, const std::string&)>& on_tensor) {
  FRUGAL_ASSIGN_OR_RETURN(const DType target, resolve_format(options));
  DType embedding_target = target;
  bool keep_embedding = options.embedding_format.empty();
  if (!keep_embedding) {
    FRUGAL_ASSIGN_OR_RETURN(embedding_target, parse_format(options.embedding_format));
  }
  if (input == output) return Status::error("output must differ from the input file");
  FRUGAL_ASSIGN_OR_RETURN(auto file, GgufFile::open(input));
  if (file->find("general.architecture") == nullptr) return Status::error("'" + input + "' has no general.architecture");

  Timer timer;
  QuantizeReport report;
  // Calibrated methods choose the quantized values of the block matrices; the rest is RTN.
  std::map<std::string, EncodedTensor> calibrated;
  if (options.method == "gptq" || options.method == "awq") {
    if (options.calibration_path.empty()) return Status::error(options.method + " needs calibration text (--calib FILE)");
    FRUGAL_ASSIGN_OR_RETURN(std::string text, read_text_file(options.calibration_path));
    if (text.empty()) return Status::error("calibration file '" + options.calibration_path + "' is empty");
    FRUGAL_ASSIGN_OR_RETURN(auto model, Model::load(input));
    std::vector<int32_t> tokens = model->tokenizer().encode(text, true, false);
    CalibratedOptions calibrated_options;
    calibrated_options.chunk = std::min<int64_t>(512, options.calibration_tokens);
    calibrated_options.n_threads = options.n_threads;
    calibrated_options.gptq.act_order = options.act_order;
    calibrated_options.method = options.method == "awq" ? CalibratedMethod::kAwq : CalibratedMethod::kGptq;
    if (static_cast<int64_t>(tokens.size()) > options.calibration_tokens) tokens.resize(options.calibration_tokens);
    FRUGAL_ASSIGN_OR_RETURN(calibrated, calibrated_quantize_model(*model, tokens, target, calibrated_options, [&](int64_t done, int64_t total) {
                              if (on_tensor) on_tensor(done, total, "layer " + std::to_string(done));
                            }));
  }
  GgufWriter writer(file->alignment());
  for (const auto& [key, value] : file->metadata()) writer.set_value(key, value);
  if (const int64_t ftype = file_type_for(target); ftype >= 0) writer.set_uint32("general.file_type", static_cast<uint32_t>(ftype));
  writer.set_string("frugal.quantize.method", options.method);
  writer.set_string("frugal.quantize.format", type_traits(target).name);

  const auto& tensors = file->tensors();
  int64_t params = 0;
  std::vector<float> row;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensorInfo& t = tensors[i];
    params += t.element_count();
    report.bytes_in += t.bytes;
    const bool is_embedding = t.name == "token_embd.weight";
    DType type = is_embedding ? embedding_target : target;
    if (auto it = calibrated.find(t.name); it != calibrated.end() && t.dims.size() == 1) {
      report.bytes_out += it->second.bytes.size();  // a norm rescaled by AWQ
      writer.add_tensor(t.name, it->second.type, t.dims, std::move(it->second.bytes));
      ++report.tensors_kept;
      if (on_tensor) on_tensor(static_cast<int64_t>(i + 1), static_cast<int64_t>(tensors.size()), t.name);
      continue;
    }
    if (!is_quantizable_weight(t) || (is_embedding && keep_embedding)) {
      writer.add_tensor(t.name, static_cast<DType>(t.type_id), t.dims, std::vector<uint8_t>(t.data, t.data + t.bytes));
      report.bytes_out += t.bytes;
      ++report.tensors_kept;
      if (on_tensor) on_tensor(static_cast<int64_t>(i + 1), static_cast<int64_t>(tensors.size()), t.name);
      continue;
    }
    const int64_t cols = t.dims[0], rows = t.element_count() / cols;
    if (cols % type_traits(type).block_size != 0) {
      // K-quants need rows that are multiples of 256; like llama-quantize, such tensors fall
      // back to the nearest 32-element type of at least the same precision.
      type = storage_type_for(type, cols);
      ++report.fallbacks;
      if (cols % type_traits(type).block_size != 0) {
        return Status::error("tensor '" + t.name + "' has rows of " + std::to_string(cols) + " elements, not a multiple of the " +
                             type_traits(type).name + " block size");
      }
    }
    if (auto it = calibrated.find(t.name); it != calibrated.end()) {
      report.bytes_out += it->second.bytes.size();
      writer.add_tensor(t.name, it->second.type, t.dims, std::move(it->second.bytes));
      ++report.tensors_quantized;
      if (on_tensor) on_tensor(static_cast<int64_t>(i + 1), static_cast<int64_t>(tensors.size()), t.name);
      continue;
    }
    const TypeTraits& to = type_traits(type);
    const TypeTraits& from = *t.traits;
    std::vector<uint8_t> encoded(static_cast<size_t>(rows) * row_bytes(to, cols));
    row.resize(cols);
    for (int64_t r = 0; r < rows; ++r) {
      from.dequantize_row(t.data + static_cast<size_t>(r) * row_bytes(from, cols), row.data(), cols);
      to.quantize_row(row.data(), encoded.data() + static_cast<size_t>(r) * row_bytes(to, cols), cols);
    }
    report.bytes_out += encoded.size();
    writer.add_tensor(t.name, type, t.dims, std::move(encoded));
    ++report.tensors_quantized;
    if (on_tensor) on_tensor(static_cast<int64_t>(i + 1), static_cast<int64_t>(tensors.size()), t.name);
  }
  FRUGAL_RETURN_IF_ERROR(writer.write(output));
  report.bits_per_weight = 8.0 * static_cast<double>(report.bytes_out) / static_cast<double>(params);
  report.seconds = timer.seconds();
  return report;
}

}  // namespace frugal
