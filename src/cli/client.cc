// The CLI's connection to the gateway: URL parsing, one synchronous request
// at a time over http::fetch on a private io_context, and the gateway's
// {code, message} errors turned into one-line messages.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <optional>

#include "cli/cli.h"
#include "http/client.h"

namespace coppice::cli {

namespace asio = http::asio;

Result<ApiUrl> parse_api_url(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.starts_with("https://"))
    return make_error(ErrorCode::kInvalidArgument,
                      "--api-url " + url + ": https is not supported; use the gateway's http:// address");
  if (!url.starts_with(kScheme))
    return make_error(ErrorCode::kInvalidArgument, "--api-url " + url + ": expected http://host[:port]");
  std::string rest = url.substr(kScheme.size());
  ApiUrl out;
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) out.prefix = rest.substr(slash);
  while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  std::string port;
  if (authority.starts_with("[")) {  // [v6 address]:port
    size_t close = authority.find(']');
    if (close == std::string::npos) return make_error(ErrorCode::kInvalidArgument, "--api-url " + url + ": unclosed [");
    out.host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return make_error(ErrorCode::kInvalidArgument, "--api-url " + url + ": bad port");
      port = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) return make_error(ErrorCode::kInvalidArgument, "--api-url " + url + ": no host");
  if (!port.empty()) {
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (*end || p < 1 || p > 65535)
      return make_error(ErrorCode::kInvalidArgument, "--api-url " + url + ": bad port " + port);
    out.port = static_cast<uint16_t>(p);
  }
  return out;
}

namespace {

// The gateway's message from an error body ({"code", "message"}), else the
// start of whatever it sent.
std::string error_message(unsigned status, const std::string& body) {
  json j = json::parse(body, nullptr, false);
  std::string msg;
  if (j.is_object() && j.contains("message") && j["message"].is_string()) msg = j["message"].get<std::string>();
  else msg = body.substr(0, 200);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
  if (msg.empty()) msg = "request failed";
  return msg + " (HTTP " + std::to_string(status) + ")";
}

ErrorCode code_for_status(unsigned status) {
  switch (status) {
    case 400: return ErrorCode::kInvalidArgument;
    case 401: return ErrorCode::kUnauthenticated;
    case 403: return ErrorCode::kPermissionDenied;
    case 404: return ErrorCode::kNotFound;
    case 409: return ErrorCode::kFailedPrecondition;
    case 429: return ErrorCode::kResourceExhausted;
    case 503: return ErrorCode::kUnavailable;
    default: return ErrorCode::kInternal;
  }
}

// The address to connect to: http::fetch takes a numeric address, so a
// name such as "localhost" is resolved here (the first answer is used).
Result<std::string> resolve(const std::string& host, uint16_t port) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  if (!ec) return host;
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec || results.empty())
    return make_error(ErrorCode::kUnavailable, "resolve " + host + ": " + (ec ? ec.message() : "no address"));
  return results.begin()->endpoint().address().to_string();
}

}  // namespace

Result<json> Client::call(verb method, const std::string& target, const std::string& body,
                          std::chrono::milliseconds timeout,
                          std::vector<std::pair<std::string, std::string>>* response_headers) {
  if (g_.api_key.empty())
    return make_error(ErrorCode::kUnauthenticated,
                      "no API key: pass --api-key or set COPPICE_API_KEY (or E2B_API_KEY)");
  auto url = parse_api_url(g_.api_url);
  if (!url) return std::unexpected(url.error());
  const std::string where = "cannot reach the gateway at " + g_.api_url;
  auto addr = resolve(url->host, url->port);
  if (!addr) return std::unexpected(std::move(addr.error()).context(where));

  http::Endpoint ep;
  ep.host = *addr;
  ep.port = url->port;
  std::string host_header = url->host.find(':') != std::string::npos ? "[" + url->host + "]" : url->host;
  if (url->port != 80) host_header += ":" + std::to_string(url->port);
  http::Fields headers;
  headers.emplace_back("Host", host_header);
  headers.emplace_back("X-API-KEY", g_.api_key);
  headers.emplace_back("Accept", "application/json");
  if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
  headers.emplace_back("User-Agent", "coppice-cli/" COPPICE_VERSION);

  asio::io_context io;
  std::optional<Result<http::ClientResponse>> got;
  auto done = [&got](std::exception_ptr e, Result<http::ClientResponse> r) {
    if (e) got = make_error(ErrorCode::kInternal, "request failed unexpectedly");
    else got = std::move(r);
  };
  asio::co_spawn(io, http::fetch(ep, method, url->prefix + target, headers, body, timeout), std::move(done));
  io.run();
  if (!got) return make_error(ErrorCode::kInternal, "request did not finish");
  if (!*got) {
    Error e = std::move(got->error());
    if (e.code() == ErrorCode::kDeadlineExceeded) return std::unexpected(std::move(e).context("the gateway at " + g_.api_url + " did not answer in time"));
    return std::unexpected(std::move(e).context(where));
  }

  const http::ClientResponse& res = **got;
  if (res.status < 200 || res.status > 299)
    return make_error(code_for_status(res.status), error_message(res.status, res.body));
  if (response_headers) {
    for (const auto& f : res.headers) response_headers->emplace_back(std::string(f.name_string()), std::string(f.value()));
  }
  if (res.body.empty()) return json(nullptr);
  json j = json::parse(res.body, nullptr, false);
  if (j.is_discarded())
    return make_error(ErrorCode::kInternal, "the gateway at " + g_.api_url + " answered with something that is not JSON");
  return j;
}


void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size() && i < width.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    std::printf("%s\n", out.c_str());
  };
  line(header);
  for (const auto& r : rows) line(r);
}

int fail(const std::string& message) {
  std::fprintf(stderr, "coppice: %s\n", message.c_str());
  return 1;
}

}  // namespace coppice::cli
