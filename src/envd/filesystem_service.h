// filesystem.Filesystem: Stat, MakeDir, Move, ListDir, Remove, WatchDir
// (inotify stream) and the polling watchers (CreateWatcher, GetWatcherEvents,
// RemoveWatcher).
#pragma once

#include <memory>

#include "envd/envd.h"

namespace coppice::envd {

class FilesystemService {
 public:
  explicit FilesystemService(Envd& envd);
  ~FilesystemService();
  void register_routes(connect::Router& rpc);

 private:
  struct Impl;
  Envd& envd_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace coppice::envd
