// frugal bench: prompt-processing and generation speed, printed in llama-bench's table and JSON
// layout (same field names) so the two tools' outputs can be compared line by line.
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>

#include "cli_args.h"
#include "commands.h"
#include "runtime/memory_check.h"

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

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out;
}

}  // namespace

int command_bench(const std::vector<std::string>& argv) {
  std::set<std::string> with_value = {"-m", "-p", "-n", "-t", "-r", "-o", "-d"};
  std::map<std::string, std::string> aliases = {{"--n-prompt", "-p"}, {"--n-gen", "-n"},     {"--threads", "-t"}, {"--repetitions", "-r"},
                                                {"--output", "-o"},   {"--model", "-m"},     {"--n-depth", "-d"}};
  add_cache_flags(with_value, aliases, false);
  auto args = Args::parse(argv, with_value, {"--bandwidth"}, aliases);
  if (!args) return fail(args.status().message());
  if (!args->positional().empty()) return fail("unexpected argument '" + args->positional()[0] + "'");
  auto n_prompt = args->get_int("-p", 512, 0, 1 << 16);
  auto n_gen = args->get_int("-n", 128, 0, 1 << 16);
  auto n_threads = args->get_int("-t", default_threads(), 1, 512);
  auto reps = args->get_int("-r", 5, 1, 1000);
  auto depth = args->get_int("-d", 0, 0, 1 << 20);
  for (const Status* s : {&n_prompt.status(), &n_gen.status(), &n_threads.status(), &reps.status(), &depth.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  if (args->has("--bandwidth")) {
    // Read + write bytes per second of a large memcpy: the memory-bandwidth bound for decode.
    std::printf("copy bandwidth: %.2f GB/s\n", measure_copy_bandwidth() / 1e9);
    return 0;
  }
  const std::string format = args->get("-o", "md");
  if (format != "md" && format != "json") return fail("-o must be md or json, got '" + format + "'");
  if (*n_prompt == 0 && *n_gen == 0) return fail("nothing to benchmark: -p and -n are both 0");

  auto model = Model::load(model_path(*args));
  if (!model) return fail(model.status().message());
  std::shared_ptr<const Model> m = *model;
  // A model too large for this machine gets a message, not an OOM kill (issue 14).
  auto memory = check_memory(*m, *n_prompt + *n_gen, std::max<int64_t>(1, std::min<int64_t>(512, *n_prompt)));
  if (!memory) return fail(memory.status().message());
  if (!memory->empty()) std::fprintf(stderr, "frugal: warning: %s\n", memory->c_str());
  BenchmarkOptions options;
  options.n_prompt = *n_prompt;
  options.n_gen = *n_gen;
  options.n_threads = static_cast<int>(*n_threads);
  options.repetitions = static_cast<int>(*reps);
  options.n_depth = *depth;
  TransformerOptions cache;
  if (Status s = read_cache_flags(*args, cache); !s) return fail(s.message());
  options.cache_type_k = cache.cache_type_k;
  options.cache_type_v = cache.cache_type_v;
  const std::string type_k = kv_type_name(cache.cache_type_k), type_v = kv_type_name(cache.cache_type_v);
  auto report = run_benchmark(m, options);
  if (!report) return fail(report.status().message());

  const std::string model_type = m->config().architecture + " " + std::to_string((m->parameter_count() + 500000) / 1000000) +
                                 "M " + file_type_name(*m);
  const double size_mib = static_cast<double>(m->weight_bytes()) / 1048576.0;
  if (format == "md") {
    std::printf("| model                          |       size |     params | backend    | threads |            test |                  t/s |   ttft ms |  peak RSS |\n");
    std::printf("| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: | --------: | --------: |\n");
    for (const auto& t : report->tests) {
      char ts[64], ttft[32];
      std::snprintf(ts, sizeof ts, "%.2f ± %.2f", t.avg_ts, t.stddev_ts);
      if (t.n_prompt > 0) std::snprintf(ttft, sizeof ttft, "%.2f", t.ttft_ms); else std::snprintf(ttft, sizeof ttft, "-");
      std::printf("| %-30s | %6.2f MiB | %8.2f M | %-10s | %7d | %15s | %20s | %9s | %5.1f MiB |\n", model_type.c_str(), size_mib,
                  m->parameter_count() / 1e6, "CPU", options.n_threads, t.name.c_str(), ts, ttft,
                  report->peak_rss_bytes / 1048576.0);
    }
    std::printf("\nKV cache %s/%s: %.2f KiB per token, %.2f MiB at %lld tokens\n", type_k.c_str(), type_v.c_str(),
                report->kv_bytes_per_token / 1024.0, report->kv_bytes_per_token * static_cast<double>(report->n_ctx) / 1048576.0,
                static_cast<long long>(report->n_ctx));
    return 0;
  }
  char when[32];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::printf("[\n");
  for (size_t i = 0; i < report->tests.size(); ++i) {
    const auto& t = report->tests[i];
    auto list = [](const std::vector<double>& v, const char* fmt) {
      std::string s = "[ ";
      char buf[64];
      for (size_t k = 0; k < v.size(); ++k) {
        std::snprintf(buf, sizeof buf, fmt, v[k]);
        s += (k ? ", " : "") + std::string(buf);
      }
      return s + " ]";
    };
    std::printf("  {\n");
    std::printf("    \"build_commit\": \"frugal\",\n    \"backends\": \"CPU\",\n    \"isa\": \"%s\",\n", active_isa_name());
    std::printf("    \"model_filename\": \"%s\",\n    \"model_type\": \"%s\",\n", json_escape(m->file().path()).c_str(), model_type.c_str());
    std::printf("    \"model_size\": %zu,\n    \"model_n_params\": %lld,\n", m->weight_bytes(), static_cast<long long>(m->parameter_count()));
    std::printf("    \"n_batch\": %lld,\n    \"n_ubatch\": %lld,\n    \"n_threads\": %d,\n", static_cast<long long>(std::min<int64_t>(512, std::max<int64_t>(1, t.n_prompt))),
                static_cast<long long>(std::min<int64_t>(512, std::max<int64_t>(1, t.n_prompt))), options.n_threads);
    std::printf("    \"type_k\": \"%s\",\n    \"type_v\": \"%s\",\n    \"kv_bytes_per_token\": %lld,\n", type_k.c_str(), type_v.c_str(),
                static_cast<long long>(report->kv_bytes_per_token));
    std::printf("    \"n_prompt\": %lld,\n    \"n_gen\": %lld,\n    \"n_depth\": %lld,\n", static_cast<long long>(t.n_prompt),
                static_cast<long long>(t.n_gen), static_cast<long long>(options.n_depth));
    std::printf("    \"test_time\": \"%s\",\n", when);
    std::printf("    \"avg_ns\": %.0f,\n    \"stddev_ns\": %.0f,\n    \"avg_ts\": %.6f,\n    \"stddev_ts\": %.6f,\n", t.avg_ns, t.stddev_ns, t.avg_ts, t.stddev_ts);
    std::printf("    \"samples_ns\": %s,\n    \"samples_ts\": %s,\n", list(t.samples_ns, "%.0f").c_str(), list(t.samples_ts, "%.4f").c_str());
    std::printf("    \"ttft_ms\": %.3f,\n    \"peak_rss_bytes\": %lld\n", t.n_prompt > 0 ? t.ttft_ms : 0.0, static_cast<long long>(report->peak_rss_bytes));
    std::printf("  }%s\n", i + 1 < report->tests.size() ? "," : "");
  }
  std::printf("]\n");
  return 0;
}

}  // namespace frugal::cli
