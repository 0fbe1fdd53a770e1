#include "core/store_queue.h"

#include <future>

#include "common/log.h"
#include "core/offload.h"

namespace coppice::core {

asio::awaitable<Status> StoreQueue::write(Op op) {
  store::Store* st = &store_;
  auto job = [st, op = std::move(op)] { return op(*st); };
  co_return co_await run_on(thread_, std::move(job));
}

void StoreQueue::post(Op op, std::string what) {
  asio::post(thread_, [this, op = std::move(op), what = std::move(what)] {
    if (auto s = op(store_); !s) {
      COPPICE_LOG_RATE(error, 5) << "store: " << what << ": " << s.error().to_string();
    }
  });
}

void StoreQueue::drain() {
  std::promise<void> done;
  auto f = done.get_future();
  asio::post(thread_, [&done] { done.set_value(); });
  f.wait();
}

}  // namespace coppice::core
