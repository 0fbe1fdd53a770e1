#include "proxy/credentials.h"

#include "common/constants.h"
#include "store/keys.h"

namespace coppice::proxy {

namespace beast = http::beast;

namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}
}  // namespace

bool is_gateway_credential(const http::Exchange& ex, std::string_view name, std::string_view value, uint16_t port) {
  if (beast::iequals(name, "X-API-KEY") || beast::iequals(name, "E2B-Traffic-Access-Token")) return true;
  if (!beast::iequals(name, "Authorization")) return false;
  value = trim(value);
  const size_t sp = value.find_first_of(" \t");
  const std::string_view scheme = value.substr(0, sp);
  const std::string_view credentials = sp == std::string_view::npos ? std::string_view{} : trim(value.substr(sp));
  if (port == kEnvdPort) return !beast::iequals(scheme, "Basic");
  if (!beast::iequals(scheme, "Bearer")) return false;
  if (store::looks_like_api_key(credentials)) return true;
  const std::string key = ex.header("X-API-KEY");
  return !key.empty() && credentials == key;
}

}  // namespace coppice::proxy
