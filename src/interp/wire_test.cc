#include "interp/wire.h"

#include <gtest/gtest.h>

#include <regex>

namespace coppice::interp {
namespace {

// Expected values computed with Python's hmac module:
//   hmac.new(b'key', b'{"a":1}{}{}{}', hashlib.sha256).hexdigest()
TEST(JupyterWire, HmacMatchesPython) {
  EXPECT_EQ(hmac_sha256_hex("key", {R"({"a":1})", "{}", "{}", "{}"}),
            "f1128388193e4dd1aa760827bd756a1b40b627676b5efe22c0e8297919bfa218");
  // RFC 4231 test case 2.
  EXPECT_EQ(hmac_sha256_hex("Jefe", {"what do ya want ", "for nothing?"}),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(JupyterWire, SerializeSignsTheFourParts) {
  Message m = make_message("execute_request", "sess", json{{"code", "1+1"}});
  auto f = serialize(m, "k");
  ASSERT_EQ(f.size(), 6u);
  EXPECT_EQ(f[0], "<IDS|MSG>");
  EXPECT_EQ(f[1], hmac_sha256_hex("k", {f[2], f[3], f[4], f[5]}));
  json h = json::parse(f[2]);
  EXPECT_EQ(h["msg_type"], "execute_request");
  EXPECT_EQ(h["session"], "sess");
  EXPECT_EQ(h["version"], "5.3");
  EXPECT_TRUE(std::regex_match(h["msg_id"].get<std::string>(),
                               std::regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")));
  EXPECT_TRUE(std::regex_match(h["date"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)")));
  EXPECT_EQ(f[3], "{}");
  EXPECT_EQ(json::parse(f[5])["code"], "1+1");
  // No key: no signature, as the protocol allows.
  EXPECT_EQ(serialize(m, "")[1], "");
}

TEST(JupyterWire, ParseChecksTheSignatureAndSkipsRoutingIds) {
  Message m = make_message("status", "s", json{{"execution_state", "idle"}});
  m.parent_header = json{{"msg_id", "parent-1"}};
  auto f = serialize(m, "secret");
  // A SUB socket sees a topic frame before the delimiter.
  f.insert(f.begin(), "kernel.abc.status");
  auto p = parse(f, "secret");
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->msg_type(), "status");
  EXPECT_EQ(p->parent_id(), "parent-1");
  EXPECT_EQ(p->content["execution_state"], "idle");

  auto bad = parse(f, "other-key");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kPermissionDenied);

  auto tampered = f;
  tampered[6] = R"({"execution_state":"busy"})";
  EXPECT_FALSE(parse(tampered, "secret"));

  EXPECT_FALSE(parse({"a", "b"}, "secret"));                                 // no delimiter
  EXPECT_FALSE(parse({"<IDS|MSG>", "", "{}", "{}"}, ""));                    // too few parts
  EXPECT_FALSE(parse({"<IDS|MSG>", "", "[]", "{}", "{}", "{}"}, ""));        // header not an object
  EXPECT_TRUE(parse({"<IDS|MSG>", "", "{}", "{}", "{}", "{}", "buf"}, ""));  // buffers are ignored
}

}  // namespace
}  // namespace coppice::interp
