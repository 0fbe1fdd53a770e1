// The host-wide registry of gateways' uid ranges, in a registry dir of the
// test's own: choice of ranges, refusal of overlaps with live gateways,
// stale entries of dead ones. Needs no root (flock works for anyone).
#include "sandbox/ns/uid_ranges.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/test_temp_dir.h"

namespace coppice::sandbox::ns {
namespace {

namespace fs = std::filesystem;
using test_util::TempDir;

constexpr uint64_t kSlot = kIdsPerSlot;

TEST(UidRanges, PickTakesThePreferredBaseWhenFree) {
  EXPECT_EQ(pick_uid_base(kUidFloor, 16, {}), kUidFloor);
  const uint32_t p = kUidFloor + 100 * kSlot;
  std::vector<UidRange> taken{{kUidFloor, 50}};
  EXPECT_EQ(pick_uid_base(p, 16, taken), p);
}

TEST(UidRanges, PickSkipsPastTakenRangesOnTheGrid) {
  // A taken range that is not on the grid pushes the next candidate up to
  // the grid point after its end.
  std::vector<UidRange> taken{{kUidFloor, 10}, {uint32_t(kUidFloor + 10 * kSlot + 5), 3}};
  EXPECT_EQ(pick_uid_base(kUidFloor, 4, taken), kUidFloor + 14 * kSlot);
  // Each choice is clear of all of them.
  auto b = pick_uid_base(kUidFloor + 2 * kSlot, 4, taken);
  ASSERT_TRUE(b.has_value());
  for (const auto& t : taken) EXPECT_FALSE((UidRange{*b, 4}).overlaps(t));
}

TEST(UidRanges, PickWrapsAroundAndReportsAFullSpace) {
  const uint32_t all = uint32_t((kUidLimit - kUidFloor) / kSlot);
  // The top of the space is taken: the search wraps to the floor.
  const uint32_t top = uint32_t(kUidFloor + (all - 10) * kSlot);
  std::vector<UidRange> taken{{top, 10}};
  EXPECT_EQ(pick_uid_base(top, 5, taken), kUidFloor);
  // Everything taken but a gap of 3 slots: 3 fit, 4 do not.
  taken = {{kUidFloor, 100}, {uint32_t(kUidFloor + 103 * kSlot), all - 103}};
  EXPECT_EQ(pick_uid_base(kUidFloor + 500 * kSlot, 3, taken), kUidFloor + 100 * kSlot);
  EXPECT_EQ(pick_uid_base(kUidFloor + 500 * kSlot, 4, taken), std::nullopt);
  // More slots than ids exist.
  EXPECT_EQ(pick_uid_base(kUidFloor, all + 1, {}), std::nullopt);
}

TEST(UidRanges, PreferredBaseIsStableOnTheGridAndClearOfTheDefaultRange) {
  const uint32_t a = preferred_uid_base("/tmp/coppice-gw-a", 256);
  EXPECT_EQ(a, preferred_uid_base("/tmp/coppice-gw-a", 256));
  EXPECT_NE(a, preferred_uid_base("/tmp/coppice-gw-b", 256));
  EXPECT_EQ((a - kUidFloor) % kSlot, 0u);
  EXPECT_GE(uint64_t(a), kUidFloor + uint64_t(kDefaultStateDirSlots) * kSlot);
  EXPECT_TRUE(uid_range_valid({a, 256}));
  // A range too large to stay clear of the default one still fits somewhere.
  const uint32_t big = preferred_uid_base("/tmp/x", 50000);
  EXPECT_TRUE(uid_range_valid({big, 50000}));
}

class UidRangeRegistryTest : public ::testing::Test {
 protected:
  UidRangeClaim claim(const std::string& name, uint32_t slots = 64) {
    fs::create_directories(dir_.path() / name);
    UidRangeClaim c;
    c.registry_dir = (dir_.path() / "registry").string();
    c.state_dir = (dir_.path() / name).string();
    c.slots = slots;
    c.preferred_base = preferred_uid_base(c.state_dir, slots);
    return c;
  }
  std::vector<std::string> entries() {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_.path() / "registry")) {
      if (e.path().extension() == ".range") out.push_back(e.path().filename().string());
    }
    return out;
  }
  static std::string slurp(const fs::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  TempDir dir_{"coppice-uidranges"};
};

TEST_F(UidRangeRegistryTest, TwoGatewaysGetDisjointRanges) {
  auto a = claim_uid_range(claim("a"));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  // b prefers a's spot: it gets the next free one instead.
  auto cb = claim("b");
  cb.preferred_base = a->range().base;
  auto b = claim_uid_range(cb);
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  EXPECT_FALSE(a->range().overlaps(b->range()));
  EXPECT_EQ(b->range().base, a->range().base + 64 * kSlot);
  // The entries say who holds what.
  ASSERT_EQ(entries().size(), 2u);
  bool found = false;
  for (const auto& n : entries()) {
    std::string text = slurp(dir_.path() / "registry" / n);
    if (text.find(" " + (dir_.path() / "a").string() + "\n") == std::string::npos) continue;
    found = true;
    EXPECT_EQ(text, std::to_string(a->range().base) + " 64 " + std::to_string(::getpid()) + " " +
                        (dir_.path() / "a").string() + "\n");
  }
  EXPECT_TRUE(found);
}

TEST_F(UidRangeRegistryTest, OneGatewayPerStateDir) {
  auto a = claim_uid_range(claim("a"));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  auto again = claim_uid_range(claim("a"));
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(again.error().message().find("pid " + std::to_string(::getpid())), std::string::npos)
      << again.error().message();
}

TEST_F(UidRangeRegistryTest, AFixedRangeOverlappingALiveGatewayIsRefused) {
  auto a = claim_uid_range(claim("a"));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  auto cb = claim("b");
  cb.fixed_base = a->range().base + 10 * kSlot;
  auto b = claim_uid_range(cb);
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code(), ErrorCode::kFailedPrecondition);
  const std::string& m = b.error().message();
  EXPECT_NE(m.find("overlaps"), std::string::npos) << m;
  EXPECT_NE(m.find((dir_.path() / "a").string()), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << "one line";
  EXPECT_EQ(entries().size(), 1u) << "a refused claim adds no entry";
  // Right after a's range it fits.
  cb.fixed_base = a->range().base + 64 * kSlot;
  EXPECT_TRUE(claim_uid_range(cb).has_value());
}

TEST_F(UidRangeRegistryTest, ADeadGatewaysEntryDoesNotBlock) {
  auto ca = claim("a");
  ca.fixed_base = kUidFloor + 1000 * kSlot;
  // A gateway process that registers and dies.
  pid_t pid = ::fork();
  if (pid == 0) _exit(claim_uid_range(ca).has_value() ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(entries().size(), 1u);

  // Its range is avoided while another is free ...
  auto cb = claim("b");
  cb.preferred_base = *ca.fixed_base;
  auto b = claim_uid_range(cb);
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  EXPECT_FALSE(b->range().overlaps({*ca.fixed_base, 64}));
  // ... but a fixed range may take it,
  auto cc = claim("c");
  cc.fixed_base = *ca.fixed_base;
  auto c = claim_uid_range(cc);
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  // and the dead gateway's state dir, started again, is refused: the range
  // its sandboxes use is now someone else's.
  auto again = claim_uid_range(claim("a"));
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), ErrorCode::kFailedPrecondition);
}

// A gateway killed while a process of its own still holds its fds (a
// helper waiting on criu, a child before exec): the restart waits for that
// process to go rather than refusing the state dir after 3 s.
TEST_F(UidRangeRegistryTest, ARestartWaitsForTheLeftoversOfAKilledGateway) {
  auto ca = claim("a");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    auto lease = claim_uid_range(ca);
    if (!lease) _exit(1);
    if (::fork() == 0) {  // holds the gateway's fds (its lock) for 4.5 s
      ::usleep(4500000);
      _exit(0);
    }
    (void)!::write(ready[1], "r", 1);
    _exit(0);
  }
  ::close(ready[1]);
  char b;
  ASSERT_EQ(::read(ready[0], &b, 1), 1);
  ::close(ready[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto again = claim_uid_range(ca);
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
}

TEST_F(UidRangeRegistryTest, AStateDirGetsItsRangeBackUntilItWithdraws) {
  auto ca = claim("a");
  ca.fixed_base = kUidFloor + 3000 * kSlot;
  uint32_t first = 0;
  {
    auto a = claim_uid_range(ca);
    ASSERT_TRUE(a.has_value()) << a.error().to_string();
    first = a->range().base;
  }  // the gateway exits leaving sandboxes: the entry stays, stale
  auto a2 = claim_uid_range(claim("a"));  // no --uid-base this time
  ASSERT_TRUE(a2.has_value()) << a2.error().to_string();
  EXPECT_EQ(a2->range().base, first);
  ASSERT_TRUE(a2->withdraw().has_value());
  EXPECT_TRUE(entries().empty());
  EXPECT_TRUE(a2->withdraw().has_value());  // idempotent
  // Withdrawn: the next start chooses afresh.
  auto a3 = claim_uid_range(claim("a"));
  ASSERT_TRUE(a3.has_value()) << a3.error().to_string();
  EXPECT_EQ(a3->range().base, preferred_uid_base((dir_.path() / "a").string(), 64));
}

TEST_F(UidRangeRegistryTest, StaleEntriesOfRemovedStateDirsAreSwept) {
  auto ca = claim("gone");
  {
    auto a = claim_uid_range(ca);
    ASSERT_TRUE(a.has_value()) << a.error().to_string();
  }
  fs::remove_all(ca.state_dir);
  // Garbage that is nobody's is swept too.
  std::ofstream(dir_.path() / "registry" / "0123456789abcdef.range") << "not an entry";
  ASSERT_EQ(entries().size(), 2u);
  auto b = claim_uid_range(claim("b"));
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  EXPECT_EQ(entries().size(), 1u);
}

TEST_F(UidRangeRegistryTest, ARangePastTheLastUidIsRefused) {
  auto c = claim("a", 100);
  c.fixed_base = uint32_t(kUidLimit - 50 * kSlot);
  auto r = claim_uid_range(c);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(entries().empty());
}

}  // namespace
}  // namespace coppice::sandbox::ns
