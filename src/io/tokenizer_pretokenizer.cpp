// Regex pre-tokenizer for byte-level BPE: the GPT-2 / Llama 3 / Qwen2 / SmolLM split patterns,
// compiled with PCRE2 (UTF + UCP, JIT when available).
#include "io/tokenizer_pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdio>

namespace frugal::detail {

struct RegexPreTokenizer::Stage {
  pcre2_code* code = nullptr;
  ~Stage() { pcre2_code_free(code); }
};

namespace {

// The patterns below are the ones the models' tokenizer.json files carry (as llama.cpp lists
// them per pre-tokenizer name). GPT-2: Radford et al. 2019, "Language Models are Unsupervised
// Multitask Learners", byte-level BPE with this word split.
constexpr const char* kGpt2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
// Llama 3 (tiktoken cl100k-style). The case-insensitive contractions are spelled out: PCRE2's
// caseless matching would also take U+017F (long s) and U+212A (Kelvin sign), Hugging Face's
// and llama.cpp's do not.
constexpr const char* kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// Qwen2: as Llama 3 but digits one by one.
constexpr const char* kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

struct PreFamily {
  std::vector<std::string_view> names;
  std::vector<std::string> patterns;
  bool ignore_merges;
};

const std::vector<PreFamily>& pre_families() {
  static const std::vector<PreFamily> families = {
      // llama.cpp's "default": punctuation runs, GPT-2 words, digit runs, then groups of three.
      {{"default"}, {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"}, false},
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "jina-v1-en", "jina-v2-es", "jina-v2-de",
        "jina-v2-code", "roberta-bpe", "gigachat", "mpt", "olmo", "jais", "trillion",
        "granite-docling", "exaone4", "a.x-4.0", "mellum", "modern-bert"},
       {kGpt2},
       false},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
        "jina-v5-nano", "glm4", "glm5"},
       {kLlama3},
       true},
      {{"dbrx", "smaug-bpe", "chatglm-bpe"}, {kLlama3}, false},
      {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan"},
       {kQwen2},
       false},
      // SmolLM / StarCoder: every digit is its own piece first, then the GPT-2 split.
      {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b",
        "mellum2"},
       {"\\p{N}", kGpt2},
       false},
  };
  return families;
}

// \s in these patterns means Unicode White_Space (what Hugging Face tokenizers and llama.cpp
// use). PCRE2's \s also takes U+180E, so it is spelled out.
constexpr const char* kWhitespaceItems =
    "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";
// Letters and numbers added in Unicode 15.0 and 15.1, which PCRE2 10.42 (Unicode 14) does not
// know yet (Kawi, Nag Mundari, Kaktovik numerals, CJK extensions H and I, ...).
constexpr const char* kExtraLetters =
    "\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}"
    "\\x{13441}-\\x{13446}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"
    "\\x{1E4D0}-\\x{1E4EB}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
constexpr const char* kExtraNumbers =
    "\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}";

// Rewrites \s, \S, \p{L} and \p{N} into explicit classes (see above), inside or outside [...].
Result<std::string> expand_classes(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const std::string_view rest = pattern.substr(i);
      const char e = pattern[i + 1];
      std::string items;
      size_t consumed = 2;
      bool negate = false;
      if (e == 's') {
        items = kWhitespaceItems;
      } else if (e == 'S') {
        if (in_class) return Status::error("pre-tokenizer pattern uses \\S inside [...]");
        items = kWhitespaceItems;
        negate = true;
      } else if (rest.substr(0, 5) == "\\p{L}") {
        items = std::string("\\p{L}") + kExtraLetters;
        consumed = 5;
      } else if (rest.substr(0, 5) == "\\p{N}") {
        items = std::string("\\p{N}") + kExtraNumbers;
        consumed = 5;
      } else {
        out.append(rest.substr(0, 2));
        ++i;
        continue;
      }
      if (in_class) {
        out += items;
      } else {
        out += negate ? "[^" : "[";
        out += items;
        out += "]";
      }
      i += consumed - 1;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' or '^]' right after '[' is a literal; our patterns never start a class that way.
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

Result<RegexPreTokenizer> RegexPreTokenizer::from_patterns(
    const std::vector<std::string>& patterns) {
  RegexPreTokenizer result;
  for (const std::string& pattern : patterns) {
    FRUGAL_ASSIGN_OR_RETURN(std::string expanded, expand_classes(pattern));
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(expanded.data()), expanded.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error_code,
                                     &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      return Status::error("pre-tokenizer pattern '" + pattern +
                           "' does not compile: " + reinterpret_cast<const char*>(message) +
                           " (at offset " + std::to_string(error_offset) + ")");
    }
    // JIT makes matching several times faster; without it PCRE2 interprets the same code.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    auto stage = std::make_shared<Stage>();
    stage->code = code;
    result.stages_.push_back(std::move(stage));
  }
  return result;
}

Result<RegexPreTokenizer> RegexPreTokenizer::for_pre_name(std::string_view pre,
                                                          bool* ignore_merges) {
  std::string_view name = pre;
  if (name.empty()) {
    std::fprintf(stderr,
                 "frugal: warning: tokenizer.ggml.pre is missing; using llama.cpp's 'default' "
                 "pre-tokenizer (tokenization may differ from the original model)\n");
    name = "default";
  }
  for (const PreFamily& family : pre_families()) {
    for (std::string_view known : family.names) {
      if (known == name) {
        if (ignore_merges != nullptr) *ignore_merges = family.ignore_merges;
        return from_patterns(family.patterns);
      }
    }
  }
  std::fprintf(stderr,
               "frugal: warning: unknown pre-tokenizer '%.*s' (tokenizer.ggml.pre); using the "
               "GPT-2 pattern (tokenization may differ from the original model)\n",
               static_cast<int>(name.size()), name.data());
  if (ignore_merges != nullptr) *ignore_merges = false;
  return from_patterns({kGpt2});
}

void RegexPreTokenizer::split(std::string_view text,
                              std::vector<std::pair<size_t, size_t>>& words) const {
  std::vector<std::pair<size_t, size_t>> current{{0, text.size()}};
  std::vector<std::pair<size_t, size_t>> next;
  if (text.empty()) return;
  for (const auto& stage : stages_) {
    pcre2_match_data* match = pcre2_match_data_create_from_pattern(stage->code, nullptr);
    next.clear();
    next.reserve(current.size() * 2);
    for (const auto& [begin, end] : current) {
      // Each piece is its own subject, so that lookaheads such as (?!\S) see the piece's end.
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + begin);
      const size_t length = end - begin;
      size_t offset = 0;
      size_t last = 0;
      while (offset < length) {
        const int rc =
            pcre2_match(stage->code, subject, length, offset, PCRE2_NO_UTF_CHECK, match, nullptr);
        if (rc < 0) break;  // no further match (or a match-limit error: keep the rest whole)
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
        const size_t match_begin = ovector[0];
        const size_t match_end = ovector[1];
        if (match_end <= match_begin) {
          // An empty match splits nothing; step over one character and go on.
          size_t step = 1;
          while (match_begin + step < length && (subject[match_begin + step] & 0xC0) == 0x80) {
            ++step;
          }
          offset = match_begin + step;
          continue;
        }
        if (match_begin > last) next.emplace_back(begin + last, begin + match_begin);
        next.emplace_back(begin + match_begin, begin + match_end);
        last = match_end;
        offset = match_end;
      }
      if (last < length) next.emplace_back(begin + last, end);
    }
    pcre2_match_data_free(match);
    current.swap(next);
  }
  words.insert(words.end(), current.begin(), current.end());
}

}  // namespace frugal::detail
