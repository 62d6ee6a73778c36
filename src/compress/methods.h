// The registry of compression methods: each declares its name, what it needs (calibration text,
// a Hessian, activation statistics) and how it treats each matrix. The CLI's help and method
// lists, and the option checks, come from here.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace frugal::compress {

enum class MethodKind { kQuantize, kPrune };

struct MethodInfo {
  const char* name;
  MethodKind kind;
  bool needs_calibration;       // runs calibration text through the model (compress/calibration.h)
  bool needs_hessian;           // H = 2XᵀX of each matmul input (GPTQ, SparseGPT)
  bool needs_activation_stats;  // per-channel statistics of the inputs (norms, maxima, outliers)
  const char* summary;          // one line for the help
  const char* per_matrix;       // how each block matrix is treated
  const char* reference;        // the paper
};

// Every method, quantizers first, in the order the help lists them.
const std::vector<MethodInfo>& compression_methods();
// The method called `name` of that kind, or nullptr.
const MethodInfo* find_method(std::string_view name, MethodKind kind);
// "rtn|gptq|awq|…" (separator between the names).
std::string method_names(MethodKind kind, std::string_view separator = "|");
// An aligned table of the methods of one kind: name, needs, what it does (for --help).
std::string method_table(MethodKind kind);

}  // namespace frugal::compress
