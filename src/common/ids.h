// Identifiers: sandbox ids and secret tokens from the kernel's CSPRNG
// (getrandom(2)), and the one check of a sandbox id's shape that the API,
// the store and the backends share.
#pragma once

#include <string>
#include <string_view>

namespace coppice {

// Length of a sandbox id, as E2B makes them.
inline constexpr size_t kSandboxIdLength = 20;

// A fresh sandbox id: kSandboxIdLength characters of [a-z0-9].
std::string new_sandbox_id();
// A secret token: `bytes` random bytes as lowercase hex.
std::string new_token(size_t bytes = 24);
// True for a well-formed sandbox id: exactly kSandboxIdLength characters of
// [a-z0-9]. Ids become host names, cgroup and directory names, so nothing
// else is ever accepted.
bool valid_sandbox_id(std::string_view id);

}  // namespace coppice
