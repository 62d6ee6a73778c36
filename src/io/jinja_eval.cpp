// The Jinja evaluator: walks the AST with jinja2's scoping (a for-loop body and a macro call get
// their own frame, if-blocks do not), Python operators, jinja2's filters and tests, the string /
// dict methods Hugging Face's ImmutableSandboxedEnvironment allows, and bounded work.
#include <algorithm>
#include <cmath>
#include <ctime>
#include <map>
#include <set>

#include "io/jinja_internal.h"

namespace frugal::jinja {

namespace {

const std::set<std::string>& filter_names() {
  static const std::set<std::string> names = {
      "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
      "forceescape", "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min",
      "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum",
      "title", "tojson", "trim", "unique", "upper", "wordcount"};
  return names;
}

const std::set<std::string>& test_names() {
  static const std::set<std::string> names = {
      "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false", "float", "ge",
      "gt", "in", "integer", "iterable", "le", "lower", "lt", "mapping", "ne", "none", "number", "odd", "sameas",
      "sequence", "string", "true", "undefined", "upper", "==", "!=", "<", "<=", ">", ">="};
  return names;
}

// Code points of a UTF-8 string, each as its own byte string (Python indexes str by code point).
std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = 1;
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0xF0) n = 4;
    else if (c >= 0xE0) n = 3;
    else if (c >= 0xC0) n = 2;
    n = std::min(n, s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

bool py_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string ascii_upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string ascii_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string strip(const std::string& s, const Value& chars, bool left, bool right) {
  auto drop = [&](char c) {
    if (chars.is_string()) return chars.as_string().find(c) != std::string::npos;
    return py_space(static_cast<unsigned char>(c));
  };
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && drop(s[b])) ++b;
  if (right)
    while (e > b && drop(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count, size_t limit) {
  if (count == 0) return s;
  std::string out;
  if (from.empty()) {
    // Python inserts `to` between every code point and at both ends.
    const auto cps = code_points(s);
    int64_t done = 0;
    for (const auto& cp : cps) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      out += cp;
      if (out.size() > limit) return out;
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  for (;;) {
    const size_t at = s.find(from, pos);
    if (at == std::string::npos || (count >= 0 && done >= count)) break;
    out.append(s, pos, at - pos);
    out += to;
    pos = at + from.size();
    ++done;
    if (out.size() > limit) return out;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// Python str.split(sep=None, maxsplit=-1).
Value split(const std::string& s, const Value& sep, int64_t maxsplit) {
  Value out = Value::array();
  if (!sep.is_string()) {
    size_t i = 0;
    int64_t splits = 0;
    while (i < s.size()) {
      while (i < s.size() && py_space(static_cast<unsigned char>(s[i]))) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && splits >= maxsplit) {
        size_t e = s.size();
        while (e > i && py_space(static_cast<unsigned char>(s[e - 1]))) --e;
        out.push_back(s.substr(i, e - i));
        break;
      }
      size_t j = i;
      while (j < s.size() && !py_space(static_cast<unsigned char>(s[j]))) ++j;
      out.push_back(s.substr(i, j - i));
      ++splits;
      i = j;
    }
    return out;
  }
  const std::string& d = sep.as_string();
  size_t pos = 0;
  int64_t splits = 0;
  for (;;) {
    const size_t at = s.find(d, pos);
    if (at == std::string::npos || (maxsplit >= 0 && splits >= maxsplit)) break;
    out.push_back(s.substr(pos, at - pos));
    pos = at + d.size();
    ++splits;
  }
  out.push_back(s.substr(pos));
  return out;
}

std::string kind_name(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return "undefined";
    case Value::Kind::kNone: return "NoneType";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: return "int";
    case Value::Kind::kFloat: return "float";
    case Value::Kind::kString: return "str";
    case Value::Kind::kArray: return "list";
    case Value::Kind::kObject: return "dict";
    case Value::Kind::kFunction: return "function";
  }
  return "?";
}

struct Frame {
  std::vector<std::pair<std::string, Value>> vars;
  std::shared_ptr<Frame> parent;
  Value* find(const std::string& name) {
    for (Frame* f = this; f; f = f->parent.get())
      for (auto& [k, v] : f->vars)
        if (k == name) return &v;
    return nullptr;
  }
  void set(const std::string& name, Value value) {
    for (auto& [k, v] : vars) {
      if (k == name) {
        v = std::move(value);
        return;
      }
    }
    vars.emplace_back(name, std::move(value));
  }
};

enum class Flow { kNormal, kBreak, kContinue };

}  // namespace

class Interpreter {
 public:
  Interpreter(const Options& options) : options_(options) {}

  std::string render(const Program& program, const Value& globals) {
    auto frame = std::make_shared<Frame>();
    install_builtins(*frame);
    if (globals.is_object())
      for (const auto& [k, v] : globals.as_object().items) frame->set(k.str(), v);
    globals_ = frame;
    std::string out;
    if (exec(program.body, frame, out) != Flow::kNormal) fail(0, 0, "'break' or 'continue' outside a for loop");
    return out;
  }

 private:
  struct Guard {
    int& depth;
    ~Guard() { --depth; }
  };
  Guard enter(int line, int column) {
    if (++depth_ > options_.max_depth * 4) fail(line, column, "template recursion deeper than the limit");
    step(line, column);
    return Guard{depth_};
  }
  void charge(int64_t steps, int line, int column) {
    steps_ += steps;
    step(line, column);
  }
  void step(int line, int column) {
    if (++steps_ > options_.max_steps) fail(line, column, "template takes more than " + std::to_string(options_.max_steps) + " steps");
  }
  void check_size(size_t size, int line, int column) const {
    if (size > options_.max_output) fail(line, column, "template output larger than " + std::to_string(options_.max_output) + " bytes");
  }
  void emit(std::string& out, const std::string& text, int line, int column) const {
    out += text;
    check_size(out.size(), line, column);
  }

  // ---- statements ----

  Flow exec(const Body& body, const std::shared_ptr<Frame>& frame, std::string& out) {
    for (const auto& node : body) {
      Flow f = exec(*node, frame, out);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Flow exec(const Node& n, const std::shared_ptr<Frame>& frame, std::string& out) {
    Guard g = enter(n.line, n.column);
    switch (n.kind) {
      case Node::Kind::kText: emit(out, n.text, n.line, n.column); return Flow::kNormal;
      case Node::Kind::kOutput: emit(out, eval(*n.expr, frame).str(), n.line, n.column); return Flow::kNormal;
      case Node::Kind::kIf:
        for (size_t i = 0; i < n.bodies.size(); ++i) {
          if (i >= n.conditions.size() || eval(*n.conditions[i], frame).truthy()) return exec(n.bodies[i], frame, out);
        }
        return Flow::kNormal;
      case Node::Kind::kFor: return exec_for(n, frame, out);
      case Node::Kind::kSet: {
        Value v = eval(*n.expr, frame);
        assign(n, frame, std::move(v));
        return Flow::kNormal;
      }
      case Node::Kind::kSetBlock: {
        std::string text;
        Flow f = exec(n.body, frame, text);
        Value v(std::move(text));
        if (n.filter) v = apply_filters_to(*n.filter, std::move(v), frame);
        assign(n, frame, std::move(v));
        return f;
      }
      case Node::Kind::kMacro: frame->set(n.targets[0], make_macro(n, frame)); return Flow::kNormal;
      case Node::Kind::kBreak: return Flow::kBreak;
      case Node::Kind::kContinue: return Flow::kContinue;
      case Node::Kind::kFilterBlock: {
        std::string text;
        Flow f = exec(n.body, frame, text);
        emit(out, apply_filters_to(*n.filter, Value(std::move(text)), frame).str(), n.line, n.column);
        return f;
      }
      case Node::Kind::kScope: return exec(n.body, frame, out);
    }
    return Flow::kNormal;
  }

  // Evaluates a filter chain whose innermost operand is the placeholder, with `input` in its place.
  Value apply_filters_to(const Expr& chain, Value input, const std::shared_ptr<Frame>& frame) {
    if (chain.kind != Expr::Kind::kFilter) return input;
    Value inner = apply_filters_to(*chain.items[0], std::move(input), frame);
    CallArgs args = call_args(chain, frame, 1);
    return filter(chain.name, inner, args, chain);
  }

  void assign(const Node& n, const std::shared_ptr<Frame>& frame, Value v) {
    if (!n.target_attr.empty()) {
      Value* ns = frame->find(n.targets[0]);
      if (!ns || !ns->is_object() || !ns->as_object().is_namespace)
        fail(n.line, n.column, "cannot assign attribute on non-namespace object '" + n.targets[0] + "'");
      // A namespace holding itself would be a reference cycle (leaked, and endless to print).
      if (holds(v, &ns->as_object(), 0, n)) fail(n.line, n.column, "a namespace cannot contain itself");
      ns->set(n.target_attr, std::move(v));
      return;
    }
    if (n.targets.size() == 1) {
      frame->set(n.targets[0], std::move(v));
      return;
    }
    unpack(n.targets, v, frame, n.line, n.column);
  }

  bool holds(const Value& v, const Object* target, int depth, const Node& n) {
    if (depth > options_.max_depth) return false;
    if (v.is_array()) {
      charge(v.length() / 16, n.line, n.column);
      for (const Value& item : v.as_array())
        if (holds(item, target, depth + 1, n)) return true;
    } else if (v.is_object()) {
      if (&v.as_object() == target) return true;
      charge(v.length() / 16, n.line, n.column);
      for (const auto& [k, item] : v.as_object().items)
        if (holds(item, target, depth + 1, n)) return true;
    }
    return false;
  }

  void unpack(const std::vector<std::string>& targets, const Value& v, const std::shared_ptr<Frame>& frame, int line, int column) {
    std::vector<Value> items = iterate(v, line, column);
    if (items.size() != targets.size())
      fail(line, column, "cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) + " names");
    for (size_t i = 0; i < targets.size(); ++i) frame->set(targets[i], items[i]);
  }

  Flow exec_for(const Node& n, const std::shared_ptr<Frame>& frame, std::string& out) {
    const Value iterable = eval(*n.expr, frame);
    std::vector<Value> items = iterate(iterable, n.expr->line, n.expr->column);
    if (n.filter) {
      // `for x in xs if cond`: the loop variables count only the items that pass.
      std::vector<Value> kept;
      for (const Value& item : items) {
        step(n.line, n.column);
        auto scope = std::make_shared<Frame>();
        scope->parent = frame;
        bind_targets(n, item, scope);
        if (eval(*n.filter, scope).truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (!n.else_body.empty()) return exec(n.else_body, frame, out);
      return Flow::kNormal;
    }
    const int64_t length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < length; ++i) {
      step(n.line, n.column);
      auto scope = std::make_shared<Frame>();
      scope->parent = frame;
      bind_targets(n, items[static_cast<size_t>(i)], scope);
      Value loop = Value::object();
      loop.set("index", Value(i + 1));
      loop.set("index0", Value(i));
      loop.set("revindex", Value(length - i));
      loop.set("revindex0", Value(length - i - 1));
      loop.set("first", Value(i == 0));
      loop.set("last", Value(i == length - 1));
      loop.set("length", Value(length));
      loop.set("depth", Value(1));
      loop.set("depth0", Value(0));
      loop.set("previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value());
      loop.set("nextitem", i + 1 < length ? items[static_cast<size_t>(i + 1)] : Value());
      loop.set("cycle", Value::function("cycle", [i](Interpreter&, CallArgs& args) -> Value {
                 if (args.positional.empty()) fail(0, 0, "loop.cycle() needs at least one value");
                 return args.positional[static_cast<size_t>(i) % args.positional.size()];
               }));
      scope->set("loop", loop);
      Flow f = exec(n.body, scope, out);
      if (f == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  void bind_targets(const Node& n, const Value& item, const std::shared_ptr<Frame>& scope) {
    if (n.targets.size() == 1) scope->set(n.targets[0], item);
    else unpack(n.targets, item, scope, n.line, n.column);
  }

  Value make_macro(const Node& n, const std::shared_ptr<Frame>& defined_in) {
    const Node* node = &n;
    std::weak_ptr<Frame> weak = defined_in;  // a frame holding its own macro must not cycle
    return Value::function(n.targets[0], [node, weak](Interpreter& in, CallArgs& args) -> Value {
      auto scope = std::make_shared<Frame>();
      scope->parent = weak.lock();
      if (!scope->parent) scope->parent = in.globals_;
      if (args.positional.size() > node->params.size())
        fail(node->line, node->column, "macro '" + node->targets[0] + "' takes " + std::to_string(node->params.size()) + " arguments");
      for (size_t i = 0; i < node->params.size(); ++i) {
        const auto& [name, fallback] = node->params[i];
        Value v = args.get(i, name);
        if (v.is_undefined() && fallback && i >= args.positional.size()) v = in.eval(*fallback, scope);
        scope->set(name, v);
      }
      for (const auto& keyword : args.keyword) {
        const std::string& k = keyword.first;
        const bool known = std::any_of(node->params.begin(), node->params.end(), [&](const auto& p) { return p.first == k; });
        if (!known) fail(node->line, node->column, "macro '" + node->targets[0] + "' takes no keyword argument '" + k + "'");
      }
      std::string out;
      in.exec(node->body, scope, out);
      return Value(std::move(out));
    });
  }

  // ---- expressions ----

  std::vector<Value> iterate(const Value& v, int line, int column) {
    switch (v.kind()) {
      case Value::Kind::kUndefined: return {};
      case Value::Kind::kArray: return v.as_array();
      case Value::Kind::kObject: {
        std::vector<Value> keys;
        for (const auto& [k, _] : v.as_object().items) keys.push_back(k);
        return keys;
      }
      case Value::Kind::kString: {
        std::vector<Value> chars;
        for (auto& cp : code_points(v.as_string())) chars.emplace_back(std::move(cp));
        return chars;
      }
      default: fail(line, column, "'" + kind_name(v) + "' object is not iterable");
    }
  }

  Value eval(const Expr& e, const std::shared_ptr<Frame>& frame) {
    Guard g = enter(e.line, e.column);
    Value v = eval_inner(e, frame);
    // Work and memory are charged by size: building strings and lists costs steps too, so a
    // loop that doubles a string or re-concatenates a growing list ends early with an error.
    if (v.is_string()) {
      check_size(v.as_string().size(), e.line, e.column);
      charge(static_cast<int64_t>(v.as_string().size() / 64), e.line, e.column);
    } else if (v.is_array() || v.is_object()) {
      charge(v.length() / 16, e.line, e.column);
      // Deeply nested values would recurse in str(), == and their own destruction.
      if (v.depth() > options_.max_depth) fail(e.line, e.column, "value nested deeper than " + std::to_string(options_.max_depth) + " levels");
    }
    return v;
  }

  CallArgs call_args(const Expr& e, const std::shared_ptr<Frame>& frame, size_t first) {
    CallArgs args;
    for (size_t i = first; i < e.items.size(); ++i) args.positional.push_back(eval(*e.items[i], frame));
    for (const auto& [k, v] : e.keywords) args.keyword.emplace_back(k, eval(*v, frame));
    return args;
  }

  Value eval_inner(const Expr& e, const std::shared_ptr<Frame>& frame) {
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.value;
      case Expr::Kind::kName: {
        const Value* v = frame->find(e.name);
        return v ? *v : Value();
      }
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        Array items;
        for (const auto& item : e.items) items.push_back(eval(*item, frame));
        return e.kind == Expr::Kind::kTuple ? Value::tuple(std::move(items)) : Value::array(std::move(items));
      }
      case Expr::Kind::kDict: {
        Value dict = Value::object();
        for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
          const Value key = eval(*e.items[i], frame);
          dict.set(key, eval(*e.items[i + 1], frame));
        }
        return dict;
      }
      case Expr::Kind::kAttr: {
        const Value obj = eval(*e.items[0], frame);
        if (obj.is_undefined()) fail(e.line, e.column, "cannot read attribute '" + e.name + "' of an undefined value");
        return attribute(obj, e.name, e);
      }
      case Expr::Kind::kIndex: {
        const Value obj = eval(*e.items[0], frame);
        const Value key = eval(*e.items[1], frame);
        if (obj.is_undefined()) fail(e.line, e.column, "cannot index an undefined value with " + key.repr());
        return index(obj, key, e);
      }
      case Expr::Kind::kSlice: return slice(e, frame);
      case Expr::Kind::kCall: {
        const Value callee = eval(*e.items[0], frame);
        CallArgs args = call_args(e, frame, 1);
        if (!callee.is_function()) {
          std::string what = e.items[0]->kind == Expr::Kind::kName ? "'" + e.items[0]->name + "'" : "the value";
          fail(e.line, e.column, callee.is_undefined() ? what + " is undefined" : what + " is not callable");
        }
        step(e.line, e.column);
        try {
          return callee.as_function()(*this, args);
        } catch (JinjaException& ex) {
          if (ex.error.line == 0) {
            ex.error.line = e.line;
            ex.error.column = e.column;
          }
          throw;
        }
      }
      case Expr::Kind::kFilter: {
        const Value input = eval(*e.items[0], frame);
        CallArgs args = call_args(e, frame, 1);
        return filter(e.name, input, args, e);
      }
      case Expr::Kind::kTest: {
        const Value input = eval(*e.items[0], frame);
        CallArgs args = call_args(e, frame, 1);
        return Value(test(e.name, input, args, e) != e.negated);
      }
      case Expr::Kind::kUnary: {
        const Value v = eval(*e.items[0], frame);
        if (e.name == "not") return Value(!v.truthy());
        if (!v.is_number()) fail(e.line, e.column, "bad operand type for unary " + e.name + ": '" + kind_name(v) + "'");
        if (e.name == "+") return v.is_bool() ? Value(v.as_int()) : v;
        return v.is_float() ? Value(-v.as_float()) : Value(-v.as_int());
      }
      case Expr::Kind::kBinary: {
        if (e.name == "and") {
          Value left = eval(*e.items[0], frame);
          return left.truthy() ? eval(*e.items[1], frame) : left;
        }
        if (e.name == "or") {
          Value left = eval(*e.items[0], frame);
          return left.truthy() ? left : eval(*e.items[1], frame);
        }
        const Value left = eval(*e.items[0], frame);
        const Value right = eval(*e.items[1], frame);
        return binary(e.name, left, right, e);
      }
      case Expr::Kind::kCompare: {
        Value left = eval(*e.items[0], frame);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.items[i + 1], frame);
          if (!compare(e.ops[i], left, right, e)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case Expr::Kind::kCondition: {
        if (eval(*e.items[1], frame).truthy()) return eval(*e.items[0], frame);
        return e.items[2] ? eval(*e.items[2], frame) : Value();
      }
    }
    return Value();
  }

  bool contains(const Value& container, const Value& item, const Expr& e) {
    charge(std::max<int64_t>(container.length(), 0) / 16, e.line, e.column);
    switch (container.kind()) {
      case Value::Kind::kString:
        if (!item.is_string()) fail(e.line, e.column, "'in <string>' requires string as left operand, not " + kind_name(item));
        return container.as_string().find(item.as_string()) != std::string::npos;
      case Value::Kind::kArray:
        return std::any_of(container.as_array().begin(), container.as_array().end(), [&](const Value& v) { return v.equals(item); });
      case Value::Kind::kObject: return container.get(item) != nullptr;
      case Value::Kind::kUndefined: return false;
      default: fail(e.line, e.column, "argument of type '" + kind_name(container) + "' is not iterable");
    }
  }

  bool compare(const std::string& op, const Value& a, const Value& b, const Expr& e) {
    if (op == "==") return a.equals(b);
    if (op == "!=") return !a.equals(b);
    if (op == "in") return contains(b, a, e);
    if (op == "not in") return !contains(b, a, e);
    int order = 0;
    if (a.is_number() && b.is_number()) {
      if (a.is_float() || b.is_float()) order = a.as_float() < b.as_float() ? -1 : (a.as_float() > b.as_float() ? 1 : 0);
      else order = a.as_int() < b.as_int() ? -1 : (a.as_int() > b.as_int() ? 1 : 0);
    } else if (a.is_string() && b.is_string()) {
      order = a.as_string().compare(b.as_string());
    } else if (a.is_array() && b.is_array()) {
      // Python compares sequences element by element, then by length.
      const Array& x = a.as_array();
      const Array& y = b.as_array();
      size_t i = 0;
      while (i < x.size() && i < y.size() && x[i].equals(y[i])) ++i;
      if (i < x.size() && i < y.size()) return compare(op, x[i], y[i], e);
      order = x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
    } else {
      fail(e.line, e.column, "'" + op + "' not supported between instances of '" + kind_name(a) + "' and '" + kind_name(b) + "'");
    }
    if (op == "<") return order < 0;
    if (op == ">") return order > 0;
    if (op == "<=") return order <= 0;
    return order >= 0;
  }

  Value binary(const std::string& op, const Value& a, const Value& b, const Expr& e) {
    if (op == "~") return Value(a.str() + b.str());
    auto unsupported = [&]() -> Value {
      fail(e.line, e.column, "unsupported operand types for " + op + ": '" + kind_name(a) + "' and '" + kind_name(b) + "'");
    };
    if (op == "%" && a.is_string()) return Value(percent_format(a.as_string(), b, e));
    if (a.is_undefined() || b.is_undefined()) fail(e.line, e.column, "undefined value used with '" + op + "'");
    if (op == "+") {
      if (a.is_string() && b.is_string()) {
        if (a.is_markup() || b.is_markup()) {
          // Markup.__add__/__radd__: the plain operand is escaped, the result is Markup.
          return Value::markup((a.is_markup() ? a.as_string() : html_escape(a.as_string())) +
                               (b.is_markup() ? b.as_string() : html_escape(b.as_string())));
        }
        return Value(a.as_string() + b.as_string());
      }
      if (a.is_array() && b.is_array()) {
        Array items = a.as_array();
        items.insert(items.end(), b.as_array().begin(), b.as_array().end());
        return Value::array(std::move(items));
      }
    }
    if (op == "*" && ((a.is_string() && b.is_int()) || (a.is_int() && b.is_string()))) {
      const std::string& s = a.is_string() ? a.as_string() : b.as_string();
      const int64_t n = a.is_string() ? b.as_int() : a.as_int();
      if (n > 0) check_size(s.size() * static_cast<size_t>(std::min<int64_t>(n, 1 << 30)), e.line, e.column);
      std::string out;
      for (int64_t i = 0; i < n; ++i) out += s;
      return Value(std::move(out));
    }
    if (op == "*" && ((a.is_array() && (b.is_int() || b.is_bool())) || ((a.is_int() || a.is_bool()) && b.is_array()))) {
      const Value& list = a.is_array() ? a : b;
      const int64_t n = a.is_array() ? b.as_int() : a.as_int();
      Array out;
      for (int64_t i = 0; i < n; ++i) {
        charge(list.length() + 1, e.line, e.column);
        out.insert(out.end(), list.as_array().begin(), list.as_array().end());
      }
      return Value::array(std::move(out));
    }
    if (op == "%" && a.is_string()) return Value(percent_format(a.as_string(), b, e));
    if (!a.is_number() || !b.is_number()) return unsupported();
    const bool floats = a.is_float() || b.is_float();
    if (op == "+") return floats ? Value(a.as_float() + b.as_float()) : Value(a.as_int() + b.as_int());
    if (op == "-") return floats ? Value(a.as_float() - b.as_float()) : Value(a.as_int() - b.as_int());
    if (op == "*") return floats ? Value(a.as_float() * b.as_float()) : Value(a.as_int() * b.as_int());
    if (op == "**") {
      if (!floats && b.as_int() >= 0) {
        int64_t r = 1;
        for (int64_t i = 0; i < std::min<int64_t>(b.as_int(), 64); ++i) r *= a.as_int();
        return Value(r);
      }
      return Value(std::pow(a.as_float(), b.as_float()));
    }
    if ((floats ? b.as_float() == 0 : b.as_int() == 0)) fail(e.line, e.column, "division by zero");
    if (op == "/") return Value(a.as_float() / b.as_float());
    if (op == "//") {
      if (floats) return Value(std::floor(a.as_float() / b.as_float()));
      const int64_t q = a.as_int() / b.as_int();
      return Value((a.as_int() % b.as_int() != 0 && ((a.as_int() < 0) != (b.as_int() < 0))) ? q - 1 : q);
    }
    if (op == "%") {
      if (floats) {
        const double r = std::fmod(a.as_float(), b.as_float());
        return Value(r != 0 && ((r < 0) != (b.as_float() < 0)) ? r + b.as_float() : r);
      }
      const int64_t r = a.as_int() % b.as_int();
      return Value(r != 0 && ((r < 0) != (b.as_int() < 0)) ? r + b.as_int() : r);
    }
    return unsupported();
  }

  // Python's `"%s ... %d" % args` for the conversions templates use.
  std::string percent_format(const std::string& fmt, const Value& args, const Expr& e) {
    // A tuple gives the arguments; any other value is one argument, and a list or dict (Python
    // treats them as mappings) may go unused without an error.
    std::vector<Value> values = args.is_tuple() ? args.as_array() : std::vector<Value>{args};
    const bool mapping = !args.is_tuple() && (args.is_array() || args.is_object() || args.is_undefined());
    std::string out;
    size_t next = 0;
    for (size_t i = 0; i < fmt.size(); ++i) {
      if (fmt[i] != '%') {
        out += fmt[i];
        continue;
      }
      if (++i >= fmt.size()) fail(e.line, e.column, "incomplete format");
      const char c = fmt[i];
      if (c == '%') {
        out += '%';
        continue;
      }
      if (next >= values.size()) fail(e.line, e.column, "not enough arguments for format string");
      const Value& v = values[next++];
      if (c == 's') out += v.str();
      else if (c == 'r') out += v.repr();
      else if (c == 'd' || c == 'i') out += std::to_string(v.as_int());
      else fail(e.line, e.column, std::string("unsupported format character '") + c + "'");
    }
    if (next < values.size() && !mapping) fail(e.line, e.column, "not all arguments converted during string formatting");
    return out;
  }

  Value index(const Value& obj, const Value& key, const Expr& e) {
    if (obj.is_array() || obj.is_string()) {
      if (key.is_int() || key.is_bool()) {
        if (obj.is_array()) {
          int64_t i = key.as_int();
          const int64_t n = static_cast<int64_t>(obj.as_array().size());
          if (i < 0) i += n;
          if (i < 0 || i >= n) return Value();
          return obj.as_array()[static_cast<size_t>(i)];
        }
        const auto cps = code_points(obj.as_string());
        int64_t i = key.as_int();
        const int64_t n = static_cast<int64_t>(cps.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value();
        return Value(cps[static_cast<size_t>(i)]);
      }
      if (key.is_string()) return attribute(obj, key.as_string(), e);
      return Value();
    }
    if (obj.is_object()) {
      if (const Value* v = obj.get(key)) return *v;
      if (key.is_string()) return attribute(obj, key.as_string(), e);
      return Value();
    }
    return Value();
  }

  Value slice(const Expr& e, const std::shared_ptr<Frame>& frame) {
    const Value obj = eval(*e.items[0], frame);
    Value parts[3];
    for (int i = 0; i < 3; ++i) {
      if (e.items[static_cast<size_t>(i) + 1]) parts[i] = eval(*e.items[static_cast<size_t>(i) + 1], frame);
      if (!parts[i].is_undefined() && !parts[i].is_none() && !parts[i].is_int())
        fail(e.line, e.column, "slice indices must be integers or None");
    }
    std::vector<Value> items;
    const bool is_string = obj.is_string();
    if (is_string) {
      for (auto& cp : code_points(obj.as_string())) items.emplace_back(std::move(cp));
    } else if (obj.is_array()) {
      items = obj.as_array();
    } else if (obj.is_undefined()) {
      fail(e.line, e.column, "cannot slice an undefined value");
    } else {
      return Value();  // jinja2: a failed subscript is undefined
    }
    const int64_t n = static_cast<int64_t>(items.size());
    const int64_t stepv = parts[2].is_int() ? parts[2].as_int() : 1;
    if (stepv == 0) fail(e.line, e.column, "slice step cannot be zero");
    // Python's slice.indices().
    auto clamp = [&](const Value& v, int64_t fallback) {
      if (!v.is_int()) return fallback;
      int64_t i = v.as_int();
      if (i < 0) {
        i += n;
        if (i < 0) i = stepv < 0 ? -1 : 0;
      } else if (i >= n) {
        i = stepv < 0 ? n - 1 : n;
      }
      return i;
    };
    const int64_t start = clamp(parts[0], stepv < 0 ? n - 1 : 0);
    const int64_t stop = clamp(parts[1], stepv < 0 ? -1 : n);
    std::vector<Value> picked;
    for (int64_t i = start; stepv > 0 ? i < stop : i > stop; i += stepv) picked.push_back(items[static_cast<size_t>(i)]);
    if (!is_string) return obj.is_tuple() ? Value::tuple(std::move(picked)) : Value::array(std::move(picked));
    std::string s;
    for (const Value& v : picked) s += v.as_string();
    return Value(std::move(s));
  }

  static Value method(const std::string& name, Function f) { return Value::function(name, std::move(f)); }

  // obj.name: methods of str/dict/list (those the immutable sandbox allows), then dict keys.
  Value attribute(const Value& obj, const std::string& name, const Expr& e) {
    if (obj.is_string()) {
      const std::string s = obj.as_string();
      return string_method(s, name, e);
    }
    if (obj.is_object()) {
      if (!obj.as_object().is_namespace) {
        if (name == "items" || name == "keys" || name == "values") {
          return method(name, [obj, name](Interpreter&, CallArgs&) -> Value {
            Value out = Value::array();
            for (const auto& [k, v] : obj.as_object().items) {
              if (name == "items") out.push_back(Value::tuple({k, v}));
              else if (name == "keys") out.push_back(k);
              else out.push_back(v);
            }
            return out;
          });
        }
        if (name == "get") {
          return method(name, [obj](Interpreter&, CallArgs& args) -> Value {
            const Value key = args.get(0, "key");
            const Value* v = obj.get(key);
            return v ? *v : args.get(1, "default", Value::none());
          });
        }
        if (name == "copy") return method(name, [obj](Interpreter&, CallArgs&) -> Value {
          Value out = Value::object();
          out.as_object().items = obj.as_object().items;
          return out;
        });
        if (name == "update" || name == "pop" || name == "setdefault" || name == "clear" || name == "popitem") {
          fail(e.line, e.column, "access to attribute '" + name + "' of 'dict' object is unsafe (templates cannot modify dicts)");
        }
      }
      if (const Value* v = obj.get(name)) return *v;
      return Value();
    }
    if (obj.is_array()) {
      if (name == "index" || name == "count") {
        return method(name, [obj, name](Interpreter&, CallArgs& args) -> Value {
          const Value item = args.get(0, "value");
          int64_t count = 0;
          for (size_t i = 0; i < obj.as_array().size(); ++i) {
            if (!obj.as_array()[i].equals(item)) continue;
            if (name == "index") return Value(static_cast<int64_t>(i));
            ++count;
          }
          if (name == "index") fail(0, 0, item.repr() + " is not in list");
          return Value(count);
        });
      }
      if (name == "append" || name == "pop" || name == "insert" || name == "extend" || name == "remove" || name == "clear" ||
          name == "sort" || name == "reverse") {
        fail(e.line, e.column, "access to attribute '" + name + "' of 'list' object is unsafe (templates cannot modify lists)");
      }
      return Value();
    }
    return Value();
  }

  Value string_method(const std::string& s, const std::string& name, const Expr& e) {
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      return method(name, [s, name](Interpreter&, CallArgs& args) -> Value {
        return Value(strip(s, args.get(0, "chars"), name != "rstrip", name != "lstrip"));
      });
    }
    if (name == "startswith" || name == "endswith") {
      return method(name, [s, name](Interpreter&, CallArgs& args) -> Value {
        const Value arg = args.get(0, "prefix");
        std::vector<Value> options = arg.is_array() ? arg.as_array() : std::vector<Value>{arg};
        for (const Value& o : options) {
          if (!o.is_string()) fail(0, 0, name + " needs a string argument");
          const std::string& p = o.as_string();
          if (p.size() > s.size()) continue;
          if (name == "startswith" ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0) return Value(true);
        }
        return Value(false);
      });
    }
    if (name == "split" || name == "rsplit") {
      return method(name, [s, name](Interpreter&, CallArgs& args) -> Value {
        const Value sep = args.get(0, "sep");
        if (sep.is_string() && sep.as_string().empty()) fail(0, 0, "empty separator");
        const Value maxsplit = args.get(1, "maxsplit", Value(-1));
        if (name == "rsplit" && maxsplit.as_int() >= 0) {
          // rsplit with a limit: split from the right by reversing the problem.
          Value all = split(s, sep, -1);
          Array& parts = all.as_array();
          const int64_t keep = static_cast<int64_t>(parts.size()) - maxsplit.as_int();
          if (keep <= 1 || !sep.is_string()) return all;
          std::string head;
          for (int64_t i = 0; i < keep; ++i) head += (i ? sep.as_string() : "") + parts[static_cast<size_t>(i)].as_string();
          Array out{Value(head)};
          out.insert(out.end(), parts.begin() + keep, parts.end());
          return Value::array(std::move(out));
        }
        return split(s, sep, maxsplit.as_int());
      });
    }
    if (name == "splitlines") {
      return method(name, [s](Interpreter&, CallArgs&) -> Value {
        Value out = Value::array();
        size_t pos = 0;
        while (pos < s.size()) {
          size_t e = s.find_first_of("\r\n", pos);
          if (e == std::string::npos) {
            out.push_back(s.substr(pos));
            break;
          }
          out.push_back(s.substr(pos, e - pos));
          pos = e + ((s[e] == '\r' && e + 1 < s.size() && s[e + 1] == '\n') ? 2 : 1);
        }
        return out;
      });
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      return method(name, [s, name](Interpreter&, CallArgs&) -> Value {
        if (name == "upper") return Value(ascii_upper(s));
        if (name == "lower") return Value(ascii_lower(s));
        if (name == "capitalize") return Value(s.empty() ? s : ascii_upper(s.substr(0, 1)) + ascii_lower(s.substr(1)));
        // str.title(): a letter after a non-letter is upper-cased, other letters lower-cased.
        std::string out = s;
        bool prev_letter = false;
        for (char& c : out) {
          const bool letter = std::isalpha(static_cast<unsigned char>(c)) != 0;
          if (letter) c = static_cast<char>(prev_letter ? std::tolower(static_cast<unsigned char>(c)) : std::toupper(static_cast<unsigned char>(c)));
          prev_letter = letter;
        }
        return Value(out);
      });
    }
    if (name == "replace") {
      return method(name, [s, this](Interpreter&, CallArgs& args) -> Value {
        const Value from = args.get(0, "old"), to = args.get(1, "new");
        if (!from.is_string() || !to.is_string()) fail(0, 0, "replace() needs string arguments");
        return Value(replace_all(s, from.as_string(), to.as_string(), args.get(2, "count", Value(-1)).as_int(), options_.max_output));
      });
    }
    if (name == "find" || name == "rfind" || name == "index" || name == "count") {
      return method(name, [s, name](Interpreter&, CallArgs& args) -> Value {
        const Value sub = args.get(0, "sub");
        if (!sub.is_string()) fail(0, 0, name + "() needs a string argument");
        const std::string& p = sub.as_string();
        if (name == "count") {
          if (p.empty()) return Value(Value(s).length() + 1);
          int64_t n = 0;
          for (size_t at = s.find(p); at != std::string::npos; at = s.find(p, at + p.size())) ++n;
          return Value(n);
        }
        const size_t at = name == "rfind" ? s.rfind(p) : s.find(p);
        if (at == std::string::npos) {
          if (name == "index") fail(0, 0, "substring not found");
          return Value(-1);
        }
        return Value(Value(s.substr(0, at)).length());
      });
    }
    if (name == "join") {
      return method(name, [s](Interpreter& in, CallArgs& args) -> Value {
        std::string out;
        bool first = true;
        for (const Value& v : in.iterate(args.get(0, "iterable"), 0, 0)) {
          if (!v.is_string()) fail(0, 0, "join() expects strings, found " + kind_name(v));
          if (!first) out += s;
          out += v.as_string();
          first = false;
        }
        return Value(std::move(out));
      });
    }
    if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "islower" || name == "isupper") {
      return method(name, [s, name](Interpreter&, CallArgs&) -> Value {
        if (s.empty()) return Value(false);
        bool cased = false;
        for (unsigned char c : s) {
          if (name == "isdigit" && !std::isdigit(c)) return Value(false);
          if (name == "isalpha" && !std::isalpha(c)) return Value(false);
          if (name == "isalnum" && !std::isalnum(c)) return Value(false);
          if (name == "isspace" && !py_space(c)) return Value(false);
          if (name == "islower" && std::isupper(c)) return Value(false);
          if (name == "isupper" && std::islower(c)) return Value(false);
          cased |= std::isalpha(c) != 0;
        }
        return Value(name == "islower" || name == "isupper" ? cased : true);
      });
    }
    if (name == "removeprefix" || name == "removesuffix") {
      return method(name, [s, name](Interpreter&, CallArgs& args) -> Value {
        const Value a = args.get(0, "prefix");
        if (!a.is_string()) fail(0, 0, name + "() needs a string argument");
        const std::string& p = a.as_string();
        if (p.size() > s.size()) return Value(s);
        if (name == "removeprefix") return Value(s.compare(0, p.size(), p) == 0 ? s.substr(p.size()) : s);
        return Value(s.compare(s.size() - p.size(), p.size(), p) == 0 ? s.substr(0, s.size() - p.size()) : s);
      });
    }
    if (name == "format") {
      return method(name, [s](Interpreter&, CallArgs& args) -> Value {
        // str.format with {} / {0} / {name} fields (no format specs).
        std::string out;
        size_t auto_index = 0;
        for (size_t i = 0; i < s.size(); ++i) {
          if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '{') {
            out += '{';
            ++i;
          } else if (s[i] == '}' && i + 1 < s.size() && s[i + 1] == '}') {
            out += '}';
            ++i;
          } else if (s[i] == '{') {
            const size_t close = s.find('}', i);
            if (close == std::string::npos) fail(0, 0, "single '{' encountered in format string");
            const std::string field = s.substr(i + 1, close - i - 1);
            Value v;
            if (field.empty()) v = args.get(auto_index++, "");
            else if (std::all_of(field.begin(), field.end(), ::isdigit)) v = args.get(std::stoul(field), "");
            else v = args.get(SIZE_MAX, field);
            if (v.is_undefined()) fail(0, 0, "format field '" + field + "' has no argument");
            out += v.str();
            i = close;
          } else {
            out += s[i];
          }
        }
        return Value(out);
      });
    }
    return Value();
  }

  // ---- filters and tests ----

  Value attribute_path(const Value& v, const std::string& path, const Expr& e) {
    Value cur = v;
    size_t pos = 0;
    while (pos <= path.size()) {
      const size_t dot = path.find('.', pos);
      const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
      if (cur.is_undefined()) return cur;
      if (!part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) cur = index(cur, Value(static_cast<int64_t>(std::stoll(part))), e);
      else cur = index(cur, Value(part), e);
      if (dot == std::string::npos) break;
      pos = dot + 1;
    }
    return cur;
  }

  static std::string html_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
      }
    }
    return out;
  }

  // select/reject/selectattr/rejectattr: a test name and its arguments from args[first...].
  bool run_test_from_args(const Value& v, CallArgs& args, size_t first, const Expr& e) {
    if (args.positional.size() <= first) return v.truthy();
    const Value name = args.positional[first];
    if (!name.is_string() || !is_known_test(name.as_string())) fail(e.line, e.column, "no test named " + name.repr());
    CallArgs rest;
    rest.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(first) + 1, args.positional.end());
    return test(name.as_string(), v, rest, e);
  }

  int order(const Value& a, const Value& b, bool case_sensitive, const Expr& e) {
    if (a.is_string() && b.is_string() && !case_sensitive) return ascii_lower(a.as_string()).compare(ascii_lower(b.as_string()));
    if (compare("<", a, b, e)) return -1;
    if (compare(">", a, b, e)) return 1;
    return 0;
  }

  Value filter(const std::string& name, const Value& v, CallArgs& args, const Expr& e) {
    const int line = e.line, column = e.column;
    auto need_string = [&]() -> std::string {
      if (v.is_undefined()) return "";
      return v.str();
    };
    if (name == "default" || name == "d") {
      const bool boolean = args.get(1, "boolean", Value(false)).truthy();
      if (v.is_undefined() || (boolean && !v.truthy())) return args.get(0, "default_value", Value(""));
      return v;
    }
    if (name == "length" || name == "count") {
      if (v.is_undefined()) return Value(0);
      if (v.length() < 0) fail(line, column, "object of type '" + kind_name(v) + "' has no len()");
      return Value(v.length());
    }
    if (name == "string") return Value(v.str());
    if (name == "safe") return v.is_markup() ? v : Value::markup(v.str());
    if (name == "escape" || name == "e" || name == "forceescape") {
      if (v.is_markup() && name != "forceescape") return v;
      return Value::markup(html_escape(need_string()));
    }
    if (name == "trim") return Value(strip(need_string(), args.get(0, "chars"), true, true));
    if (name == "upper") return Value(ascii_upper(need_string()));
    if (name == "lower") return Value(ascii_lower(need_string()));
    if (name == "capitalize") {
      const std::string s = need_string();
      return Value(s.empty() ? s : ascii_upper(s.substr(0, 1)) + ascii_lower(s.substr(1)));
    }
    if (name == "title") {
      // jinja2's do_title: words start after '-', whitespace, '(', '{', '[' or '<'.
      std::string s = need_string();
      bool start = true;
      for (char& c : s) {
        const bool sep = c == '-' || py_space(static_cast<unsigned char>(c)) || c == '(' || c == '{' || c == '[' || c == '<';
        if (sep) {
          start = true;
          continue;
        }
        c = static_cast<char>(start ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
        start = false;
      }
      return Value(s);
    }
    if (name == "replace") {
      const Value from = args.get(0, "old"), to = args.get(1, "new");
      return Value(replace_all(need_string(), from.str(), to.str(), args.get(2, "count", Value(-1)).as_int(), options_.max_output));
    }
    if (name == "join") {
      const Value sep = args.get(0, "d", Value(""));
      const Value attr = args.get(1, "attribute");
      std::string out;
      bool first = true;
      for (const Value& item : iterate(v, line, column)) {
        if (!first) out += sep.str();
        out += (attr.is_undefined() ? item : attribute_path(item, attr.str(), e)).str();
        first = false;
        check_size(out.size(), line, column);
      }
      return Value(std::move(out));
    }
    if (name == "first" || name == "last") {
      std::vector<Value> items = iterate(v, line, column);
      if (items.empty()) return Value();
      return name == "first" ? items.front() : items.back();
    }
    if (name == "list") return Value::array(iterate(v, line, column));
    if (name == "items") {
      if (v.is_undefined()) return Value::array();
      if (!v.is_object()) fail(line, column, "can only get item pairs from a mapping");
      Value out = Value::array();
      for (const auto& [k, val] : v.as_object().items) out.push_back(Value::tuple({k, val}));
      return out;
    }
    if (name == "tojson") {
      const Value indent = args.get(0, "indent");
      std::string out;
      if (!v.to_json(out, indent.is_int() ? static_cast<int>(std::clamp<int64_t>(indent.as_int(), 0, 64)) : -1))
        fail(line, column, "object of type '" + kind_name(v) + "' is not JSON serializable");
      return Value(std::move(out));
    }
    if ((name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject" || name == "map") && !v.truthy()) {
      return Value::array();  // jinja2: `if value: for item in value` -- none gives nothing
    }
    if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
      const bool by_attr = name == "selectattr" || name == "rejectattr";
      const bool keep_if = name == "selectattr" || name == "select";
      Value out = Value::array();
      std::string attr;
      if (by_attr) {
        if (args.positional.empty()) fail(line, column, name + " needs an attribute name");
        attr = args.positional[0].str();
      }
      for (const Value& item : iterate(v, line, column)) {
        step(line, column);
        const Value subject = by_attr ? attribute_path(item, attr, e) : item;
        if (run_test_from_args(subject, args, by_attr ? 1 : 0, e) == keep_if) out.push_back(item);
      }
      return out;
    }
    if (name == "map") {
      Value out = Value::array();
      const Value attr = args.get(SIZE_MAX, "attribute");
      if (!attr.is_undefined()) {
        const Value fallback = args.get(SIZE_MAX, "default");
        for (const Value& item : iterate(v, line, column)) {
          Value x = attribute_path(item, attr.str(), e);
          out.push_back(x.is_undefined() && !fallback.is_undefined() ? fallback : x);
        }
        return out;
      }
      if (args.positional.empty() || !args.positional[0].is_string()) fail(line, column, "map needs a filter name or attribute=");
      const std::string f = args.positional[0].as_string();
      if (!is_known_filter(f)) fail(line, column, "no filter named '" + f + "'");
      CallArgs rest;
      rest.positional.assign(args.positional.begin() + 1, args.positional.end());
      rest.keyword = args.keyword;
      for (const Value& item : iterate(v, line, column)) {
        step(line, column);
        out.push_back(filter(f, item, rest, e));
      }
      return out;
    }
    if (name == "int") {
      const Value fallback = args.get(0, "default", Value(0));
      if (v.is_number()) return Value(v.as_int());
      if (v.is_string()) {
        const std::string s = strip(v.as_string(), Value(), true, true);
        char* end = nullptr;
        const long long i = std::strtoll(s.c_str(), &end, 10);
        if (!s.empty() && end && *end == '\0') return Value(static_cast<int64_t>(i));
        const double d = std::strtod(s.c_str(), &end);
        if (!s.empty() && end && *end == '\0') return Value(static_cast<int64_t>(d));
      }
      return fallback;
    }
    if (name == "float") {
      const Value fallback = args.get(0, "default", Value(0.0));
      if (v.is_number()) return Value(v.as_float());
      if (v.is_string()) {
        const std::string s = strip(v.as_string(), Value(), true, true);
        char* end = nullptr;
        const double d = std::strtod(s.c_str(), &end);
        if (!s.empty() && end && *end == '\0') return Value(d);
      }
      return fallback;
    }
    if (name == "abs") {
      if (!v.is_number()) fail(line, column, "bad operand type for abs(): '" + kind_name(v) + "'");
      return v.is_float() ? Value(std::fabs(v.as_float())) : Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
    }
    if (name == "round") {
      if (!v.is_number()) fail(line, column, "round needs a number");
      const int64_t precision = args.get(0, "precision", Value(0)).as_int();
      const std::string how = args.get(1, "method", Value("common")).str();
      // Python's round(int, n) stays an int; ceil/floor go through a float division.
      if (how == "common" && !v.is_float()) return Value(v.as_int());
      const double scale = std::pow(10.0, static_cast<double>(precision));
      double x = v.as_float() * scale;
      x = how == "ceil" ? std::ceil(x) : how == "floor" ? std::floor(x) : std::round(x);
      return Value(x / scale);
    }
    if (name == "unique") {
      Value out = Value::array();
      for (const Value& item : iterate(v, line, column)) {
        charge(out.length(), line, column);
        const bool seen = std::any_of(out.as_array().begin(), out.as_array().end(), [&](const Value& o) { return o.equals(item); });
        if (!seen) out.push_back(item);
      }
      return out;
    }
    if (name == "reverse") {
      if (v.is_string()) {
        auto cps = code_points(v.as_string());
        std::string out;
        for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
        return Value(out);
      }
      std::vector<Value> items = iterate(v, line, column);
      std::reverse(items.begin(), items.end());
      return Value::array(std::move(items));
    }
    if (name == "sort" || name == "dictsort") {
      const bool dict = name == "dictsort";
      const bool reverse = args.get(dict ? 2 : 0, "reverse", Value(false)).truthy();
      const bool case_sensitive = args.get(dict ? 0 : 1, "case_sensitive", Value(false)).truthy();
      const Value attr = dict ? Value() : args.get(2, "attribute");
      const bool by_value = dict && args.get(1, "by", Value("key")).str() == "value";
      std::vector<Value> items;
      if (dict) {
        if (!v.is_object()) fail(line, column, "dictsort needs a mapping");
        for (const auto& [k, val] : v.as_object().items) items.push_back(Value::tuple({k, val}));
      } else {
        items = iterate(v, line, column);
      }
      auto key = [&](const Value& item) {
        if (dict) return item.as_array()[by_value ? 1 : 0];
        return attr.is_undefined() ? item : attribute_path(item, attr.str(), e);
      };
      std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
        const int o = order(key(a), key(b), case_sensitive, e);
        return reverse ? o > 0 : o < 0;
      });
      return Value::array(std::move(items));
    }
    if (name == "sum") {
      const Value attr = args.get(0, "attribute");
      Value total = args.get(1, "start", Value(0));
      for (const Value& item : iterate(v, line, column)) total = binary("+", total, attr.is_undefined() ? item : attribute_path(item, attr.str(), e), e);
      return total;
    }
    if (name == "min" || name == "max") {
      std::vector<Value> items = iterate(v, line, column);
      if (items.empty()) return Value();
      const bool case_sensitive = args.get(0, "case_sensitive", Value(false)).truthy();
      const Value attr = args.get(1, "attribute");
      size_t best = 0;
      for (size_t i = 1; i < items.size(); ++i) {
        const Value a = attr.is_undefined() ? items[i] : attribute_path(items[i], attr.str(), e);
        const Value b = attr.is_undefined() ? items[best] : attribute_path(items[best], attr.str(), e);
        const int o = order(a, b, case_sensitive, e);
        if (name == "min" ? o < 0 : o > 0) best = i;
      }
      return items[best];
    }
    if (name == "indent") {
      const Value width = args.get(0, "width", Value(4));
      const bool first = args.get(1, "first", Value(false)).truthy();
      const bool blank = args.get(2, "blank", Value(false)).truthy();
      if (!v.is_string()) fail(line, column, "indent needs a string, not " + kind_name(v));
      const std::string pad = width.is_string() ? width.as_string() : std::string(static_cast<size_t>(std::clamp<int64_t>(width.as_int(), 0, 256)), ' ');
      std::string s = need_string();
      std::string out;
      size_t pos = 0;
      bool first_line = true;
      while (pos <= s.size()) {
        size_t nl = s.find('\n', pos);
        const std::string line_text = s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        const bool pad_it = first_line ? first : (blank || !strip(line_text, Value(), true, true).empty());
        if (!first_line) out += '\n';
        if (pad_it) out += pad;
        out += line_text;
        first_line = false;
        if (nl == std::string::npos) break;
        pos = nl + 1;
        check_size(out.size(), line, column);
      }
      return Value(out);
    }
    if (name == "wordcount") {
      // jinja2 counts \w+ runs (letters, digits, underscore; non-ASCII counts as a letter).
      int64_t words = 0;
      bool in_word = false;
      for (unsigned char c : need_string()) {
        const bool w = std::isalnum(c) || c == '_' || c >= 0x80;
        words += w && !in_word;
        in_word = w;
      }
      return Value(words);
    }
    if (name == "center") {
      const int64_t width = std::clamp<int64_t>(args.get(0, "width", Value(80)).as_int(), 0, 4096);
      std::string s = need_string();
      const int64_t n = Value(s).length();
      if (n >= width) return Value(s);
      const int64_t total = width - n;
      const int64_t left = total / 2 + (total & width & 1);
      return Value(std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(total - left), ' '));
    }
    if (name == "format") {
      Value packed = Value::tuple(args.positional);
      return Value(percent_format(need_string(), packed, e));
    }
    if (name == "attr") return attribute(v, args.get(0, "name").str(), e);
    if (name == "batch") {
      const int64_t size = args.get(0, "linecount").as_int();
      if (size <= 0) fail(line, column, "batch needs a positive size");
      const Value fill = args.get(1, "fill_with", Value::none());
      Value out = Value::array();
      Array current;
      for (const Value& item : iterate(v, line, column)) {
        current.push_back(item);
        if (static_cast<int64_t>(current.size()) == size) {
          out.push_back(Value::array(std::move(current)));
          current.clear();
        }
      }
      if (!current.empty()) {
        if (args.positional.size() > 1 || args.get(SIZE_MAX, "fill_with").kind() != Value::Kind::kUndefined)
          while (static_cast<int64_t>(current.size()) < size) current.push_back(fill);
        out.push_back(Value::array(std::move(current)));
      }
      return out;
    }
    fail(line, column, "no filter named '" + name + "'");
  }

  bool test(const std::string& name, const Value& v, CallArgs& args, const Expr& e) {
    const Value arg = args.get(0, "other");
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "boolean") return v.is_bool();
    if (name == "true") return v.is_bool() && v.as_bool();
    if (name == "false") return v.is_bool() && !v.as_bool();
    if (name == "integer") return v.is_int();
    if (name == "float") return v.is_float();
    if (name == "number") return v.is_number();
    if (name == "string") return v.is_string();
    if (name == "mapping") return v.is_object();
    if (name == "iterable") return v.is_string() || v.is_array() || v.is_object() || v.is_undefined();
    if (name == "sequence") return v.is_string() || v.is_array() || v.is_object();
    if (name == "callable") return v.is_function();
    if (name == "escaped") return false;
    if (name == "sameas") {
      if (v.is_array() && arg.is_array()) return &v.as_array() == &arg.as_array();
      if (v.is_object() && arg.is_object()) return &v.as_object() == &arg.as_object();
      return (v.is_none() && arg.is_none()) || (v.is_bool() && arg.is_bool() && v.as_bool() == arg.as_bool());
    }
    if (name == "equalto" || name == "eq" || name == "==") return v.equals(arg);
    if (name == "ne" || name == "!=") return !v.equals(arg);
    if (name == "lt" || name == "<") return compare("<", v, arg, e);
    if (name == "le" || name == "<=") return compare("<=", v, arg, e);
    if (name == "gt" || name == ">") return compare(">", v, arg, e);
    if (name == "ge" || name == ">=") return compare(">=", v, arg, e);
    if (name == "in") return contains(arg, v, e);
    if (name == "odd" || name == "even" || name == "divisibleby") {
      if (!v.is_number()) fail(e.line, e.column, "test '" + name + "' needs a number");
      const Value divisor = name == "divisibleby" ? arg : Value(2);
      if (!divisor.is_number() || divisor.as_float() == 0) fail(e.line, e.column, "test '" + name + "' needs a non-zero divisor");
      const Value rest = binary("%", v, divisor, e);  // Python's modulo, floats included
      if (name == "odd") return rest.as_float() == 1;
      return rest.as_float() == 0;
    }
    if (name == "lower" || name == "upper") {
      // str(value).islower() / .isupper(): some cased character, none of the other case.
      const std::string s = v.str();
      bool cased = false;
      for (unsigned char c : s) {
        if (name == "lower" ? std::isupper(c) : std::islower(c)) return false;
        cased |= std::isalpha(c) != 0;
      }
      return cased;
    }
    fail(e.line, e.column, "no test named '" + name + "'");
  }

  // ---- globals ----

  void install_builtins(Frame& frame) {
    frame.set("range", Value::function("range", [](Interpreter& in, CallArgs& args) -> Value {
      int64_t start = 0, stop = 0, stepv = 1;
      for (const Value& a : args.positional)
        if (!a.is_int()) fail(0, 0, "range() needs integer arguments");
      if (args.positional.size() == 1) stop = args.positional[0].as_int();
      else if (args.positional.size() >= 2) {
        start = args.positional[0].as_int();
        stop = args.positional[1].as_int();
        if (args.positional.size() >= 3) stepv = args.positional[2].as_int();
      } else {
        fail(0, 0, "range() needs at least one argument");
      }
      if (stepv == 0) fail(0, 0, "range() step must not be zero");
      Value out = Value::array();
      for (int64_t i = start; stepv > 0 ? i < stop : i > stop; i += stepv) {
        in.step(0, 0);
        out.push_back(Value(i));
      }
      return out;
    }));
    auto make_dict = [](bool ns) {
      return [ns](Interpreter&, CallArgs& args) -> Value {
        Value out = Value::object();
        out.as_object().is_namespace = ns;
        for (const Value& p : args.positional) {
          if (!p.is_object()) fail(0, 0, ns ? "namespace() takes keyword arguments or a dict" : "dict() takes keyword arguments or a dict");
          for (const auto& [k, v] : p.as_object().items) out.set(k, v);
        }
        for (const auto& [k, v] : args.keyword) out.set(k, v);
        return out;
      };
    };
    frame.set("namespace", Value::function("namespace", make_dict(true)));
    frame.set("dict", Value::function("dict", make_dict(false)));
    frame.set("raise_exception", Value::function("raise_exception", [](Interpreter&, CallArgs& args) -> Value {
      fail(0, 0, "template raised an exception: " + args.get(0, "message").str());
    }));
    // Hugging Face's strftime_now: the current local time through strftime.
    frame.set("strftime_now", Value::function("strftime_now", [](Interpreter&, CallArgs& args) -> Value {
      const std::string format = args.get(0, "format").str();
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof(buf), format.c_str(), &tm);
      return Value(std::string(buf, n));
    }));
  }

  const Options& options_;
  std::shared_ptr<Frame> globals_;
  int depth_ = 0;
  int64_t steps_ = 0;
};

bool is_known_filter(const std::string& name) { return filter_names().count(name) > 0; }
bool is_known_test(const std::string& name) { return test_names().count(name) > 0; }

Result<Template> Template::parse(const std::string& source, Options options) {
  try {
    Template t;
    t.options_ = options;
    t.program_ = parse_program(tokenize(source, options), t.options_);
    return t;
  } catch (const JinjaException& e) {
    return Status::error("template syntax error at line " + std::to_string(e.error.line) + ", column " +
                         std::to_string(e.error.column) + ": " + e.error.message);
  } catch (const std::bad_alloc&) {
    return Status::error("template too large to parse");
  }
}

Result<std::string> Template::render(const Value& globals) const {
  if (!program_) return Status::error("template not parsed");
  try {
    Interpreter interpreter(options_);
    return interpreter.render(*program_, globals);
  } catch (const JinjaException& e) {
    if (e.error.line == 0) return Status::error("template error: " + e.error.message);
    return Status::error("template error at line " + std::to_string(e.error.line) + ", column " + std::to_string(e.error.column) +
                         ": " + e.error.message);
  } catch (const std::bad_alloc&) {
    return Status::error("template rendering ran out of memory");
  }
}

}  // namespace frugal::jinja
