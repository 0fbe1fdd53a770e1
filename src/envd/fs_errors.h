// How envd reports a failed file-system operation: the one mapping from an
// Error (its kind and errno) to the HTTP status of /files and to the Connect
// code of the filesystem RPCs.
//
//   ENOSPC, EDQUOT   out of space or quota: /files answers 507 Insufficient
//                    Storage, as E2B's envd does (the SDK raises
//                    NotEnoughSpaceError). The RPCs answer `internal`, as
//                    E2B's envd does: the SDK turns `resource_exhausted`
//                    into a RateLimitError ("try again later"), which a
//                    full disk is not. The message says which it is.
//   EROFS            a read-only file system: 403 / permission_denied. It is
//                    not a lack of space, and waiting does not help.
//   EACCES, EPERM    403 / permission_denied: the requesting user may not.
//   other kinds      by ErrorCode (not found 404, invalid 400, ...).
#pragma once

#include <string>

#include "common/result.h"
#include "http/connect.h"

namespace coppice::envd {

// True for ENOSPC and EDQUOT.
bool is_out_of_space(const Error& e);

// The HTTP status of a /files error response.
unsigned files_http_status(const Error& e);

// The Connect code of a filesystem RPC error.
connect::Code fs_rpc_code(const Error& e);

// The message for the client: the error's own, led by "not enough disk
// space" or "disk quota exceeded" when that is the cause.
std::string fs_error_message(const Error& e);

}  // namespace coppice::envd
