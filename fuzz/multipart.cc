// The multipart/form-data parser of POST /files (envd/multipart.h): the body
// fed in pieces of any size must give the same parts, headers and data as the
// whole body at once; callbacks come in order (begin, data..., end); the
// Content-Type and Content-Disposition parsers take any header value.
#include <string>
#include <vector>

#include "envd/multipart.h"
#include "fuzz_check.h"

using namespace coppice;
using namespace coppice::envd;

namespace {
struct Part {
  std::string name;
  std::optional<std::string> filename;
  std::string data;
  bool ended = false;
};

struct Outcome {
  std::vector<Part> parts;
  bool ok = false;
  bool done = false;
  ErrorCode code = ErrorCode::kInternal;
};

Outcome run(const std::string& boundary, std::string_view body, size_t piece) {
  Outcome out;
  bool in_part = false;
  MultipartParser parser(boundary, MultipartCallbacks{
                                       [&](const MultipartPart& p) -> Status {
                                         FUZZ_CHECK(!in_part, "part begins inside a part");
                                         in_part = true;
                                         out.parts.push_back({p.name, p.filename, "", false});
                                         return ok();
                                       },
                                       [&](std::string_view d) -> Status {
                                         FUZZ_CHECK(in_part, "data outside a part");
                                         out.parts.back().data.append(d);
                                         return ok();
                                       },
                                       [&]() -> Status {
                                         FUZZ_CHECK(in_part, "end outside a part");
                                         in_part = false;
                                         out.parts.back().ended = true;
                                         return ok();
                                       }});
  Status st = ok();
  for (size_t at = 0; st && at < body.size(); at += piece) st = parser.feed(body.substr(at, piece));
  if (st) st = parser.finish();
  out.ok = st.has_value();
  if (!st) out.code = st.error().code();
  out.done = parser.done();
  FUZZ_CHECK(parser.parts() == out.parts.size(), "parts() disagrees with the callbacks");
  size_t data = 0;
  for (const auto& p : out.parts) data += p.data.size();
  FUZZ_CHECK(data <= body.size(), "more data out than in");
  if (out.ok) FUZZ_CHECK(!in_part && out.done, "finish() succeeded inside a part");
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  size_t piece = 1 + in.byte() % 32;
  std::string boundary(in.take(1 + in.byte() % 70));
  std::string_view body = in.rest();

  // Header values as a client sends them.
  (void)multipart_boundary("multipart/form-data; boundary=" + boundary);
  (void)parse_media_type(body.substr(0, body.find('\n')));
  auto b = multipart_boundary(body.substr(0, body.find('\n')));
  if (b) FUZZ_CHECK(!b->empty(), "empty boundary accepted");

  Outcome whole = run(boundary, body, body.size() + 1);
  Outcome pieces = run(boundary, body, piece);
  FUZZ_CHECK(whole.ok == pieces.ok, "outcome depends on the split");
  if (!whole.ok) {
    FUZZ_CHECK(whole.code == pieces.code, "error kind depends on the split");
    return 0;
  }
  FUZZ_CHECK(whole.parts.size() == pieces.parts.size(), "part count depends on the split");
  for (size_t i = 0; i < whole.parts.size(); ++i) {
    const auto& x = whole.parts[i];
    const auto& y = pieces.parts[i];
    FUZZ_CHECK(x.name == y.name && x.filename == y.filename && x.data == y.data && x.ended == y.ended,
               "part differs with the split");
  }
  return 0;
}
