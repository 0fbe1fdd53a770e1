#include "sandbox/ns/trash.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "common/log.h"
#include "sys/fd.h"
#include "sys/fsutil.h"
#include "sys/tree_walk.h"

namespace coppice::sandbox::ns {

namespace {

// Entries removed between two looks at the stop flag.
constexpr size_t kStepBudget = 4096;
// Entries that failed in one pass, past which the pass ends.
constexpr size_t kMaxFailedPerPass = 256;

// Empties one trash dir on a thread of its own. Woken by move_to_trash; its
// first pass runs at once, for what an earlier process left.
class Reaper {
 public:
  explicit Reaper(std::string dir) : dir_(std::move(dir)), thread_([this] { run(); }) {}
  ~Reaper() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  void wake() {
    {
      std::lock_guard lk(mu_);
      pending_ = true;
    }
    wake_.notify_all();
  }

  bool wait_idle(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    return idle_.wait_for(lk, timeout, [this] { return !pending_ && !busy_; });
  }

 private:
  bool stopping() {
    std::lock_guard lk(mu_);
    return stop_;
  }

  void run() {
    // Removal competes with creates for the disk and the CPU: it waits.
    (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
    for (;;) {
      {
        std::unique_lock lk(mu_);
        wake_.wait(lk, [this] { return stop_ || pending_; });
        if (stop_) return;
        pending_ = false;
        busy_ = true;
      }
      empty_trash();
      {
        std::lock_guard lk(mu_);
        busy_ = false;
      }
      idle_.notify_all();
    }
  }

  // The first entry of the trash not in `skip`, read in bounded batches.
  std::optional<std::string> next_entry(const std::set<std::string>& skip) {
    sys::UniqueFd d(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!d) return std::nullopt;  // no trash yet
    sys::DirReader r;
    if (!r.reset(d.get())) return std::nullopt;
    for (;;) {
      auto e = r.next();
      if (!e || !*e) return std::nullopt;
      std::string name((*e)->name);
      if (!skip.contains(name)) return name;
    }
  }

  void empty_trash() {
    std::set<std::string> failed;  // tried again at the next wake-up
    while (failed.size() < kMaxFailedPerPass) {
      auto name = next_entry(failed);
      if (!name) return;
      const std::string path = dir_ + "/" + *name;
      sys::TreeRemover remover(path);
      for (;;) {
        if (stopping()) return;  // the next process goes on from here
        auto more = remover.step(kStepBudget);
        if (!more) {
          COPPICE_LOG(warn) << "trash: " << more.error().to_string() << " (left for the next pass)";
          failed.insert(*name);
          break;
        }
        if (!*more) break;
      }
    }
  }

  const std::string dir_;
  std::mutex mu_;
  std::condition_variable wake_, idle_;
  bool stop_ = false;
  bool pending_ = true;  // the first pass, for leftovers
  bool busy_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// The reapers of this process, one per trash dir. Process-wide because the
// trash is a property of the file system, not of a backend instance: two
// backends over one state root share its trash and must not race on it. They
// live until exit, when each stops between two steps and joins.
class Reapers {
 public:
  Reaper& of(const std::string& dir) {
    std::lock_guard lk(mu_);
    auto& r = by_dir_[dir];
    if (!r) r = std::make_unique<Reaper>(dir);
    return *r;
  }
  Reaper* find(const std::string& dir) {
    std::lock_guard lk(mu_);
    auto it = by_dir_.find(dir);
    return it == by_dir_.end() ? nullptr : it->second.get();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Reaper>> by_dir_;
};

Reapers& reapers() {
  static Reapers r;
  return r;
}

std::string strip_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

std::string trash_dir_for(const std::string& state_dir) {
  const std::string dir = strip_slashes(state_dir);
  const size_t slash = dir.find_last_of('/');
  const std::string parent = slash == std::string::npos || slash == 0 ? "" : dir.substr(0, slash);
  return parent + "/.trash";
}

void start_trash_reaper(const std::string& state_dir) { (void)reapers().of(trash_dir_for(state_dir)); }

Status move_to_trash(const std::string& state_dir) {
  static std::atomic<uint64_t> counter{0};
  const std::string dir = strip_slashes(state_dir);
  const std::string trash = trash_dir_for(dir);
  const std::string base = dir.substr(dir.find_last_of('/') + 1);
  const std::string ctx = "move " + dir + " to the trash";
  if (!sys::path_exists(dir)) return ok();
  COPPICE_TRY_CTX(sys::make_dir(trash, 0700), ctx);
  for (int attempt = 0;; ++attempt) {
    // Unique within this process by the counter, across processes by the pid
    // (and RENAME_NOREPLACE for a pid seen before).
    const std::string to = trash + "/" + base + "." + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    auto moved = sys::rename_noreplace(dir, to);
    if (moved) break;
    const int err = moved.error().sys_errno();
    if (err == ENOENT && !sys::path_exists(dir)) return ok();  // gone meanwhile
    if ((err == EEXIST || err == ENOENT) && attempt < 8) {
      COPPICE_TRY_CTX(sys::make_dir(trash, 0700), ctx);
      continue;
    }
    return std::unexpected(std::move(moved.error()).context(ctx));
  }
  reapers().of(trash).wake();
  return ok();
}

bool wait_trash_idle(const std::string& trash_dir, std::chrono::milliseconds timeout) {
  Reaper* r = reapers().find(trash_dir);
  return r && r->wait_idle(timeout);
}

}  // namespace coppice::sandbox::ns
