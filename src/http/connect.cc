#include "http/connect.h"

#include "common/log.h"

namespace coppice::connect {

namespace {
struct CodeInfo {
  Code code;
  std::string_view name;
  unsigned status;
};
constexpr CodeInfo kCodes[] = {
    {Code::canceled, "canceled", 499},
    {Code::unknown, "unknown", 500},
    {Code::invalid_argument, "invalid_argument", 400},
    {Code::deadline_exceeded, "deadline_exceeded", 504},
    {Code::not_found, "not_found", 404},
    {Code::already_exists, "already_exists", 409},
    {Code::permission_denied, "permission_denied", 403},
    {Code::resource_exhausted, "resource_exhausted", 429},
    {Code::failed_precondition, "failed_precondition", 400},
    {Code::aborted, "aborted", 409},
    {Code::out_of_range, "out_of_range", 400},
    {Code::unimplemented, "unimplemented", 501},
    {Code::internal, "internal", 500},
    {Code::unavailable, "unavailable", 503},
    {Code::data_loss, "data_loss", 500},
    {Code::unauthenticated, "unauthenticated", 401},
};
}  // namespace

std::string_view code_name(Code c) {
  for (const auto& i : kCodes)
    if (i.code == c) return i.name;
  return "unknown";
}

std::optional<Code> parse_code(std::string_view name) {
  for (const auto& i : kCodes)
    if (i.name == name) return i.code;
  return std::nullopt;
}

unsigned http_status(Code c) {
  for (const auto& i : kCodes)
    if (i.code == c) return i.status;
  return 500;
}

Code code_for(ErrorCode c) {
  switch (c) {
    case ErrorCode::kInternal: return Code::internal;
    case ErrorCode::kInvalidArgument: return Code::invalid_argument;
    case ErrorCode::kNotFound: return Code::not_found;
    case ErrorCode::kAlreadyExists: return Code::already_exists;
    case ErrorCode::kPermissionDenied: return Code::permission_denied;
    case ErrorCode::kUnauthenticated: return Code::unauthenticated;
    case ErrorCode::kFailedPrecondition: return Code::failed_precondition;
    case ErrorCode::kResourceExhausted: return Code::resource_exhausted;
    case ErrorCode::kUnavailable: return Code::unavailable;
    case ErrorCode::kDeadlineExceeded: return Code::deadline_exceeded;
    case ErrorCode::kCanceled: return Code::canceled;
    case ErrorCode::kUnimplemented: return Code::unimplemented;
    case ErrorCode::kTooLarge: return Code::resource_exhausted;
  }
  return Code::internal;
}

RpcError rpc_error(const Error& e) { return {code_for(e.code()), e.message()}; }

RpcError rpc_error(Code code, std::string message) { return RpcError{code, std::move(message)}; }

json error_json(const RpcError& e) { return json{{"code", code_name(e.code)}, {"message", e.message}}; }

namespace {
// Error messages quote what a client sent (a request path) or found on disk
// (a file name), which need not be UTF-8: invalid bytes become U+FFFD rather
// than make the JSON encoder throw.
std::string error_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
}  // namespace

std::string envelope(std::string_view payload, uint8_t flags) {
  std::string out;
  out.reserve(5 + payload.size());
  uint32_t n = static_cast<uint32_t>(payload.size());
  out.push_back(static_cast<char>(flags));
  out.push_back(static_cast<char>(n >> 24));
  out.push_back(static_cast<char>(n >> 16));
  out.push_back(static_cast<char>(n >> 8));
  out.push_back(static_cast<char>(n));
  out.append(payload);
  return out;
}

std::string end_stream(const RpcError* err) {
  if (!err) return envelope("{}", kFlagEndStream);
  json j{{"error", error_json(*err)}};
  return envelope(error_text(j), kFlagEndStream);
}

Result<std::optional<Envelope>> EnvelopeReader::next() {
  if (buf_.size() < 5) return std::optional<Envelope>{};
  auto u = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(buf_[i])); };
  uint8_t flags = static_cast<uint8_t>(buf_[0]);
  uint32_t len = (u(1) << 24) | (u(2) << 16) | (u(3) << 8) | u(4);
  if (flags & ~(kFlagCompressed | kFlagEndStream))
    return make_error(ErrorCode::kInvalidArgument, "envelope has unknown flags " + std::to_string(flags));
  if (len > kMaxMessageBytes)
    return make_error(ErrorCode::kTooLarge, "envelope of " + std::to_string(len) + " bytes is over the limit");
  if (buf_.size() < 5 + static_cast<size_t>(len)) return std::optional<Envelope>{};
  Envelope e{flags, buf_.substr(5, len)};
  buf_.erase(0, 5 + static_cast<size_t>(len));
  return std::optional<Envelope>(std::move(e));
}

Result<std::string> single_envelope(std::string_view body) {
  EnvelopeReader r;
  r.feed(body);
  auto e = r.next();
  if (!e) return std::unexpected(e.error());
  if (!*e) {
    if (body.empty()) return make_error(ErrorCode::kInvalidArgument, "request has no envelope");
    return make_error(ErrorCode::kInvalidArgument, "request envelope is truncated");
  }
  if ((*e)->flags & kFlagCompressed)
    return make_error(ErrorCode::kInvalidArgument, "compressed envelopes are not supported");
  if ((*e)->flags & kFlagEndStream)
    return make_error(ErrorCode::kInvalidArgument, "request envelope is an end-stream frame");
  if (r.buffered() != 0) return make_error(ErrorCode::kInvalidArgument, "request has bytes after its envelope");
  return std::move((*e)->payload);
}

http::asio::awaitable<Status> StreamWriter::ensure_started() {
  if (started_) co_return ok();
  started_ = true;
  const http::Fields headers{{"Content-Type", "application/connect+json"}, {"Cache-Control", "no-store"}};
  co_return co_await ex_.start(200, headers, std::nullopt);
}

http::asio::awaitable<Status> StreamWriter::send(const json& msg) {
  if (auto s = co_await ensure_started(); !s) co_return s;
  co_return co_await ex_.write(envelope(msg.dump(-1, ' ', false, json::error_handler_t::replace)));
}

http::asio::awaitable<Status> StreamWriter::close(const std::optional<RpcError>& err) {
  if (auto s = co_await ensure_started(); !s) co_return s;
  if (auto s = co_await ex_.write(end_stream(err ? &*err : nullptr)); !s) co_return s;
  co_return co_await ex_.finish();
}

bool Router::owns(std::string_view path) const {
  auto svc = path.substr(0, path.rfind('/') + 1);
  if (svc.size() < 2) return false;
  for (const auto& [p, h] : unary_)
    if (std::string_view(p).starts_with(svc)) return true;
  for (const auto& [p, h] : stream_)
    if (std::string_view(p).starts_with(svc)) return true;
  return false;
}

namespace {
std::string_view media_type(const std::string& ct) {
  std::string_view v(ct);
  v = v.substr(0, v.find(';'));
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  return v;
}

std::optional<long long> parse_positive(const std::string& s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  long long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

http::asio::awaitable<void> unary_error(http::Exchange& ex, const RpcError& e) {
  co_await ex.respond_json(http_status(e.code), error_text(error_json(e)));
}
}  // namespace

http::asio::awaitable<void> Router::serve(http::Exchange& ex) {
  std::string path(ex.path());
  auto uit = unary_.find(path);
  auto sit = stream_.find(path);
  if (uit == unary_.end() && sit == stream_.end()) {
    co_await unary_error(ex, rpc_error(Code::unimplemented, "method " + path + " is not implemented"));
    co_return;
  }
  if (ex.method() != http::bhttp::verb::post) {
    const http::Fields allow{{"Allow", "POST"}};
    co_await ex.respond_json(405, error_text(error_json(rpc_error(Code::unimplemented, "use POST for " + path))), allow);
    co_return;
  }
  CallContext ctx{ex, std::nullopt, std::nullopt};
  if (auto t = ex.header("Connect-Timeout-Ms"); !t.empty()) {
    auto v = parse_positive(t);
    if (!v) {
      co_await unary_error(ex, rpc_error(Code::invalid_argument, "Connect-Timeout-Ms must be a positive integer of at most 10 digits"));
      co_return;
    }
    ctx.timeout = std::chrono::milliseconds(*v);
  }
  if (auto k = ex.header("Keepalive-Ping-Interval"); !k.empty()) {
    if (auto v = parse_positive(k); v && *v > 0) ctx.keepalive = std::chrono::seconds(*v);
  }
  std::string ct = ex.header("Content-Type");
  auto body = co_await ex.read_body(kMaxMessageBytes + 5);
  if (!body) {
    auto code = body.error().code() == ErrorCode::kTooLarge ? Code::resource_exhausted : Code::invalid_argument;
    co_await unary_error(ex, rpc_error(code, body.error().message()));
    co_return;
  }
  if (uit != unary_.end()) {
    if (media_type(ct) != "application/json") {
      const http::Fields accept{{"Accept-Post", "application/json"}};
      co_await ex.respond_json(415, error_json(rpc_error(Code::unknown, "unary calls take Content-Type application/json")).dump(),
                               accept);
      co_return;
    }
    json req = json::parse(body->empty() ? std::string_view("{}") : std::string_view(*body), nullptr, false);
    if (req.is_discarded() || !req.is_object()) {
      co_await unary_error(ex, rpc_error(Code::invalid_argument, "request body is not a JSON object"));
      co_return;
    }
    auto r = co_await uit->second(ctx, req);
    if (!r) {
      co_await unary_error(ex, r.error());
    } else {
      co_await ex.respond_json(200, r->dump(-1, ' ', false, json::error_handler_t::replace));
    }
    co_return;
  }
  // Server stream.
  StreamWriter w(ex);
  if (media_type(ct) != "application/connect+json") {
    const http::Fields accept{{"Accept-Post", "application/connect+json"}};
    co_await ex.respond_json(
        415, error_json(rpc_error(Code::unknown, "streaming calls take Content-Type application/connect+json")).dump(), accept);
    co_return;
  }
  auto payload = single_envelope(*body);
  if (!payload) {
    co_await w.close(rpc_error(Code::invalid_argument, payload.error().message()));
    co_return;
  }
  json req = json::parse(payload->empty() ? std::string_view("{}") : std::string_view(*payload), nullptr, false);
  if (req.is_discarded() || !req.is_object()) {
    co_await w.close(rpc_error(Code::invalid_argument, "request message is not a JSON object"));
    co_return;
  }
  auto err = co_await sit->second(ctx, req, w);
  co_await w.close(err);
}

}  // namespace coppice::connect
