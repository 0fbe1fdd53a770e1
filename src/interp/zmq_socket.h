// A ZeroMQ socket driven from an Asio executor without a thread of its own.
//
// libzmq exposes a socket's readiness through ZMQ_FD, a descriptor that
// signals "the socket's state may have changed" edge-style: the truth is in
// ZMQ_EVENTS, and any zmq call on the socket (a send included) may consume
// the signal. So wait_readable() always asks ZMQ_EVENTS before it waits on
// the descriptor, and send() wakes a pending wait to look again.
#pragma once

#include <boost/asio.hpp>

#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace coppice::interp {

namespace asio = boost::asio;

// One zmq context for the process (its I/O thread belongs to libzmq).
class ZmqContext {
 public:
  ZmqContext();
  ~ZmqContext();
  ZmqContext(const ZmqContext&) = delete;
  ZmqContext& operator=(const ZmqContext&) = delete;
  void* get() const { return ctx_; }

 private:
  void* ctx_;
};

class ZmqSocket {
 public:
  // type: ZMQ_DEALER, ZMQ_SUB, ...
  static Result<std::unique_ptr<ZmqSocket>> open(ZmqContext& ctx, int type, asio::any_io_executor ex);
  ~ZmqSocket();
  ZmqSocket(const ZmqSocket&) = delete;
  ZmqSocket& operator=(const ZmqSocket&) = delete;

  Status connect(const std::string& endpoint);
  Status subscribe_all();
  // Queues one multipart message without blocking.
  Status send(const std::vector<std::string>& frames);
  // One whole multipart message if one is waiting; false when none is.
  Result<bool> try_recv(std::vector<std::string>& frames);
  // Completes with true once a message can be received, false once close()
  // was called.
  asio::awaitable<bool> wait_readable();
  // Ends waits; the socket itself is closed by the destructor.
  void close();

 private:
  ZmqSocket(void* s, int fd, asio::any_io_executor ex);
  void kick();

  void* s_;
  asio::posix::stream_descriptor fd_;  // ZMQ_FD: owned by libzmq, released before zmq_close
  bool closed_ = false;
};

}  // namespace coppice::interp
