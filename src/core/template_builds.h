// Template builds asked for through E2B's template API (the SDK's
// Template.build() and buildInBackground(); api/templates_api.cc has the
// HTTP side): who owns which template name, the files the SDK uploads for COPY
// steps, and the builds themselves, each with its status and log.
//
// A build runs in the background, one at a time, on a thread of its own:
// the uploads it names are unpacked into a build context under
// <state-dir>/template-builds/<buildID>/, and `coppice template build
// --dockerfile` (the image builder, builder/image_build.h, as its own
// process: it needs a single-threaded process) builds the Dockerfile that
// api/template_steps.h made, its output becoming the build's log line by line.
// The builder installs the template only once complete, so a failed build
// leaves the template of that name as it was. A finished build's template
// gets the SDK's start and ready commands and CPU and memory, and the
// registry is reloaded before the status says "ready".
//
// Ownership: a name built through the API belongs to the team that first
// asked for it (kept in <state-dir>/template-builds/owners.json); another
// team can neither see it nor build over it. Templates on disk without an
// owner (the host's, the CLI's) are everyone's to read, and only an admin
// key may build over them.
//
// Uploads: stored per team under <state-dir>/template-builds/files/, named
// by the SDK's hash, at most kMaxUploadBytes each, removed a day after
// they were last used. Thread-safe; no HTTP types.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.h"
#include "templates/templates.h"

namespace coppice::core {

// What a build runs (api/template_steps.h makes it from the SDK's steps).
struct TemplateBuildSpec {
  std::string dockerfile;                // FROM <image> + one or more lines per step
  std::vector<std::string> file_hashes;  // the COPY steps' uploads (64 hex), each once
  std::string start_cmd;                 // empty: none
  std::string ready_cmd;                 // empty: none
  // The SDK's step number of each Dockerfile line (index 0: line 1); 0 for
  // the base image and what follows the last step.
  std::vector<size_t> line_steps;
};

// Whether `s` is what the SDK sends as a file hash: 64 lowercase hex digits.
bool valid_files_hash(std::string_view s);

inline constexpr uint64_t kMaxUploadBytes = uint64_t{512} << 20;

struct BuildLogLine {
  std::chrono::system_clock::time_point time;
  std::string level;    // "info" | "error"
  std::string message;
};

struct BuildStatusView {
  std::string template_id, build_id;
  std::string status;   // "waiting" (not triggered yet), "building", "ready", "error"
  std::vector<BuildLogLine> lines;  // from the offset asked for
  std::string reason;   // why it failed
  std::string step;     // the failing step ("1".. as the SDK numbers them), if known
};

struct NewBuild {
  std::string template_id, build_id;
  std::vector<std::string> tags;
};

class TemplateBuilds {
 public:
  // `cli` is the `coppice` binary that runs builds.
  TemplateBuilds(std::string state_dir, templates::TemplateRegistry& registry, std::string cli);
  // Stops a running build (its directory removed, the template untouched) and the thread.
  ~TemplateBuilds();
  TemplateBuilds(const TemplateBuilds&) = delete;
  TemplateBuilds& operator=(const TemplateBuilds&) = delete;

  // Whether `team` may see template `name`: it has no owner, or it is the team's.
  bool visible(const std::string& name, const std::string& team) const;
  std::optional<std::string> owner(const std::string& name) const;

  // POST /v3/templates: a new build of `name` ("name" or "name:tag") for
  // `team`. kInvalidArgument for a bad name or tag; kPermissionDenied when
  // the name is another team's, or a template without an owner and the
  // caller is not an admin.
  Result<NewBuild> request(const std::string& team, bool admin, const std::string& name,
                           const std::vector<std::string>& tags, int cpu_count, int memory_mb);
  // GET /templates/{id}/files/{hash}: whether the team has that upload;
  // when not, a one-use token for its upload. kNotFound for a template the
  // team has no build of.
  struct UploadLink {
    bool present = false;
    std::string token;
  };
  Result<UploadLink> upload_link(const std::string& team, const std::string& template_id, const std::string& hash);
  // Where an upload token's file goes (the caller writes `<path>.part`,
  // then calls finish_upload). kNotFound for an unknown or used token.
  Result<std::string> upload_path(const std::string& token);
  // Publishes `<path>.part` as the upload, and forgets the token.
  Status finish_upload(const std::string& token);

  // POST /v2/templates/{id}/builds/{buildID}: starts the build. kNotFound
  // for another team's or an unknown build; kFailedPrecondition when it
  // was started already.
  Status start(const std::string& team, const std::string& template_id, const std::string& build_id, TemplateBuildSpec spec);
  // A failed trigger (a step Coppice cannot build) also fails the build, so
  // its status says why.
  void fail(const std::string& team, const std::string& template_id, const std::string& build_id,
            const std::string& reason);
  Result<BuildStatusView> status(const std::string& team, const std::string& template_id,
                                 const std::string& build_id, size_t offset) const;
  // True once per ready build: the first status read that finds it ready
  // collects the trees it replaced (those no sandbox runs on).
  bool take_ready(const std::string& build_id);
  // Build ids of a template's finished builds, with their tags, newest last.
  struct TagView {
    std::string tag, build_id;
    std::chrono::system_clock::time_point created;
  };
  std::vector<TagView> tags(const std::string& name) const;
  // POST /templates/tags: `tags` also name the build that `target`
  // ("name" or "name:tag") names. kNotFound when there is no such ready
  // build the team may see; kInvalidArgument for a bad tag.
  Result<std::string> assign_tags(const std::string& team, const std::string& target,
                                  const std::vector<std::string>& tags);
  // DELETE /templates/tags: the tags name no build of `name` any more.
  Status remove_tags(const std::string& team, const std::string& name, const std::vector<std::string>& tags);
  // "name:tag" -> "name" when a ready build of template `name` has that tag
  // ("default": any); anything else unchanged.
  std::string resolve_tag(const std::string& id) const;
  // Forgets what the builds of a removed template knew (its owner stays).
  void forget(const std::string& name);
  // Drops the owner of a removed template: the name is free again.
  void release(const std::string& name);

 private:
  struct Build {
    std::string id, name, team;
    std::vector<std::string> tags;
    int cpu_count = 0, memory_mb = 0;
    std::string status = "waiting";
    std::vector<BuildLogLine> lines;
    std::string reason, step;
    bool ready_taken = false;
    TemplateBuildSpec spec;
    std::chrono::system_clock::time_point created;
  };
  struct Upload {
    std::string team_dir, hash;
  };

  void run();                       // the build thread
  void build_one(const std::string& id);
  void log(const std::string& id, const std::string& level, const std::string& msg);
  void finish(const std::string& id, const Status& result);
  Status save_owners_locked();
  std::string team_dir(const std::string& team) const;
  void sweep_uploads();

  const std::string dir_;           // <state-dir>/template-builds
  templates::TemplateRegistry& registry_;
  const std::string cli_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> owners_;  // template name -> team
  std::map<std::string, Build> builds_;        // by build id
  std::map<std::string, Upload> tokens_;       // upload token -> where
  std::deque<std::string> queue_;
  bool stopping_ = false;
  std::atomic<bool> cancel_{false};
  std::thread thread_;
};

}  // namespace coppice::core
