// Streaming gzip over zlib, for GET /files (Accept-Encoding: gzip) and
// POST /files (Content-Encoding: gzip). Both directions work on arbitrary
// chunks with bounded memory: the encoder's output per call is about the size
// of its input, and the decoder hands its output to a sink in pieces of at
// most kGzipOutChunk bytes, so a small, highly compressed body ("gzip bomb")
// never becomes a large buffer.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::envd {

inline constexpr size_t kGzipOutChunk = 64 * 1024;

// Compresses into one gzip member.
class GzipEncoder {
 public:
  explicit GzipEncoder(int level = 6);
  ~GzipEncoder();
  GzipEncoder(GzipEncoder&&) noexcept;
  GzipEncoder& operator=(GzipEncoder&&) noexcept;

  // Compresses `in`, appending whatever output zlib releases to `out`.
  Status update(std::string_view in, std::string& out);
  // Flushes the rest and the gzip trailer into `out`; the encoder is then spent.
  Status finish(std::string& out);

 private:
  Status run(std::string_view in, int flush, std::string& out);
  struct State;
  std::unique_ptr<State> s_;
};

// Decompresses a gzip stream, including several concatenated members (as
// gzip(1) and Go's reader accept). Malformed or truncated input is an error of
// kind kInvalidArgument.
class GzipDecoder {
 public:
  using Sink = std::function<Status(std::string_view)>;

  GzipDecoder();
  ~GzipDecoder();
  GzipDecoder(GzipDecoder&&) noexcept;
  GzipDecoder& operator=(GzipDecoder&&) noexcept;

  // Feeds compressed bytes; decompressed output goes to `sink` in pieces of at
  // most kGzipOutChunk bytes. A sink error stops decoding and is returned.
  Status update(std::string_view in, const Sink& sink);
  // Declares the end of the input: an error unless a complete member ended it.
  Status finish();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// One-shot helpers (tests and small bodies).
Result<std::string> gzip_compress(std::string_view data, int level = 6);
Result<std::string> gzip_decompress(std::string_view data);

}  // namespace coppice::envd
