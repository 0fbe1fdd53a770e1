#include "interp/output.h"

#include <array>
#include <string_view>
#include <utility>

namespace coppice::interp {

namespace {
const std::array<std::pair<std::string_view, std::string_view>, 12> kMimeNames{{
    {"text/plain", "text"},
    {"text/html", "html"},
    {"text/markdown", "markdown"},
    {"image/svg+xml", "svg"},
    {"image/png", "png"},
    {"image/jpeg", "jpeg"},
    {"application/pdf", "pdf"},
    {"text/latex", "latex"},
    {"application/json", "json"},
    {"application/javascript", "javascript"},
    {"e2b/data", "data"},
    {"e2b/chart", "chart"},
}};

std::string str(const json& obj, const char* key) {
  if (!obj.is_object()) return {};
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

// Kernel tracebacks are lists of lines; they are joined with newlines so
// the text reads as the traceback it is.
std::string join_traceback(const json& content) {
  std::string out;
  auto it = content.find("traceback");
  if (it == content.end() || !it->is_array()) return out;
  bool first = true;
  for (const auto& l : *it) {
    if (!l.is_string()) continue;
    if (!first) out += '\n';
    out += l.get<std::string>();
    first = false;
  }
  return out;
}
}  // namespace

std::string ndjson(const ojson& line) {
  std::string s = line.dump(-1, ' ', false, ojson::error_handler_t::replace);
  s += '\n';
  return s;
}

ojson result_line(const json& bundle, bool is_main_result) {
  ojson line = ojson::object();
  line["type"] = "result";
  ojson extra = ojson::object();
  if (bundle.is_object()) {
    for (auto it = bundle.begin(); it != bundle.end(); ++it) {
      std::string_view mime = it.key();
      std::string_view name;
      for (const auto& [m, n] : kMimeNames) {
        if (m == mime) name = n;
      }
      if (name.empty()) {
        extra[it.key()] = ojson::parse(it.value().dump());
        continue;
      }
      if (name == "text" && it.value().is_string()) {
        std::string t = it.value().get<std::string>();
        if (t.size() >= 2 && ((t.front() == '\'' && t.back() == '\'') || (t.front() == '"' && t.back() == '"'))) {
          t = t.substr(1, t.size() - 2);
        } else if (t.size() == 1 && (t == "'" || t == "\"")) {
          t.clear();
        }
        line["text"] = t;
        continue;
      }
      line[std::string(name)] = ojson::parse(it.value().dump());
    }
  }
  if (!extra.empty()) line["extra"] = std::move(extra);
  line["is_main_result"] = is_main_result;
  return line;
}

ojson error_line(const std::string& name, const std::string& value, const std::string& traceback) {
  ojson l = ojson::object();
  l["type"] = "error";
  l["name"] = name;
  l["value"] = value;
  l["traceback"] = traceback;
  return l;
}

ojson stream_line(const std::string& name, const std::string& text, const std::string& timestamp) {
  ojson l = ojson::object();
  l["type"] = name;
  l["text"] = text;
  l["timestamp"] = timestamp;
  return l;
}

ojson keepalive_line() {
  ojson l = ojson::object();
  l["type"] = "keepalive";
  return l;
}

ojson end_of_execution_line() {
  ojson l = ojson::object();
  l["type"] = "end_of_execution";
  return l;
}

void ExecutionTranslator::feed(const Message& msg, std::vector<ojson>& out) {
  const std::string type = msg.msg_type();
  const json& c = msg.content;
  if (type == "status") {
    if (str(c, "execution_state") == "idle") saw_idle_ = true;
  } else if (type == "execute_input") {
    ojson l = ojson::object();
    l["type"] = "number_of_executions";
    auto it = c.find("execution_count");
    l["execution_count"] = it != c.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
    out.push_back(std::move(l));
  } else if (type == "stream") {
    std::string name = str(c, "name");
    if (name == "stdout" || name == "stderr") out.push_back(stream_line(name, str(c, "text"), str(msg.header, "date")));
  } else if (type == "execute_result" || type == "display_data") {
    auto it = c.find("data");
    out.push_back(result_line(it != c.end() ? *it : json::object(), type == "execute_result"));
  } else if (type == "error") {
    if (!errored_) {
      errored_ = true;
      out.push_back(error_line(str(c, "ename"), str(c, "evalue"), join_traceback(c)));
    }
  } else if (type == "execute_reply") {
    saw_reply_ = true;
    reply_status_ = str(c, "status");
    if (reply_status_ == "error" && !errored_) {
      errored_ = true;
      out.push_back(error_line(str(c, "ename"), str(c, "evalue"), join_traceback(c)));
    } else if (reply_status_ == "aborted" || reply_status_ == "abort") {
      errored_ = true;
      out.push_back(error_line("ExecutionAborted", "Execution was aborted", ""));
      // An aborted request gets no idle of its own on every kernel version.
      saw_idle_ = true;
    }
  }
}

}  // namespace coppice::interp
