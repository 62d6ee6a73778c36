// Jinja values with Python semantics: truthiness, str()/repr(), ==, len(), json.dumps, JSON input.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "io/jinja_internal.h"
#include "io/utf8.h"

namespace frugal::jinja {

Value Value::array(Array items) {
  Value v;
  v.kind_ = Kind::kArray;
  v.depth_ = 1;
  for (const Value& item : items) v.depth_ = std::max(v.depth_, item.depth_ + 1);
  v.array_ = std::make_shared<Array>(std::move(items));
  return v;
}

Value Value::tuple(Array items) {
  Value v = array(std::move(items));
  v.tuple_ = true;
  return v;
}

Value Value::object() {
  Value v;
  v.kind_ = Kind::kObject;
  v.depth_ = 1;
  v.object_ = std::make_shared<Object>();
  return v;
}

Value Value::function(std::string name, Function f) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.string_ = std::make_shared<std::string>(std::move(name));
  v.function_ = std::make_shared<Function>(std::move(f));
  return v;
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool:
    case Kind::kInt: return int_ != 0;
    case Kind::kFloat: return float_ != 0;
    case Kind::kString: return !string_->empty();
    case Kind::kArray: return !array_->empty();
    case Kind::kObject: return !object_->items.empty();
    case Kind::kFunction: return true;
  }
  return false;
}

// repr(float) in Python: the shortest digits that round-trip, positional notation for exponents
// in [-4, 16), else d.ddde+XX; integral values keep a ".0".
std::string python_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  const size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exponent = std::atoi(sci.c_str() + e + 1);
  bool negative = false;
  if (!mantissa.empty() && mantissa[0] == '-') {
    negative = true;
    mantissa.erase(0, 1);
  }
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits += c;
  std::string out;
  if (exponent < -4 || exponent >= 16) {
    out.assign(digits, 0, 1);
    if (digits.size() > 1) {
      out += '.';
      out.append(digits, 1, std::string::npos);
    }
    char exp[16];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exp;
  } else if (exponent < 0) {
    out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  } else {
    const size_t int_digits = static_cast<size_t>(exponent) + 1;
    if (digits.size() <= int_digits) {
      out = digits + std::string(int_digits - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, int_digits) + "." + digits.substr(int_digits);
    }
  }
  return negative ? "-" + out : out;
}

namespace {

std::string python_repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == quote) out += std::string("\\") + static_cast<char>(c);
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

}  // namespace

std::string Value::str() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kString: return *string_;
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return int_ ? "True" : "False";
    case Kind::kInt: return std::to_string(int_);
    case Kind::kFloat: return python_float(float_);
    case Kind::kString: return python_repr_string(*string_);
    case Kind::kArray: {
      std::string out = tuple_ ? "(" : "[";
      for (size_t i = 0; i < array_->size(); ++i) out += (i ? ", " : "") + (*array_)[i].repr();
      if (tuple_) return out + (array_->size() == 1 ? ",)" : ")");
      return out + "]";
    }
    case Kind::kObject: {
      // jinja2's Namespace repr wraps its attribute dict.
      std::string out = object_->is_namespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, v] : object_->items) {
        out += (first ? "" : ", ") + k.repr() + ": " + v.repr();
        first = false;
      }
      return out + (object_->is_namespace ? "}>" : "}");
    }
    case Kind::kFunction: return "<function " + *string_ + ">";
  }
  return "";
}

bool Value::to_json(std::string& out, int indent, int depth) const {
  if (depth > 256) return false;
  auto newline = [&](int level) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent) * static_cast<size_t>(level), ' ');
  };
  // json.dumps separators: (', ', ': ') without indent, (',', ': ') with it.
  const char* item_sep = indent < 0 ? ", " : ",";
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kFunction: return false;
    case Kind::kNone: out += "null"; return true;
    case Kind::kBool: out += int_ ? "true" : "false"; return true;
    case Kind::kInt: out += std::to_string(int_); return true;
    case Kind::kFloat:
      if (std::isnan(float_)) out += "NaN";
      else if (std::isinf(float_)) out += float_ < 0 ? "-Infinity" : "Infinity";
      else out += python_float(float_);
      return true;
    case Kind::kString: json_string(out, *string_); return true;
    case Kind::kArray: {
      if (array_->empty()) {
        out += "[]";
        return true;
      }
      out += '[';
      for (size_t i = 0; i < array_->size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        if (!(*array_)[i].to_json(out, indent, depth + 1)) return false;
      }
      newline(depth);
      out += ']';
      return true;
    }
    case Kind::kObject: {
      if (object_->items.empty()) {
        out += "{}";
        return true;
      }
      out += '{';
      bool first = true;
      for (const auto& [k, v] : object_->items) {
        if (!first) out += item_sep;
        first = false;
        newline(depth + 1);
        // json.dumps turns non-string keys into strings: 4096 -> "4096", True -> "true".
        if (k.is_string()) {
          json_string(out, k.as_string());
        } else if (k.is_none() || k.is_bool() || k.is_int() || k.is_float()) {
          std::string scalar;
          k.to_json(scalar);
          json_string(out, scalar);
        } else {
          return false;
        }
        out += ": ";
        if (!v.to_json(out, indent, depth + 1)) return false;
      }
      newline(depth);
      out += '}';
      return true;
    }
  }
  return false;
}

bool Value::equals(const Value& other, int depth) const {
  if (depth > 256) return false;
  if (is_number() && other.is_number()) {
    if ((is_float() || other.is_float())) return as_float() == other.as_float();
    return int_ == other.int_;
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kString: return *string_ == *other.string_;
    case Kind::kArray: {
      if (array_->size() != other.array_->size()) return false;
      for (size_t i = 0; i < array_->size(); ++i)
        if (!(*array_)[i].equals((*other.array_)[i], depth + 1)) return false;
      return true;
    }
    case Kind::kObject: {
      if (object_ == other.object_) return true;
      if (object_->items.size() != other.object_->items.size()) return false;
      for (const auto& [k, v] : object_->items) {
        const Value* o = other.get(k);
        if (!o || !v.equals(*o, depth + 1)) return false;
      }
      return true;
    }
    case Kind::kFunction: return function_ == other.function_;
    default: return false;
  }
}

int64_t Value::length() const {
  switch (kind_) {
    case Kind::kString: {
      int64_t n = 0;
      for (unsigned char c : *string_) n += (c & 0xC0) != 0x80;
      return n;
    }
    case Kind::kArray: return static_cast<int64_t>(array_->size());
    case Kind::kObject: return static_cast<int64_t>(object_->items.size());
    default: return -1;
  }
}

const Value* Value::get(const std::string& key) const {
  if (kind_ != Kind::kObject) return nullptr;
  for (const auto& [k, v] : object_->items)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

const Value* Value::get(const Value& key) const {
  if (kind_ != Kind::kObject) return nullptr;
  for (const auto& [k, v] : object_->items)
    if (k.equals(key)) return &v;
  return nullptr;
}

void Value::set(const Value& key, Value value) {
  if (kind_ != Kind::kObject) return;
  depth_ = std::max(depth_, value.depth_ + 1);
  for (auto& [k, v] : object_->items) {
    if (k.equals(key)) {
      v = std::move(value);
      return;
    }
  }
  object_->items.emplace_back(key, std::move(value));
}

void Value::push_back(Value value) {
  if (kind_ != Kind::kArray) return;
  depth_ = std::max(depth_, value.depth_ + 1);
  array_->push_back(std::move(value));
}

Value CallArgs::get(size_t i, const std::string& name, Value fallback) const {
  if (i < positional.size()) return positional[i];
  for (const auto& [k, v] : keyword)
    if (k == name) return v;
  return fallback;
}

namespace {

// A small recursive-descent JSON reader (RFC 8259) with a depth bound, so a hostile messages file
// cannot exhaust the stack.
class JsonReader {
 public:
  explicit JsonReader(const std::string& text) : s_(text) {}
  Result<Value> read() {
    Value v;
    if (!value(v, 0)) return Status::error(error_);
    skip_space();
    if (pos_ != s_.size()) return Status::error(where("trailing characters after the JSON value"));
    return v;
  }

 private:
  std::string where(const std::string& what) const {
    int line = 1, column = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    return "JSON line " + std::to_string(line) + " column " + std::to_string(column) + ": " + what;
  }
  bool bad(const std::string& what) {
    error_ = where(what);
    return false;
  }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool literal(const char* word) {
    const size_t n = std::strlen(word);
    if (s_.compare(pos_, n, word) != 0) return false;
    pos_ += n;
    return true;
  }
  bool hex4(uint32_t& cp) {
    if (pos_ + 4 > s_.size()) return bad("truncated \\u escape");
    cp = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      cp <<= 4;
      if (c >= '0' && c <= '9') cp |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') cp |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') cp |= static_cast<uint32_t>(c - 'A' + 10);
      else return bad("bad \\u escape");
    }
    return true;
  }
  bool string(std::string& out) {
    ++pos_;  // opening quote
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return bad("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) break;
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {
            pos_ += 2;
            uint32_t low;
            if (!hex4(low)) return false;
            if (low >= 0xDC00 && low < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            else return bad("unpaired surrogate");
          }
          append_utf8(out, cp);
          break;
        }
        default: return bad("bad escape in a string");
      }
    }
    return bad("unterminated string");
  }
  bool value(Value& out, int depth) {
    if (depth > 128) return bad("nested deeper than 128 levels");
    skip_space();
    if (pos_ >= s_.size()) return bad("unexpected end of input");
    const char c = s_[pos_];
    if (c == '{') {
      ++pos_;
      out = Value::object();
      skip_space();
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return true;
      }
      for (;;) {
        skip_space();
        if (pos_ >= s_.size() || s_[pos_] != '"') return bad("expected a string key");
        std::string key;
        if (!string(key)) return false;
        skip_space();
        if (pos_ >= s_.size() || s_[pos_] != ':') return bad("expected ':'");
        ++pos_;
        Value v;
        if (!value(v, depth + 1)) return false;
        out.set(key, std::move(v));
        skip_space();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == '}') {
          ++pos_;
          return true;
        }
        return bad("expected ',' or '}'");
      }
    }
    if (c == '[') {
      ++pos_;
      out = Value::array();
      skip_space();
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return true;
      }
      for (;;) {
        Value v;
        if (!value(v, depth + 1)) return false;
        out.push_back(std::move(v));
        skip_space();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == ']') {
          ++pos_;
          return true;
        }
        return bad("expected ',' or ']'");
      }
    }
    if (c == '"') {
      std::string s;
      if (!string(s)) return false;
      out = Value(std::move(s));
      return true;
    }
    if (literal("true")) {
      out = Value(true);
      return true;
    }
    if (literal("false")) {
      out = Value(false);
      return true;
    }
    if (literal("null")) {
      out = Value::none();
      return true;
    }
    const size_t start = pos_;
    bool is_float = false;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    while (pos_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '.' || s_[pos_] == 'e' ||
                                s_[pos_] == 'E' || s_[pos_] == '+' || s_[pos_] == '-')) {
      if (!std::isdigit(static_cast<unsigned char>(s_[pos_]))) is_float = true;
      ++pos_;
    }
    const std::string number = s_.substr(start, pos_ - start);
    if (number.empty() || number == "-") return bad("unexpected character");
    if (!is_float) {
      int64_t v = 0;
      auto r = std::from_chars(number.data(), number.data() + number.size(), v);
      if (r.ec == std::errc() && r.ptr == number.data() + number.size()) {
        out = Value(v);
        return true;
      }
    }
    double d = 0;
    auto r = std::from_chars(number.data(), number.data() + number.size(), d);
    if (r.ec != std::errc() || r.ptr != number.data() + number.size()) return bad("bad number '" + number + "'");
    out = Value(d);
    return true;
  }

  const std::string& s_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace

Result<Value> Value::from_json(const std::string& text) { return JsonReader(text).read(); }

}  // namespace frugal::jinja
