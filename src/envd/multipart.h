// An incremental multipart/form-data parser (RFC 7578 / RFC 2046) for
// POST /files. It is fed the body in arbitrary chunks and reports each part's
// headers, then its data in pieces, then its end; it holds at most one part
// header block (bounded) and a delimiter's length of data, so a large upload
// streams straight through it.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::envd {

// A part's headers, with the Content-Disposition parameters the upload needs.
struct MultipartPart {
  std::map<std::string, std::string> headers;  // lowercased names
  std::string name;                            // Content-Disposition name=""
  std::optional<std::string> filename;         // filename="" exactly as sent (not a basename)
};

struct MultipartCallbacks {
  std::function<Status(const MultipartPart&)> on_part_begin;
  std::function<Status(std::string_view)> on_part_data;
  std::function<Status()> on_part_end;
};

class MultipartParser {
 public:
  // The largest header block of one part; more is an error of kind kTooLarge.
  static constexpr size_t kMaxHeaderBytes = 16 * 1024;

  MultipartParser(std::string boundary, MultipartCallbacks cb);

  // Parses the next chunk of the body. A malformed body is an error of kind
  // kInvalidArgument; callback errors are passed through. After an error the
  // parser must not be fed again.
  Status feed(std::string_view chunk);
  // Declares the end of the body: an error unless the closing delimiter was seen.
  Status finish();
  // The closing delimiter has been seen (the rest is epilogue, ignored).
  bool done() const { return state_ == State::kEpilogue; }
  // Parts begun so far.
  size_t parts() const { return parts_; }

 private:
  enum class State { kPreamble, kAfterDelimiter, kHeaders, kBody, kEpilogue };
  Status run();
  Status parse_headers(std::string_view block);

  std::string dash_boundary_;   // "--" + boundary
  std::string delimiter_;       // "\r\n--" + boundary
  MultipartCallbacks cb_;
  State state_ = State::kPreamble;
  std::string buf_;             // unconsumed input
  size_t pos_ = 0;              // start of the unconsumed input in buf_
  size_t parts_ = 0;
  bool in_part_ = false;
  bool at_body_start_ = true;   // nothing consumed yet
};

// The boundary parameter of a multipart Content-Type; kInvalidArgument when
// the type is not multipart or has no usable boundary.
Result<std::string> multipart_boundary(std::string_view content_type);

// Splits a header value such as `form-data; name="file"; filename="a b.txt"`
// into its lowercased type and parameters (lowercased names; quoted values
// unescaped, where a backslash escapes only '"' and '\', as Go's mime package
// does, so Windows-style paths survive). kInvalidArgument when malformed.
struct MediaType {
  std::string type;
  std::map<std::string, std::string> params;
};
Result<MediaType> parse_media_type(std::string_view value);

}  // namespace coppice::envd
