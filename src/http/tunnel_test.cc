#include "http/tunnel.h"

#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <future>
#include <random>
#include <thread>

namespace coppice::http {
namespace {

using namespace std::chrono_literals;

// One end driven by the tunnel (an asio socket), the other by the test
// (a plain blocking fd).
struct Pair {
  Socket tunnel_end;
  int test_end = -1;
  ~Pair() {
    if (test_end >= 0) ::close(test_end);
  }
};

Pair make_socket_pair(asio::io_context& io) {
  int fds[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) ADD_FAILURE() << "socketpair failed";
  return Pair{Socket(io, asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]), fds[1]};
}

beast::flat_buffer buffer_of(std::string_view s) {
  beast::flat_buffer b;
  auto dst = b.prepare(s.size());
  if (!s.empty()) std::memcpy(dst.data(), s.data(), s.size());
  b.commit(s.size());
  return b;
}

void write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::write(fd, s.data(), s.size());
    ASSERT_GT(n, 0) << "write: " << strerror(errno);
    s.remove_prefix(static_cast<size_t>(n));
  }
}

// Reads exactly `n` bytes, or fewer when EOF comes first.
std::string read_n(int fd, size_t n) {
  std::string out;
  char tmp[65536];
  while (out.size() < n) {
    ssize_t r = ::read(fd, tmp, std::min(sizeof tmp, n - out.size()));
    if (r <= 0) break;
    out.append(tmp, static_cast<size_t>(r));
  }
  return out;
}

bool at_eof(int fd) {
  char c;
  return ::read(fd, &c, 1) == 0;
}

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A tunnel between two socket pairs: client <-> a ==tunnel== b <-> server.
class TunnelTest : public ::testing::Test {
 protected:
  void start(std::string_view a_read_ahead = {}, std::string_view b_read_ahead = {}, TunnelOptions opts = {}) {
    auto t = tunnel(a_.tunnel_end, buffer_of(a_read_ahead), b_.tunnel_end, buffer_of(b_read_ahead), std::move(opts));
    asio::co_spawn(io_, std::move(t), [this](std::exception_ptr e, TunnelResult r) {
      if (e) ADD_FAILURE() << "tunnel threw";
      done_.set_value(r);
    });
    thread_ = std::thread([this] { io_.run(); });
  }
  TunnelResult result() {
    auto f = done_.get_future();
    if (f.wait_for(10s) != std::future_status::ready) {
      ADD_FAILURE() << "tunnel did not end";
      io_.stop();
      return {};
    }
    return f.get();
  }
  void TearDown() override {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }
  int client() const { return a_.test_end; }
  int server() const { return b_.test_end; }

  asio::io_context io_;
  Pair a_ = make_socket_pair(io_);
  Pair b_ = make_socket_pair(io_);
  std::promise<TunnelResult> done_;
  std::thread thread_;
};

TEST_F(TunnelTest, ReadAheadGoesFirstThenLargeTrafficBothWaysAtOnce) {
  start("early from a|", "early from b|");
  EXPECT_EQ(read_n(server(), 13), "early from a|");
  EXPECT_EQ(read_n(client(), 13), "early from b|");
  // Several MiB each way at the same time: neither direction waits on the other.
  std::string up = random_bytes(5u << 20, 1), down = random_bytes(3u << 20, 2);
  std::thread w1([&] { write_all(client(), up); });
  std::thread w2([&] { write_all(server(), down); });
  std::string got_up = read_n(server(), up.size());
  std::string got_down = read_n(client(), down.size());
  w1.join();
  w2.join();
  EXPECT_TRUE(got_up == up);
  EXPECT_TRUE(got_down == down);
  ::shutdown(client(), SHUT_WR);
  ::shutdown(server(), SHUT_WR);
  auto r = result();
  EXPECT_EQ(r.a_to_b, 13 + up.size());
  EXPECT_EQ(r.b_to_a, 13 + down.size());
  EXPECT_FALSE(r.error);
  EXPECT_FALSE(r.timed_out);
}

TEST_F(TunnelTest, HalfCloseIsPassedOnAndTheOtherWayKeepsFlowing) {
  start();
  write_all(client(), "request");
  ::shutdown(client(), SHUT_WR);
  EXPECT_EQ(read_n(server(), 7), "request");
  EXPECT_TRUE(at_eof(server()));
  // The side that saw EOF still answers, and the answer arrives.
  write_all(server(), "answer");
  EXPECT_EQ(read_n(client(), 6), "answer");
  ::close(b_.test_end);
  b_.test_end = -1;
  EXPECT_TRUE(at_eof(client()));
  auto r = result();
  EXPECT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.a_to_b, 7u);
  EXPECT_EQ(r.b_to_a, 6u);
}

TEST_F(TunnelTest, WriteToAPeerThatIsGoneEndsBothDirections) {
  start();
  ::close(b_.test_end);
  b_.test_end = -1;
  EXPECT_TRUE(at_eof(client()));  // the server's EOF is passed on
  write_all(client(), "into the void");
  auto r = result();
  EXPECT_TRUE(r.error);
  EXPECT_FALSE(r.timed_out);
}

TEST_F(TunnelTest, IdleTimeoutClosesBothSides) {
  TunnelOptions opts;
  opts.idle_timeout = 100ms;
  start({}, {}, std::move(opts));
  write_all(client(), "x");  // activity resets the clock
  EXPECT_EQ(read_n(server(), 1), "x");
  auto r = result();
  EXPECT_TRUE(r.timed_out);
  EXPECT_TRUE(at_eof(client()));
  EXPECT_TRUE(at_eof(server()));
}

TEST_F(TunnelTest, CountsEveryPieceForMetrics) {
  size_t in = 0, out = 0;
  TunnelOptions opts;
  opts.on_a_to_b = [&](size_t n) { in += n; };
  opts.on_b_to_a = [&](size_t n) { out += n; };
  start("ab", "", std::move(opts));
  write_all(client(), "cdef");
  EXPECT_EQ(read_n(server(), 6), "abcdef");
  write_all(server(), "xyz");
  EXPECT_EQ(read_n(client(), 3), "xyz");
  ::shutdown(client(), SHUT_WR);
  ::shutdown(server(), SHUT_WR);
  result();
  EXPECT_EQ(in, 6u);
  EXPECT_EQ(out, 3u);
}

}  // namespace
}  // namespace coppice::http
