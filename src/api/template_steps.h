// The build an E2B SDK asks for (`Template.build()`: the body of
// POST /v2/templates/{templateID}/builds/{buildID}) as a Dockerfile for the
// image builder (builder/image_build.h), which runs it: the base image, the
// steps, the start and ready commands.
//
// Honoured steps: RUN (its optional user), COPY (from the files the SDK
// uploaded, by hash: the Dockerfile copies from <hash>/<src> in the build
// context, where the build unpacks each upload), ENV, WORKDIR and USER.
// Anything else the SDK can send is refused with kInvalidArgument naming it
// and its step (numbered from 1, as the SDK numbers them): another step
// type, a template as the base (fromTemplate), registry credentials
// (fromImageRegistry), a base that is not a registry reference. Nothing is
// silently ignored. Pure: no I/O.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/result.h"
#include "core/template_builds.h"

namespace coppice::api {

// A failed step's number is in the error's message ("step 3: ...").
Result<core::TemplateBuildSpec> translate_sdk_build(const nlohmann::json& body);

}  // namespace coppice::api
