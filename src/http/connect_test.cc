#include "http/connect.h"

#include <gtest/gtest.h>

namespace coppice::connect {
namespace {

TEST(ConnectEnvelope, RoundTrip) {
  std::string e = envelope(R"({"a":1})");
  ASSERT_EQ(e.size(), 5u + 7u);
  EXPECT_EQ(e[0], 0);
  EXPECT_EQ(static_cast<unsigned char>(e[4]), 7u);
  auto p = single_envelope(e);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(*p, R"({"a":1})");
}

TEST(ConnectEnvelope, EndStreamFrames) {
  std::string ok = end_stream(nullptr);
  EXPECT_EQ(ok[0], kFlagEndStream);
  EXPECT_EQ(ok.substr(5), "{}");
  RpcError err{Code::not_found, "nope"};
  std::string bad = end_stream(&err);
  auto j = nlohmann::json::parse(bad.substr(5));
  EXPECT_EQ(j["error"]["code"], "not_found");
  EXPECT_EQ(j["error"]["message"], "nope");
}

TEST(ConnectEnvelope, RejectsMalformed) {
  EXPECT_FALSE(single_envelope("").has_value());
  EXPECT_FALSE(single_envelope(std::string("\0\0\0", 3)).has_value());            // short header
  EXPECT_FALSE(single_envelope(std::string("\0\0\0\0\x09{}", 7)).has_value());     // truncated payload
  EXPECT_FALSE(single_envelope(envelope("{}", kFlagCompressed)).has_value());       // compressed
  EXPECT_FALSE(single_envelope(envelope("{}", kFlagEndStream)).has_value());        // end-stream as request
  EXPECT_FALSE(single_envelope(envelope("{}") + "x").has_value());                  // trailing bytes
  EXPECT_FALSE(single_envelope(std::string("\x08\0\0\0\x02{}", 7)).has_value());   // unknown flag
  // A length over the limit is refused before any allocation.
  auto big = single_envelope(std::string("\0\x7f\xff\xff\xff", 5));
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().code(), ErrorCode::kTooLarge);
}

TEST(ConnectEnvelope, IncrementalReader) {
  std::string two = envelope("{\"x\":1}") + envelope("{}", kFlagEndStream);
  EnvelopeReader r;
  for (size_t i = 0; i < two.size(); ++i) {
    r.feed(two.substr(i, 1));
    if (i < 11) {
      auto n = r.next();
      ASSERT_TRUE(n.has_value());
      EXPECT_FALSE(n->has_value()) << i;
    }
  }
  auto a = r.next();
  ASSERT_TRUE(a && *a);
  EXPECT_EQ((*a)->payload, "{\"x\":1}");
  auto b = r.next();
  ASSERT_TRUE(b && *b);
  EXPECT_EQ((*b)->flags, kFlagEndStream);
}

TEST(ConnectCodes, HttpStatusAndNames) {
  EXPECT_EQ(http_status(Code::not_found), 404u);
  EXPECT_EQ(http_status(Code::unauthenticated), 401u);
  EXPECT_EQ(http_status(Code::invalid_argument), 400u);
  EXPECT_EQ(http_status(Code::deadline_exceeded), 504u);
  EXPECT_EQ(http_status(Code::unimplemented), 501u);
  EXPECT_EQ(code_name(Code::already_exists), "already_exists");
  EXPECT_EQ(parse_code("resource_exhausted"), Code::resource_exhausted);
  EXPECT_FALSE(parse_code("bogus").has_value());
  EXPECT_EQ(code_for(ErrorCode::kNotFound), Code::not_found);
}

}  // namespace
}  // namespace coppice::connect
