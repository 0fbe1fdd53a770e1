#include "interp/output.h"

#include <gtest/gtest.h>

#include "interp/requests.h"

namespace coppice::interp {
namespace {

Message msg(const std::string& type, json content, const std::string& date = "2026-01-01T00:00:00.000000Z") {
  Message m;
  m.header = json{{"msg_type", type}, {"date", date}, {"msg_id", "m"}};
  m.parent_header = json{{"msg_id", "req"}};
  m.content = std::move(content);
  return m;
}

TEST(InterpOutput, MimeKeysAreRenamedAndQuotesStripped) {
  json bundle{{"text/plain", "'hello'"},         {"text/html", "<b>x</b>"},   {"image/png", "iVBOR"},
              {"image/svg+xml", "<svg/>"},       {"application/json", {{"a", 1}}},
              {"text/markdown", "# t"},          {"image/jpeg", "j"},         {"application/pdf", "p"},
              {"text/latex", "$x$"},             {"application/javascript", "js"},
              {"e2b/chart", {{"type", "line"}}}, {"e2b/data", {{"d", 1}}},    {"application/x-custom", "c"}};
  ojson l = result_line(bundle, true);
  EXPECT_EQ(l.begin().key(), "type");
  EXPECT_EQ(l["type"], "result");
  EXPECT_EQ(l["text"], "hello");
  EXPECT_EQ(l["html"], "<b>x</b>");
  EXPECT_EQ(l["png"], "iVBOR");
  EXPECT_EQ(l["svg"], "<svg/>");
  EXPECT_EQ(l["json"]["a"], 1);
  EXPECT_EQ(l["markdown"], "# t");
  EXPECT_EQ(l["jpeg"], "j");
  EXPECT_EQ(l["pdf"], "p");
  EXPECT_EQ(l["latex"], "$x$");
  EXPECT_EQ(l["javascript"], "js");
  EXPECT_EQ(l["chart"]["type"], "line");
  EXPECT_EQ(l["data"]["d"], 1);
  EXPECT_EQ(l["extra"]["application/x-custom"], "c");
  EXPECT_EQ(l["is_main_result"], true);
  EXPECT_FALSE(l.contains("text/plain"));

  EXPECT_EQ(result_line(json{{"text/plain", "\"dq\""}}, false)["text"], "dq");
  EXPECT_EQ(result_line(json{{"text/plain", "'unbalanced"}}, false)["text"], "'unbalanced");
  EXPECT_EQ(result_line(json{{"text/plain", "2"}}, false)["text"], "2");
  EXPECT_FALSE(result_line(json{{"text/plain", "2"}}, false).contains("extra"));
  EXPECT_EQ(result_line(json{{"image/png", "x"}}, false)["is_main_result"], false);
}

TEST(InterpOutput, LinesAreOneJsonObjectEach) {
  EXPECT_EQ(ndjson(end_of_execution_line()), "{\"type\":\"end_of_execution\"}\n");
  EXPECT_EQ(ndjson(keepalive_line()), "{\"type\":\"keepalive\"}\n");
  // Newlines inside text are escaped: a line is never split or blank.
  std::string s = ndjson(stream_line("stdout", "a\nb\n", "t"));
  EXPECT_EQ(s, "{\"type\":\"stdout\",\"text\":\"a\\nb\\n\",\"timestamp\":\"t\"}\n");
  EXPECT_EQ(s.find('\n'), s.size() - 1);
  // Invalid UTF-8 from a kernel does not break the line.
  std::string bad = ndjson(stream_line("stdout", std::string("\xff\xfe ok"), "t"));
  EXPECT_NE(bad.find("ok"), std::string::npos);
  EXPECT_FALSE(json::parse(bad, nullptr, false).is_discarded());
}

TEST(InterpOutput, TranslatorFollowsAnExecution) {
  ExecutionTranslator tr;
  std::vector<ojson> out;
  tr.feed(msg("status", {{"execution_state", "busy"}}), out);
  tr.feed(msg("execute_input", {{"code", "1/0"}, {"execution_count", 3}}), out);
  tr.feed(msg("stream", {{"name", "stdout"}, {"text", "hi\n"}}, "D1"), out);
  tr.feed(msg("stream", {{"name", "stderr"}, {"text", "warn\n"}}), out);
  tr.feed(msg("display_data", {{"data", {{"image/png", "P"}, {"text/plain", "<Figure>"}}}}), out);
  tr.feed(msg("error", {{"ename", "ZeroDivisionError"}, {"evalue", "division by zero"},
                        {"traceback", {"line 1", "ZeroDivisionError: division by zero"}}}),
          out);
  EXPECT_FALSE(tr.done());
  tr.feed(msg("execute_reply", {{"status", "error"}, {"ename", "ZeroDivisionError"}, {"evalue", "x"}, {"traceback", json::array()}}), out);
  EXPECT_FALSE(tr.done());
  tr.feed(msg("status", {{"execution_state", "idle"}}), out);
  EXPECT_TRUE(tr.done());
  EXPECT_TRUE(tr.errored());
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0], ojson::parse(R"({"type":"number_of_executions","execution_count":3})"));
  EXPECT_EQ(out[1], ojson::parse(R"({"type":"stdout","text":"hi\n","timestamp":"D1"})"));
  EXPECT_EQ(out[2]["type"], "stderr");
  EXPECT_EQ(out[3]["type"], "result");
  EXPECT_EQ(out[3]["png"], "P");
  EXPECT_EQ(out[3]["is_main_result"], false);
  // One error per run, even though the reply repeats it.
  EXPECT_EQ(out[4], ojson::parse(R"({"type":"error","name":"ZeroDivisionError","value":"division by zero",
                                    "traceback":"line 1\nZeroDivisionError: division by zero"})"));
}

TEST(InterpOutput, TranslatorResultAndAbort) {
  ExecutionTranslator tr;
  std::vector<ojson> out;
  tr.feed(msg("execute_result", {{"data", {{"text/plain", "2"}}}, {"execution_count", 1}}), out);
  tr.feed(msg("status", {{"execution_state", "idle"}}), out);
  EXPECT_FALSE(tr.done());
  tr.feed(msg("execute_reply", {{"status", "ok"}}), out);
  EXPECT_TRUE(tr.done());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ndjson(out[0]), "{\"type\":\"result\",\"text\":\"2\",\"is_main_result\":true}\n");

  ExecutionTranslator ab;
  out.clear();
  ab.feed(msg("execute_reply", {{"status", "aborted"}}), out);
  EXPECT_TRUE(ab.done());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["name"], "ExecutionAborted");
}

TEST(InterpRequests, ExecuteBodies) {
  auto r = parse_execute_request(R"({"code":"1+1","context_id":null,"env_vars":{"A":"b"},"extra":1})");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->code, "1+1");
  EXPECT_FALSE(r->context_id);
  EXPECT_EQ(r->env_vars.at("A"), "b");
  auto both = parse_execute_request(R"({"code":"1","context_id":"c","language":"python"})");
  ASSERT_FALSE(both);
  EXPECT_EQ(both.error().message(), "Only one of context_id or language can be provided");
  EXPECT_FALSE(parse_execute_request(R"({"context_id":"c"})"));
  EXPECT_FALSE(parse_execute_request(R"({"code":1})"));
  EXPECT_FALSE(parse_execute_request(R"({"code":"1","env_vars":{"A=B":"x"}})"));
  EXPECT_FALSE(parse_execute_request(R"({"code":"1","env_vars":{"A":1}})"));
  EXPECT_FALSE(parse_execute_request("not json"));
}

}  // namespace
}  // namespace coppice::interp
