// frugal tokenize: the model's tokens for a text; --ids prints them as llama-tokenize --ids does.
#include <cstdio>

#include "cli_args.h"
#include "commands.h"

namespace frugal::cli {

int command_tokenize(const std::vector<std::string>& argv) {
  Command command("tokenize");
  command.model()
      .option("-p,--prompt", "TEXT", "the text (escapes such as \\n are processed unless --no-escape)")
      .option("-f,--file", "FILE", "read the text from FILE (- for stdin)")
      .flag("--no-escape", "take -p literally")
      .flag("--ids", "print the ids only, as a list (llama-tokenize --ids)")
      .flag("--no-bos", "do not add the beginning-of-sequence token")
      .flag("--no-parse-special", "treat special-token text as plain text");
  auto args = command.parse(argv);
  if (!args) return fail(args.status().message());
  if (args->help_shown()) return 0;
  std::string text;
  if (args->has("--no-escape") && !args->has("-p")) return fail("--no-escape applies only to -p");
  if (args->has("-f") && args->has("-p")) return fail("give the text with -p or -f, not both");
  if (args->has("-f")) {
    auto read = read_text_argument(args->get("-f"));
    if (!read) return fail(read.status().message());
    text = std::move(*read);
  } else if (args->has("-p")) {
    text = args->has("--no-escape") ? args->get("-p") : process_escapes(args->get("-p"));
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
