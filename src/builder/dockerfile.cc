#include "builder/dockerfile.h"

#include <cctype>

#include <nlohmann/json.hpp>

namespace coppice::builder {
namespace {

bool blank(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (blank(s.front()) || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (blank(s.back()) || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_comment(std::string_view line) {
  line = trim(line);
  return !line.empty() && line.front() == '#';
}

// "# name=value" at the top of the file; false for any other line.
bool directive(std::string_view line, std::string* name, std::string* value) {
  line = trim(line);
  if (line.empty() || line.front() != '#') return false;
  line.remove_prefix(1);
  line = trim(line);
  size_t eq = line.find('=');
  if (eq == std::string_view::npos) return false;
  std::string_view n = trim(line.substr(0, eq));
  if (n.empty()) return false;
  for (char c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  *name = lower(n);
  *value = std::string(trim(line.substr(eq + 1)));
  return true;
}

// Instructions whose arguments may be a JSON array.
bool takes_json(const std::string& kw) {
  return kw == "RUN" || kw == "CMD" || kw == "ENTRYPOINT" || kw == "SHELL" || kw == "COPY" || kw == "ADD" ||
         kw == "VOLUME";
}

Error at(int line, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "line " + std::to_string(line) + ": " + what);
}

Result<DockerInstruction> make_instruction(int line, std::string_view joined) {
  DockerInstruction ins;
  ins.line = line;
  std::string_view rest = trim(joined);
  size_t sp = 0;
  while (sp < rest.size() && !blank(rest[sp])) ++sp;
  ins.keyword = upper(rest.substr(0, sp));
  rest = trim(rest.substr(sp));
  // Flags come first: --name=value or --name.
  while (rest.starts_with("--")) {
    size_t end = 0;
    while (end < rest.size() && !blank(rest[end])) ++end;
    std::string_view flag = rest.substr(2, end - 2);
    size_t eq = flag.find('=');
    std::string name(flag.substr(0, eq));
    if (name.empty()) return std::unexpected(at(line, ins.keyword + ": an empty flag"));
    ins.flags.emplace_back(lower(name), eq == std::string_view::npos ? "" : std::string(flag.substr(eq + 1)));
    rest = trim(rest.substr(end));
  }
  if (rest.empty()) return std::unexpected(at(line, ins.keyword + " needs arguments"));
  ins.text = std::string(rest);
  if (takes_json(ins.keyword) && rest.front() == '[') {
    // Docker reads a line that is not a valid array of strings as the shell form.
    auto j = nlohmann::json::parse(rest, nullptr, false);
    bool strings = j.is_array();
    if (strings)
      for (const auto& e : j) strings = strings && e.is_string();
    if (strings) {
      // An empty array is a command of its own for CMD and ENTRYPOINT
      // (none); anywhere else there is nothing to do it with.
      if (j.empty() && ins.keyword != "CMD" && ins.keyword != "ENTRYPOINT") {
        return std::unexpected(at(line, ins.keyword + " needs arguments"));
      }
      ins.json = true;
      for (const auto& e : j) ins.args.push_back(e.get<std::string>());
      return ins;
    }
  }
  ins.args.push_back(ins.text);
  return ins;
}

bool name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// The lexer behind expand_words and expand_string.
class Expander {
 public:
  Expander(std::string_view s, const VarMap& vars, char escape) : s_(s), vars_(vars), esc_(escape) {}

  Result<std::vector<std::string>> run(bool split) {
    std::vector<std::string> words;
    std::string cur;
    bool in_word = false;
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (split && blank(c)) {
        if (in_word) words.push_back(std::move(cur));
        cur.clear();
        in_word = false;
        ++i_;
        continue;
      }
      if (c == '$') {
        // Unquoted, a value is split into words at its blanks, and an empty
        // one makes no word.
        auto v = variable();
        if (!v) return std::unexpected(std::move(v.error()));
        for (char d : *v) {
          if (split && blank(d)) {
            if (in_word) words.push_back(std::move(cur));
            cur.clear();
            in_word = false;
          } else {
            cur += d;
            in_word = true;
          }
        }
        continue;
      }
      in_word = true;
      if (c == esc_) {
        ++i_;
        if (i_ < s_.size()) cur += s_[i_++];
        continue;
      }
      if (c == '\'') {
        size_t end = s_.find('\'', i_ + 1);
        if (end == std::string_view::npos) return make_error(ErrorCode::kInvalidArgument, "an unclosed ' quote");
        cur.append(s_.substr(i_ + 1, end - i_ - 1));
        i_ = end + 1;
        continue;
      }
      if (c == '"') {
        ++i_;
        bool closed = false;
        while (i_ < s_.size()) {
          char d = s_[i_];
          if (d == '"') {
            closed = true;
            ++i_;
            break;
          }
          if (d == esc_ && i_ + 1 < s_.size() && (s_[i_ + 1] == '"' || s_[i_ + 1] == '$' || s_[i_ + 1] == esc_)) {
            cur += s_[i_ + 1];
            i_ += 2;
            continue;
          }
          if (d == '$') {
            auto v = variable();
            if (!v) return std::unexpected(std::move(v.error()));
            cur += *v;
            continue;
          }
          cur += d;
          ++i_;
        }
        if (!closed) return make_error(ErrorCode::kInvalidArgument, "an unclosed \" quote");
        continue;
      }
      cur += c;
      ++i_;
    }
    if (in_word || !split) words.push_back(std::move(cur));
    return words;
  }

 private:
  // At a '$': its value, or "$" itself when no name follows.
  Result<std::string> variable() {
    ++i_;
    if (i_ < s_.size() && s_[i_] == '{') {
      size_t start = ++i_;
      while (i_ < s_.size() && name_char(s_[i_])) ++i_;
      std::string name(s_.substr(start, i_ - start));
      if (name.empty() || !name_start(name[0]))
        return make_error(ErrorCode::kInvalidArgument, "a bad variable name in ${...}");
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return value(name);
      }
      if (i_ + 1 < s_.size() && s_[i_] == ':' && (s_[i_ + 1] == '-' || s_[i_ + 1] == '+')) {
        const char op = s_[i_ + 1];
        i_ += 2;
        // The word runs to the matching brace.
        size_t depth = 1, w = i_;
        for (; w < s_.size(); ++w) {
          if (s_[w] == '{') ++depth;
          if (s_[w] == '}' && --depth == 0) break;
        }
        if (w >= s_.size()) return make_error(ErrorCode::kInvalidArgument, "an unclosed ${" + name);
        auto word = Expander(s_.substr(i_, w - i_), vars_, esc_).run(false);
        if (!word) return std::unexpected(std::move(word.error()));
        i_ = w + 1;
        const std::string v = value(name);
        if (op == '-') return v.empty() ? word->front() : v;
        return v.empty() ? std::string() : word->front();
      }
      return make_error(ErrorCode::kInvalidArgument,
                        "${" + name + "...}: only ${NAME}, ${NAME:-word} and ${NAME:+word} are supported");
    }
    if (i_ < s_.size() && name_start(s_[i_])) {
      size_t start = i_;
      while (i_ < s_.size() && name_char(s_[i_])) ++i_;
      return value(std::string(s_.substr(start, i_ - start)));
    }
    return std::string("$");
  }

  std::string value(const std::string& name) const {
    auto it = vars_.find(name);
    return it == vars_.end() ? std::string() : it->second;
  }

  std::string_view s_;
  const VarMap& vars_;
  char esc_;
  size_t i_ = 0;
};

}  // namespace

Result<Dockerfile> parse_dockerfile(std::string_view text) {
  Dockerfile df;
  std::vector<std::string_view> lines;
  for (size_t i = 0; i <= text.size();) {
    size_t nl = text.find('\n', i);
    if (nl == std::string_view::npos) {
      if (i < text.size()) lines.push_back(text.substr(i));
      break;
    }
    lines.push_back(text.substr(i, nl - i));
    i = nl + 1;
  }
  size_t n = 0;
  // Parser directives: only before anything else.
  for (; n < lines.size(); ++n) {
    std::string name, value;
    if (!directive(lines[n], &name, &value)) break;
    if (name == "escape") {
      if (value != "\\" && value != "`")
        return std::unexpected(at(static_cast<int>(n + 1), "escape must be \\ or `, not \"" + value + "\""));
      df.escape = value[0];
    }
    // `syntax` names a BuildKit frontend: nothing to do here.
  }
  std::string joined;
  int start = 0;
  for (; n < lines.size(); ++n) {
    const int line_no = static_cast<int>(n + 1);
    std::string_view line = lines[n];
    if (line.find('\0') != std::string_view::npos) return std::unexpected(at(line_no, "a NUL byte"));
    if (trim(line).empty() || is_comment(line)) continue;  // also inside a continuation
    if (start == 0) start = line_no;
    std::string_view t = line;
    while (!t.empty() && (blank(t.back()) || t.back() == '\r')) t.remove_suffix(1);
    // The first line loses its indentation; later ones keep theirs, which
    // separates words across the join (Docker drops only escape + newline).
    if (start == line_no) t = trim(t);
    if (!t.empty() && t.back() == df.escape) {
      t.remove_suffix(1);
      joined.append(t);
      continue;
    }
    joined.append(t);
    auto ins = make_instruction(start, joined);
    if (!ins) return std::unexpected(std::move(ins.error()));
    df.instructions.push_back(std::move(*ins));
    joined.clear();
    start = 0;
  }
  if (start != 0) {
    auto ins = make_instruction(start, joined);
    if (!ins) return std::unexpected(std::move(ins.error()));
    df.instructions.push_back(std::move(*ins));
  }
  return df;
}

Result<std::vector<std::string>> expand_words(std::string_view s, const VarMap& vars, char escape) {
  return Expander(s, vars, escape).run(true);
}

Result<std::string> expand_string(std::string_view s, const VarMap& vars, char escape) {
  auto r = Expander(trim(s), vars, escape).run(false);
  if (!r) return std::unexpected(std::move(r.error()));
  return std::move(r->front());
}

Result<std::vector<KeyValue>> parse_key_values(std::string_view text, const VarMap& vars, bool legacy_space_form,
                                               char escape) {
  text = trim(text);
  std::vector<KeyValue> out;
  size_t first_end = 0;
  while (first_end < text.size() && !blank(text[first_end])) ++first_end;
  const bool has_eq = text.substr(0, first_end).find('=') != std::string_view::npos;
  if (legacy_space_form && !has_eq) {
    // ENV name value with spaces
    std::string key(text.substr(0, first_end));
    std::string_view rest = trim(text.substr(first_end));
    if (rest.empty()) return make_error(ErrorCode::kInvalidArgument, "ENV " + key + " has no value");
    auto v = expand_string(rest, vars, escape);
    if (!v) return std::unexpected(std::move(v.error()));
    out.push_back({key, *v, true});
  } else {
    auto words = expand_words(text, vars, escape);
    if (!words) return std::unexpected(std::move(words.error()));
    for (auto& w : *words) {
      size_t eq = w.find('=');
      if (eq == std::string::npos) {
        if (legacy_space_form) return make_error(ErrorCode::kInvalidArgument, "\"" + w + "\" is not NAME=value");
        out.push_back({w, "", false});
      } else {
        out.push_back({w.substr(0, eq), w.substr(eq + 1), true});
      }
    }
  }
  for (const auto& kv : out) {
    bool ok_name = !kv.key.empty() && name_start(kv.key[0]);
    for (char c : kv.key) ok_name = ok_name && (name_char(c) || c == '.' || c == '-');
    if (!ok_name) return make_error(ErrorCode::kInvalidArgument, "\"" + kv.key + "\" is not a variable name");
  }
  return out;
}

std::string shell_quote(std::string_view s) {
  bool plain = !s.empty();
  for (char c : s)
    plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || std::string_view("_@%+=:,./-").find(c) != std::string_view::npos);
  if (plain) return std::string(s);
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + shell_quote(a);
  return out;
}

}  // namespace coppice::builder
