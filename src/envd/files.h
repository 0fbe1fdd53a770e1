// GET and POST /files: streamed downloads and uploads (multipart with the
// destination path as each part's filename, or a raw octet-stream body), gzip
// in both directions, X-Metadata-* headers as xattrs, and v1 URL signatures.
#pragma once

#include "common/file_signature.h"
#include "envd/envd.h"

namespace coppice::envd {

// Serves GET or POST /files, including its own authentication (the access
// token header or a valid signature).
asio::awaitable<void> handle_files(Envd& envd, http::Exchange& ex);

using coppice::file_signature;  // common/file_signature.h

}  // namespace coppice::envd
