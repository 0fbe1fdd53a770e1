// Random identifiers from the kernel's CSPRNG (getrandom(2)).
#pragma once

#include <string>

namespace coppice::core {

// A sandbox id as E2B makes them: 20 characters of [a-z0-9].
std::string new_sandbox_id();
// A secret token: `bytes` random bytes as lowercase hex.
std::string new_token(size_t bytes = 24);
// True for a well-formed sandbox id ([a-z0-9]{1,64}).
bool valid_sandbox_id(std::string_view id);

}  // namespace coppice::core
