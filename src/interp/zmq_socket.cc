#include "interp/zmq_socket.h"

#include <zmq.h>

#include <cerrno>

namespace coppice::interp {

namespace {
std::unexpected<Error> zmq_error(std::string_view step) {
  int e = zmq_errno();
  return make_error(ErrorCode::kInternal, std::string(step) + ": " + zmq_strerror(e), e);
}
}  // namespace

ZmqContext::ZmqContext() : ctx_(zmq_ctx_new()) {}
ZmqContext::~ZmqContext() {
  if (ctx_) zmq_ctx_term(ctx_);
}

Result<std::unique_ptr<ZmqSocket>> ZmqSocket::open(ZmqContext& ctx, int type, asio::any_io_executor ex) {
  void* s = zmq_socket(ctx.get(), type);
  if (!s) return zmq_error("zmq_socket");
  int zero = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
  // The kernel binds its endpoints a moment after it starts: retry soon.
  int ivl = 10, ivl_max = 200;
  zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
  zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
  int fd = -1;
  size_t len = sizeof fd;
  if (zmq_getsockopt(s, ZMQ_FD, &fd, &len) != 0) {
    auto err = zmq_error("zmq_getsockopt(ZMQ_FD)");
    zmq_close(s);
    return err;
  }
  return std::unique_ptr<ZmqSocket>(new ZmqSocket(s, fd, std::move(ex)));
}

ZmqSocket::ZmqSocket(void* s, int fd, asio::any_io_executor ex) : s_(s), fd_(ex, fd) {}

ZmqSocket::~ZmqSocket() {
  boost::system::error_code ignore;
  fd_.cancel(ignore);
  fd_.release();
  zmq_close(s_);
}

Status ZmqSocket::connect(const std::string& endpoint) {
  if (zmq_connect(s_, endpoint.c_str()) != 0) return zmq_error("zmq_connect " + endpoint);
  return ok();
}

Status ZmqSocket::subscribe_all() {
  if (zmq_setsockopt(s_, ZMQ_SUBSCRIBE, "", 0) != 0) return zmq_error("zmq_setsockopt(ZMQ_SUBSCRIBE)");
  return ok();
}

Status ZmqSocket::send(const std::vector<std::string>& frames) {
  for (size_t i = 0; i < frames.size(); ++i) {
    int flags = ZMQ_DONTWAIT | (i + 1 < frames.size() ? ZMQ_SNDMORE : 0);
    if (zmq_send(s_, frames[i].data(), frames[i].size(), flags) < 0) {
      auto err = zmq_error("zmq_send");
      kick();
      return err;
    }
  }
  kick();
  return ok();
}

Result<bool> ZmqSocket::try_recv(std::vector<std::string>& frames) {
  frames.clear();
  for (;;) {
    zmq_msg_t part;
    zmq_msg_init(&part);
    // The first part may be absent; the rest of a multipart message arrives with it.
    int n = zmq_msg_recv(&part, s_, ZMQ_DONTWAIT);
    if (n < 0) {
      int e = zmq_errno();
      zmq_msg_close(&part);
      if (e == EAGAIN && frames.empty()) return false;
      if (e == EINTR) continue;
      return make_error(ErrorCode::kInternal, std::string("zmq_msg_recv: ") + zmq_strerror(e), e);
    }
    frames.emplace_back(static_cast<const char*>(zmq_msg_data(&part)), zmq_msg_size(&part));
    bool more = zmq_msg_more(&part);
    zmq_msg_close(&part);
    if (!more) return true;
  }
}

asio::awaitable<bool> ZmqSocket::wait_readable() {
  for (;;) {
    if (closed_) co_return false;
    int events = 0;
    size_t len = sizeof events;
    if (zmq_getsockopt(s_, ZMQ_EVENTS, &events, &len) != 0) co_return false;
    if (events & ZMQ_POLLIN) co_return true;
    // Aborted means kick() or close(): look again either way.
    co_await fd_.async_wait(asio::posix::stream_descriptor::wait_read, asio::as_tuple(asio::use_awaitable));
  }
}

void ZmqSocket::kick() {
  boost::system::error_code ignore;
  fd_.cancel(ignore);
}

void ZmqSocket::close() {
  closed_ = true;
  kick();
}

}  // namespace coppice::interp
