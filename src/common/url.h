// Percent-encoding (RFC 3986) and query strings: the one copy for the
// gateway, envd, the interpreter and the CLI.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace coppice {

// Percent-decodes a URL component; '+' stays '+' unless `form` is true.
// A '%' not followed by two hex digits is kept as it is.
std::string url_decode(std::string_view s, bool form = false);
// Percent-encodes every byte but ASCII letters, digits, RFC 3986's unreserved
// "-._~" and the characters of `also_safe`.
std::string url_encode(std::string_view s, std::string_view also_safe = "");
// Parses "a=1&b=2" (form-decoding keys and values). Repeated keys keep the last value.
std::map<std::string, std::string> parse_query(std::string_view query);

}  // namespace coppice
