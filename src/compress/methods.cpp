// The compression method registry (see methods.h).
#include "compress/methods.h"

#include <algorithm>

namespace frugal::compress {

const std::vector<MethodInfo>& compression_methods() {
  static const std::vector<MethodInfo> methods = {
      {"rtn", MethodKind::kQuantize, false, false, false, "round-to-nearest into a llama.cpp or fq grid",
       "each matrix on its own, group by group", "llama.cpp ggml-quants"},
      {"gptq", MethodKind::kQuantize, true, true, false, "column-by-column quantization with error compensation",
       "Q,K,V / O / gate,up / down share one Hessian per input; columns quantized in order, the error spread over the rest",
       "Frantar et al. 2022, arXiv:2210.17323"},
      {"awq", MethodKind::kQuantize, true, false, true, "activation-aware scales folded into the norms, then clipping search",
       "Q,K,V and gate,up scaled through their RMSNorm, down through up's rows, O by activation-weighted RTN",
       "Lin et al. 2023, arXiv:2306.00978"},
      {"smoothquant", MethodKind::kQuantize, true, false, true, "int8 weights x per-token int8 activations after smoothing",
       "per-channel factors max|X|^a / max|W|^(1-a) folded into the norms (Q,K,V; gate,up) and up's rows (down)",
       "Xiao et al. 2022, arXiv:2211.10438"},
      {"w8a8", MethodKind::kQuantize, false, false, false, "int8 weights x per-token int8 activations",
       "vector-wise int8 rows, no smoothing (the SmoothQuant baseline)", "Dettmers et al. 2022, arXiv:2208.07339"},
      {"llm-int8", MethodKind::kQuantize, true, false, true, "int8 with outlier input columns kept in fp16",
       "columns whose |x| reaches the threshold stay fp16, the rest vector-wise int8", "Dettmers et al. 2022, arXiv:2208.07339"},
      {"magnitude", MethodKind::kPrune, false, false, false, "zero the smallest |W| of each row",
       "each matrix on its own, scores compared within each output row", "Han et al. 2015, arXiv:1506.02626"},
      {"wanda", MethodKind::kPrune, true, false, true, "zero the smallest |W_ij|*||X_j|| of each row, no update",
       "input-column L2 norms of each matmul input, scores compared within each output row",
       "Sun et al. 2023, arXiv:2306.11695"},
      {"sparsegpt", MethodKind::kPrune, true, true, false, "OBS pruning with weight update (optionally joint with quantization)",
       "one Hessian per input; adaptive mask per 128-column block (or N:M group), remaining weights updated",
       "Frantar & Alistarh 2023, arXiv:2301.00774"},
      {"layers", MethodKind::kPrune, true, false, true, "remove whole decoder blocks (fraction S of them), least influential first",
       "Block Influence 1 - cos(block input, block output) on calibration text; blocks renumbered; a smaller GGUF llama.cpp runs",
       "Men et al. 2024, arXiv:2403.03853; Gromov et al. 2024, arXiv:2403.17887"},
      {"width", MethodKind::kPrune, true, false, true, "remove FFN channels (fraction S, widths multiples of 32), same width per block",
       "channel score sum(|G|+|U|)*||X|| + ||D col||*||H||; gate/up rows and down columns cut; attention untouched (see heads)",
       "Ma et al. 2023, arXiv:2305.11627 (LLM-Pruner); Sun et al. 2023 (Wanda)"},
      {"heads", MethodKind::kPrune, true, false, true, "remove whole KV groups (fraction S of them) with their query heads",
       "group score sum over its query heads of ||Wo cols||*||head output||; Q/K/V rows and Wo columns cut; GQA kept valid",
       "Ma et al. 2023, arXiv:2305.11627 (LLM-Pruner); Michel et al. 2019, arXiv:1905.10650"},
  };
  return methods;
}

const MethodInfo* find_method(std::string_view name, MethodKind kind) {
  for (const MethodInfo& m : compression_methods()) {
    if (m.kind == kind && name == m.name) return &m;
  }
  return nullptr;
}

std::string method_names(MethodKind kind, std::string_view separator) {
  std::string out;
  for (const MethodInfo& m : compression_methods()) {
    if (m.kind != kind) continue;
    if (!out.empty()) out += separator;
    out += m.name;
  }
  return out;
}

std::string method_table(MethodKind kind) {
  size_t width = 0;
  for (const MethodInfo& m : compression_methods()) {
    if (m.kind == kind) width = std::max(width, std::string(m.name).size());
  }
  std::string out;
  for (const MethodInfo& m : compression_methods()) {
    if (m.kind != kind) continue;
    std::string needs;
    if (m.needs_calibration) needs += "calibration";
    if (m.needs_hessian) needs += std::string(needs.empty() ? "" : ", ") + "Hessian";
    if (m.needs_activation_stats) needs += std::string(needs.empty() ? "" : ", ") + "activation statistics";
    std::string name = m.name;
    name.resize(width, ' ');
    out += "  " + name + "  " + m.summary + " (" + m.reference + ")\n";
    out += "  " + std::string(width, ' ') + "  needs: " + (needs.empty() ? "nothing" : needs) + "; " + m.per_matrix + "\n";
  }
  return out;
}

}  // namespace frugal::compress
