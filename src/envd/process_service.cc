#include "envd/process_service.h"

namespace coppice::envd {
class ProcessTable {};
ProcessService::ProcessService(Envd& envd) : envd_(envd) {}
ProcessService::~ProcessService() = default;
void ProcessService::register_routes(connect::Router&) {}
void ProcessService::kill_all() {}
}  // namespace coppice::envd
