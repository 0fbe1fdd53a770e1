#include "builder/sources.h"

#include <sys/stat.h>

#include <vector>

namespace coppice::builder {
namespace {

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find('\n', i);
    if (j == std::string_view::npos) j = text.size();
    out.push_back(text.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// Offsets [begin, end) of the whitespace-separated words of `line` from `from` on.
std::vector<std::pair<size_t, size_t>> words(std::string_view line, size_t from) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t i = from;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i])) ++i;
    if (i >= line.size() || line[i] == '#') break;
    size_t j = i;
    while (j < line.size() && !is_space(line[j])) ++j;
    out.emplace_back(i, j);
    i = j;
  }
  return out;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char a = s[i], b = prefix[i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
    if (b >= 'A' && b <= 'Z') b = static_cast<char>(b - 'A' + 'a');
    if (a != b) return false;
  }
  return true;
}

// Where the suite words of each line are: deb822 "Suites:" fields, or the
// word after the URI of a one-line "deb [options] URI SUITE ..." entry.
std::vector<std::vector<std::pair<size_t, size_t>>> suite_words(const std::vector<std::string_view>& lines,
                                                                bool deb822) {
  std::vector<std::vector<std::pair<size_t, size_t>>> out(lines.size());
  for (size_t n = 0; n < lines.size(); ++n) {
    std::string_view l = lines[n];
    if (deb822) {
      if (starts_with_ci(l, "suites:")) out[n] = words(l, 7);
      continue;
    }
    auto w = words(l, 0);
    if (w.empty()) continue;
    std::string_view type = l.substr(w[0].first, w[0].second - w[0].first);
    if (type != "deb" && type != "deb-src") continue;
    size_t k = 1;
    // Options: "[a=b c=d]", possibly spread over several words.
    if (k < w.size() && l[w[k].first] == '[') {
      while (k < w.size() && l[w[k].second - 1] != ']') ++k;
      ++k;
    }
    if (k + 1 < w.size()) out[n].push_back(w[k + 1]);  // the word after the URI
  }
  return out;
}

}  // namespace

std::string default_host_sources() {
  struct stat st {};
  for (const char* p : {kHostDeb822Sources, kHostListSources}) {
    if (::stat(p, &st) == 0 && S_ISREG(st.st_mode)) return p;
  }
  return "";
}

std::string retarget_sources(std::string_view text, bool deb822, const std::string& suite) {
  auto lines = split_lines(text);
  auto where = suite_words(lines, deb822);
  std::string release;
  for (size_t n = 0; n < lines.size() && release.empty(); ++n) {
    if (!where[n].empty()) release = std::string(lines[n].substr(where[n][0].first, where[n][0].second - where[n][0].first));
  }
  if (release.empty() || release == suite) return std::string(text);
  std::string out;
  for (size_t n = 0; n < lines.size(); ++n) {
    std::string_view l = lines[n];
    size_t pos = 0;
    for (auto [b, e] : where[n]) {
      std::string_view w = l.substr(b, e - b);
      out += l.substr(pos, b - pos);
      if (w == release) out += suite;
      else if (w.starts_with(release + "-")) out += suite + std::string(w.substr(release.size()));
      else out += w;
      pos = e;
    }
    out += l.substr(pos);
    if (n + 1 < lines.size() || text.ends_with('\n')) out += '\n';
  }
  return out;
}

}  // namespace coppice::builder
