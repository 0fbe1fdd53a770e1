#include "store/checkpointer.h"

#include "common/log.h"

namespace coppice::store {

std::unique_ptr<Checkpointer> Checkpointer::start(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<sqlite3, Closer> db(raw);
  if (rc != SQLITE_OK) {
    COPPICE_LOG(warn) << "store checkpointer: " << sqlite3_errstr(rc) << " (checkpoints stay in commits)";
    return nullptr;
  }
  sqlite3_busy_timeout(db.get(), 1000);
  // A connection checkpoints nothing (and says the database is not in WAL
  // mode) until it has read the database once.
  rc = sqlite3_exec(db.get(), "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) {
    COPPICE_LOG(warn) << "store checkpointer: " << sqlite3_errmsg(db.get()) << " (checkpoints stay in commits)";
    return nullptr;
  }
  std::unique_ptr<Checkpointer> c(new Checkpointer(std::move(db)));
  c->thread_ = std::thread([p = c.get()] { p->loop(); });
  return c;
}

Checkpointer::~Checkpointer() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (attached_) sqlite3_wal_hook(attached_, nullptr, nullptr);
  checkpoint();
}

void Checkpointer::attach(sqlite3* db) {
  attached_ = db;
  sqlite3_wal_hook(
      db,
      [](void* c, sqlite3*, const char*, int pages) {
        static_cast<Checkpointer*>(c)->note_commit(pages);
        return SQLITE_OK;
      },
      this);
}

void Checkpointer::note_commit(int wal_pages) {
  bool wake;
  {
    std::lock_guard lk(mu_);
    dirty_ = true;
    last_commit_ = std::chrono::steady_clock::now();
    wake = wal_pages >= kBusyPages && !due_;
    due_ |= wal_pages >= kBusyPages;
  }
  if (wake) cv_.notify_one();
}

void Checkpointer::loop() {
  std::unique_lock lk(mu_);
  while (!stop_) {
    cv_.wait_for(lk, std::chrono::milliseconds(500), [&] { return stop_ || due_; });
    if (stop_) break;
    const bool quiet = dirty_ && std::chrono::steady_clock::now() - last_commit_ >= kQuiet;
    if (!due_ && !quiet) continue;
    due_ = dirty_ = false;
    lk.unlock();
    checkpoint();
    lk.lock();
  }
}

// PASSIVE: copies what no reader still needs, never waits for a writer.
void Checkpointer::checkpoint() {
  int rc = sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
    COPPICE_LOG_RATE(warn, 60) << "store checkpoint: " << sqlite3_errstr(rc);
  }
}

}  // namespace coppice::store
