#include "envd/files.h"

#include <gtest/gtest.h>

namespace coppice::envd {
namespace {

// Reference values from the E2B SDK's algorithm (src/sandbox/signature.ts):
// "v1_" + base64(sha256(raw)) without '=' padding, computed in node with
//   crypto.createHash('sha256').update(raw).digest('base64').replace(/=+$/, '')
TEST(FileSignature, MatchesTheSdk) {
  EXPECT_EQ(file_signature("/home/user/a.txt", "read", "", "secret-token", std::nullopt),
            "v1_oG8MeWunkA0k+JA9ryHxVcTNtkXm7z9NuWgYBImd3sA");
  EXPECT_EQ(file_signature("dir/ü b.txt", "write", "user", "secret-token", 1700000000),
            "v1_pxZHkDP+/PHZVzFKAO3qPyvUH3nQSNw7SWMhG9zPTDA");
  // uploadUrl() without a path signs the empty path.
  EXPECT_EQ(file_signature("", "write", "", "t", std::nullopt), "v1_dfahhNbqCfcJiBAATIEu+2A9yQ4Xid1Wb6lu0GVgCos");
}

TEST(FileSignature, EveryInputMatters) {
  std::string base = file_signature("p", "read", "u", "t", 5);
  EXPECT_NE(base, file_signature("p", "write", "u", "t", 5));
  EXPECT_NE(base, file_signature("q", "read", "u", "t", 5));
  EXPECT_NE(base, file_signature("p", "read", "", "t", 5));
  EXPECT_NE(base, file_signature("p", "read", "u", "T", 5));
  EXPECT_NE(base, file_signature("p", "read", "u", "t", 6));
  EXPECT_NE(base, file_signature("p", "read", "u", "t", std::nullopt));
  EXPECT_EQ(base.find('='), std::string::npos);
}

}  // namespace
}  // namespace coppice::envd
