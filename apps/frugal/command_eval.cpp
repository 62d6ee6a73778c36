// frugal eval: quality of a model against its base (perplexity of both, KL divergence, same top
// token, in one pass) and zero-shot task accuracy (HellaSwag, SST-2), as markdown or JSON.
#include <cstdio>
#include <cstdlib>

#include "base/progress.h"
#include "cli_args.h"
#include "commands.h"

namespace frugal::cli {
namespace {

std::string default_data(const std::string& name) {
  if (const char* d = std::getenv("FRUGAL_DATA"); d != nullptr && *d) return std::string(d) + "/" + name;
  return std::string(FRUGAL_DEFAULT_DATA_DIR) + "/" + name;
}

struct TaskRow {
  std::string name;
  TaskAccuracy model, base;
  bool has_base = false;
};

Result<TaskAccuracy> run_task(const std::string& label, int64_t n,
                              const std::function<Result<TaskAccuracy>(const std::function<void(int64_t, int64_t)>&)>& run) {
  ProgressBar progress(label, n, "tasks");
  auto r = run([&](int64_t done, int64_t) { progress.update(done); });
  progress.finish();
  return r;
}

}  // namespace

int command_eval(const std::vector<std::string>& argv) {
  Command command("eval");
  command.model()
      .option("--base", "BASE", "the uncompressed model to compare against (KL divergence, same top token)")
      .option("--save-base", "FILE", "with --base: also save the base's log-probabilities to FILE for --base-logits")
      .option("--base-logits", "FILE", "compare against the base log-probabilities saved with --save-base (no --base run)")
      .option("-f,--file", "FILE", "evaluation text (- for stdin)", default_data("wikitext2-test.txt"))
      .option("-c,--ctx-size", "N", "tokens per chunk", "512")
      .option("--chunks", "N", "chunks scored", "40")
      .threads()
      .option("-o,--output", "FORMAT", "md or json", "md")
      .option("--hellaswag", "N", "zero-shot HellaSwag on the first N tasks (0 = skip; ~0.15 s per task for SmolLM2 on 2 cores)", "0")
      .option("--hellaswag-file", "FILE", "HellaSwag validation set", default_data("hellaswag-val.txt.bz2"))
      .option("--sst2", "N", "zero-shot SST-2 on the first N sentences (0 = skip; ~0.05 s each)", "0")
      .option("--sst2-file", "FILE", "SST-2 dev set", default_data("sst2-dev.tsv"))
      .cache_flags(false)
      .footer("-ctk/-ctv apply to MODEL only, so `-m M --base M -ctk q8_0` measures the KV cache type.");
  auto args = command.parse(argv);
  if (!args) return fail(args.status().message());
  if (args->help_shown()) return 0;
  auto n_ctx = args->get_int("-c", 16, 1 << 16);
  auto chunks = args->get_int("--chunks", 1, INT32_MAX);
  auto n_threads = args->get_int("-t", 1, 512);
  auto hellaswag_n = args->get_int("--hellaswag", 0, INT32_MAX);
  auto sst2_n = args->get_int("--sst2", 0, INT32_MAX);
  for (const Status* s : {&n_ctx.status(), &chunks.status(), &n_threads.status(), &hellaswag_n.status(), &sst2_n.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  const std::string format = args->get("-o");
  if (format != "md" && format != "json") return fail("-o must be md or json, got '" + format + "'");
  if (args->has("--save-base") && !args->has("--base")) return fail("--save-base needs --base (the model whose logits are saved)");
  if (args->has("--base-logits") && args->has("--base")) return fail("--base-logits replaces --base: give one of them");
  if (args->has("--save-base")) {
    if (Status s = prepare_output(args->get("--save-base")); !s) return fail(s.message());
  }
  if (args->has("--hellaswag-file") && *hellaswag_n == 0) return fail("--hellaswag-file needs --hellaswag N (the number of tasks)");
  if (args->has("--sst2-file") && *sst2_n == 0) return fail("--sst2-file needs --sst2 N (the number of sentences)");
  warn_threads(*n_threads);
  const std::string text_path = args->get("-f");
  auto text = read_text_argument(text_path);
  if (!text) return fail(text.status().message());
  if (text->empty()) return fail("'" + text_path + "' is empty");
  std::vector<HellaswagTask> hellaswag;
  if (*hellaswag_n > 0) {
    auto raw = read_text_file(args->get("--hellaswag-file"));
    if (!raw) return fail(raw.status().message());
    auto parsed = parse_hellaswag(*raw);
    if (!parsed) return fail(parsed.status().message());
    hellaswag = std::move(parsed.value());
  }
  std::vector<Sst2Example> sst2;
  if (*sst2_n > 0) {
    auto raw = read_text_file(args->get("--sst2-file"));
    if (!raw) return fail(raw.status().message());
    auto parsed = parse_sst2(*raw);
    if (!parsed) return fail(parsed.status().message());
    sst2 = std::move(parsed.value());
  }

  auto model = Model::load(model_path(*args));
  if (!model) return fail(model.status().message());
  if (Status s = check_context(**model, *n_ctx, *n_ctx); !s) return fail(s.message());
  std::shared_ptr<const Model> base_model;
  if (args->has("--base")) {
    auto base = Model::load(args->get("--base"));
    if (!base) return fail(base.status().message());
    base_model = base.value();
    if (base_model->config().n_vocab != (*model)->config().n_vocab) {
      return fail("the model and the base have different vocabularies");
    }
  }
  TransformerOptions options;
  options.n_ctx = *n_ctx;
  options.n_batch = *n_ctx;
  options.n_threads = static_cast<int>(*n_threads);
  options.all_logits = true;
  // -ctk/-ctv apply to the evaluated model only: `-m M --base M -ctk q8_0` measures the KV cache
  // type against the same model with the default f16 cache, as a weight format is measured.
  const TransformerOptions base_options = options;
  if (Status s = read_cache_flags(*args, options); !s) return fail(s.message());
  if (Status s = check_transformer_options((*model)->config(), options); !s) return fail(s.message());
  Transformer transformer(*model, options);
  std::unique_ptr<Transformer> base_transformer;
  if (base_model) base_transformer = std::make_unique<Transformer>(base_model, base_options);
  const std::string kv_k = kv_type_name(options.cache_type_k), kv_v = kv_type_name(options.cache_type_v);

  const std::vector<int32_t> tokens = (base_model ? base_model : model.value())->tokenizer().encode(*text, true, false);
  // Comparing against a base: run live (--base, optionally saved with --save-base) or read back
  // from --base-logits, which a sweep computes once.
  const bool compare = base_transformer != nullptr || args->has("--base-logits");
  DivergenceResult divergence;
  PerplexityResult perplexity;
  if (compare) {
    const int64_t total = std::min<int64_t>(static_cast<int64_t>(tokens.size()) / *n_ctx, *chunks > 0 ? *chunks : INT64_MAX);
    ProgressBar progress("kl-divergence", total, "chunks");
    BaseLogitsOptions files;
    files.save_path = args->get("--save-base");
    files.load_path = args->get("--base-logits");
    auto r = compare_distributions(transformer, base_transformer.get(), tokens, *n_ctx, *chunks, files,
                                   [&](int64_t done, int64_t) { progress.update(done); });
    progress.finish();
    if (!r) return fail(r.status().message());
    divergence = r.value();
  } else {
    const int64_t total = std::min<int64_t>(static_cast<int64_t>(tokens.size()) / *n_ctx, *chunks > 0 ? *chunks : INT64_MAX);
    ProgressBar progress("perplexity", total, "chunks");
    PerplexityOptions po;
    po.n_ctx = *n_ctx;
    po.max_chunks = *chunks;
    auto r = compute_perplexity(transformer, tokens, po, [&](int64_t done, int64_t, double) { progress.update(done); });
    progress.finish();
    if (!r) return fail(r.status().message());
    perplexity = r.value();
  }

  std::vector<TaskRow> tasks;
  auto add_task = [&](const std::string& name, int64_t n, auto&& scorer) -> Status {
    TaskRow row;
    row.name = name;
    auto m = run_task(name, n, [&](const auto& cb) { return scorer(transformer, cb); });
    if (!m) return m.status();
    row.model = m.value();
    if (base_transformer) {
      auto b = run_task(name + " (base)", n, [&](const auto& cb) { return scorer(*base_transformer, cb); });
      if (!b) return b.status();
      row.base = b.value();
      row.has_base = true;
    }
    tasks.push_back(row);
    return Status::ok();
  };
  if (!hellaswag.empty()) {
    const int64_t n = std::min<int64_t>(*hellaswag_n, static_cast<int64_t>(hellaswag.size()));
    Status s = add_task("hellaswag", n, [&](Transformer& t, const auto& cb) { return hellaswag_accuracy(t, hellaswag, n, cb); });
    if (!s) return fail(s.message());
  }
  if (!sst2.empty()) {
    const int64_t n = std::min<int64_t>(*sst2_n, static_cast<int64_t>(sst2.size()));
    Status s = add_task("sst2", n, [&](Transformer& t, const auto& cb) { return sst2_accuracy(t, sst2, n, cb); });
    if (!s) return fail(s.message());
  }

  const double ppl = compare ? divergence.ppl : perplexity.ppl;
  const double ppl_error = compare ? divergence.ppl_error : perplexity.ppl_error;
  if (format == "json") {
    std::printf("{\n  \"model\": \"%s\",\n", (*model)->file().path().c_str());
    if (base_model) std::printf("  \"base\": \"%s\",\n", base_model->file().path().c_str());
    if (args->has("--base-logits")) std::printf("  \"base_logits\": \"%s\",\n", args->get("--base-logits").c_str());
    std::printf("  \"text\": \"%s\",\n  \"ctx\": %lld,\n", text_path.c_str(), static_cast<long long>(*n_ctx));
    std::printf("  \"ppl\": %.6f,\n  \"ppl_error\": %.6f,\n", ppl, ppl_error);
    if (compare) {
      std::printf("  \"base_ppl\": %.6f,\n  \"base_ppl_error\": %.6f,\n  \"delta_ppl_pct\": %.4f,\n", divergence.base_ppl,
                  divergence.base_ppl_error, 100.0 * (divergence.ppl / divergence.base_ppl - 1));
      std::printf("  \"kld_mean\": %.8f,\n  \"kld_mean_error\": %.8f,\n  \"kld_median\": %.8f,\n  \"kld_p99\": %.8f,\n  \"kld_max\": %.8f,\n",
                  divergence.kld_mean, divergence.kld_mean_error, divergence.kld_median, divergence.kld_p99, divergence.kld_max);
      std::printf("  \"same_top_pct\": %.4f,\n  \"tokens\": %lld,\n", divergence.same_top_pct, static_cast<long long>(divergence.tokens));
    }
    for (const auto& t : tasks) {
      std::printf("  \"%s_acc\": %.4f,\n  \"%s_stderr\": %.4f,\n  \"%s_tasks\": %lld,\n", t.name.c_str(), t.model.accuracy_pct(),
                  t.name.c_str(), t.model.stderr_pct(), t.name.c_str(), static_cast<long long>(t.model.tasks));
      if (t.has_base) std::printf("  \"base_%s_acc\": %.4f,\n", t.name.c_str(), t.base.accuracy_pct());
    }
    std::printf("  \"type_k\": \"%s\",\n  \"type_v\": \"%s\",\n  \"kv_bytes_per_token\": %lld,\n", kv_k.c_str(), kv_v.c_str(),
                static_cast<long long>(transformer.kv_bytes_per_token()));
    std::printf("  \"bits_per_weight\": %.4f\n}\n", 8.0 * static_cast<double>((*model)->weight_bytes()) / static_cast<double>((*model)->parameter_count()));
    return 0;
  }
  std::printf("| metric | model | base |\n| --- | ---: | ---: |\n");
  auto bits = [](const Model& m) { return 8.0 * static_cast<double>(m.weight_bytes()) / static_cast<double>(m.parameter_count()); };
  char base_bits[32] = "";
  if (base_model) std::snprintf(base_bits, sizeof base_bits, "%.3f", bits(*base_model));
  std::printf("| bits per weight | %.3f | %s |\n", bits(**model), base_bits);
  std::printf("| KV cache (K/V) | %s/%s, %.1f KiB per token | %s |\n", kv_k.c_str(), kv_v.c_str(), transformer.kv_bytes_per_token() / 1024.0,
              base_transformer ? "f16/f16" : "");
  if (compare) {
    std::printf("| PPL (-c %lld, %lld chunks) | %.4f ± %.4f | %.4f ± %.4f |\n", static_cast<long long>(*n_ctx),
                static_cast<long long>(divergence.chunks), divergence.ppl, divergence.ppl_error, divergence.base_ppl, divergence.base_ppl_error);
    std::printf("| ΔPPL | %+.3f%% | |\n", 100.0 * (divergence.ppl / divergence.base_ppl - 1));
    std::printf("| KLD mean | %.6f ± %.6f | |\n| KLD median | %.6f | |\n| KLD p99 | %.6f | |\n| KLD max | %.6f | |\n",
                divergence.kld_mean, divergence.kld_mean_error, divergence.kld_median, divergence.kld_p99, divergence.kld_max);
    std::printf("| same top token | %.3f%% | |\n", divergence.same_top_pct);
  } else {
    std::printf("| PPL (-c %lld, %lld chunks) | %.4f ± %.4f | |\n", static_cast<long long>(*n_ctx),
                static_cast<long long>(perplexity.chunks), ppl, ppl_error);
  }
  for (const auto& t : tasks) {
    char base_acc[32] = "";
    if (t.has_base) std::snprintf(base_acc, sizeof base_acc, "%.2f%%", t.base.accuracy_pct());
    std::printf("| %s accuracy (%lld tasks) | %.2f%% ± %.2f | %s |\n", t.name.c_str(), static_cast<long long>(t.model.tasks),
                t.model.accuracy_pct(), t.model.stderr_pct(), base_acc);
  }
  return 0;
}

}  // namespace frugal::cli
