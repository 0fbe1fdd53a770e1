#include "http/server.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "common/test_temp_dir.h"

namespace coppice::http {
namespace {

using namespace std::chrono_literals;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

bhttp::request_header<> head(unsigned version, std::vector<std::pair<std::string, std::string>> fields) {
  bhttp::request_header<> h;
  h.method(bhttp::verb::get);
  h.target("/");
  h.version(version);
  for (auto& [k, v] : fields) h.insert(k, v);
  return h;
}

TEST(HttpUpgrade, IsUpgradeRequest) {
  EXPECT_TRUE(is_upgrade_request(head(11, {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}})));
  EXPECT_TRUE(is_upgrade_request(head(11, {{"Connection", "keep-alive, upgrade"}, {"Upgrade", "websocket"}})));
  // Connection options add up across fields.
  EXPECT_TRUE(is_upgrade_request(head(11, {{"Connection", "keep-alive"}, {"Connection", "upgrade"}, {"Upgrade", "h2c"}})));
  EXPECT_FALSE(is_upgrade_request(head(11, {{"Upgrade", "websocket"}})));
  EXPECT_FALSE(is_upgrade_request(head(11, {{"Connection", "upgrade"}})));
  EXPECT_FALSE(is_upgrade_request(head(11, {{"Connection", "upgrade"}, {"Upgrade", " "}})));
  EXPECT_FALSE(is_upgrade_request(head(11, {{"Connection", "close"}, {"Upgrade", "websocket"}})));
  EXPECT_FALSE(is_upgrade_request(head(11, {{"Connection", "upgraded"}, {"Upgrade", "websocket"}})));
  EXPECT_TRUE(is_upgrade_request(head(11, {{"Connection", "UPGRADE,keep-alive"}, {"Upgrade", "websocket"}})));
  // RFC 9110 section 7.8: a server ignores Upgrade in an HTTP/1.0 request.
  EXPECT_FALSE(is_upgrade_request(head(10, {{"Connection", "upgrade"}, {"Upgrade", "websocket"}})));
}

// Echoes bytes on a taken-over connection until the peer's EOF, then closes.
asio::awaitable<void> echo(Upgraded conn) {
  auto& buf = conn.read_ahead;
  for (;;) {
    if (buf.size() > 0) {
      auto [ec, n] = co_await asio::async_write(conn.socket, buf.data(), kTuple);
      if (ec) break;
      buf.consume(n);
    }
    auto [ec, n] = co_await conn.socket.async_read_some(buf.prepare(4096), kTuple);
    if (ec) break;
    buf.commit(n);
  }
  boost::system::error_code ig;
  conn.socket.close(ig);
}

asio::awaitable<void> handler(Exchange& ex) {
  if (ex.path() == "/echo") {
    // A named list: g++ 12 cannot build a braced initializer list inside a co_await.
    const Fields extra{{"X-Extra", "1"}, {"Set-Cookie", "a=1"}, {"Set-Cookie", "b=2"}};
    auto conn = co_await ex.switch_protocols("echo", extra);
    if (!conn) {
      co_await ex.respond_json(409, conn.error().message());
      co_return;
    }
    co_await echo(std::move(*conn));
    co_return;
  }
  if (ex.path() == "/body") {
    auto body = co_await ex.read_body(1 << 20);
    if (!body) {
      co_await ex.respond_json(400, body.error().message());
      co_return;
    }
    co_await ex.respond(200, *body, "text/plain");
    co_return;
  }
  co_await ex.respond(200, "plain", "text/plain");
}

// A server on a unix socket in a temp dir, run on its own thread; the test
// talks to it with blocking sockets.
class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (dir_.path() / "s.sock").string();
    ASSERT_TRUE(server_.listen_unix(path_).has_value());
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    io_.stop();
    thread_.join();
  }
  int connect() {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path_.c_str(), sizeof sa.sun_path - 1);
    timeval tv{5, 0};  // a hung test fails instead of hanging
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) ADD_FAILURE() << "connect: " << strerror(errno);
    return fd;
  }
  static void send_all(int fd, std::string_view s) {
    ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
  }
  // Reads until `pred(data)` holds or the peer closes.
  template <typename Pred>
  static std::string read_until(int fd, Pred pred) {
    std::string out;
    char tmp[4096];
    while (!pred(out)) {
      ssize_t n = ::read(fd, tmp, sizeof tmp);
      if (n <= 0) break;
      out.append(tmp, static_cast<size_t>(n));
    }
    return out;
  }
  // A response head and then `extra` more bytes.
  static std::string read_head_and(int fd, size_t extra) {
    return read_until(fd, [extra](const std::string& s) {
      size_t end = s.find("\r\n\r\n");
      return end != std::string::npos && s.size() >= end + 4 + extra;
    });
  }

  test_util::TempDir dir_{"coppice-http-server"};
  std::string path_;
  asio::io_context io_;
  Server server_{io_, handler};
  std::thread thread_;
};

TEST_F(ServerTest, SwitchProtocolsHandsOverTheSocketAndTheBytesReadAhead) {
  int fd = connect();
  // The request and the first bytes of the new protocol in one write: the
  // server reads them together, and the bytes must reach the new owner.
  send_all(fd, "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: echo\r\n\r\nEARLY");
  std::string got = read_head_and(fd, 5);
  size_t end = got.find("\r\n\r\n");
  ASSERT_NE(end, std::string::npos) << got;
  std::string head = got.substr(0, end + 2);
  EXPECT_TRUE(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n")) << head;
  EXPECT_NE(head.find("\r\nConnection: upgrade\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nUpgrade: echo\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nX-Extra: 1\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nSet-Cookie: a=1\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nSet-Cookie: b=2\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("Content-Length"), std::string::npos) << head;
  EXPECT_EQ(head.find("Transfer-Encoding"), std::string::npos) << head;
  EXPECT_EQ(got.substr(end + 4), "EARLY");
  // What looks like HTTP is now just bytes to the new owner.
  send_all(fd, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(read_until(fd, [](const std::string& s) { return s.size() >= 18; }), "GET / HTTP/1.1\r\n\r\n");
  ::shutdown(fd, SHUT_WR);
  char c;
  EXPECT_EQ(::read(fd, &c, 1), 0);  // the owner closed; the server did not answer or reuse it
  ::close(fd);
}

TEST_F(ServerTest, SwitchProtocolsIsRefusedWithoutAnUpgradeRequest) {
  int fd = connect();
  send_all(fd, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string got = read_until(fd, [](const std::string& s) { return s.find("did not ask") != std::string::npos; });
  // Nothing was written before the refusal, and the connection still serves HTTP.
  EXPECT_TRUE(got.starts_with("HTTP/1.1 409 ")) << got;
  send_all(fd, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  got = read_until(fd, [](const std::string& s) { return s.find("plain") != std::string::npos; });
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200 ")) << got;
  ::close(fd);
}

TEST_F(ServerTest, SwitchProtocolsIsRefusedWhileRequestBodyIsUnread) {
  int fd = connect();
  send_all(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\nContent-Length: 4\r\n\r\nbody");
  std::string got = read_until(fd, [](const std::string& s) { return s.find("not been read") != std::string::npos; });
  EXPECT_TRUE(got.starts_with("HTTP/1.1 409 ")) << got;
  ::close(fd);
}

TEST_F(ServerTest, AnyOtherAnswerToAnUpgradeRequestClosesTheConnection) {
  int fd = connect();
  // Bytes of the asked-for protocol follow at once; they must not be served as HTTP.
  send_all(fd, "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
               "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string got = read_until(fd, [](const std::string&) { return false; });  // to EOF
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200 ")) << got;
  EXPECT_NE(got.find("\r\nConnection: close\r\n"), std::string::npos) << got;
  EXPECT_EQ(got.find("HTTP/1.1", 1), std::string::npos) << "a second response: " << got;
  ::close(fd);
}

// A client that stops sending in the middle of a body (its half of the
// connection closed) gets a 400, and then the server closes the connection
// instead of waiting forever on a socket that has already said EOF.
TEST_F(ServerTest, BodyCutShortIsAnsweredAndTheConnectionClosed) {
  for (std::string body : {std::string("Content-Length: 100\r\n\r\nhello"),
                           std::string("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n5\r\n")}) {
    int fd = connect();
    send_all(fd, "POST /body HTTP/1.1\r\nHost: x\r\n" + body);
    ::shutdown(fd, SHUT_WR);
    std::string got;
    char tmp[4096];
    ssize_t n;
    while ((n = ::read(fd, tmp, sizeof tmp)) > 0) got.append(tmp, static_cast<size_t>(n));
    EXPECT_EQ(n, 0) << "the connection was not closed (read: " << strerror(errno) << ")";
    EXPECT_TRUE(got.starts_with("HTTP/1.1 400 ")) << got;
    ::close(fd);
  }
}

}  // namespace
}  // namespace coppice::http
