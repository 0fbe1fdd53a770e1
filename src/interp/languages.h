// The languages coppice-interp serves, their names as E2B's clients send
// them, the kernel command line for each, and the small pieces of code the
// server runs in a kernel around a user's code (environment variables).
//
//   python      IPython (ipykernel), with E2B's rich results (python_startup.py)
//   javascript  node, through coppice_kernel.py + js_driver.js   (also: js, node)
//   typescript  the same, transpiled by the typescript package    (also: ts)
//   r           IRkernel                                          (also: R)
//   java        JShell in a JVM, through coppice_kernel.py         (also: jshell)
//   bash        bash, through coppice_kernel.py                   (also: sh, shell)
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coppice::interp {

// The languages this server runs, as one line for error messages.
inline constexpr std::string_view kLanguagesServed =
    "python, javascript (js), typescript (ts), r, java and bash";

// The canonical name of `language` (case and surrounding blanks ignored;
// absent or empty means Python); nullopt for a language not served.
std::optional<std::string> normalize_language(std::string_view language);

// What a kernel command line is made of.
struct KernelCommand {
  std::string python = "python3";  // interpreter with ipykernel
  std::string r = "R";             // R with IRkernel installed
  std::string assets_dir;          // where the files of kernel_assets.h were written
};

// The argv of a kernel for canonical `language` with connection file `conn`.
std::vector<std::string> kernel_argv(const std::string& language, const KernelCommand& cmd, const std::string& conn);

// Code in `language` that saves the current values of env's names and sets
// them for one run, and code that puts the saved values back (unsetting the
// names that were unset). Both are run silently around one execution.
// Java has no settable environment: there, as in E2B, the variables are
// system properties (System.getProperty). Bash can only hold names that
// are shell identifiers; other names are left out.
std::string set_env_code(const std::string& language, const std::map<std::string, std::string>& env);
std::string restore_env_code(const std::string& language);
// Code that sets env's names for good (the sandbox's own environment).
std::string global_env_code(const std::string& language, const std::map<std::string, std::string>& env);

// The name is a shell identifier ([A-Za-z_][A-Za-z0-9_]*).
bool is_shell_name(std::string_view name);

}  // namespace coppice::interp
