// What the builder adds to a tree after the packages: the accounts every
// template has, the sandbox's own identity files and the recipe's files.
//
// All of it is written by a child process confined to the tree with
// chroot(2), so every path (including symlinks the packages put there, such
// as absolute ones under /etc/alternatives) resolves inside the tree and
// never on the host.
#pragma once

#include <string>
#include <vector>

#include "builder/recipe.h"
#include "common/result.h"

namespace coppice::builder {

// The unprivileged account every sandbox runs its commands as (E2B's "user").
inline constexpr unsigned kUserUid = 1000;
inline constexpr unsigned kUserGid = 1000;

// In the tree at `rootfs` (as root):
//  - accounts: root (uid 0, home /root) and user (uid/gid 1000, home
//    /home/user owned by it, with /etc/skel's files) in /etc/passwd and
//    /etc/group, and in /etc/shadow and /etc/gshadow when the tree has them,
//    login disabled; entries the packages made are kept. A different account
//    already holding uid 1000 or the name `user` is an error;
//  - identity: /etc/hostname "sandbox", /etc/hosts for localhost, a
//    placeholder /etc/resolv.conf and an empty /etc/machine-id, replacing
//    what the build copied from the host;
//  - `entries` (from list_added_entries), in order, replacing what is there.
// Files are replaced by new inodes, never written in place, so a tree whose
// files are hard links shared with other trees can be edited.
Status edit_tree(const std::string& rootfs, const std::vector<AddedEntry>& entries);

// Only the entries, confined the same way (a Dockerfile's COPY and WORKDIR).
Status add_entries(const std::string& rootfs, const std::vector<AddedEntry>& entries);

// Merges an account line ("name:x:...") into a passwd-style file's text:
// unchanged if an entry of that name exists with the same id (field 3), an
// error if the name or the id belongs to another entry; appended otherwise.
// `id_field` is the index of the numeric id (2 for passwd and group), or -1
// for files without ids (shadow, gshadow).
Result<std::string> merge_account(const std::string& text, const std::string& line, int id_field);

}  // namespace coppice::builder
