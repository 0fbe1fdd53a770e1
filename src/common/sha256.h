// SHA-256 (FIPS 180-4), one-shot and incremental.
//
// Used for API key hashes in the store, template build ids and envd's URL
// signatures. Written here rather than linked from libcrypto so that the
// static envd binary and the gateway share one dependency-free copy.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace coppice {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental hasher: update() any number of times, then final() once.
// final() returns the digest and resets the object, so it can be reused.
class Sha256 {
 public:
  Sha256() { reset(); }

  void update(const void* data, size_t len);
  void update(std::string_view s) { update(s.data(), s.size()); }
  Sha256Digest final();
  void reset();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_;
  size_t buf_len_ = 0;
  uint64_t total_len_ = 0;  // bytes hashed so far
};

Sha256Digest sha256(std::string_view data);

// HMAC-SHA256 (RFC 2104) of `message` under `key`.
Sha256Digest hmac_sha256(std::string_view key, std::string_view message);

// Lowercase hex of any byte string (64 characters for a digest).
std::string to_hex(const uint8_t* data, size_t len);
inline std::string to_hex(const Sha256Digest& d) { return to_hex(d.data(), d.size()); }

// Lowercase hex SHA-256 of `data`.
inline std::string sha256_hex(std::string_view data) { return to_hex(sha256(data)); }

}  // namespace coppice
