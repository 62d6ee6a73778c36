// A Jinja subset interpreter for chat templates (tokenizer.chat_template): lexer, parser to an
// AST, tree-walking evaluator with Python value semantics, as Hugging Face renders templates
// (jinja2 with trim_blocks, lstrip_blocks, loop controls, a json.dumps-style tojson).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace frugal::jinja {

class Value;
struct Object;
struct CallArgs;
class Interpreter;

using Array = std::vector<Value>;
// Builtins and macros. A callable throws jinja::Error (caught by Template::render) on bad input.
using Function = std::function<Value(Interpreter&, CallArgs&)>;

// A Python-like value: Undefined (a missing name or key), None, bool, int, float, str, list,
// dict (insertion-ordered, string keys) or a callable. Lists and dicts are shared by reference,
// as in Python, so namespace() attributes and list.append() are visible to every holder.
class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kFunction };

  Value() = default;  // Undefined
  static Value none() { Value v; v.kind_ = Kind::kNone; return v; }
  Value(bool b) : kind_(Kind::kBool), int_(b) {}  // NOLINT: literal values convert implicitly
  Value(int v) : kind_(Kind::kInt), int_(v) {}  // NOLINT
  Value(int64_t v) : kind_(Kind::kInt), int_(v) {}  // NOLINT
  Value(double v) : kind_(Kind::kFloat), float_(v) {}  // NOLINT
  Value(std::string s) : kind_(Kind::kString), string_(std::make_shared<std::string>(std::move(s))) {}  // NOLINT
  Value(const char* s) : Value(std::string(s)) {}  // NOLINT
  static Value array(Array items = {});
  // markupsafe's Markup (from |safe, |escape): text that `+` with a plain string HTML-escapes the
  // plain side of, as jinja2 does even with autoescape off.
  static Value markup(std::string s) {
    Value v(std::move(s));
    v.markup_ = true;
    return v;
  }
  bool is_markup() const { return markup_; }
  bool is_tuple() const { return tuple_; }
  // A tuple is a list that prints as (a, b): dict.items() pairs and (a, b) literals.
  static Value tuple(Array items);
  static Value object();
  static Value function(std::string name, Function f);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return kind_ == Kind::kFloat ? static_cast<int64_t>(float_) : int_; }
  double as_float() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return *string_; }
  Array& as_array() const { return *array_; }
  Object& as_object() const { return *object_; }
  const Function& as_function() const { return *function_; }
  const std::string& function_name() const { return *string_; }

  // Python truthiness: empty str/list/dict, 0, None and Undefined are false.
  bool truthy() const;
  // Python str(): what {{ value }} prints (Undefined prints nothing).
  std::string str() const;
  // Python repr(): strings quoted, lists and dicts as Python writes them.
  std::string repr() const;
  // json.dumps(value, ensure_ascii=False, indent=indent) as Hugging Face's tojson filter calls it.
  // Undefined and callables are not serialisable: returns false and leaves `out` partial.
  bool to_json(std::string& out, int indent = -1, int depth = 0) const;
  // Python == (containers nested deeper than 256 levels compare unequal rather than recurse on).
  bool equals(const Value& other, int depth = 0) const;
  // Nesting of lists and dicts: 0 for scalars, 1 + the deepest element otherwise (as recorded when
  // the container was built; the evaluator bounds it so that no value is too deep to destroy).
  int depth() const { return depth_; }
  // Python len() for str (code points), list, dict; -1 for other kinds.
  int64_t length() const;

  // dict helpers (nullptr / no-op when not a dict). Keys compare with Python == (1 == 1.0).
  const Value* get(const std::string& key) const;
  const Value* get(const char* key) const { return get(std::string(key)); }
  const Value* get(const Value& key) const;
  void set(const std::string& key, Value value) { set(Value(key), std::move(value)); }
  void set(const char* key, Value value) { set(Value(key), std::move(value)); }
  void set(const Value& key, Value value);
  // list helper.
  void push_back(Value value);

  // Parses JSON text (RFC 8259) into lists/dicts/strings/numbers/bools/None. Nesting is bounded.
  static Result<Value> from_json(const std::string& text);

 private:
  Kind kind_ = Kind::kUndefined;
  bool tuple_ = false;
  bool markup_ = false;
  int depth_ = 0;
  int64_t int_ = 0;
  double float_ = 0;
  std::shared_ptr<std::string> string_;  // also the function's name
  std::shared_ptr<Array> array_;
  std::shared_ptr<Object> object_;
  std::shared_ptr<Function> function_;
};

// dict: insertion-ordered pairs (Python dicts keep insertion order; tojson and items() show it).
// Keys are usually strings, but template literals may use numbers ({4096: 512}).
// A namespace() is a dict whose attributes `set ns.x = ...` may assign.
struct Object {
  std::vector<std::pair<Value, Value>> items;
  bool is_namespace = false;
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The i-th positional argument or the keyword `name`, else `fallback`.
  Value get(size_t i, const std::string& name, Value fallback = Value()) const;
};

// What rendering stops at: a template error with its line and column (raise_exception included).
struct Error {
  std::string message;
  int line = 0;
  int column = 0;
};

struct Options {
  bool trim_blocks = true;    // drop the first newline after a block tag (Hugging Face's setting)
  bool lstrip_blocks = true;  // strip spaces and tabs before a block tag on its own line
  size_t max_output = 16u << 20;  // bytes of rendered text before rendering stops with an error
  int64_t max_steps = 20'000'000;  // evaluation steps (loop iterations, calls) before an error
  int max_depth = 200;  // nesting of expressions, blocks and macro calls
};

struct Program;  // the parsed AST (jinja_internal.h)

class Template {
 public:
  // Parses `source`; a syntax error is a Status naming line and column.
  static Result<Template> parse(const std::string& source, Options options = {});
  // Renders with `globals` (a dict: messages, add_generation_prompt, bos_token, ...). The builtins
  // range, namespace, dict, raise_exception and strftime_now are always there.
  Result<std::string> render(const Value& globals) const;

 private:
  std::shared_ptr<const Program> program_;
  Options options_;
};

}  // namespace frugal::jinja
