// API keys: generation and the hash the store keeps instead of the key.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::store {

// Bytes from the kernel's CSPRNG (getrandom(2), blocking until the pool is
// initialised, which only matters very early in boot).
Result<std::string> random_bytes(size_t n);

// A new API key: "e2b_" followed by 40 lowercase hex digits (160 random bits).
// The prefix is what the E2B SDKs and CLI expect a key to look like.
Result<std::string> generate_api_key();

// True for strings shaped like generate_api_key()'s output.
bool looks_like_api_key(std::string_view key);

// Lowercase hex SHA-256 of `s`; the store keeps this, never the key itself.
std::string sha256_hex(std::string_view s);

}  // namespace coppice::store
