// The zero-build `base` template, derived from the host's own system.
//
// A fresh machine serves its first sandbox without building anything: the
// sandbox sees the host's /usr read-only (bind mount) under a small private
// root that has its own identity files (/etc/passwd, hosts, ...) and copies of
// only the harmless host configuration programs need to run (the dynamic
// loader cache, CA certificates, time zone, ...). Nothing that identifies or
// authenticates the host is copied: no shadow files, sudoers, SSH or TLS
// private keys, machine-id, or any file the host keeps from other users.
// Its own sudoers give `user` passwordless sudo (as on E2B), with a PAM
// policy of its own (etc/pam.d/other); sudo itself comes from the host's /usr.
//
// Layout produced under <templates_root>/base/:
//   rootfs/            mount points (usr proc sys dev tmp run mnt opt srv var/*
//                      root home/user), merged-usr symlinks (bin -> usr/bin ...)
//                      and etc/
//   template.toml      backend, ro_binds, cpu_count, memory_mb, source, build_id
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coppice::templates {

inline constexpr std::string_view kHostTemplateName = "base";
// Bumped whenever what ensure_host_template() generates changes in a way a
// sandbox sees (2: sudo for `user`; 3: R's and the JDKs' /etc); an older
// template is generated again.
inline constexpr int64_t kHostTemplateGeneration = 3;

// The identity files every template gets, whatever it is made from: nothing
// of the host's (its name, its resolver) reaches a sandbox.
inline constexpr const char* kSandboxHosts =
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n";
inline constexpr const char* kSandboxResolvConf =
    "# Placeholder: sandboxes have loopback-only networking, so no resolver is\n"
    "# reachable. The network setup replaces this file when it gives a sandbox\n"
    "# a real resolver.\n"
    "nameserver 127.0.0.1\n";
inline constexpr const char* kSandboxHostname = "sandbox\n";

struct HostTemplateOptions {
  // The system the template is derived from. "/" in production; tests point
  // it at a fake tree to check what is and is not copied.
  std::string host_root = "/";
};

// Creates <templates_root>/base unless it already exists, and returns its
// path. The tree is built in <templates_root>/.base.tmp-<pid> and renamed into
// place, so a reader sees either no template or a complete one, and a failed
// build leaves nothing behind. A second call (in this or another process) is
// a no-op; remove the directory to rebuild it, e.g. after a host upgrade.
//
// Run as root in production: home/user must be owned by uid/gid 1000. Without
// the privilege to chown, the ownership step is skipped with a warning so the
// rest of the tree can still be built and checked.
Result<std::string> ensure_host_template(const std::string& templates_root,
                                         const HostTemplateOptions& opts = {});

// True for file names that must never be copied from the host into a
// template: shadow files, sudoers, SSH configuration and keys, private key
// directories and files, machine-id.
bool is_host_secret_name(std::string_view name);

}  // namespace coppice::templates
