// The Jupyter messaging wire protocol (version 5.3) as coppice-interp speaks
// it to one kernel over ZeroMQ: messages are multipart
//   [routing ids...] "<IDS|MSG>" signature header parent_header metadata content [buffers...]
// where the signature is the lowercase hex HMAC-SHA256, keyed with the
// connection file's key, of the four JSON parts in that order.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coppice::interp {

using json = nlohmann::json;

inline constexpr std::string_view kDelimiter = "<IDS|MSG>";
inline constexpr std::string_view kProtocolVersion = "5.3";

struct Message {
  json header = json::object();
  json parent_header = json::object();
  json metadata = json::object();
  json content = json::object();

  std::string msg_type() const;
  std::string msg_id() const;
  // The msg_id this message answers, or "" when it answers none.
  std::string parent_id() const;
};

// Lowercase hex HMAC-SHA256 of the concatenated parts under `key`.
std::string hmac_sha256_hex(std::string_view key, const std::vector<std::string_view>& parts);

// A random version-4 UUID in its canonical text form.
std::string uuid4();

// The current UTC time in ISO 8601 with microseconds ("2026-01-02T03:04:05.123456Z").
std::string iso_now();

// A new message of `msg_type` in `session` with a fresh msg_id and date.
Message make_message(std::string_view msg_type, std::string_view session, json content);

// The frames to send for `msg` (no routing ids), signed with `key`; an
// empty key leaves the signature empty, as the protocol allows.
std::vector<std::string> serialize(const Message& msg, std::string_view key);

// Parses received frames: everything before the delimiter is routing, the
// signature is checked (in constant time) when `key` is non-empty, and the
// four JSON parts must be objects. Buffers are ignored.
Result<Message> parse(const std::vector<std::string>& frames, std::string_view key);

}  // namespace coppice::interp
