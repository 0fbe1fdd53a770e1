#include "sandbox/ns/uid_ranges.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <vector>

#include "common/sha256.h"
#include "sys/fsutil.h"

namespace coppice::sandbox::ns {

namespace {

constexpr std::string_view kEntrySuffix = ".range";
// An entry is one short line; anything longer is not ours.
constexpr size_t kMaxEntryBytes = 4096;

struct Entry {
  UidRange range;
  pid_t pid = 0;
  std::string state_dir;
};

// Parses "<base> <slots> <pid> <state dir>\n", strictly.
std::optional<Entry> parse_entry(std::string_view text) {
  if (text.empty() || text.back() != '\n') return std::nullopt;
  text.remove_suffix(1);
  Entry e;
  auto number = [&text](auto& out) {
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    if (ec != std::errc() || p == text.data() || p == text.data() + text.size() || *p != ' ') return false;
    text.remove_prefix(static_cast<size_t>(p - text.data()) + 1);
    return true;
  };
  if (!number(e.range.base) || !number(e.range.slots) || !number(e.pid)) return std::nullopt;
  if (text.empty() || text[0] != '/' || text.find('\n') != std::string_view::npos) return std::nullopt;
  if (!uid_range_valid(e.range) || e.pid <= 0) return std::nullopt;
  e.state_dir = text;
  return e;
}

std::string format_entry(const Entry& e) {
  return std::to_string(e.range.base) + " " + std::to_string(e.range.slots) + " " + std::to_string(e.pid) + " " +
         e.state_dir + "\n";
}

std::string entry_name(std::string_view state_dir) {
  return sha256_hex(state_dir).substr(0, 16) + std::string(kEntrySuffix);
}

// Grid points from `from` on where a range of `span` ids still fits.
uint64_t grid_points(uint64_t from, uint64_t span) {
  if (from + span > kUidLimit) return 0;
  return (kUidLimit - from - span) / kIdsPerSlot + 1;
}

// Serialises claims and withdrawals host-wide for as long as it lives.
Result<sys::UniqueFd> lock_registry(const std::string& dir) {
  COPPICE_TRY_CTX(sys::make_dirs(dir, 0755), "uid range registry");
  auto fd = sys::open_file(dir + "/.lock", O_RDWR | O_CREAT | O_NOFOLLOW, 0644);
  if (!fd) return std::unexpected(std::move(fd.error()).context("uid range registry"));
  COPPICE_TRY_CTX(sys::lock_file(fd->get(), dir + "/.lock"), "uid range registry");
  return fd;
}

std::string describe(const Entry& e) {
  return e.range.to_string() + " of the gateway running with state dir " + e.state_dir + " (pid " +
         std::to_string(e.pid) + ")";
}

}  // namespace

std::string UidRange::to_string() const {
  return std::to_string(base) + "-" + std::to_string(end() - 1) + " (" + std::to_string(slots) + " slots)";
}

bool uid_range_valid(const UidRange& r) { return r.base > 0 && r.slots > 0 && r.end() <= kUidLimit; }

uint32_t preferred_uid_base(std::string_view state_dir, uint32_t slots) {
  const uint64_t span = uint64_t(slots) * kIdsPerSlot;
  uint64_t from = kUidFloor + uint64_t(kDefaultStateDirSlots) * kIdsPerSlot;
  uint64_t points = grid_points(from, span);
  if (points == 0) {
    from = kUidFloor;
    points = grid_points(from, span);
  }
  if (points == 0) return kUidFloor;
  const Sha256Digest d = sha256(state_dir);
  uint64_t h = 0;
  for (int i = 0; i < 8; ++i) h = (h << 8) | d[static_cast<size_t>(i)];
  return static_cast<uint32_t>(from + (h % points) * kIdsPerSlot);
}

std::optional<uint32_t> pick_uid_base(uint32_t preferred, uint32_t slots, std::span<const UidRange> taken) {
  const uint64_t span = uint64_t(slots) * kIdsPerSlot;
  if (slots == 0 || grid_points(kUidFloor, span) == 0) return std::nullopt;
  auto align_up = [](uint64_t v) -> uint64_t {
    if (v <= kUidFloor) return kUidFloor;
    return kUidFloor + (v - kUidFloor + kIdsPerSlot - 1) / kIdsPerSlot * kIdsPerSlot;
  };
  const uint64_t start = std::max<uint64_t>(preferred, kUidFloor);
  uint64_t candidate = start;
  bool wrapped = false;
  // Each step moves past the end of a taken range, or wraps around once.
  for (size_t step = 0; step <= 2 * (taken.size() + 1); ++step) {
    if (wrapped && candidate >= start) return std::nullopt;
    if (candidate + span > kUidLimit) {
      if (wrapped) return std::nullopt;
      wrapped = true;
      candidate = kUidFloor;
      continue;
    }
    const UidRange r{static_cast<uint32_t>(candidate), slots};
    uint64_t past = 0;
    for (const UidRange& t : taken) {
      if (r.overlaps(t)) past = std::max(past, t.end());
    }
    if (past == 0) return r.base;
    candidate = align_up(past);
  }
  return std::nullopt;
}

Result<UidRangeLease> claim_uid_range(const UidRangeClaim& c) {
  if (c.state_dir.empty() || c.state_dir[0] != '/') {
    return make_error(ErrorCode::kInvalidArgument, "uid range: state dir must be absolute: " + c.state_dir);
  }
  if (c.slots == 0) return make_error(ErrorCode::kInvalidArgument, "uid range: no slots asked for");
  auto registry = lock_registry(c.registry_dir);
  if (!registry) return std::unexpected(registry.error());

  // Our own entry: locked for as long as this gateway runs.
  const std::string own_name = entry_name(c.state_dir);
  const std::string path = c.registry_dir + "/" + own_name;
  const bool existed = sys::path_exists(path);
  auto own = sys::open_file(path, O_RDWR | O_CREAT | O_NOFOLLOW, 0644);
  if (!own) return std::unexpected(std::move(own.error()).context("uid range"));
  auto mine = sys::try_lock_file(own->get(), true, path);
  if (!mine) return std::unexpected(std::move(mine.error()).context("uid range"));
  std::optional<Entry> previous;
  if (existed) {
    auto text = sys::read_all_limited(own->get(), path, kMaxEntryBytes);
    if (text) previous = parse_entry(*text);
    if (previous && previous->state_dir != c.state_dir) previous.reset();
  }
  // A gateway killed with SIGKILL releases its lock only once every process
  // holding a copy of its fd table is gone too: a sandbox child caught
  // between clone and exec, a helper. They go within moments (longer on a
  // loaded host); a live gateway never lets go. Give them 3 s, or 30 s when
  // the gateway that wrote the entry is gone.
  const bool writer_gone = previous && previous->pid > 0 && ::kill(previous->pid, 0) != 0 && errno == ESRCH;
  const int tries = writer_gone ? 600 : 60;
  for (int i = 0; i < tries && !*mine; ++i) {
    ::usleep(50000);
    mine = sys::try_lock_file(own->get(), true, path);
    if (!mine) return std::unexpected(std::move(mine.error()).context("uid range"));
  }
  if (!*mine) {
    return make_error(ErrorCode::kAlreadyExists,
                      "uid range: another gateway" + (previous ? " (pid " + std::to_string(previous->pid) + ")" : "") +
                          " is running with state dir " + c.state_dir);
  }
  // A failed claim leaves no entry it made.
  struct Undo {
    const std::string& path;
    bool armed;
    ~Undo() {
      if (armed) (void)sys::remove_file(path);
    }
  } undo{path, !existed};

  // Everyone else's: live (locked) entries are taken; stale ones are noted,
  // or removed once their state dir is gone.
  std::vector<Entry> live, stale;
  auto names = sys::list_dir(c.registry_dir);
  if (!names) return std::unexpected(std::move(names.error()).context("uid range registry"));
  for (const std::string& name : *names) {
    if (name == own_name || !name.ends_with(kEntrySuffix)) continue;
    const std::string p = c.registry_dir + "/" + name;
    auto fd = sys::open_file(p, O_RDONLY | O_NOFOLLOW);
    if (!fd) {
      if (fd.error().sys_errno() == ENOENT) continue;
      return std::unexpected(std::move(fd.error()).context("uid range registry"));
    }
    auto free = sys::try_lock_file(fd->get(), false, p);
    if (!free) return std::unexpected(std::move(free.error()).context("uid range registry"));
    auto text = sys::read_all_limited(fd->get(), p, kMaxEntryBytes);
    auto e = text ? parse_entry(*text) : std::nullopt;
    if (!*free) {
      if (!e) return make_error(ErrorCode::kInternal, "uid range registry: unreadable entry of a running gateway: " + p);
      live.push_back(std::move(*e));
    } else if (!e || !sys::path_exists(e->state_dir)) {
      (void)sys::remove_file(p);
    } else {
      stale.push_back(std::move(*e));
    }
  }
  auto overlapping = [&](const UidRange& r) -> const Entry* {
    for (const Entry& e : live) {
      if (e.range.overlaps(r)) return &e;
    }
    return nullptr;
  };

  Entry entry{{0, c.slots}, ::getpid(), c.state_dir};
  if (c.fixed_base || previous) {
    entry.range.base = c.fixed_base ? *c.fixed_base : previous->range.base;
    if (!uid_range_valid(entry.range)) {
      return make_error(ErrorCode::kInvalidArgument, "uid range " + std::to_string(entry.range.base) + " + " +
                                                         std::to_string(c.slots) + " slots is past the last host uid");
    }
    if (const Entry* other = overlapping(entry.range)) {
      const std::string why = c.fixed_base ? "pick another --uid-base or fewer --uid-slots"
                                           : "the sandboxes this state dir's last gateway left use it";
      return make_error(ErrorCode::kFailedPrecondition,
                        "uid range " + entry.range.to_string() + " overlaps " + describe(*other) + ": " + why);
    }
  } else {
    std::vector<UidRange> taken;
    for (const Entry& e : live) taken.push_back(e.range);
    for (const Entry& e : stale) taken.push_back(e.range);
    auto base = pick_uid_base(c.preferred_base, c.slots, taken);
    if (!base) {
      // Ranges of dead gateways are reused only when nothing else is free.
      taken.resize(live.size());
      base = pick_uid_base(c.preferred_base, c.slots, taken);
    }
    if (!base) {
      return make_error(ErrorCode::kResourceExhausted,
                        "uid range: no free range of " + std::to_string(c.slots) + " slots beside the " +
                            std::to_string(live.size()) + " running gateways' (lower --uid-slots)");
    }
    entry.range.base = *base;
  }
  COPPICE_TRY_CTX(sys::write_new_file(path, format_entry(entry), 0644), "uid range registry");
  undo.armed = false;

  UidRangeLease lease;
  lease.range_ = entry.range;
  lease.registry_dir_ = c.registry_dir;
  lease.path_ = path;
  lease.fd_ = std::move(*own);
  return lease;
}

Status UidRangeLease::withdraw() {
  if (!fd_) return ok();
  auto registry = lock_registry(registry_dir_);
  if (!registry) return std::unexpected(registry.error());
  COPPICE_TRY_CTX(sys::remove_file(path_), "uid range registry");
  fd_.reset();
  return ok();
}

}  // namespace coppice::sandbox::ns
