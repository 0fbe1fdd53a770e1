#include "proxy/inbound.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/sha256.h"
#include "common/strings.h"
#include "sys/fsutil.h"

namespace coppice::proxy {

namespace {
constexpr std::string_view kPortToken = "${PORT}";

std::string replace_port(std::string_view mask, std::string_view port) {
  std::string out;
  size_t i = 0;
  for (;;) {
    size_t at = mask.find(kPortToken, i);
    out.append(mask.substr(i, at == std::string_view::npos ? std::string_view::npos : at - i));
    if (at == std::string_view::npos) return out;
    out.append(port);
    i = at + kPortToken.size();
  }
}
}  // namespace

Status validate_mask_host(std::string_view mask) {
  auto bad = [](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, "network.maskRequestHost " + why);
  };
  if (mask.empty()) return bad("is empty");
  if (mask.size() > kMaxMaskHostLength) return bad("is longer than " + std::to_string(kMaxMaskHostLength) + " characters");
  // The widest port stands in for ${PORT}.
  const std::string h = replace_port(mask, "65535");
  size_t colon = h.find(':');
  std::string_view host = std::string_view(h).substr(0, colon);
  if (host.empty() || host.size() > 253) return bad("must be host[:port] with a host of 1 to 253 characters");
  for (char c : host) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
          c == '_'))
      return bad("may hold only letters, digits, '.', '-', '_', one ':port' and ${PORT}");
  }
  if (colon != std::string::npos) {
    std::string_view port = std::string_view(h).substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos)
      return bad("has a port that is not a number from 1 to 65535");
    if (unsigned v = static_cast<unsigned>(std::stoul(std::string(port))); v == 0 || v > 65535)
      return bad("has a port that is not a number from 1 to 65535");
  }
  return ok();
}

std::string masked_host(std::string_view mask, uint16_t port) { return replace_port(mask, std::to_string(port)); }

std::string PreviewSigner::mac(std::string_view sandbox_id, uint16_t port, int64_t expires_unix) const {
  std::string msg = "preview\n";
  msg.append(sandbox_id);
  msg += "\n" + std::to_string(port) + "\n" + std::to_string(expires_unix);
  return to_hex(hmac_sha256(secret_, msg));
}

std::string PreviewSigner::sign(std::string_view sandbox_id, uint16_t port, int64_t expires_unix) const {
  return std::to_string(expires_unix) + "." + mac(sandbox_id, port, expires_unix);
}

bool PreviewSigner::verify(std::string_view sandbox_id, uint16_t port, std::string_view value, int64_t now_unix) const {
  size_t dot = value.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot > 18) return false;  // fits an int64_t
  std::string_view exp = value.substr(0, dot);
  if (exp.find_first_not_of("0123456789") != std::string_view::npos) return false;
  int64_t expires = std::stoll(std::string(exp));
  const bool sig_ok = constant_time_equal(mac(sandbox_id, port, expires), value.substr(dot + 1));
  return sig_ok && now_unix < expires;
}

Result<std::string> load_or_make_secret(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if ((st.st_mode & 077) != 0)
      return make_error(ErrorCode::kFailedPrecondition, "preview secret " + path + " is readable by others (want mode 0600)");
    auto s = sys::read_file(path);
    if (!s) return std::unexpected(std::move(s.error()).context("preview secret"));
    if (s->size() < 32) return make_error(ErrorCode::kFailedPrecondition, "preview secret " + path + " is shorter than 32 bytes");
    return *s;
  }
  if (errno != ENOENT) return make_error(ErrorCode::kInternal, "stat " + path + ": " + std::strerror(errno), errno);
  std::string secret(32, '\0');
  if (::getrandom(secret.data(), secret.size(), 0) != static_cast<ssize_t>(secret.size()))
    return make_error(ErrorCode::kInternal, std::string("getrandom: ") + std::strerror(errno), errno);
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return make_error(ErrorCode::kInternal, "create " + tmp + ": " + std::strerror(errno), errno);
  bool ok_write = ::write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok_write || ::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return make_error(ErrorCode::kInternal, "write " + path + ": " + std::strerror(e), e);
  }
  return secret;
}

}  // namespace coppice::proxy
