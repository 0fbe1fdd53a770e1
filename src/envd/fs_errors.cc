#include "envd/fs_errors.h"

#include <cerrno>

namespace coppice::envd {

bool is_out_of_space(const Error& e) { return e.sys_errno() == ENOSPC || e.sys_errno() == EDQUOT; }

unsigned files_http_status(const Error& e) {
  if (is_out_of_space(e)) return 507;
  switch (e.code()) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kFailedPrecondition:
    case ErrorCode::kAlreadyExists:
      return 400;
    case ErrorCode::kUnauthenticated: return 401;
    case ErrorCode::kPermissionDenied: return 403;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kTooLarge: return 413;
    case ErrorCode::kUnimplemented: return 501;
    // Other exhaustion (fds, memory) is envd's own trouble, not the client's.
    default: return 500;
  }
}

connect::Code fs_rpc_code(const Error& e) {
  if (is_out_of_space(e)) return connect::Code::internal;
  return connect::code_for(e.code());
}

std::string fs_error_message(const Error& e) {
  const std::string& m = e.message();
  if (e.sys_errno() == ENOSPC) return m.starts_with("not enough disk space") ? m : "not enough disk space: " + m;
  if (e.sys_errno() == EDQUOT) return "disk quota exceeded: " + m;
  return m;
}

}  // namespace coppice::envd
