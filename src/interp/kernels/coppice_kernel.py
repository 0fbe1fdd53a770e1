# coppice-interp's Jupyter kernel for the languages that have no kernel in
# Debian: bash, javascript, typescript and java. It is an ipykernel wrapper
# kernel (the Jupyter wire protocol comes from ipykernel), so coppice-interp
# drives it exactly like the IPython kernel:
#
#   python3 coppice_kernel.py <language> <driver-dir> -f <connection file>
#
# Each language runs in one long-lived child process, so state carries over
# from one cell to the next:
#   bash        `bash --norc --noprofile`, fed `__coppice_run <file>` per cell;
#               the exit status comes back on the reply pipe
#   javascript  node js_driver.js (node's own global scope, see that file)
#   typescript  the same, with the code transpiled by the typescript package
#   java        java JavaDriver.java (JShell's API, in process)
# The child's stdout and stderr are streamed as the cell's output; results
# and errors come back as JSON lines on a pipe whose fd number the child
# finds in $COPPICE_REPLY_FD.
#
# SIGINT (coppice-interp's interrupt, sent to the kernel's process group)
# reaches the child too: bash's trap ends the cell, node stops synchronous
# code or abandons an await, JShell stops the snippet. A child that does
# not finish within a few seconds of it, or that exits, is started again
# and the cell ends with an error saying the state was lost.

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time

from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel

LANGUAGE = sys.argv[1] if len(sys.argv) > 1 else ""
DRIVER_DIR = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__))
del sys.argv[1:3]

INFO = {
    "bash": {"name": "bash", "file_extension": ".sh", "mimetype": "text/x-sh"},
    "javascript": {"name": "javascript", "file_extension": ".js", "mimetype": "application/javascript"},
    "typescript": {"name": "typescript", "file_extension": ".ts", "mimetype": "text/typescript"},
    "java": {"name": "java", "file_extension": ".jshell", "mimetype": "text/x-java-source"},
}

# Defined once in bash: runs one cell (a file) in the shell itself, with
# stdin closed to it, and reports its status on the reply pipe. SIGINT ends the cell
# (the trap returns from the sourced file), not the shell.
BASH_PRELUDE = r"""
__coppice_fd=$COPPICE_REPLY_FD
unset COPPICE_REPLY_FD
__coppice_run() {
  local __coppice_file=$1 __coppice_status
  trap 'return 130 2>/dev/null' INT
  source "$__coppice_file" </dev/null
  __coppice_status=$?
  trap - INT
  printf '{"type":"status","status":%d}\n' "$__coppice_status" >&"$__coppice_fd"
}
"""


class ChildGone(Exception):
    pass


class Child:
    """One language process: stdin for requests, fds 1 and 2 for its output,
    the reply pipe ($COPPICE_REPLY_FD) for its replies."""

    def __init__(self, argv, env=None):
        r, w = os.pipe()
        env = dict(env if env is not None else os.environ)
        env["COPPICE_REPLY_FD"] = str(w)

        def reset_sigint():
            # ipykernel ignores SIGINT between requests; an ignored signal
            # would be inherited and could not be trapped (bash) or reset.
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=reset_sigint, pass_fds=(w,), env=env, close_fds=True,
        )
        os.close(w)
        self.ctl = r
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        for f, name in ((self.proc.stdout.fileno(), "stdout"), (self.proc.stderr.fileno(), "stderr"), (r, "ctl")):
            os.set_blocking(f, False)
            self.sel.register(f, selectors.EVENT_READ, name)
        self.open = {"stdout", "stderr", "ctl"}

    def send(self, text):
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise ChildGone()

    def poll(self, timeout, on_output):
        """Waits up to `timeout` for output; streams it; returns the control
        messages read (output read before a message is streamed first)."""
        msgs = []
        for key, _ in self.sel.select(timeout):
            name = key.data
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                self.sel.unregister(key.fd)
                self.open.discard(name)
                continue
            if name == "ctl":
                self.drain(on_output)
                self.buf += data
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    try:
                        msgs.append(json.loads(line))
                    except ValueError:
                        pass
            else:
                on_output(name, data)
        if "ctl" not in self.open and not msgs:
            self.drain(on_output)
            raise ChildGone()
        return msgs

    def drain(self, on_output):
        for f, name in ((self.proc.stdout.fileno(), "stdout"), (self.proc.stderr.fileno(), "stderr")):
            if name not in self.open:
                continue
            while True:
                try:
                    data = os.read(f, 65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                on_output(name, data)

    def kill(self):
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except Exception:
            pass
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except Exception:
                pass
        try:
            os.close(self.ctl)
        except OSError:
            pass
        self.sel.close()


class CoppiceKernel(Kernel):
    implementation = "coppice-" + LANGUAGE
    implementation_version = "1"
    language = LANGUAGE
    language_version = ""
    language_info = INFO.get(LANGUAGE, {"name": LANGUAGE})
    banner = "coppice " + LANGUAGE

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.child = None
        self.start_error = ""
        # Beside the driver files: in coppice-interp's private directory,
        # which goes with the server.
        try:
            self.cell_dir = tempfile.mkdtemp(prefix="cells-", dir=DRIVER_DIR)
        except OSError:
            self.cell_dir = tempfile.mkdtemp(prefix="coppice-cells-")
        self.restart_child()

    # --- the language process ---------------------------------------------
    def argv(self):
        if LANGUAGE == "bash":
            return ["bash", "--norc", "--noprofile"]
        if LANGUAGE in ("javascript", "typescript"):
            return ["node", os.path.join(DRIVER_DIR, "js_driver.js"), LANGUAGE]
        if LANGUAGE == "java":
            jvm = ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]
            classes = self.java_classes()
            if classes:
                return jvm + ["-cp", classes, "JavaDriver"]
            return jvm + [os.path.join(DRIVER_DIR, "JavaDriver.java")]
        raise RuntimeError("unknown language " + LANGUAGE)

    def java_classes(self):
        """The driver compiled once per server (saves the JVM compiling the
        source at every start); None when javac is not there or fails."""
        final = os.path.join(DRIVER_DIR, "java-classes")
        if os.path.exists(os.path.join(final, "JavaDriver.class")):
            return final
        try:
            tmp = tempfile.mkdtemp(prefix="java-classes-", dir=DRIVER_DIR)
            subprocess.run(["javac", "-nowarn", "-XDignore.symbol.file", "-d", tmp,
                            os.path.join(DRIVER_DIR, "JavaDriver.java")],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, final)
            except OSError:
                pass  # another kernel got there first
            return final if os.path.exists(os.path.join(final, "JavaDriver.class")) else None
        except Exception:
            return None

    def start_child(self):
        self.child = Child(self.argv())
        if LANGUAGE == "bash":
            self.child.send(BASH_PRELUDE)
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                msgs = self.child.poll(1.0, self.log_output)
            except ChildGone:
                raise RuntimeError("the %s process exited at start (status %s)" % (LANGUAGE, self.child.proc.poll()))
            for m in msgs:
                if m.get("type") == "ready":
                    return
                if m.get("type") == "fatal":
                    raise RuntimeError(m.get("message", "the " + LANGUAGE + " process failed to start"))
        raise RuntimeError("the " + LANGUAGE + " process did not start")

    def log_output(self, name, data):
        sys.__stderr__.write(data.decode("utf-8", "replace"))

    def restart_child(self):
        if self.child:
            self.child.kill()
        self.child = None
        try:
            self.start_child()
            self.start_error = ""
        except Exception as e:
            self.start_error = str(e)
            if self.child:
                self.child.kill()
            self.child = None
            sys.__stderr__.write("coppice kernel: start %s: %s\n" % (LANGUAGE, e))

    # --- one cell -----------------------------------------------------------
    def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False):
        def out(name, data):
            if not silent:
                self.send_response(self.iopub_socket, "stream", {"name": name, "text": data.decode("utf-8", "replace")})

        if self.child is None:
            self.restart_child()
        if self.child is None:
            return self.error(silent, "ContextRestarting",
                              "the %s process could not be started: %s" % (LANGUAGE, self.start_error), [])
        result = None
        error = None
        interrupted_at = None
        try:
            if LANGUAGE == "bash":
                fd, path = tempfile.mkstemp(dir=self.cell_dir, suffix=".sh")
                with os.fdopen(fd, "w") as f:
                    f.write(code)
                    if not code.endswith("\n"):
                        f.write("\n")
                self.child.send("__coppice_run " + path + "\n")
            else:
                self.child.send(json.dumps({"code": code}) + "\n")
            done = False
            while not done:
                try:
                    msgs = self.child.poll(0.2, out)
                except KeyboardInterrupt:
                    interrupted_at = interrupted_at or time.monotonic()
                    continue
                if interrupted_at and time.monotonic() - interrupted_at > 3:
                    self.restart_child()
                    return self.error(silent, "KeyboardInterrupt",
                                      "the " + LANGUAGE + " process did not stop and was restarted; its state was lost", [])
                for m in msgs:
                    t = m.get("type")
                    if t == "status":  # bash
                        st = int(m.get("status", 0))
                        if st == 130 and interrupted_at:
                            error = ("KeyboardInterrupt", "Execution was interrupted", [])
                        elif st != 0:
                            error = ("Error", "exit status %d" % st, [])
                        done = True
                    elif t == "result":
                        result = m.get("data") or {}
                    elif t == "display" and not silent:
                        self.send_response(self.iopub_socket, "display_data", {"data": m.get("data") or {}, "metadata": {}})
                    elif t == "error":
                        error = (m.get("ename", "Error"), m.get("evalue", ""), m.get("traceback") or [])
                    elif t == "done":
                        done = True
        except ChildGone:
            status = None
            if self.child:
                try:
                    status = self.child.proc.wait(timeout=2)
                except Exception:
                    pass
            self.restart_child()
            return self.error(silent, "ContextRestarting",
                              "the %s process exited (status %s); a new one was started and the state was lost"
                              % (LANGUAGE, status), [])
        finally:
            if LANGUAGE == "bash":
                for f in os.listdir(self.cell_dir):
                    try:
                        os.unlink(os.path.join(self.cell_dir, f))
                    except OSError:
                        pass
        if result is not None and not silent:
            self.send_response(self.iopub_socket, "execute_result",
                               {"execution_count": self.execution_count, "data": result, "metadata": {}})
        if error:
            return self.error(silent, *error)
        return {"status": "ok", "execution_count": self.execution_count, "payload": [], "user_expressions": {}}

    def error(self, silent, ename, evalue, traceback):
        content = {"ename": ename, "evalue": evalue, "traceback": traceback}
        if not silent:
            self.send_response(self.iopub_socket, "error", content)
        return dict(content, status="error", execution_count=self.execution_count)

    def do_shutdown(self, restart):
        if self.child:
            self.child.kill()
        return {"status": "ok", "restart": restart}


if __name__ == "__main__":
    # ipykernel ignores SIGINT outside of a request; during one it raises
    # KeyboardInterrupt in do_execute (its pre_handler_hook).
    IPKernelApp.launch_instance(kernel_class=CoppiceKernel)
