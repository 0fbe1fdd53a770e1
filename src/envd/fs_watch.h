// Directory watching with inotify for WatchDir and the polling watchers.
//
// Events follow E2B's envd, which uses fsnotify:
//   IN_CREATE, IN_MOVED_TO     -> CREATE (a file moved in is created here)
//   IN_MOVED_FROM              -> RENAME (the old name; the new one gets CREATE)
//   IN_ATTRIB                  -> CHMOD
//   IN_MODIFY                  -> WRITE (close-write is not watched)
//   IN_DELETE                  -> REMOVE
// One inotify event with several bits gives several events, in the order
// CREATE, RENAME, CHMOD, WRITE, REMOVE. Names are relative to the watched
// directory ("." for the directory itself, which reports REMOVE when deleted
// and RENAME when moved; it is not followed afterwards).
//
// Recursive watches add every subdirectory, also ones created or moved in
// later. A directory created in the tree is scanned once its watch is in
// place and what it already holds is reported as CREATE, so "mkdir -p a/b &&
// touch a/b/f" is not lost to the time it takes to add the watches (such
// entries may occasionally be reported twice). A recursive watch follows at
// most 65,536 directories, and none whose path is longer than PATH_MAX
// (inotify takes paths); past either bound the rest of the tree is not
// watched and one warning is logged. Directories are read in bounded batches.
#pragma once

#include <sys/inotify.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <nlohmann/json.hpp>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "sys/run_as.h"

namespace coppice::envd {

namespace asio = boost::asio;

enum class EventType { kUnspecified = 0, kCreate = 1, kWrite = 2, kRemove = 3, kRename = 4, kChmod = 5 };

// "EVENT_TYPE_CREATE" and so on.
std::string_view event_type_name(EventType t);

// The events one inotify mask stands for, in envd's order.
std::vector<EventType> event_types(uint32_t mask);

// One event as read from an inotify descriptor.
struct RawEvent {
  int wd;
  uint32_t mask;
  std::string name;  // empty when the event is about the watched directory itself
};

// Splits what a read(2) of an inotify descriptor returned into events.
std::vector<RawEvent> parse_events(const char* buf, size_t n);

// Whether an event refers to an entry still expected at its path, and so may
// carry EntryInfo. REMOVE and RENAME name a path whose entry is gone: a stat
// could attach an unrelated entry created there since.
bool event_carries_entry(EventType t);

// The mask every watch is created with.
inline constexpr uint32_t kWatchMask =
    IN_CREATE | IN_MODIFY | IN_DELETE | IN_DELETE_SELF | IN_MOVED_FROM | IN_MOVED_TO | IN_MOVE_SELF | IN_ATTRIB;

struct WatchEvent {
  std::string name;  // relative to the watched directory
  std::string path;  // absolute
  EventType type = EventType::kUnspecified;
  std::optional<nlohmann::json> entry;  // EntryInfo, when asked for and the entry exists
};

// Watches one directory (and, if recursive, its subdirectories) and queues
// the events. Reading runs in its own coroutine from start() until stop();
// the owner drains events() whenever the notify callback fires.
class DirWatcher : public std::enable_shared_from_this<DirWatcher> {
 public:
  // Builds EntryInfo JSON for an event's path; nullopt when it is gone.
  using EntryFn = std::function<std::optional<nlohmann::json>(const std::string& path)>;
  // Most events kept undrained; past it the watcher fails (kResourceExhausted).
  static constexpr size_t kMaxQueued = 1 << 16;

  // Opens an inotify instance, watches `root` (an absolute path to a
  // directory; a symlink to one is followed) and starts reading. Everything
  // that touches the file system (the instance, each watch, reading the
  // directories of a recursive watch) runs with `creds` (sys/run_as.h), so
  // only what that user can read is watched. With `entry_fn`, CREATE, WRITE
  // and CHMOD events carry the entry as it is when the event is read
  // (entry_fn takes care of its own credentials).
  static asio::awaitable<Result<std::shared_ptr<DirWatcher>>> start(asio::any_io_executor ex, std::string root,
                                                                    bool recursive, sys::Credentials creds,
                                                                    EntryFn entry_fn = {});
  ~DirWatcher();
  DirWatcher(const DirWatcher&) = delete;
  DirWatcher& operator=(const DirWatcher&) = delete;

  std::deque<WatchEvent>& events() { return events_; }
  // Set once reading failed (queue overflow, read error); no events follow.
  const std::optional<Error>& error() const { return error_; }
  // Called after events or an error were queued.
  void set_notify(std::function<void()> fn) { notify_ = std::move(fn); }
  // Stops watching; idempotent. Queued events stay readable.
  void stop();
  size_t watch_count() const { return watches_.size(); }

 private:
  DirWatcher(asio::any_io_executor ex, int fd, std::string root, bool recursive, sys::Credentials creds,
             EntryFn entry_fn);
  asio::awaitable<void> read_loop();
  asio::awaitable<void> handle(const RawEvent& ev);
  // Adds watches for `dir` and (recursive) every directory below it. With
  // `report`, entries found below `dir` are queued as CREATE.
  asio::awaitable<Status> add_tree(std::string dir, bool is_root, bool report);
  // add_tree's work on up to kDirsPerYield directories of `pending`, run
  // with the user's credentials.
  Status scan_batch(std::vector<std::string>& pending, bool is_root, bool report);
  void drop_watches_under(const std::string& dir);
  void push(std::string path, EventType type);
  void fail(Error e);
  std::string relative(const std::string& path) const;

  asio::posix::stream_descriptor fd_;
  std::string root_;
  bool recursive_;
  sys::Credentials creds_;
  EntryFn entry_fn_;
  int root_wd_ = -1;
  std::map<int, std::string> watches_;  // wd -> directory path
  std::deque<WatchEvent> events_;
  std::optional<Error> error_;
  std::function<void()> notify_;
  bool stopped_ = false;
  bool warned_ = false;
};

}  // namespace coppice::envd
