// frugal prune: magnitude, Wanda or SparseGPT pruning of a GGUF model into a new GGUF file.
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "base/progress.h"
#include "cli_args.h"
#include "commands.h"
#include "compress/methods.h"
#include "compress/prune_model.h"

namespace frugal::cli {
namespace {

std::string calibration_default() {
  if (const char* d = std::getenv("FRUGAL_DATA"); d != nullptr && *d) return std::string(d) + "/tinyshakespeare.txt";
  return std::string(FRUGAL_DEFAULT_DATA_DIR) + "/tinyshakespeare.txt";
}

std::string prune_help() {
  return "usage: frugal prune [-m MODEL] -o OUT.gguf --method " + compress::method_names(compress::MethodKind::kPrune) +
         " --sparsity S\n"
         "                    [--pattern unstructured|2:4|4:8] [--calib FILE] [--calib-tokens N] [--format TYPE]\n"
         "                    [--bits B [--group G] [--symmetric]] [--damp D] [-t THREADS]\n"
         "Zeroes the fraction S of every decoder-block matrix, layer by layer on the outputs of the pruned layers.\n"
         "N:M patterns zero N of every M consecutive weights of a row (S is then N/M). Zeros are stored densely:\n"
         "a matrix keeps its type when the type stores 0 exactly, else Q8_0, unless --format names one;\n"
         "sparsegpt with --bits or a quantized --format prunes and quantizes in one sweep.\n"
         "--damp: SparseGPT's Hessian dampening, a fraction of mean(diag H); default 0.1 (the paper's 0.01 overfits\n"
         "the small Shakespeare calibration set: on SmolLM2 its layer error on held-out text exceeds Wanda's).\n"
         "--calib-tokens defaults to 16384 (SparseGPT's update needs more tokens than quantization).\n"
         "Calibration text defaults to the Shakespeare set (never the evaluation text).\n\nmethods:\n" +
         compress::method_table(compress::MethodKind::kPrune);
}

}  // namespace

int command_prune(const std::vector<std::string>& argv) {
  for (const std::string& a : argv) {
    if (a == "--help" || a == "-h") {
      std::fputs(prune_help().c_str(), stdout);
      return 0;
    }
  }
  auto args = Args::parse(argv,
                          {"-m", "-o", "--method", "--sparsity", "--pattern", "--calib", "--calib-tokens", "--format", "--bits",
                           "--group", "-t", "--damp"},
                          {"--symmetric"}, {{"--model", "-m"}, {"--output", "-o"}, {"--threads", "-t"}});
  if (!args) return fail(args.status().message());
  if (!args->positional().empty()) return fail("unexpected argument '" + args->positional()[0] + "'");
  if (!args->has("-o")) return fail("prune needs an output file: -o OUT.gguf");
  if (!args->has("--method")) return fail("prune needs --method " + compress::method_names(compress::MethodKind::kPrune));
  auto sparsity = args->get_float("--sparsity", -1.0, -1.0, 1.0);
  auto calib_tokens = args->get_int("--calib-tokens", 16384, 64, 1 << 24);
  auto bits = args->get_int("--bits", 0, 0, 8);
  auto group = args->get_int("--group", 32, -1, 1 << 20);
  auto n_threads = args->get_int("-t", default_threads(), 1, 512);
  auto damp = args->get_float("--damp", 0.1, 0.0, 100.0);
  if (!sparsity) return fail(sparsity.status().message());
  if (!damp) return fail(damp.status().message());
  for (const Status* s : {&calib_tokens.status(), &bits.status(), &group.status(), &n_threads.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  if (args->has("--sparsity") && *sparsity < 0) return fail("--sparsity must be in [0, 1)");
  PruneOptions options;
  options.method = args->get("--method");
  options.sparsity = *sparsity;
  options.pattern = args->get("--pattern", "unstructured");
  options.format = args->get("--format");
  options.bits = static_cast<int>(*bits);
  options.group = *group;
  options.symmetric = args->has("--symmetric");
  options.calibration_path = args->get("--calib", calibration_default());
  options.calibration_tokens = *calib_tokens;
  options.n_threads = static_cast<int>(*n_threads);
  options.percdamp = *damp;
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
