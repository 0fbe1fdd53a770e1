// Running blocking work off the calling coroutine's thread: the job runs on
// a thread of `pool` and the coroutine resumes on its own executor (for the
// sandbox owner: its strand) with the job's result.
#pragma once

#include <boost/asio.hpp>

#include <type_traits>
#include <utility>

namespace coppice::core {

namespace asio = boost::asio;

// Not a coroutine itself: g++ 12 destroys lambda captures moved into
// coroutine frames twice, so the hand-off is a plain asynchronous operation.
// Pass `f` as a named local (see conventions on co_await temporaries).
template <typename Pool, typename F>
asio::awaitable<std::invoke_result_t<F>> run_on(Pool& pool, F f) {
  using R = std::invoke_result_t<F>;
  return asio::async_initiate<const asio::use_awaitable_t<>, void(R)>(
      [&pool](auto handler, F fn) {
        asio::post(pool, [fn = std::move(fn), handler = std::move(handler)]() mutable {
          R r = fn();
          auto ex = asio::get_associated_executor(handler);
          asio::dispatch(ex, [h = std::move(handler), r = std::move(r)]() mutable { std::move(h)(std::move(r)); });
        });
      },
      asio::use_awaitable, std::move(f));
}

}  // namespace coppice::core
