#include "core/template_builds.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <regex>

#include "builder/run_tool.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/strings.h"
#include "sys/fsutil.h"
#include "templates/template_toml.h"

namespace coppice::core {
namespace {

using json = nlohmann::json;
using SysClock = std::chrono::system_clock;

// Uploads unused for this long are removed.
constexpr auto kUploadLifetime = std::chrono::hours(24);
// Finished builds whose status is kept (the newest).
constexpr size_t kKeptBuilds = 200;
// What one upload may unpack to: a small archive must not fill the disk.
constexpr uint64_t kMaxUnpackedBytes = uint64_t{2} << 30;
constexpr uint64_t kMaxUnpackedEntries = 100000;
// A build that takes longer is stopped (a RUN step waiting for ever must
// not hold up every later build).
constexpr auto kMaxBuildTime = std::chrono::hours(2);
// Log lines kept per build; later lines are counted, not kept.
constexpr size_t kMaxLogLines = 20000;

bool valid_tag(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  for (char c : t)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') return false;
  return true;
}

// Rewrites the keys the SDK sets in a built template's description,
// keeping the rest; written beside it and renamed over it.
Status set_toml_keys(const std::string& path, const std::map<std::string, std::string>& values) {
  auto text = sys::read_file(path);
  if (!text) return std::unexpected(std::move(text.error()));
  std::string out;
  for (const auto& line : split_string(*text, '\n')) {
    bool replaced = line.empty();
    for (const auto& [k, v] : values)
      if (line.starts_with(k + " =") || line.starts_with(k + "=")) replaced = true;
    if (!replaced) out += line + "\n";
  }
  for (const auto& [k, v] : values)
    if (!v.empty()) out += k + " = " + v + "\n";
  const std::string tmp = path + ".new";
  (void)sys::remove_file(tmp);
  COPPICE_TRY(sys::write_new_file(tmp, out, 0644));
  COPPICE_TRY(sys::fsync_path(tmp, 0));
  return sys::rename_path(tmp, path);
}

}  // namespace

bool valid_files_hash(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

TemplateBuilds::TemplateBuilds(std::string state_dir, templates::TemplateRegistry& registry, std::string cli)
    : dir_(sys::join_path(state_dir, "template-builds")), registry_(registry), cli_(std::move(cli)) {
  // Builds that were running when the gateway stopped left their
  // directories: they never finished, and nothing refers to them.
  if (auto names = sys::list_dir(dir_)) {
    for (const auto& n : *names) {
      if (n == "files" || n == "owners.json") continue;
      if (auto s = sys::remove_tree(sys::join_path(dir_, n)); !s) {
        COPPICE_LOG(warn) << "template builds: " << s.error().to_string();
      }
    }
  }
  if (auto text = sys::read_file(sys::join_path(dir_, "owners.json"))) {
    auto j = json::parse(*text, nullptr, false);
    if (j.is_object()) {
      for (auto& [k, v] : j.items())
        if (v.is_string() && templates::valid_template_name(k)) owners_[k] = v.get<std::string>();
    } else {
      COPPICE_LOG(warn) << "template builds: " << dir_ << "/owners.json is not a JSON object; ignored";
    }
  }
  thread_ = std::thread([this] { run(); });
}

TemplateBuilds::~TemplateBuilds() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cancel_.store(true);
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::optional<std::string> TemplateBuilds::owner(const std::string& name) const {
  std::lock_guard lk(mu_);
  auto it = owners_.find(name);
  if (it == owners_.end()) return std::nullopt;
  return it->second;
}

bool TemplateBuilds::visible(const std::string& name, const std::string& team) const {
  auto o = owner(name);
  return !o || *o == team;
}

std::string TemplateBuilds::team_dir(const std::string& team) const {
  return sys::join_path(sys::join_path(dir_, "files"), sha256_hex("team " + team).substr(0, 24));
}

Status TemplateBuilds::save_owners_locked() {
  json j = json::object();
  for (const auto& [k, v] : owners_) j[k] = v;
  const std::string path = sys::join_path(dir_, "owners.json");
  const std::string tmp = path + ".new";
  COPPICE_TRY(sys::make_dirs(dir_, 0700));
  (void)sys::remove_file(tmp);
  COPPICE_TRY(sys::write_new_file(tmp, j.dump(), 0600));
  COPPICE_TRY(sys::fsync_path(tmp, 0));
  return sys::rename_path(tmp, path);
}

Result<NewBuild> TemplateBuilds::request(const std::string& team, bool admin, const std::string& full_name,
                                         const std::vector<std::string>& tags, int cpu_count, int memory_mb) {
  std::string name = full_name;
  std::vector<std::string> all_tags;
  if (size_t colon = full_name.find(':'); colon != std::string::npos) {
    name = full_name.substr(0, colon);
    all_tags.push_back(full_name.substr(colon + 1));
  }
  for (const auto& t : tags) all_tags.push_back(t);
  if (!templates::valid_template_name(name))
    return make_error(ErrorCode::kInvalidArgument,
                      "\"" + name.substr(0, 128) + "\" is not a template name ([A-Za-z0-9_-][A-Za-z0-9._-]*, at most 128)");
  for (const auto& t : all_tags)
    if (!valid_tag(t)) return make_error(ErrorCode::kInvalidArgument, "\"" + t.substr(0, 128) + "\" is not a tag");
  if (cpu_count < 0 || cpu_count > 64 || memory_mb < 0 || memory_mb > (1 << 20))
    return make_error(ErrorCode::kInvalidArgument, "cpuCount must be 0..64 and memoryMB 0..1048576");
  sweep_uploads();
  const bool exists = registry_.get(name).has_value();
  std::lock_guard lk(mu_);
  auto it = owners_.find(name);
  if (it != owners_.end() && it->second != team)
    return make_error(ErrorCode::kPermissionDenied, "the template name " + name + " is taken by another team");
  if (it == owners_.end()) {
    if (exists && !admin)
      return make_error(ErrorCode::kPermissionDenied,
                        "template " + name + " is the host's; only an admin key may build over it");
    if (!exists) {
      owners_[name] = team;
      if (auto s = save_owners_locked(); !s) {
        owners_.erase(name);
        return std::unexpected(std::move(s.error()).context("record the owner of template " + name));
      }
    }
  }
  Build b;
  b.id = new_token(16);
  b.name = name;
  b.team = team;
  b.tags = all_tags;
  b.cpu_count = cpu_count;
  b.memory_mb = memory_mb;
  b.created = SysClock::now();
  NewBuild out{name, b.id, all_tags};
  // Old finished builds make room.
  while (builds_.size() >= kKeptBuilds) {
    auto oldest = builds_.end();
    for (auto i = builds_.begin(); i != builds_.end(); ++i)
      if ((i->second.status == "ready" || i->second.status == "error" || i->second.status == "waiting") &&
          (oldest == builds_.end() || i->second.created < oldest->second.created))
        oldest = i;
    if (oldest == builds_.end()) return make_error(ErrorCode::kResourceExhausted, "too many template builds at once");
    builds_.erase(oldest);
  }
  builds_[b.id] = std::move(b);
  return out;
}

Result<TemplateBuilds::UploadLink> TemplateBuilds::upload_link(const std::string& team, const std::string& template_id,
                                                               const std::string& hash) {
  if (!valid_files_hash(hash)) return make_error(ErrorCode::kInvalidArgument, "the files hash must be 64 hex digits");
  {
    std::lock_guard lk(mu_);
    bool has_build = false;
    for (const auto& [id, b] : builds_)
      if (b.name == template_id && b.team == team && b.status == "waiting") has_build = true;
    if (!has_build) return make_error(ErrorCode::kNotFound, "template " + template_id.substr(0, 128) + " has no build waiting for files");
  }
  UploadLink out;
  const std::string path = sys::join_path(team_dir(team), hash + ".tar");
  if (sys::path_exists(path)) {
    // Used again: it stays another day.
    ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);
    out.present = true;
    return out;
  }
  COPPICE_TRY(sys::make_dirs(team_dir(team), 0700));
  out.token = new_token(24);
  std::lock_guard lk(mu_);
  if (tokens_.size() > 10000) tokens_.clear();  // abandoned links; a client asks again
  tokens_[out.token] = Upload{team_dir(team), hash};
  return out;
}

Result<std::string> TemplateBuilds::upload_path(const std::string& token) {
  std::lock_guard lk(mu_);
  auto it = tokens_.find(token);
  if (it == tokens_.end()) return make_error(ErrorCode::kNotFound, "unknown or used upload link");
  return sys::join_path(it->second.team_dir, it->second.hash + ".tar");
}

Status TemplateBuilds::finish_upload(const std::string& token) {
  std::string path;
  {
    std::lock_guard lk(mu_);
    auto it = tokens_.find(token);
    if (it == tokens_.end()) return make_error(ErrorCode::kNotFound, "unknown or used upload link");
    path = sys::join_path(it->second.team_dir, it->second.hash + ".tar");
    tokens_.erase(it);
  }
  return sys::rename_path(path + ".part-" + token.substr(0, 8), path);
}

void TemplateBuilds::sweep_uploads() {
  auto teams = sys::list_dir(sys::join_path(dir_, "files"));
  if (!teams) return;
  const auto now = SysClock::now();
  for (const auto& t : *teams) {
    const std::string d = sys::join_path(sys::join_path(dir_, "files"), t);
    auto files = sys::list_dir(d);
    if (!files) continue;
    for (const auto& f : *files) {
      struct stat st {};
      const std::string p = sys::join_path(d, f);
      if (::stat(p.c_str(), &st) != 0) continue;
      auto mtime = SysClock::time_point(std::chrono::seconds(st.st_mtim.tv_sec));
      if (now - mtime > kUploadLifetime) (void)sys::remove_file(p);
    }
  }
}

Status TemplateBuilds::start(const std::string& team, const std::string& template_id, const std::string& build_id,
                             TemplateBuildSpec spec) {
  {
    std::lock_guard lk(mu_);
    auto it = builds_.find(build_id);
    if (it == builds_.end() || it->second.team != team || it->second.name != template_id)
      return make_error(ErrorCode::kNotFound, "build " + build_id.substr(0, 64) + " of template " +
                                                  template_id.substr(0, 128) + " not found");
    if (it->second.status != "waiting")
      return make_error(ErrorCode::kFailedPrecondition, "build " + build_id + " was started already");
    it->second.spec = std::move(spec);
    it->second.status = "building";
    queue_.push_back(build_id);
  }
  log(build_id, "info", "queued: template " + template_id);
  cv_.notify_all();
  return ok();
}

void TemplateBuilds::fail(const std::string& team, const std::string& template_id, const std::string& build_id,
                          const std::string& reason) {
  std::lock_guard lk(mu_);
  auto it = builds_.find(build_id);
  if (it == builds_.end() || it->second.team != team || it->second.name != template_id ||
      it->second.status != "waiting")
    return;
  it->second.status = "error";
  it->second.reason = reason;
  it->second.lines.push_back({SysClock::now(), "error", reason});
}

Result<BuildStatusView> TemplateBuilds::status(const std::string& team, const std::string& template_id,
                                               const std::string& build_id, size_t offset) const {
  std::lock_guard lk(mu_);
  auto it = builds_.find(build_id);
  if (it == builds_.end() || it->second.team != team || it->second.name != template_id)
    return make_error(ErrorCode::kNotFound,
                      "build " + build_id.substr(0, 64) + " of template " + template_id.substr(0, 128) + " not found");
  const Build& b = it->second;
  BuildStatusView v;
  v.template_id = b.name;
  v.build_id = b.id;
  v.status = b.status;
  v.reason = b.reason;
  v.step = b.step;
  if (offset < b.lines.size()) v.lines.assign(b.lines.begin() + static_cast<std::ptrdiff_t>(offset), b.lines.end());
  return v;
}

std::vector<TemplateBuilds::TagView> TemplateBuilds::tags(const std::string& name) const {
  std::lock_guard lk(mu_);
  std::vector<const Build*> done;
  for (const auto& [id, b] : builds_)
    if (b.name == name && b.status == "ready") done.push_back(&b);
  std::sort(done.begin(), done.end(), [](const Build* a, const Build* b) { return a->created < b->created; });
  // Each tag names the newest ready build that had it.
  std::map<std::string, TagView> by_tag;
  for (const Build* b : done) {
    by_tag["default"] = TagView{"default", b->id, b->created};
    for (const auto& t : b->tags) by_tag[t] = TagView{t, b->id, b->created};
  }
  std::vector<TagView> out;
  for (auto& [t, v] : by_tag) out.push_back(v);
  return out;
}

Result<std::string> TemplateBuilds::assign_tags(const std::string& team, const std::string& target,
                                                const std::vector<std::string>& tags) {
  size_t colon = target.find(':');
  const std::string name = target.substr(0, colon);
  const std::string tag = colon == std::string::npos ? "default" : target.substr(colon + 1);
  for (const auto& t : tags)
    if (!valid_tag(t)) return make_error(ErrorCode::kInvalidArgument, "\"" + t.substr(0, 128) + "\" is not a tag");
  if (!visible(name, team)) return make_error(ErrorCode::kNotFound, "template " + name.substr(0, 128) + " not found");
  std::string id;
  for (const auto& t : this->tags(name))
    if (t.tag == tag) id = t.build_id;
  std::lock_guard lk(mu_);
  auto it = builds_.find(id);
  if (id.empty() || it == builds_.end())
    return make_error(ErrorCode::kNotFound, "template " + target.substr(0, 160) + " has no build built here with that tag");
  for (const auto& t : tags) it->second.tags.push_back(t);
  return id;
}

Status TemplateBuilds::remove_tags(const std::string& team, const std::string& name,
                                   const std::vector<std::string>& tags) {
  if (!visible(name, team)) return make_error(ErrorCode::kNotFound, "template " + name.substr(0, 128) + " not found");
  std::lock_guard lk(mu_);
  for (auto& [id, b] : builds_) {
    if (b.name != name) continue;
    std::erase_if(b.tags, [&](const std::string& t) { return std::find(tags.begin(), tags.end(), t) != tags.end(); });
  }
  return ok();
}

bool TemplateBuilds::take_ready(const std::string& build_id) {
  std::lock_guard lk(mu_);
  auto it = builds_.find(build_id);
  if (it == builds_.end() || it->second.status != "ready" || it->second.ready_taken) return false;
  it->second.ready_taken = true;
  return true;
}

std::string TemplateBuilds::resolve_tag(const std::string& id) const {
  size_t colon = id.find(':');
  if (colon == std::string::npos) return id;
  const std::string name = id.substr(0, colon), tag = id.substr(colon + 1);
  for (const auto& t : tags(name))
    if (t.tag == tag) return name;
  return id;
}

void TemplateBuilds::release(const std::string& name) {
  std::lock_guard lk(mu_);
  if (owners_.erase(name)) {
    if (auto s = save_owners_locked(); !s) {
      COPPICE_LOG(warn) << "template builds: " << s.error().to_string();
    }
  }
}

void TemplateBuilds::forget(const std::string& name) {
  std::lock_guard lk(mu_);
  for (auto it = builds_.begin(); it != builds_.end();) {
    if (it->second.name == name && it->second.status != "building") it = builds_.erase(it);
    else ++it;
  }
}

void TemplateBuilds::log(const std::string& id, const std::string& level, const std::string& msg) {
  std::lock_guard lk(mu_);
  auto it = builds_.find(id);
  if (it == builds_.end() || it->second.lines.size() >= kMaxLogLines) return;
  it->second.lines.push_back({SysClock::now(), level, msg});
}

void TemplateBuilds::run() {
  for (;;) {
    std::string id;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      id = queue_.front();
      queue_.pop_front();
    }
    build_one(id);
  }
}

void TemplateBuilds::finish(const std::string& id, const Status& result) {
  std::lock_guard lk(mu_);
  auto it = builds_.find(id);
  if (it == builds_.end()) return;
  Build& b = it->second;
  const auto now = SysClock::now();
  if (result) {
    b.status = "ready";
    b.lines.push_back({now, "info", "template " + b.name + " is ready"});
    return;
  }
  b.status = "error";
  b.reason = result.error().message();
  // "line N" of the Dockerfile names the SDK's step.
  static const std::regex line_re("line ([0-9]+)");
  std::smatch m;
  if (std::regex_search(b.reason, m, line_re)) {
    size_t line = std::strtoul(m[1].str().c_str(), nullptr, 10);
    if (line >= 1 && line <= b.spec.line_steps.size() && b.spec.line_steps[line - 1] > 0)
      b.step = std::to_string(b.spec.line_steps[line - 1]);
  }
  b.lines.push_back({now, "error", "build failed: " + b.reason});
}

void TemplateBuilds::build_one(const std::string& id) {
  std::string name, team;
  TemplateBuildSpec spec;
  int cpu = 0, mem = 0;
  {
    std::lock_guard lk(mu_);
    auto it = builds_.find(id);
    if (it == builds_.end()) return;
    name = it->second.name;
    team = it->second.team;
    spec = it->second.spec;
    cpu = it->second.cpu_count;
    mem = it->second.memory_mb;
  }
  const std::string work = sys::join_path(dir_, id);
  const std::string context = sys::join_path(work, "context");
  auto say = [&](std::string_view line) { log(id, "info", std::string(line)); };
  auto go = [&]() -> Status {
    COPPICE_TRY(sys::make_dirs(context, 0700));
    // Each upload unpacked where the Dockerfile's COPY looks: <hash>/.
    for (const auto& hash : spec.file_hashes) {
      const std::string tar = sys::join_path(team_dir(team), hash + ".tar");
      if (!sys::path_exists(tar))
        return make_error(ErrorCode::kInvalidArgument, "the files of hash " + hash + " were never uploaded");
      ::utimensat(AT_FDCWD, tar.c_str(), nullptr, 0);
      const std::string into = sys::join_path(context, hash);
      COPPICE_TRY(sys::make_dir(into, 0755));
      // Its listing first (`tar -tv`: mode, owner, size, ...): a tar bomb
      // is refused before anything is written.
      uint64_t bytes = 0, entries = 0;
      std::string odd;  // a member that is not a file, directory or link
      builder::ToolRun list;
      list.argv = {"tar", "-t", "-v", "-f", tar};
      list.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"};
      list.cancel = &cancel_;
      list.progress = [&](std::string_view line) {
        ++entries;
        if (!line.empty() && std::string_view("-dlh").find(line[0]) == std::string_view::npos && odd.empty())
          odd = std::string(line.substr(0, 200));
        size_t i = 0;
        for (int field = 0; field < 2 && i < line.size(); ++field) {
          while (i < line.size() && line[i] != ' ') ++i;
          while (i < line.size() && line[i] == ' ') ++i;
        }
        uint64_t size = 0;
        while (i < line.size() && line[i] >= '0' && line[i] <= '9') size = size * 10 + static_cast<uint64_t>(line[i++] - '0');
        bytes += size;
      };
      COPPICE_TRY_CTX(builder::run_tool(list), "the upload " + hash + " is not a tar archive");
      if (!odd.empty())
        return make_error(ErrorCode::kInvalidArgument, "the upload " + hash +
                                                           " holds a device, a fifo or another special file: " + odd);
      if (bytes > kMaxUnpackedBytes || entries > kMaxUnpackedEntries)
        return make_error(ErrorCode::kInvalidArgument,
                          "the upload " + hash + " unpacks to " + std::to_string(bytes >> 20) + " MiB in " +
                              std::to_string(entries) + " entries, more than a COPY step may (" +
                              std::to_string(kMaxUnpackedBytes >> 20) + " MiB, " +
                              std::to_string(kMaxUnpackedEntries) + " entries)");
      say("unpacking the upload " + hash.substr(0, 12) + " (" + std::to_string(entries) + " entries)");
      // GNU tar drops leading '/' and refuses members with "..", and makes a
      // link that points out of the tree only after everything else, so no
      // member is written through one. Owners are not kept: root's.
      builder::ToolRun untar;
      untar.argv = {"tar", "-x", "-f", tar, "-C", into, "--no-same-owner", "--no-overwrite-dir"};
      untar.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"};
      untar.progress = say;
      untar.cancel = &cancel_;
      COPPICE_TRY_CTX(builder::run_tool(untar), "unpack the upload " + hash);
    }
    const std::string dockerfile = sys::join_path(work, "Dockerfile");
    COPPICE_TRY(sys::write_new_file(dockerfile, spec.dockerfile, 0600));
    builder::ToolRun run;
    run.argv = {cli_, "template", "build", "--templates", registry_.root(), "--dockerfile", dockerfile,
                "--context", context, "--name", name, "--force"};
    // The builder's own reload of the gateway is not wanted: this build
    // reloads once the template is complete, below. A port that nothing
    // serves makes it give up at once.
    run.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "HOME=/root",
               "COPPICE_API_URL=http://127.0.0.1:1", "COPPICE_API_KEY=none"};
    bool skip_next = false;
    run.progress = [&](std::string_view line) {
      if (line.starts_with("coppice: no reload:")) {
        skip_next = true;
        return;
      }
      if (skip_next && line.starts_with("  a gateway started later")) {
        skip_next = false;
        return;
      }
      skip_next = false;
      say(line);
    };
    run.cancel = &cancel_;
    auto built = builder::run_tool(run);
    if (!built) {
      // run_tool quotes the builder's last lines; its own last line (the
      // "coppice: ..." error) says what went wrong.
      std::string msg = built.error().message();
      std::vector<BuildLogLine> lines;
      {
        std::lock_guard lk(mu_);
        auto it = builds_.find(id);
        if (it != builds_.end()) lines = it->second.lines;
      }
      for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
        if (it->message.starts_with("coppice: ")) {
          msg = it->message.substr(9);
          break;
        }
      }
      return make_error(ErrorCode::kInvalidArgument, msg);
    }
    std::map<std::string, std::string> keys;
    if (!spec.start_cmd.empty()) keys["start_cmd"] = templates::toml_quote(spec.start_cmd);
    if (!spec.ready_cmd.empty()) keys["ready_cmd"] = templates::toml_quote(spec.ready_cmd);
    if (cpu > 0) keys["cpu_count"] = std::to_string(cpu);
    if (mem > 0) keys["memory_mb"] = std::to_string(mem);
    if (!keys.empty())
      COPPICE_TRY_CTX(set_toml_keys(sys::join_path(sys::join_path(registry_.root(), name), "template.toml"), keys),
                      "template.toml of " + name);
    COPPICE_TRY_CTX(registry_.reload(), "reload templates");
    if (!registry_.get(name)) return make_error(ErrorCode::kInternal, "the built template " + name + " did not load");
    return ok();
  };
  // The watchdog stops a build that runs past kMaxBuildTime.
  std::mutex done_mu;
  std::condition_variable done_cv;
  bool done = false, timed_out = false;
  std::thread watchdog([&] {
    std::unique_lock lk(done_mu);
    if (!done_cv.wait_for(lk, kMaxBuildTime, [&] { return done; })) {
      timed_out = true;
      cancel_.store(true);
    }
  });
  Status result = go();
  {
    std::lock_guard lk(done_mu);
    done = true;
  }
  done_cv.notify_all();
  watchdog.join();
  if (timed_out) {
    result = make_error(ErrorCode::kDeadlineExceeded, "the build ran longer than " +
                                                          std::to_string(kMaxBuildTime.count()) + " hours and was stopped");
    std::lock_guard lk(mu_);
    if (!stopping_) cancel_.store(false);
  }
  if (result) {
    COPPICE_LOG(info) << "template build " << id << " of " << name << " for team " << team << ": ready";
  } else {
    COPPICE_LOG(info) << "template build " << id << " of " << name << " for team " << team
                      << " failed: " << result.error().message();
  }
  if (auto s = sys::remove_tree(work); !s) {
    COPPICE_LOG(warn) << "template build " << id << ": " << s.error().to_string();
  }
  finish(id, result);
}

}  // namespace coppice::core
