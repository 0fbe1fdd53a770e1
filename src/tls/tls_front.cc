#include "tls/tls_front.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/experimental/awaitable_operators.hpp>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace coppice::tls {


namespace ssl = asio::ssl;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr size_t kChunk = 64 * 1024;
constexpr auto kShutdownTimeout = std::chrono::seconds(1);

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

using TlsStream = ssl::stream<tcp::socket>;

// TLS records in, plaintext out (the front: client -> server; an upstream:
// sandbox port -> proxy). At the client's end of
// input the pair's write side is shut, so the server sees EOF and finishes.
asio::awaitable<void> client_to_server(TlsStream& tls, Socket& plain) {
  auto buf = std::make_unique_for_overwrite<char[]>(kChunk);
  for (;;) {
    auto [ec, n] = co_await tls.async_read_some(asio::buffer(buf.get(), kChunk), kTuple);
    if (n > 0) {
      auto [wec, w] = co_await asio::async_write(plain, asio::buffer(buf.get(), n), kTuple);
      if (wec) break;
    }
    if (ec) break;
  }
  boost::system::error_code ig;
  plain.shutdown(Socket::shutdown_send, ig);
}

// Plaintext in, TLS records out (the front: server -> client). When the
// plaintext side closes its end the client's reader is
// cancelled: the connection is over.
asio::awaitable<void> server_to_client(TlsStream& tls, Socket& plain) {
  auto buf = std::make_unique_for_overwrite<char[]>(kChunk);
  for (;;) {
    auto [ec, n] = co_await plain.async_read_some(asio::buffer(buf.get(), kChunk), kTuple);
    if (n > 0) {
      auto [wec, w] = co_await asio::async_write(tls, asio::buffer(buf.get(), n), kTuple);
      if (wec) break;
    }
    if (ec) break;
  }
  boost::system::error_code ig;
  tls.next_layer().cancel(ig);
  plain.close(ig);
}

asio::awaitable<void> relay(std::shared_ptr<ssl::context> ctx, tcp::socket sock, Socket plain,
                            std::chrono::steady_clock::duration handshake_timeout) {
  TlsStream tls(std::move(sock), *ctx);
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(handshake_timeout);
  auto hs = co_await (tls.async_handshake(ssl::stream_base::server, kTuple) || timer.async_wait(kTuple));
  boost::system::error_code ig;
  if (hs.index() == 1 || std::get<0>(std::get<0>(hs))) {
    if (hs.index() == 0) {
      COPPICE_LOG(debug) << "TLS handshake failed: " << std::get<0>(std::get<0>(hs)).message();
    }
    tls.next_layer().close(ig);
    plain.close(ig);  // the server sees EOF before any request
    co_return;
  }
  co_await (client_to_server(tls, plain) && server_to_client(tls, plain));
  // close_notify, best effort and briefly.
  timer.expires_after(kShutdownTimeout);
  co_await (tls.async_shutdown(kTuple) || timer.async_wait(kTuple));
  tls.next_layer().close(ig);
}

// An established upstream TLS stream relayed to `plain` until either side ends.
asio::awaitable<void> relay_upstream(std::shared_ptr<TlsStream> tls, Socket plain) {
  co_await (client_to_server(*tls, plain) && server_to_client(*tls, plain));
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(kShutdownTimeout);
  co_await (tls->async_shutdown(kTuple) || timer.async_wait(kTuple));
  boost::system::error_code ig;
  tls->next_layer().close(ig);
}
}  // namespace

asio::awaitable<Result<Socket>> connect_tls_upstream(tcp::socket tcp_sock, std::string sni,
                                                     std::chrono::steady_clock::duration timeout) {
  // Made once; no verification: a sandbox's own certificate is whatever it made.
  static const std::shared_ptr<ssl::context> ctx = [] {
    auto c = std::make_shared<ssl::context>(ssl::context::tls_client);
    c->set_verify_mode(ssl::verify_none);
    return c;
  }();
  auto tls = std::make_shared<TlsStream>(std::move(tcp_sock), *ctx);
  if (!sni.empty()) SSL_set_tlsext_host_name(tls->native_handle(), sni.c_str());
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer timer(ex);
  timer.expires_after(timeout);
  auto hs = co_await (tls->async_handshake(ssl::stream_base::client, kTuple) || timer.async_wait(kTuple));
  if (hs.index() == 1) co_return make_error(ErrorCode::kUnavailable, "TLS handshake with the port timed out");
  if (auto ec = std::get<0>(std::get<0>(hs)))
    co_return make_error(ErrorCode::kUnavailable, "TLS handshake with the port: " + ec.message());
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) != 0)
    co_return make_error(ErrorCode::kResourceExhausted, std::string("socketpair: ") + std::strerror(errno), errno);
  const asio::generic::stream_protocol unix_proto(AF_UNIX, 0);
  boost::system::error_code ec;
  Socket mine(ex), theirs(ex);
  mine.assign(unix_proto, fds[0], ec);
  theirs.assign(unix_proto, fds[1], ec);
  asio::co_spawn(ex, relay_upstream(std::move(tls), std::move(theirs)), asio::detached);
  co_return mine;
}

TlsFront::TlsFront(asio::io_context& io, Server& server, Context ctx, std::chrono::steady_clock::duration timeout)
    : io_(io), server_(server), handshake_timeout_(timeout), ctx_(std::move(ctx)) {}

Result<Context> load_server_context(const std::string& cert_file, const std::string& key_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  SSL_CTX* raw = ctx->native_handle();
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(raw, cert_file.c_str()) != 1)
    return make_error(ErrorCode::kInvalidArgument, "--tls-cert " + cert_file + ": " + openssl_error());
  // OpenSSL checks the key against the certificate as it loads it.
  if (SSL_CTX_use_PrivateKey_file(raw, key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    return make_error(ErrorCode::kInvalidArgument, "--tls-key " + key_file +
                                                       " is not a PEM private key or does not match the certificate in " +
                                                       cert_file + " (" + openssl_error() + ")");
  if (SSL_CTX_check_private_key(raw) != 1)
    return make_error(ErrorCode::kInvalidArgument,
                      "--tls-key " + key_file + " does not match the certificate in " + cert_file);
  // HTTP/1.1 only: offered ALPN lists get http/1.1 (browsers then never try h2).
  SSL_CTX_set_alpn_select_cb(
      raw,
      [](SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen,
         void*) -> int {
        static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
        unsigned char* sel = nullptr;
        if (SSL_select_next_proto(&sel, outlen, kHttp11, sizeof kHttp11, in, inlen) != OPENSSL_NPN_NEGOTIATED)
          return SSL_TLSEXT_ERR_NOACK;
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
      },
      nullptr);
  return ctx;
}

Result<uint16_t> TlsFront::listen_tcp(const std::string& host, uint16_t port) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return make_error(ErrorCode::kInvalidArgument, "listen address " + host + ": " + ec.message());
  auto acc = std::make_shared<tcp::acceptor>(io_);
  tcp::endpoint ep(addr, port);
  acc->open(ep.protocol(), ec);
  if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc->bind(ep, ec);
  if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return make_error(ErrorCode::kUnavailable, "listen on " + host + ":" + std::to_string(port) + ": " + ec.message(),
                      ec.value());
  const uint16_t bound = acc->local_endpoint(ec).port();
  acceptors_.push_back(acc);
  asio::co_spawn(io_, accept_loop(acc), asio::detached);
  return bound;
}

void TlsFront::stop() {
  for (auto& a : acceptors_) {
    boost::system::error_code ec;
    a->close(ec);
  }
  acceptors_.clear();
}

asio::awaitable<void> TlsFront::accept_loop(std::shared_ptr<tcp::acceptor> acc) {
  for (;;) {
    // Each connection's relay runs on its own strand.
    auto strand = asio::make_strand(io_);
    auto [ec, sock] = co_await acc->async_accept(strand, kTuple);
    if (ec == asio::error::operation_aborted || !acc->is_open()) co_return;
    if (ec) {
      COPPICE_LOG_RATE(warn, 1) << "accept: " << ec.message();
      asio::steady_timer t(io_, std::chrono::milliseconds(50));
      co_await t.async_wait(kTuple);
      continue;
    }
    boost::system::error_code sec;
    sock.set_option(tcp::no_delay(true), sec);
    const auto peer = sock.remote_endpoint(sec);
    if (sec) continue;  // gone already
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) != 0) {
      COPPICE_LOG_RATE(warn, 1) << "TLS front: socketpair: " << std::strerror(errno);
      continue;  // out of fds: the TCP connection is closed
    }
    Socket server_end(io_), front_end(strand);
    const asio::generic::stream_protocol unix_proto(AF_UNIX, 0);
    server_end.assign(unix_proto, fds[0], sec);
    front_end.assign(unix_proto, fds[1], sec);
    server_.adopt(std::move(server_end), peer.address().to_string());
    asio::co_spawn(strand, relay(ctx_, std::move(sock), std::move(front_end), handshake_timeout_),
                   asio::detached);
  }
}

}  // namespace coppice::tls
