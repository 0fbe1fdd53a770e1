// Users and groups of the sandbox, read straight from /etc/passwd and
// /etc/group: envd is a static binary and must not go through glibc's NSS.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "sys/run_as.h"

namespace coppice::envd {

struct User {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::string shell;
  std::vector<gid_t> groups;  // supplementary groups, primary included

  // The ids file operations for this user run with (sys/run_as.h).
  sys::Credentials credentials() const { return {uid, gid, groups}; }
};

class UserDb {
 public:
  // `etc_dir` holds passwd and group ("/etc" in a sandbox; a temp dir in tests).
  explicit UserDb(std::string etc_dir = "/etc") : etc_(std::move(etc_dir)) {}

  // The user called `name`, or one given as a numeric uid. kNotFound if unknown.
  Result<User> lookup(std::string_view name) const;
  // Names for EntryInfo.owner/group; the number as text when unknown.
  std::string user_name(uid_t uid) const;
  std::string group_name(gid_t gid) const;

 private:
  std::string etc_;
};

}  // namespace coppice::envd
