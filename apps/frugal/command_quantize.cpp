// frugal quantize: post-training quantization of a GGUF model into a new GGUF file.
#include <cstdio>
#include <cstdlib>

#include <memory>

#include "base/progress.h"
#include "cli_args.h"
#include "commands.h"
#include "compress/quantize_model.h"

namespace frugal::cli {
namespace {

std::string calibration_default() {
  if (const char* d = std::getenv("FRUGAL_DATA"); d != nullptr && *d) return std::string(d) + "/tinyshakespeare.txt";
  return std::string(FRUGAL_DEFAULT_DATA_DIR) + "/tinyshakespeare.txt";
}

}  // namespace

int command_quantize(const std::vector<std::string>& argv) {
  auto args = Args::parse(argv,
                          {"-m", "-o", "--method", "--bits", "--group", "--format", "--embedding-format", "--calib",
                           "--calib-tokens", "-t", "--types-from", "--alpha", "--threshold"},
                          {"--symmetric", "--act-order", "--group-fallback"}, {{"--model", "-m"}, {"--output", "-o"}, {"--threads", "-t"}});
  if (!args) return fail(args.status().message());
  if (!args->positional().empty()) return fail("unexpected argument '" + args->positional()[0] + "'");
  if (!args->has("-o")) return fail("quantize needs an output file: -o OUT.gguf");
  const std::string method = args->get("--method", "rtn");
  const bool int8_method = method == "smoothquant" || method == "w8a8" || method == "llm-int8";
  auto bits = args->get_int("--bits", int8_method ? 8 : 4, 2, 8);
  auto group = args->get_int("--group", 32, -1, 1 << 20);
  auto calib_tokens = args->get_int("--calib-tokens", 4096, 64, 1 << 24);
  auto n_threads = args->get_int("-t", default_threads(), 1, 512);
  for (const Status* s : {&bits.status(), &group.status(), &calib_tokens.status(), &n_threads.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  if (*group == 0 || *group < -1) return fail("--group must be a positive size or -1 (per channel)");
  QuantizeOptions options;
  options.method = method;
  options.group_fallback = args->has("--group-fallback");
  options.types_from = args->get("--types-from");
  auto alpha = args->get_float("--alpha", 0.5, 0.0, 1.0);
  auto threshold = args->get_float("--threshold", 6.0, 1e-6, 1e9);
  if (!alpha) return fail(alpha.status().message());
  if (!threshold) return fail(threshold.status().message());
  options.smooth_alpha = static_cast<float>(*alpha);
  options.outlier_threshold = static_cast<float>(*threshold);
  options.bits = static_cast<int>(*bits);
  options.group = *group;
  options.symmetric = args->has("--symmetric");
  options.format = args->get("--format");
  options.embedding_format = args->get("--embedding-format");
  // Calibration reads any text, by default the Shakespeare set kept apart from the evaluation text.
  options.calibration_path = args->get("--calib", calibration_default());
  options.calibration_tokens = *calib_tokens;
  options.act_order = args->has("--act-order");
  options.n_threads = static_cast<int>(*n_threads);
  auto plan = QuantizePlan::make(options);
  if (!plan) return fail(plan.status().message());

  // Progress comes in phases (calibrated layers, then tensors written): one bar per phase.
  std::unique_ptr<ProgressBar> progress;
  int64_t phase_total = -1;
  auto report = quantize_model(model_path(*args), args->get("-o"), options, [&](int64_t done, int64_t n, const std::string& what) {
    if (n != phase_total || !progress) {
      if (progress) progress->finish();
      phase_total = n;
      progress = std::make_unique<ProgressBar>(what.rfind("layer", 0) == 0 ? "calibrate" : "quantize", n,
                                               what.rfind("layer", 0) == 0 ? "layers" : "tensors");
    }
    progress->update(done);
  });
  if (progress) progress->finish();
  if (!report) return fail(report.status().message());
  std::fprintf(stderr, "quantized %lld tensors to %s (%lld fell back to a smaller block or group), kept %lld; %.2f MiB -> %.2f MiB, %.3f bits per weight\n",
               static_cast<long long>(report->tensors_quantized), plan->description().c_str(),
               static_cast<long long>(report->fallbacks), static_cast<long long>(report->tensors_kept),
               report->bytes_in / 1048576.0, report->bytes_out / 1048576.0, report->bits_per_weight);
  std::fprintf(stderr, "elapsed: %.2f s\n", report->seconds);
  std::printf("%s\n", args->get("-o").c_str());
  return 0;
}

}  // namespace frugal::cli
