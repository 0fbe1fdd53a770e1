// The Connect envelope parser (http/connect.h): a byte stream fed in pieces of
// any size must give the same envelopes as the whole stream at once, every
// envelope re-encodes to the bytes it was read from, and nothing over the
// size limit or with unknown flags is accepted.
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "http/connect.h"

using namespace coppice;

namespace {
struct Parsed {
  std::vector<connect::Envelope> envelopes;
  bool failed = false;
  size_t consumed = 0;
};

Parsed parse(std::string_view stream, size_t piece) {
  Parsed out;
  connect::EnvelopeReader r;
  size_t fed = 0;
  while (!out.failed) {
    for (;;) {
      auto e = r.next();
      if (!e) {
        out.failed = true;
        break;
      }
      if (!*e) break;
      FUZZ_CHECK(((*e)->flags & ~(connect::kFlagCompressed | connect::kFlagEndStream)) == 0, "unknown flag accepted");
      FUZZ_CHECK((*e)->payload.size() <= connect::kMaxMessageBytes, "oversized envelope accepted");
      out.consumed += 5 + (*e)->payload.size();
      out.envelopes.push_back(std::move(**e));
    }
    if (out.failed || fed == stream.size()) break;
    size_t n = std::min(piece, stream.size() - fed);
    r.feed(stream.substr(fed, n));
    fed += n;
  }
  FUZZ_CHECK(out.failed || out.consumed + r.buffered() == stream.size(), "bytes lost");
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  size_t piece = 1 + in.byte() % 64;
  std::string_view stream = in.rest();

  Parsed whole = parse(stream, stream.size() + 1);
  Parsed pieces = parse(stream, piece);
  FUZZ_CHECK(whole.failed == pieces.failed, "outcome depends on how the stream is split");
  FUZZ_CHECK(whole.envelopes.size() == pieces.envelopes.size(), "envelope count depends on the split");
  std::string again;
  for (size_t i = 0; i < whole.envelopes.size(); ++i) {
    const auto& a = whole.envelopes[i];
    const auto& b = pieces.envelopes[i];
    FUZZ_CHECK(a.flags == b.flags && a.payload == b.payload, "envelope differs with the split");
    again += connect::envelope(a.payload, a.flags);
  }
  FUZZ_CHECK(stream.substr(0, again.size()) == again, "envelopes do not re-encode to their bytes");

  // A server-streaming request body: exactly one plain envelope.
  auto one = connect::single_envelope(stream);
  if (one) {
    FUZZ_CHECK(connect::envelope(*one) == stream, "single envelope does not re-encode to the body");
    // What the router does with it next.
    auto req = nlohmann::json::parse(one->empty() ? std::string_view("{}") : std::string_view(*one), nullptr, false);
    if (!req.is_discarded()) (void)req.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  // The end-stream frame carries any message.
  connect::RpcError err = connect::rpc_error(connect::Code::invalid_argument, std::string(stream));
  std::string frame = connect::end_stream(&err);
  FUZZ_CHECK(!frame.empty() && static_cast<uint8_t>(frame[0]) == connect::kFlagEndStream, "end-stream flag");
  return 0;
}
