#include "envd/multipart.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace coppice::envd {
namespace {

struct Collected {
  std::string name;
  std::optional<std::string> filename;
  std::string data;
  bool ended = false;
};

// Feeds `body` split at the given positions and collects the parts.
struct Harness {
  std::vector<Collected> parts;
  MultipartParser parser;

  explicit Harness(std::string boundary)
      : parser(std::move(boundary), MultipartCallbacks{
                                        [this](const MultipartPart& p) -> Status {
                                          parts.push_back({p.name, p.filename, "", false});
                                          return ok();
                                        },
                                        [this](std::string_view d) -> Status {
                                          parts.back().data.append(d);
                                          return ok();
                                        },
                                        [this]() -> Status {
                                          parts.back().ended = true;
                                          return ok();
                                        }}) {}

  Status run(std::string_view body, const std::vector<size_t>& cuts) {
    size_t prev = 0;
    for (size_t c : cuts) {
      if (auto st = parser.feed(body.substr(prev, c - prev)); !st) return st;
      prev = c;
    }
    if (auto st = parser.feed(body.substr(prev)); !st) return st;
    return parser.finish();
  }
};

std::string part(std::string_view boundary, std::string_view disposition, std::string_view data) {
  std::string s = "--" + std::string(boundary) + "\r\n";
  s += "Content-Disposition: " + std::string(disposition) + "\r\n";
  s += "Content-Type: application/octet-stream\r\n\r\n";
  s += data;
  s += "\r\n";
  return s;
}

const std::string kB = "----formdata-undici-0123456789";

std::string two_part_body() {
  // Data that looks like a delimiter without being one, and CRLFs everywhere.
  std::string d1 = "line1\r\nline2\r\n--" + kB.substr(0, 10) + "\r\n\r\n-";
  std::string d2 = std::string("\r\n\0\xff binary \r", 14);
  return "preamble ignored\r\n" + part(kB, R"(form-data; name="file"; filename="dir/a b.txt")", d1) +
         part(kB, R"(form-data; name="file"; filename="ünï cødé/ф.bin")", d2) + "--" + kB + "--\r\nepilogue";
}

TEST(Multipart, SplitAtEveryPosition) {
  std::string body = two_part_body();
  for (size_t i = 0; i <= body.size(); ++i) {
    Harness h(kB);
    ASSERT_TRUE(h.run(body, {i})) << "cut at " << i;
    ASSERT_EQ(h.parts.size(), 2u) << "cut at " << i;
    EXPECT_EQ(h.parts[0].name, "file");
    EXPECT_EQ(*h.parts[0].filename, "dir/a b.txt");
    EXPECT_EQ(h.parts[0].data, "line1\r\nline2\r\n--" + kB.substr(0, 10) + "\r\n\r\n-");
    EXPECT_TRUE(h.parts[0].ended);
    EXPECT_EQ(*h.parts[1].filename, "ünï cødé/ф.bin");
    EXPECT_EQ(h.parts[1].data, std::string("\r\n\0\xff binary \r", 14));
    EXPECT_TRUE(h.parts[1].ended);
    EXPECT_TRUE(h.parser.done());
  }
}

TEST(Multipart, SplitAtEveryPairOfPositions) {
  std::string body = two_part_body();
  for (size_t i = 0; i <= body.size(); i += 3) {
    for (size_t j = i; j <= body.size(); ++j) {
      Harness h(kB);
      ASSERT_TRUE(h.run(body, {i, j})) << i << "," << j;
      ASSERT_EQ(h.parts.size(), 2u);
      EXPECT_EQ(h.parts[1].data, std::string("\r\n\0\xff binary \r", 14));
    }
  }
}

TEST(Multipart, ByteAtATime) {
  std::string body = two_part_body();
  std::vector<size_t> cuts;
  for (size_t i = 1; i < body.size(); ++i) cuts.push_back(i);
  Harness h(kB);
  ASSERT_TRUE(h.run(body, cuts));
  ASSERT_EQ(h.parts.size(), 2u);
  EXPECT_EQ(*h.parts[0].filename, "dir/a b.txt");
}

TEST(Multipart, EmptyPartAndNoHeaders) {
  std::string body = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"e\"\r\n\r\n\r\n--b\r\n\r\nraw\r\n--b--";
  Harness h("b");
  ASSERT_TRUE(h.run(body, {}));
  ASSERT_EQ(h.parts.size(), 2u);
  EXPECT_EQ(h.parts[0].data, "");
  EXPECT_EQ(h.parts[1].name, "");
  EXPECT_FALSE(h.parts[1].filename.has_value());
  EXPECT_EQ(h.parts[1].data, "raw");
}

TEST(Multipart, QuotedAndEscapedFilenames) {
  auto mt = parse_media_type(R"(form-data; name="file"; filename="a \"q\" \\ b")");
  ASSERT_TRUE(mt);
  EXPECT_EQ(mt->type, "form-data");
  EXPECT_EQ(mt->params["filename"], R"(a "q" \ b)");
  // A backslash before anything else stays (Windows paths).
  mt = parse_media_type(R"(form-data; filename="C:\dir\f.txt")");
  ASSERT_TRUE(mt);
  EXPECT_EQ(mt->params["filename"], R"(C:\dir\f.txt)");
  // RFC 5987 extended value wins.
  mt = parse_media_type("form-data; name=file; filename=\"x\"; filename*=utf-8''%C3%BC%20y");
  ASSERT_TRUE(mt);
  EXPECT_EQ(mt->params["name"], "file");
  EXPECT_EQ(mt->params["filename"], "ü y");
  EXPECT_FALSE(parse_media_type(R"(form-data; filename="unterminated)"));
  EXPECT_FALSE(parse_media_type(R"(form-data; filename=a b)"));
  EXPECT_FALSE(parse_media_type(R"(form-data; name="a"; name="b")"));
}

TEST(Multipart, Boundary) {
  auto b = multipart_boundary("multipart/form-data; boundary=----formdata-undici-05");
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, "----formdata-undici-05");
  b = multipart_boundary(R"(Multipart/Form-Data; charset=utf-8; boundary="a b:c")");
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, "a b:c");
  EXPECT_FALSE(multipart_boundary("multipart/form-data"));
  EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary="));
  EXPECT_FALSE(multipart_boundary("application/octet-stream; boundary=x"));
  EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary=" + std::string(71, 'x')));
}

TEST(Multipart, MalformedInput) {
  // Truncated inside a part.
  std::string body = two_part_body();
  std::string trunc = body.substr(0, body.find("ünï") + 40);
  Harness h1(kB);
  auto st = h1.run(trunc, {});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
  // No closing delimiter at all.
  Harness h2(kB);
  EXPECT_FALSE(h2.run("--" + kB + "\r\n\r\ndata", {}));
  // No delimiter anywhere.
  Harness h3(kB);
  EXPECT_FALSE(h3.run("just some bytes", {}));
  // Empty body.
  Harness h4(kB);
  EXPECT_FALSE(h4.run("", {}));
  // Garbage after a delimiter.
  Harness h5("b");
  EXPECT_FALSE(h5.run("--bXYZ\r\n\r\n--b--", {}));
  // Header line without a colon.
  Harness h6("b");
  EXPECT_FALSE(h6.run("--b\r\nnot a header\r\n\r\nx\r\n--b--", {}));
  // Bad Content-Disposition.
  Harness h7("b");
  EXPECT_FALSE(h7.run("--b\r\nContent-Disposition: form-data; filename=\"x\r\n\r\nx\r\n--b--", {}));
}

TEST(Multipart, HeaderBlockIsBounded) {
  Harness h("b");
  std::string body = "--b\r\nX-Long: " + std::string(MultipartParser::kMaxHeaderBytes + 10, 'a');
  auto st = h.parser.feed(body);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kTooLarge);
}

TEST(Multipart, LargePartStreamsWithBoundedBuffer) {
  // 8 MiB of data fed in 64 KiB chunks: the data comes out in pieces, never
  // whole, and byte-exact.
  std::string data(8 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 131) ^ (i >> 7));
  std::string body = part(kB, R"(form-data; name="file"; filename="big")", data) + "--" + kB + "--\r\n";
  size_t biggest = 0, total = 0;
  std::string back;
  MultipartParser p(kB, MultipartCallbacks{[](const MultipartPart&) { return ok(); },
                                           [&](std::string_view d) {
                                             biggest = std::max(biggest, d.size());
                                             total += d.size();
                                             back.append(d);
                                             return ok();
                                           },
                                           [] { return ok(); }});
  for (size_t i = 0; i < body.size(); i += 65536) ASSERT_TRUE(p.feed(std::string_view(body).substr(i, 65536)));
  ASSERT_TRUE(p.finish());
  EXPECT_EQ(total, data.size());
  EXPECT_TRUE(back == data);
  EXPECT_LE(biggest, 65536u + 64);
}

TEST(Multipart, CallbackErrorStopsParsing) {
  MultipartParser p("b", MultipartCallbacks{[](const MultipartPart&) { return ok(); },
                                            [](std::string_view) -> Status {
                                              return make_error(ErrorCode::kResourceExhausted, "disk full", ENOSPC);
                                            },
                                            [] { return ok(); }});
  auto st = p.feed("--b\r\n\r\nsome data that is long enough\r\n--b--");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kResourceExhausted);
}

}  // namespace
}  // namespace coppice::envd
