// Base64 (RFC 4648, standard alphabet): protobuf JSON's bytes and envd's
// file-URL signatures.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice {

// With '=' padding.
std::string base64_encode(std::string_view data);
// Standard or URL-safe alphabet, padding optional; kInvalidArgument otherwise.
Result<std::string> base64_decode(std::string_view text);

}  // namespace coppice
