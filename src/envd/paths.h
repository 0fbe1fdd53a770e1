// How envd turns a path from a request into the absolute path it acts on.
// The rules are those of E2B's envd (permissions.ExpandAndResolve), so a
// client sees the same file whichever envd it talks to:
//
//   ""            the default workdir (set by /init), itself resolved by the
//                 rules below; with no default workdir, the user's home
//   "~", "~/x"    the requesting user's home, "<home>/x"
//   "~name/..."   refused: only the requesting user's own home is expanded
//   "x/y"         "<home>/x/y": relative to the requesting user's home, never
//                 to the default workdir
//   "/x/y"        itself
//
// The result is absolute and lexically clean ("..", "." and "//" collapsed;
// ".." never climbs above "/"). A path containing a NUL byte is refused
// rather than cut short where a syscall would stop reading it.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::envd {

// Lexically cleans a path into an absolute one: collapses "//", ".", "..";
// a relative path is taken as relative to "/".
std::string clean_path(std::string_view path);

// kInvalidArgument when `path` holds a NUL byte (it cannot name a file, and
// every syscall would silently read only the part before it). `what` names
// the field in the message.
Status check_no_nul(std::string_view path, std::string_view what);

// Resolves `path` for a user whose home is `home`, with `default_workdir`
// ("" for none) standing in for an empty path. Fails with kInvalidArgument
// for a NUL byte or a "~name" form; never touches the file system.
Result<std::string> resolve_user_path(std::string_view path, std::string_view home,
                                      std::string_view default_workdir);

}  // namespace coppice::envd
