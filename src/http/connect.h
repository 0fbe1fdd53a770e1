// The Connect protocol (connectrpc.com) with the JSON codec, server side:
// unary calls (application/json in and out) and server-streaming calls
// (one enveloped request, then enveloped messages closed by an end-stream
// frame with flag 0x02). This is what the E2B SDK speaks to envd.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "http/server.h"

namespace coppice::connect {

using json = nlohmann::json;

enum class Code {
  canceled, unknown, invalid_argument, deadline_exceeded, not_found, already_exists, permission_denied,
  resource_exhausted, failed_precondition, aborted, out_of_range, unimplemented, internal, unavailable,
  data_loss, unauthenticated,
};

struct RpcError {
  Code code;
  std::string message;
};

std::string_view code_name(Code c);
std::optional<Code> parse_code(std::string_view name);
// The HTTP status Connect assigns to a code for unary errors.
unsigned http_status(Code c);
// Our error categories in Connect terms.
Code code_for(ErrorCode c);
RpcError rpc_error(const Error& e);
// Builds an RpcError. Use this (not a braced RpcError{...}) inside co_await and
// co_return expressions: g++ 12 destroys braced aggregate temporaries there twice.
RpcError rpc_error(Code code, std::string message);
// {"code":"not_found","message":"..."}
json error_json(const RpcError& e);

constexpr uint8_t kFlagCompressed = 0x01;
constexpr uint8_t kFlagEndStream = 0x02;
// Largest envelope accepted from a client.
constexpr size_t kMaxMessageBytes = 32u << 20;

// Frames one message: flag byte, 4-byte big-endian length, payload.
std::string envelope(std::string_view payload, uint8_t flags = 0);
// The end-stream frame: {} or {"error":{...}}.
std::string end_stream(const RpcError* err);

struct Envelope {
  uint8_t flags;
  std::string payload;
};

// Incremental envelope parser for a byte stream.
class EnvelopeReader {
 public:
  void feed(std::string_view bytes) { buf_.append(bytes); }
  // The next whole envelope, nullopt when more bytes are needed, an error for
  // a malformed or oversized frame.
  Result<std::optional<Envelope>> next();
  size_t buffered() const { return buf_.size(); }

 private:
  std::string buf_;
};

// A request body of a server-streaming call must hold exactly one uncompressed envelope.
Result<std::string> single_envelope(std::string_view body);

struct CallContext {
  http::Exchange& ex;
  // Connect-Timeout-Ms, when the client sent one.
  std::optional<std::chrono::milliseconds> timeout;
  // Keepalive-Ping-Interval (seconds), when the client sent one.
  std::optional<std::chrono::seconds> keepalive;
};

// Writes the messages of a server stream; the response head goes out with the first message.
class StreamWriter {
 public:
  explicit StreamWriter(http::Exchange& ex) : ex_(ex) {}
  // Sends one message; an error means the client is gone.
  http::asio::awaitable<Status> send(const json& msg);
  // Sends the end-stream frame and finishes the response.
  http::asio::awaitable<Status> close(const std::optional<RpcError>& err);
  bool started() const { return started_; }

 private:
  http::asio::awaitable<Status> ensure_started();
  http::Exchange& ex_;
  bool started_ = false;
};

using UnaryHandler = std::function<http::asio::awaitable<std::expected<json, RpcError>>(CallContext&, const json&)>;
using StreamHandler =
    std::function<http::asio::awaitable<std::optional<RpcError>>(CallContext&, const json&, StreamWriter&)>;

class Router {
 public:
  void unary(const std::string& path, UnaryHandler h) { unary_[path] = std::move(h); }
  void stream(const std::string& path, StreamHandler h) { stream_[path] = std::move(h); }
  // True when `path` names a service this router serves ("/pkg.Service/...").
  bool owns(std::string_view path) const;
  http::asio::awaitable<void> serve(http::Exchange& ex);

 private:
  std::map<std::string, UnaryHandler, std::less<>> unary_;
  std::map<std::string, StreamHandler, std::less<>> stream_;
};

}  // namespace coppice::connect
