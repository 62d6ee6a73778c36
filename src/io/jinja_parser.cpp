// The Jinja lexer (text, tags, whitespace control as jinja2 applies it) and the recursive-descent
// parser that builds the AST, with jinja2's operator precedence.
#include <algorithm>
#include <cstring>

#include "io/jinja_internal.h"
#include "io/utf8.h"

namespace frugal::jinja {

void fail(int line, int column, std::string message) {
  throw JinjaException{Error{std::move(message), line, column}};
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

class Lexer {
 public:
  Lexer(std::string source, const Options& options) : s_(std::move(source)), options_(options) {
    for (size_t i = 0; i < s_.size(); ++i)
      if (s_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    bool line_starting = true;  // jinja2: the previous match ended with a newline (or none yet)
    while (pos_ < s_.size()) {
      size_t tag = pos_;
      for (;;) {
        tag = s_.find('{', tag);
        if (tag == std::string::npos || tag + 1 >= s_.size()) {
          tag = std::string::npos;
          break;
        }
        const char c = s_[tag + 1];
        if (c == '{' || c == '%' || c == '#') break;
        ++tag;
      }
      if (tag == std::string::npos) {
        emit_text(s_.substr(pos_), pos_);
        pos_ = s_.size();
        break;
      }
      const char kind = s_[tag + 1];
      const char sign = tag + 2 < s_.size() ? s_[tag + 2] : '\0';
      std::string text = s_.substr(pos_, tag - pos_);
      if (sign == '-') {
        // {%- / {{- / {#- strip all whitespace before the tag.
        size_t end = text.size();
        while (end > 0 && is_space(text[end - 1])) --end;
        text.resize(end);
      } else if (sign != '+' && options_.lstrip_blocks && kind != '{') {
        // lstrip_blocks: spaces and tabs between the line start and a block or comment tag go.
        const size_t l_pos = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
            std::all_of(text.begin() + static_cast<std::ptrdiff_t>(l_pos), text.end(), is_space)) {
          text.resize(l_pos);
        }
      }
      emit_text(text, pos_);
      pos_ = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        comment(tag);
      } else if (kind == '%' && raw_block(tag)) {
        // {% raw %}...{% endraw %}: emitted as text, tags inside untouched.
      } else {
        tag_tokens(kind == '{', tag);
      }
      line_starting = pos_ > 0 && s_[pos_ - 1] == '\n';
    }
    tokens_.push_back(make(Token::Type::kEnd, "", s_.size()));
    return std::move(tokens_);
  }

 private:
  void position(size_t at, int& line, int& column) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), at);
    line = static_cast<int>(it - line_starts_.begin());
    column = static_cast<int>(at - line_starts_[static_cast<size_t>(line - 1)]) + 1;
  }
  Token make(Token::Type type, std::string text, size_t at) const {
    Token t;
    t.type = type;
    t.text = std::move(text);
    position(at, t.line, t.column);
    return t;
  }
  [[noreturn]] void error(size_t at, const std::string& message) const {
    int line, column;
    position(at, line, column);
    fail(line, column, message);
  }
  void emit_text(std::string text, size_t at) {
    if (!text.empty()) tokens_.push_back(make(Token::Type::kText, std::move(text), at));
  }
  // After a block or comment end: `-%}` eats all following whitespace, else trim_blocks eats one
  // newline (`+%}` keeps it).
  void after_block_end(bool strip, bool keep) {
    if (strip) {
      while (pos_ < s_.size() && is_space(s_[pos_])) ++pos_;
    } else if (!keep && options_.trim_blocks && pos_ < s_.size() && s_[pos_] == '\n') {
      ++pos_;
    }
  }
  // At pos_ (after `{%` and its sign): if this is `raw %}`, emits the text up to `{% endraw %}`
  // (with the same whitespace control as other block tags) and returns true.
  bool raw_block(size_t start) {
    size_t p = pos_;
    while (p < s_.size() && is_space(s_[p])) ++p;
    if (s_.compare(p, 3, "raw") != 0 || (p + 3 < s_.size() && is_name_char(s_[p + 3]))) return false;
    p += 3;
    while (p < s_.size() && is_space(s_[p])) ++p;
    const bool strip_after = s_.compare(p, 3, "-%}") == 0;
    const bool keep_after = s_.compare(p, 3, "+%}") == 0;
    if (!strip_after && !keep_after && s_.compare(p, 2, "%}") != 0) error(start, "expected '%}' after 'raw'");
    pos_ = p + (strip_after || keep_after ? 3 : 2);
    // jinja2's raw_begin rule has no trim_blocks newline; only `-%}` strips after it.
    if (strip_after) after_block_end(true, false);
    for (size_t at = s_.find("{%", pos_); at != std::string::npos; at = s_.find("{%", at + 2)) {
      size_t q = at + 2;
      const char sign = q < s_.size() && (s_[q] == '-' || s_[q] == '+') ? s_[q] : '\0';
      if (sign) ++q;
      while (q < s_.size() && is_space(s_[q])) ++q;
      if (s_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      while (q < s_.size() && is_space(s_[q])) ++q;
      const bool end_strip = s_.compare(q, 3, "-%}") == 0;
      const bool end_keep = s_.compare(q, 3, "+%}") == 0;
      if (!end_strip && !end_keep && s_.compare(q, 2, "%}") != 0) continue;
      std::string text = s_.substr(pos_, at - pos_);
      if (sign == '-') {
        size_t end = text.size();
        while (end > 0 && is_space(text[end - 1])) --end;
        text.resize(end);
      } else if (sign != '+' && options_.lstrip_blocks) {
        const size_t nl = text.rfind('\n');
        if (nl != std::string::npos && std::all_of(text.begin() + static_cast<std::ptrdiff_t>(nl) + 1, text.end(), is_space)) {
          text.resize(nl + 1);
        }
      }
      emit_text(std::move(text), pos_);
      pos_ = q + (end_strip || end_keep ? 3 : 2);
      after_block_end(end_strip, end_keep);
      return true;
    }
    error(start, "unterminated {% raw %} block: expected {% endraw %}");
  }

  void comment(size_t start) {
    const size_t end = s_.find("#}", pos_);
    if (end == std::string::npos) error(start, "unterminated comment");
    const bool strip = end > pos_ && s_[end - 1] == '-';
    const bool keep = end > pos_ && s_[end - 1] == '+';
    pos_ = end + 2;
    after_block_end(strip, keep);
  }
  void tag_tokens(bool variable, size_t start) {
    tokens_.push_back(make(variable ? Token::Type::kVarBegin : Token::Type::kBlockBegin, "", start));
    int depth = 0;  // brackets open inside the tag: `}}` of a dict literal does not end it
    for (;;) {
      while (pos_ < s_.size() && is_space(s_[pos_])) ++pos_;
      if (pos_ >= s_.size()) error(start, variable ? "unterminated '{{' tag" : "unterminated '{%' tag");
      if (depth == 0) {
        const char* end = variable ? "}}" : "%}";
        const bool signed_end = (s_[pos_] == '-' || s_[pos_] == '+') && s_.compare(pos_ + 1, 2, end) == 0;
        if (signed_end || s_.compare(pos_, 2, end) == 0) {
          const char sign = signed_end ? s_[pos_] : '\0';
          tokens_.push_back(make(variable ? Token::Type::kVarEnd : Token::Type::kBlockEnd, "", pos_));
          pos_ += signed_end ? 3 : 2;
          if (variable) {
            if (sign == '-') after_block_end(true, false);
          } else {
            after_block_end(sign == '-', sign == '+');
          }
          return;
        }
      }
      const size_t at = pos_;
      const char c = s_[pos_];
      if (is_name_start(c)) {
        while (pos_ < s_.size() && is_name_char(s_[pos_])) ++pos_;
        tokens_.push_back(make(Token::Type::kName, s_.substr(at, pos_ - at), at));
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        bool is_float = false;
        while (pos_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) ++pos_;
        if (pos_ + 1 < s_.size() && s_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(s_[pos_ + 1]))) {
          is_float = true;
          ++pos_;
          while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
        }
        if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
          size_t p = pos_ + 1;
          if (p < s_.size() && (s_[p] == '+' || s_[p] == '-')) ++p;
          if (p < s_.size() && std::isdigit(static_cast<unsigned char>(s_[p]))) {
            is_float = true;
            pos_ = p;
            while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
          }
        }
        std::string number = s_.substr(at, pos_ - at);
        number.erase(std::remove(number.begin(), number.end(), '_'), number.end());
        tokens_.push_back(make(is_float ? Token::Type::kFloat : Token::Type::kInt, number, at));
      } else if (c == '\'' || c == '"') {
        tokens_.push_back(make(Token::Type::kString, string_literal(c), at));
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "|", ".",
                                     ",", ":", "(", ")", "[", "]", "{", "}", "<", ">", "="};
        const char* op = nullptr;
        for (const char* candidate : kOps) {
          if (s_.compare(pos_, std::strlen(candidate), candidate) == 0) {
            op = candidate;
            break;
          }
        }
        if (!op) error(at, std::string("unexpected character '") + c + "'");
        if (*op == '(' || *op == '[' || *op == '{') ++depth;
        if ((*op == ')' || *op == ']' || *op == '}') && depth > 0) --depth;
        pos_ += std::strlen(op);
        tokens_.push_back(make(Token::Type::kOp, op, at));
      }
    }
  }
  // A quoted string with Python's escapes (jinja2 decodes literals with unicode-escape).
  std::string string_literal(char quote) {
    const size_t start = pos_++;
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      char c = s_[pos_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) break;
      const char e = s_[pos_++];
      auto hex = [&](int digits) {
        uint32_t cp = 0;
        for (int i = 0; i < digits; ++i) {
          if (pos_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[pos_]))) error(pos_, "bad escape in a string");
          const char h = s_[pos_++];
          cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        if (cp > 0x10FFFF) error(pos_, "bad escape in a string");
        append_utf8(out, cp);
      };
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '0': out += '\0'; break;
        case '\n': break;
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        default:
          out += '\\';
          out += e;
      }
    }
    if (pos_ >= s_.size()) error(start, "unterminated string");
    ++pos_;
    return out;
  }

  std::string s_;
  const Options& options_;
  size_t pos_ = 0;
  std::vector<size_t> line_starts_{0};
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(const std::string& source, const Options& options) {
  // jinja2 normalises \r\n and \r to \n and drops one trailing newline (keep_trailing_newline=False).
  std::string s;
  s.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      s += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      s += source[i];
    }
  }
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return Lexer(std::move(s), options).run();
}

namespace {

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, const Options& options) : t_(tokens), options_(options) {}

  std::shared_ptr<Program> run() {
    auto program = std::make_shared<Program>();
    program->body = body({});
    if (peek().type != Token::Type::kEnd) {
      const Token& tag = peek(1);
      fail(tag.line, tag.column, "unexpected '" + tag.text + "'");
    }
    return program;
  }

 private:
  using T = Token::Type;
  const Token& peek(size_t ahead = 0) const { return t_[std::min(pos_ + ahead, t_.size() - 1)]; }
  const Token& next() {
    const Token& t = peek();
    if (pos_ < t_.size() - 1) ++pos_;
    return t;
  }
  bool is_op(const char* op, size_t ahead = 0) const { return peek(ahead).type == T::kOp && peek(ahead).text == op; }
  bool is_name(const char* name, size_t ahead = 0) const { return peek(ahead).type == T::kName && peek(ahead).text == name; }
  [[noreturn]] void error_at(const Token& t, const std::string& message) const { fail(t.line, t.column, message); }
  std::string describe(const Token& t) const {
    switch (t.type) {
      case T::kEnd: return "end of template";
      case T::kBlockEnd: return "'%}'";
      case T::kVarEnd: return "'}}'";
      case T::kText: return "text";
      case T::kString: return "string";
      default: return "'" + t.text + "'";
    }
  }
  void expect_op(const char* op) {
    if (!is_op(op)) error_at(peek(), std::string("expected '") + op + "', got " + describe(peek()));
    next();
  }
  std::string expect_name() {
    if (peek().type != T::kName) error_at(peek(), "expected a name, got " + describe(peek()));
    return next().text;
  }
  void expect_block_end() {
    if (peek().type != T::kBlockEnd) error_at(peek(), "expected '%}', got " + describe(peek()));
    next();
  }
  void enter(const Token& at) {
    if (++depth_ > options_.max_depth) error_at(at, "template nested deeper than " + std::to_string(options_.max_depth) + " levels");
  }
  struct Leave {
    int& depth;
    ~Leave() { --depth; }
  };

  // Nodes up to a block tag whose keyword is in `ends` (left unread) or the end of the template.
  Body body(const std::vector<std::string>& ends) {
    enter(peek());
    Leave leave{depth_};
    Body out;
    for (;;) {
      const Token& t = peek();
      if (t.type == T::kEnd) {
        if (!ends.empty()) error_at(t, "unexpected end of template: expected {% " + ends.back() + " %}");
        return out;
      }
      if (t.type == T::kText) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kText;
        n->line = t.line;
        n->column = t.column;
        n->text = t.text;
        next();
        out.push_back(std::move(n));
      } else if (t.type == T::kVarBegin) {
        next();
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kOutput;
        n->line = t.line;
        n->column = t.column;
        n->expr = expression();
        if (peek().type != T::kVarEnd) error_at(peek(), "expected '}}', got " + describe(peek()));
        next();
        out.push_back(std::move(n));
      } else if (t.type == T::kBlockBegin) {
        const Token& keyword = peek(1);
        if (keyword.type == T::kName && std::find(ends.begin(), ends.end(), keyword.text) != ends.end()) return out;
        next();
        out.push_back(statement());
      } else {
        error_at(t, "unexpected " + describe(t));
      }
    }
  }

  // Reads `{% keyword %}` (the closing tag of a block).
  void end_tag(const char* keyword) {
    next();  // {%
    const Token& t = next();
    if (t.type != T::kName || t.text != keyword) error_at(t, std::string("expected '") + keyword + "'");
    expect_block_end();
  }

  NodePtr statement() {
    const Token& kw = peek();
    if (kw.type != T::kName) error_at(kw, "expected a statement keyword, got " + describe(kw));
    auto n = std::make_unique<Node>();
    n->line = kw.line;
    n->column = kw.column;
    const std::string word = next().text;
    if (word == "if") {
      n->kind = Node::Kind::kIf;
      n->conditions.push_back(expression());
      expect_block_end();
      for (;;) {
        n->bodies.push_back(body({"elif", "else", "endif"}));
        next();  // {%
        const std::string which = next().text;
        if (which == "elif") {
          n->conditions.push_back(expression());
          expect_block_end();
        } else if (which == "else") {
          expect_block_end();
          n->bodies.push_back(body({"endif"}));
          end_tag("endif");
          break;
        } else {
          expect_block_end();
          break;
        }
      }
    } else if (word == "for") {
      n->kind = Node::Kind::kFor;
      n->targets.push_back(expect_name());
      while (is_op(",")) {
        next();
        n->targets.push_back(expect_name());
      }
      if (!is_name("in")) error_at(peek(), "expected 'in' in the for loop");
      next();
      n->expr = expression(false);
      if (is_name("if")) {
        next();
        n->filter = expression(false);
      }
      if (is_name("recursive")) error_at(peek(), "recursive for loops are not supported");
      expect_block_end();
      n->body = body({"else", "endfor"});
      if (is_name("else", 1)) {
        end_tag("else");
        n->else_body = body({"endfor"});
      }
      end_tag("endfor");
    } else if (word == "set") {
      std::string first = expect_name();
      if (is_op(".")) {
        next();
        n->target_attr = expect_name();
      }
      n->targets.push_back(first);
      while (n->target_attr.empty() && is_op(",")) {
        next();
        n->targets.push_back(expect_name());
      }
      if (is_op("=")) {
        next();
        n->kind = Node::Kind::kSet;
        n->expr = tuple_or_expression();
        expect_block_end();
      } else {
        // {% set x %}...{% endset %} (optionally {% set x | filter %}).
        n->kind = Node::Kind::kSetBlock;
        if (is_op("|")) n->filter = filters_on_placeholder(kw);
        expect_block_end();
        n->body = body({"endset"});
        end_tag("endset");
      }
    } else if (word == "macro") {
      n->kind = Node::Kind::kMacro;
      n->targets.push_back(expect_name());
      expect_op("(");
      while (!is_op(")")) {
        std::string param = expect_name();
        ExprPtr fallback;
        if (is_op("=")) {
          next();
          fallback = expression();
        }
        n->params.emplace_back(param, std::move(fallback));
        if (!is_op(",")) break;
        next();
      }
      expect_op(")");
      expect_block_end();
      n->body = body({"endmacro"});
      end_tag("endmacro");
    } else if (word == "break" || word == "continue") {
      n->kind = word == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      expect_block_end();
    } else if (word == "filter") {
      n->kind = Node::Kind::kFilterBlock;
      n->filter = filters_on_placeholder(kw, false);
      expect_block_end();
      n->body = body({"endfilter"});
      end_tag("endfilter");
    } else if (word == "generation") {
      // Hugging Face's AIChatTemplateExtension: marks assistant text; renders its body unchanged.
      n->kind = Node::Kind::kScope;
      expect_block_end();
      n->body = body({"endgeneration"});
      end_tag("endgeneration");
    } else {
      error_at(kw, "unknown statement '" + word + "'");
    }
    return n;
  }

  // `| f(args) | g` applied to a placeholder literal the evaluator replaces with the block text.
  ExprPtr filters_on_placeholder(const Token& at, bool leading_pipe = true) {
    auto placeholder = std::make_unique<Expr>();
    placeholder->line = at.line;
    placeholder->column = at.column;
    ExprPtr node = std::move(placeholder);
    if (!leading_pipe) node = filter(std::move(node));
    while (is_op("|")) {
      next();
      node = filter(std::move(node));
    }
    return node;
  }

  ExprPtr make(Expr::Kind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }

  // `a, b` at statement level is a tuple (set x = 1, 2).
  ExprPtr tuple_or_expression() {
    const Token& at = peek();
    ExprPtr first = expression();
    if (!is_op(",")) return first;
    auto tuple = make(Expr::Kind::kTuple, at);
    tuple->items.push_back(std::move(first));
    while (is_op(",")) {
      next();
      if (peek().type == T::kBlockEnd) break;
      tuple->items.push_back(expression());
    }
    return tuple;
  }

  ExprPtr expression(bool with_condition = true) {
    enter(peek());
    Leave leave{depth_};
    const Token& at = peek();
    ExprPtr e = or_expr();
    if (with_condition && is_name("if")) {
      next();
      auto c = make(Expr::Kind::kCondition, at);
      c->items.push_back(std::move(e));
      c->items.push_back(or_expr());
      if (is_name("else")) {
        next();
        c->items.push_back(expression());
      } else {
        c->items.push_back(nullptr);
      }
      return c;
    }
    return e;
  }

  ExprPtr binary(ExprPtr left, const std::string& op, ExprPtr right, const Token& at) {
    auto b = make(Expr::Kind::kBinary, at);
    b->name = op;
    b->items.push_back(std::move(left));
    b->items.push_back(std::move(right));
    return b;
  }

  ExprPtr or_expr() {
    ExprPtr left = and_expr();
    while (is_name("or")) {
      const Token& at = next();
      left = binary(std::move(left), "or", and_expr(), at);
    }
    return left;
  }
  ExprPtr and_expr() {
    ExprPtr left = not_expr();
    while (is_name("and")) {
      const Token& at = next();
      left = binary(std::move(left), "and", not_expr(), at);
    }
    return left;
  }
  ExprPtr not_expr() {
    if (is_name("not")) {
      const Token& at = next();
      enter(at);
      Leave leave{depth_};
      auto u = make(Expr::Kind::kUnary, at);
      u->name = "not";
      u->items.push_back(not_expr());
      return u;
    }
    return compare();
  }
  ExprPtr compare() {
    const Token& at = peek();
    ExprPtr first = math1();
    ExprPtr chain;
    for (;;) {
      std::string op;
      if (peek().type == T::kOp && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                    peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        next();
        next();
        op = "not in";
      } else {
        break;
      }
      if (!chain) {
        chain = make(Expr::Kind::kCompare, at);
        chain->items.push_back(std::move(first));
      }
      chain->ops.push_back(op);
      chain->items.push_back(math1());
    }
    return chain ? std::move(chain) : std::move(first);
  }
  ExprPtr math1() {
    ExprPtr left = concat();
    while (is_op("+") || is_op("-")) {
      const Token& at = next();
      left = binary(std::move(left), at.text, concat(), at);
    }
    return left;
  }
  ExprPtr concat() {
    ExprPtr left = math2();
    while (is_op("~")) {
      const Token& at = next();
      left = binary(std::move(left), "~", math2(), at);
    }
    return left;
  }
  ExprPtr math2() {
    ExprPtr left = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = next();
      left = binary(std::move(left), at.text, power(), at);
    }
    return left;
  }
  ExprPtr power() {
    ExprPtr left = unary(true);
    while (is_op("**")) {
      const Token& at = next();
      left = binary(std::move(left), "**", unary(true), at);
    }
    return left;
  }
  ExprPtr unary(bool with_filter) {
    const Token& at = peek();
    enter(at);
    Leave leave{depth_};
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      next();
      node = make(Expr::Kind::kUnary, at);
      node->name = at.text;
      node->items.push_back(unary(false));
    } else {
      node = primary();
    }
    node = postfix(std::move(node));
    if (with_filter) node = filter_chain(std::move(node));
    return node;
  }

  ExprPtr primary() {
    const Token& t = peek();
    switch (t.type) {
      case T::kName: {
        next();
        auto e = make(Expr::Kind::kLiteral, t);
        if (t.text == "true" || t.text == "True") e->value = Value(true);
        else if (t.text == "false" || t.text == "False") e->value = Value(false);
        else if (t.text == "none" || t.text == "None") e->value = Value::none();
        else {
          e->kind = Expr::Kind::kName;
          e->name = t.text;
        }
        return e;
      }
      case T::kString: {
        next();
        std::string s = t.text;
        while (peek().type == T::kString) s += next().text;  // adjacent literals concatenate
        auto e = make(Expr::Kind::kLiteral, t);
        e->value = Value(std::move(s));
        return e;
      }
      case T::kInt: {
        next();
        auto e = make(Expr::Kind::kLiteral, t);
        int64_t v = 0;
        for (char c : t.text) {
          if (v > (INT64_MAX - 9) / 10) error_at(t, "integer literal too large");
          v = v * 10 + (c - '0');
        }
        e->value = Value(v);
        return e;
      }
      case T::kFloat: {
        next();
        auto e = make(Expr::Kind::kLiteral, t);
        e->value = Value(std::strtod(t.text.c_str(), nullptr));
        return e;
      }
      case T::kOp: {
        if (t.text == "(") {
          next();
          if (is_op(")")) {
            next();
            return make(Expr::Kind::kTuple, t);
          }
          ExprPtr first = expression();
          if (is_op(")")) {
            next();
            return first;
          }
          auto tuple = make(Expr::Kind::kTuple, t);
          tuple->items.push_back(std::move(first));
          while (is_op(",")) {
            next();
            if (is_op(")")) break;
            tuple->items.push_back(expression());
          }
          expect_op(")");
          return tuple;
        }
        if (t.text == "[") {
          next();
          auto list = make(Expr::Kind::kList, t);
          while (!is_op("]")) {
            list->items.push_back(expression());
            if (!is_op(",")) break;
            next();
          }
          expect_op("]");
          return list;
        }
        if (t.text == "{") {
          next();
          auto dict = make(Expr::Kind::kDict, t);
          while (!is_op("}")) {
            dict->items.push_back(expression());
            expect_op(":");
            dict->items.push_back(expression());
            if (!is_op(",")) break;
            next();
          }
          expect_op("}");
          return dict;
        }
        break;
      }
      default: break;
    }
    error_at(t, "unexpected " + describe(t));
  }

  ExprPtr postfix(ExprPtr node) {
    for (;;) {
      const Token& at = peek();
      if (is_op(".")) {
        next();
        const Token& name = peek();
        auto e = make(Expr::Kind::kAttr, at);
        if (name.type == T::kName) {
          e->name = next().text;
        } else if (name.type == T::kInt) {
          // x.0 is x[0] in jinja2.
          e->kind = Expr::Kind::kIndex;
          auto index = make(Expr::Kind::kLiteral, name);
          index->value = Value(static_cast<int64_t>(std::strtoll(next().text.c_str(), nullptr, 10)));
          e->items.push_back(std::move(node));
          e->items.push_back(std::move(index));
          node = std::move(e);
          continue;
        } else {
          error_at(name, "expected an attribute name after '.'");
        }
        e->items.push_back(std::move(node));
        node = std::move(e);
      } else if (is_op("[")) {
        next();
        ExprPtr parts[3];
        bool slice = false;
        for (int i = 0; i < 3; ++i) {
          if (!is_op(":") && !is_op("]")) parts[i] = expression();
          if (i < 2 && is_op(":")) {
            next();
            slice = true;
          } else {
            break;
          }
        }
        expect_op("]");
        auto e = make(slice ? Expr::Kind::kSlice : Expr::Kind::kIndex, at);
        e->items.push_back(std::move(node));
        if (!slice && !parts[0]) error_at(at, "empty subscript");
        e->items.push_back(std::move(parts[0]));
        if (slice) {
          e->items.push_back(std::move(parts[1]));
          e->items.push_back(std::move(parts[2]));
        }
        node = std::move(e);
      } else if (is_op("(")) {
        node = call(std::move(node));
      } else {
        return node;
      }
    }
  }

  // Parses `( args )` into e->items (after items[0]) and e->keywords.
  void call_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (peek().type == T::kName && is_op("=", 1)) {
        std::string key = next().text;
        next();
        e.keywords.emplace_back(key, expression());
      } else {
        if (!e.keywords.empty()) error_at(peek(), "positional argument after a keyword argument");
        e.items.push_back(expression());
      }
      if (!is_op(",")) break;
      next();
    }
    expect_op(")");
  }
  ExprPtr call(ExprPtr callee) {
    auto e = make(Expr::Kind::kCall, peek());
    e->items.push_back(std::move(callee));
    call_args(*e);
    return e;
  }

  ExprPtr filter(ExprPtr node) {
    const Token& at = peek();
    std::string name = expect_name();
    while (is_op(".")) {
      next();
      name += "." + expect_name();
    }
    auto e = make(Expr::Kind::kFilter, at);
    e->name = name;
    e->items.push_back(std::move(node));
    if (is_op("(")) call_args(*e);
    return e;
  }

  ExprPtr filter_chain(ExprPtr node) {
    for (;;) {
      if (is_op("|")) {
        next();
        node = filter(std::move(node));
      } else if (is_name("is")) {
        const Token& at = next();
        auto e = make(Expr::Kind::kTest, at);
        if (is_name("not")) {
          next();
          e->negated = true;
        }
        const Token& name_token = peek();
        std::string name;
        // Tests named like keywords or operators: `is none`, `is true`, `is ==`.
        if (name_token.type == T::kName) {
          name = next().text;
        } else if (name_token.type == T::kOp && (name_token.text == "==" || name_token.text == "!=" || name_token.text == "<" ||
                                                 name_token.text == ">" || name_token.text == "<=" || name_token.text == ">=")) {
          name = next().text;
        } else {
          error_at(name_token, "expected a test name after 'is'");
        }
        e->name = name;
        e->items.push_back(std::move(node));
        if (is_op("(")) {
          call_args(*e);
        } else {
          const Token& arg = peek();
          const bool starts_primary = arg.type == T::kName || arg.type == T::kString || arg.type == T::kInt ||
                                      arg.type == T::kFloat || (arg.type == T::kOp && (arg.text == "(" || arg.text == "[" || arg.text == "{"));
          if (starts_primary && !is_name("else") && !is_name("or") && !is_name("and")) {
            if (is_name("is")) error_at(arg, "tests cannot be chained with 'is'");
            e->items.push_back(postfix(primary()));
          }
        }
        node = std::move(e);
      } else if (is_op("(")) {
        node = call(std::move(node));
      } else {
        return node;
      }
    }
  }

  const std::vector<Token>& t_;
  const Options& options_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

std::shared_ptr<Program> parse_program(const std::vector<Token>& tokens, const Options& options) {
  return Parser(tokens, options).run();
}

}  // namespace frugal::jinja
