#include "templates/template_toml.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <limits>
#include <set>

#include "sys/fd.h"
#include "sys/fsutil.h"

namespace coppice::templates {
namespace {

constexpr size_t kMaxFileSize = 1 << 20;

bool is_ws(char c) { return c == ' ' || c == '\t'; }
bool is_bare_key_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// True if `s` is well-formed UTF-8 (no overlongs, surrogates or values past
// U+10FFFF), as TOML requires.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n >= s.size() - i) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// Parses one line; every error is reported with the line number.
class LineParser {
 public:
  LineParser(std::string_view line, int number) : s_(line), line_(number) {}

  std::unexpected<Error> fail(const std::string& what) const {
    return make_error(ErrorCode::kInvalidArgument, "line " + std::to_string(line_) + ": " + what);
  }

  void skip_ws() {
    while (pos_ < s_.size() && is_ws(s_[pos_])) ++pos_;
  }
  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[pos_]; }
  void advance() { ++pos_; }

  // After an item: only whitespace and an optional comment may follow.
  Status expect_line_end() {
    skip_ws();
    if (at_end() || peek() == '#') return check_comment();
    return fail("unexpected \"" + std::string(s_.substr(pos_)) + "\" after the value");
  }

  // Comments may hold any text except control characters other than tab.
  Status check_comment() {
    for (size_t i = pos_; i < s_.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(s_[i]);
      if ((c < 0x20 && c != '\t') || c == 0x7f) return fail("control character in comment");
    }
    return ok();
  }

  Result<std::string> bare_key() {
    size_t start = pos_;
    while (pos_ < s_.size() && is_bare_key_char(s_[pos_])) ++pos_;
    if (pos_ == start) {
      if (peek() == '"' || peek() == '\'') return fail("quoted keys are not supported");
      return fail("expected a key");
    }
    return std::string(s_.substr(start, pos_ - start));
  }

  // [name] or [a.b]
  Result<std::string> section_header() {
    ++pos_;  // '['
    if (peek() == '[') return fail("arrays of tables ([[...]]) are not supported");
    skip_ws();
    std::string name;
    for (;;) {
      auto part = bare_key();
      if (!part) return std::unexpected(std::move(part.error()));
      name += *part;
      skip_ws();
      if (peek() == '.') {
        ++pos_;
        skip_ws();
        name += '.';
        continue;
      }
      break;
    }
    if (peek() != ']') return fail("expected ']' to close the section header");
    ++pos_;
    if (auto r = expect_line_end(); !r) return std::unexpected(std::move(r.error()));
    return name;
  }

  Result<TomlValue> value() {
    char c = peek();
    if (c == '"') {
      if (s_.substr(pos_).starts_with("\"\"\"")) return fail("multi-line strings are not supported");
      return wrap(basic_string());
    }
    if (c == '\'') {
      if (s_.substr(pos_).starts_with("'''")) return fail("multi-line strings are not supported");
      return wrap(literal_string());
    }
    if (c == '[') return array();
    if (c == '{') return fail("inline tables are not supported");
    if (s_.substr(pos_).starts_with("true") && !is_bare_key_char(char_at(pos_ + 4))) {
      pos_ += 4;
      return TomlValue(true);
    }
    if (s_.substr(pos_).starts_with("false") && !is_bare_key_char(char_at(pos_ + 5))) {
      pos_ += 5;
      return TomlValue(false);
    }
    if (c == '+' || c == '-' || is_digit(c)) return integer();
    if (at_end() || c == '#') return fail("missing value");
    return fail("unsupported value \"" + std::string(s_.substr(pos_)) + "\"");
  }

 private:
  char char_at(size_t i) const { return i < s_.size() ? s_[i] : '\0'; }

  static Result<TomlValue> wrap(Result<std::string> r) {
    if (!r) return std::unexpected(std::move(r.error()));
    return TomlValue(std::move(*r));
  }

  Result<std::string> basic_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) return fail("unterminated string");
      char c = s_[pos_++];
      if (c == '"') return out;
      unsigned char uc = static_cast<unsigned char>(c);
      if ((uc < 0x20 && c != '\t') || uc == 0x7f) return fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) return fail("unterminated string");
      char e = s_[pos_++];
      switch (e) {
        case 'b': out += '\b'; break;
        case 't': out += '\t'; break;
        case 'n': out += '\n'; break;
        case 'f': out += '\f'; break;
        case 'r': out += '\r'; break;
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case 'u':
        case 'U': {
          size_t n = e == 'u' ? 4 : 8;
          if (pos_ + n > s_.size()) return fail("short \\" + std::string(1, e) + " escape");
          uint32_t cp = 0;
          for (size_t i = 0; i < n; ++i) {
            char h = s_[pos_ + i];
            uint32_t d;
            if (h >= '0' && h <= '9') d = h - '0';
            else if (h >= 'a' && h <= 'f') d = h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') d = h - 'A' + 10;
            else return fail("bad hex digit in \\" + std::string(1, e) + " escape");
            cp = (cp << 4) | d;
          }
          pos_ += n;
          if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return fail("escape is not a Unicode scalar value");
          }
          append_utf8(out, cp);
          break;
        }
        default:
          return fail("unknown escape \\" + std::string(1, e));
      }
    }
  }

  Result<std::string> literal_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) return fail("unterminated string");
      char c = s_[pos_++];
      if (c == '\'') return out;
      unsigned char uc = static_cast<unsigned char>(c);
      if ((uc < 0x20 && c != '\t') || uc == 0x7f) return fail("control character in string");
      out += c;
    }
  }

  Result<TomlValue> array() {
    ++pos_;  // '['
    std::vector<std::string> items;
    for (;;) {
      skip_ws();
      if (at_end()) return fail("unterminated array (arrays must fit on one line)");
      char c = peek();
      if (c == ']') {
        ++pos_;
        return TomlValue(std::move(items));
      }
      Result<std::string> item = c == '"'    ? basic_string()
                                 : c == '\'' ? literal_string()
                                             : fail("arrays may hold only strings");
      if (!item) return std::unexpected(std::move(item.error()));
      items.push_back(std::move(*item));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') continue;
      if (at_end()) return fail("unterminated array (arrays must fit on one line)");
      return fail("expected ',' or ']' in array");
    }
  }

  Result<TomlValue> integer() {
    size_t start = pos_;
    bool negative = false;
    if (peek() == '+' || peek() == '-') {
      negative = peek() == '-';
      ++pos_;
    }
    std::string digits;
    bool last_underscore = false;
    while (!at_end() && (is_digit(peek()) || peek() == '_')) {
      if (peek() == '_') {
        if (digits.empty() || last_underscore) return fail("misplaced '_' in integer");
        last_underscore = true;
      } else {
        digits += peek();
        last_underscore = false;
      }
      ++pos_;
    }
    if (last_underscore) return fail("misplaced '_' in integer");
    if (digits.empty()) return fail("bad integer");
    if (!at_end() && (is_bare_key_char(peek()) || peek() == '.' || peek() == ':')) {
      return fail("unsupported value \"" + std::string(s_.substr(start)) +
                  "\" (only decimal integers are supported)");
    }
    if (digits.size() > 1 && digits[0] == '0') return fail("leading zero in integer");
    // Accumulate as a negative number so INT64_MIN parses.
    int64_t v = 0;
    for (char d : digits) {
      int digit = d - '0';
      if (v < (std::numeric_limits<int64_t>::min() + digit) / 10) return fail("integer out of range");
      v = v * 10 - digit;
    }
    if (!negative) {
      if (v == std::numeric_limits<int64_t>::min()) return fail("integer out of range");
      v = -v;
    }
    return TomlValue(v);
  }

  std::string_view s_;
  int line_;
  size_t pos_ = 0;
};

const char* type_name(const TomlValue& v) {
  switch (v.index()) {
    case 0: return "a string";
    case 1: return "an integer";
    case 2: return "a boolean";
    default: return "an array of strings";
  }
}

template <typename T>
Result<T> get_as(const std::map<std::string, TomlValue>& m, std::string_view key, const char* want) {
  auto it = m.find(std::string(key));
  if (it == m.end()) return make_error(ErrorCode::kNotFound, "missing key \"" + std::string(key) + "\"");
  if (const T* p = std::get_if<T>(&it->second)) return *p;
  return make_error(ErrorCode::kInvalidArgument, "key \"" + std::string(key) + "\" must be " + want +
                                                     ", not " + type_name(it->second));
}

}  // namespace

Result<std::string> TomlDoc::get_string(std::string_view key) const {
  return get_as<std::string>(values_, key, "a string");
}
Result<int64_t> TomlDoc::get_int(std::string_view key) const {
  return get_as<int64_t>(values_, key, "an integer");
}
Result<bool> TomlDoc::get_bool(std::string_view key) const {
  return get_as<bool>(values_, key, "a boolean");
}
Result<std::vector<std::string>> TomlDoc::get_strings(std::string_view key) const {
  return get_as<std::vector<std::string>>(values_, key, "an array of strings");
}

Status TomlDoc::check_known_keys(std::initializer_list<std::string_view> known) const {
  for (const auto& [key, value] : values_) {
    bool found = false;
    for (std::string_view k : known) found = found || k == key;
    if (!found) return make_error(ErrorCode::kInvalidArgument, "unknown key \"" + key + "\"");
  }
  return ok();
}

Result<TomlDoc> parse_toml(std::string_view text) {
  TomlDoc doc;
  std::map<std::string, int> defined_at;  // key or section -> line that defined it
  std::set<std::string> sections;
  std::string prefix;
  int number = 0;
  size_t start = 0;
  while (start <= text.size()) {
    size_t nl = text.find('\n', start);
    std::string_view line = text.substr(start, nl == std::string_view::npos ? std::string_view::npos
                                                                             : nl - start);
    start = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    LineParser p(line, number);
    if (!valid_utf8(line)) return p.fail("not valid UTF-8");
    p.skip_ws();
    if (p.at_end()) continue;
    if (p.peek() == '#') {
      if (auto r = p.check_comment(); !r) return std::unexpected(std::move(r.error()));
      continue;
    }
    if (p.peek() == '[') {
      auto name = p.section_header();
      if (!name) return std::unexpected(std::move(name.error()));
      if (auto it = defined_at.find(*name); it != defined_at.end()) {
        return p.fail("\"" + *name + "\" is already defined on line " + std::to_string(it->second));
      }
      defined_at.emplace(*name, number);
      sections.insert(*name);
      prefix = *name + ".";
      continue;
    }
    auto key = p.bare_key();
    if (!key) return std::unexpected(std::move(key.error()));
    p.skip_ws();
    if (p.peek() == '.') return p.fail("dotted keys are not supported");
    if (p.peek() != '=') return p.fail("expected '=' after key \"" + *key + "\"");
    p.advance();
    p.skip_ws();
    std::string full = prefix + *key;
    if (auto it = defined_at.find(full); it != defined_at.end()) {
      return p.fail("duplicate key \"" + full + "\" (first defined on line " +
                    std::to_string(it->second) + ")");
    }
    if (sections.contains(full)) return p.fail("\"" + full + "\" is already a section");
    auto value = p.value();
    if (!value) return std::unexpected(std::move(value.error()));
    if (auto r = p.expect_line_end(); !r) return std::unexpected(std::move(r.error()));
    defined_at.emplace(full, number);
    doc.values_.emplace(std::move(full), std::move(*value));
  }
  return doc;
}

Result<TomlDoc> parse_toml_file(const std::string& path) {
  const std::string step = "read " + path;
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) return std::unexpected(Error::from_errno(errno, "open").context(step));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return std::unexpected(Error::from_errno(errno, "stat").context(step));
  if (!S_ISREG(st.st_mode)) return make_error(ErrorCode::kInvalidArgument, step + ": not a regular file");
  if (static_cast<size_t>(st.st_size) > kMaxFileSize) {
    return make_error(ErrorCode::kTooLarge, step + ": larger than 1 MiB");
  }
  auto text = sys::read_all_limited(fd.get(), path, kMaxFileSize);
  if (!text) return std::unexpected(std::move(text.error()).context(step));
  auto doc = parse_toml(*text);
  if (!doc) return std::unexpected(std::move(doc.error()).context("parse " + path));
  return doc;
}

std::string toml_quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "\"";
  for (char c : s) {
    unsigned char uc = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (uc < 0x20 || uc == 0x7f) {
          out += "\\u00";
          out += kHex[uc >> 4];
          out += kHex[uc & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::string toml_array(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += toml_quote(items[i]);
  }
  return out + "]";
}

}  // namespace coppice::templates
