// frugal prune: magnitude, Wanda or SparseGPT pruning of a GGUF model into a new GGUF file.
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "base/progress.h"
#include "cli_args.h"
#include "commands.h"
#include "compress/methods.h"
#include "compress/owl.h"
#include "compress/prune_model.h"
#include "compress/structured_prune.h"

namespace frugal::cli {
namespace {

std::string calibration_default() {
  if (const char* d = std::getenv("FRUGAL_DATA"); d != nullptr && *d) return std::string(d) + "/tinyshakespeare.txt";
  return std::string(FRUGAL_DEFAULT_DATA_DIR) + "/tinyshakespeare.txt";
}

std::string prune_footer() {
  return "Zeroes the fraction S of every decoder-block matrix, layer by layer on the outputs of the pruned layers.\n"
         "N:M patterns zero N of every M consecutive weights of a row (S is then N/M). Zeros are stored densely:\n"
         "a matrix keeps its type when the type stores 0 exactly, else Q8_0, unless --format names one;\n"
         "sparsegpt with --bits or a quantized --format prunes and quantizes in one sweep.\n"
         "--format sparse-q8 stores only the non-zeros (int8, a 1-bit mask per weight, 5.25 bits per weight at 50%,\n"
         "3.75 at 70%; rows of a multiple of 64), which decodes faster the sparser it is (frugal only).\n"
         "--format sparse-q4 does the same with 4-bit values (3.25 bits per weight at 50%, 2.5 at 70%).\n"
         "--format nm-q8 / nm-q4 with --pattern 2:4 or 4:8: half the weights at fixed places (5.25 / 3.25 bits per weight).\n"
         "--damp: SparseGPT's Hessian dampening, a fraction of mean(diag H); default 0.1 (the paper's 0.01 overfits\n"
         "the small Shakespeare calibration set: on SmolLM2 its layer error on held-out text exceeds Wanda's).\n"
         "--calib-tokens defaults to 16384 (SparseGPT's update needs more tokens than quantization).\n"
         "--owl (wanda, sparsegpt; unstructured): per-block sparsities from each block's outlier ratio, the fraction\n"
         "of its |W|*||X|| scores above M x their mean (M = 5), spread over S +- L (L = 0.08), averaging S\n"
         "(Yin et al. 2023, arXiv:2310.05175).\n"
         "layers, width and heads are structured: S is the fraction of decoder blocks, of FFN channels, or of KV\n"
         "groups (a key/value head with the query heads sharing it, so GQA stays valid) removed, the same in every\n"
         "block (rounded to whole blocks or groups, FFN widths to multiples of 32; refused when that is none or all);\n"
         "they write an ordinary, smaller GGUF that llama.cpp runs.\n"
         "Calibration text defaults to the Shakespeare set (never the evaluation text).\n\nmethods:\n" +
         compress::method_table(compress::MethodKind::kPrune);
}

// --method layers|width: whole blocks or FFN channels removed (compress/structured_prune.h).
int prune_structured(const Args& args, const PruneOptions& prune) {
  for (const char* flag : {"--pattern", "--format", "--bits", "--group", "--symmetric", "--damp", "--owl", "--owl-m", "--owl-lambda"}) {
    if (args.has(flag)) return fail(std::string(flag) + " does not apply to --method " + prune.method);
  }
  if (!args.has("--sparsity")) return fail("--method " + prune.method + " needs --sparsity S (the fraction of " +
                                           (prune.method == "layers" ? "decoder blocks" : prune.method == "heads" ? "KV groups" : "FFN channels") + " removed)");
  StructuredPruneOptions options;
  options.method = prune.method;
  options.sparsity = prune.sparsity;
  options.calibration_path = prune.calibration_path;
  options.calibration_tokens = prune.calibration_tokens;
  options.n_threads = prune.n_threads;
  std::unique_ptr<ProgressBar> progress;
  auto report = structured_prune_model(model_path(args), args.get("-o"), options, [&](int64_t done, int64_t n) {
    if (!progress) progress = std::make_unique<ProgressBar>("calibrate", n, "layers");
    progress->update(done);
  });
  if (progress) progress->finish();
  if (!report) return fail(report.status().message());
  if (options.method == "layers") {
    std::string removed;
    for (int64_t b : report->removed_blocks) removed += (removed.empty() ? "" : " ") + std::to_string(b);
    auto list = [](const std::vector<double>& values) {
      std::string out;
      char buffer[32];
      for (double v : values) {
        std::snprintf(buffer, sizeof(buffer), "%s%.4f", out.empty() ? "" : " ", v);
        out += buffer;
      }
      return out;
    };
    std::fprintf(stderr, "block influence (1 - cos): %s\nangular distance (arccos(cos)/pi): %s\nremoved %zu of %zu blocks: %s\n",
                 list(report->block_influence).c_str(), list(report->angular_distance).c_str(), report->removed_blocks.size(),
                 report->block_influence.size(), removed.c_str());
  } else if (options.method == "heads") {
    std::fprintf(stderr, "%lld query and %lld key/value heads kept in every block; %lld output projections re-encoded\n",
                 static_cast<long long>(report->n_head_after), static_cast<long long>(report->n_head_kv_after),
                 static_cast<long long>(report->tensors_requantized));
  } else {
    std::fprintf(stderr, "FFN width %lld -> %lld in every block; %lld down projections re-encoded\n",
                 static_cast<long long>(report->n_ff_before), static_cast<long long>(report->n_ff_after),
                 static_cast<long long>(report->tensors_requantized));
  }
  std::fprintf(stderr, "parameters %lld -> %lld (%.1f%% fewer); %.2f MiB -> %.2f MiB\n", static_cast<long long>(report->parameters_before),
               static_cast<long long>(report->parameters_after),
               100.0 * (1.0 - static_cast<double>(report->parameters_after) / static_cast<double>(report->parameters_before)),
               report->bytes_in / 1048576.0, report->bytes_out / 1048576.0);
  std::fprintf(stderr, "elapsed: %.2f s\n", report->seconds);
  std::printf("%s\n", args.get("-o").c_str());
  return 0;
}

}  // namespace

int command_prune(const std::vector<std::string>& argv) {
  Command command("prune");
  command.model()
      .option("-o,--output", "OUT.gguf", "the pruned model (written to a temporary name, then renamed)")
      .option("--method", "METHOD", compress::method_names(compress::MethodKind::kPrune))
      .option("--sparsity", "S", "fraction of weights (or blocks, channels, KV groups) removed, in [0, 1)")
      .option("--pattern", "P", "unstructured, 2:4 or 4:8", "unstructured")
      .option("--calib", "FILE", "calibration text", calibration_default())
      .option("--calib-tokens", "N", "calibration tokens", "16384")
      .option("--format", "TYPE", "storage type of the pruned matrices (sparse-q8 / sparse-q4 / nm-q8 / nm-q4: only the non-zeros)")
      .option("--bits", "B", "sparsegpt: quantize to B bits while pruning (0 = no)", "0")
      .option("--group", "G", "quantization group with --bits (-1 = per channel)", "32")
      .flag("--symmetric", "symmetric quantization with --bits")
      .option("--damp", "D", "SparseGPT's Hessian dampening (fraction of mean diag H)", "0.1")
      .flag("--owl", "per-block sparsities from the outlier ratio (OWL)")
      .option("--owl-m", "M", "OWL outlier multiple", "5")
      .option("--owl-lambda", "L", "OWL spread of the per-block sparsities", "0.08")
      .threads()
      .footer(prune_footer());
  auto args = command.parse(argv);
  if (!args) return fail(args.status().message());
  if (args->help_shown()) return 0;
  if (!args->has("-o")) return fail("prune needs an output file: -o OUT.gguf");
  if (!args->has("--method")) return fail("prune needs --method " + compress::method_names(compress::MethodKind::kPrune));
  auto sparsity = args->get_float("--sparsity", -1.0, -1.0, 1.0);
  auto calib_tokens = args->get_int("--calib-tokens", 64, 1 << 24);
  auto bits = args->get_int("--bits", 0, 8);
  auto group = args->get_int("--group", -1, 1 << 20);
  auto n_threads = args->get_int("-t", 1, 512);
  auto damp = args->get_float("--damp", 0.0, 100.0);
  if (!sparsity) return fail(sparsity.status().message());
  if (!damp) return fail(damp.status().message());
  for (const Status* s : {&calib_tokens.status(), &bits.status(), &group.status(), &n_threads.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  if (args->has("--sparsity") && *sparsity < 0) return fail("--sparsity must be in [0, 1)");
  warn_threads(*n_threads);
  if (!args->has("--bits") && !args->has("--format")) {
    for (const char* flag : {"--group", "--symmetric"}) {
      if (args->has(flag)) return fail(std::string(flag) + " applies only with --bits or a quantized --format");
    }
  }
  // The output directory must exist before the calibration, not only at the final rename.
  if (Status s = prepare_output(args->get("-o")); !s) return fail(s.message());
  if (args->has("--damp") && args->get("--method") != "sparsegpt") return fail("--damp applies only to --method sparsegpt");
  PruneOptions options;
  options.method = args->get("--method");
  options.sparsity = *sparsity;
  options.pattern = args->get("--pattern");
  options.format = args->get("--format");
  options.bits = static_cast<int>(*bits);
  options.group = *group;
  options.symmetric = args->has("--symmetric");
  options.calibration_path = args->get("--calib");
  options.calibration_tokens = *calib_tokens;
  options.n_threads = static_cast<int>(*n_threads);
  options.percdamp = *damp;
  if (is_structured_method(options.method)) return prune_structured(*args, options);
  if (args->has("--owl")) {
    compress::OwlOptions owl;
    auto m = args->get_float("--owl-m", 1e-6, 1e6);
    auto lambda = args->get_float("--owl-lambda", 0.0, 0.5);
    if (!m) return fail(m.status().message());
    if (!lambda) return fail(lambda.status().message());
    owl.outlier_multiple = *m;
    owl.lambda = *lambda;
    std::unique_ptr<ProgressBar> owl_progress;
    auto layer_sparsity = owl_layer_sparsity(model_path(*args), options, owl, [&](int64_t done, int64_t n) {
      if (!owl_progress) owl_progress = std::make_unique<ProgressBar>("owl", n, "layers");
      owl_progress->update(done);
    });
    if (owl_progress) owl_progress->finish();
    if (!layer_sparsity) return fail(layer_sparsity.status().message());
    options.layer_sparsity = *layer_sparsity;
    std::string list;
    for (double v : options.layer_sparsity) list += (list.empty() ? "" : " ") + std::to_string(v).substr(0, 5);
    std::fprintf(stderr, "owl per-layer sparsity: %s\n", list.c_str());
  } else if (args->has("--owl-m") || args->has("--owl-lambda")) {
    return fail("--owl-m and --owl-lambda need --owl");
  }
  auto plan = PrunePlan::make(options);
  if (!plan) return fail(plan.status().message());

  std::unique_ptr<ProgressBar> progress;
  auto report = prune_model(model_path(*args), args->get("-o"), options, [&](int64_t done, int64_t n, const std::string& what) {
    if (what.rfind("layer", 0) != 0) return;
    if (!progress) progress = std::make_unique<ProgressBar>("prune", n, "layers");
    progress->update(done);
  });
  if (progress) progress->finish();
  if (!report) return fail(report.status().message());
  std::fprintf(stderr, "%s: %lld matrices, %lld of %lld weights zero (%.2f%%); %.2f MiB -> %.2f MiB, %.3f bits per weight\n",
               report->description.c_str(), static_cast<long long>(report->tensors_pruned), static_cast<long long>(report->zeros),
               static_cast<long long>(report->weights_in_pruned),
               100.0 * static_cast<double>(report->zeros) / static_cast<double>(std::max<int64_t>(1, report->weights_in_pruned)),
               report->bytes_in / 1048576.0, report->bytes_out / 1048576.0, report->bits_per_weight);
  std::fprintf(stderr, "elapsed: %.2f s\n", report->seconds);
  std::printf("%s\n", args->get("-o").c_str());
  return 0;
}

}  // namespace frugal::cli
