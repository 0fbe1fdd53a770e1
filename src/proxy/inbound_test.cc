#include "proxy/inbound.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "common/test_temp_dir.h"

namespace coppice::proxy {
namespace {

TEST(MaskHost, ValidAndInvalid) {
  for (const char* good : {"example.com", "masked.example:${PORT}", "${PORT}.preview.example", "localhost:8080",
                           "a_b-c.d", "x:${PORT}"})
    EXPECT_TRUE(validate_mask_host(good)) << good;
  for (const char* bad : {"", "bad host", "x.example/${PORT}", "x.example:99999", "x.example:0", "x.example:",
                          ":80", "x.example:80:81", "x\r\nInjected: 1", "${PORT", "x.example:${PORT}${PORT}"}) {
    auto s = validate_mask_host(bad);
    ASSERT_FALSE(s) << bad;
    EXPECT_NE(s.error().message().find("network.maskRequestHost"), std::string::npos) << s.error().message();
  }
  EXPECT_FALSE(validate_mask_host(std::string(300, 'a')));
  EXPECT_TRUE(validate_mask_host(std::string(253, 'a')));
  EXPECT_FALSE(validate_mask_host(std::string(254, 'a')));
}

TEST(MaskHost, PortIsFilledIn) {
  EXPECT_EQ(masked_host("masked.example:${PORT}", 3000), "masked.example:3000");
  EXPECT_EQ(masked_host("${PORT}-${PORT}.example", 80), "80-80.example");
  EXPECT_EQ(masked_host("plain.example", 3000), "plain.example");
}

TEST(PreviewSigner, SignsAndChecks) {
  PreviewSigner s(std::string(32, 'k'));
  const std::string id = "abcdefghij0123456789";
  const std::string v = s.sign(id, 3000, 1000);
  EXPECT_TRUE(s.verify(id, 3000, v, 999));
  EXPECT_FALSE(s.verify(id, 3000, v, 1000)) << "expired at its expiry";
  EXPECT_FALSE(s.verify(id, 3001, v, 999)) << "another port";
  EXPECT_FALSE(s.verify("abcdefghij0123456780", 3000, v, 999)) << "another sandbox";
  EXPECT_FALSE(PreviewSigner(std::string(32, 'j')).verify(id, 3000, v, 999)) << "another secret";
  // A later expiry with the old signature, a flipped digit, junk.
  std::string later = "2000" + v.substr(v.find('.'));
  EXPECT_FALSE(s.verify(id, 3000, later, 999));
  std::string flipped = v;
  flipped.back() = flipped.back() == '0' ? '1' : '0';
  EXPECT_FALSE(s.verify(id, 3000, flipped, 999));
  for (const char* junk : {"", ".", "1000", "1000.", ".abc", "-5.abc", "99999999999999999999.ab", "1e3.ab"})
    EXPECT_FALSE(s.verify(id, 3000, junk, 0)) << junk;
}

TEST(PreviewSecret, MadeOnceWithMode0600AndKept) {
  test_util::TempDir dir;
  const std::string path = (dir.path() / "preview.key").string();
  auto a = load_or_make_secret(path);
  ASSERT_TRUE(a) << a.error().to_string();
  EXPECT_EQ(a->size(), 32u);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto b = load_or_make_secret(path);
  ASSERT_TRUE(b);
  EXPECT_EQ(*a, *b);
  ::chmod(path.c_str(), 0644);
  EXPECT_FALSE(load_or_make_secret(path));
}

}  // namespace
}  // namespace coppice::proxy
