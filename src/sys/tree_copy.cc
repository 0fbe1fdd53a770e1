#include "sys/tree_copy.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "common/scope_exit.h"
#include "sys/fd.h"
#include "sys/fsutil.h"
#include "sys/tree_walk.h"

namespace coppice::sys {

namespace {

constexpr int kDirOpen = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

std::string join(const std::string& rel, std::string_view name) {
  return rel.empty() ? std::string(name) : rel + "/" + std::string(name);
}

// Where extended attributes are read or written: an fd, or (for an O_PATH
// fd of a device, FIFO or socket, which the f*xattr calls refuse) its
// /proc/self/fd link, which names the inode itself without opening it.
struct XattrEnd {
  int fd;
  bool by_path;
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd); }
  ssize_t list(char* buf, size_t n) const {
    return by_path ? ::listxattr(path().c_str(), buf, n) : ::flistxattr(fd, buf, n);
  }
  ssize_t get(const char* name, void* buf, size_t n) const {
    return by_path ? ::getxattr(path().c_str(), name, buf, n) : ::fgetxattr(fd, name, buf, n);
  }
  int set(const char* name, const void* v, size_t n) const {
    return by_path ? ::setxattr(path().c_str(), name, v, n, 0) : ::fsetxattr(fd, name, v, n, 0);
  }
};

// overlayfs's own marks (opaque, redirect, origin, ...): kept by a copy of
// a layer, never written through a mounted overlay (which refuses them).
bool overlay_mark(std::string_view name) { return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay."); }

Status copy_xattrs(const XattrEnd& from, const XattrEnd& to, const std::string& what, bool skip_overlay_marks) {
  ssize_t len = from.list(nullptr, 0);
  if (len < 0) {
    if (errno == ENOTSUP) return ok();  // the file system keeps none
    return errno_error("list xattrs of " + what);
  }
  if (len == 0) return ok();
  std::vector<char> names(static_cast<size_t>(len));
  len = from.list(names.data(), names.size());
  if (len < 0) return errno_error("list xattrs of " + what);
  std::vector<char> value;
  for (size_t at = 0; at < static_cast<size_t>(len);) {
    const char* name = names.data() + at;
    at += std::char_traits<char>::length(name) + 1;
    if (skip_overlay_marks && overlay_mark(name)) continue;
    ssize_t n = from.get(name, nullptr, 0);
    if (n < 0) {
      if (errno == ENODATA) continue;  // removed meanwhile
      return errno_error("read xattr " + std::string(name) + " of " + what);
    }
    value.resize(static_cast<size_t>(n));
    n = from.get(name, value.data(), value.size());
    if (n < 0) return errno_error("read xattr " + std::string(name) + " of " + what);
    if (to.set(name, value.data(), static_cast<size_t>(n)) != 0) {
      return errno_error("write xattr " + std::string(name) + " of " + what);
    }
  }
  return ok();
}

// Owner, mode (after the owner: chown clears set-id bits), xattrs (after
// the owner: chown clears file capabilities), times (last: the rest touch
// ctime only, but writes into a directory move its mtime).
Status copy_attrs(int src_fd, int dst_fd, bool by_path, const struct stat& st, const std::string& what,
                  bool skip_overlay_marks = false) {
  if (by_path) {
    const std::string p = "/proc/self/fd/" + std::to_string(dst_fd);
    if (::chown(p.c_str(), st.st_uid, st.st_gid) != 0) return errno_error("chown " + what);
    if (::chmod(p.c_str(), st.st_mode & 07777) != 0) return errno_error("chmod " + what);
  } else {
    if (::fchown(dst_fd, st.st_uid, st.st_gid) != 0) return errno_error("chown " + what);
    if (::fchmod(dst_fd, st.st_mode & 07777) != 0) return errno_error("chmod " + what);
  }
  COPPICE_TRY(copy_xattrs(XattrEnd{src_fd, by_path}, XattrEnd{dst_fd, by_path}, what, skip_overlay_marks));
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (by_path) {
    const std::string p = "/proc/self/fd/" + std::to_string(dst_fd);
    if (::utimensat(AT_FDCWD, p.c_str(), times, 0) != 0) return errno_error("set times of " + what);
  } else if (::futimens(dst_fd, times) != 0) {
    return errno_error("set times of " + what);
  }
  return ok();
}

// Copies [off, off + len) of `in` to the same place in `out`: in the kernel
// when it can, else through a buffer.
Status copy_range(int in, int out, off_t off, off_t len, const std::string& what) {
  bool kernel = true;
  std::unique_ptr<char[]> buf;
  while (len > 0) {
    if (kernel) {
      loff_t a = off, b = off;
      ssize_t n = ::copy_file_range(in, &a, out, &b, static_cast<size_t>(len), 0);
      if (n > 0) {
        off += n;
        len -= n;
        continue;
      }
      if (n == 0) break;  // the source shrank meanwhile
      if (errno == EINTR) continue;
      if (errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP && errno != ENOSYS) {
        return errno_error("copy " + what);
      }
      kernel = false;
      buf = std::make_unique<char[]>(1 << 20);
    }
    ssize_t n = ::pread(in, buf.get(), static_cast<size_t>(std::min<off_t>(len, 1 << 20)), off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("read " + what);
    if (n == 0) break;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::pwrite(out, buf.get() + done, static_cast<size_t>(n - done), off + done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return errno_error("write " + what);
      done += w;
    }
    off += n;
    len -= n;
  }
  return ok();
}

// The regular file `name` of `src_dir` as a new file in `dst_dir`.
Result<bool> copy_file(int src_dir, int dst_dir, const std::string& name, const struct stat& st,
                       const std::string& what, bool skip_overlay_marks) {
  UniqueFd in(::openat(src_dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!in) return errno_error("open " + what);
  struct stat now;
  if (::fstat(in.get(), &now) != 0) return errno_error("stat " + what);
  if (now.st_ino != st.st_ino || !S_ISREG(now.st_mode)) {
    return make_error(ErrorCode::kFailedPrecondition, what + " changed during the copy");
  }
  UniqueFd out(::openat(dst_dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) return errno_error("create " + what);
  bool reflinked = ::ioctl(out.get(), FICLONE, in.get()) == 0;
  if (!reflinked) {
    // Data segments only: holes stay holes.
    off_t off = 0;
    const off_t size = now.st_size;
    while (off < size) {
      off_t data = ::lseek(in.get(), off, SEEK_DATA);
      if (data < 0 && errno == ENXIO) break;  // only a hole is left
      off_t hole = data < 0 ? size : ::lseek(in.get(), data, SEEK_HOLE);
      if (data < 0) data = off;                 // no SEEK_DATA here: all of it
      if (hole < 0 || hole > size) hole = size;
      COPPICE_TRY(copy_range(in.get(), out.get(), data, hole - data, what));
      off = hole;
    }
    if (::ftruncate(out.get(), size) != 0) return errno_error("size " + what);
  }
  COPPICE_TRY(copy_attrs(in.get(), out.get(), false, now, what, skip_overlay_marks));
  return reflinked;
}

// Anything but a directory or a further hard link: a regular file, a
// symlink, a device, FIFO or socket, as a new entry `name` of `dst_dir`.
Status copy_leaf(int src_dir, int dst_dir, const std::string& name, const struct stat& st, const std::string& what,
                 bool skip_overlay_marks, TreeCopyStats& stats) {
  if (S_ISREG(st.st_mode)) {
    COPPICE_ASSIGN_OR_RETURN(bool reflinked, copy_file(src_dir, dst_dir, name, st, what, skip_overlay_marks));
    ++stats.files;
    stats.bytes += static_cast<uint64_t>(st.st_size);
    if (reflinked) ++stats.reflinked;
  } else if (S_ISLNK(st.st_mode)) {
    std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
    ssize_t n = ::readlinkat(src_dir, name.c_str(), target.data(), target.size());
    if (n < 0) return errno_error("readlink " + what);
    target.resize(static_cast<size_t>(n));
    if (::symlinkat(target.c_str(), dst_dir, name.c_str()) != 0) return errno_error("symlink copy of " + what);
    if (::fchownat(dst_dir, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno_error("chown copy of " + what);
    }
    const struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (::utimensat(dst_dir, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno_error("set times of the copy of " + what);
    }
    ++stats.others;
  } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
    if (::mknodat(dst_dir, name.c_str(), (st.st_mode & S_IFMT) | 0600, st.st_rdev) != 0) {
      return errno_error("mknod copy of " + what);
    }
    // Never opened for I/O: O_PATH, attributes through /proc/self/fd.
    UniqueFd s(::openat(src_dir, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    UniqueFd d(::openat(dst_dir, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!s || !d) return errno_error("open " + what);
    COPPICE_TRY(copy_attrs(s.get(), d.get(), true, st, what, skip_overlay_marks));
    ++stats.others;
  } else {
    return make_error(ErrorCode::kFailedPrecondition, what + " is of a kind that cannot be copied");
  }
  return ok();
}

struct Frame {
  UniqueFd src, dst;
  struct stat st;
  std::string rel;
  DirReader reader;
};

// The walks' own stack of open directories (no recursion on the C stack).
using FrameStack = std::vector<std::unique_ptr<Frame>>;
Status push_frame(FrameStack& stack, UniqueFd src, UniqueFd dst, const struct stat& st, std::string rel) {
  auto f = std::make_unique<Frame>();
  f->src = std::move(src);
  f->dst = std::move(dst);
  f->st = st;
  f->rel = std::move(rel);
  COPPICE_TRY(f->reader.reset(f->src.get()));
  stack.push_back(std::move(f));
  return ok();
}

}  // namespace

namespace {
Result<TreeCopyStats> copy_tree_from(UniqueFd root, int dst_parent, const std::string& dst_name, const std::string& src,
                                     const std::string& dst);
}  // namespace

Result<TreeCopyStats> copy_tree(const std::string& src, const std::string& dst) {
  UniqueFd root(::open(src.c_str(), kDirOpen));
  if (!root) return errno_error("open " + src);
  const auto slash = dst.find_last_of('/');
  const std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : dst.substr(0, slash);
  const std::string name = slash == std::string::npos ? dst : dst.substr(slash + 1);
  UniqueFd at(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!at) return errno_error("open " + parent);
  return copy_tree_from(std::move(root), at.get(), name, src, dst);
}

Result<TreeCopyStats> copy_tree_at(int src_dir, int dst_parent, const std::string& dst_name) {
  const std::string src = "/proc/self/fd/" + std::to_string(src_dir);
  UniqueFd root(::openat(src_dir, ".", kDirOpen));
  if (!root) return errno_error("open " + src);
  if (dst_name.empty() || dst_name == "." || dst_name == ".." || dst_name.find('/') != std::string::npos) {
    return make_error(ErrorCode::kInvalidArgument, "bad name for a copy: \"" + dst_name + "\"");
  }
  return copy_tree_from(std::move(root), dst_parent, dst_name, src,
                        "/proc/self/fd/" + std::to_string(dst_parent) + "/" + dst_name);
}

namespace {
Result<TreeCopyStats> copy_tree_from(UniqueFd root, int dst_parent, const std::string& dst_name, const std::string& src,
                                     const std::string& dst) {
  TreeCopyStats stats;
  struct stat root_st;
  if (::fstat(root.get(), &root_st) != 0) return errno_error("stat " + src);
  struct statx root_stx;
  if (::statx(root.get(), "", AT_EMPTY_PATH, STATX_MNT_ID, &root_stx) != 0) return errno_error("statx " + src);
  const bool have_mnt = root_stx.stx_mask & STATX_MNT_ID;
  if (::mkdirat(dst_parent, dst_name.c_str(), 0700) != 0) return errno_error("mkdir " + dst);
  ScopeExit undo([&] { (void)remove_tree(dst); });
  UniqueFd dst_root(::openat(dst_parent, dst_name.c_str(), kDirOpen));
  if (!dst_root) return errno_error("open " + dst);
  const int dst_root_fd = dst_root.get();

  // (dev, ino) of files with several links -> where their first copy is.
  std::map<std::pair<dev_t, ino_t>, std::string> linked;
  FrameStack stack;
  COPPICE_TRY(push_frame(stack, std::move(root), std::move(dst_root), root_st, ""));
  ++stats.dirs;
  while (!stack.empty()) {
    Frame& f = *stack.back();
    auto next = f.reader.next();
    if (!next) return std::unexpected(std::move(next.error()).context("read " + src + "/" + f.rel));
    if (!*next) {
      COPPICE_TRY(copy_attrs(f.src.get(), f.dst.get(), false, f.st, f.rel.empty() ? src : src + "/" + f.rel));
      stack.pop_back();
      continue;
    }
    const std::string name((*next)->name);
    const std::string rel = join(f.rel, name);
    const std::string what = src + "/" + rel;
    struct stat st;
    if (::fstatat(f.src.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed meanwhile
      return errno_error("stat " + what);
    }
    // overlayfs reports the st_dev of the layer a non-directory comes from:
    // the mount id decides there (a file bind-mounted in is another mount).
    struct statx entry_stx;
    const bool same_mount = have_mnt &&
                            ::statx(f.src.get(), name.c_str(), AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &entry_stx) == 0 &&
                            (entry_stx.stx_mask & STATX_MNT_ID) && entry_stx.stx_mnt_id == root_stx.stx_mnt_id;
    if (st.st_dev != root_st.st_dev && (S_ISDIR(st.st_mode) || !same_mount)) {
      return make_error(ErrorCode::kFailedPrecondition, what + " is on another file system: not copied");
    }
    if (S_ISDIR(st.st_mode)) {
      if (stack.size() >= kMaxCopyDepth) {
        return make_error(ErrorCode::kFailedPrecondition,
                          what + ": the tree is deeper than " + std::to_string(kMaxCopyDepth) + " directories");
      }
      UniqueFd s(::openat(f.src.get(), name.c_str(), kDirOpen));
      if (!s) return errno_error("open " + what);
      struct statx stx;
      if (::statx(s.get(), "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) != 0) return errno_error("statx " + what);
      const bool mount_root = (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
                              (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
      if (mount_root || (have_mnt && (stx.stx_mask & STATX_MNT_ID) && stx.stx_mnt_id != root_stx.stx_mnt_id)) {
        return make_error(ErrorCode::kFailedPrecondition, what + " is a mount point: not copied");
      }
      if (::mkdirat(f.dst.get(), name.c_str(), 0700) != 0) return errno_error("mkdir copy of " + what);
      UniqueFd d(::openat(f.dst.get(), name.c_str(), kDirOpen));
      if (!d) return errno_error("open copy of " + what);
      ++stats.dirs;
      COPPICE_TRY(push_frame(stack, std::move(s), std::move(d), st, rel));  // `f` is not used after this
      continue;
    }
    // A further link to a file copied already.
    const auto key = std::make_pair(st.st_dev, st.st_ino);
    if (st.st_nlink > 1 && !S_ISLNK(st.st_mode)) {
      if (auto it = linked.find(key); it != linked.end()) {
        if (::linkat(dst_root_fd, it->second.c_str(), f.dst.get(), name.c_str(), 0) == 0) {
          ++stats.hardlinks;
          continue;
        }
        if (errno != ENAMETOOLONG && errno != EMLINK) return errno_error("link copy of " + what);
      }
    }
    COPPICE_TRY(copy_leaf(f.src.get(), f.dst.get(), name, st, what, false, stats));
    if (st.st_nlink > 1 && !S_ISLNK(st.st_mode) && linked.size() < kMaxLinkedFiles) linked.emplace(key, rel);
  }
  undo.release();
  return stats;
}
}  // namespace

namespace {

bool is_whiteout(const struct stat& st) { return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0); }

// The value of the short xattr `name` (a mark) of `entry` of `dir` (no
// symlink followed): "" when it has none, "?" when it is longer than a mark.
std::string xattr_of(int dir, const std::string& entry, const char* name) {
  const std::string p = "/proc/self/fd/" + std::to_string(dir) + "/" + entry;
  char v[8];
  ssize_t n = ::lgetxattr(p.c_str(), name, v, sizeof v);
  if (n < 0) return errno == ERANGE ? "?" : "";
  return std::string(v, static_cast<size_t>(n));
}

// Removes entry `name` of `dir` whatever it is (a directory with all below
// it); gone already is fine.
Status remove_entry(int dir, const std::string& name, const std::string& what) {
  struct stat st;
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? ok() : errno_error("stat " + what);
  }
  if (S_ISDIR(st.st_mode)) return remove_tree("/proc/self/fd/" + std::to_string(dir) + "/" + name);
  if (::unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT) return errno_error("remove " + what);
  return ok();
}

// Removes everything in the directory `dir`.
Status clear_dir(int dir, const std::string& what) {
  DirReader reader;
  for (;;) {
    COPPICE_TRY(reader.reset(dir));  // from the start: removals move the offsets
    auto next = reader.next();
    if (!next) return std::unexpected(std::move(next.error()).context("read " + what));
    if (!*next) return ok();
    const std::string name((*next)->name);
    COPPICE_TRY(remove_entry(dir, name, what + "/" + name));
  }
}

}  // namespace

Result<LayerScan> scan_overlay_layer(int layer_dir, uint64_t max_entries) {
  LayerScan out;
  FrameStack stack;
  const struct stat none {};
  UniqueFd root(::openat(layer_dir, ".", kDirOpen));
  if (!root) return errno_error("open the layer");
  COPPICE_TRY(push_frame(stack, std::move(root), UniqueFd(), none, ""));
  while (!stack.empty()) {
    Frame& l = *stack.back();
    auto next = l.reader.next();
    if (!next) return std::unexpected(std::move(next.error()).context("read the layer's /" + l.rel));
    if (!*next) {
      stack.pop_back();
      continue;
    }
    const std::string name((*next)->name);
    const std::string rel = join(l.rel, name);
    if (++out.entries > max_entries) {
      out.refused = "more than " + std::to_string(max_entries) + " entries";
      return out;
    }
    struct stat st;
    if (::fstatat(l.src.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno_error("stat /" + rel);
    for (const char* mark : {"trusted.overlay.redirect", "trusted.overlay.metacopy", "trusted.overlay.whiteout"}) {
      if (!S_ISLNK(st.st_mode) && !is_whiteout(st) && !xattr_of(l.src.get(), name, mark).empty()) {
        out.refused = "/" + rel + " carries " + mark;
        return out;
      }
    }
    if (S_ISDIR(st.st_mode)) {
      if (std::string o = xattr_of(l.src.get(), name, "trusted.overlay.opaque"); !o.empty() && o != "y") {
        out.refused = "/" + rel + " is opaque only in part";
        return out;
      }
      if (stack.size() >= kMaxCopyDepth) {
        out.refused = "deeper than " + std::to_string(kMaxCopyDepth) + " directories";
        return out;
      }
      UniqueFd d(::openat(l.src.get(), name.c_str(), kDirOpen));
      if (!d) return errno_error("open /" + rel);
      COPPICE_TRY(push_frame(stack, std::move(d), UniqueFd(), none, rel));  // `l` is not used after this
      continue;
    }
    if ((S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) && !is_whiteout(st)) {
      out.refused = "/" + rel + " is a device node";
      return out;
    }
    // Whiteouts may all be links to one inode (overlayfs shares them).
    if (st.st_nlink > 1 && !is_whiteout(st)) {
      out.refused = "/" + rel + " has several hard links";
      return out;
    }
    if (S_ISREG(st.st_mode)) out.bytes += static_cast<uint64_t>(st.st_size);
  }
  return out;
}

Result<TreeCopyStats> merge_overlay_layer(int layer_dir, int dst_dir) {
  TreeCopyStats stats;
  const std::string src = "the layer";
  UniqueFd root(::openat(layer_dir, ".", kDirOpen));
  if (!root) return errno_error("open " + src);
  UniqueFd dst_root(::openat(dst_dir, ".", kDirOpen));
  if (!dst_root) return errno_error("open the merge's target");
  struct stat root_st;
  if (::fstat(root.get(), &root_st) != 0) return errno_error("stat " + src);
  FrameStack stack;
  COPPICE_TRY(push_frame(stack, std::move(root), std::move(dst_root), root_st, ""));
  ++stats.dirs;
  while (!stack.empty()) {
    Frame& f = *stack.back();
    auto next = f.reader.next();
    if (!next) return std::unexpected(std::move(next.error()).context("read /" + f.rel));
    if (!*next) {
      COPPICE_TRY(copy_attrs(f.src.get(), f.dst.get(), false, f.st, "/" + f.rel, /*skip_overlay_marks=*/true));
      stack.pop_back();
      continue;
    }
    const std::string name((*next)->name);
    const std::string rel = join(f.rel, name);
    const std::string what = "/" + rel;
    struct stat st;
    if (::fstatat(f.src.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno_error("stat " + what);
    if (is_whiteout(st)) {
      COPPICE_TRY(remove_entry(f.dst.get(), name, what));
      ++stats.others;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      COPPICE_TRY(remove_entry(f.dst.get(), name, what));
      COPPICE_TRY(copy_leaf(f.src.get(), f.dst.get(), name, st, what, /*skip_overlay_marks=*/true, stats));
      continue;
    }
    if (stack.size() >= kMaxCopyDepth) {
      return make_error(ErrorCode::kFailedPrecondition,
                        what + ": the layer is deeper than " + std::to_string(kMaxCopyDepth) + " directories");
    }
    UniqueFd s(::openat(f.src.get(), name.c_str(), kDirOpen));
    if (!s) return errno_error("open " + what);
    struct stat there;
    bool have = ::fstatat(f.dst.get(), name.c_str(), &there, AT_SYMLINK_NOFOLLOW) == 0;
    if (!have && errno != ENOENT) return errno_error("stat the target's " + what);
    if (have && !S_ISDIR(there.st_mode)) {
      COPPICE_TRY(remove_entry(f.dst.get(), name, what));
      have = false;
    }
    if (!have && ::mkdirat(f.dst.get(), name.c_str(), 0700) != 0) return errno_error("mkdir " + what);
    UniqueFd d(::openat(f.dst.get(), name.c_str(), kDirOpen));
    if (!d) return errno_error("open the target's " + what);
    if (have && xattr_of(f.src.get(), name, "trusted.overlay.opaque") == "y") COPPICE_TRY(clear_dir(d.get(), what));
    ++stats.dirs;
    COPPICE_TRY(push_frame(stack, std::move(s), std::move(d), st, rel));  // `f` is not used after this
  }
  return stats;
}

bool can_reflink(const std::string& dir) {
  UniqueFd a(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  UniqueFd b(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!a || !b) return false;
  char block[4096] = {1};
  if (::pwrite(a.get(), block, sizeof block, 0) != static_cast<ssize_t>(sizeof block)) return false;
  return ::ioctl(b.get(), FICLONE, a.get()) == 0;
}

}  // namespace coppice::sys
