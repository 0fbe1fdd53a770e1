// The netlink plumbing under net/netlink.cc: request batches built with
// libmnl, one socket per call, and ACK checking. Internal to src/net.
#pragma once

#include <libmnl/libmnl.h>
#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/result.h"
#include "sys/fd.h"

namespace coppice::net::nl {

// Attribute walking over const messages (libmnl's iteration macros assign
// void* and are C only).
template <typename F>
void for_each_attr(const nlmsghdr* nlh, size_t header_len, F&& f) {
  auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, header_len));
  auto* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  while (mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<const char*>(a)))) {
    f(a);
    a = mnl_attr_next(a);
  }
}

template <typename F>
void for_each_nested(const nlattr* nest, F&& f) {
  auto* a = static_cast<const nlattr*>(mnl_attr_get_payload(nest));
  int len = static_cast<int>(mnl_attr_get_payload_len(nest));
  while (mnl_attr_ok(a, len)) {
    f(a);
    len -= static_cast<int>(MNL_ALIGN(a->nla_len));
    a = mnl_attr_next(a);
  }
}

// A u32 attribute's value; false when the attribute is too short.
bool attr_u32(const nlattr* a, uint32_t* out);
// A string attribute (NUL-terminated or not).
std::string attr_str(const nlattr* a);

// Requests sent together in one sendmsg, each with its own sequence number
// (set when sent) and a description of its step for error messages.
class Batch {
 public:
  static constexpr size_t kSize = 16384;
  static constexpr size_t kMessageRoom = 1024;  // the most one message here takes

  Batch() : buf_(kSize) {}

  // A new message of `type` with NLM_F_REQUEST | `flags`. Callers add the
  // fixed header (header<T>) and then attributes.
  nlmsghdr* add(uint16_t type, uint16_t flags, std::string step);
  template <typename T>
  static T* header(nlmsghdr* nlh) {
    return static_cast<T*>(mnl_nlmsg_put_extra_header(nlh, sizeof(T)));
  }

  // No room left for another message: send this batch first.
  bool full() const { return tail() + kMessageRoom > buf_.size(); }
  bool empty() const { return offsets_.empty(); }
  size_t size() const { return offsets_.size(); }
  size_t tail() const;
  nlmsghdr* msg(size_t i);
  const std::string& step(size_t i) const { return steps_[i]; }
  const char* data() const { return buf_.data(); }
  void clear();

 private:
  std::vector<char> buf_;
  std::vector<size_t> offsets_;
  std::vector<std::string> steps_;
};

// One request's outcome: 0 or an errno, with the kernel's extended-ACK text.
struct Ack {
  int err = 0;
  std::string text;
  bool done = false;
};

// "step (kernel text): ERRNO (strerror)".
Error ack_error(const Ack& ack, const std::string& step);

using OnData = std::function<void(size_t request, const nlmsghdr*)>;

// A netlink socket bound in one namespace, for one call's requests.
class Socket {
 public:
  // In the calling thread's namespace, or in `netns_fd` when >= 0.
  static Result<Socket> open(int protocol, int netns_fd = -1);

  // Sends the batch and reads until every request is answered (an ACK or
  // error for plain requests, NLMSG_DONE for dumps). Data messages go to
  // `on_data` with the index of the request they answer. Errors of the
  // exchange itself (send, receive) are the Result's; the kernel's answer to
  // each request is in its Ack.
  Result<std::vector<Ack>> exchange(Batch& b, const OnData& on_data = {});

  // exchange(), then the first failed request as the error.
  Status run(Batch& b, const OnData& on_data = {});

 private:
  explicit Socket(sys::UniqueFd fd);

  sys::UniqueFd fd_;
  uint32_t next_seq_ = 1;
};

}  // namespace coppice::net::nl
