#include "net/nl_socket.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include <cstring>

#include "sys/netns.h"

namespace coppice::net::nl {
namespace {

constexpr size_t kRecvBuf = 32768;  // MNL_SOCKET_DUMP_SIZE: a dump's page

void parse_error(const nlmsghdr* nlh, Ack* ack) {
  if (mnl_nlmsg_get_payload_len(nlh) < sizeof(nlmsgerr)) {
    ack->err = EBADMSG;
    return;
  }
  auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  ack->err = -e->error;
  if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return;
  size_t offset = sizeof(nlmsgerr);
  if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) offset += e->msg.nlmsg_len - sizeof(nlmsghdr);
  for_each_attr(nlh, offset, [&](const nlattr* a) {
    if (mnl_attr_get_type(a) == NLMSGERR_ATTR_MSG) ack->text = attr_str(a);
  });
}

}  // namespace

bool attr_u32(const nlattr* a, uint32_t* out) {
  if (mnl_attr_get_payload_len(a) < sizeof(uint32_t)) return false;
  *out = mnl_attr_get_u32(a);
  return true;
}

std::string attr_str(const nlattr* a) {
  auto* s = static_cast<const char*>(mnl_attr_get_payload(a));
  return std::string(s, strnlen(s, mnl_attr_get_payload_len(a)));
}

nlmsghdr* Batch::add(uint16_t type, uint16_t flags, std::string step) {
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf_.data() + tail());
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = NLM_F_REQUEST | flags;
  offsets_.push_back(static_cast<size_t>(static_cast<char*>(static_cast<void*>(nlh)) - buf_.data()));
  steps_.push_back(std::move(step));
  return nlh;
}

size_t Batch::tail() const {
  if (offsets_.empty()) return 0;
  auto* last = static_cast<const nlmsghdr*>(static_cast<const void*>(buf_.data() + offsets_.back()));
  return offsets_.back() + MNL_ALIGN(last->nlmsg_len);
}

nlmsghdr* Batch::msg(size_t i) { return static_cast<nlmsghdr*>(static_cast<void*>(buf_.data() + offsets_[i])); }

void Batch::clear() {
  offsets_.clear();
  steps_.clear();
}

Error ack_error(const Ack& ack, const std::string& step) {
  std::string what = step;
  if (!ack.text.empty()) what += " (" + ack.text + ")";
  return Error::from_errno(ack.err, what);
}

Result<Socket> Socket::open(int protocol, int netns_fd) {
  sys::UniqueFd fd;
  if (netns_fd < 0) {
    fd.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol));
    if (!fd) return errno_error("open netlink socket");
  } else {
    COPPICE_ASSIGN_OR_RETURN(fd, sys::socket_in_netns(netns_fd, AF_NETLINK, SOCK_RAW, protocol));
  }
  int one = 1;
  // The kernel's reason on errors, and ACKs without a copy of the request.
  ::setsockopt(fd.get(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  ::setsockopt(fd.get(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  // The kernel always answers; this bounds a wait that would be a kernel bug.
  timeval tv{10, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0)
    return errno_error("bind netlink socket");
  return Socket(std::move(fd));
}

Socket::Socket(sys::UniqueFd fd) : fd_(std::move(fd)) {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  next_seq_ = static_cast<uint32_t>(ts.tv_nsec) | 1;
}

Result<std::vector<Ack>> Socket::exchange(Batch& b, const OnData& on_data) {
  std::vector<Ack> acks(b.size());
  if (b.empty()) return acks;
  uint32_t first = next_seq_;
  for (size_t i = 0; i < b.size(); ++i) b.msg(i)->nlmsg_seq = next_seq_++;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  ssize_t len = static_cast<ssize_t>(b.tail());
  ssize_t n = ::sendto(fd_.get(), b.data(), len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
  if (n != len) return errno_error("send netlink request: " + b.step(0), n < 0 ? errno : EMSGSIZE);
  size_t pending = b.size();
  std::vector<char> buf(kRecvBuf);
  while (pending > 0) {
    n = ::recv(fd_.get(), buf.data(), buf.size(), MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("read netlink answer: " + b.step(0));
    }
    // The kernel sizes dump pages to the reader's buffer, up to this one.
    if (static_cast<size_t>(n) > buf.size())
      return make_error(ErrorCode::kInternal, "read netlink answer: " + b.step(0) + ": message truncated");
    auto* nlh = static_cast<const nlmsghdr*>(static_cast<void*>(buf.data()));
    int left = static_cast<int>(n);
    for (; mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left)) {
      if (nlh->nlmsg_seq < first || nlh->nlmsg_seq >= first + b.size()) continue;
      Ack& ack = acks[nlh->nlmsg_seq - first];
      if (ack.done) continue;
      if (nlh->nlmsg_type == NLMSG_ERROR) {
        parse_error(nlh, &ack);
        ack.done = true;
        --pending;
      } else if (nlh->nlmsg_type == NLMSG_DONE) {
        if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int)) {
          int e = *static_cast<const int*>(mnl_nlmsg_get_payload(nlh));
          if (e < 0) ack.err = -e;
        }
        ack.done = true;
        --pending;
      } else if (on_data) {
        on_data(nlh->nlmsg_seq - first, nlh);
      }
    }
  }
  return acks;
}

Status Socket::run(Batch& b, const OnData& on_data) {
  COPPICE_ASSIGN_OR_RETURN(auto acks, exchange(b, on_data));
  for (size_t i = 0; i < acks.size(); ++i)
    if (acks[i].err != 0) return std::unexpected(ack_error(acks[i], b.step(i)));
  return ok();
}

}  // namespace coppice::net::nl
