// E2B's signed file URLs (uploadUrl/downloadUrl): envd checks them, and the
// gateway uses them to find the sandbox a signed URL is for when it arrives
// without the sandbox's id (single-port mode).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace coppice {

// "v1_" + base64(sha256("<path>:<read|write>:<user>:<token>[:<expiration>]"))
// without padding.
std::string file_signature(std::string_view path, std::string_view operation, std::string_view user,
                           std::string_view token, std::optional<int64_t> expiration);

}  // namespace coppice
