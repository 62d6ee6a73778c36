// Status and Result<T>: how errors that come from outside (files, user input) travel to the caller.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "base/check.h"

namespace frugal {

// An error with a one-line message that says what was wrong and where; empty message means ok.
// [[nodiscard]]: a dropped Status is an error nobody hears about.
class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status error(std::string message) {
    Status s;
    s.message_ = std::move(message);
    s.failed_ = true;
    return s;
  }
  bool is_ok() const { return !failed_; }
  explicit operator bool() const { return !failed_; }
  const std::string& message() const { return message_; }

 private:
  std::string message_;
  bool failed_ = false;
};

// A value or the Status that explains why there is none. Reading the value of a failed Result is
// a bug, caught by FRUGAL_CHECK (on in release builds) instead of dereferencing an empty optional.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Status status) : status_(std::move(status)) {}  // NOLINT
  bool is_ok() const { return value_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const { return status_; }
  T& value() & { return checked(); }
  const T& value() const& { return checked(); }
  T&& value() && { return std::move(checked()); }
  T* operator->() { return &checked(); }
  const T* operator->() const { return &checked(); }
  T& operator*() & { return checked(); }
  const T& operator*() const& { return checked(); }

 private:
  T& checked() {
    FRUGAL_CHECK(value_.has_value());
    return *value_;
  }
  const T& checked() const {
    FRUGAL_CHECK(value_.has_value());
    return *value_;
  }
  std::optional<T> value_;
  Status status_;
};

}  // namespace frugal

#define FRUGAL_CONCAT_INNER(a, b) a##b
#define FRUGAL_CONCAT(a, b) FRUGAL_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` (a Status) failed.
#define FRUGAL_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::frugal::Status frugal_status_ = (expr);        \
    if (!frugal_status_.is_ok()) return frugal_status_; \
  } while (0)

// `FRUGAL_ASSIGN_OR_RETURN(auto x, f())` unwraps a Result or returns its Status.
#define FRUGAL_ASSIGN_OR_RETURN(lhs, expr)                              \
  auto FRUGAL_CONCAT(frugal_result_, __LINE__) = (expr);                \
  if (!FRUGAL_CONCAT(frugal_result_, __LINE__).is_ok())                 \
    return FRUGAL_CONCAT(frugal_result_, __LINE__).status();            \
  lhs = std::move(FRUGAL_CONCAT(frugal_result_, __LINE__)).value()
