// The Java side of coppice-interp's wrapper kernel (coppice_kernel.py): one
// JVM per context running JShell (the JDK's jdk.jshell API) in process, so
// declarations, imports and variables carry over from one cell to the next.
//
//   java JavaDriver.java
//   stdin:  one JSON request per line: {"code": "..."}
//   $COPPICE_REPLY_FD: one JSON reply per line (opened as /proc/self/fd/N): {"type":"ready"} once,
//           then per request {"type":"result"|"error",..}? and {"type":"done"}
//   fd 1/2: the snippets' own System.out and System.err
//
// A cell is split into snippets by JShell's source analysis and evaluated
// one by one; the first failing snippet ends the cell with an error (a
// compile error as CompilationError with JShell's diagnostics, an exception
// under its class name). The value of the last expression (or variable) is
// the cell's result, as JShell prints it. SIGINT stops the running snippet.
import java.io.BufferedReader;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import jdk.jshell.DeclarationSnippet;
import jdk.jshell.Diag;
import jdk.jshell.EvalException;
import jdk.jshell.ExpressionSnippet;
import jdk.jshell.JShell;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.SourceCodeAnalysis;
import jdk.jshell.UnresolvedReferenceException;
import jdk.jshell.VarSnippet;

public class JavaDriver {
  private static OutputStream replies;

  static String quote(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"': b.append("\\\""); break;
        case '\\': b.append("\\\\"); break;
        case '\n': b.append("\\n"); break;
        case '\r': b.append("\\r"); break;
        case '\t': b.append("\\t"); break;
        default:
          if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
          else b.append(c);
      }
    }
    return b.append('"').toString();
  }

  static void reply(String json) throws Exception {
    System.out.flush();
    System.err.flush();
    replies.write((json + "\n").getBytes(StandardCharsets.UTF_8));
    replies.flush();
  }

  static void error(String name, String value, List<String> traceback) throws Exception {
    StringBuilder tb = new StringBuilder("[");
    for (int i = 0; i < traceback.size(); i++) {
      if (i > 0) tb.append(',');
      tb.append(quote(traceback.get(i)));
    }
    tb.append(']');
    reply("{\"type\":\"error\",\"ename\":" + quote(name) + ",\"evalue\":" + quote(value) + ",\"traceback\":" + tb + "}");
  }

  // The one string field this driver reads from a request line.
  static String codeOf(String line) {
    int k = line.indexOf("\"code\"");
    if (k < 0) return "";
    int i = line.indexOf('"', line.indexOf(':', k) + 1);
    StringBuilder b = new StringBuilder();
    for (i = i + 1; i < line.length(); i++) {
      char c = line.charAt(i);
      if (c == '"') break;
      if (c != '\\') {
        b.append(c);
        continue;
      }
      char e = line.charAt(++i);
      switch (e) {
        case 'n': b.append('\n'); break;
        case 'r': b.append('\r'); break;
        case 't': b.append('\t'); break;
        case 'b': b.append('\b'); break;
        case 'f': b.append('\f'); break;
        case 'u': b.append((char) Integer.parseInt(line.substring(i + 1, i + 5), 16)); i += 4; break;
        default: b.append(e);
      }
    }
    return b.toString();
  }

  static List<String> stackOf(Throwable t) {
    StringWriter w = new StringWriter();
    t.printStackTrace(new PrintWriter(w));
    List<String> out = new ArrayList<>();
    for (String l : w.toString().split("\n")) {
      if (l.contains("jdk.jshell") || l.contains("java.base/jdk.internal") || l.contains("REPL.$JShell")) continue;
      out.add(l);
    }
    return out;
  }

  public static void main(String[] args) throws Exception {
    String fd = System.getenv("COPPICE_REPLY_FD");
    replies = new FileOutputStream("/proc/self/fd/" + (fd == null ? "3" : fd));
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    // Snippets get an empty stdin: the requests are not theirs to read.
    System.setIn(new java.io.ByteArrayInputStream(new byte[0]));
    JShell shell = JShell.builder()
        .executionEngine("local")
        .out(System.out)
        .err(System.err)
        .build();
    try {
      sun.misc.Signal.handle(new sun.misc.Signal("INT"), sig -> shell.stop());
    } catch (Throwable t) {
      // no signal support: interrupts end the JVM instead
    }
    // Compile the evaluation path once now, so the first cell is not slow.
    shell.eval("int $coppiceWarm = 0;");
    reply("{\"type\":\"ready\",\"language\":\"java\"}");
    SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
    String line;
    while ((line = in.readLine()) != null) {
      String remaining = codeOf(line);
      String result = null;
      boolean failed = false;
      while (!failed && !remaining.isBlank()) {
        SourceCodeAnalysis.CompletionInfo ci = analysis.analyzeCompletion(remaining);
        String source = ci.source();
        if (source == null || ci.completeness() == SourceCodeAnalysis.Completeness.DEFINITELY_INCOMPLETE
            || ci.completeness() == SourceCodeAnalysis.Completeness.CONSIDERED_INCOMPLETE) {
          source = remaining;
          remaining = "";
        } else {
          remaining = ci.remaining();
        }
        if (source.isBlank()) continue;
        result = null;
        List<SnippetEvent> events;
        try {
          events = shell.eval(source);
        } catch (IllegalStateException e) {
          error("InternalError", String.valueOf(e.getMessage()), List.of());
          failed = true;
          break;
        }
        for (SnippetEvent ev : events) {
          if (ev.causeSnippet() != null) continue;
          Snippet sn = ev.snippet();
          if (ev.exception() != null) {
            Throwable t = ev.exception();
            String name = t instanceof EvalException ? ((EvalException) t).getExceptionClassName() : t.getClass().getName();
            if (t instanceof UnresolvedReferenceException) {
              name = "UnresolvedReferenceException";
            }
            String msg = t.getMessage() == null ? "" : t.getMessage();
            if (t instanceof jdk.jshell.EvalException && "jdk.jshell.spi.ExecutionControl.StoppedException".equals(name)) {
              name = "KeyboardInterrupt";
              msg = "Execution was interrupted";
            }
            List<String> tb = stackOf(t);
            if (!tb.isEmpty()) tb.set(0, name + (msg.isEmpty() ? "" : ": " + msg));
            error(name, msg, tb);
            failed = true;
            break;
          }
          if (ev.status() == Snippet.Status.REJECTED) {
            List<String> tb = new ArrayList<>();
            StringBuilder value = new StringBuilder();
            shell.diagnostics(sn).forEach(d -> {
              String m = d.getMessage(Locale.ROOT);
              tb.add(m);
              if (value.length() == 0) value.append(m);
            });
            if (value.length() == 0) value.append("the snippet was rejected: ").append(sn.source().strip());
            error("CompilationError", value.toString(), tb);
            failed = true;
            break;
          }
          if (ev.status() == Snippet.Status.RECOVERABLE_DEFINED || ev.status() == Snippet.Status.RECOVERABLE_NOT_DEFINED) {
            List<String> tb = new ArrayList<>();
            shell.diagnostics(sn).forEach(d -> tb.add(d.getMessage(Locale.ROOT)));
            if (sn instanceof DeclarationSnippet) {
              shell.unresolvedDependencies((DeclarationSnippet) sn).forEach(u -> tb.add("cannot find symbol: " + u));
            }
            error("CompilationError", tb.isEmpty() ? "unresolved references" : tb.get(0), tb);
            failed = true;
            break;
          }
          if (ev.value() != null && (sn instanceof ExpressionSnippet
              || sn.subKind() == Snippet.SubKind.TEMP_VAR_EXPRESSION_SUBKIND)) {
            result = ev.value();
          }
        }
      }
      if (!failed && result != null) {
        reply("{\"type\":\"result\",\"data\":{\"text/plain\":" + quote(result) + "}}");
      }
      reply("{\"type\":\"done\"}");
    }
  }
}
