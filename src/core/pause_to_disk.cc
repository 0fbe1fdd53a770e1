// Pause to disk and the resume from it (SandboxManager::pause_to_disk,
// resume_from_disk): the sandbox's kernel objects freed and its state dir
// and uid range kept (Backend::suspend), then a new sandbox on the same
// state dir. do_pause/do_resume (sandbox_manager.cc) choose this or a freeze.
#include <fcntl.h>
#include <unistd.h>

#include "common/log.h"
#include "core/offload.h"
#include "core/sandbox_manager.h"
#include "core/sandbox_manager_internal.h"
#include "sys/fsutil.h"
#include "templates/templates.h"

namespace coppice::core {

// Pausing (kPausing set by the caller) to disk: envd's tree checkpointed
// (with memory) and killed, the sandbox's kernel objects removed, its state
// dir and uid range kept. Answers once that is durable.
asio::awaitable<Status> SandboxManager::pause_to_disk(std::shared_ptr<Live> l, bool memory) {
  const std::string id = l->id;
  const std::string images = l->state_dir + "/checkpoint";
  // envd's exit is ours from here on, not a death to report.
  l->exit_watch.reset();
  const std::string dir = l->state_dir;
  auto job = [this, id, images, memory, dir]() -> Status {
    (void)sys::remove_tree(images);
    if (memory) COPPICE_TRY(backend_.checkpoint(id, images, /*leave_running=*/false, /*durable=*/true));
    COPPICE_TRY(backend_.suspend(id));
    // The writable layer is written without syncs while the sandbox runs
    // (overlayfs "volatile"): durable from here, a host crash included.
    if (auto fd = sys::open_file(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd && ::syncfs(fd->get()) != 0) {
      return errno_error("pause of sandbox " + id + ": syncfs");
    }
    return ok();
  };
  auto r = co_await run_on(workers_, std::move(job));
  if (!r) {
    // criu puts the tree back as it was when a dump fails; if envd is gone
    // after all, its watch reports it.
    (void)transition(*l, SandboxState::kRunning);
    if (auto fd = backend_.exit_fd(l->handle); fd) {
      watch_exit(l, std::move(*fd));
    } else if (fd.error().code() == ErrorCode::kNotFound) {
      asio::co_spawn(owner_, on_envd_exit(id), asio::detached);
    }
    co_return std::unexpected(std::move(r.error()).context("pause"));
  }
  l->on_disk = true;
  l->disk_memory = memory;
  l->disk_host_root = l->handle.host_uid;
  l->handle.init_pid = -1;
  l->handle.net_addr = 0;
  l->handle.net_link.clear();
  l->handle.netns_cookie = 0;
  (void)transition(*l, SandboxState::kPaused);
  l->paused_at = Clock::now();
  auto rec = record(*l);
  auto op = [rec, memory](store::Store& st) {
    return st.put_sandbox(rec, "paused", memory ? "to disk, memory included" : "to disk, files only");
  };
  auto w = co_await store_q_.write(std::move(op));
  if (!w) {
    COPPICE_LOG_RATE(error, 5).sandbox(id) << "store: pause: " << w.error().to_string();
  }
  co_return ok();
}

// Resuming (kResuming set by the caller) a sandbox paused to disk: a new
// sandbox under the same id on its kept state dir, with its checkpoint
// restored (or, files only, the template started afresh), its network
// rules applied to its new address.
asio::awaitable<Status> SandboxManager::resume_from_disk(std::shared_ptr<Live> l) {
  const std::string id = l->id;
  auto tmpl = templates_.get(l->template_id);
  if (!tmpl) co_return make_error(ErrorCode::kNotFound, "template " + l->template_id + " of sandbox " + id + " is gone");
  EnvdInit init;
  init.access_token = l->token;
  if (l->env_vars.is_object()) {
    for (auto& [k, v] : l->env_vars.items())
      if (v.is_string()) init.env_vars[k] = v.get<std::string>();
  }
  auto spec = spec_for(*l, *tmpl, init);
  spec.reuse_state_dir = true;
  bool memory = l->disk_memory;
  if (!l->tree.empty() && tmpl->tree != l->tree) {
    // The template was rebuilt while it was paused: it resumes on the build
    // it ran on (kept aside, templates.h, while any sandbox names it), which
    // its memory and files were made against.
    const std::string root = templates_.root(), tree = l->tree;
    auto find = [root, tree]() -> std::string {
      for (const auto& t : templates::retired_trees(root)) {
        if (t.key == tree) return t.path + "/rootfs";
      }
      return {};
    };
    std::string rootfs = co_await run_on(workers_, std::move(find));
    if (!rootfs.empty()) {
      spec.rootfs = rootfs;
    } else if (memory) {
      // Gone after all: its files on the new build, a cold boot.
      COPPICE_LOG(warn).sandbox(id) << "its template build is gone: resumed cold on the current one";
      memory = false;
      l->tree = tmpl->tree;
    }
  }
  // Its volumes (at create and hot-mounted) are mounted again, where they were.
  auto mounts = store_.volume_mounts(id);
  if (!mounts) co_return std::unexpected(std::move(mounts.error()).context("volumes of sandbox " + id));
  for (const auto& m : *mounts) spec.volumes.push_back(sandbox::VolumeMount{backend_.volume_dir(m.volume_id), m.path});
  const std::string images = l->state_dir + "/checkpoint";
  if (memory) {
    spec.restore_from = images;
    spec.init_json.clear();  // envd's memory has it
  }
  auto job = [this, spec] { return backend_.create(spec); };
  auto h = co_await run_on(workers_, std::move(job));
  if (!h) co_return std::unexpected(h.error());
  l->handle = *h;
  l->on_disk = false;
  auto applying = apply_network(*l);
  auto applied = co_await std::move(applying);
  if (!applied) {
    COPPICE_LOG(warn).sandbox(id) << "network rules after resume: " << applied.error().to_string();
  }
  if (auto fd = backend_.exit_fd(l->handle); fd) {
    watch_exit(l, std::move(*fd));
  } else if (fd.error().code() == ErrorCode::kNotFound) {
    asio::co_spawn(owner_, on_envd_exit(id), asio::detached);
  }
  if (!memory && (!tmpl->start_cmd.empty())) {
    auto commands = run_template_commands(l->handle.envd_socket, l->token, *tmpl);
    if (auto s = co_await std::move(commands); !s) {
      COPPICE_LOG(warn).sandbox(id) << "start command after a cold resume: " << s.error().to_string();
    }
  }
  // The images are spent: the next pause writes new ones.
  auto drop = [images] {
    (void)sys::remove_tree(images);
    return true;
  };
  (void)co_await run_on(workers_, std::move(drop));
  co_return ok();
}

asio::awaitable<Status> SandboxManager::resume_for_traffic(std::string id) {
  auto op = do_resume_for_traffic(std::move(id));
  co_return co_await on_owner(std::move(op));
}

asio::awaitable<Status> SandboxManager::do_resume_for_traffic(std::string id) {
  const auto give_up = Clock::now() + std::chrono::seconds(60);
  asio::steady_timer wait(owner_);
  for (;;) {
    auto found = find(id, std::nullopt);
    if (!found) co_return std::unexpected(found.error());
    auto l = *found;
    if (l->state == SandboxState::kRunning) co_return ok();
    if (l->state == SandboxState::kPaused) {
      if (!l->lifecycle.auto_resume) {
        co_return make_error(ErrorCode::kFailedPrecondition, "sandbox " + id + " is paused (without autoResume)");
      }
      COPPICE_LOG(info).sandbox(id) << "resumed by traffic (autoResume)";
      auto resuming = do_resume(id, std::nullopt, std::nullopt);
      auto r = co_await std::move(resuming);
      if (r) co_return ok();
      if (r.error().code() != ErrorCode::kFailedPrecondition) co_return std::unexpected(r.error());
    } else if (l->state != SandboxState::kResuming && l->state != SandboxState::kPausing) {
      co_return make_error(ErrorCode::kFailedPrecondition,
                           "sandbox " + id + " is " + std::string(state_label(l->state)));
    }
    // Being paused or resumed by someone else: look again shortly.
    if (Clock::now() > give_up) {
      co_return make_error(ErrorCode::kDeadlineExceeded, "sandbox " + id + " did not come back within 60 s");
    }
    wait.expires_after(std::chrono::milliseconds(10));
    (void)co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

}  // namespace coppice::core
