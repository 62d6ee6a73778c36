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
                           "--calib-tokens", "-t"},
                          {"--symmetric", "--act-order"}, {{"--model", "-m"}, {"--output", "-o"}, {"--threads", "-t"}});
  if (!args) return fail(args.status().message());
  if (!args->positional().empty()) return fail("unexpected argument '" + args->positional()[0] + "'");
  if (!args->has("-o")) return fail("quantize needs an output file: -o OUT.gguf");
  auto bits = args->get_int("--bits", 4, 2, 8);
  auto group = args->get_int("--group", 32, -1, 1 << 20);
  auto calib_tokens = args->get_int("--calib-tokens", 4096, 64, 1 << 24);
  auto n_threads = args->get_int("-t", default_threads(), 1, 512);
  for (const Status* s : {&bits.status(), &group.status(), &calib_tokens.status(), &n_threads.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  if (*group == 0 || *group < -1) return fail("--group must be a positive size or -1 (per channel)");
  QuantizeOptions options;
  options.method = args->get("--method", "rtn");
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
  auto format = resolve_format(options);
  if (!format) return fail(format.status().message());

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
  std::fprintf(stderr, "quantized %lld tensors to %s (%lld fell back to a 32-element type), kept %lld; %.2f MiB -> %.2f MiB, %.3f bits per weight\n",
               static_cast<long long>(report->tensors_quantized), type_traits(*format).name,
               static_cast<long long>(report->fallbacks), static_cast<long long>(report->tensors_kept),
               report->bytes_in / 1048576.0, report->bytes_out / 1048576.0, report->bits_per_weight);
  std::fprintf(stderr, "elapsed: %.2f s\n", report->seconds);
  std::printf("%s\n", args->get("-o").c_str());
  return 0;
}

}  // namespace frugal::cli
