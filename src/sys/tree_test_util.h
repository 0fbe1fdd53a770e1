// For tests: temp dirs that may hold trees too deep for
// std::filesystem::remove_all (which keeps one fd per level), and quick ways
// to build such trees.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "sys/fsutil.h"

namespace coppice::test_util {

// A fresh dir under the system temp dir, removed with sys::remove_tree.
class Scratch {
 public:
  explicit Scratch(std::string_view prefix = "coppice-tree") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    path_ = std::filesystem::canonical(tmpl).string();
  }
  ~Scratch() {
    if (auto s = sys::remove_tree(path_); !s) ADD_FAILURE() << "cleanup: " << s.error().to_string();
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(std::string_view rel) const { return path_ + "/" + std::string(rel); }

 private:
  std::string path_;
};

// Makes a chain of `depth` directories named "d" below the existing `root`
// with mkdirat/openat, one fd at a time; with `files`, each level also holds
// an empty file "f".
inline void make_chain(const std::string& root, int depth, bool files = false) {
  int cur = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(cur, 0) << root << ": " << std::strerror(errno);
  for (int i = 0; i < depth; ++i) {
    ASSERT_EQ(::mkdirat(cur, "d", 0755), 0) << "level " << i << ": " << std::strerror(errno);
    if (files) {
      int f = ::openat(cur, "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      ASSERT_GE(f, 0);
      ::close(f);
    }
    int next = ::openat(cur, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(next, 0);
    ::close(cur);
    cur = next;
  }
  ::close(cur);
}

// Makes `n` empty files file-0 ... file-<n-1> in the existing `dir`.
inline void make_files(const std::string& dir, int n) {
  int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(d, 0) << dir << ": " << std::strerror(errno);
  for (int i = 0; i < n; ++i) {
    int f = ::openat(d, ("file-" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(f, 0) << std::strerror(errno);
    ::close(f);
  }
  ::close(d);
}

}  // namespace coppice::test_util
