// For unit tests of core, the API and the proxy without root: a Backend that
// touches no kernel object (in the role leveldb's in-memory Env plays). A
// "sandbox" is a small HTTP server on a unix socket in a temp dir, standing in
// for its envd: /health, /init, Process/Start (answers exit 0, or the code set
// for a command), and anything else echoed back with the sandbox's id. What
// the "kernel" holds (the set of existing ids) outlives a manager, so restart
// recovery can be tested by making a second manager over the same backend.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/connect.h"
#include "http/server.h"
#include "sandbox/backend.h"

namespace coppice::core::testing {

class FakeBackend final : public sandbox::Backend {
 public:
  FakeBackend(http::asio::io_context& io, std::string dir) : io_(io), dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
  }
  ~FakeBackend() override {
    std::lock_guard lk(mu_);
    for (auto& [id, s] : servers_) s->stop();
  }

  // --- knobs (any thread) ---
  std::atomic<int> fail_creates{0};        // the next N creates fail
  std::atomic<int> fail_errno{0};          // ...with this errno (0: none)
  std::atomic<int> create_delay_ms{0};     // each create sleeps this long
  std::atomic<bool> fail_destroy{false};
  std::atomic<bool> block_freeze{false};   // freeze waits until unblocked
  // Memory every sandbox "cannot give back": set_limits below it is refused.
  std::atomic<uint64_t> held_memory{64u << 20};
  std::atomic<bool> block_set_limits{false};  // set_limits waits until unblocked
  std::atomic<int> set_limits_waiting{0};     // calls waiting there now
  // Exit code Process/Start reports for a command containing the key.
  void set_exit_code(const std::string& needle, int code) {
    std::lock_guard lk(mu_);
    exit_codes_[needle] = code;
  }
  void unblock_set_limits() {
    block_set_limits = false;
    std::lock_guard lk(mu_);
    cv_.notify_all();
  }
  void unblock_freeze() {
    block_freeze = false;
    std::lock_guard lk(mu_);
    cv_.notify_all();
  }

  // --- what happened ---
  size_t creates() const { return creates_.load(); }
  size_t destroys() const { return destroys_.load(); }
  std::set<std::string> existing() const {
    std::lock_guard lk(mu_);
    return existing_;
  }
  bool frozen(const std::string& id) const {
    std::lock_guard lk(mu_);
    return frozen_.count(id) > 0;
  }
  // The body of the last /init the sandbox received ("" if none).
  std::string last_init(const std::string& id) const {
    std::lock_guard lk(mu_);
    auto it = inits_.find(id);
    return it == inits_.end() ? "" : it->second;
  }
  // The limits set_limits last gave `id` ({0, 0}: never called).
  std::pair<int, uint64_t> limits_of(const std::string& id) const {
    std::lock_guard lk(mu_);
    auto it = limits_.find(id);
    return it == limits_.end() ? std::pair<int, uint64_t>{0, 0} : it->second;
  }
  // The spec of the last create of `id`.
  sandbox::SandboxSpec spec_of(const std::string& id) const {
    std::lock_guard lk(mu_);
    return specs_.at(id);
  }
  // Forgets a sandbox as if its processes died (adopt then fails).
  void kill_behind_our_back(const std::string& id) {
    std::lock_guard lk(mu_);
    if (auto it = servers_.find(id); it != servers_.end()) it->second->stop();
    existing_.erase(id);
  }
  // Its "PID 1" exits on its own: the fd exit_fd() gave becomes readable
  // (EOF). The sandbox's resources stay until destroy(), as a dead process's
  // cgroup and mounts do.
  void die(const std::string& id) {
    std::lock_guard lk(mu_);
    if (auto it = servers_.find(id); it != servers_.end()) it->second->stop();
    life_.erase(id);
  }
  // Routes port_socket(.., port) of every sandbox to 127.0.0.1:`host_port`.
  void route_port(uint16_t port, uint16_t host_port) {
    std::lock_guard lk(mu_);
    ports_[port] = host_port;
  }

  // --- Backend ---
  Result<sandbox::SandboxHandle> create(const sandbox::SandboxSpec& spec) override {
    if (int d = create_delay_ms.load()) std::this_thread::sleep_for(std::chrono::milliseconds(d));
    if (fail_creates.load() > 0) {
      --fail_creates;
      return make_error(ErrorCode::kResourceExhausted, "fake: create refused", fail_errno.load());
    }
    ++creates_;
    std::string sock = dir_ + "/" + spec.id + ".sock";
    auto server = std::make_shared<http::Server>(io_, [this, id = spec.id](http::Exchange& ex) { return serve(id, ex); });
    if (auto s = server->listen_unix(sock); !s) return std::unexpected(s.error());
    std::lock_guard lk(mu_);
    servers_[spec.id] = server;
    existing_.insert(spec.id);
    specs_[spec.id] = spec;
    inits_[spec.id] = spec.init_json;
    sandbox::SandboxHandle h;
    h.id = spec.id;
    h.init_pid = 4242;
    h.envd_socket = sock;
    h.state_dir = spec.state_dir;
    h.host_uid = 1000000;
    h.netns_cookie = 7;
    return h;
  }

  Status destroy(const std::string& id) override {
    if (fail_destroy.load()) return make_error(ErrorCode::kInternal, "fake: destroy failed");
    ++destroys_;
    std::lock_guard lk(mu_);
    if (auto it = servers_.find(id); it != servers_.end()) {
      it->second->stop();
      graveyard_.push_back(it->second);  // connections may still use it
      servers_.erase(it);
    }
    existing_.erase(id);
    frozen_.erase(id);
    life_.erase(id);
    return ok();
  }

  Result<sys::UniqueFd> exit_fd(const sandbox::SandboxHandle& h) override {
    std::lock_guard lk(mu_);
    if (!existing_.count(h.id)) return make_error(ErrorCode::kNotFound, "fake: no sandbox " + h.id);
    auto it = life_.find(h.id);
    if (it == life_.end()) {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) return make_error(ErrorCode::kInternal, "fake: pipe");
      it = life_.emplace(h.id, std::make_pair(sys::UniqueFd(p[0]), sys::UniqueFd(p[1]))).first;
    }
    // Each caller gets its own read end; all see EOF once die() closes the write end.
    int dup = ::fcntl(it->second.first.get(), F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return make_error(ErrorCode::kInternal, "fake: dup");
    return sys::UniqueFd(dup);
  }

  Status freeze(const std::string& id) override {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return !block_freeze.load(); });
    if (!existing_.count(id)) return make_error(ErrorCode::kNotFound, "fake: no sandbox " + id);
    frozen_.insert(id);
    return ok();
  }
  Status thaw(const std::string& id) override {
    std::lock_guard lk(mu_);
    frozen_.erase(id);
    return ok();
  }

  Status set_limits(const std::string& id, int cpu_millicores, uint64_t memory_bytes) override {
    std::unique_lock lk(mu_);
    ++set_limits_waiting;
    cv_.wait(lk, [&] { return !block_set_limits.load(); });
    --set_limits_waiting;
    if (!existing_.count(id)) return make_error(ErrorCode::kNotFound, "fake: no sandbox " + id);
    if (memory_bytes < held_memory.load()) {
      return make_error(ErrorCode::kFailedPrecondition, "fake: sandbox " + id + " holds more memory than that");
    }
    limits_[id] = {cpu_millicores, memory_bytes};
    return ok();
  }

  Result<sandbox::Usage> usage(const std::string& id, bool with_disk) override {
    std::lock_guard lk(mu_);
    if (!existing_.count(id)) return make_error(ErrorCode::kNotFound, "fake: no sandbox " + id);
    uint64_t n = ++usage_calls_;
    return sandbox::Usage{n * 1000000, 64u << 20, 512u << 20, with_disk ? 4096u : 0u};
  }

  Result<std::vector<std::string>> list_existing() override {
    std::lock_guard lk(mu_);
    return std::vector<std::string>(existing_.begin(), existing_.end());
  }

  Result<sandbox::SandboxHandle> adopt(const std::string& id, const std::string& state_dir) override {
    std::lock_guard lk(mu_);
    if (!existing_.count(id)) return make_error(ErrorCode::kNotFound, "fake: " + id + " is not running");
    sandbox::SandboxHandle h;
    h.id = id;
    h.init_pid = 4242;
    h.envd_socket = dir_ + "/" + id + ".sock";
    h.state_dir = state_dir;
    h.netns_cookie = 7;
    return h;
  }

  Result<PortSocket> port_socket(const sandbox::SandboxHandle& h, uint16_t port) override {
    std::lock_guard lk(mu_);
    if (!existing_.count(h.id)) return make_error(ErrorCode::kNotFound, "fake: no sandbox " + h.id);
    auto it = ports_.find(port);
    PortSocket out;
    out.fd = sys::UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    // An unrouted port gets port 1 on loopback: nothing listens there.
    out.port = it == ports_.end() ? 1 : it->second;
    return out;
  }

  // Volumes: directories under <dir>/volumes; mounts are only recorded.
  Result<std::string> make_volume(const std::string& id, uint64_t quota_bytes) override {
    (void)quota_bytes;
    std::error_code ec;
    std::filesystem::create_directories(volume_dir(id), ec);
    if (ec) return make_error(ErrorCode::kInternal, "fake: " + ec.message());
    return volume_dir(id);
  }
  Status remove_volume(const std::string& id) override {
    std::error_code ec;
    std::filesystem::remove_all(volume_dir(id), ec);
    return ok();
  }
  std::string volume_dir(const std::string& id) const override { return dir_ + "/volumes/" + id; }
  bool volume_quotas() const override { return true; }  // as if capped
  Result<std::vector<std::string>> list_volumes() override {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/volumes", ec)) out.push_back(e.path().filename());
    return out;
  }
  Status mount_volume(const sandbox::SandboxHandle& h, const sandbox::VolumeMount& m) override {
    std::lock_guard lk(mu_);
    if (!existing_.count(h.id)) return make_error(ErrorCode::kNotFound, "fake: no sandbox " + h.id);
    mounts_[h.id][m.path] = m.host_dir;
    return ok();
  }
  Status unmount_volume(const sandbox::SandboxHandle& h, const sandbox::VolumeMount& m) override {
    std::lock_guard lk(mu_);
    auto it = mounts_.find(h.id);
    if (it == mounts_.end() || !it->second.erase(m.path)) return make_error(ErrorCode::kNotFound, "fake: not mounted");
    return ok();
  }
  // What is hot-mounted in a sandbox: path -> host dir.
  std::map<std::string, std::string> mounts(const std::string& id) const {
    std::lock_guard lk(mu_);
    auto it = mounts_.find(id);
    return it == mounts_.end() ? std::map<std::string, std::string>{} : it->second;
  }

 private:
  std::map<std::string, std::map<std::string, std::string>> mounts_;
  // Per sandbox: a pipe whose write end stands for its live PID 1.
  std::map<std::string, std::pair<sys::UniqueFd, sys::UniqueFd>> life_;
  http::asio::awaitable<void> serve(std::string id, http::Exchange& ex) {
    std::string target(ex.target());
    auto body = co_await ex.read_body(1 << 20);
    if (target == "/health") {
      co_await ex.respond(204, "", "");
    } else if (target == "/init") {
      {
        std::lock_guard lk(mu_);
        inits_[id] = body ? *body : "";
      }
      co_await ex.respond(204, "", "");
    } else if (target == "/process.Process/Start") {
      int code = 0;
      {
        std::lock_guard lk(mu_);
        for (const auto& [needle, c] : exit_codes_)
          if (body && body->find(needle) != std::string::npos) code = c;
      }
      std::string out = coppice::connect::envelope(R"({"event":{"start":{"pid":7}}})") +
                        coppice::connect::envelope(code == 0 ? R"({"event":{"end":{"exited":true}}})"
                                                          : R"({"event":{"end":{"exitCode":)" + std::to_string(code) +
                                                                R"(,"exited":true}}})") +
                        coppice::connect::envelope("{}", 0x02);
      co_await ex.respond(200, out, "application/connect+json");
    } else {
      nlohmann::json j{{"sandbox", id}, {"method", std::string(ex.method_string())}, {"target", target},
                       {"token", ex.header("X-Access-Token")}, {"apiKey", ex.header("X-API-KEY")},
                       {"authorization", ex.header("Authorization")}, {"hasApiKey", ex.has_header("X-API-KEY")}};
      co_await ex.respond(200, j.dump(), "application/json");
    }
  }

  http::asio::io_context& io_;
  const std::string dir_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<http::Server>> servers_;
  std::vector<std::shared_ptr<http::Server>> graveyard_;
  std::set<std::string> existing_, frozen_;
  std::map<std::string, sandbox::SandboxSpec> specs_;
  std::map<std::string, std::string> inits_;
  std::map<std::string, int> exit_codes_;
  std::map<std::string, std::pair<int, uint64_t>> limits_;
  std::map<uint16_t, uint16_t> ports_;
  std::atomic<size_t> creates_{0}, destroys_{0};
  uint64_t usage_calls_ = 0;
};

}  // namespace coppice::core::testing
