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

namespace coppice::api {

struct SdkBuild {
  std::string dockerfile;                // FROM <image> + one or more lines per step
  std::vector<std::string> file_hashes;  // the COPY steps' uploads (64 hex), each once
  std::string start_cmd;                 // empty: none
  std::string ready_cmd;                 // empty: none
  // The SDK's step number of each Dockerfile line (index 0: line 1); 0 for
  // the base image and what follows the last step.
  std::vector<size_t> line_steps;
};

// A failed step's number is in the error's message ("step 3: ...").
Result<SdkBuild> translate_sdk_build(const nlohmann::json& body);

// Whether `s` is what the SDK sends as a file hash: 64 lowercase hex digits.
bool valid_files_hash(std::string_view s);

}  // namespace coppice::api
