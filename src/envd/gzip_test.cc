#include "envd/gzip.h"

#include <gtest/gtest.h>

#include <random>

namespace coppice::envd {
namespace {

std::string sample(size_t n, bool compressible) {
  std::mt19937 rng(42);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = compressible ? "abcab\n"[i % 6] : static_cast<char>(rng());
  return s;
}

TEST(Gzip, RoundTripSizes) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{100}, size_t{65536}, size_t{1 << 20}}) {
    for (bool comp : {true, false}) {
      std::string data = sample(n, comp);
      auto z = gzip_compress(data);
      ASSERT_TRUE(z);
      ASSERT_GE(z->size(), 18u);  // header + trailer
      EXPECT_EQ(static_cast<unsigned char>((*z)[0]), 0x1f);
      EXPECT_EQ(static_cast<unsigned char>((*z)[1]), 0x8b);
      auto back = gzip_decompress(*z);
      ASSERT_TRUE(back);
      EXPECT_TRUE(*back == data) << n;
    }
  }
}

TEST(Gzip, StreamingInArbitraryChunks) {
  std::string data = sample(300000, false) + sample(300000, true);
  GzipEncoder enc;
  std::string z;
  for (size_t i = 0; i < data.size(); i += 7777) ASSERT_TRUE(enc.update(std::string_view(data).substr(i, 7777), z));
  ASSERT_TRUE(enc.finish(z));
  for (size_t step : {size_t{1}, size_t{13}, size_t{4096}, z.size()}) {
    GzipDecoder dec;
    std::string out;
    size_t biggest = 0;
    auto sink = [&](std::string_view d) -> Status {
      biggest = std::max(biggest, d.size());
      out.append(d);
      return ok();
    };
    for (size_t i = 0; i < z.size(); i += step) ASSERT_TRUE(dec.update(std::string_view(z).substr(i, step), sink));
    ASSERT_TRUE(dec.finish());
    EXPECT_TRUE(out == data) << "step " << step;
    EXPECT_LE(biggest, kGzipOutChunk);
  }
}

TEST(Gzip, BombIsDeliveredInBoundedPieces) {
  std::string zeros(64 << 20, '\0');
  auto z = gzip_compress(zeros, 9);
  ASSERT_TRUE(z);
  EXPECT_LT(z->size(), 200000u);
  GzipDecoder dec;
  size_t total = 0, biggest = 0;
  auto sink = [&](std::string_view d) -> Status {
    biggest = std::max(biggest, d.size());
    total += d.size();
    return ok();
  };
  ASSERT_TRUE(dec.update(*z, sink));
  ASSERT_TRUE(dec.finish());
  EXPECT_EQ(total, zeros.size());
  EXPECT_LE(biggest, kGzipOutChunk);
}

TEST(Gzip, ConcatenatedMembers) {
  auto a = gzip_compress("hello ");
  auto b = gzip_compress("world");
  ASSERT_TRUE(a && b);
  auto back = gzip_decompress(*a + *b);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, "hello world");
}

TEST(Gzip, MalformedAndTruncated) {
  auto z = gzip_compress(sample(10000, false));
  ASSERT_TRUE(z);
  auto t = gzip_decompress(z->substr(0, z->size() - 5));
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(gzip_decompress("not gzip at all"));
  EXPECT_FALSE(gzip_decompress(""));
  EXPECT_FALSE(gzip_decompress(*z + "trailing garbage"));
  std::string corrupt = *z;
  corrupt[corrupt.size() / 2] ^= 0x55;
  EXPECT_FALSE(gzip_decompress(corrupt));
}

TEST(Gzip, SinkErrorStops) {
  auto z = gzip_compress(sample(200000, true));
  GzipDecoder dec;
  auto st = dec.update(*z, [](std::string_view) -> Status { return make_error(ErrorCode::kResourceExhausted, "full"); });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kResourceExhausted);
}

}  // namespace
}  // namespace coppice::envd
