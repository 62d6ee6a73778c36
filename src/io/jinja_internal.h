// Internals of the Jinja interpreter shared by its lexer, parser and evaluator: tokens and the AST.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/jinja.h"

namespace frugal::jinja {

// Internal failures travel as this exception up to Template::parse/render, which turn it into a
// Status; a tree-walking interpreter would otherwise thread an error through every node.
struct JinjaException {
  Error error;
};
[[noreturn]] void fail(int line, int column, std::string message);

struct Token {
  enum class Type { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEnd };
  Type type = Type::kEnd;
  std::string text;  // text data, name, string value, operator, or number spelling
  int line = 1;
  int column = 1;
};

// Splits the template into text and tag tokens, applying {%- -%} and trim_blocks/lstrip_blocks
// exactly as jinja2's lexer does.
std::vector<Token> tokenize(const std::string& source, const Options& options);

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,    // value
    kName,       // name
    kList,       // items
    kTuple,      // items (evaluates to a list)
    kDict,       // items = key, value, key, value...
    kAttr,       // items[0].name
    kIndex,      // items[0][items[1]]
    kSlice,      // items[0][items[1]:items[2]:items[3]] (null parts are absent)
    kCall,       // items[0](items[1..], keywords)
    kFilter,     // items[0] | name(items[1..], keywords)
    kTest,       // items[0] is [not] name(items[1..])
    kUnary,      // op items[0]: "not", "-", "+"
    kBinary,     // items[0] op items[1]: arithmetic, ~, and, or, in, not in
    kCompare,    // items[0] ops[0] items[1] ops[1] items[2] ... (Python chains)
    kCondition,  // items[0] if items[1] else items[2] (items[2] may be null)
  };
  Kind kind = Kind::kLiteral;
  int line = 0;
  int column = 0;
  Value value;
  std::string name;  // name, attribute, filter, test, or operator
  bool negated = false;  // is not
  std::vector<ExprPtr> items;
  std::vector<std::string> ops;
  std::vector<std::pair<std::string, ExprPtr>> keywords;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue, kFilterBlock, kScope };
  Kind kind = Kind::kText;
  int line = 0;
  int column = 0;
  std::string text;  // kText data
  ExprPtr expr;      // kOutput, kFor iterable, kSet value
  // kIf: conditions[i] guards bodies[i]; a trailing body without condition is the else branch.
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  // kFor: targets (one name or a tuple), filter condition, body, else body.
  // kSet/kSetBlock: targets (names), or target_object.target_attr for namespace attributes.
  std::vector<std::string> targets;
  std::string target_attr;
  ExprPtr filter;  // kFor's `if`; kFilterBlock's filter call (items[0] is a placeholder)
  Body body;
  Body else_body;
  // kMacro: name in targets[0], parameters with defaults (null when none).
  std::vector<std::pair<std::string, ExprPtr>> params;
};

struct Program {
  Body body;
};

std::shared_ptr<Program> parse_program(const std::vector<Token>& tokens, const Options& options);

// Filters and tests the evaluator knows. An unknown one is an error when it is evaluated (jinja2
// defers the check to run time inside conditionals, where templates probe optional filters).
bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);

// Python float repr (shortest round-trip digits, exponent outside [1e-4, 1e16)).
std::string python_float(double v);

}  // namespace frugal::jinja
