// The default seccomp policy of ns sandboxes, as data (seccomp_policy.cc).
#pragma once

#include <span>

#include "sys/seccomp.h"

namespace coppice::sandbox::ns {

// Deny list applied to every sandbox process; everything else is allowed.
std::span<const sys::seccomp::Rule> default_seccomp_policy();

// Compiles default_seccomp_policy() (once per backend).
Result<sys::seccomp::Program> compile_default_seccomp_policy();

}  // namespace coppice::sandbox::ns
