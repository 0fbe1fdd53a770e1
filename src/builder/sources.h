// The apt sources a template is built from.
//
// By default a build uses the host's own apt sources, so it works wherever
// the host's apt works (a mirror, a proxy, a snapshot). They name the host's
// release; a recipe for another release gets the same archives with the
// release names swapped (bookworm, bookworm-updates, bookworm-security ->
// trixie, trixie-updates, trixie-security).
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::builder {

// Where the host's sources are: the deb822 file Debian installs, else the
// classic one-line list.
inline constexpr const char* kHostDeb822Sources = "/etc/apt/sources.list.d/debian.sources";
inline constexpr const char* kHostListSources = "/etc/apt/sources.list";

// The first of kHostDeb822Sources and kHostListSources that exists; empty if
// neither does.
std::string default_host_sources();

// `text` (deb822 when `deb822`, else one-line format) with its releases
// changed to `suite`. The release is the first suite named in the file; a
// suite that is that release or starts with "<release>-" is rewritten, others
// (e.g. a PPA's own names) are kept. Unchanged when the file already names
// `suite` first, or names no suite at all.
std::string retarget_sources(std::string_view text, bool deb822, const std::string& suite);

}  // namespace coppice::builder
