#include "envd/gzip.h"

#include <zlib.h>

#include <cstring>

namespace coppice::envd {

namespace {
// windowBits for deflateInit2/inflateInit2: 15 (32 KiB window) + 16 selects
// the gzip wrapper rather than zlib's.
constexpr int kGzipWindowBits = 15 + 16;
constexpr int kMemLevel = 8;

std::string zmsg(const z_stream& z, int rc) {
  if (z.msg) return z.msg;
  return "zlib error " + std::to_string(rc);
}
}  // namespace

// --- encoder ---

struct GzipEncoder::State {
  z_stream z{};
  bool ok = false;
  bool finished = false;
  ~State() {
    if (ok) deflateEnd(&z);
  }
};

GzipEncoder::GzipEncoder(int level) : s_(std::make_unique<State>()) {
  s_->ok = deflateInit2(&s_->z, level, Z_DEFLATED, kGzipWindowBits, kMemLevel, Z_DEFAULT_STRATEGY) == Z_OK;
}
GzipEncoder::~GzipEncoder() = default;
GzipEncoder::GzipEncoder(GzipEncoder&&) noexcept = default;
GzipEncoder& GzipEncoder::operator=(GzipEncoder&&) noexcept = default;

Status GzipEncoder::run(std::string_view in, int flush, std::string& out) {
  if (!s_ || !s_->ok) return make_error(ErrorCode::kInternal, "gzip encoder: deflateInit2 failed");
  if (s_->finished) return make_error(ErrorCode::kInternal, "gzip encoder: already finished");
  z_stream& z = s_->z;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  char buf[16384];
  for (;;) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    int rc = deflate(&z, flush);
    if (rc == Z_STREAM_ERROR) return make_error(ErrorCode::kInternal, "gzip encoder: " + zmsg(z, rc));
    out.append(buf, sizeof buf - z.avail_out);
    if (flush == Z_FINISH) {
      if (rc == Z_STREAM_END) {
        s_->finished = true;
        return ok();
      }
      continue;
    }
    // Without Z_FINISH, deflate is done with this input once it neither
    // filled the output buffer nor has input left.
    if (z.avail_in == 0 && z.avail_out != 0) return ok();
  }
}

Status GzipEncoder::update(std::string_view in, std::string& out) {
  if (in.empty()) return ok();
  return run(in, Z_NO_FLUSH, out);
}

Status GzipEncoder::finish(std::string& out) { return run({}, Z_FINISH, out); }

// --- decoder ---

struct GzipDecoder::State {
  z_stream z{};
  bool ok = false;
  bool in_member = false;     // a member has started and not yet ended
  bool seen_member = false;   // at least one member ended completely
  ~State() {
    if (ok) inflateEnd(&z);
  }
};

GzipDecoder::GzipDecoder() : s_(std::make_unique<State>()) {
  s_->ok = inflateInit2(&s_->z, kGzipWindowBits) == Z_OK;
}
GzipDecoder::~GzipDecoder() = default;
GzipDecoder::GzipDecoder(GzipDecoder&&) noexcept = default;
GzipDecoder& GzipDecoder::operator=(GzipDecoder&&) noexcept = default;

Status GzipDecoder::update(std::string_view in, const Sink& sink) {
  if (!s_ || !s_->ok) return make_error(ErrorCode::kInternal, "gzip decoder: inflateInit2 failed");
  z_stream& z = s_->z;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  // The output buffer lives on the heap: kGzipOutChunk is too large for the
  // coroutine frames that call this.
  std::unique_ptr<char[]> buf(new char[kGzipOutChunk]);
  while (z.avail_in > 0) {
    if (!s_->in_member && s_->seen_member) {
      // Bytes after a complete member start another member.
      inflateReset(&z);
    }
    s_->in_member = true;
    z.next_out = reinterpret_cast<Bytef*>(buf.get());
    z.avail_out = kGzipOutChunk;
    int rc = inflate(&z, Z_NO_FLUSH);
    size_t produced = kGzipOutChunk - z.avail_out;
    if (rc == Z_NEED_DICT || rc == Z_DATA_ERROR) {
      return make_error(ErrorCode::kInvalidArgument, "invalid gzip data: " + zmsg(z, rc));
    }
    if (rc == Z_MEM_ERROR) return make_error(ErrorCode::kResourceExhausted, "gzip decoder: out of memory");
    if (rc == Z_STREAM_ERROR) return make_error(ErrorCode::kInternal, "gzip decoder: " + zmsg(z, rc));
    if (produced > 0) {
      if (auto st = sink(std::string_view(buf.get(), produced)); !st) return st;
    }
    if (rc == Z_STREAM_END) {
      s_->in_member = false;
      s_->seen_member = true;
      continue;
    }
    // Z_OK or Z_BUF_ERROR: if the output buffer was not filled, inflate has
    // consumed what it can and wants more input.
    if (z.avail_out != 0 && z.avail_in == 0) break;
  }
  // inflate may hold back output until the output buffer has room even when
  // the input is used up; drain it.
  while (s_->in_member) {
    z.next_out = reinterpret_cast<Bytef*>(buf.get());
    z.avail_out = kGzipOutChunk;
    int rc = inflate(&z, Z_NO_FLUSH);
    size_t produced = kGzipOutChunk - z.avail_out;
    if (rc == Z_NEED_DICT || rc == Z_DATA_ERROR) {
      return make_error(ErrorCode::kInvalidArgument, "invalid gzip data: " + zmsg(z, rc));
    }
    if (rc == Z_MEM_ERROR) return make_error(ErrorCode::kResourceExhausted, "gzip decoder: out of memory");
    if (produced > 0) {
      if (auto st = sink(std::string_view(buf.get(), produced)); !st) return st;
    }
    if (rc == Z_STREAM_END) {
      s_->in_member = false;
      s_->seen_member = true;
      break;
    }
    if (produced == 0) break;
  }
  return ok();
}

Status GzipDecoder::finish() {
  if (!s_ || !s_->ok) return make_error(ErrorCode::kInternal, "gzip decoder: inflateInit2 failed");
  if (s_->in_member) return make_error(ErrorCode::kInvalidArgument, "invalid gzip data: unexpected end of stream");
  if (!s_->seen_member) return make_error(ErrorCode::kInvalidArgument, "invalid gzip data: empty body");
  return ok();
}

Result<std::string> gzip_compress(std::string_view data, int level) {
  GzipEncoder enc(level);
  std::string out;
  COPPICE_TRY_CTX(enc.update(data, out), "gzip");
  COPPICE_TRY_CTX(enc.finish(out), "gzip");
  return out;
}

Result<std::string> gzip_decompress(std::string_view data) {
  GzipDecoder dec;
  std::string out;
  auto sink = [&](std::string_view piece) -> Status {
    out.append(piece);
    return ok();
  };
  COPPICE_TRY_CTX(dec.update(data, sink), "gunzip");
  COPPICE_TRY_CTX(dec.finish(), "gunzip");
  return out;
}

}  // namespace coppice::envd
