//===- Status.h - Errors as values in the runtime ----------------*- C++ -*-===//
//
// The runtime links no LLVM, so it has no llvm::Error: its functions return a Status or a
// Result, and the tools turn them into llvm::Error at their boundary (nestor/EmitProgram.h,
// toError).
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_ENGINE_STATUS_H
#define NESTOR_ENGINE_STATUS_H

#include <optional>
#include <string>
#include <utility>

namespace nestor::engine {

/// Success, or an error message (errors are values up to the tool boundary).
class Status {
public:
  Status() = default;
  static Status error(std::string message) { return Status(std::move(message)); }
  bool ok() const { return !message_.has_value(); }
  explicit operator bool() const { return !ok(); } // true when failed, like llvm::Error
  const std::string &message() const { return *message_; }

private:
  explicit Status(std::string message) : message_(std::move(message)) {}
  std::optional<std::string> message_;
};

/// A value or the Status of why there is none.
template <typename T> class Result {
public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit like llvm::Expected
  Result(Status status) : status_(std::move(status)) {} // NOLINT
  bool ok() const { return value_.has_value(); }
  const Status &status() const { return status_; }
  T &operator*() { return *value_; }
  T *operator->() { return &*value_; }

private:
  std::optional<T> value_;
  Status status_;
};

} // namespace nestor::engine

#endif // NESTOR_ENGINE_STATUS_H
