#include "sys/tree_walk.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <deque>
#include <functional>
#include <unordered_set>
#include <utility>
#include <vector>

namespace coppice::sys {

namespace {

// How a walk opens a directory: never through a symlink, never anything else.
constexpr int kDirOpen = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
// Times a removal starts again from its root after the directory it was in
// was removed by someone else.
constexpr int kMaxRestarts = 16;
// Files with several links remembered by disk_usage_below (16 bytes each).
constexpr size_t kMaxLinkedFiles = 1 << 16;
// Entries between two looks at the clock in disk_usage_below.
constexpr uint64_t kClockEvery = 256;

// What identifies a directory for the walk: its file system, inode and mount.
struct DirId {
  dev_t dev = 0;
  ino_t ino = 0;
  uint64_t mnt = 0;        // mount id; 0 when the kernel does not say
  bool mount_root = false;  // the root of a mount (when the kernel says)
};

Result<DirId> id_of(int fd) {
  struct statx stx;
  if (::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_MNT_ID, &stx) != 0) {
    return errno_error("statx");
  }
  DirId id;
  id.dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
  id.ino = stx.stx_ino;
  if (stx.stx_mask & STATX_MNT_ID) id.mnt = stx.stx_mnt_id;
  id.mount_root = (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
  return id;
}

// Whether a directory opened below the root is on the root's mount.
bool same_mount(const DirId& root, const DirId& d) {
  return d.dev == root.dev && (root.mnt == 0 || d.mnt == root.mnt) && !d.mount_root;
}

// Gives the caller rwx on the directory `name` in `parent` without following
// a symlink: chmod through the /proc/self/fd link of an O_PATH descriptor
// (fchmod refuses O_PATH descriptors, and fchmodat would follow a link
// swapped in after a check).
Status make_accessible(int parent, const char* name) {
  UniqueFd p(::openat(parent, name, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC));
  if (!p) return errno_error(std::string("open ") + name);
  const std::string link = "/proc/self/fd/" + std::to_string(p.get());
  if (::chmod(link.c_str(), 0700) != 0) return errno_error(std::string("chmod ") + name);
  return ok();
}

bool permission_error(int err) { return err == EACCES || err == EPERM; }

// The directories from the root down to the current one: an id and the
// place of its entry in its parent for every level, an fd (and the entry's
// name) for the deepest kMaxOpenDirs levels only.
class DirChain {
 public:
  struct Level {
    dev_t dev;
    ino_t ino;
    off_t pos;   // of this directory's entry in its parent
    off_t next;  // of the entry after it
  };
  struct Left {
    Level level;
    UniqueFd fd;
    std::string name;  // empty when the directory was re-opened through ".."
  };

  void start(UniqueFd root, const DirId& id) {
    levels_.push_back(Level{id.dev, id.ino, 0, 0});
    open_.push_back(Held{std::move(root), {}});
  }
  size_t depth() const { return levels_.size(); }
  int fd() const { return open_.back().fd.get(); }

  void push(UniqueFd fd, const DirId& id, std::string name, off_t pos, off_t next) {
    levels_.push_back(Level{id.dev, id.ino, pos, next});
    open_.push_back(Held{std::move(fd), std::move(name)});
    if (open_.size() > kMaxOpenDirs) open_.pop_front();
  }

  // Leaves the current directory (never the root) and makes its parent the
  // current one, re-opened through ".." when it was closed; fails when that
  // is not the directory recorded on the way down.
  Result<Left> pop() {
    Left out{levels_.back(), std::move(open_.back().fd), std::move(open_.back().name)};
    open_.pop_back();
    levels_.pop_back();
    if (open_.empty()) {
      UniqueFd up(::openat(out.fd.get(), "..", kDirOpen));
      if (!up) return errno_error("open ..");
      auto id = id_of(up.get());
      if (!id) return std::unexpected(std::move(id.error()));
      const Level& want = levels_.back();
      if (id->dev != want.dev || id->ino != want.ino) {
        return make_error(ErrorCode::kFailedPrecondition, "a directory was moved out of the tree during the walk");
      }
      open_.push_back(Held{std::move(up), {}});
    }
    return out;
  }

 private:
  struct Held {
    UniqueFd fd;
    std::string name;
  };
  std::vector<Level> levels_;
  std::deque<Held> open_;  // levels_[depth - open_.size()] .. levels_[depth - 1]
};

// The name under which `child` sits in the directory `parent`: first where
// it was read, else by a scan of `parent` comparing st_dev/st_ino.
Result<std::string> name_in_parent(DirReader& r, int parent, const DirChain::Level& child) {
  auto is_child = [&](const char* name) {
    struct stat st;
    return ::fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == child.dev &&
           st.st_ino == child.ino;
  };
  COPPICE_TRY_CTX(r.reset(parent, child.pos), "find directory");
  auto e = r.next();
  if (e && *e && is_child((*e)->name.data())) return std::string((*e)->name);
  COPPICE_TRY_CTX(r.reset(parent, 0), "find directory");
  for (;;) {
    e = r.next();
    if (!e) return std::unexpected(std::move(e.error()).context("find directory"));
    if (!*e) break;
    const auto& ent = **e;
    if ((ent.type == DT_DIR || ent.type == DT_UNKNOWN) && is_child(ent.name.data())) return std::string(ent.name);
  }
  return make_error(ErrorCode::kFailedPrecondition, "a directory was moved out of the tree during the walk");
}

}  // namespace

// ---- DirReader ----

DirReader::DirReader() : buf_(new char[kBatchBytes]) {}

Status DirReader::reset(int fd, off_t pos) {
  fd_ = fd;
  len_ = at_ = 0;
  if (::lseek(fd, pos, SEEK_SET) < 0) return errno_error("seek directory");
  pos_ = pos;
  return ok();
}

Result<std::optional<DirReader::Entry>> DirReader::next() {
  constexpr size_t kNameAt = offsetof(struct dirent64, d_name);
  for (;;) {
    if (at_ >= len_) {
      ssize_t n = ::getdents64(fd_, buf_.get(), kBatchBytes);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_error("read directory");
      }
      if (n == 0) return std::nullopt;
      len_ = static_cast<size_t>(n);
      at_ = 0;
    }
    const char* rec = buf_.get() + at_;
    struct dirent64 hdr;
    std::memcpy(&hdr, rec, kNameAt);
    if (hdr.d_reclen < kNameAt || at_ + hdr.d_reclen > len_) {
      return make_error(ErrorCode::kInternal, "read directory: malformed getdents64 record");
    }
    at_ += hdr.d_reclen;
    const char* name = rec + kNameAt;
    Entry e{std::string_view(name, ::strnlen(name, hdr.d_reclen - kNameAt)), static_cast<ino_t>(hdr.d_ino),
            hdr.d_type, pos_, static_cast<off_t>(hdr.d_off)};
    pos_ = e.next;
    if (e.name == "." || e.name == "..") continue;
    return e;
  }
}

// ---- TreeRemover ----

struct TreeRemover::State {
  std::string path;
  enum class Phase { kStart, kWalk, kDone } phase = Phase::kStart;
  DirId root;
  DirChain chain;
  DirReader reader;
  // Entries removed since a directory was last read again from its start. A
  // directory still not empty once read to its end (entries created
  // meanwhile, or an overlayfs directory whose offsets shifted when it was
  // re-opened) is read again while the removal makes progress, and is an
  // error when it does not.
  uint64_t removed = 0;

  bool may_reread() { return std::exchange(removed, 0) > 0; }
  int restarts = 0;
  bool current_dir_removed() const {
    struct stat st;
    return ::fstat(chain.fd(), &st) == 0 && st.st_nlink == 0;
  }
  // The directory being emptied was removed by someone else: its parent
  // cannot be reached through "..", so start again from the root, whose path
  // the caller gave (and which may well be gone too).
  Status restart() {
    if (++restarts > kMaxRestarts) {
      return make_error(ErrorCode::kFailedPrecondition, "the tree keeps being removed under the walk");
    }
    chain = DirChain();
    phase = Phase::kStart;
    return ok();
  }

  Error fail(Error e) {
    phase = Phase::kDone;
    return std::move(e).context("remove " + path + " (at depth " + std::to_string(chain.depth()) + ")");
  }
  Status open_root();
  Status remove_entry(const DirReader::Entry& e);
  Status leave_dir();
};

Status TreeRemover::State::open_root() {
  UniqueFd fd(::open(path.c_str(), kDirOpen));
  if (!fd && errno == EACCES) {
    if (make_accessible(AT_FDCWD, path.c_str())) fd.reset(::open(path.c_str(), kDirOpen));
    else errno = EACCES;
  }
  if (!fd) {
    int err = errno;
    if (err == ENOENT) {
      phase = Phase::kDone;
      return ok();
    }
    if (err == ENOTDIR || err == ELOOP) {  // a file or a symlink: remove that
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error("unlink " + path);
      phase = Phase::kDone;
      return ok();
    }
    return errno_error("open " + path, err);
  }
  auto id = id_of(fd.get());
  if (!id) return std::unexpected(std::move(id.error()).context(path));
  if (id->mount_root) {
    return make_error(ErrorCode::kFailedPrecondition, path + " is a mount point; its contents are not removed", EBUSY);
  }
  root = *id;
  chain.start(std::move(fd), root);
  COPPICE_TRY_CTX(reader.reset(chain.fd(), 0), path);
  phase = Phase::kWalk;
  return ok();
}

// Removes one entry of the current directory, or descends into it when it is
// a directory with contents.
Status TreeRemover::State::remove_entry(const DirReader::Entry& e) {
  const int dir = chain.fd();
  const char* name = e.name.data();  // NUL-terminated in the reader's buffer
  bool made_writable = false;
  // The current directory is ours but not writable (mode 0500): fix once.
  auto retry_writable = [&](int err) {
    if (!permission_error(err) || made_writable) return false;
    made_writable = true;
    return ::fchmod(dir, 0700) == 0;
  };
  if (e.type != DT_DIR) {
    for (;;) {
      if (::unlinkat(dir, name, 0) == 0) {
        ++removed;
        return ok();
      }
      if (errno == ENOENT) return ok();
      int err = errno;
      if (err == EISDIR) break;  // d_type did not say, or it was replaced by a directory
      if (!retry_writable(err)) return errno_error(std::string("unlink ") + name, err);
    }
  }
  // A directory: an empty one goes without being opened.
  for (;;) {
    if (::unlinkat(dir, name, AT_REMOVEDIR) == 0) {
      ++removed;
      return ok();
    }
    if (errno == ENOENT) return ok();
    int err = errno;
    if (err == ENOTEMPTY || err == EEXIST) break;
    if (err == ENOTDIR) {  // replaced by a file since it was read
      if (::unlinkat(dir, name, 0) == 0 || errno == ENOENT) return ok();
      return errno_error(std::string("unlink ") + name);
    }
    if (err == EBUSY) {
      return make_error(ErrorCode::kFailedPrecondition, std::string(name) + " is a mount point; not removed", EBUSY);
    }
    if (!retry_writable(err)) return errno_error(std::string("rmdir ") + name, err);
  }
  UniqueFd sub(::openat(dir, name, kDirOpen));
  if (!sub && errno == EACCES && make_accessible(dir, name)) sub.reset(::openat(dir, name, kDirOpen));
  if (!sub) {
    int err = errno;
    if (err == ENOENT) return ok();
    if (err == ENOTDIR || err == ELOOP) {  // replaced by a file or a symlink
      if (::unlinkat(dir, name, 0) == 0 || errno == ENOENT) return ok();
      return errno_error(std::string("unlink ") + name);
    }
    return errno_error(std::string("open ") + name, err);
  }
  auto id = id_of(sub.get());
  if (!id) return std::unexpected(std::move(id.error()).context(name));
  if (!same_mount(root, *id)) {
    return make_error(ErrorCode::kFailedPrecondition,
                      std::string(name) + " is on another file system or mount; not removed", EXDEV);
  }
  chain.push(std::move(sub), *id, std::string(e.name), e.pos, e.next);
  return reader.reset(chain.fd(), 0);
}

// The current directory has been read to its end: remove it from its parent
// and go on in the parent after its entry.
Status TreeRemover::State::leave_dir() {
  auto left = chain.pop();
  if (!left) return std::unexpected(std::move(left.error()));
  const int parent = chain.fd();
  std::string name = std::move(left->name);
  if (name.empty()) {
    auto found = name_in_parent(reader, parent, left->level);
    if (!found) return std::unexpected(std::move(found.error()));
    name = std::move(*found);
  }
  left->fd.reset();
  bool made_writable = false;
  for (;;) {
    if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) == 0) {
      ++removed;
      break;
    }
    if (errno == ENOENT) break;
    int err = errno;
    if ((err == ENOTEMPTY || err == EEXIST) && may_reread()) {
      // Read its entry again, which descends into it once more.
      return reader.reset(parent, left->level.pos);
    }
    if (permission_error(err) && !made_writable) {
      made_writable = true;
      if (::fchmod(parent, 0700) == 0) continue;
    }
    return errno_error("rmdir " + name, err);
  }
  return reader.reset(parent, left->level.next);
}

TreeRemover::TreeRemover(std::string path) : s_(std::make_unique<State>()) { s_->path = std::move(path); }
TreeRemover::~TreeRemover() = default;
TreeRemover::TreeRemover(TreeRemover&&) noexcept = default;
TreeRemover& TreeRemover::operator=(TreeRemover&&) noexcept = default;

Result<bool> TreeRemover::step(size_t budget) {
  State& s = *s_;
  for (size_t done = 0;; ++done) {
    if (s.phase == State::Phase::kStart) {
      if (auto st = s.open_root(); !st) return std::unexpected(s.fail(std::move(st.error())));
    }
    if (s.phase == State::Phase::kDone) return false;
    if (done >= budget) return true;
    auto e = s.reader.next();
    // A directory removed by someone else (another removal of the same tree)
    // reads as ENOENT, or as empty with no links left.
    const bool gone = e ? !*e && s.current_dir_removed() : e.error().sys_errno() == ENOENT;
    Status st;
    if (gone) {
      st = s.restart();
    } else if (!e) {
      st = std::unexpected(std::move(e.error()));
    } else if (*e) {
      st = s.remove_entry(**e);
    } else if (s.chain.depth() > 1) {
      st = s.leave_dir();
    } else if (::rmdir(s.path.c_str()) == 0 || errno == ENOENT) {
      s.phase = State::Phase::kDone;
    } else if ((errno == ENOTEMPTY || errno == EEXIST) && s.may_reread()) {
      st = s.reader.reset(s.chain.fd(), 0);
    } else {
      st = errno_error("rmdir " + s.path);
    }
    if (!st) return std::unexpected(s.fail(std::move(st.error())));
  }
  return false;
}

// ---- disk_usage_below ----

namespace {
struct FileIdHash {
  size_t operator()(const std::pair<dev_t, ino_t>& k) const noexcept {
    return std::hash<uint64_t>()(static_cast<uint64_t>(k.second) * 0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(k.first));
  }
};
}  // namespace

Result<DiskUsage> disk_usage_below(int root_fd, const DiskUsageBudget& budget) {
  // A descriptor of its own: the walk moves its file offset.
  UniqueFd root(::openat(root_fd, ".", kDirOpen));
  if (!root) return errno_error("open directory");
  auto rid = id_of(root.get());
  if (!rid) return std::unexpected(std::move(rid.error()));
  DirChain chain;
  chain.start(std::move(root), *rid);
  DirReader reader;
  COPPICE_TRY_CTX(reader.reset(chain.fd(), 0), "disk usage");
  std::unordered_set<std::pair<dev_t, ino_t>, FileIdHash> linked;
  DiskUsage out;
  for (;;) {
    if (out.entries >= budget.max_entries ||
        (out.entries % kClockEvery == 0 && std::chrono::steady_clock::now() >= budget.deadline)) {
      out.complete = false;
      return out;
    }
    auto e = reader.next();
    if (!e && chain.depth() == 1) return std::unexpected(std::move(e.error()).context("disk usage"));
    if (!e || !*e) {  // the end of a directory (or one that cannot be read)
      if (chain.depth() == 1) return out;
      auto left = chain.pop();
      if (!left) {  // moved away during the walk: what was counted stands
        out.complete = false;
        return out;
      }
      if (!reader.reset(chain.fd(), left->level.next)) {
        out.complete = false;
        return out;
      }
      continue;
    }
    const auto& ent = **e;
    ++out.entries;
    const int dir = chain.fd();
    struct stat st;
    if (::fstatat(dir, ent.name.data(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (st.st_dev != rid->dev) continue;  // a mount of another file system
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && linked.size() < kMaxLinkedFiles &&
        !linked.emplace(st.st_dev, st.st_ino).second) {
      continue;  // counted at its first name
    }
    out.bytes += static_cast<uint64_t>(st.st_blocks) * 512;
    if (!S_ISDIR(st.st_mode)) continue;
    UniqueFd sub(::openat(dir, ent.name.data(), kDirOpen));
    if (!sub) continue;
    auto id = id_of(sub.get());
    if (!id || !same_mount(*rid, *id)) continue;
    const off_t pos = ent.pos, next = ent.next;
    chain.push(std::move(sub), *id, {}, pos, next);
    if (!reader.reset(chain.fd(), 0)) {
      // Unreadable: skip it as if it were empty.
      auto left = chain.pop();
      if (!left || !reader.reset(chain.fd(), next)) {
        out.complete = false;
        return out;
      }
    }
  }
}

}  // namespace coppice::sys
