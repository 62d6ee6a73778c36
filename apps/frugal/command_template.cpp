// frugal template: prints the prompt a chat template renders for a conversation, so a user can
// see exactly what the model receives (the model's tokenizer.chat_template or --template-file).
#include <cstdio>

#include "cli_args.h"
#include "commands.h"
#include "io/jinja.h"

namespace frugal::cli {
namespace {

Result<std::string> read_all(const std::string& path) {
  FILE* f = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
  if (f == nullptr) return Status::error("cannot open '" + path + "'");
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  if (f != stdin) std::fclose(f);
  if (failed) return Status::error("cannot read '" + path + "'");
  return text;
}

}  // namespace

int command_template(const std::vector<std::string>& argv) {
  Command command("template");
  command.model()
      .option("--template-file", "FILE", "a Jinja chat template to use instead of the model's")
      .option("--messages", "FILE", "the conversation: a JSON list of {role, content}, or an object of template variables (- for stdin)")
      .flag("--add-generation-prompt", "end with the opening of the assistant's turn, as generation does")
      .option("--bos-token", "TEXT", "bos_token when no model is given")
      .option("--eos-token", "TEXT", "eos_token when no model is given");
  auto args = command.parse(argv);
  if (!args) return fail(args.status().message());
  if (args->help_shown()) return 0;
  if (!args->has("--messages")) {
    return fail("template needs a conversation: --messages FILE.json (a JSON list of {\"role\", \"content\"} "
                "messages, or an object whose keys become template variables: messages, tools, ...)");
  }
  std::string source, bos, eos;
  // The model is needed for its template and its BOS/EOS texts; a --template-file alone is enough
  // when no model is named (then --bos-token/--eos-token give those texts).
  const bool want_model = !args->has("--template-file") || args->has("-m");
  if (want_model) {
    const std::string path = model_path(*args);
    auto file = GgufFile::open(path);
    if (!file) return fail(file.status().message());
    auto tokenizer = load_tokenizer(**file);
    if (!tokenizer) return fail(tokenizer.status().message());
    const ChatTemplate t = read_chat_template(**file, **tokenizer);
    source = t.source;
    bos = t.bos_token;
    eos = t.eos_token;
    if (!args->has("--template-file") && source.empty()) {
      return fail(path + " has no tokenizer.chat_template (a base model?); chat would use the built-in " +
                  chat_format_name(t.fallback) + " format; give one with --template-file F");
    }
  }
  if (args->has("--template-file")) {
    auto text = read_all(args->get("--template-file"));
    if (!text) return fail(text.status().message());
    source = *text;
  }
  if (args->has("--bos-token")) bos = args->get("--bos-token");
  if (args->has("--eos-token")) eos = args->get("--eos-token");

  auto json = read_all(args->get("--messages"));
  if (!json) return fail(json.status().message());
  auto parsed = jinja::Value::from_json(*json);
  if (!parsed) return fail(args->get("--messages") + ": " + parsed.status().message());
  jinja::Value globals = jinja::Value::object();
  globals.set("bos_token", bos);
  globals.set("eos_token", eos);
  globals.set("tools", jinja::Value::none());
  if (parsed->is_array()) {
    globals.set("messages", *parsed);
  } else if (parsed->is_object()) {
    for (const auto& [k, v] : parsed->as_object().items) globals.set(k.str(), v);
  } else {
    return fail(args->get("--messages") + ": expected a JSON list of messages or an object");
  }
  if (!globals.get("messages") || !globals.get("messages")->is_array()) {
    return fail(args->get("--messages") + ": no \"messages\" list");
  }
  globals.set("add_generation_prompt", args->has("--add-generation-prompt"));
  auto tmpl = jinja::Template::parse(source);
  if (!tmpl) return fail(tmpl.status().message());
  auto out = tmpl->render(globals);
  if (!out) return fail(out.status().message());
  std::fwrite(out->data(), 1, out->size(), stdout);
  return std::ferror(stdout) ? fail("cannot write the output") : 0;
}

}  // namespace frugal::cli
