// Template builds without root (README, "Rootless builds").
//
// A user who is not root builds a template from an image or a Dockerfile in
// a user namespace of its own: id 0 inside is the user's own uid (and
// primary gid), ids 1..N inside are the user's subordinate range from
// /etc/subuid and /etc/subgid, mapped by newuidmap and newgidmap (Debian's
// uidmap). In there the build is root with every capability over its own
// namespaces and nothing on the host: umoci unpacks with the image's owners,
// tree edits chown to `user` (1000), RUN steps run in mount, pid, uts, ipc
// and network namespaces owned by it. Files land on disk owned by host ids
// of the user and its range. Nothing runs as host root.
//
// The tree lands in a templates root the user can write (by default
// $XDG_DATA_HOME/coppice/templates). The gateway (root) cannot serve it as
// it is: its idmapped template mounts expect a template's real owners (0,
// 1000, the image's accounts). `coppice template install` (root) copies it
// into the gateway's templates root with owners shifted back
// (rootless_install.h).
//
// Without a subordinate range only one id could be mapped, and every
// template has files of at least two owners (root and user): such a build is
// refused, saying so.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::builder {

struct SubIdRange {
  uint32_t start = 0;
  uint32_t count = 0;
};

// The first range for the user in /etc/subuid- or /etc/subgid-style `text`
// (lines "name:start:count" or "uid:start:count"; comments and malformed
// lines skipped); nullopt when the user has none.
std::optional<SubIdRange> find_subid_range(std::string_view text, const std::string& name, uint32_t id);

// Who a rootless build maps: inside 0 is `uid`/`gid`, inside 1..count is
// subuid.start.. / subgid.start.. (count is the smaller of the two ranges,
// at most 65536: enough for every id an image uses, nobody's 65534
// included).
struct RootlessIds {
  uid_t uid = 0;
  gid_t gid = 0;          // the user's primary group
  std::string user;       // its name
  SubIdRange subuid, subgid;
  uint32_t count = 0;     // ids 1..count inside are mapped
};

inline constexpr uint32_t kMaxRootlessIds = 65536;

// The user's ids for a rootless build, from the passwd database, /etc/subuid
// and /etc/subgid. kFailedPrecondition explaining what is missing (no such
// account, no range, a range too small for `user`'s uid 1000) and how to add
// it.
Result<RootlessIds> rootless_ids_for(uid_t uid);

// The host id of an id inside the build's namespace, and back; nullopt when
// unmapped.
std::optional<uint32_t> host_id(uint32_t inside, uint32_t self, SubIdRange range, uint32_t count);
std::optional<uint32_t> inside_id(uint32_t host, uint32_t self, SubIdRange range, uint32_t count);

// Moves the calling process, which must be single-threaded, into a new user
// namespace mapped as RootlessIds says (newuidmap and newgidmap, run by a
// forked helper that stays in the caller's namespace). Afterwards the
// process is uid 0 and gid 0 with every capability in that namespace, and
// none on the host; _CONTAINERS_ROOTLESS_UID/GID and
// _CONTAINERS_USERNS_CONFIGURED are set so that skopeo, seeing euid 0, still
// uses the user's configuration, not host root's. Fails with the reason: the kernel refuses unprivileged
// user namespaces, newuidmap is missing or refused the mapping.
Status enter_build_userns(const RootlessIds& ids);

// A rootless build's templates root when none is given:
// $XDG_DATA_HOME/coppice/templates, else ~/.local/share/coppice/templates
// (~ is $HOME where the user owns it, else the account's home directory).
std::string rootless_templates_root();

// Whether the calling process's user namespace is not the initial one.
bool in_child_user_namespace();

}  // namespace coppice::builder
