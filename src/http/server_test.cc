#include "http/server.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "common/test_temp_dir.h"
#include "common/test_unix_socket.h"

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
  int connect() { return test_util::connect_unix(path_); }
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


// --- hostile clients: bounds, deadlines, framing ---

using Clock = std::chrono::steady_clock;

asio::awaitable<void> limited_handler(Exchange& ex) {
  if (ex.path() == "/hold") {
    // Busy until the client goes away.
    co_await ex.wait_peer_closed();
    co_await ex.respond(200, "held", "text/plain");
    co_return;
  }
  if (ex.path() == "/stream") {
    // Quiet gaps longer than the header and idle timeouts: a response in
    // progress is never cut by them.
    auto s = co_await ex.start(200, {}, std::nullopt);
    if (!s) co_return;
    asio::steady_timer t(ex.executor());
    for (int i = 0; i < 4; ++i) {
      t.expires_after(250ms);
      co_await t.async_wait(kTuple);
      auto w = co_await ex.write("tick;");
      if (!w) co_return;
    }
    co_await ex.finish();
    co_return;
  }
  co_await ex.respond(200, "plain", "text/plain");
}

ServerOptions limited_options() {
  ServerOptions o;
  o.limits.max_total = 3;
  o.limits.max_per_client = 3;
  o.header_timeout = 300ms;
  o.idle_timeout = 300ms;
  o.drain_timeout = 300ms;
  return o;
}

class LimitedServerTest : public ServerTest {
 protected:
  // Waits until the server holds `n` connections.
  bool wait_connections(Server& s, size_t n) {
    for (auto until = Clock::now() + 5s; Clock::now() < until; std::this_thread::sleep_for(5ms)) {
      if (s.connections() == n) return true;
    }
    return false;
  }
  static bool closed_by_peer(int fd) {
    char c;
    return ::read(fd, &c, 1) == 0;
  }
  static std::string whole(int fd) {
    return read_until(fd, [](const std::string&) { return false; });
  }
  Server limited_{io_, limited_handler, limited_options()};
  std::string lpath_;
  int lconnect() {
    std::swap(path_, lpath_);
    int fd = connect();
    std::swap(path_, lpath_);
    return fd;
  }
  void SetUp() override {
    lpath_ = (dir_.path() / "limited.sock").string();
    ASSERT_TRUE(limited_.listen_unix(lpath_).has_value());
    ServerTest::SetUp();
  }
};

TEST(ConnectionTable, BoundsPerClientAndInTotalEvictingTheLongestIdle) {
  ConnectionTable t({.max_total = 3, .max_per_client = 2});
  int evicted_a1 = 0, evicted_b1 = 0;
  auto a1 = t.admit("a", [&] { ++evicted_a1; });
  auto a2 = t.admit("a", [] {});
  ASSERT_TRUE(a1 && a2);
  // At the per-client bound: a's longest-idle connection gives way.
  auto a3 = t.admit("a", [] {});
  ASSERT_TRUE(a3);
  EXPECT_EQ(evicted_a1, 1);
  EXPECT_TRUE(a1->evicted);
  EXPECT_FALSE(t.mark_busy(a1));
  EXPECT_EQ(t.count("a"), 2u);
  auto b1 = t.admit("b", [&] { ++evicted_b1; });
  ASSERT_TRUE(b1);
  EXPECT_EQ(t.total(), 3u);
  // At the total: the longest-idle of anyone gives way (a2), busy ones never.
  ASSERT_TRUE(t.mark_busy(a3));
  ASSERT_TRUE(t.mark_busy(b1));
  auto c1 = t.admit("c", [] {});
  ASSERT_TRUE(c1);
  EXPECT_TRUE(a2->evicted);
  EXPECT_FALSE(b1->evicted);
  ASSERT_TRUE(t.mark_busy(c1));
  // Everything busy: refused.
  EXPECT_EQ(t.admit("d", [] {}), nullptr);
  EXPECT_EQ(t.admit("a", [] {}), nullptr);
  // Back to idle: evictable again, longest idle first.
  t.mark_idle(b1);
  t.mark_idle(a3);
  auto d1 = t.admit("d", [] {});
  ASSERT_TRUE(d1);
  EXPECT_TRUE(b1->evicted);
  EXPECT_EQ(evicted_b1, 1);
  EXPECT_FALSE(a3->evicted);
  t.release(a3);
  t.release(a3);  // idempotent
  t.release(c1);
  t.release(d1);
  t.release(a1);  // evicted before: already out of the counts
  EXPECT_EQ(t.total(), 0u);
  EXPECT_EQ(t.count("a"), 0u);
}

TEST(ConnectionTable, BoundFromTheFdLimit) {
  EXPECT_EQ(connections_for_fd_limit(20000), 7500u);  // a quarter kept, two fds a connection
  EXPECT_EQ(connections_for_fd_limit(1024), 384u);    // at least 256 kept
  EXPECT_EQ(connections_for_fd_limit(100), 16u);
  EXPECT_GT(connections_for_fd_limit(~uint64_t{0}), 100000u);
}

TEST_F(LimitedServerTest, ConnectionsOverTheBoundGet503WhileAllAreBusy) {
  int held[3];
  for (int& fd : held) {
    fd = lconnect();
    send_all(fd, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  ASSERT_TRUE(wait_connections(limited_, 3));
  std::this_thread::sleep_for(50ms);  // the three heads are read: all busy
  int extra = lconnect();
  std::string got = whole(extra);  // answered at once and closed
  EXPECT_TRUE(got.starts_with("HTTP/1.1 503 ")) << got;
  EXPECT_NE(got.find("connection"), std::string::npos) << got;
  EXPECT_NE(got.find("Retry-After: 1"), std::string::npos) << got;
  ::close(extra);
  // A busy connection is not cut by the idle or header timeout.
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(limited_.connections(), 3u);
  // One client leaves: the next one is served.
  ::close(held[0]);
  ASSERT_TRUE(wait_connections(limited_, 2));
  int next = lconnect();
  send_all(next, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  got = read_until(next, [](const std::string& s) { return s.find("plain") != std::string::npos; });
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200 ")) << got;
  ::close(next);
  ::close(held[1]);
  ::close(held[2]);
  EXPECT_TRUE(wait_connections(limited_, 0));
}

TEST_F(LimitedServerTest, IdleConnectionsGiveWayToANewOne) {
  // Three connections that send nothing fill the bound; a fourth is still
  // served, and the one idle longest is closed to make room.
  int idle[3];
  for (int& fd : idle) {
    fd = lconnect();
    ASSERT_TRUE(wait_connections(limited_, static_cast<size_t>(&fd - idle) + 1));
  }
  int fresh = lconnect();
  send_all(fresh, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string got = read_until(fresh, [](const std::string& s) { return s.find("plain") != std::string::npos; });
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200 ")) << got;
  EXPECT_TRUE(closed_by_peer(idle[0]));
  // A kept-alive connection between requests is idle too: it can still be
  // used until it gives way.
  send_all(fresh, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  got = read_until(fresh, [](const std::string& s) { return s.find("plain") != std::string::npos; });
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200 ")) << got;
  for (int fd : idle) ::close(fd);
  ::close(fresh);
  EXPECT_TRUE(wait_connections(limited_, 0));
}

TEST_F(LimitedServerTest, ASlowHeadIsCutAtTheDeadline) {
  int fd = lconnect();
  auto t0 = Clock::now();
  send_all(fd, "GET /plain HTTP/1.1\r\n");
  // A byte every 50 ms would take 5 s; the head is due in 300 ms.
  std::string got;
  for (int i = 0; i < 100; ++i) {
    if (::send(fd, "X", 1, MSG_NOSIGNAL) != 1) break;
    std::this_thread::sleep_for(50ms);
    char tmp[512];
    ssize_t n = ::recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
    if (n > 0) got.append(tmp, static_cast<size_t>(n));
    if (n == 0) break;
  }
  got += whole(fd);
  auto took = Clock::now() - t0;
  EXPECT_TRUE(got.starts_with("HTTP/1.1 408 ")) << got;
  EXPECT_NE(got.find("not received in time"), std::string::npos) << got;
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 3s);
  ::close(fd);
  // A connection that never sends a byte is closed at the same deadline, unanswered.
  fd = lconnect();
  t0 = Clock::now();
  EXPECT_EQ(whole(fd), "");
  EXPECT_LT(Clock::now() - t0, 3s);
  ::close(fd);
  EXPECT_TRUE(wait_connections(limited_, 0));
}

TEST_F(LimitedServerTest, IdleKeepAliveIsClosedButStreamsAreNot) {
  int fd = lconnect();
  send_all(fd, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string got = read_until(fd, [](const std::string& s) { return s.find("plain") != std::string::npos; });
  ASSERT_TRUE(got.starts_with("HTTP/1.1 200 ")) << got;
  auto t0 = Clock::now();
  EXPECT_TRUE(closed_by_peer(fd));
  EXPECT_GE(Clock::now() - t0, 250ms);
  ::close(fd);
  // A response that takes 1 s, with gaps longer than both timeouts.
  fd = lconnect();
  send_all(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
  got = read_until(fd, [](const std::string& s) { return s.find("0\r\n\r\n") != std::string::npos; });
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200 ")) << got;
  size_t ticks = 0;
  for (size_t p = got.find("tick;"); p != std::string::npos; p = got.find("tick;", p + 1)) ++ticks;
  EXPECT_EQ(ticks, 4u) << got;
  ::close(fd);
}

TEST_F(LimitedServerTest, AnUnreadBodyIsDrainedForALimitedTime) {
  int fd = lconnect();
  // The handler answers without reading; the body never comes whole.
  send_all(fd, "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nsome");
  auto t0 = Clock::now();
  std::string got = whole(fd);
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200 ")) << got;
  EXPECT_LT(Clock::now() - t0, 3s);
  ::close(fd);
}

// Framing a peer before or after the server could read differently.
TEST_F(ServerTest, AmbiguousFramingIsRefused) {
  using namespace std::string_literals;  // "..."s keeps the NUL below
  const std::pair<std::string, const char*> cases[] = {
      {"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nbody"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nbody"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nbody"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nbody"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length : 4\r\n\r\nbody"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"s, "501"},
      {"POST /plain HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"s, "400"},
      {"POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"s, "400"},
      // obs-fold: Beast joins a folded value with one space (RFC 9112 section
      // 5.2 allows that in place of a 400): a Transfer-Encoding folded into
      // "identity chunked" is refused like any malformed one.
      {"POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n"s, "400"},
      {"GET /plain HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n"s, "400"},
      {"GET /plain HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n"s, "400"},
  };
  for (const auto& [request, status] : cases) {
    int fd = connect();
    send_all(fd, request);
    std::string got = read_until(fd, [](const std::string&) { return false; });  // to EOF: the connection is closed
    EXPECT_TRUE(got.starts_with(std::string("HTTP/1.1 ") + status + " ")) << request << "\n-> " << got;
    EXPECT_EQ(got.find("plain"), std::string::npos) << "the handler ran: " << request;
    ::close(fd);
  }
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

namespace coppice::http {
namespace {

// Connections accepted elsewhere (the TLS front's plaintext ends) count as
// the client they are adopted for: per-client bounds hold across them.
TEST_F(LimitedServerTest, AdoptedConnectionsCountAsTheirClient) {
  ServerOptions o = limited_options();
  o.limits.max_total = 10;
  o.limits.max_per_client = 1;
  Server s{io_, limited_handler, o};
  auto adopt = [&](const std::string& client) {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    timeval tv{5, 0};
    ::setsockopt(fds[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    asio::post(io_, [&s, &io = io_, fd = fds[0], client] {
      Socket sock(io);
      boost::system::error_code ec;
      sock.assign(asio::generic::stream_protocol(AF_UNIX, 0), fd, ec);
      s.adopt(std::move(sock), client);
    });
    return fds[1];
  };
  int held = adopt("192.0.2.1");
  send_all(held, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(wait_connections(s, 1));
  std::this_thread::sleep_for(50ms);  // its head is read: busy
  int same = adopt("192.0.2.1");
  std::string got = whole(same);
  EXPECT_TRUE(got.starts_with("HTTP/1.1 503 ")) << got;
  EXPECT_NE(got.find("from this address"), std::string::npos) << got;
  int other = adopt("192.0.2.2");
  send_all(other, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  got = read_until(other, [](const std::string& r) { return r.find("plain") != std::string::npos; });
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200 ")) << got;
  for (int fd : {held, same, other}) ::close(fd);
  EXPECT_TRUE(wait_connections(s, 0));
}

}  // namespace
}  // namespace coppice::http

namespace coppice::http {
namespace {

// A Server destroyed while a handler still runs: the connection finishes
// its answer and closes, touching nothing of the destroyed Server (under
// ASan a use after free fails this test), and nothing more is accepted.
TEST(ServerLifetime, AConnectionOutlivesItsServer) {
  test_util::TempDir dir{"coppice-http-server"};
  const std::string path = (dir.path() / "s.sock").string();
  asio::io_context io;
  std::atomic<bool> release{false}, entered{false};
  auto server = std::make_unique<Server>(io, [&](Exchange& ex) -> asio::awaitable<void> {
    entered = true;
    asio::steady_timer t(co_await asio::this_coro::executor);
    while (!release) {
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    co_await ex.respond(200, "late", "text/plain");
  });
  ASSERT_TRUE(server->listen_unix(path).has_value());
  auto work = asio::make_work_guard(io);
  std::thread th([&] { io.run(); });
  const int fd = test_util::connect_unix(path);
  ASSERT_GE(fd, 0);
  const std::string req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  for (int i = 0; i < 500 && !entered; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(entered);
  asio::post(io, [&] { server.reset(); });  // destroyed on the io thread, mid-request
  for (int i = 0; i < 500 && server; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_FALSE(server);
  release = true;
  std::string got;
  char tmp[512];
  for (ssize_t n; (n = ::read(fd, tmp, sizeof tmp)) > 0;) got.append(tmp, static_cast<size_t>(n));
  EXPECT_NE(got.find("200 OK"), std::string::npos) << got;
  EXPECT_NE(got.find("late"), std::string::npos) << got;
  ::close(fd);
  // Nothing listens any more.
  int fd2 = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  EXPECT_NE(::connect(fd2, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ::close(fd2);
  work.reset();
  io.stop();
  th.join();
}

}  // namespace
}  // namespace coppice::http
