#include "interp/languages.h"

#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <string>

namespace coppice::interp {
namespace {

TEST(InterpLanguages, NamesAndAliases) {
  EXPECT_EQ(normalize_language(""), "python");
  EXPECT_EQ(normalize_language(" Python "), "python");
  EXPECT_EQ(normalize_language("python3"), "python");
  EXPECT_EQ(normalize_language("py"), "python");
  EXPECT_EQ(normalize_language("js"), "javascript");
  EXPECT_EQ(normalize_language("JavaScript"), "javascript");
  EXPECT_EQ(normalize_language("ts"), "typescript");
  EXPECT_EQ(normalize_language("R"), "r");
  EXPECT_EQ(normalize_language("java"), "java");
  EXPECT_EQ(normalize_language("bash"), "bash");
  EXPECT_EQ(normalize_language("sh"), "bash");
  EXPECT_FALSE(normalize_language("cobol"));
  EXPECT_FALSE(normalize_language("java script"));
}

TEST(InterpLanguages, KernelCommandLines) {
  KernelCommand cmd;
  cmd.python = "/usr/bin/python3";
  cmd.assets_dir = "/run/k";
  auto py = kernel_argv("python", cmd, "/run/c.json");
  EXPECT_EQ(py[0], "/usr/bin/python3");
  EXPECT_EQ(py.back(), "--IPKernelApp.exec_files=/run/k/python_startup.py");
  auto r = kernel_argv("r", cmd, "/run/c.json");
  EXPECT_EQ(r[0], "R");
  EXPECT_EQ(r.back(), "/run/c.json");
  auto js = kernel_argv("javascript", cmd, "/run/c.json");
  EXPECT_EQ(js, (std::vector<std::string>{"/usr/bin/python3", "/run/k/coppice_kernel.py", "javascript", "/run/k", "-f",
                                          "/run/c.json"}));
}

TEST(InterpLanguages, PythonEnvCodeQuotesValuesAsLiterals) {
  std::string code = set_env_code("python", {{"A", "it's \"q\"\n\\"}});
  EXPECT_NE(code.find(R"({"A":"it's \"q\"\n\\"})"), std::string::npos);
  EXPECT_NE(restore_env_code("python").find("_coppice_saved_env"), std::string::npos);
}

TEST(InterpLanguages, JavaUsesSystemProperties) {
  std::string code = set_env_code("java", {{"FOO", "a\"b"}});
  EXPECT_NE(code.find(R"(System.setProperty("FOO", "a\"b");)"), std::string::npos);
  EXPECT_NE(global_env_code("java", {{"X", "1"}}).find(R"(System.setProperty("X", "1"))"), std::string::npos);
}

TEST(InterpLanguages, ShellNames) {
  EXPECT_TRUE(is_shell_name("FOO_1"));
  EXPECT_TRUE(is_shell_name("_x"));
  EXPECT_FALSE(is_shell_name("1A"));
  EXPECT_FALSE(is_shell_name("A-B"));
  EXPECT_FALSE(is_shell_name(""));
}

// Runs `script` in bash and returns its stdout.
std::string bash_out(const std::string& script) {
  std::string cmd = "bash --norc --noprofile -c " + std::string("'") + [&] {
    std::string q;
    for (char c : script) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q;
  }() + "'";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) return "popen failed";
  std::string out;
  char buf[256];
  size_t n;
  while ((n = ::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  return out;
}

// The bash code really sets the values (quotes and all), and the restore
// brings back the old value or unsets what was unset.
TEST(InterpLanguages, BashEnvCodeRoundTrips) {
  std::map<std::string, std::string> env{{"KEEP", "it's $HOME \"x\"\n`y`"}, {"NEW", "v"}, {"bad-name", "z"}};
  std::string script = "export KEEP=old\n" + set_env_code("bash", env) +
                       "printf '[%s][%s]\\n' \"$KEEP\" \"$NEW\"\n" + restore_env_code("bash") +
                       "printf '[%s][%s]\\n' \"$KEEP\" \"${NEW-unset}\"\n" + global_env_code("bash", {{"G", "g'g"}}) +
                       "printf '[%s]\\n' \"$G\"\n";
  EXPECT_EQ(bash_out(script), "[it's $HOME \"x\"\n`y`][v]\n[old][unset]\n[g'g]\n");
}

}  // namespace
}  // namespace coppice::interp
