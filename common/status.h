// Status and StatusOr: how every part of the project reports an expected failure (bad input,
// I/O, corrupt data, RPC errors) as a value the caller must look at. Header-only and free of
// dependencies so that the LibTorch-only core can use it too. Not for programming errors:
// those are asserts.
//
// Thread-safety: values; safe to copy between threads.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace flap {

class [[nodiscard]] Status {
 public:
  // The codes are gRPC's, with gRPC's numbers (coordinator/grpc_status.h maps them one to one
  // across the wire), and one of this project's: kIOError, which crosses the wire as
  // UNAVAILABLE. kCorruption is this project's name for kDataLoss.
  enum class Code {
    kOk = 0,
    kCancelled = 1,
    kUnknown = 2,
    kInvalidArgument = 3,   // the caller's input (config, flag, request) is wrong
    kDeadlineExceeded = 4,  // a wait on the network or on other ranks timed out
    kNotFound = 5,          // a file, key or id does not exist
    kAlreadyExists = 6,     // what the caller would create exists already
    kPermissionDenied = 7,
    kResourceExhausted = 8,   // a quota or size limit was reached
    kFailedPrecondition = 9,  // the state does not allow it (e.g. a stale attempt)
    kAborted = 10,            // lost a race with another change (e.g. an expired lease)
    kOutOfRange = 11,
    kUnimplemented = 12,
    kInternal = 13,
    kUnavailable = 14,      // a peer (the coordinator, another rank) is down or unreachable:
                            // trying again later may succeed
    kDataLoss = 15,         // data on disk or on the wire is damaged or malformed
    kUnauthenticated = 16,  // no or wrong credentials
    kIOError = 100,         // the operating system refused a read or write (a full disk, a
                            // missing permission); on the wire: UNAVAILABLE
    kCorruption = kDataLoss,
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string msg) { return {Code::kInvalidArgument, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, std::move(msg)}; }
  static Status IOError(std::string msg) { return {Code::kIOError, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {Code::kUnavailable, std::move(msg)}; }
  static Status FailedPrecondition(std::string msg) { return {Code::kFailedPrecondition, std::move(msg)}; }
  static Status DeadlineExceeded(std::string msg) { return {Code::kDeadlineExceeded, std::move(msg)}; }
  static Status Internal(std::string msg) { return {Code::kInternal, std::move(msg)}; }
  static Status AlreadyExists(std::string msg) { return {Code::kAlreadyExists, std::move(msg)}; }
  static Status Unauthenticated(std::string msg) { return {Code::kUnauthenticated, std::move(msg)}; }
  static Status Aborted(std::string msg) { return {Code::kAborted, std::move(msg)}; }
  static Status ResourceExhausted(std::string msg) { return {Code::kResourceExhausted, std::move(msg)}; }
  // Any code (e.g. one received over gRPC).
  static Status FromCode(Code code, std::string msg) {
    return code == Code::kOk ? Status() : Status(code, std::move(msg));
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "<code name>: <message>", or "OK".
  std::string ToString() const {
    if (ok()) return "OK";
    return std::string(CodeName(code_)) + ": " + message_;
  }

  // For a call whose failure is deliberately not looked at (the status is [[nodiscard]]).
  void IgnoreError() const {}

  // Returns a copy whose message is prefixed by `context` (e.g. the file being read).
  Status WithContext(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

  static const char* CodeName(Code c) {
    switch (c) {
      case Code::kOk:
        return "OK";
      case Code::kCancelled:
        return "cancelled";
      case Code::kUnknown:
        return "unknown";
      case Code::kInvalidArgument:
        return "invalid argument";
      case Code::kDeadlineExceeded:
        return "deadline exceeded";
      case Code::kNotFound:
        return "not found";
      case Code::kAlreadyExists:
        return "already exists";
      case Code::kPermissionDenied:
        return "permission denied";
      case Code::kResourceExhausted:
        return "resource exhausted";
      case Code::kFailedPrecondition:
        return "failed precondition";
      case Code::kAborted:
        return "aborted";
      case Code::kOutOfRange:
        return "out of range";
      case Code::kUnimplemented:
        return "unimplemented";
      case Code::kInternal:
        return "internal error";
      case Code::kUnavailable:
        return "unavailable";
      case Code::kIOError:
        return "I/O error";
      case Code::kDataLoss:
        return "corruption";
      case Code::kUnauthenticated:
        return "unauthenticated";
    }
    return "unknown";
  }

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

// Either a value or a non-OK status. Accessing value() of a failed StatusOr is a bug. Made from
// an OK Status (which has no value to hold) it holds kInternal saying so, never an ok() without
// a value.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status s)  // NOLINT: implicit by design
      : status_(s.ok() ? Status::Internal("a StatusOr was made from an OK status, without a value") : std::move(s)) {}
  StatusOr(T v) : value_(std::move(v)) {}        // NOLINT: implicit by design

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

// The status of a Status or a StatusOr: for code that handles both alike.
inline const Status& GetStatus(const Status& s) { return s; }
template <typename T>
const Status& GetStatus(const StatusOr<T>& s) {
  return s.status();
}

}  // namespace flap

#define FLAP_CONCAT_INNER_(a, b) a##b
#define FLAP_CONCAT_(a, b) FLAP_CONCAT_INNER_(a, b)

// Returns early from the enclosing function if `expr` (a Status) is not OK.
#define FLAP_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::flap::Status flap_status_ = (expr);        \
    if (!flap_status_.ok()) return flap_status_; \
  } while (0)

// Declares `lhs` from a StatusOr expression, returning its status early on failure.
#define FLAP_ASSIGN_OR_RETURN(lhs, expr) FLAP_ASSIGN_OR_RETURN_IMPL_(FLAP_CONCAT_(flap_statusor_, __LINE__), lhs, expr)
#define FLAP_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
