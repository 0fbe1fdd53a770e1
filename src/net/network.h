// The gateway's sandbox network: one bridge, one nftables table, one DNS
// resolver, and the addresses of the sandboxes on it (design: README
// "Networking").
//
// Each sandbox gets a veth pair from its own network namespace to the
// bridge, an address from the subnet, a default route and a resolver; its
// egress goes through the firewall (net/firewall.h), which masquerades it
// out of the uplink and refuses the host, other sandboxes, link-local and
// private ranges whatever the sandbox's own rules say.
//
// Addresses are durable: every address taken is a row in the store (an
// AddressLedger) before any kernel object carries it, and is freed only
// once the kernel objects that carried it are gone, so a restart (even after
// kill -9) never hands one out twice.
//
// Threading: every method may be called from any thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "net/addr.h"
#include "net/policy.h"

namespace coppice::net {

class Firewall;
class Resolver;
struct DnsPolicy;

struct NetworkOptions {
  std::string bridge = "coppice0";
  Cidr4 subnet{0x0AD50000u, 16};         // 10.213.0.0/16; the bridge holds the first host address
  std::string uplink;                    // "": the IPv4 default route's interface
  std::vector<std::string> dns_upstreams;  // "ip" or "ip:port"; empty: the host's /etc/resolv.conf
  std::vector<Cidr4> open_ranges;        // normally refused ranges the operator opened
  std::string table = "coppice";         // nftables table (inet family)
  uint16_t dns_port = 53;
  std::string run_dir;                   // where the sandboxes' resolv.conf is written (root-only dir)
};

// Where taken addresses are recorded (the store, in the gateway).
class AddressLedger {
 public:
  struct Entry {
    uint32_t addr = 0;
    std::string owner;  // a sandbox id or "spare"
    std::string link;
  };
  virtual ~AddressLedger() = default;
  virtual Status add(const Entry& e) = 0;  // kAlreadyExists when taken
  virtual Status put(const Entry& e) = 0;  // new owner or link
  virtual Status remove(uint32_t addr) = 0;
  virtual Result<std::vector<Entry>> list() = 0;
};

// A sandbox's place on the network.
struct Attachment {
  uint32_t addr = 0;  // 0: none
  std::string link;   // host end of its veth
  bool valid() const { return addr != 0; }
};

struct LinkCounters {
  uint64_t rx_bytes = 0, rx_packets = 0, tx_bytes = 0, tx_packets = 0;  // the sandbox's view: tx = sent by it
};

// What the sandbox backend needs of the network.
class SandboxNetwork {
 public:
  virtual ~SandboxNetwork() = default;
  // Takes an address (recorded as a spare's) and gives the namespace its
  // veth, address, default route and loopback. Blocking (~0.5 ms).
  virtual Result<Attachment> attach(int netns_fd) = 0;
  // The attachment now belongs to the sandbox `id` (durably).
  virtual Status claim(const Attachment& a, const std::string& id) = 0;
  // The namespace is gone or going (its last process dead, no fd held):
  // drops its rules now, and frees the address once its veth is gone. Quick.
  virtual void release(const Attachment& a) = 0;
  // A running sandbox left by an earlier gateway: its attachment, read from
  // its namespace, now recorded as `id`'s.
  virtual Result<Attachment> adopt(int netns_fd, const std::string& id) = 0;
  // Host path of the resolv.conf every sandbox sees at /etc/resolv.conf.
  virtual const std::string& resolv_conf() const = 0;
  // A cap on what the sandbox sends (bytes/s; 0 removes it), in the kernel.
  virtual Status set_egress_limit(int netns_fd, uint64_t bytes_per_s) = 0;
  // The sandbox's traffic so far (from its veth's counters).
  virtual Result<LinkCounters> counters(const Attachment& a) = 0;
};

class Network final : public SandboxNetwork {
 public:
  // Checks what the host can do (bridges, nftables), makes the bridge, the
  // firewall table and the resolver. kFailedPrecondition with one line
  // saying what is missing when the host cannot.
  // The resolver runs on a thread of its own.
  static Result<std::unique_ptr<Network>> open(const NetworkOptions& o, AddressLedger& ledger);
  // Stops the resolver; removes the firewall table and the bridge and
  // restores forwarding, unless keep_in_kernel() was called.
  ~Network() override;

  // Sandboxes outlive this process: their veths, rules, NAT and forwarding
  // stay for the next gateway process, which adopts them.
  void keep_in_kernel() { keep_ = true; }

  Result<Attachment> attach(int netns_fd) override;
  Status claim(const Attachment& a, const std::string& id) override;
  void release(const Attachment& a) override;
  Result<Attachment> adopt(int netns_fd, const std::string& id) override;
  const std::string& resolv_conf() const override { return resolv_conf_; }
  Status set_egress_limit(int netns_fd, uint64_t bytes_per_s) override;
  Result<LinkCounters> counters(const Attachment& a) override;

  // Enforces `p` for the sandbox at `addr` (firewall and resolver): new
  // connections see it when this returns. The default policy on an address
  // that never had rules needs no firewall change: then it only takes a
  // mutex (quick enough for the caller's event loop).
  Status apply(uint32_t addr, const EgressPolicy& p);

  // After restart recovery: every address, veth and rule that no sandbox in
  // `live` (ids) and no spare of this process holds is removed.
  void reconcile(const std::set<std::string>& live);

  // All sandboxes' traffic so far, those gone included (for /metrics).
  LinkCounters totals();

  uint32_t gateway_addr() const { return gateway_; }
  const NetworkOptions& options() const { return opts_; }
  std::string describe() const;

  // Addresses taken now, and releases waiting for their veth to go (tests).
  size_t addresses_taken() const;
  size_t releases_pending() const;

  Network(const NetworkOptions& o, AddressLedger& ledger);  // use open()

 private:
  Result<uint32_t> take_address();
  void free_address(uint32_t addr);
  std::string link_name(uint32_t addr) const;
  void releaser_loop();

  NetworkOptions opts_;
  AddressLedger& ledger_;
  uint32_t gateway_ = 0;
  std::string link_prefix_;
  std::string resolv_conf_;
  bool keep_ = false;
  std::unique_ptr<Firewall> firewall_;
  boost::asio::io_context dns_io_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> dns_work_{dns_io_.get_executor()};
  std::thread dns_thread_;
  std::unique_ptr<Resolver> resolver_;

  mutable std::mutex mu_;
  std::set<uint32_t> taken_;     // in the ledger
  std::set<uint32_t> mine_;      // attached or adopted by this process
  uint32_t cursor_ = 0;          // next-fit: an address freed is not reused at once
  std::map<uint32_t, std::shared_ptr<const DnsPolicy>> dns_;  // per sandbox address
  std::set<uint32_t> ruled_;     // addresses whose firewall rules were set since they were taken
  LinkCounters retired_;         // traffic of sandboxes gone

  struct Pending {
    Attachment a;
    std::chrono::steady_clock::time_point since;
  };
  std::mutex rel_mu_;
  std::condition_variable rel_cv_;
  std::deque<Pending> releases_;
  bool stop_ = false;
  std::thread releaser_;
};

}  // namespace coppice::net
