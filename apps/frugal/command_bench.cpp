// frugal bench: prompt-processing and generation speed, printed in llama-bench's table and JSON
// layout (same field names) so the two tools' outputs can be compared line by line.
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <ctime>
#include <map>

#include <nlohmann/json.hpp>

#include "cli_args.h"
#include "commands.h"
#include "runtime/memory_check.h"
#include "speculative_cli.h"

namespace frugal::cli {
namespace {

// llama.cpp's LLAMA_FTYPE names for general.file_type.
std::string file_type_name(const Model& m) {
  static const std::map<int64_t, const char*> names = {
      {0, "all F32"}, {1, "F16"},     {2, "Q4_0"},    {3, "Q4_1"},    {7, "Q8_0"},    {8, "Q5_0"},
      {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"}, {12, "Q3_K_M"}, {13, "Q3_K_L"}, {14, "Q4_K_S"},
      {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"}, {18, "Q6_K"},   {32, "BF16"}};
  const int64_t id = m.file().get_int_or("general.file_type", -1);
  auto it = names.find(id);
  return it != names.end() ? it->second : "mixed";
}

// "128,512" -> {128, 512}: llama-bench's comma lists.
Result<std::vector<int64_t>> int_list(const Args& args, const std::string& flag, int64_t min, int64_t max) {
  std::vector<int64_t> values;
  const std::string text = args.get(flag);
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(start, comma - start);
    start = comma + 1;
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0) return Status::error(flag + " expects integers separated by commas, got '" + text + "'");
    if (v < min || v > max) {
      return Status::error(flag + " values must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " + item);
    }
    values.push_back(v);
  }
  return values;
}

// One row of the report: a test and the settings it ran with.
struct Row {
  BenchmarkTest test;
  int64_t peak_rss = 0;
};

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

int command_bench(const std::vector<std::string>& argv) {
  Command command("bench");
  command.model()
      .option("-p,--n-prompt", "N[,N...]", "prompt lengths: one pp test each (0 = none)", "512")
      .option("-n,--n-gen", "N[,N...]", "generated tokens: one tg test each (0 = none)", "128")
      .option("-d,--n-depth", "N", "tokens in the cache before each test", "0")
      .threads()
      .option("-r,--repetitions", "N", "repetitions of each test", "5")
      .option("-o,--output", "FORMAT", "md, csv, json or jsonl (llama-bench's field names)", "md")
      .cache_flags(false)
      .flag("--bandwidth", "measure the memory copy bandwidth (the bound for decode speed) and stop")
      .option("--draft", "D", "speculative decoding benchmark with DRAFT.gguf, ngram or self:N instead of pp/tg")
      .option("--draft-self", "N", "the same with the target's first N blocks as the draft (= --draft self:N)")
      .flag("--lookup", "the same with prompt lookup (= --draft ngram)")
      .option("--draft-max", "K", "most tokens drafted per step", "8")
      .option("--draft-p-min", "P", "stop drafting below this draft probability", "0")
      .flag("--draft-fixed", "always draft --draft-max tokens (no cost model)")
      .option("--spec-prompts", "SET", "speculative prompts: all, copy (copy-heavy) or open (open-ended)", "all")
      .footer("As llama-bench: -p 128,512 -n 64,128 runs pp128, pp512, tg64 and tg128, each after a warm-up.\n"
              "With --draft/--draft-self/--lookup: greedy decoding of -n tokens (its first value) on built-in copy-heavy\n"
              "and open-ended prompts, plain and speculative, -r times each; reports tokens/s, the paired speed-up,\n"
              "acceptance rate and mean accepted length (md, json or jsonl).");
  auto args = command.parse(argv);
  if (!args) return fail(args.status().message());
  if (args->help_shown()) return 0;
  auto n_prompts = int_list(*args, "-p", 0, 1 << 16);
  auto n_gens = int_list(*args, "-n", 0, 1 << 16);
  auto n_threads = args->get_int("-t", 1, 512);
  auto reps = args->get_int("-r", 1, 1000);
  auto depth = args->get_int("-d", 0, 1 << 20);
  for (const Status* s : {&n_prompts.status(), &n_gens.status(), &n_threads.status(), &reps.status(), &depth.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  if (args->has("--bandwidth")) {
    // Read + write bytes per second of a large memcpy: the memory-bandwidth bound for decode.
    std::printf("copy bandwidth: %.2f GB/s\n", measure_copy_bandwidth() / 1e9);
    return 0;
  }
  const std::string format = args->get("-o");
  if (format != "md" && format != "json" && format != "csv" && format != "jsonl") {
    return fail("-o must be md, csv, json or jsonl, got '" + format + "'");
  }
  auto draft = draft_spec(*args);
  if (!draft) return fail(draft.status().message());
  if (draft->empty()) {
    for (const char* flag : {"--draft-max", "--draft-p-min", "--draft-fixed", "--spec-prompts"}) {
      if (args->has(flag)) return fail(std::string(flag) + " applies only with --draft, --draft-self or --lookup");
    }
  } else {
    // The speculative benchmark (speculative_cli.h) instead of pp/tg.
    SpeculativeBenchOptions so;
    so.draft = *draft;
    auto draft_max = args->get_int("--draft-max", 1, kSpeculativeBatch - 1);
    auto p_min = args->get_float("--draft-p-min", 0, 1);
    if (!draft_max) return fail(draft_max.status().message());
    if (!p_min) return fail(p_min.status().message());
    if (format == "csv") return fail("-o csv is not supported with a drafter (md, json or jsonl)");
    so.prompts = args->get("--spec-prompts");
    if (so.prompts != "all" && so.prompts != "copy" && so.prompts != "open") {
      return fail("--spec-prompts must be all, copy or open, got '" + so.prompts + "'");
    }
    if (n_gens->empty() || n_gens->front() <= 0) return fail("-n must be > 0 with a drafter");
    so.n_gen = n_gens->front();
    so.repetitions = static_cast<int>(*reps);
    so.n_threads = static_cast<int>(*n_threads);
    so.draft_max = static_cast<int>(*draft_max);
    so.p_min = static_cast<float>(*p_min);
    so.adaptive = !args->has("--draft-fixed");
    so.output = format;
    warn_threads(*n_threads);
    auto model = Model::load(model_path(*args));
    if (!model) return fail(model.status().message());
    return bench_speculative(*model, so);
  }
  std::vector<int64_t> prompts, gens;
  for (int64_t p : *n_prompts) if (p > 0) prompts.push_back(p);
  for (int64_t n : *n_gens) if (n > 0) gens.push_back(n);
  if (prompts.empty() && gens.empty()) return fail("nothing to benchmark: -p and -n are both 0");
  warn_threads(*n_threads);

  auto model = Model::load(model_path(*args));
  if (!model) return fail(model.status().message());
  std::shared_ptr<const Model> m = *model;
  const int64_t max_prompt = prompts.empty() ? 0 : *std::max_element(prompts.begin(), prompts.end());
  const int64_t max_gen = gens.empty() ? 0 : *std::max_element(gens.begin(), gens.end());
  // A model too large for this machine gets a message, not an OOM kill (issue 14).
  auto memory = check_memory(*m, *depth + max_prompt + max_gen, std::max<int64_t>(1, std::min<int64_t>(512, max_prompt)));
  if (!memory) return fail(memory.status().message());
  if (!memory->empty()) std::fprintf(stderr, "frugal: warning: %s\n", memory->c_str());
  BenchmarkOptions options;
  options.n_threads = static_cast<int>(*n_threads);
  options.repetitions = static_cast<int>(*reps);
  options.n_depth = *depth;
  TransformerOptions cache;
  if (Status s = read_cache_flags(*args, cache); !s) return fail(s.message());
  options.cache_type_k = cache.cache_type_k;
  options.cache_type_v = cache.cache_type_v;
  const std::string type_k = kv_type_name(cache.cache_type_k), type_v = kv_type_name(cache.cache_type_v);
  // llama-bench's order: every pp test, then every tg test, each on its own.
  std::vector<Row> rows;
  BenchmarkReport last;
  auto run = [&](int64_t p, int64_t n) -> Status {
    options.n_prompt = p;
    options.n_gen = n;
    auto report = run_benchmark(m, options);
    if (!report) return report.status();
    for (const auto& t : report->tests) rows.push_back({t, report->peak_rss_bytes});
    last = *report;
    return Status::ok();
  };
  for (int64_t p : prompts) {
    if (Status s = run(p, 0); !s) return fail(s.message());
  }
  for (int64_t n : gens) {
    if (Status s = run(0, n); !s) return fail(s.message());
  }

  const std::string model_type = m->config().architecture + " " + std::to_string((m->parameter_count() + 500000) / 1000000) +
                                 "M " + file_type_name(*m);
  const double size_mib = static_cast<double>(m->weight_bytes()) / 1048576.0;
  if (format == "md") {
    std::printf("| model                          |       size |     params | backend    | threads |            test |                  t/s |   ttft ms |  peak RSS |\n");
    std::printf("| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: | --------: | --------: |\n");
    for (const auto& row : rows) {
      const BenchmarkTest& t = row.test;
      char ts[64], ttft[32];
      std::snprintf(ts, sizeof ts, "%.2f ± %.2f", t.avg_ts, t.stddev_ts);
      if (t.n_prompt > 0) std::snprintf(ttft, sizeof ttft, "%.2f", t.ttft_ms); else std::snprintf(ttft, sizeof ttft, "-");
      std::printf("| %-30s | %6.2f MiB | %8.2f M | %-10s | %7d | %15s | %20s | %9s | %5.1f MiB |\n", model_type.c_str(), size_mib,
                  m->parameter_count() / 1e6, "CPU", options.n_threads, t.name.c_str(), ts, ttft, row.peak_rss / 1048576.0);
    }
    std::printf("\nkernels: %s, AMX int8 prefill: %s\n", active_isa_name(), amx_status());
    std::printf("KV cache %s/%s: %.2f KiB per token, %.2f MiB at %lld tokens\n", type_k.c_str(), type_v.c_str(),
                last.kv_bytes_per_token / 1024.0, last.kv_bytes_per_token * static_cast<double>(last.n_ctx) / 1048576.0,
                static_cast<long long>(last.n_ctx));
    return 0;
  }
  char when[32];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  // The fields and their order follow llama-bench's json/csv output (plus frugal's isa, ttft, RSS).
  std::vector<nlohmann::ordered_json> records;
  for (const auto& row : rows) {
    const BenchmarkTest& t = row.test;
    const int64_t batch = std::min<int64_t>(512, std::max<int64_t>(1, t.n_prompt));
    nlohmann::ordered_json r;
    r["build_commit"] = "frugal";
    r["backends"] = "CPU";
    r["isa"] = active_isa_name();
    r["amx"] = amx_status();
    r["model_filename"] = m->file().path();
    r["model_type"] = model_type;
    r["model_size"] = m->weight_bytes();
    r["model_n_params"] = m->parameter_count();
    r["n_batch"] = batch;
    r["n_ubatch"] = batch;
    r["n_threads"] = options.n_threads;
    r["type_k"] = type_k;
    r["type_v"] = type_v;
    r["kv_bytes_per_token"] = last.kv_bytes_per_token;
    r["n_prompt"] = t.n_prompt;
    r["n_gen"] = t.n_gen;
    r["n_depth"] = options.n_depth;
    r["test_time"] = when;
    r["avg_ns"] = static_cast<int64_t>(t.avg_ns);
    r["stddev_ns"] = static_cast<int64_t>(t.stddev_ns);
    r["avg_ts"] = t.avg_ts;
    r["stddev_ts"] = t.stddev_ts;
    r["samples_ns"] = t.samples_ns;
    r["samples_ts"] = t.samples_ts;
    r["ttft_ms"] = t.n_prompt > 0 ? t.ttft_ms : 0.0;
    r["peak_rss_bytes"] = row.peak_rss;
    records.push_back(std::move(r));
  }
  if (format == "json") {
    std::printf("%s\n", nlohmann::ordered_json(records).dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else if (format == "jsonl") {
    for (const auto& r : records) std::printf("%s\n", r.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    // csv: one header, one line per test; the sample lists are left out as llama-bench does.
    std::string header;
    for (auto it = records.front().begin(); it != records.front().end(); ++it) {
      if (it.key() == "samples_ns" || it.key() == "samples_ts") continue;
      header += (header.empty() ? "" : ",") + it.key();
    }
    std::printf("%s\n", header.c_str());
    for (const auto& r : records) {
      std::string line;
      for (auto it = r.begin(); it != r.end(); ++it) {
        if (it.key() == "samples_ns" || it.key() == "samples_ts") continue;
        const std::string value = it->is_string() ? it->get<std::string>() : it->dump();
        line += (line.empty() ? "" : ",") + csv_field(value);
      }
      std::printf("%s\n", line.c_str());
    }
  }
  return 0;
}

}  // namespace frugal::cli
