#include "http/connect.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "common/test_temp_dir.h"
#include "common/test_unix_socket.h"

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

// Error messages may quote bytes that are not UTF-8 (a request path, a file
// name): the frame is still JSON, with U+FFFD in their place, not an exception.
TEST(ConnectEnvelope, EndStreamWithInvalidUtf8Message) {
  RpcError err{Code::not_found, "no such file: /tmp/\xff\xfe.txt"};
  std::string frame;
  ASSERT_NO_THROW(frame = end_stream(&err));
  auto j = nlohmann::json::parse(frame.substr(5), nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["error"]["message"], "no such file: /tmp/\xef\xbf\xbd\xef\xbf\xbd.txt");
}

// A router behind the real server: an unknown method whose path is not UTF-8
// gets Connect's answer for it (501 unimplemented), not a 500 from the server.
TEST(ConnectRouter, UnknownMethodWithInvalidUtf8Path) {
  test_util::TempDir dir{"coppice-connect"};
  std::string path = (dir.path() / "s.sock").string();
  http::asio::io_context io;
  Router router;
  router.unary("/svc.S/Known", [](CallContext&, const json&) -> http::asio::awaitable<std::expected<json, RpcError>> {
    co_return json::object();
  });
  http::Server server(io, [&router](http::Exchange& ex) { return router.serve(ex); });
  ASSERT_TRUE(server.listen_unix(path).has_value());
  std::thread t([&io] { io.run(); });

  const int fd = test_util::connect_unix(path);
  ASSERT_GE(fd, 0);
  std::string req = "POST /svc.S/\xff HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  ::close(fd);
  io.stop();
  t.join();
  EXPECT_TRUE(got.starts_with("HTTP/1.1 501 ")) << got;
  EXPECT_NE(got.find(R"("code":"unimplemented")"), std::string::npos) << got;
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
