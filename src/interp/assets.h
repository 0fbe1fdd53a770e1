// The files coppice-interp's kernels run (src/interp/kernels), built into
// the binary so that the one bind-mounted file is all a template needs of
// ours: the Python start-up with E2B's rich results, the wrapper kernel for
// bash/javascript/typescript/java, and its node and Java drivers.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include "common/result.h"

namespace coppice::interp {

struct Asset {
  std::string_view name;  // a plain file name
  std::string_view text;
};

// Every asset (generated from src/interp/kernels at configure time).
const std::vector<Asset>& kernel_assets();

// Writes every asset into `dir` (which must exist), mode 0644, owned by
// uid/gid when given. Replaces files of the same names. Fails on the first
// file that cannot be written.
Status write_kernel_assets(const std::string& dir, std::optional<uid_t> uid, std::optional<gid_t> gid);

}  // namespace coppice::interp
