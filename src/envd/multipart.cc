#include "envd/multipart.h"

#include <algorithm>
#include <cctype>

namespace coppice::envd {

namespace {

constexpr std::string_view kCrlf = "\r\n";
// Transport padding allowed after a delimiter before its CRLF (RFC 2046 5.1.1).
constexpr size_t kMaxPadding = 256;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 2045 token characters: printable ASCII less space and tspecials.
bool is_token_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u <= 0x20 || u >= 0x7f) return false;
  return std::string_view(R"(()<>@,;:\"/[]?=)").find(c) == std::string_view::npos;
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 5987 ext-value: charset'language'percent-encoded.
Result<std::string> decode_ext_value(std::string_view v) {
  size_t q1 = v.find('\'');
  size_t q2 = q1 == std::string_view::npos ? q1 : v.find('\'', q1 + 1);
  if (q2 == std::string_view::npos) return make_error(ErrorCode::kInvalidArgument, "malformed extended parameter value");
  std::string charset = lower(v.substr(0, q1));
  if (charset != "utf-8" && charset != "us-ascii") {
    return make_error(ErrorCode::kInvalidArgument, "unsupported parameter charset: " + charset);
  }
  std::string out;
  std::string_view enc = v.substr(q2 + 1);
  for (size_t i = 0; i < enc.size(); ++i) {
    if (enc[i] == '%') {
      if (i + 2 >= enc.size() || hexval(enc[i + 1]) < 0 || hexval(enc[i + 2]) < 0) {
        return make_error(ErrorCode::kInvalidArgument, "malformed percent-encoding in parameter value");
      }
      out.push_back(static_cast<char>(hexval(enc[i + 1]) * 16 + hexval(enc[i + 2])));
      i += 2;
    } else {
      out.push_back(enc[i]);
    }
  }
  return out;
}

}  // namespace

Result<MediaType> parse_media_type(std::string_view v) {
  MediaType mt;
  size_t semi = v.find(';');
  mt.type = lower(trim(v.substr(0, semi)));
  if (mt.type.empty() || !std::all_of(mt.type.begin(), mt.type.end(), [](char c) { return is_token_char(c) || c == '/'; })) {
    return make_error(ErrorCode::kInvalidArgument, "malformed media type: " + std::string(v));
  }
  std::map<std::string, std::string> ext;  // name* parameters, decoded
  std::string_view rest = semi == std::string_view::npos ? std::string_view{} : v.substr(semi);
  auto bad = [&](std::string_view why) {
    return make_error(ErrorCode::kInvalidArgument, std::string(why) + " in header value: " + std::string(v));
  };
  for (;;) {
    rest = trim(rest);
    if (rest.empty()) break;
    if (rest.front() != ';') return bad("expected ';'");
    rest.remove_prefix(1);
    rest = trim(rest);
    if (rest.empty()) break;  // a trailing ';' is tolerated
    size_t k = 0;
    while (k < rest.size() && is_token_char(rest[k])) ++k;
    if (k == 0) return bad("expected a parameter name");
    std::string key = lower(rest.substr(0, k));
    rest = trim(rest.substr(k));
    if (rest.empty() || rest.front() != '=') return bad("expected '='");
    rest = trim(rest.substr(1));
    std::string value;
    if (!rest.empty() && rest.front() == '"') {
      size_t i = 1;
      bool closed = false;
      for (; i < rest.size(); ++i) {
        char c = rest[i];
        if (c == '"') {
          closed = true;
          break;
        }
        // A backslash escapes only '"' and '\' so that unescaped Windows
        // paths ("C:\dir\file") keep their backslashes.
        if (c == '\\' && i + 1 < rest.size() && (rest[i + 1] == '"' || rest[i + 1] == '\\')) {
          value.push_back(rest[++i]);
          continue;
        }
        value.push_back(c);
      }
      if (!closed) return bad("unterminated quoted string");
      rest.remove_prefix(i + 1);
    } else {
      size_t j = 0;
      while (j < rest.size() && is_token_char(rest[j])) ++j;
      if (j == 0) return bad("expected a parameter value");
      value = std::string(rest.substr(0, j));
      rest.remove_prefix(j);
    }
    if (key.size() > 1 && key.back() == '*') {
      auto dec = decode_ext_value(value);
      if (!dec) return std::unexpected(dec.error());
      std::string base = key.substr(0, key.size() - 1);
      if (ext.contains(base)) return bad("duplicate parameter " + key);
      ext[base] = std::move(*dec);
      continue;
    }
    if (mt.params.contains(key)) return bad("duplicate parameter " + key);
    mt.params[key] = std::move(value);
  }
  // RFC 6266: the extended form wins over the plain one.
  for (auto& [k, val] : ext) mt.params[k] = std::move(val);
  return mt;
}

Result<std::string> multipart_boundary(std::string_view content_type) {
  auto mt = parse_media_type(content_type);
  if (!mt) return std::unexpected(std::move(mt.error()).context("multipart Content-Type"));
  if (!mt->type.starts_with("multipart/")) {
    return make_error(ErrorCode::kInvalidArgument, "not a multipart Content-Type: " + mt->type);
  }
  auto it = mt->params.find("boundary");
  if (it == mt->params.end() || it->second.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "multipart Content-Type has no boundary");
  }
  // RFC 2046: 1 to 70 characters.
  if (it->second.size() > 70) return make_error(ErrorCode::kInvalidArgument, "multipart boundary is over 70 characters");
  return it->second;
}

MultipartParser::MultipartParser(std::string boundary, MultipartCallbacks cb)
    : dash_boundary_("--" + boundary), delimiter_("\r\n--" + boundary), cb_(std::move(cb)) {}

Status MultipartParser::feed(std::string_view chunk) {
  if (state_ == State::kEpilogue) return ok();  // the epilogue is ignored
  buf_.append(chunk);
  auto st = run();
  // Drop what was consumed; what remains is at most a header block or a
  // delimiter's length.
  buf_.erase(0, pos_);
  pos_ = 0;
  return st;
}

Status MultipartParser::finish() {
  if (state_ == State::kEpilogue) return ok();
  if (state_ == State::kPreamble) {
    return make_error(ErrorCode::kInvalidArgument, "malformed multipart body: no boundary delimiter found");
  }
  return make_error(ErrorCode::kInvalidArgument,
                    "malformed multipart body: it ends before the closing boundary (truncated part?)");
}

Status MultipartParser::run() {
  for (;;) {
    std::string_view avail = std::string_view(buf_).substr(pos_);
    switch (state_) {
      case State::kPreamble: {
        // The first delimiter may open the body without a preceding CRLF.
        if (at_body_start_) {
          if (avail.size() < dash_boundary_.size() && std::string_view(dash_boundary_).starts_with(avail)) {
            return ok();  // could still become the opening delimiter
          }
          at_body_start_ = false;
          if (avail.starts_with(dash_boundary_)) {
            pos_ += dash_boundary_.size();
            state_ = State::kAfterDelimiter;
            continue;
          }
        }
        size_t at = avail.find(delimiter_);
        if (at == std::string_view::npos) {
          // Keep a tail that may be the start of a delimiter.
          if (avail.size() >= delimiter_.size()) pos_ += avail.size() - (delimiter_.size() - 1);
          return ok();
        }
        pos_ += at + delimiter_.size();
        state_ = State::kAfterDelimiter;
        continue;
      }
      case State::kAfterDelimiter: {
        if (avail.size() < 2) return ok();
        if (avail.starts_with("--")) {
          pos_ += 2;
          state_ = State::kEpilogue;
          return ok();
        }
        size_t i = 0;
        while (i < avail.size() && (avail[i] == ' ' || avail[i] == '\t')) ++i;
        if (i > kMaxPadding) return make_error(ErrorCode::kInvalidArgument, "malformed multipart body: junk after boundary");
        if (avail.size() - i < 2) return ok();
        if (avail.substr(i, 2) != kCrlf) {
          return make_error(ErrorCode::kInvalidArgument, "malformed multipart body: boundary not followed by CRLF");
        }
        pos_ += i + 2;
        state_ = State::kHeaders;
        continue;
      }
      case State::kHeaders: {
        size_t end;
        size_t skip;
        if (avail.starts_with(kCrlf)) {
          end = 0;  // no headers at all
          skip = 2;
        } else {
          size_t at = avail.find("\r\n\r\n");
          if (at == std::string_view::npos) {
            if (avail.size() > kMaxHeaderBytes) {
              return make_error(ErrorCode::kTooLarge, "multipart part headers are over " +
                                                          std::to_string(kMaxHeaderBytes) + " bytes");
            }
            return ok();
          }
          end = at;
          skip = 4;
        }
        if (end > kMaxHeaderBytes) {
          return make_error(ErrorCode::kTooLarge,
                            "multipart part headers are over " + std::to_string(kMaxHeaderBytes) + " bytes");
        }
        auto st = parse_headers(avail.substr(0, end));
        if (!st) return st;
        pos_ += end + skip;
        state_ = State::kBody;
        continue;
      }
      case State::kBody: {
        size_t at = avail.find(delimiter_);
        if (at == std::string_view::npos) {
          if (avail.size() >= delimiter_.size()) {
            size_t n = avail.size() - (delimiter_.size() - 1);
            if (cb_.on_part_data) {
              if (auto st = cb_.on_part_data(avail.substr(0, n)); !st) return st;
            }
            pos_ += n;
          }
          return ok();
        }
        if (at > 0 && cb_.on_part_data) {
          if (auto st = cb_.on_part_data(avail.substr(0, at)); !st) return st;
        }
        pos_ += at + delimiter_.size();
        in_part_ = false;
        if (cb_.on_part_end) {
          if (auto st = cb_.on_part_end(); !st) return st;
        }
        state_ = State::kAfterDelimiter;
        continue;
      }
      case State::kEpilogue:
        pos_ = buf_.size();
        return ok();
    }
  }
}

Status MultipartParser::parse_headers(std::string_view block) {
  MultipartPart part;
  std::string last;
  while (!block.empty()) {
    size_t eol = block.find(kCrlf);
    std::string_view line = block.substr(0, eol);
    block = eol == std::string_view::npos ? std::string_view{} : block.substr(eol + 2);
    if (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
      // An obsolete folded continuation line.
      if (last.empty()) return make_error(ErrorCode::kInvalidArgument, "malformed multipart part header");
      part.headers[last] += " ";
      part.headers[last] += trim(line);
      continue;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return make_error(ErrorCode::kInvalidArgument, "malformed multipart part header: " + std::string(line.substr(0, 100)));
    }
    last = lower(trim(line.substr(0, colon)));
    // A repeated header keeps its first value.
    part.headers.try_emplace(last, std::string(trim(line.substr(colon + 1))));
  }
  if (auto it = part.headers.find("content-disposition"); it != part.headers.end()) {
    auto mt = parse_media_type(it->second);
    if (!mt) return std::unexpected(std::move(mt.error()).context("multipart Content-Disposition"));
    if (auto n = mt->params.find("name"); n != mt->params.end()) part.name = n->second;
    if (auto f = mt->params.find("filename"); f != mt->params.end()) part.filename = f->second;
  }
  ++parts_;
  in_part_ = true;
  if (cb_.on_part_begin) return cb_.on_part_begin(part);
  return ok();
}

}  // namespace coppice::envd
