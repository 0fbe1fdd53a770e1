#include "envd/fs_errors.h"

#include <gtest/gtest.h>

namespace coppice::envd {
namespace {

TEST(FsErrors, OutOfSpaceIsInsufficientStorageNotRateLimit) {
  for (int err : {ENOSPC, EDQUOT}) {
    Error e = Error::from_errno(err, "write /tmp/x");
    EXPECT_TRUE(is_out_of_space(e));
    EXPECT_EQ(files_http_status(e), 507u) << errno_name(err);
    // resource_exhausted would be the SDK's RateLimitError.
    EXPECT_EQ(fs_rpc_code(e), connect::Code::internal) << errno_name(err);
  }
  EXPECT_EQ(fs_error_message(Error::from_errno(ENOSPC, "write /tmp/x")),
            "not enough disk space: write /tmp/x: ENOSPC (No space left on device)");
  EXPECT_EQ(fs_error_message(Error::from_errno(EDQUOT, "write /tmp/x")),
            "disk quota exceeded: write /tmp/x: EDQUOT (Disk quota exceeded)");
}

TEST(FsErrors, ReadOnlyFileSystemIsNotOutOfSpace) {
  Error e = Error::from_errno(EROFS, "create temp file in /usr");
  EXPECT_FALSE(is_out_of_space(e));
  EXPECT_EQ(files_http_status(e), 403u);
  EXPECT_EQ(fs_rpc_code(e), connect::Code::permission_denied);
  EXPECT_EQ(fs_error_message(e), "create temp file in /usr: EROFS (Read-only file system)");
}

TEST(FsErrors, OtherErrnos) {
  EXPECT_EQ(files_http_status(Error::from_errno(EACCES, "open")), 403u);
  EXPECT_EQ(fs_rpc_code(Error::from_errno(EACCES, "open")), connect::Code::permission_denied);
  EXPECT_EQ(files_http_status(Error::from_errno(EPERM, "open")), 403u);
  EXPECT_EQ(files_http_status(Error::from_errno(ENOENT, "open")), 404u);
  EXPECT_EQ(fs_rpc_code(Error::from_errno(ENOENT, "open")), connect::Code::not_found);
  EXPECT_EQ(files_http_status(Error::from_errno(EISDIR, "open")), 400u);
  // Running out of descriptors or memory is envd's trouble, not storage.
  EXPECT_EQ(files_http_status(Error::from_errno(EMFILE, "open")), 500u);
  EXPECT_EQ(fs_rpc_code(Error::from_errno(EMFILE, "open")), connect::Code::resource_exhausted);
  // An error without errno goes by its kind.
  EXPECT_EQ(files_http_status(Error(ErrorCode::kResourceExhausted, "too many")), 500u);
  EXPECT_EQ(files_http_status(Error(ErrorCode::kTooLarge, "big")), 413u);
}

}  // namespace
}  // namespace coppice::envd
