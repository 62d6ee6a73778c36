// frugal quantize: post-training quantization of a GGUF model into a new GGUF file.
#include <cstdio>
#include <cstdlib>

#include <memory>

#include "base/progress.h"
#include "cli_args.h"
#include "commands.h"
#include "compress/methods.h"
#include "compress/quant_presets.h"
#include "compress/quantize_model.h"

namespace frugal::cli {
namespace {

std::string calibration_default() {
  if (const char* d = std::getenv("FRUGAL_DATA"); d != nullptr && *d) return std::string(d) + "/tinyshakespeare.txt";
  return std::string(FRUGAL_DEFAULT_DATA_DIR) + "/tinyshakespeare.txt";
}

}  // namespace

int command_quantize(const std::vector<std::string>& argv) {
  Command command("quantize");
  command.model()
      .positional("--preset", "TYPE", "a llama-quantize preset, as --preset")
      .option("-o,--output", "OUT.gguf", "the quantized model (written to a temporary name, then renamed)")
      .option("--preset", "TYPE", "llama-quantize's per-tensor mix: " + compress::preset_names())
      .option("--method", "METHOD", compress::method_names(compress::MethodKind::kQuantize), "rtn")
      .option("--bits", "B", "bits per weight, 2 to 8 (default: 4; 8 for smoothquant, w8a8, llm-int8); 8 alone writes q8_0")
      .option("--group", "G", "weights per scale: 32, 64, 128, 256 or -1 (per output channel)", "32")
      .flag("--symmetric", "no zero point (q4_0/q5_0/q8_0 at group 32)")
      .option("--format", "TYPE", "one llama.cpp or frugal type for every matrix (q4_k, q8_0, fq3_g128 …)")
      .option("--embedding-format", "TYPE", "type of token_embd (the tied output head), else kept as stored")
      .option("--types-from", "FILE", "copy every tensor's type from FILE (e.g. llama-quantize's output)")
      .flag("--group-fallback", "rows the group does not divide use the largest of 256/128/64/32 that does")
      .option("--calib", "FILE", "calibration text (gptq, awq, smoothquant, w8a8, llm-int8)", calibration_default())
      .option("--calib-tokens", "N", "calibration tokens", "4096")
      .flag("--act-order", "gptq: quantize columns in order of decreasing Hessian diagonal")
      .option("--alpha", "A", "smoothquant: migration strength", "0.5")
      .option("--threshold", "T", "llm-int8: input magnitude of an outlier column", "6.0")
      .threads()
      .footer("Presets (llama-quantize's names; the per-tensor mix follows llama.cpp's rules, and every preset maps\n"
              "exactly onto frugal's types; IQ*/TQ* presets are not available):\n" + compress::preset_table() +
              "In every quantized preset the output head (or the tied token embedding) is q6_K, or q8_0 when the\n"
              "base block does not divide its rows; rows a K-quant block does not divide fall back to q4_0/q5_0/q5_1/\n"
              "q8_0 as llama-quantize does (SmolLM2's 576-wide rows do).\n"
              "`frugal quantize MODEL Q4_K_M -o OUT.gguf` as llama-quantize; with --method gptq|awq the same mix is\n"
              "calibrated. `frugal methods` lists the methods.");
  auto args = command.parse(argv);
  if (!args) return fail(args.status().message());
  if (args->help_shown()) return 0;
  if (!args->has("-o")) return fail("quantize needs an output file: -o OUT.gguf");
  const std::string method = args->get("--method");
  const bool int8_method = method == "smoothquant" || method == "w8a8" || method == "llm-int8";
  const bool preset = args->has("--preset");
  auto bits = args->get_int("--bits", int8_method ? 8 : 4, 2, 8);
  auto group = args->get_int("--group", -1, 1 << 20);
  auto calib_tokens = args->get_int("--calib-tokens", 64, 1 << 24);
  auto n_threads = args->get_int("-t", 1, 512);
  auto alpha = args->get_float("--alpha", 0.0, 1.0);
  auto threshold = args->get_float("--threshold", 1e-6, 1e9);
  for (const Status* s : {&bits.status(), &group.status(), &calib_tokens.status(), &n_threads.status(), &alpha.status(), &threshold.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  if (*group == 0 || *group < -1) return fail("--group must be a positive size or -1 (per channel)");
  // Flags the chosen layout or method does not use are refused, not silently ignored.
  const bool fixed_layout = preset || args->has("--format") || args->has("--types-from");
  const char* layout_flag = preset ? "--preset" : args->has("--format") ? "--format" : "--types-from";
  for (const char* flag : {"--bits", "--group", "--symmetric", "--group-fallback"}) {
    if (fixed_layout && args->has(flag)) {
      const std::string given = std::string(flag) + (args->get(flag) == "1" && std::string(flag) != "--bits" && std::string(flag) != "--group" ? "" : " " + args->get(flag));
      return fail(given + " does not apply with " + layout_flag + " " + args->get(layout_flag) + " (the type fixes the bits and the block)");
    }
  }
  if (args->has("--act-order") && method != "gptq") return fail("--act-order applies only to --method gptq");
  if (args->has("--alpha") && method != "smoothquant") return fail("--alpha applies only to --method smoothquant");
  if (args->has("--threshold") && method != "llm-int8") return fail("--threshold applies only to --method llm-int8");
  if (method == "rtn" && (args->has("--calib") || args->has("--calib-tokens"))) {
    return fail("--calib and --calib-tokens do not apply to --method rtn (it needs no calibration)");
  }
  warn_threads(*n_threads);
  // The output directory must exist before hours of calibration, not only at the final rename.
  if (Status s = prepare_output(args->get("-o")); !s) return fail(s.message());
  QuantizeOptions options;
  options.method = method;
  options.group_fallback = args->has("--group-fallback");
  options.types_from = args->get("--types-from");
  options.smooth_alpha = static_cast<float>(*alpha);
  options.outlier_threshold = static_cast<float>(*threshold);
  options.bits = static_cast<int>(*bits);
  options.group = *group;
  options.symmetric = args->has("--symmetric");
  options.format = args->get("--format");
  // `--bits 8` alone means llama.cpp's q8_0 (symmetric, 32 per block), which llama.cpp loads.
  if (*bits == 8 && !int8_method && !args->has("--group") && !args->has("--symmetric") && !fixed_layout) options.format = "q8_0";
  options.embedding_format = args->get("--embedding-format");
  // Calibration reads any text, by default the Shakespeare set kept apart from the evaluation text.
  options.calibration_path = args->get("--calib");
  options.calibration_tokens = *calib_tokens;
  options.act_order = args->has("--act-order");
  options.n_threads = static_cast<int>(*n_threads);
  if (preset) {
    auto chosen = compress::find_preset(args->get("--preset"));
    if (!chosen) return fail(chosen.status().message());
    if (int8_method) return fail("--method " + method + " stores q8_0 only; presets work with rtn, gptq and awq");
    auto file = GgufFile::open(model_path(*args));
    if (!file) return fail(file.status().message());
    auto types = compress::preset_tensor_types(*chosen, **file);
    if (!types) return fail(types.status().message());
    options.tensor_types = std::move(*types);
    options.tensor_types_label = std::string("llama-quantize preset ") + chosen->name;
    options.file_type = chosen->file_type;
  }
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
                                               what.rfind("layer", 0) == 0 ? "M multiply-adds" : "tensors");
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
