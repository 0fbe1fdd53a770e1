// Set-uid programs work inside a sandbox (sudo, su), as on E2B, and give no
// more than the sandbox's root: an unprivileged host uid in the sandbox's
// user namespace, the container-default capabilities, the seccomp filter.
// Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, pidsMatching, sleep } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
let gw, sbx;
const cleanups = [];
before(async () => {
  if (skip) return;
  gw = await startGateway();
  const { Sandbox } = await loadSdk();
  sbx = await Sandbox.create({ ...gw.opts });
  // A host file only host root may read, where the sandbox can see it (its
  // run dir is bound at /.coppice/run without an id mapping); removed with
  // the sandbox's state dir.
  const secret = path.join(gw.stateDir, 'sandboxes', sbx.sandboxId, 'run', 'host-secret');
  fs.writeFileSync(secret, 'host only\n', { mode: 0o600 });
});
after(async () => {
  for (const c of cleanups.reverse()) await c();
  await gw?.stop();
});

const run = (cmd, opts = {}) => sbx.commands.run(cmd, opts).catch((e) => e);
// The docker default capability set (sys/caps.h kContainerDefault).
const kContainerDefault = 0xa80425fbn;

test(`[${sdkName}] user has passwordless sudo; root can su`, opt, async (t) => {
  if (!fs.existsSync('/usr/bin/sudo')) { t.skip('the host has no /usr/bin/sudo for its derived template (scripts/deps.sh installs it)'); return; }
  const s = await run('sudo -n id -u');
  assert.equal(s.exitCode, 0, `sudo: ${s.stderr ?? s}`);
  assert.equal(s.stdout, '0\n');
  assert.equal(s.stderr, '', 'sudo says nothing else');
  assert.equal((await run('id -u')).stdout, '1000\n', 'the command runs as user');
  const sh = await run("sudo -n sh -c 'id -un; id -gn'");
  assert.equal(sh.stdout, 'root\nroot\n');

  const su = await run("su -c 'id -u'", { user: 'root' });
  assert.equal(su.exitCode, 0, `su: ${su.stderr ?? su}`);
  assert.equal(su.stdout, '0\n');
  assert.equal((await run("su user -c 'id -un'", { user: 'root' })).stdout, 'user\n');
  // No account has a password: su is not a way to root for user.
  const denied = await run("su -c 'id -u' </dev/null");
  assert.notEqual(denied.exitCode, 0);
});

// A static program, compiled on the host, made set-uid root inside the
// sandbox and run by `user`: it reports what it got and what it may do.
const probeSource = String.raw`
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char* res(long r) { return r >= 0 ? "ok" : strerrorname_np(errno); }

static void status(const char* key) {
  char buf[8192];
  int fd = open("/proc/self/status", O_RDONLY);
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  buf[n > 0 ? n : 0] = 0;
  for (char* line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
    if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == ':') {
      char* v = line + strlen(key) + 1;
      while (*v == ' ' || *v == '\t') ++v;
      printf("%s=%s\n", key, v);
    }
  }
}

int main(int argc, char** argv) {
  printf("ruid=%d\neuid=%d\n", (int)getuid(), (int)geteuid());
  printf("setresuid=%s\n", res(setresuid(0, 0, 0)));
  status("CapEff"); status("CapPrm"); status("CapBnd"); status("CapAmb"); status("NoNewPrivs"); status("Seccomp");
  printf("secret=%s\n", res(open(argv[1], O_RDONLY)));
  printf("mount=%s\n", res(mount("none", "/mnt", "tmpfs", 0, NULL)));
  printf("kexec_load=%s\n", res(syscall(SYS_kexec_load, 0, 0, NULL, 0)));
  printf("bpf=%s\n", res(syscall(SYS_bpf, 0, NULL, 0)));
  printf("init_module=%s\n", res(syscall(SYS_init_module, NULL, 0, "")));
  printf("unshare_user=%s\n", res(unshare(CLONE_NEWUSER)));
  printf("unshare_mount=%s\n", res(unshare(CLONE_NEWNS)));
  printf("open_by_handle_at=%s\n", res(syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, 0)));
  printf("sethostname=%s\n", res(sethostname("evil", 4)));
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  syscall(SYS_capget, &h, d);
  d[CAP_SYS_ADMIN / 32].permitted |= 1u << (CAP_SYS_ADMIN % 32);
  d[CAP_SYS_ADMIN / 32].effective |= 1u << (CAP_SYS_ADMIN % 32);
  printf("capset_sys_admin=%s\n", res(syscall(SYS_capset, &h, d)));
  printf("ambient_sys_admin=%s\n", res(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0)));
  fflush(stdout);
  if (argc > 2) pause();  /* "hold <marker>": stay for the host to look at */
  return 0;
}
`;

function buildProbe() {
  try {
    execFileSync('sh', ['-c', 'command -v cc'], { stdio: 'ignore' });
  } catch {
    return { skip: 'no C compiler (cc) on the host to build the probe' };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-setuid-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'probe.c'), probeSource);
  try {
    execFileSync('cc', ['-O1', '-static', '-o', path.join(dir, 'probe'), path.join(dir, 'probe.c')], { stdio: 'pipe' });
  } catch (e) {
    return { skip: `cc could not build a static probe here: ${String(e.stderr).split('\n')[0]}` };
  }
  return { bytes: fs.readFileSync(path.join(dir, 'probe')) };
}

const parse = (out) => Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));

test(`[${sdkName}] a set-uid root program made in the sandbox gets the sandbox's root and nothing more`, opt, async (t) => {
  const probe = buildProbe();
  if (probe.skip) { t.skip(probe.skip); return; }
  const hostRoot = Number((await run('cat /proc/self/uid_map')).stdout.trim().split(/\s+/)[1]);
  assert.ok(hostRoot >= 1_000_000, `the sandbox's root is host uid ${hostRoot}`);

  assert.equal(fs.statSync(path.join(gw.stateDir, 'sandboxes', sbx.sandboxId, 'run', 'host-secret')).uid, 0);
  const asRoot = await run('cat /.coppice/run/host-secret', { user: 'root' });
  assert.match(asRoot.stderr ?? '', /Permission denied/, 'the sandbox\'s root cannot read the host-only file');

  await sbx.files.write('/tmp/probe', probe.bytes.buffer.slice(probe.bytes.byteOffset, probe.bytes.byteOffset + probe.bytes.length), { user: 'root' });
  assert.equal((await run('chmod 4755 /tmp/probe && stat -c "%U %a" /tmp/probe', { user: 'root' })).stdout, 'root 4755\n');

  const r = await run('/tmp/probe /.coppice/run/host-secret');
  assert.equal(r.exitCode, 0, `probe: ${r.stderr ?? r}`);
  const got = parse(r.stdout);
  // The sandbox's root ...
  assert.equal(got.ruid, '1000');
  assert.equal(got.euid, '0');
  assert.equal(got.setresuid, 'ok');
  // ... with the bounding set's capabilities and no others, no way to add
  // one, and the same seccomp filter.
  assert.equal(BigInt('0x' + got.CapBnd), kContainerDefault);
  assert.equal(BigInt('0x' + got.CapEff) & ~kContainerDefault, 0n);
  assert.equal(BigInt('0x' + got.CapPrm) & ~kContainerDefault, 0n);
  assert.equal(BigInt('0x' + got.CapAmb), 0n);
  assert.equal(got.capset_sys_admin, 'EPERM');
  assert.equal(got.ambient_sys_admin, 'EPERM');
  assert.equal(got.NoNewPrivs, '0');
  assert.equal(got.Seccomp, '2');
  for (const call of ['mount', 'kexec_load', 'bpf', 'init_module', 'unshare_user', 'unshare_mount', 'open_by_handle_at', 'sethostname']) {
    assert.equal(got[call], 'EPERM', `${call} must be refused`);
  }
  // Host files stay out of reach.
  assert.equal(got.secret, 'EACCES');

  // Seen from the host, the process (which made itself root in every uid
  // with setresuid) runs as the slot's first uid, never as host root.
  const marker = `coppice-setuid-${Date.now()}`;
  await run(`/tmp/probe /.coppice/run/host-secret hold ${marker} >/dev/null`, { background: true, timeoutMs: 0 });
  // The probe itself, not the shell that started it.
  const probes = () => pidsMatching(marker).filter((p) => {
    try { return fs.readFileSync(`/proc/${p}/comm`, 'utf8') === 'probe\n'; } catch { return false; }
  });
  let pids = [];
  for (let i = 0; i < 200 && pids.length === 0; ++i) { pids = probes(); if (!pids.length) await sleep(25); }
  assert.equal(pids.length, 1);
  try {
    const st = fs.readFileSync(`/proc/${pids[0]}/status`, 'utf8');
    const uids = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(st).slice(1).map(Number);
    assert.deepEqual(uids, [hostRoot, hostRoot, hostRoot, hostRoot]);
    assert.notEqual(hostRoot, 0);
    assert.notEqual(fs.readlinkSync(`/proc/${pids[0]}/ns/user`), fs.readlinkSync('/proc/self/ns/user'));
    assert.equal(BigInt('0x' + /^CapBnd:\s+(\w+)/m.exec(st)[1]), kContainerDefault);
  } finally {
    for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch {} }
  }
});

test(`[${sdkName}] a set-uid copy of a shell made in the sandbox is the sandbox's root`, opt, async () => {
  assert.equal((await run('cp /bin/bash /tmp/rootsh && chmod 4755 /tmp/rootsh && echo ok', { user: 'root' })).stdout, 'ok\n');
  const r = await run("/tmp/rootsh -p -c 'id -u; id -ru; grep CapBnd /proc/self/status; cat /.coppice/run/host-secret'");
  const lines = r.stdout.trim().split('\n');
  assert.deepEqual(lines.slice(0, 2), ['0', '1000']);
  assert.equal(BigInt('0x' + lines[2].split(/\s+/)[1]), kContainerDefault);
  assert.notEqual(r.exitCode, 0);
  assert.match(r.stderr, /Permission denied/, 'and cannot read a host-only file');
});
