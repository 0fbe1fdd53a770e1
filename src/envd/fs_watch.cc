#include "envd/fs_watch.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/log.h"
#include "envd/fs_entry.h"
#include "sys/fd.h"
#include "sys/run_as.h"
#include "sys/tree_walk.h"

namespace coppice::envd {

namespace {
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
// Directories scanned between two yields to the event loop while adding a tree.
constexpr int kDirsPerYield = 64;
constexpr size_t kReadBuffer = 64 * 1024;
// Directories one recursive watch follows at most, watched and waiting to be
// (each costs a path string here and an inotify watch in the kernel, which
// has its own per-user limit, fs.inotify.max_user_watches).
constexpr size_t kMaxWatches = 1 << 16;
}  // namespace

std::string_view event_type_name(EventType t) {
  switch (t) {
    case EventType::kCreate: return "EVENT_TYPE_CREATE";
    case EventType::kWrite: return "EVENT_TYPE_WRITE";
    case EventType::kRemove: return "EVENT_TYPE_REMOVE";
    case EventType::kRename: return "EVENT_TYPE_RENAME";
    case EventType::kChmod: return "EVENT_TYPE_CHMOD";
    case EventType::kUnspecified: break;
  }
  return "EVENT_TYPE_UNSPECIFIED";
}

std::vector<EventType> event_types(uint32_t mask) {
  std::vector<EventType> out;
  if (mask & (IN_CREATE | IN_MOVED_TO)) out.push_back(EventType::kCreate);
  if (mask & (IN_MOVED_FROM | IN_MOVE_SELF)) out.push_back(EventType::kRename);
  if (mask & IN_ATTRIB) out.push_back(EventType::kChmod);
  if (mask & IN_MODIFY) out.push_back(EventType::kWrite);
  if (mask & (IN_DELETE | IN_DELETE_SELF)) out.push_back(EventType::kRemove);
  return out;
}

std::vector<RawEvent> parse_events(const char* buf, size_t n) {
  std::vector<RawEvent> out;
  size_t off = 0;
  while (off + sizeof(struct inotify_event) <= n) {
    struct inotify_event hdr;
    std::memcpy(&hdr, buf + off, sizeof hdr);
    size_t total = sizeof hdr + hdr.len;
    if (off + total > n) break;
    RawEvent ev{hdr.wd, hdr.mask, {}};
    // The name is NUL-padded to an alignment boundary.
    if (hdr.len > 0) ev.name.assign(buf + off + sizeof hdr, strnlen(buf + off + sizeof hdr, hdr.len));
    out.push_back(std::move(ev));
    off += total;
  }
  return out;
}

bool event_carries_entry(EventType t) {
  return t == EventType::kCreate || t == EventType::kWrite || t == EventType::kChmod;
}

DirWatcher::DirWatcher(asio::any_io_executor ex, int fd, std::string root, bool recursive, sys::Credentials creds,
                       EntryFn entry_fn)
    : fd_(ex, fd),
      root_(std::move(root)),
      recursive_(recursive),
      creds_(std::move(creds)),
      entry_fn_(std::move(entry_fn)) {}

DirWatcher::~DirWatcher() {
  boost::system::error_code ignore;
  fd_.close(ignore);
}

asio::awaitable<Result<std::shared_ptr<DirWatcher>>> DirWatcher::start(asio::any_io_executor ex, std::string root,
                                                                       bool recursive, sys::Credentials creds,
                                                                       EntryFn entry_fn) {
  // The instance is the user's: its watches count against the user's limits.
  auto made = sys::run_as(creds, []() -> Result<int> {
    int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return errno_error("inotify_init1");
    return fd;
  });
  if (!made) co_return std::unexpected(std::move(made.error()));
  std::shared_ptr<DirWatcher> w(
      new DirWatcher(ex, *made, std::move(root), recursive, std::move(creds), std::move(entry_fn)));
  auto added = co_await w->add_tree(w->root_, true, false);
  if (!added) co_return std::unexpected(std::move(added.error()));
  asio::co_spawn(ex, [w]() -> asio::awaitable<void> { co_await w->read_loop(); }, asio::detached);
  co_return w;
}

void DirWatcher::stop() {
  if (stopped_) return;
  stopped_ = true;
  notify_ = nullptr;
  // Closing the descriptor ends the pending read (operation_aborted) and
  // drops every watch of this inotify instance.
  boost::system::error_code ignore;
  fd_.close(ignore);
  watches_.clear();
}

std::string DirWatcher::relative(const std::string& path) const {
  if (path == root_) return ".";
  if (root_ == "/") return path.substr(1);
  if (path.size() > root_.size() && path.compare(0, root_.size(), root_) == 0 && path[root_.size()] == '/')
    return path.substr(root_.size() + 1);
  return path;
}

void DirWatcher::push(std::string path, EventType type) {
  if (error_) return;
  if (events_.size() >= kMaxQueued) {
    fail(Error(ErrorCode::kResourceExhausted,
               "watch " + root_ + ": more than " + std::to_string(kMaxQueued) + " events were not collected"));
    return;
  }
  WatchEvent ev;
  ev.name = relative(path);
  ev.type = type;
  if (entry_fn_ && event_carries_entry(type)) ev.entry = entry_fn_(path);
  ev.path = std::move(path);
  events_.push_back(std::move(ev));
}

void DirWatcher::fail(Error e) {
  if (!error_) error_ = std::move(e);
}

asio::awaitable<Status> DirWatcher::add_tree(std::string dir, bool is_root, bool report) {
  auto self = shared_from_this();
  std::vector<std::string> pending{std::move(dir)};
  while (!pending.empty() && !stopped_) {
    // A batch of directories with the user's credentials, then a yield.
    auto batch = sys::run_as(creds_, [&] { return scan_batch(pending, is_root, report); });
    if (!batch) co_return std::unexpected(std::move(batch.error()));
    if (error_) co_return ok();  // too many events: the watch has failed
    co_await asio::post(fd_.get_executor(), asio::use_awaitable);
  }
  co_return ok();
}

Status DirWatcher::scan_batch(std::vector<std::string>& pending, bool is_root, bool report) {
  for (int scanned = 0; scanned < kDirsPerYield && !pending.empty(); ++scanned) {
    std::string d = std::move(pending.back());
    pending.pop_back();
    bool top = is_root && d == root_;
    // Below the root, never follow a symlink, and only watch directories.
    uint32_t mask = kWatchMask | (top ? 0u : (IN_ONLYDIR | IN_DONT_FOLLOW));
    int wd = ::inotify_add_watch(fd_.native_handle(), d.c_str(), mask);
    if (wd < 0) {
      int err = errno;
      if (top) return errno_error("watch " + d, err);
      // Gone again, replaced by a non-directory, or not readable by the
      // user: nothing to watch.
      if (err == ENOENT || err == ENOTDIR || err == EACCES) continue;
      // Most likely the fs.inotify.max_user_watches limit: keep what we
      // have rather than end the watch.
      if (!warned_) {
        warned_ = true;
        // A path past PATH_MAX is the usual cause: name only its start.
        std::string shown = d.size() > 160 ? d.substr(0, 160) + "... (" + std::to_string(d.size()) + " bytes)" : d;
        COPPICE_LOG(warn) << "watch " << root_ << ": cannot watch " << shown << ": "
                          << Error::from_errno(err, "inotify_add_watch").message();
      }
      continue;
    }
    watches_[wd] = d;
    if (top) root_wd_ = wd;
    if (!recursive_ && !report) continue;
    // Below the root a directory is opened only if it still is one (a
    // symlink swapped in since it was read is not followed). Its entries are
    // read in bounded batches; only subdirectories are kept, as paths.
    sys::UniqueFd dfd(::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (top ? 0 : O_NOFOLLOW)));
    if (!dfd) continue;  // removed meanwhile (its parent reports that), or not readable by the user
    sys::DirReader reader;
    if (!reader.reset(dfd.get())) continue;
    for (;;) {
      auto de = reader.next();
      if (!de || !*de) break;  // an unreadable rest is as good as gone
      const auto& ent = **de;
      bool is_dir = ent.type == DT_DIR;
      if (ent.type == DT_UNKNOWN) {
        struct stat st;
        is_dir = ::fstatat(dfd.get(), ent.name.data(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
      }
      std::string child = join_path(d, ent.name);
      if (report) push(child, EventType::kCreate);
      if (error_) return ok();  // too many events: the watch has failed
      if (!recursive_ || !is_dir) continue;
      if (watches_.size() + pending.size() >= kMaxWatches) {
        if (!warned_) {
          warned_ = true;
          COPPICE_LOG(warn) << "watch " << root_ << ": more than " << kMaxWatches
                            << " directories; the rest of the tree is not watched";
        }
        if (!report) break;  // nothing more to learn from this directory
        continue;
      }
      pending.push_back(std::move(child));
    }
  }
  return ok();
}

void DirWatcher::drop_watches_under(const std::string& dir) {
  for (auto it = watches_.begin(); it != watches_.end();) {
    const std::string& p = it->second;
    if (it->first != root_wd_ &&
        (p == dir || (p.size() > dir.size() && p.compare(0, dir.size(), dir) == 0 && p[dir.size()] == '/'))) {
      ::inotify_rm_watch(fd_.native_handle(), it->first);
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
}

asio::awaitable<void> DirWatcher::handle(const RawEvent& ev) {
  if (ev.mask & IN_Q_OVERFLOW) {
    fail(Error(ErrorCode::kInternal, "watch " + root_ + ": the inotify event queue overflowed and events were lost"));
    co_return;
  }
  auto it = watches_.find(ev.wd);
  if (it == watches_.end()) co_return;  // a watch dropped since the kernel queued this
  bool is_root = ev.wd == root_wd_;
  std::string path = it->second;
  if (!ev.name.empty()) path = join_path(path, ev.name);
  if (ev.mask & (IN_IGNORED | IN_UNMOUNT)) {
    watches_.erase(it);
    co_return;
  }
  if (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
    // A subdirectory's own deletion or move is reported by its parent.
    if (!is_root) co_return;
    // The watched directory itself went away: report it, and stop following
    // the tree, whose paths no longer hold.
    push(path, (ev.mask & IN_DELETE_SELF) ? EventType::kRemove : EventType::kRename);
    drop_watches_under(root_);
    ::inotify_rm_watch(fd_.native_handle(), root_wd_);
    watches_.erase(root_wd_);
    co_return;
  }
  for (EventType t : event_types(ev.mask)) push(path, t);
  if (recursive_ && (ev.mask & IN_ISDIR)) {
    // A directory moved away keeps its inotify watch (it follows the inode);
    // drop it so its events do not come with stale paths. If it was moved
    // within the tree, IN_MOVED_TO adds it again under the new name.
    if (ev.mask & IN_MOVED_FROM) drop_watches_under(path);
    if (ev.mask & (IN_CREATE | IN_MOVED_TO)) {
      // Only a freshly created directory can hold entries nobody has reported.
      auto s = co_await add_tree(path, false, (ev.mask & IN_CREATE) != 0);
      (void)s;  // errors below the root are handled inside add_tree
    }
  }
}

asio::awaitable<void> DirWatcher::read_loop() {
  auto self = shared_from_this();
  std::vector<char> buf(kReadBuffer);
  while (!stopped_) {
    auto [ec, n] = co_await fd_.async_read_some(asio::buffer(buf), kTuple);
    if (stopped_) co_return;
    if (ec) {
      fail(Error(ErrorCode::kInternal, "watch " + root_ + ": read inotify events: " + ec.message()));
      if (notify_) notify_();
      co_return;
    }
    for (const RawEvent& ev : parse_events(buf.data(), n)) {
      if (stopped_) break;
      co_await handle(ev);
    }
    if (notify_ && (!events_.empty() || error_)) notify_();
    if (error_) co_return;
  }
}

}  // namespace coppice::envd
