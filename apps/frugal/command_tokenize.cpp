// frugal tokenize: the model's tokens for a text; --ids prints them as llama-tokenize --ids does.
#include <cstdio>

#include "cli_args.h"
#include "commands.h"

namespace frugal::cli {

int command_tokenize(const std::vector<std::string>& argv) {
  auto args = Args::parse(argv, {"-m", "-p", "-f"}, {"--ids", "--no-bos", "--no-parse-special"},
                          {{"--prompt", "-p"}, {"--file", "-f"}, {"--model", "-m"}});
  if (!args) return fail(args.status().message());
  if (!args->positional().empty()) return fail("unexpected argument '" + args->positional()[0] + "'");
  std::string text;
  if (args->has("-f")) {
    FILE* f = std::fopen(args->get("-f").c_str(), "rb");
    if (f == nullptr) return fail("cannot open '" + args->get("-f") + "'");
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
  } else if (args->has("-p")) {
    text = args->get("-p");
  } else {
    return fail("tokenize needs a text: -p TEXT or -f FILE");
  }
  // Only the tokenizer is needed, but loading the model also validates the file.
  auto file = GgufFile::open(model_path(*args));
  if (!file) return fail(file.status().message());
  auto tokenizer = load_tokenizer(**file);
  if (!tokenizer) return fail(tokenizer.status().message());
  const Tokenizer& tok = **tokenizer;
  const std::vector<int32_t> ids = tok.encode(text, !args->has("--no-bos"), !args->has("--no-parse-special"));
  if (args->has("--ids")) {
    std::printf("[");
    for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? ", %d" : "%d", ids[i]);
    std::printf("]\n");
    return 0;
  }
  for (int32_t id : ids) {
    std::printf("%6d -> '%s'\n", id, tok.token_to_piece(id, true).c_str());
  }
  return 0;
}

}  // namespace frugal::cli
