// Inbound policy of a sandbox's ports (E2B's network.allowPublicTraffic and
// network.maskRequestHost) and signed preview URLs, which let whoever holds
// one reach one port of one sandbox until an expiry, without the traffic
// access token. Pure functions and one immutable signer: safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::proxy {

// The longest maskRequestHost accepted (a DNS name and a port).
inline constexpr size_t kMaxMaskHostLength = 261;

// Checks a maskRequestHost: host[:port], where host is letters, digits, '.',
// '-' and '_' (at most 253 of them) and port is 1..65535; "${PORT}" may stand
// anywhere for the target port. kInvalidArgument naming the field otherwise.
Status validate_mask_host(std::string_view mask);

// The Host header sent to port `port` of a sandbox whose mask is `mask`: the
// mask with every "${PORT}" replaced by the port.
std::string masked_host(std::string_view mask, uint16_t port);

// The query parameter and cookie that carry a preview signature.
inline constexpr std::string_view kPreviewParam = "coppice_preview";
inline constexpr std::string_view kPreviewCookie = "coppice_preview";
// Bounds of a preview URL's lifetime.
inline constexpr int64_t kPreviewMinSeconds = 1;
inline constexpr int64_t kPreviewMaxSeconds = 7 * 24 * 3600;

// Signs and checks preview values "<expiry unix seconds>.<hex HMAC-SHA256 of
// 'preview\n<id>\n<port>\n<expiry>' under the gateway's secret>".
class PreviewSigner {
 public:
  explicit PreviewSigner(std::string secret) : secret_(std::move(secret)) {}
  std::string sign(std::string_view sandbox_id, uint16_t port, int64_t expires_unix) const;
  // True when `value` was made by sign() for this sandbox and port and
  // `now_unix` is before its expiry. Constant time in the signature.
  bool verify(std::string_view sandbox_id, uint16_t port, std::string_view value, int64_t now_unix) const;

 private:
  std::string mac(std::string_view sandbox_id, uint16_t port, int64_t expires_unix) const;
  std::string secret_;
};

// The gateway's preview secret in `path`: read when there (it must be 32+
// bytes, mode 0600), else made (32 random bytes, 0600, written atomically).
Result<std::string> load_or_make_secret(const std::string& path);

}  // namespace coppice::proxy
