// GET and POST /files: streamed downloads and uploads (multipart with the
// destination path as each part's filename, or a raw octet-stream body), gzip
// in both directions, X-Metadata-* headers as xattrs, and v1 URL signatures.
#pragma once

#include "envd/envd.h"

namespace coppice::envd {

// Serves GET or POST /files, including its own authentication (the access
// token header or a valid signature).
asio::awaitable<void> handle_files(Envd& envd, http::Exchange& ex);

// "v1_" + base64(sha256("<path>:<read|write>:<user>:<token>[:<expiration>]")) without padding.
std::string file_signature(std::string_view path, std::string_view operation, std::string_view user,
                           std::string_view token, std::optional<int64_t> expiration);

}  // namespace coppice::envd
