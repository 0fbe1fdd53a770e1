// Removing a template: refused while anything uses it, otherwise its tree
// goes the way of a replaced build (templates.h, retired_root).
#include <stdio.h>

#include "common/log.h"
#include "core/offload.h"
#include "core/sandbox_manager.h"
#include "core/sandbox_manager_internal.h"
#include "sys/fsutil.h"

namespace coppice::core {

asio::awaitable<Status> SandboxManager::remove_template(std::string name) {
  auto op = do_remove_template(std::move(name));
  co_return co_await on_owner(std::move(op));
}

asio::awaitable<Status> SandboxManager::do_remove_template(std::string name) {
  bool known = false;
  for (const auto& t : templates_.list()) known = known || t.name == name;
  if (!known) co_return make_error(ErrorCode::kNotFound, "template " + name + " not found");
  if (name == "base")
    co_return make_error(ErrorCode::kFailedPrecondition, "base is the default template: rebuild it rather than remove it");
  // Checked and moved on the owner, without a suspension in between: no
  // create can take the template meanwhile.
  std::vector<std::string> users;
  for (const auto& [id, l] : live_) {
    if (l->template_id == name && l->state != SandboxState::kPooled && l->state != SandboxState::kGone) users.push_back(id);
  }
  if (!users.empty()) {
    std::string list;
    for (size_t i = 0; i < users.size() && i < 5; ++i) list += (i ? ", " : "") + users[i];
    if (users.size() > 5) list += ", ...";
    co_return make_error(ErrorCode::kFailedPrecondition, "template " + name + " is used by " +
                                                             std::to_string(users.size()) + " sandbox(es) (" + list +
                                                             "): kill them first");
  }
  for (const auto& p : pools()) {
    if (p.template_id == name && (p.target > 0 || p.available > 0 || p.filling > 0))
      co_return make_error(ErrorCode::kFailedPrecondition,
                           "template " + name + " has a warm pool: `coppice pool drain " + name + "` first");
  }
  const std::string root = templates_.root();
  const std::string dir = sys::join_path(root, name);
  if (auto s = sys::make_dirs(templates::retired_root(root), 0700); !s) co_return std::unexpected(s.error());
  const std::string to = templates::retired_path(root, name);
  if (::rename(dir.c_str(), to.c_str()) != 0) co_return errno_error("move " + dir + " to " + to);
  COPPICE_LOG(info) << "template " << name << " removed (its tree went to " << to << ")";
  auto reload = [this] { return templates_.reload(); };
  auto s = co_await run_on(workers_, std::move(reload));
  if (!s) {
    COPPICE_LOG(warn) << "templates reload after removing " << name << ": " << s.error().to_string();
  }
  co_await do_collect_retired_templates();
  co_return ok();
}

}  // namespace coppice::core
