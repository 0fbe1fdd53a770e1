#include "http/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <sstream>

#include <boost/asio/experimental/awaitable_operators.hpp>

#include "common/log.h"

namespace coppice::http {

using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;
constexpr auto kTuple = asio::as_tuple(use_awaitable);

Exchange::Exchange(Socket& sock, beast::flat_buffer& buf, bhttp::request_parser<bhttp::buffer_body>& parser)
    : sock_(sock), buf_(buf), parser_(parser), started_(std::chrono::steady_clock::now()) {
  // A request that asked to switch protocols and gets any answer but a 101
  // ends its connection: the client may already be sending in the protocol
  // it asked for, which must not be read as HTTP.
  keep_alive_ = parser_.get().keep_alive() && !is_upgrade_request(head());
}

std::string_view Exchange::path() const {
  auto t = target();
  return t.substr(0, t.find('?'));
}

std::string_view Exchange::query() const {
  auto t = target();
  size_t q = t.find('?');
  return q == std::string_view::npos ? std::string_view{} : t.substr(q + 1);
}

const std::map<std::string, std::string>& Exchange::query_params() {
  if (!query_) query_ = parse_query(query());
  return *query_;
}

std::string Exchange::header(std::string_view name) const {
  auto it = head().find(beast::string_view(name.data(), name.size()));
  if (it == head().end()) return {};
  return std::string(it->value());
}

bool Exchange::has_header(std::string_view name) const {
  return head().find(beast::string_view(name.data(), name.size())) != head().end();
}

std::optional<uint64_t> Exchange::content_length() const {
  auto l = parser_.content_length();
  if (!l) return std::nullopt;
  return *l;
}

asio::awaitable<Result<size_t>> Exchange::read_some(std::span<char> out) {
  if (parser_.is_done() || out.empty()) co_return size_t{0};
  if (body_failed_) co_return make_error(ErrorCode::kInvalidArgument, "read request body: an earlier read failed");
  if (!sent_continue_ && beast::iequals(header("Expect"), "100-continue") && !response_started_) {
    sent_continue_ = true;
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    auto [ec, n] = co_await asio::async_write(sock_, asio::buffer(kContinue), kTuple);
    if (ec) co_return make_error(ErrorCode::kCanceled, "write 100-continue: " + ec.message());
  }
  for (;;) {
    auto& body = parser_.get().body();
    body.data = out.data();
    body.size = out.size();
    auto [ec, n] = co_await bhttp::async_read_some(sock_, buf_, parser_, kTuple);
    if (ec == bhttp::error::need_buffer) ec = {};
    size_t got = out.size() - body.size;
    if (ec) {
      keep_alive_ = false;
      body_failed_ = true;
      if (ec == bhttp::error::body_limit) co_return make_error(ErrorCode::kTooLarge, "request body too large");
      co_return make_error(ErrorCode::kInvalidArgument, "read request body: " + ec.message());
    }
    if (got > 0 || parser_.is_done()) co_return got;
  }
}

asio::awaitable<Result<std::string>> Exchange::read_body(size_t limit) {
  std::string out;
  if (auto cl = content_length(); cl) {
    if (*cl > limit) {
      co_return make_error(ErrorCode::kTooLarge, "request body of " + std::to_string(*cl) +
                                                     " bytes is over the limit of " + std::to_string(limit));
    }
    out.reserve(*cl);
  }
  char tmp[16384];
  for (;;) {
    auto r = co_await read_some(tmp);
    if (!r) co_return std::unexpected(r.error());
    if (*r == 0) break;
    if (out.size() + *r > limit) {
      co_return make_error(ErrorCode::kTooLarge, "request body is over the limit of " + std::to_string(limit));
    }
    out.append(tmp, *r);
  }
  co_return out;
}

asio::awaitable<void> Exchange::respond(unsigned status, std::string_view body, std::string_view content_type,
                                        const Fields& extra) {
  if (response_started_) co_return;
  response_started_ = true;
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), 11};
  if (!content_type.empty()) res.set(bhttp::field::content_type, content_type);
  for (const auto& [k, v] : extra) res.set(k, v);
  res.body() = std::string(body);
  res.keep_alive(keep_alive_ && !close_);
  res.prepare_payload();
  auto [ec, n] = co_await bhttp::async_write(sock_, res, kTuple);
  if (ec) close_ = true;
  finished_ = true;
}

asio::awaitable<Status> Exchange::start(unsigned status, const Fields& headers, std::optional<uint64_t> length) {
  if (response_started_) co_return make_error(ErrorCode::kInternal, "response already started");
  response_started_ = true;
  bhttp::response<bhttp::empty_body> res{static_cast<bhttp::status>(status), 11};
  for (const auto& [k, v] : headers) res.set(k, v);
  res.keep_alive(keep_alive_ && !close_);
  if (length) {
    res.content_length(*length);
  } else {
    res.chunked(true);
    chunked_ = true;
  }
  bhttp::response_serializer<bhttp::empty_body> sr{res};
  auto [ec, n] = co_await bhttp::async_write_header(sock_, sr, kTuple);
  if (ec) {
    close_ = true;
    co_return make_error(ErrorCode::kCanceled, "write response head: " + ec.message());
  }
  co_return ok();
}

asio::awaitable<Status> Exchange::write(std::string_view data) {
  if (taken_over_) {
    co_return make_error(ErrorCode::kFailedPrecondition, "write response body: the connection was handed over");
  }
  if (data.empty()) co_return ok();
  boost::system::error_code ec;
  if (chunked_) {
    std::tie(ec, std::ignore) = co_await asio::async_write(sock_, bhttp::make_chunk(asio::buffer(data)), kTuple);
  } else {
    std::tie(ec, std::ignore) = co_await asio::async_write(sock_, asio::buffer(data), kTuple);
  }
  if (ec) {
    close_ = true;
    co_return make_error(ErrorCode::kCanceled, "write response body: " + ec.message());
  }
  co_return ok();
}

asio::awaitable<Status> Exchange::finish() {
  if (finished_) co_return ok();
  finished_ = true;
  if (chunked_) {
    auto [ec, n] = co_await asio::async_write(sock_, bhttp::make_chunk_last(), kTuple);
    if (ec) {
      close_ = true;
      co_return make_error(ErrorCode::kCanceled, "finish response: " + ec.message());
    }
  }
  co_return ok();
}

bool is_upgrade_request(const bhttp::request_header<>& head) {
  if (head.version() < 11) return false;
  auto upgrade = head[bhttp::field::upgrade];
  if (upgrade.find_first_not_of(" \t") == beast::string_view::npos) return false;
  // Connection may be sent as several fields; their options add up.
  auto [first, last] = head.equal_range(bhttp::field::connection);
  for (auto it = first; it != last; ++it) {
    if (bhttp::token_list{it->value()}.exists("upgrade")) return true;
  }
  return false;
}

asio::awaitable<Result<Upgraded>> Exchange::switch_protocols(std::string_view protocol, const Fields& headers) {
  if (!upgrade_requested()) {
    co_return make_error(ErrorCode::kFailedPrecondition, "switch protocols: the request did not ask to upgrade");
  }
  if (response_started_) {
    co_return make_error(ErrorCode::kFailedPrecondition, "switch protocols: response already started");
  }
  if (!parser_.is_done()) {
    co_return make_error(ErrorCode::kFailedPrecondition, "switch protocols: the request body has not been read");
  }
  if (protocol.empty()) co_return make_error(ErrorCode::kInvalidArgument, "switch protocols: no protocol named");
  response_started_ = true;
  bhttp::response<bhttp::empty_body> res{bhttp::status::switching_protocols, 11};
  // insert, not set: a field may rightly come more than once (Sec-WebSocket-Extensions, Set-Cookie).
  for (const auto& [k, v] : headers) res.insert(k, v);
  res.set(bhttp::field::connection, "upgrade");
  res.set(bhttp::field::upgrade, protocol);
  auto [ec, n] = co_await bhttp::async_write(sock_, res, kTuple);
  if (ec) {
    close_ = true;
    co_return make_error(ErrorCode::kCanceled, "write 101 Switching Protocols: " + ec.message());
  }
  finished_ = true;
  taken_over_ = true;
  Upgraded conn{std::move(sock_), std::move(buf_)};
  co_return conn;
}

asio::awaitable<void> Exchange::wait_peer_closed() {
  asio::steady_timer timer(sock_.get_executor());
  for (;;) {
    auto [ec] = co_await sock_.async_wait(Socket::wait_read, kTuple);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) co_return;
    char c;
    ssize_t n = ::recv(sock_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) co_return;
    // Data (a pipelined request) is waiting: look again a little later.
    timer.expires_after(std::chrono::milliseconds(100));
    auto [tec] = co_await timer.async_wait(kTuple);
    if (tec) co_return;
  }
}

// A connection's eviction hook: a timer every wait of serve() races, on the
// connection's strand; eviction cancels it.
struct Server::Conn {
  explicit Conn(asio::any_io_executor strand) : timer(strand) {}
  asio::steady_timer timer;
  ConnectionTable::Ticket ticket;
};

Server::Server(asio::io_context& io, Handler handler, ServerOptions opts)
    : core_(std::make_shared<Core>(io, std::move(handler), opts)) {}

Server::~Server() { stop(); }

Result<uint16_t> Server::listen_tcp(const std::string& host, uint16_t port) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return make_error(ErrorCode::kInvalidArgument, "listen address " + host + ": " + ec.message());
  asio::ip::tcp::endpoint tep(addr, port);
  auto acc = std::make_shared<Acceptor>(core_->io);
  asio::generic::stream_protocol::endpoint ep(tep);
  acc->open(ep.protocol(), ec);
  if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc->bind(ep, ec);
  if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return make_error(ErrorCode::kUnavailable, "listen on " + host + ":" + std::to_string(port) + ": " + ec.message(), ec.value());
  // The bound port, when 0 was asked for.
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(acc->native_handle(), reinterpret_cast<sockaddr*>(&ss), &len);
  uint16_t bound = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                            : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  acceptors_.push_back(acc);
  asio::co_spawn(core_->io, accept_loop(core_, acc, true), asio::detached);
  return bound;
}

Status Server::listen_unix(const std::string& path, unsigned mode) {
  ::unlink(path.c_str());
  boost::system::error_code ec;
  auto acc = std::make_shared<Acceptor>(core_->io);
  asio::generic::stream_protocol::endpoint ep(asio::local::stream_protocol::endpoint{path});
  acc->open(ep.protocol(), ec);
  if (!ec) acc->bind(ep, ec);
  if (!ec) ::chmod(path.c_str(), mode);
  if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return make_error(ErrorCode::kUnavailable, "listen on unix socket " + path + ": " + ec.message(), ec.value());
  acceptors_.push_back(acc);
  asio::co_spawn(core_->io, accept_loop(core_, acc, false), asio::detached);
  return ok();
}

void Server::stop() {
  for (auto& a : acceptors_) {
    boost::system::error_code ec;
    a->close(ec);
  }
  acceptors_.clear();
}

namespace {
using Clock = std::chrono::steady_clock;
constexpr size_t kDrainLimit = 64u << 20;
// How long an answer the server makes up itself (400, 408, 503) may take to write.
constexpr auto kErrorWriteTimeout = std::chrono::seconds(1);

std::string error_json(unsigned status, std::string_view message) {
  std::string out = "{\"code\":" + std::to_string(status) + ",\"message\":\"";
  for (char c : message) {  // our own ASCII messages: only quotes and backslashes need escaping
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"}";
}

std::string error_response(unsigned status, std::string_view message, const Fields& extra = {}) {
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), 11};
  res.set(bhttp::field::content_type, "application/json");
  for (const auto& [k, v] : extra) res.set(k, v);
  res.keep_alive(false);
  res.body() = error_json(status, message);
  res.prepare_payload();
  std::ostringstream os;
  os << res;
  return os.str();
}

// The peer's address, the key of the per-client connection bound: its IP for
// TCP ("unix" for a unix socket peer, "?" when it cannot be told).
std::string peer_address(Socket& sock) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(sock.native_handle(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, text, sizeof text);
    return text;
  }
  if (ss.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, text, sizeof text);
    return text;
  }
  return ss.ss_family == AF_UNIX ? "unix" : "?";
}

// Reads, without waiting, what the peer has sent and nobody will read: a
// socket closed with unread input sends a reset, which can destroy the
// answer before the peer reads it.
void discard_pending_input(Socket& sock) {
  char tmp[4096];
  for (int i = 0; i < 16; ++i) {
    if (::recv(sock.native_handle(), tmp, sizeof tmp, MSG_DONTWAIT) <= 0) break;
  }
}

void close_socket(Socket& sock) {
  boost::system::error_code ignore;
  sock.shutdown(Socket::shutdown_both, ignore);
  sock.close(ignore);
}

// Writes a made-up answer and closes, giving the write kErrorWriteTimeout.
asio::awaitable<void> answer_and_close(Socket& sock, asio::steady_timer& timer, std::string response) {
  timer.expires_after(kErrorWriteTimeout);
  co_await (asio::async_write(sock, asio::buffer(response), kTuple) || timer.async_wait(kTuple));
  discard_pending_input(sock);
  close_socket(sock);
}

// A connection over a bound: answered 503 and closed at once.
asio::awaitable<void> refuse(Socket sock, std::string response) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  co_await answer_and_close(sock, timer, std::move(response));
}

// Framing the server refuses (RFC 9112 sections 5.2, 6.1, 6.3): anything a
// peer before or after us could read differently, letting a second request
// hide in the first one's body. Beast already refuses malformed and
// conflicting Content-Length values and a Transfer-Encoding in a response.
// Returns the status and the message, or nullopt when the framing is sound.
std::optional<std::pair<unsigned, std::string>> framing_error(const bhttp::request_header<>& h) {
  size_t lengths = 0, encodings = 0;
  std::string te;
  for (const auto& f : h) {
    auto v = f.value();
    // A bare CR or LF, or NUL, inside a value. (Beast refuses most of these
    // itself, and joins an obs-fold with a space, as RFC 9112 section 5.2
    // allows: nothing is forwarded folded.)
    if (v.find_first_of(beast::string_view("\r\n\0", 3)) != beast::string_view::npos) {
      return std::pair{400u, "header " + std::string(f.name_string()) + " holds a line break or NUL"};
    }
    if (f.name() == bhttp::field::content_length) {
      ++lengths;
      // Beast takes a list of equal values ("4, 4") as one, as RFC 9110
      // allows; a peer that takes the first or the last could still differ.
      if (v.empty() || v.find_first_not_of("0123456789") != beast::string_view::npos) {
        return std::pair{400u, std::string("Content-Length is not one number")};
      }
    }
    if (f.name() == bhttp::field::transfer_encoding) {
      ++encodings;
      if (!te.empty()) te += ",";
      te += std::string(v);
    }
  }
  if (lengths > 1) return std::pair{400u, std::string("more than one Content-Length")};
  if (encodings == 0) return std::nullopt;
  if (h.version() < 11) return std::pair{400u, std::string("Transfer-Encoding in an HTTP/1.0 request")};
  if (lengths > 0) return std::pair{400u, std::string("both Content-Length and Transfer-Encoding")};
  std::vector<std::string> codings;
  for (auto c : bhttp::token_list{te}) codings.emplace_back(c);
  if (codings.empty() || !beast::iequals(codings.back(), "chunked")) {
    return std::pair{400u, std::string("Transfer-Encoding does not end in chunked")};
  }
  if (codings.size() > 1) {
    for (size_t i = 0; i + 1 < codings.size(); ++i) {
      if (beast::iequals(codings[i], "chunked")) return std::pair{400u, std::string("chunked applied twice")};
    }
    return std::pair{501u, "transfer coding " + codings.front() + " is not supported"};
  }
  return std::nullopt;
}
}  // namespace

asio::awaitable<void> Server::accept_loop(std::shared_ptr<Core> core, std::shared_ptr<Acceptor> acc, bool tcp) {
  for (;;) {
    auto [ec, sock] = co_await acc->async_accept(kTuple);
    if (ec == asio::error::operation_aborted || !acc->is_open()) co_return;
    if (ec) {
      COPPICE_LOG_RATE(warn, 1) << "accept: " << ec.message();
      // EMFILE and friends: back off instead of spinning.
      asio::steady_timer t(core->io, std::chrono::milliseconds(50));
      co_await t.async_wait(kTuple);
      continue;
    }
    if (tcp) {
      boost::system::error_code ignore;
      sock.set_option(asio::ip::tcp::no_delay(true), ignore);
    }
    const std::string client = peer_address(sock);
    admit_and_serve(core, std::move(sock), client);
  }
}

void Server::adopt(Socket sock, const std::string& client) { admit_and_serve(core_, std::move(sock), client); }

void Server::admit_and_serve(const std::shared_ptr<Core>& core, Socket sock, const std::string& client) {
  // Each connection runs on its own strand: the coroutines of one exchange
  // (a proxy's watcher, say) never run at the same time on two threads.
  auto strand = asio::make_strand(core->io);
  auto conn = std::make_shared<Conn>(strand);
  std::weak_ptr<Conn> weak = conn;
  conn->ticket = core->table.admit(client, [strand, weak] {
    asio::post(strand, [weak] {
      if (auto c = weak.lock()) c->timer.cancel();
    });
  });
  if (!conn->ticket) {
    const auto& lim = core->table.limits();
    const bool per_client = lim.max_per_client && core->table.count(client) >= lim.max_per_client;
    std::string message = per_client ? "too many connections from this address (" +
                                           std::to_string(lim.max_per_client) + " are busy); try again later"
                                     : "the server is at its connection limit (" + std::to_string(lim.max_total) +
                                           " are busy); try again later";
    COPPICE_LOG_RATE(warn, 1) << "refused a connection from " << client << ": " << message;
    const Fields retry{{"Retry-After", "1"}};
    auto response = error_response(503, message, retry);
    asio::co_spawn(strand, refuse(std::move(sock), std::move(response)), asio::detached);
    return;
  }
  asio::co_spawn(strand, serve(core, std::move(sock), std::move(conn)), asio::detached);
}

asio::awaitable<void> Server::serve(std::shared_ptr<Core> core, Socket sock, std::shared_ptr<Conn> conn) {
  const ServerOptions& opts = core->opts;
  ConnectionTable& table = core->table;
  asio::steady_timer& timer = conn->timer;
  const ConnectionTable::Ticket& ticket = conn->ticket;
  beast::flat_buffer buf;
  buf.reserve(64 * 1024);  // reads are sized by free capacity: keep request bodies in large pieces
  // The first request's head is due header_timeout after the accept.
  Clock::time_point deadline = Clock::now() + opts.header_timeout;
  bool first = true;
  for (;;) {
    bhttp::request_parser<bhttp::buffer_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(opts.max_header_bytes));
    parser.body_limit(boost::none);  // handlers bound what they read
    if (!first) {
      if (buf.size() == 0) {
        // Kept alive: the next request may take idle_timeout to begin.
        timer.expires_after(opts.idle_timeout);
        if (ticket->evicted) break;
        auto waited = co_await (sock.async_wait(Socket::wait_read, kTuple) || timer.async_wait(kTuple));
        if (waited.index() == 1 || std::get<0>(std::get<0>(waited))) break;
      }
      deadline = Clock::now() + opts.header_timeout;
    }
    first = false;
    timer.expires_at(deadline);
    if (ticket->evicted) break;
    auto result = co_await (bhttp::async_read_header(sock, buf, parser, kTuple) || timer.async_wait(kTuple));
    if (result.index() == 1) {
      // Out of time, or evicted to make room: a client that has sent part of
      // a head is told why.
      if (!ticket->evicted && (buf.size() > 0 || parser.got_some())) {
        co_await answer_and_close(sock, timer, error_response(408, "request head not received in time"));
      }
      break;
    }
    auto [ec, n] = std::get<0>(result);
    if (ec) {
      if (ec != bhttp::error::end_of_stream && ec != asio::error::eof && ec != asio::error::connection_reset &&
          ec != asio::error::operation_aborted) {
        unsigned status = ec == bhttp::error::header_limit ? 431 : 400;
        std::string message = status == 431 ? "request header too large" : "malformed HTTP request: " + ec.message();
        co_await answer_and_close(sock, timer, error_response(status, message));
      }
      break;
    }
    if (!table.mark_busy(ticket)) break;  // evicted just as the head came
    if (auto bad = framing_error(parser.get().base())) {
      co_await answer_and_close(sock, timer, error_response(bad->first, bad->second));
      break;
    }
    Exchange ex(sock, buf, parser);
    bool threw = false;
    try {
      co_await core->handler(ex);
    } catch (const std::exception& e) {
      COPPICE_LOG_RATE(error, 5) << "handler for " << ex.method_string() << " " << ex.path() << " threw: " << e.what();
      threw = true;
    }
    // The handler owns the connection now: nothing here may answer, drain or close it.
    if (ex.taken_over()) {
      table.release(ticket);
      co_return;
    }
    if (threw) {
      if (!ex.responded()) {
        co_await ex.respond_json(500, R"({"code":500,"message":"internal error"})");
      } else {
        ex.set_close();
      }
    }
    if (!ex.responded()) co_await ex.respond_json(500, R"({"code":500,"message":"no response"})");
    if (!ex.finished()) ex.set_close();
    // Drain an unread request body (up to kDrainLimit, for up to
    // drain_timeout) before anything else: closing a socket with unread
    // input makes the kernel send a reset, which can destroy our response
    // before the peer reads it; and a client still sending reads our answer
    // instead of a broken pipe.
    bool drained_all = parser.is_done();
    if (!drained_all && !ex.close_requested()) {
      auto drain = [](Exchange& e, bhttp::request_parser<bhttp::buffer_body>& p) -> asio::awaitable<void> {
        char tmp[8192];
        size_t drained = 0;
        while (!p.is_done() && drained < kDrainLimit) {
          auto r = co_await e.read_some(tmp);
          if (!r || *r == 0) break;
          drained += *r;
        }
      };
      timer.expires_after(opts.drain_timeout);
      co_await (drain(ex, parser) || timer.async_wait(kTuple));
      drained_all = parser.is_done();
    }
    if (!drained_all || ex.close_requested() || !ex.keep_alive()) break;
    table.mark_idle(ticket);
  }
  table.release(ticket);
  close_socket(sock);
}

}  // namespace coppice::http
