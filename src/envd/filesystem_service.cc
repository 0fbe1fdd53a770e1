#include "envd/filesystem_service.h"

namespace coppice::envd {
struct FilesystemService::Impl {};
FilesystemService::FilesystemService(Envd& envd) : envd_(envd), impl_(std::make_unique<Impl>()) {}
FilesystemService::~FilesystemService() = default;
void FilesystemService::register_routes(connect::Router&) {}
}  // namespace coppice::envd
