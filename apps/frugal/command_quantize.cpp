// frugal quantize: post-training quantization of a GGUF model into a new GGUF file.
#include <cstdio>

#include "base/progress.h"
#include "cli_args.h"
#include "commands.h"
#include "compress/quantize_model.h"

namespace frugal::cli {

int command_quantize(const std::vector<std::string>& argv) {
  auto args = Args::parse(argv, {"-m", "-o", "--method", "--bits", "--group", "--format", "--embedding-format"},
                          {"--symmetric"}, {{"--model", "-m"}, {"--output", "-o"}});
  if (!args) return fail(args.status().message());
  if (!args->positional().empty()) return fail("unexpected argument '" + args->positional()[0] + "'");
  if (!args->has("-o")) return fail("quantize needs an output file: -o OUT.gguf");
  auto bits = args->get_int("--bits", 4, 2, 8);
  auto group = args->get_int("--group", 32, -1, 1 << 20);
  for (const Status* s : {&bits.status(), &group.status()}) {
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
  auto format = resolve_format(options);
  if (!format) return fail(format.status().message());

  ProgressBar progress("quantize", 1, "tensors");
  int64_t total = 0;
  auto report = quantize_model(model_path(*args), args->get("-o"), options, [&](int64_t done, int64_t n, const std::string&) {
    if (total == 0) {
      total = n;
      progress = ProgressBar("quantize", n, "tensors");
    }
    progress.update(done);
  });
  progress.finish();
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
