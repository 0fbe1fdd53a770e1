#include "sandbox/ns/layer_copy.h"

#include "sys/tree_copy.h"

namespace coppice::sandbox::ns {

LayerCopyKind layer_copy_kind(const DiskQuota* disk, const std::string& dir) {
  if (disk) return LayerCopyKind::kSnapshot;
  return sys::can_reflink(dir) ? LayerCopyKind::kReflink : LayerCopyKind::kPlainCopy;
}

std::string_view describe(LayerCopyKind kind) {
  switch (kind) {
    case LayerCopyKind::kSnapshot: return "btrfs snapshots (O(1) whatever a layer holds)";
    case LayerCopyKind::kReflink: return "file-by-file copies with reflinked data (no btrfs quotas here)";
    case LayerCopyKind::kPlainCopy:
      return "file-by-file copies of the data (this file system has no reflinks: a copy costs what the layer holds)";
  }
  return "unknown";
}

Status snapshot_layer(const DiskQuota* disk, const std::string& src_state_dir, const std::string& dst_state_dir,
                      bool readonly) {
  if (disk) return disk->snapshot_layer(src_state_dir, dst_state_dir, readonly);
  auto copied = sys::copy_tree(src_state_dir, dst_state_dir);
  if (!copied) return std::unexpected(std::move(copied.error()).context("copy layer " + src_state_dir));
  return ok();
}

}  // namespace coppice::sandbox::ns
