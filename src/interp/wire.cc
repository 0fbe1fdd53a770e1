#include "interp/wire.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <chrono>
#include <cstdio>
#include <ctime>

#include "common/sha256.h"
#include "common/strings.h"

namespace coppice::interp {

namespace {
std::string str_field(const json& obj, const char* key) {
  if (!obj.is_object()) return {};
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

// JSON as the kernel's own session would pack it; invalid UTF-8 in a string
// is replaced rather than thrown on.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
}  // namespace

std::string Message::msg_type() const { return str_field(header, "msg_type"); }
std::string Message::msg_id() const { return str_field(header, "msg_id"); }
std::string Message::parent_id() const { return str_field(parent_header, "msg_id"); }

std::string hmac_sha256_hex(std::string_view key, const std::vector<std::string_view>& parts) {
  std::string data;
  size_t total = 0;
  for (auto p : parts) total += p.size();
  data.reserve(total);
  for (auto p : parts) data.append(p);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  // An empty key is valid for HMAC, but OpenSSL wants a non-null pointer.
  static const char kNoKey = 0;
  HMAC(EVP_sha256(), key.empty() ? &kNoKey : key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return to_hex(out, len);
}

std::string uuid4() {
  uint8_t b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = ::getrandom(b + got, sizeof b - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);
  std::string h = to_hex(b, sizeof b);
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" + h.substr(20);
}

std::string iso_now() {
  auto now = std::chrono::system_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(us / 1000000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long>(us % 1000000));
  return buf;
}

Message make_message(std::string_view msg_type, std::string_view session, json content) {
  Message m;
  m.header = json{{"msg_id", uuid4()},       {"session", session},          {"username", "coppice"},
                  {"date", iso_now()},       {"msg_type", msg_type},        {"version", kProtocolVersion}};
  m.content = std::move(content);
  return m;
}

std::vector<std::string> serialize(const Message& msg, std::string_view key) {
  std::vector<std::string> f;
  f.reserve(6);
  f.emplace_back(kDelimiter);
  f.emplace_back();
  f.push_back(dump(msg.header));
  f.push_back(dump(msg.parent_header));
  f.push_back(dump(msg.metadata));
  f.push_back(dump(msg.content));
  if (!key.empty()) f[1] = hmac_sha256_hex(key, {f[2], f[3], f[4], f[5]});
  return f;
}

Result<Message> parse(const std::vector<std::string>& frames, std::string_view key) {
  size_t d = 0;
  while (d < frames.size() && frames[d] != kDelimiter) ++d;
  if (d == frames.size()) return make_error(ErrorCode::kInvalidArgument, "no <IDS|MSG> delimiter in message");
  if (frames.size() - d < 6) return make_error(ErrorCode::kInvalidArgument, "message has fewer than 5 parts after the delimiter");
  const std::string& sig = frames[d + 1];
  if (!key.empty()) {
    std::string want = hmac_sha256_hex(key, {frames[d + 2], frames[d + 3], frames[d + 4], frames[d + 5]});
    if (!constant_time_equal(sig, want)) return make_error(ErrorCode::kPermissionDenied, "message signature does not match");
  }
  Message m;
  json* parts[4] = {&m.header, &m.parent_header, &m.metadata, &m.content};
  static const char* names[4] = {"header", "parent_header", "metadata", "content"};
  for (int i = 0; i < 4; ++i) {
    *parts[i] = json::parse(frames[d + 2 + i], nullptr, false);
    if (parts[i]->is_discarded() || !parts[i]->is_object()) {
      return make_error(ErrorCode::kInvalidArgument, std::string("message ") + names[i] + " is not a JSON object");
    }
  }
  return m;
}

}  // namespace coppice::interp
