// What a client of POST /execute reads: one JSON object per line (NDJSON),
// translated from the kernel's Jupyter messages the way E2B's code
// interpreter does it, so @e2b/code-interpreter parses it unchanged.
//
//   execute_input                 {"type":"number_of_executions","execution_count":N}
//   stream stdout|stderr          {"type":"stdout"|"stderr","text":..,"timestamp":..}
//   execute_result / display_data {"type":"result",<renamed MIME keys>,"is_main_result":true|false}
//   error, execute_reply{error}   {"type":"error","name":..,"value":..,"traceback":..} (once per run)
//   execute_reply{aborted}        an ExecutionAborted error
//   (no output for 5 s)           {"type":"keepalive"}
//   (last line)                   {"type":"end_of_execution"}
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "interp/wire.h"

namespace coppice::interp {

// Key order is kept so that "type" comes first on every line.
using ojson = nlohmann::ordered_json;

// One line of output: compact JSON and a newline. Never a blank line: the
// client runs JSON.parse on every line. Invalid UTF-8 is replaced.
std::string ndjson(const ojson& line);

// A result line from a MIME bundle: text/plain -> text (one pair of
// surrounding quotes stripped, as Python's repr of a str has them),
// text/html -> html, text/markdown -> markdown, image/svg+xml -> svg,
// image/png -> png, image/jpeg -> jpeg, application/pdf -> pdf,
// text/latex -> latex, application/json -> json, application/javascript ->
// javascript, e2b/data -> data, e2b/chart -> chart; any other MIME type goes
// under "extra" with its own name.
ojson result_line(const json& mime_bundle, bool is_main_result);
ojson error_line(const std::string& name, const std::string& value, const std::string& traceback);
ojson stream_line(const std::string& name, const std::string& text, const std::string& timestamp);
ojson keepalive_line();
ojson end_of_execution_line();

// Follows one execute_request through the kernel's answers (iopub and shell)
// and produces the lines for it.
class ExecutionTranslator {
 public:
  // Appends the lines `msg` (an answer to this execution) yields to `out`.
  void feed(const Message& msg, std::vector<ojson>& out);
  // The kernel has gone idle for this request and sent its execute_reply.
  bool done() const { return saw_idle_ && saw_reply_; }
  bool errored() const { return errored_; }
  // The execute_reply's status ("ok", "error", "aborted"), or "" before it.
  const std::string& reply_status() const { return reply_status_; }

 private:
  bool saw_idle_ = false;
  bool saw_reply_ = false;
  bool errored_ = false;
  std::string reply_status_;
};

}  // namespace coppice::interp
