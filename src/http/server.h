// A small HTTP/1.1 server on Boost.Beast and C++20 coroutines, shared by envd
// and the gateway. It listens on TCP and/or unix sockets, hands every request
// to one handler as an Exchange, and lets the handler stream both the request
// body (read_some) and the response body (start + write + finish), so large
// uploads and downloads and long-lived RPC streams never sit whole in memory.
#pragma once

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/url.h"
#include "http/conn_table.h"

namespace coppice::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using Socket = asio::generic::stream_protocol::socket;
using Acceptor = asio::basic_socket_acceptor<asio::generic::stream_protocol>;
using Fields = std::vector<std::pair<std::string, std::string>>;

using coppice::parse_query;  // common/url.h
using coppice::url_decode;
using coppice::url_encode;

// True when a request asks to switch protocols (RFC 9110 section 7.8): it is
// HTTP/1.1 or later, names a protocol in Upgrade and has "upgrade" among its
// Connection options. An HTTP/1.0 request's Upgrade is ignored, as the RFC
// requires of a server.
bool is_upgrade_request(const bhttp::request_header<>& head);

// A connection that HTTP has handed over (Exchange::switch_protocols): the
// socket, and the bytes the client sent past its request that the server had
// already read. Those bytes belong to the new protocol and come before
// anything read from the socket.
struct Upgraded {
  Socket socket;
  beast::flat_buffer read_ahead;
};

class Exchange {
 public:
  Exchange(Socket& sock, beast::flat_buffer& buf, bhttp::request_parser<bhttp::buffer_body>& parser);

  // --- request ---
  const bhttp::request_header<>& head() const { return parser_.get().base(); }
  bhttp::verb method() const { return head().method(); }
  std::string_view method_string() const { return head().method_string(); }
  std::string_view target() const { return {head().target().data(), head().target().size()}; }
  std::string_view path() const;    // target without the query, not decoded
  std::string_view query() const;   // after '?', or empty
  const std::map<std::string, std::string>& query_params();
  // A request header's value, or "" when absent.
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
  std::optional<uint64_t> content_length() const;

  // Reads the whole body; a body over `limit` bytes is an error of kind kTooLarge.
  asio::awaitable<Result<std::string>> read_body(size_t limit);
  // Reads up to buf.size() body bytes; 0 means the body is complete.
  asio::awaitable<Result<size_t>> read_some(std::span<char> buf);
  bool body_done() const { return parser_.is_done(); }

  // --- response ---
  // A whole response in one go.
  asio::awaitable<void> respond(unsigned status, std::string_view body, std::string_view content_type,
                                const Fields& extra = {});
  asio::awaitable<void> respond_json(unsigned status, std::string_view json, const Fields& extra = {}) {
    return respond(status, json, "application/json", extra);
  }
  // Starts a streamed response: with a content length the body follows raw,
  // without one it is sent chunked. Each write() goes out before it returns.
  asio::awaitable<Status> start(unsigned status, const Fields& headers, std::optional<uint64_t> content_length);
  asio::awaitable<Status> write(std::string_view data);
  asio::awaitable<Status> finish();
  bool responded() const { return response_started_; }
  // The response was completely written (respond() or finish()).
  bool finished() const { return finished_; }
  bool keep_alive() const { return keep_alive_; }
  // Completes when the peer closes its side or the connection breaks; for
  // handlers that must notice a client going away while they wait. Only for
  // use once the request body has been read.
  asio::awaitable<void> wait_peer_closed();

  // --- protocol switch ---
  // The request asks to switch protocols (is_upgrade_request). Any answer
  // other than switch_protocols() then closes the connection (keep_alive()
  // is false): the client may already be sending in the new protocol.
  bool upgrade_requested() const { return is_upgrade_request(head()); }
  // Answers 101 Switching Protocols with `headers` plus "Connection: upgrade"
  // and "Upgrade: <protocol>" (which replace any of those two in `headers`),
  // and hands the connection over: the caller owns the socket from then on,
  // and the server neither reads nor writes it again nor serves another
  // request on it. Refused with nothing written when the request did not ask
  // to upgrade, the response has started, or request body bytes are still
  // unread (they would be taken for the new protocol): kFailedPrecondition;
  // or when `protocol` is empty: kInvalidArgument. When the 101 cannot be
  // written the error is kCanceled and the server closes the connection.
  asio::awaitable<Result<Upgraded>> switch_protocols(std::string_view protocol, const Fields& headers);
  // switch_protocols() succeeded: the socket is no longer the Exchange's.
  bool taken_over() const { return taken_over_; }

  // Ask the server to close the connection after this exchange.
  void set_close() { close_ = true; }
  bool close_requested() const { return close_; }

  // The connection's socket; after taken_over(), a closed socket.
  Socket& socket() { return sock_; }
  asio::any_io_executor executor() { return sock_.get_executor(); }
  // Time the request head was parsed.
  std::chrono::steady_clock::time_point started() const { return started_; }

 private:
  Socket& sock_;
  beast::flat_buffer& buf_;
  bhttp::request_parser<bhttp::buffer_body>& parser_;
  std::optional<std::map<std::string, std::string>> query_;
  bool response_started_ = false;
  bool chunked_ = false;
  bool finished_ = false;
  bool sent_continue_ = false;
  // A body read failed: the parser is spent and the peer may be gone (EOF
  // already seen), so later reads fail at once without touching the socket.
  bool body_failed_ = false;
  bool close_ = false;
  bool keep_alive_ = true;
  bool taken_over_ = false;
  std::chrono::steady_clock::time_point started_;
};

using Handler = std::function<asio::awaitable<void>(Exchange&)>;

struct ServerOptions {
  size_t max_header_bytes = 64 * 1024;
  // Time a request head may take to arrive whole: from the accept for a
  // connection's first request, from its first byte for a later one. A head
  // still incomplete then (one trickled in a byte at a time, or none at all)
  // gets 408 and the connection is closed. Default 20 s.
  std::chrono::steady_clock::duration header_timeout = std::chrono::seconds(20);
  // A kept-alive connection with no new request this long is closed. Default 60 s.
  std::chrono::steady_clock::duration idle_timeout = std::chrono::seconds(60);
  // Once a handler runs, neither timeout applies: a response, a long-lived
  // stream or a taken-over connection lasts as long as the handler wants.
  // After a response, an unread request body is drained (so the peer reads
  // the answer, not a reset) for at most this long, then the connection is
  // closed. Default 20 s.
  std::chrono::steady_clock::duration drain_timeout = std::chrono::seconds(20);
  // Connections held at once, in total and per client address (TCP: the
  // peer's IP; every unix socket peer counts as one client). Default: no
  // bound (envd, the interpreter); the gateway sets them (conn_table.h).
  ConnectionLimits limits;
};

class Server {
 public:
  Server(asio::io_context& io, Handler handler, ServerOptions opts = {});
  // Stops accepting. Connections still open finish on their own: they hold
  // the server's handler, options and table, never the Server itself; what
  // the handler reaches must outlive them (connections() tells when).
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens; host "0.0.0.0", "127.0.0.1", "::" etc. Port 0 picks one.
  Result<uint16_t> listen_tcp(const std::string& host, uint16_t port);
  // Binds a unix socket at `path` (an existing socket file is replaced).
  Status listen_unix(const std::string& path, unsigned mode = 0600);
  // Serves a connection accepted elsewhere (the TLS front's plaintext side),
  // counting it against the limits as one from `client` (its real peer's
  // address): admitted and served exactly like one this server accepted.
  void adopt(Socket sock, const std::string& client);
  // Stops accepting; existing connections finish their work.
  void stop();
  // Connections held now (admitted and not yet closed).
  size_t connections() const { return core_->table.total(); }

 private:
  struct Conn;
  // What accepting and serving use, shared by every connection.
  struct Core {
    Core(asio::io_context& io, Handler handler, ServerOptions opts)
        : io(io), handler(std::move(handler)), opts(opts), table(opts.limits) {}
    asio::io_context& io;
    const Handler handler;
    const ServerOptions opts;
    ConnectionTable table;
  };
  static asio::awaitable<void> accept_loop(std::shared_ptr<Core> core, std::shared_ptr<Acceptor> acc, bool tcp);
  static void admit_and_serve(const std::shared_ptr<Core>& core, Socket sock, const std::string& client);
  static asio::awaitable<void> serve(std::shared_ptr<Core> core, Socket sock, std::shared_ptr<Conn> conn);

  std::shared_ptr<Core> core_;
  std::vector<std::shared_ptr<Acceptor>> acceptors_;
};

}  // namespace coppice::http
