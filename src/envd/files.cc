// GET and POST /files, E2B envd's plain-HTTP file transfer (e2b-protocol.md
// §3.4). Everything streams in kIoChunk pieces: a download reads the file
// chunk by chunk (gzipping each on request), an upload goes from the socket
// through the gzip decoder and the multipart parser straight into a temp file,
// so memory stays bounded whatever the size of the file.
//
// An upload writes a temp file next to its destination and renames it over
// the destination only once the whole body arrived, so a failed or aborted
// upload never leaves a half-written file in place of a good one.
#include "envd/files.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstring>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "common/log.h"
#include "common/sha256.h"
#include "common/strings.h"
#include "common/url.h"
#include "envd/fs_errors.h"
#include "envd/fs_ops.h"
#include "envd/gzip.h"
#include "envd/multipart.h"
#include "envd/protojson.h"
#include "sys/fd.h"
#include "sys/run_as.h"

namespace coppice::envd {

namespace {

using json = nlohmann::json;
using sys::UniqueFd;

constexpr size_t kIoChunk = 64 * 1024;
// Metadata travels as xattrs "user.e2b.<key>"; the kernel caps a name at 255
// bytes and ext4 keeps all xattrs of an inode in one 4 KiB block (envd's
// limits, so an upload is refused up front rather than failing half-way).
constexpr std::string_view kXattrPrefix = "user.e2b.";
constexpr std::string_view kMetadataHeaderPrefix = "x-metadata-";
constexpr size_t kMaxMetadataKey = 255 - kXattrPrefix.size();
constexpr size_t kMaxMetadataTotal = 4096;

asio::awaitable<void> respond_error(http::Exchange& ex, unsigned status, std::string_view message) {
  co_await ex.respond_json(status, rest_error(status, message));
}

asio::awaitable<void> respond_error(http::Exchange& ex, const Error& e) {
  unsigned status = files_http_status(e);
  // A full disk is the sandbox's state, not envd's failure.
  if (status >= 500 && status != 507) {
    COPPICE_LOG_RATE(warn, 5) << ex.method_string() << " /files: " << e.to_string();
  }
  co_await ex.respond_json(status, rest_error(status, fs_error_message(e)));
}

const std::string* query_param(http::Exchange& ex, const std::string& name) {
  const auto& q = ex.query_params();
  auto it = q.find(name);
  return it == q.end() ? nullptr : &it->second;
}

// envd's rule for /files: with an access token set, the request carries it in
// X-Access-Token, or else a v1 signature over the path and username exactly
// as they appear in the query (an absent one counts as ""), optionally with
// an expiry that has not passed. A wrong header token is refused even when a
// valid signature is also present.
Status check_access(Envd& envd, http::Exchange& ex, std::string_view operation) {
  const auto& token = envd.init().access_token;
  if (!token) return ok();
  if (ex.has_header("X-Access-Token")) {
    if (envd.token_ok(ex)) return ok();
    return make_error(ErrorCode::kUnauthenticated, "access token present in header but does not match");
  }
  const std::string* sig = query_param(ex, "signature");
  if (!sig) {
    return make_error(ErrorCode::kUnauthenticated,
                      "unauthorized access, please provide a valid access token or method signing if supported");
  }
  std::optional<int64_t> expiration;
  if (const std::string* e = query_param(ex, "signature_expiration")) {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(e->data(), e->data() + e->size(), v);
    if (ec != std::errc() || p != e->data() + e->size()) {
      return make_error(ErrorCode::kInvalidArgument, "invalid signature_expiration: " + *e);
    }
    expiration = v;
  }
  const std::string* path = query_param(ex, "path");
  const std::string* user = query_param(ex, "username");
  std::string expected = file_signature(path ? *path : "", operation, user ? *user : "", *token, expiration);
  if (!constant_time_equal(expected, *sig)) return make_error(ErrorCode::kUnauthenticated, "invalid signature");
  if (expiration) {
    int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();
    if (*expiration < now) return make_error(ErrorCode::kUnauthenticated, "signature is already expired");
  }
  return ok();
}

// The user of a /files request: the `username` query if given (an unknown
// user is 401, as in envd), else Basic auth, else the default user.
Result<User> files_user(Envd& envd, http::Exchange& ex) {
  if (const std::string* name = query_param(ex, "username"); name && !name->empty()) {
    auto u = envd.user_or_default(*name);
    if (!u) return make_error(ErrorCode::kUnauthenticated, "error looking up user '" + *name + "': " + u.error().message());
    return u;
  }
  auto u = envd.request_user(ex);
  if (!u) return make_error(ErrorCode::kUnauthenticated, u.error().message());
  return u;
}

std::string base_name(std::string_view path) {
  size_t slash = path.rfind('/');
  std::string_view b = slash == std::string_view::npos ? path : path.substr(slash + 1);
  return b.empty() ? std::string("/") : std::string(b);
}

std::string dir_name(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

// `inline; filename=...` as Go's mime.FormatMediaType writes it: a bare token
// when possible, a quoted string for other printable ASCII, and the RFC 2231
// form (filename*=utf-8''...) for anything else.
std::string content_disposition(std::string_view name) {
  auto token_char = [](unsigned char c) {
    return c > 0x20 && c < 0x7f && std::string_view(R"(()<>@,;:\"/[]?=)").find(static_cast<char>(c)) == std::string_view::npos;
  };
  bool token = !name.empty() && std::all_of(name.begin(), name.end(), [&](char c) { return token_char(c); });
  if (token) return "inline; filename=" + std::string(name);
  bool printable = std::all_of(name.begin(), name.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f;
  });
  if (printable) {
    std::string out = "inline; filename=\"";
    for (char c : name) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
    return out;
  }
  // RFC 5987 attr-chars are kept as they are.
  return "inline; filename*=utf-8''" + url_encode(name, "!#$&+^`|");
}

std::string content_type_for(std::string_view path) {
  static const std::pair<std::string_view, std::string_view> kTypes[] = {
      {".txt", "text/plain; charset=utf-8"}, {".html", "text/html; charset=utf-8"},
      {".htm", "text/html; charset=utf-8"},  {".css", "text/css; charset=utf-8"},
      {".csv", "text/csv; charset=utf-8"},   {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"}, {".json", "application/json"},
      {".xml", "text/xml; charset=utf-8"},   {".svg", "image/svg+xml"},
      {".png", "image/png"},                 {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},               {".gif", "image/gif"},
      {".webp", "image/webp"},               {".pdf", "application/pdf"},
      {".wasm", "application/wasm"},         {".zip", "application/zip"},
      {".gz", "application/gzip"},
  };
  std::string base = base_name(path);
  size_t dot = base.rfind('.');
  if (dot != std::string::npos && dot > 0) {
    std::string ext = base.substr(dot);
    for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (const auto& [e, t] : kTypes) {
      if (e == ext) return std::string(t);
    }
  }
  return "application/octet-stream";
}

// Accept-Encoding negotiation as envd does it: the supported coding with the
// highest q wins; identity is acceptable unless refused with q=0 (then, with
// no gzip either, 406).
struct Encoding {
  bool gzip = false;
  bool identity_ok = true;
};
Result<Encoding> negotiate_encoding(std::string_view header) {
  if (header.empty()) return Encoding{};
  struct Coding {
    std::string name;
    double q;
  };
  std::vector<Coding> codings;
  while (!header.empty()) {
    size_t comma = header.find(',');
    std::string_view item = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    size_t semi = item.find(';');
    std::string name(item.substr(0, semi));
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    double q = 1.0;
    if (semi != std::string_view::npos) {
      std::string params(item.substr(semi + 1));
      size_t at = params.find("q=");
      if (at == std::string::npos) at = params.find("Q=");
      if (at != std::string::npos) {
        try {
          q = std::stod(params.substr(at + 2));
        } catch (...) {
          q = 1.0;
        }
      }
    }
    if (!name.empty()) codings.push_back({std::move(name), q});
  }
  std::stable_sort(codings.begin(), codings.end(), [](const Coding& a, const Coding& b) { return a.q > b.q; });
  bool identity_refused = std::any_of(codings.begin(), codings.end(),
                                      [](const Coding& c) { return c.name == "identity" && c.q == 0; });
  for (const auto& c : codings) {
    if (c.q == 0) continue;
    if (c.name == "identity") return Encoding{false, true};
    if (c.name == "*") return Encoding{identity_refused, !identity_refused};
    if (c.name == "gzip") return Encoding{true, !identity_refused};
  }
  if (!identity_refused) return Encoding{};
  return make_error(ErrorCode::kUnimplemented, "no acceptable encoding found, supported: [gzip]");
}

// X-Metadata-<key>: <value> headers, keys lowercased (a repeated header keeps
// its first value, an empty key is dropped), checked against the xattr limits.
Result<std::map<std::string, std::string>> metadata_from_headers(const http::Exchange& ex) {
  std::map<std::string, std::string> md;
  size_t total = 0;
  for (const auto& f : ex.head()) {
    std::string name(f.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!name.starts_with(kMetadataHeaderPrefix)) continue;
    std::string key = name.substr(kMetadataHeaderPrefix.size());
    if (key.empty() || md.contains(key)) continue;
    std::string value(f.value());
    if (key.size() > kMaxMetadataKey) {
      return make_error(ErrorCode::kInvalidArgument, "invalid metadata: key \"" + key + "\" exceeds " +
                                                         std::to_string(kMaxMetadataKey) + " bytes");
    }
    for (unsigned char c : value) {
      if (c < 0x20 || c > 0x7e) {
        return make_error(ErrorCode::kInvalidArgument, "invalid metadata: value for key \"" + key +
                                                           "\" contains a non-printable-ASCII byte");
      }
    }
    total += kXattrPrefix.size() + key.size() + value.size();
    md.emplace(std::move(key), std::move(value));
  }
  if (total > kMaxMetadataTotal) {
    return make_error(ErrorCode::kInvalidArgument, "invalid metadata: total size " + std::to_string(total) +
                                                       " exceeds " + std::to_string(kMaxMetadataTotal) + " bytes");
  }
  return md;
}

std::string random_suffix() {
  unsigned char b[8];
  if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) {
    auto t = std::chrono::steady_clock::now().time_since_epoch().count();
    std::memcpy(b, &t, sizeof b);
  }
  return to_hex(b, sizeof b);
}

// One file being uploaded. Regular files are written to a temp file in the
// destination's directory and renamed over it by commit(); the temp file is
// removed if the upload is abandoned. An existing non-regular destination
// (a device such as /dev/null, a FIFO) cannot be replaced that way and is
// written in place.
class UploadFile {
 public:
  // Missing parent directories are made by envd and given to the user, as
  // E2B's envd does, but never through a symlink or other non-directory
  // (fs_ops.h, ensure_dirs_for). Every other path operation (the rest of the
  // parents, the look at the destination, the temp file, the rename, the
  // clean-up) runs with the user's credentials (sys/run_as.h): the kernel
  // decides what the user may write, and what is created is the user's. The
  // data goes through the descriptor.
  static Result<std::unique_ptr<UploadFile>> open(const std::string& path, const User& user) {
    auto f = std::unique_ptr<UploadFile>(new UploadFile());
    f->path_ = path;
    f->creds_ = user.credentials();
    UploadFile* p = f.get();
    // Missing parents first, made by envd and given to the user (as E2B's
    // envd does), never through a link; what is left, as the user.
    COPPICE_TRY_CTX(ensure_dirs_for(dir_name(path), f->creds_.uid, f->creds_.gid), "create parent directories");
    COPPICE_TRY(sys::run_as(f->creds_, [p] { return p->open_as_user(); }));
    return f;
  }

  ~UploadFile() {
    if (!tmp_.empty() && !committed_) {
      const std::string& tmp = tmp_;
      auto s = sys::run_with_credentials(creds_, [&tmp] { ::unlink(tmp.c_str()); });
      if (!s) {
        COPPICE_LOG_RATE(warn, 5) << "remove " << tmp_ << ": " << s.error().to_string();
      }
    }
  }

  const std::string& path() const { return path_; }

  Status write(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::write(fd_.get(), data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_error("write " + path_);
      }
      data.remove_prefix(static_cast<size_t>(n));
      written_ += static_cast<uint64_t>(n);
    }
    return ok();
  }

  // Sets the metadata (replacing any earlier user.e2b.* set) and puts the file
  // in place. Returns the metadata that was stored (none where the
  // filesystem has no xattrs).
  Result<std::map<std::string, std::string>> commit(const std::map<std::string, std::string>& metadata) {
    return sys::run_as(creds_, [&] { return commit_as_user(metadata); });
  }

 private:
  UploadFile() = default;

  Status open_as_user() {
    COPPICE_TRY_CTX(ensure_dirs(dir_name(path_)), "create parent directories");
    struct stat st {};
    bool in_place = false;
    if (::lstat(path_.c_str(), &st) == 0) {
      if (S_ISLNK(st.st_mode)) {
        // Write through the link, as open(2) would: replace its target.
        char real[PATH_MAX];
        if (::realpath(path_.c_str(), real) != nullptr) {
          target_ = real;
          if (::stat(real, &st) != 0) return errno_error("stat " + target_);
        } else if (errno != ENOENT) {
          return errno_error("resolve " + path_);
        } else {
          st.st_mode = 0;  // dangling: the link itself is replaced
        }
      }
      if (S_ISDIR(st.st_mode)) return make_error(ErrorCode::kInvalidArgument, "path is a directory: " + path_, EISDIR);
      if (S_ISREG(st.st_mode)) keep_mode_ = st.st_mode & 07777;
      else if (st.st_mode != 0) in_place = true;
    } else if (errno != ENOENT) {
      return errno_error("stat " + path_);
    }
    if (target_.empty()) target_ = path_;

    if (in_place) {
      fd_ = UniqueFd(::open(target_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC | O_NONBLOCK));
      if (!fd_) return errno_error("open " + target_);
      return ok();
    }
    // ".<name>.upload-<16 hex>", the name cut so the whole stays under NAME_MAX.
    std::string tmp = dir_name(target_) + "/." + base_name(target_).substr(0, 200) + ".upload-" + random_suffix();
    fd_ = UniqueFd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
    if (!fd_) return errno_error("create temp file in " + dir_name(target_));
    tmp_ = std::move(tmp);
    return ok();
  }

  Result<std::map<std::string, std::string>> commit_as_user(const std::map<std::string, std::string>& metadata) {
    std::map<std::string, std::string> stored;
    // Metadata before the mode: a read-only destination mode would refuse it.
    auto md = set_metadata(metadata);
    if (!md) return std::unexpected(md.error());
    if (*md) stored = metadata;
    if (!tmp_.empty()) {
      // A replaced file keeps its mode (a new one has 0666 less the umask).
      if (keep_mode_ && ::fchmod(fd_.get(), *keep_mode_) != 0) return errno_error("chmod " + tmp_);
      if (::rename(tmp_.c_str(), target_.c_str()) != 0) return errno_error("rename into place " + path_);
      committed_ = true;
      // Watchers expect a write event on the destination's own name, as
      // envd's in-place write produces; the rename alone reports a move. A
      // same-size truncate is a modification event (IN_MODIFY) and changes
      // nothing else.
      if (::ftruncate(fd_.get(), static_cast<off_t>(written_)) != 0) {
        COPPICE_LOG_RATE(debug, 5) << "ftruncate " << path_ << ": " << strerror(errno);
      }
    }
    committed_ = true;
    return stored;
  }

  // True when the xattrs were written, false when the filesystem has none.
  Result<bool> set_metadata(const std::map<std::string, std::string>& metadata) {
    int fd = fd_.get();
    if (tmp_.empty()) {
      // Written in place: clear the previous upload's keys first.
      std::vector<char> names(65536);
      ssize_t n = ::flistxattr(fd, names.data(), names.size());
      if (n < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP)) return false;
      for (ssize_t i = 0; n > 0 && i < n;) {
        std::string name(names.data() + i);
        i += static_cast<ssize_t>(name.size()) + 1;
        if (name.starts_with(kXattrPrefix) && !metadata.contains(name.substr(kXattrPrefix.size()))) {
          ::fremovexattr(fd, name.c_str());
        }
      }
    }
    for (const auto& [k, v] : metadata) {
      std::string name = std::string(kXattrPrefix) + k;
      if (::fsetxattr(fd, name.c_str(), v.data(), v.size(), 0) != 0) {
        int err = errno;
        if (err == ENOTSUP || err == EOPNOTSUPP) {
          COPPICE_LOG_RATE(warn, 5) << "filesystem does not support xattrs; metadata of " << path_ << " not stored";
          return false;
        }
        return errno_error("set metadata " + name + " on " + path_, err);
      }
    }
    return true;
  }

  std::string path_;    // the destination as resolved from the request
  std::string target_;  // where the data goes (through a symlink, its target)
  std::string tmp_;     // the temp file; empty when writing in place
  sys::Credentials creds_;          // the user's, for every path operation
  std::optional<mode_t> keep_mode_;  // the mode of the regular file replaced
  UniqueFd fd_;
  uint64_t written_ = 0;
  bool committed_ = false;
};

json write_info(const std::string& path, const std::map<std::string, std::string>& metadata) {
  json e = json::object();
  e["path"] = path;
  e["name"] = base_name(path);
  e["type"] = "file";
  if (!metadata.empty()) e["metadata"] = metadata;
  return e;
}

// --- GET ---

asio::awaitable<void> handle_download(Envd& envd, http::Exchange& ex) {
  auto user = files_user(envd, ex);
  if (!user) co_return co_await respond_error(ex, user.error());
  const std::string* qpath = query_param(ex, "path");
  auto resolved = envd.resolve_path(qpath ? *qpath : "", *user);
  if (!resolved) co_return co_await respond_error(ex, resolved.error());
  const std::string& path = *resolved;

  // Opened with the user's credentials: the kernel decides what the user may
  // read, also through symlinks.
  auto opened = sys::run_as(user->credentials(), [&path]() -> Result<UniqueFd> {
    UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!f) return errno_error("open '" + path + "'");
    return f;
  });
  if (!opened) {
    int err = opened.error().sys_errno();
    if (err == ENOENT || err == ENOTDIR) co_return co_await respond_error(ex, 404, "path '" + path + "' does not exist");
    co_return co_await respond_error(ex, opened.error());
  }
  UniqueFd fd = std::move(*opened);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) co_return co_await respond_error(ex, Error::from_errno(errno, "stat '" + path + "'"));
  if (S_ISDIR(st.st_mode)) co_return co_await respond_error(ex, 400, "path '" + path + "' is a directory");
  // Reads of FIFOs and sockets could block the single envd thread.
  if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
    co_return co_await respond_error(ex, 400, "path '" + path + "' is not a regular file");
  }
  // Reads from here on block normally (the descriptor is a file or device).
  ::fcntl(fd.get(), F_SETFL, 0);

  auto enc = negotiate_encoding(ex.header("Accept-Encoding"));
  if (!enc) co_return co_await respond_error(ex, 406, enc.error().message());

  http::Fields headers;
  headers.emplace_back("Content-Type", content_type_for(path));
  headers.emplace_back("Content-Disposition", content_disposition(base_name(path)));
  headers.emplace_back("Vary", "Accept-Encoding");
  headers.emplace_back("Last-Modified", [&] {
    char b[64];
    struct tm tm {};
    gmtime_r(&st.st_mtim.tv_sec, &tm);
    strftime(b, sizeof b, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return std::string(b);
  }());

  std::unique_ptr<char[]> buf(new char[kIoChunk]);
  auto read_chunk = [&](size_t max) -> Result<size_t> {
    for (;;) {
      ssize_t n = ::read(fd.get(), buf.get(), std::min(max, kIoChunk));
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) return errno_error("read '" + path + "'");
    }
  };

  if (enc->gzip) {
    auto first = read_chunk(kIoChunk);
    if (!first) co_return co_await respond_error(ex, first.error());
    if (*first == 0 && enc->identity_ok) {
      // An empty file goes out as identity with Content-Length: 0, which the
      // SDK checks for; undici asks for gzip on every read.
      if (auto s = co_await ex.start(200, headers, uint64_t{0}); !s) co_return;
      co_await ex.finish();
      co_return;
    }
    headers.emplace_back("Content-Encoding", "gzip");
    // Fastest level: undici's fetch sends "Accept-Encoding: gzip, deflate" on
    // every SDK read, so most downloads are compressed on the fly, on envd's
    // one thread.
    GzipEncoder gz(1);
    std::string out;
    if (auto s = co_await ex.start(200, headers, std::nullopt); !s) co_return;
    size_t n = *first;
    while (n > 0) {
      out.clear();
      if (auto s = gz.update(std::string_view(buf.get(), n), out); !s) {
        ex.set_close();
        co_return;
      }
      if (auto s = co_await ex.write(out); !s) co_return;
      auto r = read_chunk(kIoChunk);
      if (!r) {
        // The head is out: the only way to report the failure is a truncated body.
        COPPICE_LOG_RATE(warn, 5) << "GET /files: " << r.error().to_string();
        ex.set_close();
        co_return;
      }
      n = *r;
    }
    out.clear();
    if (auto s = gz.finish(out); !s) {
      ex.set_close();
      co_return;
    }
    if (auto s = co_await ex.write(out); !s) co_return;
    co_await ex.finish();
    co_return;
  }

  if (S_ISREG(st.st_mode) && st.st_size > 0) {
    // The size at open time is what is sent; if the file shrinks meanwhile
    // the connection is closed early, so the client sees a short body.
    uint64_t left = static_cast<uint64_t>(st.st_size);
    if (auto s = co_await ex.start(200, headers, left); !s) co_return;
    while (left > 0) {
      auto r = read_chunk(static_cast<size_t>(std::min<uint64_t>(left, kIoChunk)));
      if (!r || *r == 0) {
        if (!r) {
          COPPICE_LOG_RATE(warn, 5) << "GET /files: " << r.error().to_string();
        }
        ex.set_close();
        co_return;
      }
      if (auto s = co_await ex.write(std::string_view(buf.get(), *r)); !s) co_return;
      left -= *r;
    }
    co_await ex.finish();
    co_return;
  }

  // Size unknown (empty per stat, as /proc files are, or a device): an empty
  // read is an empty file (Content-Length: 0, which the SDK relies on);
  // otherwise stream it chunked.
  auto first = read_chunk(kIoChunk);
  if (!first) co_return co_await respond_error(ex, first.error());
  if (*first == 0) {
    if (auto s = co_await ex.start(200, headers, uint64_t{0}); !s) co_return;
    co_await ex.finish();
    co_return;
  }
  if (auto s = co_await ex.start(200, headers, std::nullopt); !s) co_return;
  size_t n = *first;
  while (n > 0) {
    if (auto s = co_await ex.write(std::string_view(buf.get(), n)); !s) co_return;
    auto r = read_chunk(kIoChunk);
    if (!r) {
      COPPICE_LOG_RATE(warn, 5) << "GET /files: " << r.error().to_string();
      ex.set_close();
      co_return;
    }
    n = *r;
  }
  co_await ex.finish();
}

// --- POST ---

// Where the bytes of an upload go once decoded: a single file (raw body) or
// the multipart parser, which opens one file per `file` part.
class UploadSink {
 public:
  UploadSink(Envd& envd, const User& user, std::map<std::string, std::string> metadata,
             std::optional<std::string> query_path)
      : envd_(envd), user_(user), metadata_(std::move(metadata)), query_path_(std::move(query_path)) {}

  // Raw body: the one file is the `path` query.
  Status begin_raw() {
    if (!query_path_) return make_error(ErrorCode::kInvalidArgument, "path query parameter is required for raw body upload");
    return open_file(*query_path_);
  }

  // Multipart: parts named `file` are files; their destination is the `path`
  // query when given (envd's precedence), else the part's filename verbatim.
  Status begin_multipart(const std::string& boundary) {
    MultipartCallbacks cb;
    cb.on_part_begin = [this](const MultipartPart& p) -> Status {
      if (p.name != "file") return ok();  // other form fields are ignored
      if (query_path_) return open_file(*query_path_);
      if (!p.filename) return make_error(ErrorCode::kInvalidArgument, "filename not found in Content-Disposition header");
      return open_file(*p.filename);
    };
    cb.on_part_data = [this](std::string_view d) -> Status { return current_ ? current_->write(d) : ok(); };
    cb.on_part_end = [this]() -> Status { return commit_current(); };
    parser_.emplace(boundary, std::move(cb));
    return ok();
  }

  Status data(std::string_view d) {
    if (parser_) return parser_->feed(d);
    return current_->write(d);
  }

  Status finish() {
    if (parser_) {
      COPPICE_TRY_CTX(parser_->finish(), "multipart");
      if (written_.empty()) return make_error(ErrorCode::kInvalidArgument, "no file part in the multipart body");
      return ok();
    }
    return commit_current();
  }

  // Drops the file being written (its temp file is removed now, before the
  // client hears of the failure).
  void abort() { current_.reset(); }

  const json& written() const { return written_; }

 private:
  Status open_file(const std::string& requested) {
    auto resolved = envd_.resolve_path(requested, user_);
    if (!resolved) return std::unexpected(std::move(resolved.error()));
    const std::string& path = *resolved;
    if (std::find(paths_.begin(), paths_.end(), path) != paths_.end()) {
      return make_error(ErrorCode::kInvalidArgument, "you cannot upload multiple files to the same path '" + path +
                                                         "' in one upload request");
    }
    auto f = UploadFile::open(path, user_);
    if (!f) return std::unexpected(std::move(f.error()).context("upload " + path));
    current_ = std::move(*f);
    paths_.push_back(path);
    return ok();
  }

  Status commit_current() {
    if (!current_) return ok();
    auto stored = current_->commit(metadata_);
    if (!stored) return std::unexpected(stored.error());
    written_.push_back(write_info(current_->path(), *stored));
    current_.reset();
    return ok();
  }

  Envd& envd_;
  const User& user_;
  std::map<std::string, std::string> metadata_;
  std::optional<std::string> query_path_;
  std::optional<MultipartParser> parser_;
  std::unique_ptr<UploadFile> current_;
  std::vector<std::string> paths_;
  json written_ = json::array();
};

asio::awaitable<void> handle_upload(Envd& envd, http::Exchange& ex) {
  auto user = files_user(envd, ex);
  if (!user) co_return co_await respond_error(ex, user.error());

  // Content-Encoding covers the whole body, multipart framing included.
  std::optional<GzipDecoder> gunzip;
  {
    std::string ce = ex.header("Content-Encoding");
    std::string coding = ce.substr(0, ce.find(';'));
    coding.erase(0, coding.find_first_not_of(" \t"));
    coding.erase(coding.find_last_not_of(" \t") + 1);
    for (char& c : coding) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (coding == "gzip" || coding == "x-gzip") {
      gunzip.emplace();
    } else if (!coding.empty() && coding != "identity") {
      co_return co_await respond_error(ex, 400, "unsupported Content-Encoding: " + ce + ", supported: [gzip]");
    }
  }

  auto metadata = metadata_from_headers(ex);
  if (!metadata) co_return co_await respond_error(ex, metadata.error());

  std::optional<std::string> query_path;
  if (const std::string* p = query_param(ex, "path")) query_path = *p;
  UploadSink sink(envd, *user, std::move(*metadata), std::move(query_path));

  // multipart/* is parsed; any other body is the file itself.
  std::string content_type = ex.header("Content-Type");
  Status begun;
  if (auto mt = parse_media_type(content_type); mt && mt->type.starts_with("multipart/")) {
    auto boundary = multipart_boundary(content_type);
    begun = boundary ? sink.begin_multipart(*boundary) : Status(std::unexpected(boundary.error()));
  } else if (!mt && content_type.find("multipart/") != std::string::npos) {
    begun = std::unexpected(std::move(mt.error()).context("Content-Type"));
  } else {
    begun = sink.begin_raw();
  }
  if (!begun) co_return co_await respond_error(ex, begun.error());

  std::vector<char> buf(kIoChunk);
  auto feed = [&](std::string_view d) -> Status { return sink.data(d); };
  Status st = ok();
  for (;;) {
    auto n = co_await ex.read_some(buf);
    if (!n) {
      // The client went away or sent a broken body: nothing is put in place.
      st = std::unexpected(std::move(n.error()).context("read upload body"));
      break;
    }
    if (*n == 0) break;
    std::string_view chunk(buf.data(), *n);
    st = gunzip ? gunzip->update(chunk, feed) : sink.data(chunk);
    if (!st) {
      if (st.error().code() == ErrorCode::kInvalidArgument && gunzip) {
        st = std::unexpected(std::move(st.error()).context("decompress request body"));
      }
      break;
    }
  }
  if (st && gunzip) {
    st = gunzip->finish();
    if (!st) st = std::unexpected(std::move(st.error()).context("decompress request body"));
  }
  if (st) st = sink.finish();
  // On failure the server drains what is left of the body afterwards, so the
  // client gets to read the error.
  if (!st) {
    sink.abort();
    co_return co_await respond_error(ex, st.error());
  }
  co_await ex.respond_json(200, sink.written().dump(-1, ' ', false, json::error_handler_t::replace));
}

}  // namespace


asio::awaitable<void> handle_files(Envd& envd, http::Exchange& ex) {
  using http::bhttp::verb;
  const bool get = ex.method() == verb::get;
  if (!get && ex.method() != verb::post) {
    const http::Fields allow{{"Allow", "GET, POST"}};
    co_await ex.respond_json(405, rest_error(405, "use GET or POST for /files"), allow);
    co_return;
  }
  if (auto a = check_access(envd, ex, get ? "read" : "write"); !a) {
    co_await respond_error(ex, a.error());
    co_return;
  }
  if (get) {
    co_await handle_download(envd, ex);
  } else {
    co_await handle_upload(envd, ex);
  }
}

}  // namespace coppice::envd
