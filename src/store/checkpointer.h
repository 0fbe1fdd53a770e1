// WAL checkpoints of the store, from a thread and a connection of their own.
// Private to src/store.
//
// A checkpoint syncs the database files (tens of ms on a busy disk). SQLite's
// automatic one runs inside whichever commit makes the WAL pass 1000 pages,
// that is on one of the gateway's request threads. The checkpointer runs as
// often (once the WAL holds kBusyPages) and, after a quiet spell, once more,
// so an idle gateway's WAL is empty; not more often, since each sync also
// forces a journal commit of the file system.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace coppice::store {

class Checkpointer {
 public:
  // Opens its own connection to the WAL-mode database at `path` and starts
  // its thread; nullptr (logged) if it cannot, and then SQLite's automatic
  // checkpoint stays in charge.
  static std::unique_ptr<Checkpointer> start(const std::string& path);
  // Stops the thread, unhooks, and checkpoints once more.
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Becomes the WAL hook of `db` (the store's connection), which replaces
  // SQLite's automatic checkpoint: a commit only says there is work. The
  // destructor removes the hook; nothing may use `db` meanwhile.
  void attach(sqlite3* db);

  static constexpr int kBusyPages = 1000;
  static constexpr std::chrono::seconds kQuiet{2};

 private:
  struct Closer {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  explicit Checkpointer(std::unique_ptr<sqlite3, Closer> db) : db_(std::move(db)) {}
  void note_commit(int wal_pages);
  void loop();
  void checkpoint();

  std::unique_ptr<sqlite3, Closer> db_;
  sqlite3* attached_ = nullptr;  // the connection whose WAL hook this is
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool due_ = false;    // the WAL passed kBusyPages
  bool dirty_ = false;  // commits since the last checkpoint
  std::chrono::steady_clock::time_point last_commit_;
  std::thread thread_;
};

}  // namespace coppice::store
