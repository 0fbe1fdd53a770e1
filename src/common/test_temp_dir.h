// For tests: a fresh directory under the system temp dir, removed with
// everything in it when the owner goes out of scope.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace coppice::test_util {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "coppice-test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace coppice::test_util
