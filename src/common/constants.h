// Constants of the E2B contract and of every sandbox, each with one home.
#pragma once

#include <cstdint>
#include <string_view>

namespace coppice {

// envd's port: what the SDK sends as E2b-Sandbox-Port for envd traffic
// (Sandbox.envdPort), and what envd listens on when it serves TCP.
inline constexpr uint16_t kEnvdPort = 49983;
// The code interpreter's port (@e2b/code-interpreter's JUPYTER_PORT).
inline constexpr uint16_t kInterpPort = 49999;

// The envd protocol version reported to the SDK. The SDK gates features on
// it (e2b-protocol.md §3.5) and throws on anything that is not semver.
inline constexpr std::string_view kEnvdVersion = "0.6.13";

// PATH of every process started in a sandbox, by a template's tools and by
// the builder when the environment names none: Debian's default for root.
// (A macro too, for text assembled from string literals.)
#define COPPICE_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
inline constexpr std::string_view kDefaultPath = COPPICE_DEFAULT_PATH;

}  // namespace coppice
