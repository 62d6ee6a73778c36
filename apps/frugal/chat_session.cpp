// frugal run's generation and --chat loop: streaming with stop sequences, Ctrl-C handling, the
// model's chat template (with the built-in fallbacks), slash commands, and a conversation that
// keeps going when the context fills (oldest turns dropped, system prompt kept, prompt re-prefilled).
#include "chat_session.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>

#include "commands.h"

namespace frugal::cli {
namespace {

volatile std::sig_atomic_t g_interrupts = 0;

void on_sigint(int) { g_interrupts = g_interrupts + 1; }

// Length of the longest suffix of `text` that is a proper prefix of some stop sequence: those
// bytes are held back because the next token may complete the stop sequence.
size_t held_back(const std::string& text, const std::vector<std::string>& stops) {
  size_t keep = 0;
  for (const std::string& stop : stops) {
    for (size_t n = std::min(stop.size() - 1, text.size()); n > keep; --n) {
      if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  return keep;
}

void write_out(const std::string& text, size_t from, size_t to) {
  if (to > from) std::fwrite(text.data() + from, 1, to - from, stdout);
  std::fflush(stdout);
}

// The reply as it streams: each token's text is printed as soon as no stop sequence can start
// in it; a completed stop sequence ends the reply (it and what follows are not printed).
class ReplyStream {
 public:
  explicit ReplyStream(const std::vector<std::string>& stops) : stops_(stops) {}
  // Adds a token's text; true when it completed a stop sequence (the text is cut before it).
  bool add(const std::string& piece) {
    text_ += piece;
    if (!stops_.empty()) {
      size_t at = std::string::npos;
      for (const std::string& stop : stops_) {
        // Text before printed_ was checked already.
        const size_t start = printed_ >= stop.size() ? printed_ - stop.size() + 1 : 0;
        at = std::min(at, text_.find(stop, start));
      }
      if (at != std::string::npos) {
        text_.resize(at);
        flush();
        return true;
      }
    }
    const size_t safe = text_.size() - held_back(text_, stops_);
    write_out(text_, printed_, safe);
    printed_ = safe;
    return false;
  }
  // Prints a held-back tail that never became a stop sequence.
  void flush() {
    write_out(text_, printed_, text_.size());
    printed_ = text_.size();
  }
  const std::string& text() const { return text_; }

 private:
  const std::vector<std::string>& stops_;
  std::string text_;    // generated so far
  size_t printed_ = 0;  // bytes of text_ written to stdout
};

// One line from stdin through read(2), so that a Ctrl-C at the prompt interrupts the read
// (std::getline would retry). Returns false at end of input or on Ctrl-C.
bool read_line(std::string& line) {
  line.clear();
  static std::string buffer;
  for (;;) {
    if (const size_t nl = buffer.find('\n'); nl != std::string::npos) {
      line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return true;
    }
    char chunk[4096];
    const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) {
      if (interrupted()) return false;
      continue;
    }
    if (n <= 0) {
      if (buffer.empty()) return false;
      line.swap(buffer);
      buffer.clear();
      return true;
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

const char* kChatHelp =
    "commands:\n"
    "  /help           this help\n"
    "  /clear          forget the conversation (the system prompt stays)\n"
    "  /system TEXT    set the system prompt (empty TEXT removes it)\n"
    "  /exit, /quit    leave (as does Ctrl-D, or Ctrl-C at the prompt)\n"
    "Ctrl-C while the model replies stops the reply.\n";

}  // namespace

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a Ctrl-C at the prompt must end the blocking read
  sigaction(SIGINT, &sa, nullptr);
}
bool interrupted() { return g_interrupts > 0; }
void clear_interrupt() { g_interrupts = 0; }

std::vector<int32_t> encode_prompt(const Model& model, const std::string& text) {
  const std::string& bos = model.chat_template().bos_token;
  const bool has_bos = !bos.empty() && text.compare(0, bos.size(), bos) == 0;
  return model.tokenizer().encode(text, !has_bos, true);
}

void print_speed(const Speed& s) {
  std::fprintf(stderr, "\nprompt: %lld tokens in %.3f s (%.2f tokens/s) | generation: %lld tokens in %.3f s (%.2f tokens/s)\n",
               static_cast<long long>(s.prompt_tokens), s.prompt_seconds,
               s.prompt_seconds > 0 ? s.prompt_tokens / s.prompt_seconds : 0.0,
               static_cast<long long>(s.generated_tokens), s.generate_seconds,
               s.generate_seconds > 0 ? s.generated_tokens / s.generate_seconds : 0.0);
}

Status generate(Transformer& transformer, Sampler& sampler, std::vector<int32_t>& history,
                const std::vector<int32_t>& tokens, const GenerateOptions& options, Speed& speed,
                std::string* reply, StopReason* reason) {
  StopReason why = StopReason::kLength;
  size_t common = 0;
  while (common < history.size() && common < tokens.size() && history[common] == tokens[common]) ++common;
  if (common == tokens.size() && common > 0) --common;  // re-evaluate one token to get logits
  if (transformer.evicted() > 0 && common < history.size()) {
    // A rolling cache that has dropped tokens no longer maps positions to history indices: only
    // an append continues it; anything else starts over (the window then rolls again).
    common = 0;
    transformer.truncate(0);
  } else if (transformer.evicted() == 0) {
    transformer.truncate(static_cast<int64_t>(common));
  }
  history.resize(common);
  const int64_t fresh = static_cast<int64_t>(tokens.size() - common);
  // A prompt exactly as long as the context still fits; one more token does not.
  if (!transformer.rolling() && static_cast<int64_t>(tokens.size()) > transformer.context_size()) {
    return Status::error("prompt is " + std::to_string(tokens.size()) + " tokens, longer than the context of " +
                         std::to_string(transformer.context_size()) + " (raise -c)");
  }
  Timer timer;
  FRUGAL_RETURN_IF_ERROR(transformer.evaluate(tokens.data() + common, fresh));
  speed.prompt_tokens += fresh;
  speed.prompt_seconds += timer.seconds();
  history.insert(history.end(), tokens.begin() + static_cast<int64_t>(common), tokens.end());
  for (int32_t t : tokens) sampler.accept(t);

  const Tokenizer& tokenizer = transformer.model().tokenizer();
  // --ignore-eos (as llama.cpp's): end-of-generation tokens get -inf logits.
  std::vector<int32_t> end_tokens;
  std::vector<float> masked;
  const int64_t n_vocab = transformer.model().config().n_vocab;
  if (options.ignore_eos) {
    for (int32_t id = 0; id < std::min<int64_t>(tokenizer.vocab_size(), n_vocab); ++id)
      if (tokenizer.is_end_of_generation(id)) end_tokens.push_back(id);
  }
  ReplyStream stream(options.stops);
  timer.reset();
  for (int64_t i = 0; i < options.max_new; ++i) {
    if (interrupted()) {
      why = StopReason::kInterrupted;
      break;
    }
    const float* logits = transformer.last_logits();
    if (!end_tokens.empty()) {
      masked.assign(logits, logits + n_vocab);
      for (int32_t id : end_tokens) masked[static_cast<size_t>(id)] = -INFINITY;
      logits = masked.data();
    }
    const int32_t next = sampler.sample(logits);
    sampler.accept(next);
    if (tokenizer.is_end_of_generation(next)) {
      why = StopReason::kEndOfText;
      break;
    }
    ++speed.generated_tokens;
    if (stream.add(tokenizer.token_to_piece(next))) {
      why = StopReason::kStopSequence;
      break;
    }
    if (i + 1 >= options.max_new) break;
    if (!transformer.rolling() && transformer.position() + 1 >= transformer.context_size()) {
      why = StopReason::kContextFull;
      break;
    }
    FRUGAL_RETURN_IF_ERROR(transformer.evaluate(&next, 1));
    history.push_back(next);
  }
  stream.flush();
  speed.generate_seconds += timer.seconds();
  if (reply) *reply = stream.text();
  if (reason) *reason = why;
  return Status::ok();
}

Status generate_speculative(SpeculativeDecoder& decoder, const std::vector<int32_t>& tokens, const GenerateOptions& options,
                            Speed& speed, std::string* reply, StopReason* reason, std::vector<int32_t>* generated) {
  if (options.ignore_eos) return Status::error("--ignore-eos does not work with speculative decoding (--draft)");
  const Transformer& target = decoder.target();
  if (static_cast<int64_t>(tokens.size()) >= target.context_size()) {
    return Status::error("prompt is " + std::to_string(tokens.size()) + " tokens, too long for the context of " +
                         std::to_string(target.context_size()) + " (raise -c)");
  }
  Timer timer;
  FRUGAL_RETURN_IF_ERROR(decoder.start(tokens));
  speed.prompt_tokens += decoder.prompt_evaluated();
  speed.prompt_seconds += timer.seconds();
  const Tokenizer& tokenizer = target.model().tokenizer();
  StopReason why = StopReason::kLength;
  ReplyStream stream(options.stops);
  std::vector<int32_t> out;
  int64_t n = 0;
  timer.reset();
  while (n < options.max_new && why == StopReason::kLength) {
    if (interrupted()) {
      why = StopReason::kInterrupted;
      break;
    }
    // A step verifies up to draft-max + 1 tokens; the decoder shortens drafts near the end, and
    // one free position is all a plain step needs.
    if (target.position() + 2 >= target.context_size()) {
      why = StopReason::kContextFull;
      break;
    }
    out.clear();
    FRUGAL_RETURN_IF_ERROR(decoder.step(out));
    for (int32_t token : out) {
      if (tokenizer.is_end_of_generation(token)) {
        why = StopReason::kEndOfText;
        break;
      }
      ++n;
      ++speed.generated_tokens;
      if (generated) generated->push_back(token);
      if (stream.add(tokenizer.token_to_piece(token))) {
        why = StopReason::kStopSequence;
        break;
      }
      if (n >= options.max_new) break;
    }
  }
  stream.flush();
  speed.generate_seconds += timer.seconds();
  if (reply) *reply = stream.text();
  if (reason) *reason = why;
  return Status::ok();
}

namespace {

// Renders the conversation and drops its oldest turns (never the system prompt or the newest
// user message) until the prompt leaves `reserve` positions for the reply. Returns the tokens;
// an empty vector when even the newest message alone does not fit.
std::vector<int32_t> fit_conversation(const Model& model, std::vector<ChatMessage>& messages, int64_t n_ctx,
                                      int64_t reserve, bool rolling, std::string& used, int& dropped) {
  dropped = 0;
  for (;;) {
    auto rendered = model.chat_template().apply(messages, true, &used);
    std::vector<int32_t> tokens = encode_prompt(model, rendered.is_ok() ? *rendered : std::string());
    if (rolling || static_cast<int64_t>(tokens.size()) + reserve <= n_ctx) return tokens;
    size_t first = 0;
    while (first < messages.size() && messages[first].role == "system") ++first;
    if (first + 1 >= messages.size()) return {};  // only the newest user message is left
    // Drop one turn: the oldest message and everything up to the next user message.
    size_t end = first + 1;
    while (end + 1 < messages.size() && messages[end].role != "user") ++end;
    dropped += static_cast<int>(end - first);
    messages.erase(messages.begin() + static_cast<std::ptrdiff_t>(first), messages.begin() + static_cast<std::ptrdiff_t>(end));
  }
}

}  // namespace

int run_chat(const Model& model, Transformer& transformer, Sampler& sampler, const ChatOptions& options) {
  const ChatTemplate& tmpl = model.chat_template();
  std::vector<ChatMessage> messages;
  if (!options.system.empty()) messages.push_back({"system", options.system});
  // Say once which template formats the conversation; a base model gets a warning.
  std::string used;
  {
    std::vector<ChatMessage> probe = messages;
    probe.push_back({"user", "Hello"});
    (void)tmpl.apply(probe, true, &used);
  }
  if (!tmpl.has_source()) {
    std::fprintf(stderr,
                 "frugal: warning: the model has no chat template (tokenizer.chat_template): it may be a base model, "
                 "not tuned for chat; using the built-in %s format, replies may be poor\n",
                 chat_format_name(tmpl.fallback));
  } else if (used != "model template") {
    std::fprintf(stderr, "frugal: warning: chat template: %s\n", used.c_str());
  } else {
    std::fprintf(stderr, "frugal: chat template: the model's own (tokenizer.chat_template)\n");
  }
  std::string last_used = used;

  const bool interactive = isatty(STDIN_FILENO) != 0;
  if (interactive) std::fprintf(stderr, "type /help for commands; Ctrl-C stops a reply, Ctrl-C at the prompt or /exit leaves\n");
  const int64_t n_ctx = transformer.context_size();
  const int64_t reserve = std::min<int64_t>(options.generate.max_new, n_ctx / 2);
  std::vector<int32_t> history;
  Speed total;
  int64_t drafted = 0, accepted = 0, verifications = 0;  // speculative decoding, over all turns
  std::string first = options.first_prompt;
  for (;;) {
    std::string user;
    if (!first.empty()) {
      user = first;
      first.clear();
      if (interactive) std::printf("> %s\n", user.c_str());
    } else {
      if (interactive) {
        std::printf("> ");
        std::fflush(stdout);
      }
      clear_interrupt();
      if (!read_line(user)) {
        if (interactive || interrupted()) std::printf("\n");
        break;
      }
      if (user.empty()) continue;
    }
    if (user[0] == '/') {
      const size_t space = user.find(' ');
      const std::string command = user.substr(0, space);
      const std::string arg = space == std::string::npos ? "" : user.substr(space + 1);
      if (command == "/exit" || command == "/quit") break;
      if (command == "/help") {
        std::printf("%s", kChatHelp);
      } else if (command == "/clear") {
        messages.erase(std::remove_if(messages.begin(), messages.end(), [](const ChatMessage& m) { return m.role != "system"; }),
                       messages.end());
        std::printf("[conversation cleared]\n");
      } else if (command == "/system") {
        messages.erase(std::remove_if(messages.begin(), messages.end(), [](const ChatMessage& m) { return m.role == "system"; }),
                       messages.end());
        if (!arg.empty()) messages.insert(messages.begin(), {"system", arg});
        std::printf(arg.empty() ? "[system prompt removed]\n" : "[system prompt set]\n");
      } else {
        std::printf("unknown command %s (/help lists them)\n", command.c_str());
      }
      std::fflush(stdout);
      continue;
    }
    messages.push_back({"user", user});
    int dropped = 0;
    std::vector<int32_t> tokens = fit_conversation(model, messages, n_ctx, reserve, transformer.rolling(), used, dropped);
    if (used != last_used) {
      std::fprintf(stderr, "frugal: chat template: %s\n", used.c_str());
      last_used = used;
    }
    if (tokens.empty()) {
      std::fprintf(stderr, "[that message is too long for the context of %lld tokens (raise -c); not sent]\n",
                   static_cast<long long>(n_ctx));
      messages.pop_back();
      continue;
    }
    if (dropped > 0) {
      std::fprintf(stderr, "[context full: dropped the %d oldest message%s to make room%s]\n", dropped, dropped == 1 ? "" : "s",
                   messages.front().role == "system" ? "; the system prompt stays" : "");
    }
    std::string reply;
    StopReason why = StopReason::kLength;
    Speed turn;
    clear_interrupt();
    Status s = options.speculative
                   ? generate_speculative(*options.speculative, tokens, options.generate, turn, &reply, &why, nullptr)
                   : generate(transformer, sampler, history, tokens, options.generate, turn, &reply, &why);
    if (!s) {
      // The conversation survives a failed turn: report it and drop the message.
      std::fprintf(stderr, "\nfrugal: error: %s\n", s.message().c_str());
      messages.pop_back();
      history.clear();
      transformer.truncate(0);
      continue;
    }
    total.prompt_tokens += turn.prompt_tokens;
    total.prompt_seconds += turn.prompt_seconds;
    total.generated_tokens += turn.generated_tokens;
    total.generate_seconds += turn.generate_seconds;
    if (options.speculative) {
      const SpeculativeStats& st = options.speculative->stats();
      drafted += st.drafted;
      accepted += st.accepted;
      verifications += st.verifications;
    }
    std::printf("\n");
    std::fflush(stdout);
    if (why == StopReason::kInterrupted) {
      std::fprintf(stderr, "[reply stopped]");
      print_speed(turn);
      clear_interrupt();
    } else if (why == StopReason::kContextFull) {
      std::fprintf(stderr, "[the reply reached the end of the context of %lld tokens; older turns will be dropped]\n",
                   static_cast<long long>(n_ctx));
    }
    messages.push_back({"assistant", reply});
  }
  print_speed(total);
  if (options.speculative) {
    std::fprintf(stderr, "speculative %s: %lld verifications, acceptance %.1f%% (%lld of %lld drafted)\n",
                 options.speculative->drafter_name().c_str(), static_cast<long long>(verifications),
                 drafted > 0 ? 100.0 * static_cast<double>(accepted) / static_cast<double>(drafted) : 0.0,
                 static_cast<long long>(accepted), static_cast<long long>(drafted));
  }
  return 0;
}

}  // namespace frugal::cli
