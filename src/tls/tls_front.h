// TLS on the gateway's port, in front of the plain HTTP server (server.h).
//
// Each accepted TCP connection is handed to the Server at once as a unix
// socketpair's end (Server::adopt, counted as one from the TCP peer's
// address, so per-client limits and eviction work as on a plain port); the
// front does the TLS handshake and then relays decrypted bytes both ways
// between the TLS stream and the pair's other end. The server, the proxy,
// upgrades (WebSockets) and tunnels stay written against one socket type and
// never see TLS. The price: two more fds per connection and one more copy
// through the kernel per chunk (measured in the README).
//
// A handshake not done within the handshake timeout is dropped (like a slow
// request head); anything that is not TLS (plain HTTP sent to the port) fails
// the handshake and is closed.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "http/server.h"

namespace coppice::tls {

using http::Server;
using http::Socket;
namespace asio = http::asio;

using Context = std::shared_ptr<asio::ssl::context>;

// Loads a PEM certificate chain and its private key and checks that they
// match (TLS 1.2 and later, ALPN http/1.1). kInvalidArgument with one line
// saying which file is wrong. Called at start, before anything else is set up.
Result<Context> load_server_context(const std::string& cert_file, const std::string& key_file);

// The client side for a sandbox port served over TLS (network.httpsPorts):
// a TLS handshake on the connected `tcp` (server name `sni` when not empty;
// the certificate is not verified: it is the sandbox's own), then a socket
// whose plaintext is relayed both ways through it. kUnavailable when the
// handshake fails or takes longer than `timeout`.
asio::awaitable<Result<Socket>> connect_tls_upstream(asio::ip::tcp::socket tcp, std::string sni,
                                                     std::chrono::steady_clock::duration timeout);

class TlsFront {
 public:
  // Connections accepted here are served by `server` once decrypted.
  TlsFront(asio::io_context& io, Server& server, Context ctx, std::chrono::steady_clock::duration handshake_timeout);
  // Binds and listens; port 0 picks one.
  Result<uint16_t> listen_tcp(const std::string& host, uint16_t port);
  void stop();

 private:
  asio::awaitable<void> accept_loop(std::shared_ptr<asio::ip::tcp::acceptor> acc);

  asio::io_context& io_;
  Server& server_;
  std::chrono::steady_clock::duration handshake_timeout_;
  Context ctx_;
  std::vector<std::shared_ptr<asio::ip::tcp::acceptor>> acceptors_;
};

}  // namespace coppice::tls
