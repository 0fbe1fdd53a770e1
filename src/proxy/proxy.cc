#include "proxy/proxy.h"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <nlohmann/json.hpp>

#include <sys/socket.h>

#include <algorithm>

#include "common/file_signature.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/strings.h"
#include "core/offload.h"
#include "http/client.h"
#include "http/tunnel.h"
#include "proxy/credentials.h"
#include "tls/tls_front.h"

namespace coppice::proxy {

using http::bhttp::field;
namespace bhttp = http::bhttp;
namespace beast = http::beast;
namespace {
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr size_t kChunk = 64 * 1024;
// An upgraded connection (WebSocket) with no byte either way this long is
// closed: quiet for minutes is normal, for an hour means a peer is gone.
constexpr auto kUpgradedIdleTimeout = std::chrono::hours(1);

bool parse_port(std::string_view s, uint16_t* out) {
  if (s.empty() || s.size() > 5) return false;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v == 0 || v > 65535) return false;
  *out = static_cast<uint16_t>(v);
  return true;
}

// The value of cookie `name` in a Cookie header, or "".
std::string cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    size_t semi = header.find(';');
    std::string_view pair = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view{} : header.substr(semi + 1);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    size_t eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) return std::string(pair.substr(eq + 1));
  }
  return {};
}

// The request target without the preview parameter.
std::string target_without_preview(const http::Exchange& ex) {
  std::string out(ex.path());
  std::string_view q = ex.query();
  char sep = '?';
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view item = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (item.empty() || item.substr(0, item.find('=')) == kPreviewParam) continue;
    out.push_back(sep);
    out.append(item);
    sep = '&';
  }
  return out;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string not_found_body(const std::string& id) {
  return nlohmann::json{{"sandboxId", id}, {"message", "The sandbox was not found"}, {"code", 502}}.dump();
}

// Headers that describe one hop and must not be forwarded.
bool hop_by_hop(std::string_view name) {
  static constexpr std::string_view kHop[] = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
                                              "transfer-encoding", "upgrade", "content-length", "host",
                                              "proxy-authorization", "proxy-authenticate"};
  for (auto h : kHop)
    if (beast::iequals(name, h)) return true;
  return false;
}

// Sends the upstream's 101 (its protocol and end-to-end headers) to the
// client and relays bytes both ways, `up_read_ahead` (read from `up` past the
// 101) first, until the tunnel ends.
asio::awaitable<void> relay_upgraded(http::Exchange& ex, const Target& t, http::Socket& up,
                                     beast::flat_buffer up_read_ahead, const std::string& protocol,
                                     const http::Fields& headers, core::metrics::GatewayMetrics& metrics) {
  auto conn = co_await ex.switch_protocols(protocol, headers);
  if (!conn) {
    COPPICE_LOG(debug) << "sandbox " << t.sandbox_id << " port " << t.port << ": " << conn.error().to_string();
    co_return;
  }
  http::TunnelOptions opts;
  opts.idle_timeout = kUpgradedIdleTimeout;
  opts.on_a_to_b = [&metrics](size_t n) { metrics.proxy_bytes_in.inc(static_cast<double>(n)); };
  opts.on_b_to_a = [&metrics](size_t n) { metrics.proxy_bytes_out.inc(static_cast<double>(n)); };
  auto r = co_await http::tunnel(conn->socket, std::move(conn->read_ahead), up, std::move(up_read_ahead),
                                 std::move(opts));
  COPPICE_LOG(debug) << "sandbox " << t.sandbox_id << " port " << t.port << ": " << protocol
                     << " connection closed after " << r.a_to_b << " bytes in, " << r.b_to_a << " out"
                     << (r.timed_out ? " (idle timeout)" : "")
                     << (r.error ? " (" + r.error.message() + ")" : std::string());
}
}  // namespace

std::optional<Target> route(const http::Exchange& ex, const std::string& domain) {
  if (ex.has_header("E2b-Sandbox-Id")) {
    Target t;
    t.sandbox_id = ex.header("E2b-Sandbox-Id");
    std::string port = ex.header("E2b-Sandbox-Port");
    if (port.empty()) t.port = kEnvdPort;
    else if (!parse_port(port, &t.port)) t.port = 0;
    return t;
  }
  std::string host = ex.header("Host");
  host = host.substr(0, host.find(':'));
  size_t dash = host.find('-');
  size_t dot = host.find('.');
  if (dash == std::string::npos || dot == std::string::npos || dash > dot) return std::nullopt;
  std::string rest = host.substr(dot + 1);
  // A domain may name the port the gateway is published on ("example.com:8443").
  if (!domain.empty() && !beast::iequals(rest, domain.substr(0, domain.find(':')))) return std::nullopt;
  Target t;
  if (!parse_port(std::string_view(host).substr(0, dash), &t.port)) return std::nullopt;
  t.sandbox_id = host.substr(dash + 1, dot - dash - 1);
  if (t.sandbox_id.empty()) return std::nullopt;
  return t;
}

bool is_internal_envd_path(std::string_view path) {
  static constexpr std::string_view kInternal[] = {"/init", "/freeze", "/unfreeze", "/collapse", "/fsfreeze",
                                                   "/fsthaw", "/metrics", "/coppice/held"};
  // Compare on the cleaned path so "//init" or "/./init" do not slip through.
  std::string p;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '/' && !p.empty() && p.back() == '/') continue;
    p.push_back(path[i]);
  }
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  for (auto i : kInternal)
    if (beast::iequals(p, i) || beast::iequals(p, std::string("/.") + std::string(i))) return true;
  return p.find("/./") != std::string::npos || p.find("/../") != std::string::npos;
}

bool is_signed_file_request(const http::Exchange& ex) {
  if (ex.path() != "/files") return false;
  if (ex.method() != bhttp::verb::get && ex.method() != bhttp::verb::post) return false;
  return ex.query().find("signature=") != std::string_view::npos;
}

asio::awaitable<void> Proxy::serve_signed_file(http::Exchange& ex) {
  const auto& q = ex.query_params();
  auto param = [&](const char* name) -> std::string {
    auto it = q.find(name);
    return it == q.end() ? std::string() : it->second;
  };
  const std::string signature = param("signature"), path = param("path"), user = param("username");
  const std::string operation = ex.method() == bhttp::verb::get ? "read" : "write";
  std::optional<int64_t> expiration;
  if (auto e = param("signature_expiration"); !e.empty()) {
    char* end = nullptr;
    long long v = std::strtoll(e.c_str(), &end, 10);
    if (*end) {
      co_await ex.respond_json(400, R"({"code":400,"message":"invalid signature_expiration"})");
      co_return;
    }
    expiration = v;
  }
  auto route = routes_.find_if([&](const core::Route& r) {
    return r.running() && !r.token.empty() &&
           constant_time_equal(file_signature(path, operation, user, r.token, expiration), signature);
  });
  if (!route) {
    co_await ex.respond_json(401, R"({"code":401,"message":"the URL's signature matches no running sandbox"})");
    co_return;
  }
  Target t{route->id, kEnvdPort};
  co_await serve(ex, t);
}

asio::awaitable<bool> Proxy::admit(http::Exchange& ex, const core::Route& r, const Target& t) {
  const int64_t now = unix_now();
  // A preview link's first visit: checked, then the browser gets the same
  // signed value as a cookie for this host and is sent to the URL without it.
  if (signer_) {
    const auto& q = ex.query_params();
    if (auto it = q.find(std::string(kPreviewParam)); it != q.end()) {
      if (!signer_->verify(r.id, t.port, it->second, now)) {
        co_await ex.respond_json(403, R"({"code":403,"message":"the preview link is not valid for this port or has expired"})");
        co_return false;
      }
      if (ex.method() != bhttp::verb::get && ex.method() != bhttp::verb::head) co_return true;
      const int64_t expires = std::stoll(it->second.substr(0, it->second.find('.')));
      std::string cookie = std::string(kPreviewCookie) + "=" + it->second + "; Path=/; Max-Age=" +
                           std::to_string(expires - now) + "; HttpOnly; SameSite=Lax" + (secure_cookie_ ? "; Secure" : "");
      const http::Fields headers{{"Location", target_without_preview(ex)}, {"Set-Cookie", cookie},
                                 {"Cache-Control", "no-store"}};
      ex.set_close();  // the request's body, if any, is not read
      co_await ex.respond(302, "", "", headers);
      co_return false;
    }
  }
  if (r.traffic_token.empty()) co_return true;
  const std::string sent = ex.header("E2B-Traffic-Access-Token");
  if (!sent.empty() && constant_time_equal(sent, r.traffic_token)) co_return true;
  const std::string cookie = signer_ ? cookie_value(ex.header("Cookie"), kPreviewCookie) : std::string();
  if (!cookie.empty() && signer_->verify(r.id, t.port, cookie, now)) co_return true;
  if (!cookie.empty()) {
    co_await ex.respond_json(403, R"({"code":403,"message":"the preview link is not valid for this port or has expired"})");
  } else if (!sent.empty()) {
    co_await ex.respond_json(403, R"({"code":403,"message":"the e2b-traffic-access-token header does not match this sandbox's traffic access token"})");
  } else {
    co_await ex.respond_json(403, R"j({"code":403,"message":"this sandbox's ports need the e2b-traffic-access-token header (it was created with network.allowPublicTraffic: false)"})j");
  }
  co_return false;
}

asio::awaitable<Result<http::Socket>> Proxy::connect_upstream(const core::Route& r, uint16_t port) {
  if (port == kEnvdPort) {
    const http::Endpoint ep{r.handle.envd_socket, "", 0};
    co_return co_await http::connect_to(ep, std::chrono::seconds(5));
  }
  sandbox::SandboxHandle h = r.handle;
  sandbox::Backend* backend = &backend_;
  auto job = [backend, h, port] { return backend->port_socket(h, port); };
  auto made = co_await core::run_on(netns_pool_, std::move(job));
  if (!made) co_return std::unexpected(std::move(made.error()));
  auto ex = co_await asio::this_coro::executor;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(made->host, ec);
  if (ec) co_return make_error(ErrorCode::kInternal, "upstream address " + made->host + ": " + ec.message());
  asio::ip::tcp::socket tcp(ex);
  tcp.assign(addr.is_v6() ? asio::ip::tcp::v6() : asio::ip::tcp::v4(), made->fd.release(), ec);
  if (ec) co_return make_error(ErrorCode::kInternal, "upstream socket: " + ec.message());
  auto [cec] = co_await tcp.async_connect(asio::ip::tcp::endpoint(addr, made->port), kTuple);
  if (cec)
    co_return make_error(ErrorCode::kUnavailable,
                         "connect to port " + std::to_string(port) + " in sandbox " + r.id + ": " + cec.message());
  tcp.set_option(asio::ip::tcp::no_delay(true), ec);
  if (std::find(r.https_ports.begin(), r.https_ports.end(), port) != r.https_ports.end()) {
    // network.httpsPorts: the port speaks TLS; its certificate is not checked.
    std::string sni = r.mask_host.empty() ? std::string() : masked_host(r.mask_host, port);
    sni = sni.substr(0, sni.find(':'));
    const std::chrono::steady_clock::duration handshake = std::chrono::seconds(5);
    auto secured = co_await tls::connect_tls_upstream(std::move(tcp), std::move(sni), handshake);
    co_return secured;
  }
  co_return http::Socket(std::move(tcp));
}

asio::awaitable<void> Proxy::serve(http::Exchange& ex, const Target& t) {
  using core::metrics::ProxyError;
  bool to_envd = t.port == kEnvdPort;
  (to_envd ? metrics_.proxy_requests_envd : metrics_.proxy_requests_other).inc();
  // A 502 after the sandbox was found: the upstream failed (and when that is envd, it is an envd error too).
  auto upstream_failed = [this, to_envd](ProxyError e) {
    metrics_.proxy_error(e).inc();
    if (to_envd) metrics_.envd_errors.inc();
  };
  if (t.port == 0) {
    co_await ex.respond_json(400, R"({"code":400,"message":"E2b-Sandbox-Port is not a valid port"})");
    co_return;
  }
  // Never echoed: it may be any bytes at all.
  if (!valid_sandbox_id(t.sandbox_id)) {
    co_await ex.respond_json(
        400, R"({"code":400,"message":"the sandbox id (E2b-Sandbox-Id, or the Host's <port>-<id>) is not 20 characters of [a-z0-9]"})");
    co_return;
  }
  if (t.port == kEnvdPort && is_internal_envd_path(ex.path())) {
    co_await ex.respond_json(403, R"({"code":403,"message":"this envd endpoint is internal to the gateway"})");
    co_return;
  }
  // Connect upstream.
  auto route = routes_.lookup(t.sandbox_id);
  // An API key, when sent, must be valid and of the sandbox's team; another
  // team's sandbox is answered as a missing one.
  std::optional<std::string> key_team;
  if (team_of_key_ && ex.has_header("X-API-KEY")) {
    key_team = team_of_key_(ex.header("X-API-KEY"));
    if (!key_team) {
      co_await ex.respond_json(401, R"({"code":401,"message":"X-API-KEY is not a valid API key"})");
      co_return;
    }
  }
  if (route && !route->running() && route->auto_resume && resume_ && (!key_team || *key_team == route->team) &&
      (route->state == core::SandboxState::kPaused || route->state == core::SandboxState::kResuming)) {
    // autoResume, for a request that may reach the sandbox: with envd's
    // token (when it has one; a signed URL is left to envd) or past the
    // port's inbound policy. A stranger cannot wake it.
    bool may = false;
    if (to_envd) {
      may = route->token.empty() || (ex.has_header("X-Access-Token") &&
                                     constant_time_equal(ex.header("X-Access-Token"), route->token));
    } else {
      may = co_await admit(ex, *route, t);
      if (!may) co_return;
    }
    if (may) {
      auto resuming = resume_(t.sandbox_id);
      auto resumed = co_await std::move(resuming);
      if (resumed) {
        route = routes_.lookup(t.sandbox_id);
      } else {
        COPPICE_LOG_RATE(warn, 10).sandbox(t.sandbox_id) << "autoResume: " << resumed.error().to_string();
      }
    }
  }
  if (!route || !route->running() || (key_team && *key_team != route->team)) {
    metrics_.proxy_error(ProxyError::kNotFound).inc();
    co_await ex.respond_json(502, not_found_body(t.sandbox_id));
    co_return;
  }
  if (!to_envd) {
    const bool admitted = co_await admit(ex, *route, t);
    if (!admitted) co_return;
  }
  auto connected = co_await connect_upstream(*route, t.port);
  if (!connected) {
    if (connected.error().code() == ErrorCode::kNotFound) {
      metrics_.proxy_error(ProxyError::kNotFound).inc();
      co_await ex.respond_json(502, not_found_body(t.sandbox_id));
    } else if (to_envd) {
      upstream_failed(ProxyError::kConnect);
      co_await ex.respond_json(502, not_found_body(t.sandbox_id));
    } else {
      upstream_failed(ProxyError::kConnect);
      nlohmann::json body{{"sandboxId", t.sandbox_id}, {"port", t.port},
                          {"message", "nothing is listening on port " + std::to_string(t.port) + " in the sandbox"},
                          {"code", 502}};
      co_await ex.respond_json(502, body.dump());
    }
    co_return;
  }
  http::Socket up = std::move(*connected);

  // Request head.
  bhttp::request<bhttp::empty_body> req{ex.method(), std::string(ex.target()), 11};
  for (const auto& f : ex.head()) {
    const std::string_view name(f.name_string().data(), f.name_string().size());
    if (hop_by_hop(name)) continue;
    if (is_gateway_credential(ex, name, std::string_view(f.value().data(), f.value().size()), t.port)) continue;
    req.insert(f.name_string(), f.value());
  }
  // The sandbox's own servers see "localhost", or the sandbox's
  // maskRequestHost on its ports.
  req.set(field::host, to_envd || route->mask_host.empty() ? std::string("localhost") : masked_host(route->mask_host, t.port));
  auto cl = ex.content_length();
  bool chunked_up = false;
  if (cl) {
    req.content_length(*cl);
  } else if (!ex.body_done()) {
    req.chunked(true);
    chunked_up = true;
  }
  // An upgrade is offered upstream as the client made it; the upstream
  // connection serves one request either way (a refused upgrade's response
  // is read by its framing, or to EOF).
  const bool upgrade = ex.upgrade_requested();
  if (upgrade) {
    req.set(field::connection, "upgrade");
    req.set(field::upgrade, ex.header("Upgrade"));
  } else {
    req.keep_alive(false);
  }
  bhttp::request_serializer<bhttp::empty_body> rs{req};
  if (auto [ec, n] = co_await bhttp::async_write_header(up, rs, kTuple); ec) {
    upstream_failed(ProxyError::kUpstream);
    co_await ex.respond_json(502, not_found_body(t.sandbox_id));
    co_return;
  }
  // Request body, in pieces.
  auto storage = std::make_unique_for_overwrite<char[]>(kChunk);  // not zero-filled: it is overwritten
  std::span<char> buf(storage.get(), kChunk);
  for (;;) {
    auto r = co_await ex.read_some(buf);
    if (!r) {
      ex.set_close();
      co_await ex.respond_json(400, R"({"code":400,"message":"request body could not be read"})");
      co_return;
    }
    if (*r == 0) break;
    metrics_.proxy_bytes_in.inc(static_cast<double>(*r));
    boost::system::error_code ec;
    if (chunked_up) {
      std::tie(ec, std::ignore) = co_await asio::async_write(up, bhttp::make_chunk(asio::buffer(buf.data(), *r)), kTuple);
    } else {
      std::tie(ec, std::ignore) = co_await asio::async_write(up, asio::buffer(buf.data(), *r), kTuple);
    }
    if (ec) {
      upstream_failed(ProxyError::kUpstream);
      ex.set_close();
      co_await ex.respond_json(502, not_found_body(t.sandbox_id));
      co_return;
    }
  }
  if (chunked_up) co_await asio::async_write(up, bhttp::make_chunk_last(), kTuple);

  // A client that goes away must be seen upstream at once (envd keeps
  // processes, the code interpreter interrupts its kernel): a watcher on the
  // same strand closes the upstream socket when the client's side closes.
  // It touches nothing once `done` is set, and stops at the first sign of
  // life from the client (a pipelined request) rather than polling.
  auto done = std::make_shared<bool>(false);
  auto watch = [](http::Socket& client, http::Socket& u, std::shared_ptr<bool> d) -> asio::awaitable<void> {
    auto [ec] = co_await client.async_wait(http::Socket::wait_read, kTuple);
    if (*d || ec) co_return;
    char c;
    ssize_t n = ::recv(client.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      boost::system::error_code ig;
      u.close(ig);
    }
  };
  asio::co_spawn(co_await asio::this_coro::executor, watch(ex.socket(), up, done), asio::detached);
  struct StopWatch {
    http::Exchange& ex;
    std::shared_ptr<bool> d;
    // Idempotent; must run before the client's socket changes hands.
    void stop() {
      if (*d) return;
      *d = true;
      boost::system::error_code ig;
      ex.socket().cancel(ig);
    }
    ~StopWatch() { stop(); }
  } stop_watch{ex, done};

  // Response head, then body pieces as they come.
  // Beast sizes each socket read by the buffer's free capacity (512 bytes
  // for an empty buffer): reserve a full chunk so the body is relayed in
  // large pieces, not thousands of tiny chunks.
  beast::flat_buffer ubuf;
  ubuf.reserve(kChunk);
  bhttp::response_parser<bhttp::buffer_body> rp;
  rp.body_limit(boost::none);
  if (auto [ec, n] = co_await bhttp::async_read_header(up, ubuf, rp, kTuple); ec) {
    upstream_failed(ProxyError::kUpstream);
    co_await ex.respond_json(502, not_found_body(t.sandbox_id));
    co_return;
  }
  http::Fields headers;
  for (const auto& f : rp.get().base()) {
    std::string_view name(f.name_string().data(), f.name_string().size());
    if (hop_by_hop(name)) continue;
    headers.emplace_back(std::string(name), std::string(f.value()));
  }
  if (rp.get().result() == bhttp::status::switching_protocols) {
    std::string protocol(rp.get()[field::upgrade]);
    if (!upgrade || protocol.empty()) {
      // Unasked for, or naming no protocol: what follows cannot be relayed as HTTP, nor as anything else.
      upstream_failed(ProxyError::kUpstream);
      COPPICE_LOG_RATE(warn, 5) << "sandbox " << t.sandbox_id << " port " << t.port << ": upstream answered 101 to "
                                << (upgrade ? "an upgrade naming no protocol" : "a plain request");
      ex.set_close();
      co_await ex.respond_json(502, not_found_body(t.sandbox_id));
      co_return;
    }
    stop_watch.stop();
    co_await relay_upgraded(ex, t, up, std::move(ubuf), protocol, headers, metrics_);
    co_return;
  }
  // Anything else, a refused upgrade included, is an ordinary response (the
  // Exchange closes the connection after a refused upgrade).
  std::optional<uint64_t> length;
  if (auto l = rp.content_length()) length = *l;
  bool no_body = ex.method() == bhttp::verb::head || rp.get().result_int() == 204 || rp.get().result_int() == 304;
  if (no_body) length = 0;
  if (auto s = co_await ex.start(rp.get().result_int(), headers, length); !s) co_return;
  while (!no_body && !rp.is_done()) {
    rp.get().body().data = buf.data();
    rp.get().body().size = buf.size();
    auto [ec, n] = co_await bhttp::async_read_some(up, ubuf, rp, kTuple);
    if (ec == bhttp::error::need_buffer) ec = {};
    size_t got = buf.size() - rp.get().body().size;
    if (got > 0) {
      metrics_.proxy_bytes_out.inc(static_cast<double>(got));
      if (auto s = co_await ex.write(std::string_view(buf.data(), got)); !s) co_return;
    }
    if (ec) {
      // Upstream broke mid-body: the client must not mistake it for a whole response.
      ex.set_close();
      co_return;
    }
  }
  co_await ex.finish();
}

}  // namespace coppice::proxy
