// Which of a caller's request headers carry its gateway credentials: the
// proxy never forwards those into a sandbox. Whoever is root in a sandbox can
// put a listener of their own behind envd's socket or any port, and would
// read every header that reaches it; an API key taken there opens every
// sandbox of its owner.
#pragma once

#include <string_view>

#include "http/server.h"

namespace coppice::proxy {

// True when the header `name: value` of `ex` is a gateway credential and must
// not be forwarded to port `port` of a sandbox:
//  - X-API-KEY and E2B-Traffic-Access-Token, always (only the gateway reads them);
//  - Authorization to envd unless its scheme is Basic: envd reads only
//    `Basic base64(user:)`, the user a request acts as (its own secret is
//    X-Access-Token, which passes);
//  - Authorization to any other port when it carries an API key (a Bearer
//    token shaped like one, or equal to the request's X-API-KEY). Any other
//    Authorization is the business of the program listening on that port.
bool is_gateway_credential(const http::Exchange& ex, std::string_view name, std::string_view value, uint16_t port);

}  // namespace coppice::proxy
