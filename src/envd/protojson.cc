#include "envd/protojson.h"

#include <cmath>
#include <cstdint>

#include <cstring>

namespace coppice::pj {

std::string snake_case(std::string_view camel) {
  std::string out;
  for (char c : camel) {
    if (c >= 'A' && c <= 'Z') {
      out.push_back('_');
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

const json* field(const json& msg, std::string_view camel) {
  if (!msg.is_object()) return nullptr;
  auto it = msg.find(camel);
  if (it == msg.end()) {
    std::string snake = snake_case(camel);
    if (snake != camel) it = msg.find(snake);
  }
  if (it == msg.end() || it->is_null()) return nullptr;
  return &*it;
}

namespace {
std::unexpected<Error> type_error(std::string_view name, std::string_view want) {
  return make_error(ErrorCode::kInvalidArgument, "field " + std::string(name) + " must be " + std::string(want));
}
}  // namespace

Result<std::optional<std::string>> get_string(const json& msg, std::string_view name) {
  const json* f = field(msg, name);
  if (!f) return std::optional<std::string>{};
  if (!f->is_string()) return type_error(name, "a string");
  return std::optional<std::string>(f->get<std::string>());
}

Result<std::optional<int64_t>> get_int(const json& msg, std::string_view name) {
  const json* f = field(msg, name);
  if (!f) return std::optional<int64_t>{};
  if (f->is_number_unsigned() && f->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return type_error(name, "a 64-bit integer");
  }
  if (f->is_number_integer()) return std::optional<int64_t>(f->get<int64_t>());
  if (f->is_number_float()) {
    double d = f->get<double>();
    // In range before the cast: a float beyond int64 does not convert.
    if (!std::isfinite(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0) {
      return type_error(name, "a 64-bit integer");
    }
    if (d != std::trunc(d)) return type_error(name, "an integer");
    return std::optional<int64_t>(static_cast<int64_t>(d));
  }
  if (f->is_string()) {
    const std::string& s = f->get_ref<const std::string&>();
    if (s.empty() || s.size() > 20) return type_error(name, "an integer");
    size_t i = (s[0] == '-') ? 1 : 0;
    if (i == s.size()) return type_error(name, "an integer");
    int64_t v = 0;
    for (; i < s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9') return type_error(name, "an integer");
      if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s[i] - '0', &v))
        return type_error(name, "a 64-bit integer");
    }
    return std::optional<int64_t>(s[0] == '-' ? -v : v);
  }
  return type_error(name, "an integer");
}

Result<std::optional<bool>> get_bool(const json& msg, std::string_view name) {
  const json* f = field(msg, name);
  if (!f) return std::optional<bool>{};
  if (!f->is_boolean()) return type_error(name, "a boolean");
  return std::optional<bool>(f->get<bool>());
}

Result<std::optional<std::string>> get_bytes(const json& msg, std::string_view name) {
  const json* f = field(msg, name);
  if (!f) return std::optional<std::string>{};
  if (!f->is_string()) return type_error(name, "base64 bytes");
  auto d = base64_decode(f->get_ref<const std::string&>());
  if (!d) return type_error(name, "valid base64");
  return std::optional<std::string>(std::move(*d));
}

Result<std::optional<int>> get_enum(const json& msg, std::string_view name,
                                    const std::vector<std::pair<std::string_view, int>>& names) {
  const json* f = field(msg, name);
  if (!f) return std::optional<int>{};
  if (f->is_number_integer()) return std::optional<int>(f->get<int>());
  if (f->is_string()) {
    for (const auto& [n, v] : names)
      if (n == f->get_ref<const std::string&>()) return std::optional<int>(v);
    return make_error(ErrorCode::kInvalidArgument,
                      "field " + std::string(name) + " has unknown value " + f->get<std::string>());
  }
  return type_error(name, "an enum name or number");
}

Result<std::map<std::string, std::string>> get_string_map(const json& msg, std::string_view name) {
  std::map<std::string, std::string> out;
  const json* f = field(msg, name);
  if (!f) return out;
  if (!f->is_object()) return type_error(name, "an object of strings");
  for (auto it = f->begin(); it != f->end(); ++it) {
    if (!it->is_string()) return type_error(name, "an object of strings");
    out[it.key()] = it->get<std::string>();
  }
  return out;
}

Result<std::vector<std::string>> get_string_list(const json& msg, std::string_view name) {
  std::vector<std::string> out;
  const json* f = field(msg, name);
  if (!f) return out;
  if (!f->is_array()) return type_error(name, "a list of strings");
  for (const auto& v : *f) {
    if (!v.is_string()) return type_error(name, "a list of strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

Result<const json*> get_message(const json& msg, std::string_view name) {
  const json* f = field(msg, name);
  if (!f) return static_cast<const json*>(nullptr);
  if (!f->is_object()) return type_error(name, "an object");
  return f;
}


std::string timestamp(const struct timespec& ts) {
  struct tm tm;
  time_t secs = ts.tv_sec;
  gmtime_r(&secs, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  long ns = ts.tv_nsec;
  if (ns != 0) {
    if (ns % 1000000 == 0) n += snprintf(buf + n, sizeof buf - n, ".%03ld", ns / 1000000);
    else if (ns % 1000 == 0) n += snprintf(buf + n, sizeof buf - n, ".%06ld", ns / 1000);
    else n += snprintf(buf + n, sizeof buf - n, ".%09ld", ns);
  }
  snprintf(buf + n, sizeof buf - n, "Z");
  return buf;
}

}  // namespace coppice::pj
