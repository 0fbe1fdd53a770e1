// What a sandbox can try against the host side, through the real E2B SDK:
// each test is one attempt, and the gateway (or envd) must shrug it off.
//
// Deep trees: a sandbox makes a directory chain ~19,000 levels deep (far past
// PATH_MAX, built with relative mkdir/chdir). Killing the sandbox, and a
// gateway restart that finds such a tree in a dead sandbox's state, must not
// bring the gateway down, and must not hold up other sandboxes; envd must
// survive ListDir with depth and a recursive WatchDir over such a tree.
//
// Files as user: a symlink `user` plants towards /etc/shadow or /root/.bashrc
// must not turn a write or read "as user" into one as the sandbox's root.
//
// The gateway tests need root; the envd test runs without.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startGateway, startEnvd, debugSandbox, gatewaySkipReason, removeCgroupParents, loadSdk, sdkName, sleep, unmountUnder,
} from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const DEPTH = 19000;

// Makes <dir>/deep/d/d/.../d, DEPTH levels, with relative paths only.
const deepScript = (dir) => `
import os
os.chdir(${JSON.stringify(dir)})
os.mkdir('deep')
os.chdir('deep')
for i in range(${DEPTH}):
    os.mkdir('d')
    os.chdir('d')
print('made', ${DEPTH})
`;

async function makeDeepTreeIn(sbx, dir) {
  await sbx.files.write('/tmp/mkdeep.py', deepScript(dir));
  const t0 = Date.now();
  const r = await sbx.commands.run('python3 /tmp/mkdeep.py', { timeoutMs: 120_000 });
  assert.equal(r.stdout.trim(), `made ${DEPTH}`, r.stderr);
  return Date.now() - t0;
}

// rm -rf that copes with any depth (GNU rm walks with directory fds), and
// never leaves the file system it starts on.
function removeAll(dir) {
  try { execFileSync('rm', ['-rf', '--one-file-system', dir]); } catch {}
}

async function healthy(url) {
  try { return (await fetch(`${url}/health`)).ok; } catch { return false; }
}

// Waits until <stateDir>/sandboxes/.trash holds nothing (the reaper's work:
// seconds on a quiet machine, a minute or more when rmdir is slow under load).
async function trashEmptied(stateDir, ms = 300_000) {
  const trash = path.join(stateDir, 'sandboxes', '.trash');
  const end = Date.now() + ms;
  for (;;) {
    let left = [];
    try { left = fs.readdirSync(trash); } catch {}
    if (left.length === 0) return true;
    if (Date.now() > end) return false;
    await sleep(100);
  }
}

// The cgroup dirs (one per hierarchy) of sandbox `id` of the gateway whose
// state is in `stateDir` (see coppiced's main.cc for the parent's name).
function cgroupDirs(stateDir, id) {
  const parent = 'coppice-' + crypto.createHash('sha256').update(fs.realpathSync(stateDir)).digest('hex').slice(0, 12);
  const dirs = [path.join('/sys/fs/cgroup', parent, id)];
  for (const ctrl of fs.readdirSync('/sys/fs/cgroup')) dirs.push(path.join('/sys/fs/cgroup', ctrl, parent, id));
  return dirs.filter((d) => fs.existsSync(path.join(d, 'cgroup.procs')));
}

// SIGKILLs every process of a sandbox through its cgroup, as the OOM killer or
// an operator would while the gateway is down, and waits for them to go.
async function killThroughCgroup(stateDir, id) {
  const [dir] = cgroupDirs(stateDir, id);
  assert.ok(dir, `no cgroup of sandbox ${id}`);
  const pids = () => fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  const end = Date.now() + 10_000;
  for (let left = pids(); left.length > 0; left = pids()) {
    for (const p of left) { try { process.kill(p, 'SIGKILL'); } catch {} }
    assert.ok(Date.now() < end, `sandbox ${id} still has processes ${left}`);
    await sleep(50);
  }
}

// After a test, whatever a gateway that died mid-test left running: the
// sandboxes' processes and cgroups, then the gateway's state dir.
async function cleanUpAfter(stateDir) {
  let real;
  try { real = fs.realpathSync(stateDir); } catch { return; }
  const parent = 'coppice-' + crypto.createHash('sha256').update(real).digest('hex').slice(0, 12);
  const ids = new Set();
  for (const ctrl of ['', ...fs.readdirSync('/sys/fs/cgroup')]) {
    try { for (const id of fs.readdirSync(path.join('/sys/fs/cgroup', ctrl, parent))) ids.add(id); } catch {}
  }
  for (const id of ids) {
    if (!/^[a-z0-9-]+$/.test(id)) continue;
    const dirs = cgroupDirs(stateDir, id);
    if (dirs.length === 0) continue;
    try { await killThroughCgroup(stateDir, id); } catch {}
    for (const d of dirs) { try { fs.rmdirSync(d); } catch {} }
  }
  removeCgroupParents(stateDir);
  unmountUnder(stateDir);
  removeAll(stateDir);
}

test(`[${sdkName}] deep tree: killing the sandbox leaves the gateway up and others unhindered`, opt, async (t) => {
  const { Sandbox } = await loadSdk();
  const gw = await startGateway({ stateDir: fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-escape-')) });
  t.after(async () => {
    await gw.stop();
    await cleanUpAfter(gw.stateDir);
  });
  const a = await Sandbox.create({ ...gw.opts });
  const ms = await makeDeepTreeIn(a, '/home/user');
  t.diagnostic(`${DEPTH}-deep tree made in ${ms} ms`);

  // The kill and a second sandbox's whole life, side by side.
  const [, used] = await Promise.all([
    a.kill(),
    (async () => {
      const b = await Sandbox.create({ ...gw.opts });
      const r = await b.commands.run('echo meanwhile');
      await b.kill();
      return r.stdout;
    })(),
  ]);
  assert.equal(used, 'meanwhile\n');
  assert.ok(await healthy(gw.url), 'the gateway answers /health after the kill');
  assert.equal(gw.proc.exitCode, null, 'the gateway is still running');
  const t0 = Date.now();
  assert.ok(await trashEmptied(gw.stateDir), 'the dead sandbox\'s state is removed in the background');
  t.diagnostic(`its state removed in the background within ${Date.now() - t0} ms`);
  assert.ok(await healthy(gw.url), 'the gateway answers /health after the removal');
  // Dot entries are the trash and the spare skeletons, not sandboxes.
  assert.deepEqual(fs.readdirSync(path.join(gw.stateDir, 'sandboxes')).filter((n) => !n.startsWith('.')), []);
});

test(`[${sdkName}] deep tree: a gateway killed with -9 restarts over a dead sandbox's deep tree and serves`, opt, async (t) => {
  const { Sandbox } = await loadSdk();
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-escape-'));
  let gw = await startGateway({ stateDir });
  t.after(async () => {
    await gw?.stop();
    await cleanUpAfter(stateDir);
  });
  const a = await Sandbox.create({ ...gw.opts });
  await makeDeepTreeIn(a, '/home/user');
  await gw.kill9();
  await killThroughCgroup(stateDir, a.sandboxId);

  const t0 = Date.now();
  gw = await startGateway({ stateDir });
  t.diagnostic(`restart with recovery took ${Date.now() - t0} ms`);
  assert.ok(await healthy(gw.url));
  const b = await Sandbox.create({ ...gw.opts });
  assert.equal((await b.commands.run('echo served')).stdout, 'served\n');
  assert.equal(await Sandbox.kill(a.sandboxId, gw.opts), false, 'the dead sandbox is gone');
  const t1 = Date.now();
  assert.ok(await trashEmptied(stateDir), 'its state is removed in the background');
  t.diagnostic(`its state removed in the background within ${Date.now() - t1} ms`);
  assert.ok(await healthy(gw.url));
  assert.equal(gw.proc.exitCode, null);
  await b.kill();
});

test(`[${sdkName}] deep tree: envd survives ListDir with depth and a recursive WatchDir over it`, async (t) => {
  const envd = await startEnvd();
  const root = path.join(envd.world.userHome, 'tree');
  t.after(async () => {
    removeAll(root);
    await envd.stop();
  });
  fs.mkdirSync(root);
  execFileSync('/usr/bin/python3', ['-c', deepScript(root)]);
  const deep = path.join(root, 'deep');
  const sbx = await debugSandbox();

  // A bounded depth error (paths past PATH_MAX) or a listing: either is fine,
  // a dead envd is not.
  const listed = await sbx.files.list(deep, { depth: DEPTH + 10 }).catch((e) => e);
  if (listed instanceof Error) t.diagnostic(`ListDir: ${listed.message.slice(0, 200)}`);
  else assert.ok(listed.length > 0);
  assert.ok(await healthy(envd.url), 'envd answers after ListDir');
  assert.equal(envd.proc.exitCode, null);

  const events = [];
  const watch = await sbx.files.watchDir(deep, (e) => events.push(e), { recursive: true }).catch((e) => e);
  if (watch instanceof Error) {
    t.diagnostic(`WatchDir: ${watch.message.slice(0, 200)}`);
  } else {
    fs.writeFileSync(path.join(deep, 'd', 'f'), 'x');
    const end = Date.now() + 3000;
    while (!events.some((e) => e.name === 'd/f') && Date.now() < end) await sleep(20);
    assert.ok(events.some((e) => e.name === 'd/f'), 'the watch sees a write near its top');
    await watch.stop();
  }
  assert.ok(await healthy(envd.url), 'envd answers after WatchDir');
  assert.equal(envd.proc.exitCode, null);

  // Remove (the RPC) copes with the depth as well. rmdir costs up to a few
  // ms on a loaded machine (GNU rm -rf takes a minute for this chain then).
  // As root: the tree is root's (made by this test), and envd removes with
  // the requesting user's rights.
  await sbx.files.remove(deep, { requestTimeoutMs: 600_000, user: 'root' });
  assert.equal(fs.existsSync(deep), false);
  assert.ok(await healthy(envd.url));
});

// The files API as `user` in a real sandbox: envd is the sandbox's root, but
// acts on files with the requesting user's ids, so a symlink `user` plants
// towards a root-only file gets it nowhere.
test(`[${sdkName}] files as user: a planted symlink to /etc/shadow or /root/.bashrc leads nowhere`, opt, async (t) => {
  const { Sandbox, SandboxError, NotFoundError } = await loadSdk();
  const gw = await startGateway({ stateDir: fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-escape-')) });
  t.after(async () => {
    await gw.stop();
    await cleanUpAfter(gw.stateDir);
  });
  const sbx = await Sandbox.create({ ...gw.opts });
  t.after(() => sbx.kill().catch(() => {}));
  const SECRET = 'root:$6$secret:19000:0:99999:7:::\n';
  const run = async (cmd, user) => {
    const r = await sbx.commands.run(cmd, { user });
    assert.equal(r.exitCode, 0, r.stderr);
    return r.stdout;
  };
  await run(`printf '%s' '${SECRET}' > /etc/shadow && chmod 600 /etc/shadow && ` +
            `printf '%s' '${SECRET}' > /root/.bashrc && chmod 700 /root`, 'root');
  await run('ln -s /etc/shadow ~/shadow && ln -s /root/.bashrc ~/bashrc', 'user');
  const denied = async (promise) => assert.rejects(promise, (e) => {
    assert.ok(e instanceof SandboxError && !(e instanceof NotFoundError), `${e?.name}: ${e?.message}`);
    assert.match(e.message, /EACCES|permission denied/i);
    return true;
  });
  for (const p of ['shadow', 'bashrc', '/etc/shadow', '/root/.bashrc', '/root/new']) {
    await denied(sbx.files.write(p, 'pwned', { user: 'user' }));
  }
  for (const p of ['shadow', 'bashrc', '/etc/shadow', '/root/.bashrc']) await denied(sbx.files.read(p, { user: 'user' }));
  await denied(sbx.files.list('/root', { user: 'user' }));
  await denied(sbx.files.remove('/etc/shadow', { user: 'user' }));
  assert.equal(await run('cat /etc/shadow /root/.bashrc', 'root'), SECRET + SECRET);
  assert.equal(await run('test -e /root/new || echo absent', 'root'), 'absent\n');
  // Root may, and what user writes in its home is user's.
  assert.equal(await sbx.files.read('/etc/shadow', { user: 'root' }), SECRET);
  await sbx.files.write('/home/user/mine.txt', 'mine', { user: 'user' });
  assert.equal(await run('stat -c %U:%G /home/user/mine.txt', 'root'), 'user:user\n');
  assert.ok(await healthy(gw.url));
});

// The host pid of a sandbox's PID 1 (envd): the member of its cgroup whose
// innermost pid is 1.
function envdPid(stateDir, id) {
  const [dir] = cgroupDirs(stateDir, id);
  assert.ok(dir, `no cgroup of sandbox ${id}`);
  for (const p of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
    let status = '';
    try { status = fs.readFileSync(`/proc/${p}/status`, 'utf8'); } catch { continue; }
    const nspid = status.split('\n').find((l) => l.startsWith('NSpid:'));
    if (nspid && nspid.trim().split(/\s+/).pop() === '1') return Number(p);
  }
  assert.fail(`no PID 1 in the cgroup of sandbox ${id}`);
}

// Runs python3 on the host, as the test's own user (root), and returns stdout.
const hostPython = (code) => execFileSync('/usr/bin/python3', ['-c', code], { encoding: 'utf8' }).trim();

// One gateway for the resource checks below.
let shared = null;
async function sharedGateway() {
  if (!shared) {
    shared = await startGateway({ stateDir: fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-escape-')) });
  }
  return shared;
}
after(async () => {
  if (!shared) return;
  await shared.stop();
  await cleanUpAfter(shared.stateDir);
});

test(`[${sdkName}] a sandbox whose envd is killed is noticed at once and its resources freed`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await sharedGateway();
  const sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 3_600_000 });
  const other = await Sandbox.create({ ...gw.opts });
  assert.equal((await sbx.commands.run('echo up')).stdout, 'up\n');
  const id = sbx.sandboxId;
  process.kill(envdPid(gw.stateDir, id), 'SIGKILL');
  const t0 = Date.now();
  let listed = true;
  while (Date.now() - t0 < 3000) {
    listed = (await Sandbox.list({ ...gw.opts }).nextItems()).some((s) => s.sandboxId === id);
    if (!listed) break;
    await sleep(50);
  }
  assert.equal(listed, false, 'still listed 3 s after its envd died');
  await assert.rejects(Sandbox.getInfo(id, gw.opts), /not found/i);
  await assert.rejects(sbx.commands.run('echo hi', { requestTimeoutMs: 10_000 }),
    (e) => e.name === 'SandboxNotFoundError' && /not running/.test(e.message));
  assert.deepEqual(cgroupDirs(gw.stateDir, id), [], 'its cgroups are removed');
  assert.equal(fs.existsSync(path.join(gw.stateDir, 'sandboxes', id)), false, 'its state dir is released');
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  assert.equal(mounts.includes(id), false);
  const logs = await fetch(`${gw.url}/sandboxes/${id}/logs`, { headers: { 'X-API-KEY': gw.opts.apiKey } });
  assert.equal(logs.status, 404);
  assert.equal((await other.commands.run('echo still')).stdout, 'still\n', 'the others are untouched');
  await other.kill();
});

test(`[${sdkName}] a fork bomb in one sandbox leaves the others and the host able to start processes`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await sharedGateway();
  const bomb = await Sandbox.create({ ...gw.opts });
  const other = await Sandbox.create({ ...gw.opts });
  await bomb.files.write('/tmp/bomb.py', `
import os, sys, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
        n += 1
except OSError as e:
    print(n, e.errno, flush=True)
time.sleep(120)
`);
  await bomb.commands.run('setsid python3 /tmp/bomb.py >/tmp/bomb.out 2>&1 </dev/null &');
  let out = '';
  const end = Date.now() + 60_000;
  while (!out && Date.now() < end) {
    await sleep(200);
    try { out = fs.readFileSync(path.join(gw.stateDir, 'sandboxes', bomb.sandboxId, 'upper', 'tmp', 'bomb.out'), 'utf8').trim(); } catch {}
  }
  const [forked, errno] = out.split(' ').map(Number);
  assert.equal(errno, 11, `the bomb stops at the sandbox's own cap with EAGAIN: ${out}`);
  assert.ok(forked > 100 && forked < 4096, `forked ${forked}`);
  // The host's pids and the other sandbox are untouched.
  assert.equal(hostPython('import os; print(os.getpid() > 0)'), 'True');
  assert.equal((await other.commands.run('echo alive')).stdout, 'alive\n');
  await bomb.kill();
  await other.kill();
});

test(`[${sdkName}] inotify instances: one sandbox exhausting them leaves some for the host and the others`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await sharedGateway();
  const hog = await Sandbox.create({ ...gw.opts });
  const other = await Sandbox.create({ ...gw.opts });
  await hog.files.write('/tmp/hog.py', `
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while True:
    fd = libc.inotify_init1(0)
    if fd < 0:
        break
    fds.append(fd)
print(len(fds), ctypes.get_errno(), flush=True)
time.sleep(120)
`);
  await hog.commands.run('setsid python3 /tmp/hog.py >/tmp/hog.out 2>&1 </dev/null &');
  let out = '';
  const end = Date.now() + 30_000;
  while (!out && Date.now() < end) {
    await sleep(100);
    try { out = fs.readFileSync(path.join(gw.stateDir, 'sandboxes', hog.sandboxId, 'upper', 'tmp', 'hog.out'), 'utf8').trim(); } catch {}
  }
  assert.ok(out, 'the hog reports');
  const [taken, errno] = out.split(' ').map(Number);
  assert.equal(errno, 24, `the hog runs into its limit (EMFILE): ${out}`);
  const probe = 'import ctypes; l = ctypes.CDLL(None, use_errno=True); fd = l.inotify_init1(0); print("ok" if fd >= 0 else "errno %d" % ctypes.get_errno())';
  assert.equal(hostPython(probe), 'ok', `host root gets an inotify instance after the sandbox took ${taken}`);
  const r = await other.commands.run(`python3 -c '${probe}'`);
  assert.equal(r.stdout.trim(), 'ok', 'another sandbox gets one');
  await hog.kill();
  await other.kill();
});

test(`[${sdkName}] seccomp: AF_VSOCK and other unneeded socket families are refused`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await sharedGateway();
  const sbx = await Sandbox.create({ ...gw.opts });
  const r = await sbx.commands.run(`python3 -c '
import errno, socket
for fam in ("AF_VSOCK", "AF_ALG", "AF_TIPC", "AF_BLUETOOTH"):
    try:
        socket.socket(getattr(socket, fam), socket.SOCK_STREAM if fam != "AF_ALG" else socket.SOCK_SEQPACKET).close()
        print(fam, "made")
    except OSError as e:
        print(fam, errno.errorcode.get(e.errno))
for fam in ("AF_UNIX", "AF_INET", "AF_NETLINK"):
    s = socket.socket(getattr(socket, fam), socket.SOCK_DGRAM)
    s.close()
    print(fam, "made")
'`);
  assert.deepEqual(r.stdout.trim().split('\n'), [
    'AF_VSOCK EAFNOSUPPORT', 'AF_ALG EAFNOSUPPORT', 'AF_TIPC EAFNOSUPPORT', 'AF_BLUETOOTH EAFNOSUPPORT',
    'AF_UNIX made', 'AF_INET made', 'AF_NETLINK made',
  ]);
  await sbx.kill();
});

test(`[${sdkName}] what containers mask is masked: kernel memory, keys, timers, command line, host block devices`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await sharedGateway();
  const sbx = await Sandbox.create({ ...gw.opts });
  const r = await sbx.commands.run(`python3 -c '
import os
for f in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/cmdline"):
    if os.path.exists(f):
        with open(f, "rb") as h:
            print(f, len(h.read(4096)))
for d in ("/proc/scsi", "/proc/acpi", "/sys/firmware", "/sys/block", "/sys/class/block", "/sys/dev/block", "/sys/devices/virtual/block"):
    if os.path.exists(d):
        print(d, len(os.listdir(d)))
'`, { user: 'root' });
  const seen = Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
  for (const p of ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/cmdline', '/sys/block', '/sys/class/block', '/sys/dev/block', '/sys/firmware']) {
    assert.ok(p in seen || !fs.existsSync(p), `${p} is gone inside but the host has it`);
  }
  for (const [p, n] of Object.entries(seen)) assert.equal(n, 0, `${p} shows ${n} bytes/entries inside: ${r.stdout}`);
  // The host's side of the same, so the test means something here.
  assert.ok(fs.readFileSync('/proc/cmdline', 'utf8').length > 0);
  assert.ok(fs.readdirSync('/sys/block').length > 0 || fs.readdirSync('/sys/class/block').length >= 0);
  // Kernel tunables are read-only, even for the sandbox's root.
  const w = await sbx.commands.run('echo 1 > /proc/sys/vm/drop_caches; echo 1 > /proc/sysrq-trigger', { user: 'root' }).catch((e) => e);
  assert.match(String(w.stderr ?? w.result?.stderr ?? w), /Read-only file system/);
  await sbx.kill();
});

test(`[${sdkName}] the sandbox's mount table names no host path: not the state dir, not the templates`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await sharedGateway();
  const sbx = await Sandbox.create({ ...gw.opts });
  const info = (await sbx.commands.run('cat /proc/self/mountinfo', { user: 'root' })).stdout;
  const root = info.split('\n').find((l) => l.split(' ')[4] === '/');
  assert.ok(root && / - overlay /.test(root), `the root is the overlay: ${info}`);
  assert.match(root, /lowerdir=lower,upperdir=upper,workdir=work/);
  for (const host of [gw.stateDir, fs.realpathSync(gw.stateDir), 'templates', sbx.sandboxId + '/upper']) {
    assert.ok(!info.includes(host), `mountinfo inside names ${host}:\n${info}`);
  }
  await sbx.kill();
});

test(`[${sdkName}] a full /dev/shm is ENOSPC, envd keeps answering, and user processes die first under OOM`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await sharedGateway();
  const sbx = await Sandbox.create({ ...gw.opts });
  const r = await sbx.commands.run('dd if=/dev/zero of=/dev/shm/fill bs=1M 2>&1; echo rc=$?', { timeoutMs: 120_000 });
  assert.match(r.stdout, /No space left on device/);
  assert.match(r.stdout, /rc=1/);
  const size = (await sbx.commands.run('stat -c %s /dev/shm/fill')).stdout.trim();
  assert.ok(Number(size) <= 512 * 1024 * 1024 / 2, `/dev/shm took ${size} bytes of a 512 MiB sandbox`);
  assert.equal((await sbx.commands.run('echo answering')).stdout, 'answering\n');
  const adj = await sbx.commands.run('cat /proc/self/oom_score_adj /proc/1/oom_score_adj', { user: 'root' });
  const [mine, envd] = adj.stdout.trim().split('\n').map(Number);
  assert.ok(mine >= envd + 500 || mine === 1000, `a command's oom_score_adj ${mine}, envd's ${envd}`);
  await sbx.kill();
});

test(`[${sdkName}] sandbox processes have their own open-file limit`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await sharedGateway();
  const sbx = await Sandbox.create({ ...gw.opts });
  const r = await sbx.commands.run('ulimit -Sn; ulimit -Hn');
  const [soft, hard] = r.stdout.trim().split('\n').map(Number);
  assert.equal(soft, 1024);
  const hostHard = Number(execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim());
  assert.equal(hard, Math.min(65536, hostHard));
  const raise = await sbx.commands.run(`ulimit -n ${hard + 1}`, { user: 'root' }).catch((e) => e);
  assert.ok(raise instanceof Error, 'the sandbox cannot raise its hard limit');
  await sbx.kill();
});

// A host user (nobody) reaches no template and no sandbox layer: templates
// come from images nobody vetted, and a set-uid-root file in one (a root
// build keeps the image's owners) must not be runnable from the host.
test(`[${sdkName}] host users cannot reach templates or sandbox layers (set-uid files from images)`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await sharedGateway();
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    await sbx.commands.run('cp /bin/sh /home/user/suid-sh && chmod 4755 /home/user/suid-sh', { user: 'root' });
    const templates = path.join(gw.stateDir, 'templates');
    const sandboxes = path.join(gw.stateDir, 'sandboxes');
    for (const d of [templates, sandboxes]) {
      assert.equal(fs.statSync(d).mode & 0o077, 0, `${d} is closed to other users`);
    }
    const toml = path.join(templates, 'base', 'template.toml');
    const upper = path.join(sandboxes, sbx.sandboxId, 'upper', 'home', 'user', 'suid-sh');
    assert.ok(fs.existsSync(toml), `${toml} is there for root`);
    assert.ok(fs.statSync(upper).mode & 0o4000, `${upper} is there for root, set-uid`);
    for (const f of [toml, upper]) {
      let reached = true;
      try {
        execFileSync('runuser', ['-u', 'nobody', '--', 'test', '-e', f], { stdio: 'pipe' });
      } catch { reached = false; }
      assert.equal(reached, false, `nobody reaches ${f}`);
    }
  } finally {
    await sbx.kill();
  }
});
