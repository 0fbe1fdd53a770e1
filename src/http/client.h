// A small asynchronous HTTP/1.1 client for talking to envd over its unix
// socket (or a loopback TCP port): whole-body requests for control calls such
// as /init, and a connected stream the proxy uses to relay a request and its
// response piece by piece.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "common/result.h"
#include "http/server.h"

namespace coppice::http {

struct Endpoint {
  std::string unix_path;  // when set, a unix socket
  std::string host;       // else TCP host
  uint16_t port = 0;
  std::string to_string() const;
};

struct ClientResponse {
  unsigned status = 0;
  std::string body;
  bhttp::fields headers;
};

// Connects a socket to `ep` (with a timeout).
asio::awaitable<Result<Socket>> connect_to(const Endpoint& ep, std::chrono::milliseconds timeout);

// One request with a whole body, on a fresh connection; the response body is
// read whole (up to `max_body`).
asio::awaitable<Result<ClientResponse>> fetch(const Endpoint& ep, bhttp::verb method, std::string target,
                                              const Fields& headers, std::string body,
                                              std::chrono::milliseconds timeout = std::chrono::seconds(10),
                                              size_t max_body = 16u << 20);

}  // namespace coppice::http
