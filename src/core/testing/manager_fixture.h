// For unit tests: a SandboxManager over a FakeBackend, a real SQLite store in
// a temp dir and a template registry with one template, with its io_context
// running on threads of its own. No root, no kernel objects.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "common/test_temp_dir.h"
#include "core/sandbox_manager.h"
#include "core/testing/fake_backend.h"

namespace coppice::core::testing {

class ManagerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    namespace fs = std::filesystem;
    cfg_.state_dir = (tmp_.path() / "state").string();
    cfg_.templates_dir = (tmp_.path() / "templates").string();
    cfg_.envd_path = "/bin/true";
    cfg_.metrics_interval_s = 0;
    fs::create_directories(cfg_.state_dir + "/sandboxes");
    write_template("base", "");
    write_template("other", "");
    templates_ = std::make_unique<TemplateRegistry>(cfg_.templates_dir);
    ASSERT_TRUE(templates_->reload());
    auto st = store::Store::open(store::db_path(cfg_.state_dir));
    ASSERT_TRUE(st) << st.error().to_string();
    store_ = std::make_unique<store::Store>(std::move(*st));
    work_ = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(io_.get_executor());
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
    backend_ = std::make_unique<FakeBackend>(io_, (tmp_.path() / "fake").string());
    metrics_ = std::make_unique<metrics::GatewayMetrics>(registry_);
  }

  void TearDown() override {
    if (mgr_) {
      run(mgr_->shutdown());
      mgr_.reset();
    }
    backend_.reset();
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
  }

  // A template directory <templates>/<name> with `toml` as its description.
  void write_template(const std::string& name, const std::string& toml) {
    namespace fs = std::filesystem;
    fs::create_directories(cfg_.templates_dir + "/" + name + "/rootfs");
    std::ofstream(cfg_.templates_dir + "/" + name + "/template.toml") << toml;
  }

  // (Re)makes the manager over the same store and backend, as a restart does.
  void make_manager() {
    if (mgr_) {
      run(mgr_->shutdown());
      mgr_.reset();
    }
    mgr_ = std::make_unique<SandboxManager>(cfg_, *store_, *backend_, *templates_,
                                            ManagerExecutors{io_.get_executor(), &workers_, &background_}, *metrics_);
  }

  template <typename T>
  T run(asio::awaitable<T> aw) {
    return asio::co_spawn(io_, std::move(aw), asio::use_future).get();
  }
  void run(asio::awaitable<void> aw) { asio::co_spawn(io_, std::move(aw), asio::use_future).get(); }

  SandboxView create(CreateParams p = {}) {
    auto v = run(mgr_->create(std::move(p)));
    EXPECT_TRUE(v) << v.error().to_string();
    return v ? *v : SandboxView{};
  }

  test_util::TempDir tmp_{"coppice-core-test"};
  GatewayConfig cfg_;
  asio::io_context io_{2};
  std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  asio::thread_pool workers_{2};
  sys::BackgroundPool background_{2};
  std::unique_ptr<TemplateRegistry> templates_;
  std::unique_ptr<store::Store> store_;
  metrics::Registry registry_;
  std::unique_ptr<metrics::GatewayMetrics> metrics_;
  std::unique_ptr<FakeBackend> backend_;
  std::unique_ptr<SandboxManager> mgr_;
};

}  // namespace coppice::core::testing
