// The ordered queue of store writes. The sandbox owner never writes to
// SQLite on its own strand (a commit can wait on the disk); it hands each
// write here, where one thread applies them in the order they were given.
// A write the API must not answer before (a new sandbox, a kill) is awaited;
// others (a timeout extension, an event) are posted and their failure is
// logged. Reads go to the store directly: it serialises its own connection.
#pragma once

#include <boost/asio.hpp>

#include <functional>
#include <string>

#include "common/result.h"
#include "store/store.h"

namespace coppice::core {

namespace asio = boost::asio;

class StoreQueue {
 public:
  explicit StoreQueue(store::Store& store) : store_(store) {}
  ~StoreQueue() { drain(); }
  StoreQueue(const StoreQueue&) = delete;
  StoreQueue& operator=(const StoreQueue&) = delete;

  using Op = std::function<Status(store::Store&)>;
  // Applies `op` after everything queued before it; completes on the
  // caller's executor with op's result.
  asio::awaitable<Status> write(Op op);
  // The same without waiting; a failure is logged with `what`.
  void post(Op op, std::string what);
  // Blocks until every queued write is applied (shutdown, tests).
  void drain();

 private:
  store::Store& store_;
  asio::thread_pool thread_{1};
};

}  // namespace coppice::core
