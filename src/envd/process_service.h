// process.Process: starting commands (with pipes or a PTY), streaming their
// output, re-attaching, input, signals and PTY resize.
#pragma once

#include <memory>

#include "envd/envd.h"

namespace coppice::envd {

class ProcessTable;

class ProcessService {
 public:
  explicit ProcessService(Envd& envd);
  ~ProcessService();
  void register_routes(connect::Router& rpc);
  // SIGKILLs every running process (envd is shutting down).
  void kill_all();

 private:
  Envd& envd_;
  std::shared_ptr<ProcessTable> table_;
};

}  // namespace coppice::envd
