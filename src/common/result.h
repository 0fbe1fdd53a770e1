// Errors as values: every fallible operation returns Result<T>.
//
// An Error carries a category (what kind of failure, which decides how it is
// reported to a client), the errno of the failing syscall if there was one, and
// a message that gains context as the error travels up ("mount overlay for
// sandbox X: open upper: ENOSPC").
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace coppice {

enum class ErrorCode {
  kInternal,          // a bug or an unexpected kernel answer
  kInvalidArgument,   // the caller's input is wrong
  kNotFound,          // the named object does not exist
  kAlreadyExists,     // the object exists and must not
  kPermissionDenied,  // the caller may not do this
  kUnauthenticated,   // the caller did not prove who it is
  kFailedPrecondition,// wrong state for this action
  kResourceExhausted, // a limit was reached (memory, disk, pids, quota)
  kUnavailable,       // try again later
  kDeadlineExceeded,  // the operation ran out of time
  kCanceled,          // the caller went away
  kUnimplemented,     // not supported
  kTooLarge,          // the input exceeds a size limit
};

std::string_view error_code_name(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message, int sys_errno = 0)
      : code_(code), errno_(sys_errno), message_(std::move(message)) {}

  // An error from a failed syscall: the category is derived from errno.
  static Error from_errno(int err, std::string_view step);

  ErrorCode code() const { return code_; }
  int sys_errno() const { return errno_; }
  const std::string& message() const { return message_; }

  // Prepends context: "context: <message>".
  Error& context(std::string_view ctx) &;
  Error&& context(std::string_view ctx) &&;

  // The full message, with the errno name when there is one.
  std::string to_string() const;

 private:
  ErrorCode code_;
  int errno_;
  std::string message_;
};

template <typename T>
using Result = std::expected<T, Error>;

using Status = std::expected<void, Error>;

inline std::unexpected<Error> make_error(ErrorCode code, std::string message, int sys_errno = 0) {
  return std::unexpected<Error>(Error(code, std::move(message), sys_errno));
}

// The error for the current errno, for a failed syscall named by `step`.
inline std::unexpected<Error> errno_error(std::string_view step, int err = errno) {
  return std::unexpected<Error>(Error::from_errno(err, step));
}

inline Status ok() { return {}; }

// Maps errno values to an ErrorCode (ENOENT -> kNotFound, EEXIST -> kAlreadyExists, ...).
ErrorCode error_code_for_errno(int err);

// "ENOENT" for 2, and so on.
std::string_view errno_name(int err);

}  // namespace coppice

// Propagates an error from an expression returning Result/Status, adding context.
#define COPPICE_TRY_CTX(expr, ctx)                                      \
  do {                                                                  \
    auto coppice_try_r_ = (expr);                                       \
    if (!coppice_try_r_) return std::unexpected(std::move(coppice_try_r_.error()).context(ctx)); \
  } while (0)

// Propagates an error from an expression returning Result/Status unchanged.
#define COPPICE_TRY(expr)                                                              \
  do {                                                                                 \
    auto coppice_try_r_ = (expr);                                                      \
    if (!coppice_try_r_) return std::unexpected(std::move(coppice_try_r_.error()));   \
  } while (0)

#define COPPICE_CONCAT_INNER_(a, b) a##b
#define COPPICE_CONCAT_(a, b) COPPICE_CONCAT_INNER_(a, b)

// `lhs` (a declaration such as `auto x` or an lvalue) takes the value of a
// Result-returning `expr`; an error returns from the enclosing function.
//   COPPICE_ASSIGN_OR_RETURN(auto fd, sys::open_file(path, O_RDONLY));
#define COPPICE_ASSIGN_OR_RETURN(lhs, expr) \
  COPPICE_ASSIGN_OR_RETURN_IMPL_(COPPICE_CONCAT_(coppice_aor_, __LINE__), lhs, expr, return)
// The same inside a coroutine (co_return). `expr` may contain co_await; it
// is evaluated into a named local first (g++ 12 mishandles temporaries that
// live across a co_await inside a larger expression).
#define COPPICE_CO_ASSIGN_OR_RETURN(lhs, expr) \
  COPPICE_ASSIGN_OR_RETURN_IMPL_(COPPICE_CONCAT_(coppice_aor_, __LINE__), lhs, expr, co_return)
#define COPPICE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr, ret)        \
  auto tmp = (expr);                                               \
  if (!tmp) ret std::unexpected(std::move(tmp.error()));           \
  lhs = std::move(*tmp)

// COPPICE_TRY for coroutines.
#define COPPICE_CO_TRY(expr)                                                             \
  do {                                                                                   \
    auto coppice_try_r_ = (expr);                                                        \
    if (!coppice_try_r_) co_return std::unexpected(std::move(coppice_try_r_.error()));  \
  } while (0)
