#include "envd/files.h"

namespace coppice::envd {
asio::awaitable<void> handle_files(Envd& envd, http::Exchange& ex) {
  co_await ex.respond_json(501, rest_error(501, "not yet"));
}
std::string file_signature(std::string_view, std::string_view, std::string_view, std::string_view, std::optional<int64_t>) { return {}; }
}  // namespace coppice::envd
