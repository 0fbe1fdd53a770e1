#include "envd/fs_watch.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "sys/fsutil.h"
#include "sys/tree_test_util.h"

namespace coppice::envd {
namespace {

namespace stdfs = std::filesystem;
using ET = EventType;

TEST(EventTypes, MapsLikeFsnotify) {
  using V = std::vector<ET>;
  EXPECT_EQ(event_types(IN_CREATE), V{ET::kCreate});
  EXPECT_EQ(event_types(IN_MOVED_TO), V{ET::kCreate});
  EXPECT_EQ(event_types(IN_MOVED_FROM), V{ET::kRename});
  EXPECT_EQ(event_types(IN_MODIFY), V{ET::kWrite});
  EXPECT_EQ(event_types(IN_DELETE), V{ET::kRemove});
  EXPECT_EQ(event_types(IN_ATTRIB), V{ET::kChmod});
  EXPECT_EQ(event_types(IN_CLOSE_WRITE), V{});
  EXPECT_EQ(event_types(IN_CREATE | IN_ISDIR), V{ET::kCreate});
  EXPECT_EQ(event_types(IN_CREATE | IN_ATTRIB | IN_MODIFY | IN_DELETE),
            (V{ET::kCreate, ET::kChmod, ET::kWrite, ET::kRemove}));
  EXPECT_EQ(event_type_name(ET::kRename), "EVENT_TYPE_RENAME");
  EXPECT_TRUE(event_carries_entry(ET::kCreate));
  EXPECT_TRUE(event_carries_entry(ET::kWrite));
  EXPECT_TRUE(event_carries_entry(ET::kChmod));
  EXPECT_FALSE(event_carries_entry(ET::kRemove));
  EXPECT_FALSE(event_carries_entry(ET::kRename));
}

TEST(ParseEvents, SplitsPaddedRecords) {
  std::string buf;
  auto add = [&](int wd, uint32_t mask, std::string_view name, uint32_t len) {
    struct inotify_event h {};
    h.wd = wd;
    h.mask = mask;
    h.len = len;
    buf.append(reinterpret_cast<const char*>(&h), sizeof h);
    std::string n(name);
    n.resize(len, '\0');
    buf += n;
  };
  add(1, IN_CREATE, "file.txt", 16);
  add(2, IN_DELETE_SELF, "", 0);
  auto evs = parse_events(buf.data(), buf.size());
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_EQ(evs[0].wd, 1);
  EXPECT_EQ(evs[0].name, "file.txt");
  EXPECT_EQ(evs[1].mask, static_cast<uint32_t>(IN_DELETE_SELF));
  EXPECT_EQ(evs[1].name, "");
  // A truncated record is dropped.
  EXPECT_EQ(parse_events(buf.data(), buf.size() - 1).size(), 1u);
}

class WatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (stdfs::temp_directory_path() / "coppice-watch-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = stdfs::canonical(tmpl).string();
  }
  void TearDown() override {
    if (watcher_) watcher_->stop();
    EXPECT_TRUE(sys::remove_tree(dir_));
  }

  void start(bool recursive, DirWatcher::EntryFn fn = {}) {
    bool done = false;
    asio::co_spawn(io_, [&]() -> asio::awaitable<void> {
      sys::Credentials me = sys::own_credentials();
      auto w = co_await DirWatcher::start(io_.get_executor(), dir_, recursive, me, fn);
      EXPECT_TRUE(w) << (w ? "" : w.error().message());
      if (w) watcher_ = *w;
      done = true;
    }, asio::detached);
    while (!done) io_.run_one();
    io_.restart();
  }

  // Runs the loop until an event matching (name, type) arrives or 2 s pass;
  // collects everything seen.
  bool wait_for(const std::string& name, ET type) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (std::chrono::steady_clock::now() < until) {
      io_.run_for(std::chrono::milliseconds(20));
      io_.restart();
      while (!watcher_->events().empty()) {
        seen_.push_back(watcher_->events().front());
        watcher_->events().pop_front();
      }
      for (auto& e : seen_)
        if (e.name == name && e.type == type) return true;
    }
    return false;
  }

  std::string path(std::string_view rel) const { return dir_ + "/" + std::string(rel); }

  asio::io_context io_;
  std::string dir_;
  std::shared_ptr<DirWatcher> watcher_;
  std::vector<WatchEvent> seen_;
};

TEST_F(WatchTest, CreateWriteChmodRenameRemove) {
  start(false);
  std::ofstream(path("f")) << "x";
  EXPECT_TRUE(wait_for("f", ET::kCreate));
  EXPECT_TRUE(wait_for("f", ET::kWrite));
  ::chmod(path("f").c_str(), 0600);
  EXPECT_TRUE(wait_for("f", ET::kChmod));
  ::rename(path("f").c_str(), path("g").c_str());
  EXPECT_TRUE(wait_for("f", ET::kRename));
  EXPECT_TRUE(wait_for("g", ET::kCreate));
  ::unlink(path("g").c_str());
  EXPECT_TRUE(wait_for("g", ET::kRemove));
  // Not recursive: a file in a subdirectory is not seen.
  ::mkdir(path("sub").c_str(), 0755);
  EXPECT_TRUE(wait_for("sub", ET::kCreate));
  std::ofstream(path("sub/inner")) << "x";
  EXPECT_FALSE(wait_for("sub/inner", ET::kCreate));
  EXPECT_FALSE(watcher_->error());
}

TEST_F(WatchTest, RecursiveFollowsNewAndMovedDirectories) {
  ::mkdir(path("old").c_str(), 0755);
  start(true);
  EXPECT_EQ(watcher_->watch_count(), 2u);
  std::ofstream(path("old/a")) << "x";
  EXPECT_TRUE(wait_for("old/a", ET::kWrite));

  ::mkdir(path("new").c_str(), 0755);
  EXPECT_TRUE(wait_for("new", ET::kCreate));
  std::ofstream(path("new/f")) << "x";
  EXPECT_TRUE(wait_for("new/f", ET::kWrite));

  // A tree made at once: what it held before its watches were in place is
  // reported as created.
  stdfs::create_directories(path("x/y/z"));
  std::ofstream(path("x/y/z/f")) << "x";
  EXPECT_TRUE(wait_for("x/y/z/f", ET::kCreate));
  std::ofstream(path("x/y/z/g")) << "x";
  EXPECT_TRUE(wait_for("x/y/z/g", ET::kWrite));

  // A directory renamed within the tree reports under its new name.
  ::rename(path("old").c_str(), path("renamed").c_str());
  EXPECT_TRUE(wait_for("old", ET::kRename));
  EXPECT_TRUE(wait_for("renamed", ET::kCreate));
  std::ofstream(path("renamed/b")) << "x";
  EXPECT_TRUE(wait_for("renamed/b", ET::kCreate));
  for (auto& e : seen_) EXPECT_NE(e.name, "old/b");
}

// inotify takes paths: a chain deeper than PATH_MAX allows (2,035 levels of
// "d/" below this root) is watched down to where its paths still fit,
// without failing the watch.
TEST_F(WatchTest, RecursiveWatchOfADeepChainIsBounded) {
  test_util::make_chain(dir_, 3000);
  start(true);
  EXPECT_GT(watcher_->watch_count(), 1000u);
  EXPECT_LT(watcher_->watch_count(), 4096u);
  std::ofstream(path("d/f")) << "x";
  EXPECT_TRUE(wait_for("d/f", ET::kCreate));
  EXPECT_FALSE(watcher_->error());
}

TEST_F(WatchTest, EntryFunctionOnlyForSurvivingEntries) {
  int calls = 0;
  start(false, [&](const std::string& p) -> std::optional<nlohmann::json> {
    ++calls;
    return nlohmann::json{{"path", p}};
  });
  std::ofstream(path("f")) << "x";
  ASSERT_TRUE(wait_for("f", ET::kWrite));
  ::unlink(path("f").c_str());
  ASSERT_TRUE(wait_for("f", ET::kRemove));
  for (auto& e : seen_) {
    if (e.type == ET::kRemove) {
      EXPECT_FALSE(e.entry);
    } else {
      ASSERT_TRUE(e.entry);
      EXPECT_EQ((*e.entry)["path"], path("f"));
    }
  }
  EXPECT_GE(calls, 2);
}

TEST_F(WatchTest, RootRemovedIsReportedAsDot) {
  start(false);
  ::rmdir(dir_.c_str());
  EXPECT_TRUE(wait_for(".", ET::kRemove));
  EXPECT_EQ(watcher_->watch_count(), 0u);
}

TEST_F(WatchTest, MissingDirectoryFails) {
  bool done = false;
  asio::co_spawn(io_, [&]() -> asio::awaitable<void> {
    sys::Credentials me = sys::own_credentials();
    std::string missing = dir_ + "/missing";
    auto w = co_await DirWatcher::start(io_.get_executor(), missing, false, me);
    EXPECT_FALSE(w);
    if (!w) {
      EXPECT_EQ(w.error().code(), ErrorCode::kNotFound);
    }
    done = true;
  }, asio::detached);
  while (!done) io_.run_one();
}

}  // namespace
}  // namespace coppice::envd
