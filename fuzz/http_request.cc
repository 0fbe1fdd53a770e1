// HTTP request parsing as the servers do it (http/server.h): the raw bytes
// of one connection go through the real http::Server (beast's parser with
// our header limit, the Exchange accessors, body reads, the drain after the
// response) over a unix socket, to a handler that reads the request the way
// the gateway and envd do and hands Connect paths to a connect::Router.
// Every connection must be answered or closed, never hang or crash, and
// malformed input must get a 4xx, never a 5xx (501 aside, see below).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "fuzz_check.h"
#include "http/connect.h"
#include "http/server.h"

using namespace coppice;
namespace asio = http::asio;

namespace {

struct World {
  asio::io_context io;
  connect::Router router;
  http::Server server;
  std::string dir;
  std::string sock;

  World() : server(io, [this](http::Exchange& ex) { return handle(ex); }) {
    char tmpl[] = "/tmp/coppice-fuzz-http-XXXXXX";
    FUZZ_CHECK(::mkdtemp(tmpl) != nullptr, "mkdtemp");
    dir = tmpl;
    sock = dir + "/s";
    FUZZ_CHECK(server.listen_unix(sock).has_value(), "listen");
    router.unary("/fuzz.Service/Echo", [](connect::CallContext&, const nlohmann::json& req)
                                           -> asio::awaitable<std::expected<nlohmann::json, connect::RpcError>> {
      co_return nlohmann::json{{"fields", req.size()}};
    });
    router.stream("/fuzz.Service/Stream", [](connect::CallContext&, const nlohmann::json& req, connect::StreamWriter& w)
                                              -> asio::awaitable<std::optional<connect::RpcError>> {
      nlohmann::json msg{{"fields", req.size()}};
      auto s = co_await w.send(msg);
      if (!s) co_return connect::rpc_error(s.error());
      co_return std::nullopt;
    });
  }
  ~World() {
    ::unlink(sock.c_str());
    ::rmdir(dir.c_str());
  }

  asio::awaitable<void> handle(http::Exchange& ex) {
    // What the gateway's routing and auth read before anything else.
    (void)ex.method_string();
    (void)ex.path();
    (void)ex.query_params();
    for (const char* h : {"Host", "E2b-Sandbox-Id", "E2b-Sandbox-Port", "X-API-Key", "Authorization",
                          "X-Access-Token", "Content-Type", "Connect-Protocol-Version"}) {
      (void)ex.header(h);
    }
    (void)ex.content_length();
    (void)ex.upgrade_requested();
    if (router.owns(ex.path())) {
      co_await router.serve(ex);
      co_return;
    }
    auto body = co_await ex.read_body(1 << 16);
    if (!body) {
      unsigned status = body.error().code() == ErrorCode::kTooLarge ? 413 : 400;
      co_await ex.respond_json(status, R"({"code":400,"message":"bad body"})");
      co_return;
    }
    co_await ex.respond(200, std::to_string(body->size()), "text/plain");
  }
};

World* the_world = nullptr;

World& world() {
  if (!the_world) {
    the_world = new World();  // never destroyed: the io_context outlives every input
    // libFuzzer ends a run with exit(): remove the socket and its temp dir then.
    std::atexit([] {
      ::unlink(the_world->sock.c_str());
      ::rmdir(the_world->dir.c_str());
    });
  }
  return *the_world;
}

// Sends `request`, closes the sending side and reads the answer to the end.
asio::awaitable<void> client(World& w, std::string request, std::string& answer, bool& done) {
  asio::local::stream_protocol::socket s(w.io);
  auto [cec] = co_await s.async_connect(asio::local::stream_protocol::endpoint(w.sock), asio::as_tuple(asio::use_awaitable));
  FUZZ_CHECK(!cec, "connect");
  auto [wec, wn] = co_await asio::async_write(s, asio::buffer(request), asio::as_tuple(asio::use_awaitable));
  (void)wec;  // the server may close before reading everything (431, 400)
  boost::system::error_code ignore;
  s.shutdown(asio::socket_base::shutdown_send, ignore);
  char buf[16384];
  for (;;) {
    auto [rec, n] = co_await s.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
    answer.append(buf, n);
    if (rec) break;
  }
  done = true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  std::string request(reinterpret_cast<const char*>(data), size);
  std::string answer;
  bool done = false;
  asio::co_spawn(w.io, client(w, std::move(request), answer, done), asio::detached);
  while (!done) w.io.run_one();
  w.io.poll();
  // Every response the server wrote: a 5xx means our code failed on input
  // (but 501, which Connect prescribes for a method a service does not have).
  auto fine = [](unsigned status) { return status < 500 || status == 501; };
  http::beast::error_code ec;
  std::string_view rest(answer);
  while (!rest.empty()) {
    http::bhttp::response_parser<http::bhttp::string_body> p;
    p.eager(true);
    size_t n = p.put(asio::buffer(rest.data(), rest.size()), ec);
    if (ec == http::bhttp::error::need_more) {
      p.put_eof(ec);
      if (!ec) FUZZ_CHECK(fine(p.get().result_int()), answer.c_str());
      break;
    }
    if (ec || !p.is_done()) break;
    FUZZ_CHECK(fine(p.get().result_int()), answer.c_str());
    rest.remove_prefix(n);
  }
  return 0;
}
