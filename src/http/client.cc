#include "http/client.h"

#include <sys/socket.h>

#include <boost/asio/experimental/awaitable_operators.hpp>

#include "sys/unix_connect.h"

namespace coppice::http {

using namespace asio::experimental::awaitable_operators;
namespace {
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
}

std::string Endpoint::to_string() const {
  return unix_path.empty() ? host + ":" + std::to_string(port) : "unix:" + unix_path;
}

asio::awaitable<Result<Socket>> connect_to(const Endpoint& ep, std::chrono::milliseconds timeout) {
  auto ex = co_await asio::this_coro::executor;
  Socket sock(ex);
  asio::generic::stream_protocol::endpoint gep;
  boost::system::error_code ec;
  if (!ep.unix_path.empty()) {
    // The socket lives in a directory a sandbox can write to: never follow a
    // symlink planted there (it could point at any socket on the host).
    auto fd = sys::connect_unix_nofollow(ep.unix_path);
    if (!fd) co_return std::unexpected(std::move(fd.error()).context("connect"));
    sock.assign(asio::generic::stream_protocol(AF_UNIX, 0), fd->release(), ec);
    if (ec) co_return make_error(ErrorCode::kInternal, "adopt unix socket: " + ec.message());
    co_return std::move(sock);
  } else {
    auto addr = asio::ip::make_address(ep.host, ec);
    if (ec) co_return make_error(ErrorCode::kInvalidArgument, "address " + ep.host + ": " + ec.message());
    gep = asio::generic::stream_protocol::endpoint(asio::ip::tcp::endpoint(addr, ep.port));
  }
  asio::steady_timer timer(ex, timeout);
  auto r = co_await (sock.async_connect(gep, kTuple) || timer.async_wait(kTuple));
  if (r.index() == 1) co_return make_error(ErrorCode::kDeadlineExceeded, "connect " + ep.to_string() + ": timed out");
  auto [cec] = std::get<0>(r);
  if (cec) co_return make_error(ErrorCode::kUnavailable, "connect " + ep.to_string() + ": " + cec.message(), cec.value());
  if (ep.unix_path.empty()) sock.set_option(asio::ip::tcp::no_delay(true), ec);
  co_return std::move(sock);
}

asio::awaitable<Result<ClientResponse>> fetch(const Endpoint& ep, bhttp::verb method, std::string target,
                                              const Fields& headers, std::string body,
                                              std::chrono::milliseconds timeout, size_t max_body) {
  auto sock = co_await connect_to(ep, timeout);
  if (!sock) co_return std::unexpected(sock.error());
  bhttp::request<bhttp::string_body> req{method, target, 11};
  req.set(bhttp::field::host, "localhost");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = std::move(body);
  req.keep_alive(false);
  req.prepare_payload();
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer timer(ex, timeout);
  auto exchange = [&]() -> asio::awaitable<Result<ClientResponse>> {
    auto [wec, wn] = co_await bhttp::async_write(*sock, req, kTuple);
    if (wec) co_return make_error(ErrorCode::kUnavailable, "write request to " + ep.to_string() + ": " + wec.message());
    beast::flat_buffer buf;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(max_body);
    auto [rec, rn] = co_await bhttp::async_read(*sock, buf, parser, kTuple);
    if (rec) co_return make_error(ErrorCode::kUnavailable, "read response from " + ep.to_string() + ": " + rec.message());
    ClientResponse out;
    auto& res = parser.get();
    out.status = res.result_int();
    out.body = std::move(res.body());
    out.headers = res.base();
    co_return out;
  };
  auto r = co_await (exchange() || timer.async_wait(kTuple));
  boost::system::error_code ignore;
  sock->close(ignore);
  if (r.index() == 1)
    co_return make_error(ErrorCode::kDeadlineExceeded, std::string(bhttp::to_string(method)) + " " + target + " on " +
                                                           ep.to_string() + ": timed out");
  co_return std::move(std::get<0>(r));
}

}  // namespace coppice::http
