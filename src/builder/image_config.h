// What an OCI image's configuration says about how to run it, mapped onto a
// template: Env -> env, WorkingDir -> workdir, User -> user, Entrypoint and
// Cmd -> start command (image_build.h writes them to template.toml).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coppice::builder {

struct ImageConfig {
  std::vector<std::string> env;         // "K=V", image order, later names win
  std::string workdir;                  // absolute, or empty
  std::string user;                     // "name", "uid", "name:group", "uid:gid", or empty
  std::vector<std::string> entrypoint;  // exec form
  std::vector<std::string> cmd;         // exec form
  std::string architecture;             // "amd64", ...; empty when not given
  std::string os;                       // "linux", ...
};

// Parses an OCI (or Docker) image configuration blob. Missing fields are
// empty; a field of the wrong type or an Env entry without '=' is an error
// naming it. Unknown fields are ignored (images carry many).
Result<ImageConfig> parse_image_config(std::string_view json_text);

// The start command of a container of the image, as a /bin/sh command line:
// Entrypoint followed by Cmd (Docker's rule; either may be empty). Empty when
// both are.
std::string start_command(const std::vector<std::string>& entrypoint, const std::vector<std::string>& cmd);

// The Go architecture name of this machine ("amd64", "arm64", ...).
std::string host_architecture();

// Sets `name=value` in a "K=V" list, replacing an earlier value of the name
// in place or appending.
void set_env(std::vector<std::string>& env, const std::string& name, const std::string& value);

}  // namespace coppice::builder
