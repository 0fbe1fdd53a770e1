#include "interp/languages.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

namespace coppice::interp {

using json = nlohmann::json;

namespace {
// JSON text of a string or object: also a valid literal in Python,
// JavaScript and (for strings without control characters but \n, \t...)
// Java. Non-ASCII text stays UTF-8; invalid UTF-8 is replaced.
std::string js(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// A bash word that expands to exactly `s`.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  out += '\'';
  return out;
}

// An R string literal.
std::string r_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// A Java string literal (JSON's escapes are Java's, but for \/ which
// nlohmann never writes).
std::string java_quote(const std::string& s) { return js(json(s)); }
}  // namespace

bool is_shell_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '_'; });
}

std::optional<std::string> normalize_language(std::string_view language) {
  size_t b = 0, e = language.size();
  while (b < e && std::isspace(static_cast<unsigned char>(language[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(language[e - 1]))) --e;
  std::string l(language.substr(b, e - b));
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (l.empty() || l == "python" || l == "python3" || l == "py" || l == "ipython") return std::string("python");
  if (l == "javascript" || l == "js" || l == "node" || l == "nodejs") return std::string("javascript");
  if (l == "typescript" || l == "ts") return std::string("typescript");
  if (l == "r") return std::string("r");
  if (l == "java" || l == "jshell") return std::string("java");
  if (l == "bash" || l == "sh" || l == "shell") return std::string("bash");
  return std::nullopt;
}

std::vector<std::string> kernel_argv(const std::string& language, const KernelCommand& cmd, const std::string& conn) {
  if (language == "python") {
    // Colors off: tracebacks are read as text, not on a terminal. History in
    // memory: several kernels never contend for one sqlite file.
    return {cmd.python, "-m", "ipykernel_launcher", "-f", conn, "--InteractiveShell.colors=NoColor",
            "--HistoryManager.enabled=False", "--IPKernelApp.exec_files=" + cmd.assets_dir + "/python_startup.py"};
  }
  if (language == "r") {
    return {cmd.r, "--slave", "--no-restore", "--no-save", "-e", "IRkernel::main()", "--args", conn};
  }
  return {cmd.python, cmd.assets_dir + "/coppice_kernel.py", language, cmd.assets_dir, "-f", conn};
}

std::string set_env_code(const std::string& language, const std::map<std::string, std::string>& env) {
  if (language == "javascript" || language == "typescript") {
    return "globalThis.__coppiceSavedEnv = ((e) => { const s = {}; for (const k of Object.keys(e)) { "
           "s[k] = Object.prototype.hasOwnProperty.call(process.env, k) ? process.env[k] : null; process.env[k] = e[k]; } "
           "return s; })(" + js(json(env)) + ");";
  }
  if (language == "java") {
    std::string code = "java.util.Map<String, String> $coppiceSavedEnv = new java.util.HashMap<>();";
    for (const auto& [k, v] : env) {
      code += " $coppiceSavedEnv.put(" + java_quote(k) + ", System.getProperty(" + java_quote(k) + "));";
      code += " System.setProperty(" + java_quote(k) + ", " + java_quote(v) + ");";
    }
    return code;
  }
  if (language == "r") {
    std::string names, values;
    for (const auto& [k, v] : env) {
      if (!names.empty()) {
        names += ", ";
        values += ", ";
      }
      names += r_quote(k);
      values += r_quote(k) + " = " + r_quote(v);
    }
    return ".coppice_saved_env <- Sys.getenv(c(" + names + "), unset = NA, names = TRUE)\n"
           "invisible(do.call(Sys.setenv, list(" + values + ")))";
  }
  if (language == "bash") {
    std::string code;
    std::string saved;
    for (const auto& [k, v] : env) {
      if (!is_shell_name(k)) continue;
      code += "if [[ -v " + k + " ]]; then __coppice_saved_" + k + "=(1 \"$" + k + "\"); else __coppice_saved_" + k +
              "=(0); fi; export " + k + "=" + shell_quote(v) + "\n";
      saved += " " + k;
    }
    return code + "__coppice_saved_names='" + saved + "'\n";
  }
  // Python: a JSON object of strings is also a dict literal.
  return "(lambda o, e: (setattr(o, '_coppice_saved_env', {k: o.environ.get(k) for k in e}), o.environ.update(e)))"
         "(__import__('os'), " + js(json(env)) + ")";
}

std::string restore_env_code(const std::string& language) {
  if (language == "javascript" || language == "typescript") {
    return "for (const [k, v] of Object.entries(globalThis.__coppiceSavedEnv || {})) { "
           "if (v === null) delete process.env[k]; else process.env[k] = v; } delete globalThis.__coppiceSavedEnv;";
  }
  if (language == "java") {
    return "for (var $e : $coppiceSavedEnv.entrySet()) { if ($e.getValue() == null) System.clearProperty($e.getKey()); "
           "else System.setProperty($e.getKey(), $e.getValue()); }";
  }
  if (language == "r") {
    return "for (.k in names(.coppice_saved_env)) { if (is.na(.coppice_saved_env[[.k]])) Sys.unsetenv(.k) "
           "else do.call(Sys.setenv, setNames(list(.coppice_saved_env[[.k]]), .k)) }\n"
           "rm(.coppice_saved_env, .k)";
  }
  if (language == "bash") {
    return "for __coppice_n in $__coppice_saved_names; do declare -n __coppice_s=__coppice_saved_$__coppice_n; "
           "if [[ ${__coppice_s[0]} == 1 ]]; then export \"$__coppice_n=${__coppice_s[1]}\"; else unset \"$__coppice_n\"; fi; "
           "unset -n __coppice_s; unset \"__coppice_saved_$__coppice_n\"; done; unset __coppice_n __coppice_saved_names\n";
  }
  return "(lambda o: [o.environ.__setitem__(k, v) if v is not None else o.environ.pop(k, None) "
         "for k, v in o.__dict__.pop('_coppice_saved_env', {}).items()])(__import__('os'))";
}

std::string global_env_code(const std::string& language, const std::map<std::string, std::string>& env) {
  if (language == "javascript" || language == "typescript") return "Object.assign(process.env, " + js(json(env)) + ");";
  if (language == "java") {
    std::string code;
    for (const auto& [k, v] : env) code += "System.setProperty(" + java_quote(k) + ", " + java_quote(v) + ");";
    return code;
  }
  if (language == "r") {
    std::string values;
    for (const auto& [k, v] : env) values += (values.empty() ? "" : ", ") + r_quote(k) + " = " + r_quote(v);
    return "invisible(do.call(Sys.setenv, list(" + values + ")))";
  }
  if (language == "bash") {
    std::string code;
    for (const auto& [k, v] : env) {
      if (is_shell_name(k)) code += "export " + k + "=" + shell_quote(v) + "\n";
    }
    return code.empty() ? ":\n" : code;
  }
  return "__import__('os').environ.update(" + js(json(env)) + ")";
}

}  // namespace coppice::interp
