#include "common/result.h"

#include <cstring>

namespace coppice {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInternal: return "internal";
    case ErrorCode::kInvalidArgument: return "invalid_argument";
    case ErrorCode::kNotFound: return "not_found";
    case ErrorCode::kAlreadyExists: return "already_exists";
    case ErrorCode::kPermissionDenied: return "permission_denied";
    case ErrorCode::kUnauthenticated: return "unauthenticated";
    case ErrorCode::kFailedPrecondition: return "failed_precondition";
    case ErrorCode::kResourceExhausted: return "resource_exhausted";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kDeadlineExceeded: return "deadline_exceeded";
    case ErrorCode::kCanceled: return "canceled";
    case ErrorCode::kUnimplemented: return "unimplemented";
    case ErrorCode::kTooLarge: return "too_large";
  }
  return "internal";
}

ErrorCode error_code_for_errno(int err) {
  switch (err) {
    case ENOENT: case ESRCH: return ErrorCode::kNotFound;
    case EEXIST: case ENOTEMPTY: return ErrorCode::kAlreadyExists;
    case EACCES: case EPERM: case EROFS: return ErrorCode::kPermissionDenied;
    case EINVAL: case ENOTDIR: case EISDIR: case ENAMETOOLONG: case ELOOP: case EXDEV:
      return ErrorCode::kInvalidArgument;
    case ENOSPC: case EDQUOT: case ENOMEM: case EMFILE: case ENFILE: case EAGAIN:
      return ErrorCode::kResourceExhausted;
    case ETIMEDOUT: return ErrorCode::kDeadlineExceeded;
    case ENOSYS: case EOPNOTSUPP: return ErrorCode::kUnimplemented;
    default: return ErrorCode::kInternal;
  }
}

std::string_view errno_name(int err) {
  const char* name = strerrorname_np(err);
  return name ? name : "E?";
}

Error Error::from_errno(int err, std::string_view step) {
  std::string msg(step);
  msg += ": ";
  msg += errno_name(err);
  msg += " (";
  msg += strerror(err);
  msg += ")";
  return Error(error_code_for_errno(err), std::move(msg), err);
}

Error& Error::context(std::string_view ctx) & {
  message_ = std::string(ctx) + ": " + message_;
  return *this;
}

Error&& Error::context(std::string_view ctx) && {
  message_ = std::string(ctx) + ": " + message_;
  return std::move(*this);
}

std::string Error::to_string() const { return message_; }

}  // namespace coppice
