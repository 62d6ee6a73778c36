// frugal info: what a model file holds and what running it costs.
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "cli_args.h"
#include "commands.h"
#include "compress/prune_model.h"
#include "io/gguf_names.h"

namespace frugal::cli {

int fail(const std::string& message) {
  std::fprintf(stderr, "frugal: error: %s\n", message.c_str());
  return 1;
}

namespace {

// The same facts as the text output, as one JSON object (field names in snake_case).
int print_info_json(const Model& m, int64_t n_ctx, bool metadata, bool tensors) {
  const ModelConfig& c = m.config();
  const GgufFile& f = m.file();
  const VocabData& v = m.tokenizer().vocab();
  nlohmann::ordered_json j;
  j["file"] = f.path();
  j["gguf_version"] = f.version();
  j["name"] = c.name;
  j["architecture"] = c.architecture;
  j["layers"] = c.n_layer;
  j["embedding"] = c.n_embd;
  j["feed_forward"] = c.n_ff;
  j["heads"] = c.n_head;
  j["heads_kv"] = c.n_head_kv;
  j["head_dim"] = c.head_dim;
  j["rope_base"] = c.rope_base;
  j["rope_dim"] = c.rope_dim;
  j["rms_eps"] = c.rms_eps;
  j["sliding_window"] = c.sliding_window;
  j["context_train"] = c.n_ctx_train;
  j["tied_output"] = m.tied_output();
  j["tokenizer"] = {{"model", v.model}, {"pre", v.pre}, {"tokens", m.tokenizer().vocab_size()}, {"merges", v.merges.size()},
                    {"bos", v.bos_id}, {"eos", v.eos_id}, {"eot", v.eot_id}, {"add_bos", v.add_bos}};
  j["chat_template"] = chat_format_name(m.chat_format());
  j["kernels"] = active_isa_name();
  j["amx"] = amx_status();
  nlohmann::ordered_json by_type = nlohmann::ordered_json::object();
  for (const auto& t : f.tensors()) {
    auto& entry = by_type[t.traits->name];
    if (entry.is_null()) entry = {{"tensors", 0}, {"parameters", 0}};
    entry["tensors"] = entry["tensors"].get<int64_t>() + 1;
    entry["parameters"] = entry["parameters"].get<int64_t>() + t.element_count();
  }
  j["tensor_types"] = by_type;
  const int64_t params = m.parameter_count();
  j["parameters"] = params;
  j["bits_per_weight"] = 8.0 * static_cast<double>(m.weight_bytes()) / static_cast<double>(params);
  j["file_size"] = f.file_size();
  const double kv_bytes = 2.0 * c.n_layer * c.kv_dim() * sizeof(uint16_t) * static_cast<double>(n_ctx);
  j["ctx"] = n_ctx;
  j["kv_cache_bytes"] = static_cast<int64_t>(kv_bytes);
  int64_t zeros = 0, matrix_params = 0;
  nlohmann::ordered_json sparse = nlohmann::ordered_json::array();
  for (const auto& t : f.tensors()) {
    if (t.dims.size() != 2) continue;
    const int64_t z = count_zeros(t);
    zeros += z;
    matrix_params += t.element_count();
    if (tensors || static_cast<double>(z) >= 0.01 * static_cast<double>(t.element_count())) {
      sparse.push_back({{"name", t.name}, {"type", t.traits->name}, {"zeros", z}, {"parameters", t.element_count()}});
    }
  }
  j["zero_weights"] = zeros;
  j["matrix_weights"] = matrix_params;
  j["sparse_tensors"] = sparse;
  if (metadata) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : f.metadata()) meta[key] = value.to_display_string();
    j["metadata"] = meta;
  }
  std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return 0;
}

}  // namespace

int command_info(const std::vector<std::string>& argv) {
  Command command("info");
  command.model()
      .option("-c,--ctx-size", "N", "context for the KV cache and memory estimate", "2048")
      .flag("--metadata", "also print every metadata key")
      .flag("--tensors", "list the zeros of every 2-D tensor, not only the sparse ones")
      .option("-o,--output", "FORMAT", "text or json", "text");
  auto args = command.parse(argv);
  if (!args) return fail(args.status().message());
  if (args->help_shown()) return 0;
  const std::string path = model_path(*args);
  auto n_ctx = args->get_int("-c", 1, 1 << 20);
  if (!n_ctx) return fail(n_ctx.status().message());
  auto model = Model::load(path);
  if (!model) return fail(model.status().message());
  const Model& m = **model;
  const ModelConfig& c = m.config();
  const GgufFile& f = m.file();
  const std::string format = args->get("-o");
  if (format != "text" && format != "json") return fail("-o must be text or json, got '" + format + "'");
  if (format == "json") return print_info_json(m, *n_ctx, args->has("--metadata"), args->has("--tensors"));

  std::printf("file:            %s\n", f.path().c_str());
  std::printf("format:          GGUF v%u, %zu metadata keys, %zu tensors, alignment %zu\n", f.version(),
              f.metadata().size(), f.tensors().size(), f.alignment());
  std::printf("name:            %s\n", c.name.c_str());
  std::printf("architecture:    %s\n", c.architecture.c_str());
  std::printf("layers:          %lld\n", static_cast<long long>(c.n_layer));
  std::printf("embedding:       %lld\n", static_cast<long long>(c.n_embd));
  std::printf("feed-forward:    %lld\n", static_cast<long long>(c.n_ff));
  std::printf("heads:           %lld query, %lld key/value (GQA group %lld), head size %lld\n",
              static_cast<long long>(c.n_head), static_cast<long long>(c.n_head_kv),
              static_cast<long long>(c.n_head / c.n_head_kv), static_cast<long long>(c.head_dim));
  std::printf("rope:            base %g, %lld dims, frequency scale %g\n", c.rope_base,
              static_cast<long long>(c.rope_dim), c.rope_freq_scale);
  std::printf("rms eps:         %g\n", c.rms_eps);
  if (c.sliding_window > 0) {
    int64_t windowed = 0;
    for (bool w : c.layer_is_windowed) windowed += w;
    std::printf("attention:       sliding window of %lld on %lld of %lld layers (their RoPE base %g)\n",
                static_cast<long long>(c.sliding_window), static_cast<long long>(windowed),
                static_cast<long long>(c.n_layer), c.rope_base_windowed);
  }
  std::printf("context (train): %lld\n", static_cast<long long>(c.n_ctx_train));
  std::printf("output head:     %s\n", m.tied_output() ? "tied to token embedding" : "separate");
  const VocabData& v = m.tokenizer().vocab();
  std::printf("tokenizer:       %s (%s), pre-tokenizer '%s', %d tokens, %zu merges, bos %d, eos %d, eot %d, add bos %s\n",
              v.model == "gpt2" ? "byte-level BPE" : "SentencePiece BPE", v.model.c_str(), v.pre.c_str(),
              m.tokenizer().vocab_size(), v.merges.size(), v.bos_id, v.eos_id, v.eot_id, v.add_bos ? "yes" : "no");
  if (m.chat_template().has_source()) {
    std::printf("chat template:   the model's own (Jinja, %zu bytes; fallback %s; frugal template shows it rendered)\n",
                m.chat_template().source.size(), chat_format_name(m.chat_format()));
  } else {
    std::printf("chat template:   none in the file (a base model?); chat uses the built-in %s format\n", chat_format_name(m.chat_format()));
  }
  std::printf("kernels:         %s (best on this CPU: %s; FRUGAL_ISA forces a lower one)\n", active_isa_name(),
              isa_name(best_supported_isa()));
  std::printf("AMX prefill:     %s (FRUGAL_AMX=off disables it)\n", amx_status());

  std::map<std::string, std::pair<int, int64_t>> by_type;
  for (const auto& t : f.tensors()) {
    auto& entry = by_type[t.traits->name];
    entry.first += 1;
    entry.second += t.element_count();
  }
  std::printf("tensors by type:");
  for (const auto& [name, entry] : by_type) {
    std::printf(" %s x%d (%.1f M params)", name.c_str(), entry.first, entry.second / 1e6);
  }
  std::printf("\n");
  const int64_t params = m.parameter_count();
  const size_t weight_bytes = m.weight_bytes();
  std::printf("parameters:      %lld (%.1f M)\n", static_cast<long long>(params), params / 1e6);
  std::printf("bits per weight: %.3f\n", 8.0 * static_cast<double>(weight_bytes) / static_cast<double>(params));
  std::printf("file size:       %.2f MiB (%zu bytes)\n", f.file_size() / 1048576.0, f.file_size());
  const double kv_bytes = 2.0 * c.n_layer * c.kv_dim() * sizeof(uint16_t) * static_cast<double>(*n_ctx);
  std::printf("KV cache:        %.2f MiB at -c %lld (f16, %.1f KiB per token)\n", kv_bytes / 1048576.0,
              static_cast<long long>(*n_ctx), 2.0 * c.n_layer * c.kv_dim() * sizeof(uint16_t) / 1024.0);
  const double work = 512.0 * (4 * c.n_embd + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.n_ff) * sizeof(float) + c.n_vocab * sizeof(float);
  std::printf("expected memory: %.2f MiB (mapped weights + KV cache + %.1f MiB workspace)\n",
              (static_cast<double>(f.file_size()) + kv_bytes + work) / 1048576.0, work / 1048576.0);
  // Zeros per 2-D tensor as stored (pruned models keep their zeros dense): listed when at least
  // 1% of a tensor is zero, or for every tensor with --tensors.
  int64_t zeros = 0, matrix_params = 0;
  std::vector<std::string> lines;
  for (const auto& t : f.tensors()) {
    if (t.dims.size() != 2) continue;
    const int64_t z = count_zeros(t);
    zeros += z;
    matrix_params += t.element_count();
    const double fraction = static_cast<double>(z) / static_cast<double>(t.element_count());
    if (fraction >= 0.01 || args->has("--tensors")) {
      char line[256];
      // bpw as stored: compact sparse formats (sparse-q8, sparse-q4) shrink with the sparsity, dense ones do not.
      std::snprintf(line, sizeof(line), "  %-36s %-14s %12lld zeros of %12lld (%5.1f%% sparse, %.2f bpw)\n", t.name.c_str(),
                    t.traits->name, static_cast<long long>(z), static_cast<long long>(t.element_count()), 100.0 * fraction,
                    8.0 * static_cast<double>(t.bytes) / static_cast<double>(t.element_count()));
      lines.push_back(line);
    }
  }
  if (const GgufValue* method = f.find(names::kPruneMethodKey)) {
    std::printf("pruned:          %s, sparsity %s, pattern %s\n", method->to_display_string().c_str(),
                f.find(names::kPruneSparsityKey) ? f.find(names::kPruneSparsityKey)->to_display_string().c_str() : "?",
                f.get_string_or(names::kPrunePatternKey, "?").c_str());
  }
  std::printf("zero weights:    %lld of %lld matrix weights (%.2f%%)%s\n", static_cast<long long>(zeros),
              static_cast<long long>(matrix_params), matrix_params ? 100.0 * zeros / matrix_params : 0.0,
              lines.empty() ? "" : "; per tensor:");
  for (const std::string& line : lines) std::fputs(line.c_str(), stdout);
  if (args->has("--metadata")) {
    std::printf("metadata:\n");
    for (const auto& [key, value] : f.metadata()) std::printf("  %-44s %s\n", key.c_str(), value.to_display_string().c_str());
  }
  return 0;
}

}  // namespace frugal::cli
