#include "tls/tls_front.h"

#include <sys/socket.h>

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "common/test_temp_dir.h"
#include "tls/test_cert.h"

namespace coppice::tls {
namespace {

using namespace std::chrono_literals;
using asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

asio::awaitable<void> handler(http::Exchange& ex) {
  co_await ex.respond(200, "hello " + std::string(ex.target()), "text/plain");
}

// A plain HTTP server behind a TLS front on loopback, on its own thread.
class TlsFrontTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cert_ = (dir_.path() / "c.pem").string();
    key_ = (dir_.path() / "k.pem").string();
    std::ofstream(cert_) << testing::kTestCert;
    std::ofstream(key_) << testing::kTestKey;
    auto ctx = load_server_context(cert_, key_);
    ASSERT_TRUE(ctx) << ctx.error().to_string();
    http::ServerOptions o;
    o.limits.max_total = 8;
    o.limits.max_per_client = 8;
    server_ = std::make_unique<http::Server>(io_, handler, o);
    front_ = std::make_unique<TlsFront>(io_, *server_, *ctx, 300ms);
    auto port = front_->listen_tcp("127.0.0.1", 0);
    ASSERT_TRUE(port) << port.error().to_string();
    port_ = *port;
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    io_.stop();
    thread_.join();
  }
  // A blocking TCP connection to the front.
  int connect_tcp() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port_);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    return fd;
  }
  // Reads until EOF (or the 5 s receive timeout); returns what came and how long it took.
  static std::pair<std::string, std::chrono::milliseconds> read_to_eof(int fd) {
    auto t0 = std::chrono::steady_clock::now();
    std::string out;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return {out, std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)};
  }

  test_util::TempDir dir_{"coppice-tls"};
  std::string cert_, key_;
  asio::io_context io_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<TlsFront> front_;
  uint16_t port_ = 0;
  std::thread thread_;
};

// The front and connect_tls_upstream (the proxy's side for httpsPorts)
// against each other: a request and its answer through both, twice on one
// connection.
TEST_F(TlsFrontTest, RequestsPassThroughTheFrontAndTheUpstreamClient) {
  asio::io_context cio;
  std::string got;
  asio::co_spawn(
      cio,
      [&]() -> asio::awaitable<void> {
        tcp::socket s(cio);
        auto [cec] = co_await s.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), kTuple);
        EXPECT_FALSE(cec) << cec.message();
        const std::chrono::steady_clock::duration timeout = 2s;
        auto plain = co_await connect_tls_upstream(std::move(s), "localhost", timeout);
        EXPECT_TRUE(plain) << plain.error().to_string();
        if (!plain) co_return;
        for (const char* target : {"/one", "/two"}) {
          std::string req = std::string("GET ") + target + " HTTP/1.1\r\nHost: x\r\n\r\n";
          co_await asio::async_write(*plain, asio::buffer(req), kTuple);
          http::beast::flat_buffer buf;
          http::bhttp::response<http::bhttp::string_body> res;
          auto [ec, n] = co_await http::bhttp::async_read(*plain, buf, res, kTuple);
          EXPECT_FALSE(ec) << ec.message();
          got += res.body() + ";";
        }
      },
      asio::detached);
  cio.run();
  EXPECT_EQ(got, "hello /one;hello /two;");
}

TEST_F(TlsFrontTest, PlainHttpIsClosedAndASilentHandshakeIsTimedOut) {
  int fd = connect_tcp();
  const std::string req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  auto [plain, t1] = read_to_eof(fd);
  EXPECT_EQ(plain.find("HTTP/1.1 200"), std::string::npos) << plain;
  ::close(fd);
  // Three bytes of a record header, then nothing: dropped at the handshake timeout.
  fd = connect_tcp();
  const char partial[] = {0x16, 0x03, 0x01};
  ASSERT_EQ(::send(fd, partial, sizeof partial, MSG_NOSIGNAL), 3);
  auto [silent, t2] = read_to_eof(fd);
  EXPECT_TRUE(silent.empty());
  EXPECT_GE(t2, 200ms);
  EXPECT_LT(t2, 3000ms);
  ::close(fd);
  // Both connections are gone from the server's table.
  for (int i = 0; i < 200 && server_->connections() != 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(server_->connections(), 0u);
}

TEST_F(TlsFrontTest, ABadCertificateOrKeyIsOneClearError) {
  const std::string junk = (dir_.path() / "junk.pem").string();
  std::ofstream(junk) << "not a certificate\n";
  auto a = load_server_context(junk, key_);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().message().rfind("--tls-cert " + junk + ": ", 0), 0u) << a.error().message();
  auto b = load_server_context(cert_, junk);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().message().rfind("--tls-key " + junk, 0), 0u) << b.error().message();
  auto c = load_server_context(cert_, (dir_.path() / "missing.pem").string());
  EXPECT_FALSE(c);
  for (const auto* r : {&a, &b, &c}) EXPECT_EQ(r->error().message().find('\n'), std::string::npos);
}

}  // namespace
}  // namespace coppice::tls
