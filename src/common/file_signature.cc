#include "common/file_signature.h"

#include "common/base64.h"
#include "common/sha256.h"

namespace coppice {

std::string file_signature(std::string_view path, std::string_view operation, std::string_view user,
                           std::string_view token, std::optional<int64_t> expiration) {
  std::string raw;
  raw.reserve(path.size() + operation.size() + user.size() + token.size() + 24);
  raw.append(path).append(":").append(operation).append(":").append(user).append(":").append(token);
  if (expiration) raw.append(":").append(std::to_string(*expiration));
  Sha256Digest d = sha256(raw);
  std::string b64 = base64_encode(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  return "v1_" + b64;
}

}  // namespace coppice
