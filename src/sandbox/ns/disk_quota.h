// Per-sandbox disk quotas: the sandboxes' state dirs (overlay upper and work,
// run/, envd.log) live on a file system that caps each one.
//
// Why btrfs: this kernel's XFS has no quota support ("quota support not
// available in this kernel" at a prjquota mount), ext4 project quotas have no
// reflinks or snapshots, and the durable lifecycle (pause to disk, snapshot,
// fork) wants cheap copies of a writable layer. On btrfs each state dir is a
// subvolume: a snapshot of it is O(1), and a simple quota (kernel 6.7+,
// usage charged to the subvolume that wrote each extent, no back-reference
// walks) caps it. A write past the cap fails with EDQUOT inside that sandbox
// only; the store (SQLite, beside the state dirs on the host's own file
// system), the gateway and other sandboxes go on. Subvolume ids are handed
// out by the kernel and never reused on a file system, so two sandboxes never
// share a quota group; a removed subvolume's group goes with it.
//
// Where: when the sandboxes' dir (<state>/sandboxes) is already on btrfs with
// quotas on, it is used in place. Otherwise the gateway keeps a sparse image
// file (<state>/disk.img), made once with mkfs.btrfs, attached to a loop
// device (autoclear: it detaches once unmounted) and mounted on the
// sandboxes' dir, so the trash (trash.h) and the spare skeletons (spares.h),
// which live there too, are renamed within one file system. The mount
// outlives the gateway process (sandboxes survive a restart, kill -9
// included); the next start finds it, or mounts the image again.
//
// Thread-safe after open(): every method works on paths and the kernel only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::sandbox::ns {

struct DiskQuotaOptions {
  // Where the sandboxes' state dirs live (made if missing): <state>/sandboxes.
  std::string dir;
  // The image mounted on `dir` when its file system has no quotas:
  // <state>/disk.img. Never on `dir` itself.
  std::string image;
  // Size of the image. 0: a new image gets a quarter of the space free where
  // it is made (at least kMinImageBytes) and an existing one keeps its size.
  // Larger than an existing image: the image and its file system grow (at
  // start, also while mounted). Smaller: refused (no shrinking).
  uint64_t image_bytes = 0;
};

// btrfs refuses smaller file systems (its default layout needs ~114 MiB).
constexpr uint64_t kMinImageBytes = 256ull << 20;

class DiskQuota {
 public:
  // Makes sure `dir` enforces quotas as described above. Needs root. Fails
  // (leaving no loop device or mount behind) when the file system cannot be
  // made or mounted, or when `dir` must be mounted over but holds state dirs
  // (sandboxes of a run without quotas: they would be hidden).
  static Result<std::unique_ptr<DiskQuota>> open(const DiskQuotaOptions& opts);
  ~DiskQuota() = default;
  DiskQuota(const DiskQuota&) = delete;
  DiskQuota& operator=(const DiskQuota&) = delete;

  // Creates `state_dir` (in `dir`) as an empty subvolume, mode 0700, whose
  // usage counts against its own quota. EEXIST if the name is taken.
  Status make_layer(const std::string& state_dir) const;

  // Makes `dst_state_dir` (in `dir`, must not exist: EEXIST) a copy of the
  // layer `src_state_dir` (made by make_layer or by this) as a btrfs
  // snapshot: one ioctl, O(1) whatever the layer holds, read-only when
  // `readonly`. The copy is a subvolume with a quota group of its own, so
  // what it writes from then on counts against its own quota; it has no cap
  // until set_limit gives it one. Copy a layer nobody writes to meanwhile
  // (a frozen sandbox's) for one consistent moment.
  //
  // What used() says afterwards, under simple quotas (measured in
  // tests/integration/layer_copy_itest.cc): an extent stays charged to the
  // subvolume that wrote it. So the snapshot starts near 0 however much the
  // source holds, and then counts only what it writes itself; the source
  // keeps its figure, and keeps it even after it deletes or overwrites
  // files the snapshot still shares (the space is still in use). The
  // source's charge falls once no copy refers to those extents any more.
  // (With full quota groups, `btrfs quota enable`, both would show the
  // shared bytes as referenced.)
  Status snapshot_layer(const std::string& src_state_dir, const std::string& dst_state_dir, bool readonly) const;

  // Caps `state_dir` (made by make_layer, perhaps renamed since) at `bytes`;
  // 0 removes the cap. One ioctl.
  Status set_limit(const std::string& state_dir, uint64_t bytes) const;

  // Bytes charged to `state_dir`'s quota (what it holds, writes not yet
  // committed included), from quota accounting: no walk of its files. Data
  // written back to the image but not yet committed is in neither figure, so
  // the answer can fall short for up to a commit interval (5 s).
  Result<uint64_t> used(const std::string& state_dir) const;

  // kResourceExhausted (ENOSPC) naming the file system when less than
  // `min_free` bytes are left for all sandboxes together: a create fails
  // with that, not with a mount error.
  Status check_room(uint64_t min_free = 16ull << 20) const;

  // How the quotas are provided, for the start-up log line.
  const std::string& describe() const { return describe_; }
  // Whether `dir` is the mount of our image (else quotas are in place).
  bool image_mounted() const { return image_mounted_; }

  // Unmounts the image from `dir` (lazily if something still holds it: the
  // loop device detaches once the last user goes). For a clean exit with no
  // sandbox left. Nothing to do when the quotas are in place.
  Status unmount() const;

 private:
  DiskQuota() = default;
  std::string dir_, fsid_, describe_;
  bool image_mounted_ = false;
};

// Parses a size: digits with an optional K, M, G or T suffix (powers of
// 1024; "512M", "20G", "1048576"). kInvalidArgument otherwise.
Result<uint64_t> parse_size(std::string_view s);

}  // namespace coppice::sandbox::ns
